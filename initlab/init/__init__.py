"""initlab.init: initializers, param specs, rules and schemes.

    import initlab.init as ii
    rules = ii.Rules([(r".*attn/.*kernel", ii.orthogonal()), (r".*kernel", ii.he_normal())])
    params = rules(key, params)                    # any NNX state / Linen dict / plain dict
    scheme = ii.get_scheme("gg", beta=1.5)         # by name, as configs do
"""
# pylint: disable=g-importing-member
from initlab.init import initializers as _initializers
from initlab.init.registry import (LayoutInitializer, get_initializer, get_scheme, initializer_names,
                                   register_initializer, register_scheme, scheme_names)
from initlab.init.rules import Rules, leaf_key, path_hash
from initlab.init.schemes import InitContext, Scheme, SchemeResult, chain
from initlab.init.specs import LayoutError, ParamSpec, infer_spec
from initlab.init.tree import Leaf, leaves, map_leaves
from initlab.init.initializers import fixup_factor, scaled, zero_matrix


def _layout_aware(name):
  def make(*args, **kwargs) -> LayoutInitializer:
    return get_initializer(name, *args, **kwargs)
  make.__name__ = make.__qualname__ = name
  make.__doc__ = (f"`{name}` as a LayoutInitializer: a `(key, shape, dtype)` initializer in Flax "
                  "layout that `Rules` re-binds to each param's fan axes.")
  return make


# Every jax.nn.initializers factory, plus initlab's, under its own name.
constant = _layout_aware("constant")
delta_orthogonal = _layout_aware("delta_orthogonal")
fixup_scaled = _layout_aware("fixup_scaled")
glorot_normal = _layout_aware("glorot_normal")
glorot_uniform = _layout_aware("glorot_uniform")
he_normal = _layout_aware("he_normal")
he_uniform = _layout_aware("he_uniform")
kaiming_normal = _layout_aware("kaiming_normal")
kaiming_uniform = _layout_aware("kaiming_uniform")
lecun_normal = _layout_aware("lecun_normal")
lecun_uniform = _layout_aware("lecun_uniform")
normal = _layout_aware("normal")
ones = _layout_aware("ones")
orthogonal = _layout_aware("orthogonal")
truncated_normal = _layout_aware("truncated_normal")
uniform = _layout_aware("uniform")
variance_scaling = _layout_aware("variance_scaling")
xavier_normal = _layout_aware("xavier_normal")
xavier_uniform = _layout_aware("xavier_uniform")
zero = _layout_aware("zero")
zeros = _layout_aware("zeros")
from initlab.init.sharded import abstract_model, create_sharded, make_mesh, sharded_init, state_shardings
from initlab.init import gg as _gg  # noqa: F401
