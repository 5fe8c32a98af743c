"""Sharded init: build a model abstractly, derive param shardings, initialize under `jax.jit`.

    model = create_sharded(lambda rngs: build(cfg, rngs=rngs), mesh=mesh,
                           axis_rules=rules, key=key, scheme=get_scheme("orthogonal"))

Construction and the scheme run inside one `jax.jit(..., out_shardings=...)`, so each
device computes only its own shards and no host holds the whole model. With partitionable
threefry (JAX's default) the values do not depend on the mesh. Meshes, rules and the
shardings themselves come from `initlab.sharding`.
"""

from __future__ import annotations

import dataclasses
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


class ArchitectureChange(ValueError):
  """A scheme returned `SchemeResult`: the model to build is `model_config`, not the one given.

  `sharded_init` raises it (while tracing) when no `source_fn` says which model the scheme
  reads; `initlab.init.stages` catches it and builds the new model (the architecture stage).
  """

  def __init__(self, model_config):
    self.model_config = model_config
    super().__init__(
      'a scheme that changes the architecture returns a new model config; '
      'give sharded_init the model it reads as source_fn and the new model as '
      'model_fn (a config-driven run does this itself)'
    )


def init_fn(
  model_fn: Callable[[nnx.Rngs], nnx.Module],
  scheme: Callable | None = None,
  ctx: InitContext | None = None,
  source_fn: Callable | None = None,
  *,
  with_masks: bool = False,
) -> Callable:
  """The (unjitted) init: `(key, pretrained=None, pretrained_state=None) -> nnx.State` of
  `model_fn(rngs)` (with `with_masks`: `(state, masks or None)`).

  Construction gets `fold_in(key, 0)`, the scheme `fold_in(key, 1)` and
  `ctx.replace(hints=model.init_hints() if ctx has none, pretrained=pretrained,
  pretrained_state=pretrained_state)`. With `source_fn`, the scheme reads the params of
  `source_fn(rngs)` and returns a `SchemeResult` whose params become those of
  `model_fn(rngs)` (the architecture stage). A `SchemeResult`'s `model_state` replaces the
  model's other variables; its `masks` are returned with `with_masks` (else an error: only
  a run keeps masks).
  """

  def init(key, pretrained=None, pretrained_state=None):
    rngs = lambda: nnx.Rngs(jax.random.fold_in(key, 0))
    with nnx.use_eager_sharding(False):
      model = model_fn(rngs())
      if scheme is None:
        return (nnx.state(model), None) if with_masks else nnx.state(model)
      source = model if source_fn is None else source_fn(rngs())
    context = ctx if ctx is not None else InitContext()
    if not context.hints and hasattr(source, 'init_hints'):
      context = dataclasses.replace(context, hints=source.init_hints())
    if pretrained is not None:
      context = dataclasses.replace(
        context, pretrained=pretrained, pretrained_state=pretrained_state
      )
    params = scheme(jax.random.fold_in(key, 1), nnx.state(source, nnx.Param), context)
    masks = None
    if isinstance(params, SchemeResult):
      result, params = params, params.params
      if result.model_config is not None:
        if source_fn is None:
          raise ArchitectureChange(result.model_config)
      elif result.model_state is not None:
        nnx.update(model, result.model_state)
      masks = result.masks
      if masks is not None and not with_masks:
        raise ValueError(
          'the init scheme returned masks, which only a run keeps (initlab.train); '
          'apply them to the params yourself outside a run'
        )
    nnx.update(model, params)
    return (nnx.state(model), masks) if with_masks else nnx.state(model)

  return init


def sharded_init(
  model_fn: Callable[[nnx.Rngs], nnx.Module],
  *,
  mesh: Mesh,
  axis_rules: sharding_lib.AxisRules,
  scheme: Callable | None = None,
  ctx: InitContext | None = None,
  fsdp_axis: str | None = sharding_lib.AUTO,
  source_fn: Callable[[nnx.Rngs], nnx.Module] | None = None,
):
  """The jitted init program: returns `(graphdef, init, shardings)` with
  `init(key, pretrained=None) -> state`.

  Args:
    model_fn: `rngs -> nnx.Module`; must not depend on concrete values.
    mesh, axis_rules: where params live; logical names come from the variables' metadata.
    scheme: optional `(key, params, ctx) -> params` applied to the `nnx.Param` state.
    ctx: passed to the scheme; by default its `hints` are `model.init_hints()` if defined.
    fsdp_axis: mesh axis for variables that name no logical axes (None: replicate them);
      by default `initlab.sharding.default_fsdp_axis(mesh, axis_rules)`.
    source_fn: the model a `SchemeResult`-returning scheme reads (see `init_fn`).
  Construction gets `fold_in(key, 0)`, the scheme `fold_in(key, 1)` (see `init_fn`).
  `init(key, pretrained)` returns the model's `nnx.State` (every variable); `pretrained`
  (a param tree, e.g. sharded arrays) reaches the scheme as `ctx.pretrained`. Call it (or
  `init.lower(key)`) under `jax.set_mesh(mesh)`. The model is built abstractly once, here,
  for the shardings.
  """
  mesh = sharding_lib.as_auto_mesh(mesh)
  graphdef, abstract_state = abstract_model(model_fn)
  shardings = sharding_lib.state_shardings(abstract_state, mesh, axis_rules, fsdp_axis=fsdp_axis)
  init = init_fn(model_fn, scheme, ctx, source_fn)

  def traced(key, pretrained=None):  # the mesh is visible to the scheme (`Rules`' whole_slice)
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return init(key, pretrained)

  return graphdef, jax.jit(traced, out_shardings=shardings), shardings


def create_sharded(
  model_fn: Callable[[nnx.Rngs], nnx.Module],
  *,
  mesh: Mesh,
  axis_rules: sharding_lib.AxisRules,
  key: jax.Array,
  scheme: Callable | None = None,
  ctx: InitContext | None = None,
  fsdp_axis: str | None = sharding_lib.AUTO,
) -> nnx.Module:
  """`model_fn(rngs)` with every param created directly in its sharding (see `sharded_init`)."""
  graphdef, init, _ = sharded_init(
    model_fn, mesh=mesh, axis_rules=axis_rules, scheme=scheme, ctx=ctx, fsdp_axis=fsdp_axis
  )
  return nnx.merge(graphdef, init(key))
