"""initlab.init: initializers, param specs, rules and schemes.

    import initlab.init as ii
    rules = ii.Rules([(r".*attn/.*kernel", ii.orthogonal()), (r".*kernel", ii.he_normal()),
                      (r".*bias", ii.zeros)])
    params = rules(key, params)                    # any NNX state / Linen dict / plain dict
    scheme = ii.get_scheme("gg", beta=1.5)         # by name, as configs do
    print(ii.scheme_table())                       # every name with one line; or
                                                   # python -m initlab.init --list

Names follow `jax.nn.initializers`: `zeros`/`ones` are initializers, the rest factories.
Each init family (its initializers and schemes) is one module of `initlab.init.families`
(variance, orthogonal, zero, fixup) or `initlab.init.gg`; its public names are re-exported
here.

A run initializes in stages (`initlab.init.stages`): architecture (`resize`, `SchemeResult`),
param (jitted, sharded; `ctx.hints`, `ctx.dataset`, `ctx.pretrained`) and data (`ctx.data`, a
`DataContext`); a scheme states its stage with `with_stage(fn, "param" | "data", ...)`.
"""

# pylint: disable=g-importing-member
from initlab.init.registry import (
  LayoutInitializer,
  describe,
  get_initializer,
  get_scheme,
  initializer_names,
  register_initializer,
  register_scheme,
  scheme_names,
  scheme_table,
)
from initlab.init.rules import Rules, leaf_key, path_hash
from initlab.init.schemes import (
  DataContext,
  InitContext,
  Scheme,
  SchemeResult,
  chain,
  stage_of,
  unwrap,
  with_stage,
)
from initlab.init.specs import LayoutError, ParamSpec, infer_spec
from initlab.init.tree import Leaf, leaves, map_leaves
from initlab.init.families.fixup import fixup_factor, fixup_scaled, scaled
from initlab.init.families.orthogonal import delta_orthogonal, orthogonal
from initlab.init.families.variance import (
  constant,
  glorot_normal,
  glorot_uniform,
  he_normal,
  he_uniform,
  kaiming_normal,
  kaiming_uniform,
  lecun_normal,
  lecun_uniform,
  normal,
  ones,
  truncated_normal,
  uniform,
  variance_scaling,
  xavier_normal,
  xavier_uniform,
  zeros,
)
from initlab.init.families.zero import zero_hadamard, zero_matrix
from initlab.init.sharded import (
  ArchitectureChange,
  abstract_model,
  create_sharded,
  init_fn,
  sharded_init,
)
from initlab.sharding import make_mesh, state_shardings  # Re-exported: one home, initlab.sharding.
from initlab.init import gg  # noqa: F401  (registers "gg", "gg_model")
from initlab.init import stages  # noqa: F401  (registers "from_pretrained")
from initlab.init import virgo  # noqa: F401  (ii.virgo.variances; registers "virgo")
from initlab.init import learngene  # noqa: F401  (ii.learngene.tleg_expand, sws_layer_map, ...)
from initlab.init import adapters  # noqa: F401  (ii.adapters.resolve, Adapters, merge_module)
