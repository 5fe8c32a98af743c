"""Sharded init: build a model abstractly, derive param shardings, initialize under `jax.jit`.

    model = create_sharded(lambda rngs: build(cfg, rngs=rngs), mesh=mesh,
                           axis_rules=rules, key=key, scheme=get_scheme("orthogonal"))

Construction and the scheme run inside one `jax.jit(..., out_shardings=...)`, so each
device computes only its own shards and no host holds the whole model. With partitionable
threefry (JAX's default) the values do not depend on the mesh. Meshes, rules and the
shardings themselves come from `initlab.sharding`.
"""
from __future__ import annotations

from typing import Callable

import jax
from flax import nnx
from jax.sharding import Mesh

from initlab import sharding as sharding_lib
from initlab.init.schemes import InitContext, SchemeResult


def abstract_model(model_fn: Callable[[nnx.Rngs], nnx.Module]):
  """(graphdef, abstract state) of `model_fn(rngs)` without allocating any param."""
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: model_fn(nnx.Rngs(0)))
  return nnx.split(model)


def sharded_init(model_fn: Callable[[nnx.Rngs], nnx.Module], *, mesh: Mesh,
                 axis_rules: sharding_lib.AxisRules, scheme: Callable | None = None,
                 ctx: InitContext | None = None, fsdp_axis: str | None = sharding_lib.AUTO):
  """The jitted init program: returns `(graphdef, init, shardings)` with `init(key) -> state`.

  Args:
    model_fn: `rngs -> nnx.Module`; must not depend on concrete values.
    mesh, axis_rules: where params live; logical names come from the variables' metadata.
    scheme: optional `(key, params, ctx) -> params` applied to the `nnx.Param` state.
    ctx: passed to the scheme; by default its `hints` are `model.init_hints()` if defined.
    fsdp_axis: mesh axis for variables that name no logical axes (None: replicate them);
      by default `initlab.sharding.default_fsdp_axis(mesh, axis_rules)`.
  Construction gets `fold_in(key, 0)`, the scheme `fold_in(key, 1)`. `init(key)` returns
  the model's `nnx.State` (every variable); call it (or `init.lower(key)`) under
  `jax.set_mesh(mesh)`. The model is built abstractly once, here, for the shardings.
  """
  mesh = sharding_lib.as_auto_mesh(mesh)
  graphdef, abstract_state = abstract_model(model_fn)
  shardings = sharding_lib.state_shardings(abstract_state, mesh, axis_rules,
                                           fsdp_axis=fsdp_axis)

  def init(key):
    with nnx.use_eager_sharding(False):
      model = model_fn(nnx.Rngs(jax.random.fold_in(key, 0)))
    if scheme is not None:
      context = ctx
      if context is None:
        hints = model.init_hints() if hasattr(model, "init_hints") else {}
        context = InitContext(hints=hints)
      params = scheme(jax.random.fold_in(key, 1), nnx.state(model, nnx.Param), context)
      if isinstance(params, SchemeResult):
        raise ValueError("a scheme that changes the architecture returns a new model config; "
                         "apply it before building the model, not inside sharded init")
      nnx.update(model, params)
    return nnx.state(model)

  return graphdef, jax.jit(init, out_shardings=shardings), shardings


def create_sharded(model_fn: Callable[[nnx.Rngs], nnx.Module], *, mesh: Mesh,
                   axis_rules: sharding_lib.AxisRules, key: jax.Array,
                   scheme: Callable | None = None, ctx: InitContext | None = None,
                   fsdp_axis: str | None = sharding_lib.AUTO) -> nnx.Module:
  """`model_fn(rngs)` with every param created directly in its sharding (see `sharded_init`)."""
  graphdef, init, _ = sharded_init(model_fn, mesh=mesh, axis_rules=axis_rules, scheme=scheme,
                                   ctx=ctx, fsdp_axis=fsdp_axis)
  return nnx.merge(graphdef, init(key))
