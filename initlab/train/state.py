"""The train state and how it is created: directly sharded, inside `jax.jit`.

    setup = state.Setup.create(model_fn, tx, mesh=mesh, axis_rules=rules, scheme=scheme)
    train_state = setup.init(key, dropout_key)       # params + optimizer state, born sharded
    train_state = setup.from_params(params, key, dropout_key)  # e.g. params from `init_from`
    abstract = setup.abstract                        # for checkpoint restore

Params and the other model variables (e.g. BatchNorm statistics) are plain nested dicts
(`pure_variables(module)`), the one form of the state in memory, in every step and on disk:
an ordinary pytree for optax and Orbax. `Setup.model(state)` / `Setup.merge(params,
model_state)` merge them into the `nnx.Module` (no intermediate `nnx.State`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import optax

from initlab import sharding as sharding_lib
import initlab.init as ii


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
  """Everything a step reads and writes; what a checkpoint holds.

  Attributes:
    step: int32 (), number of updates applied.
    params: nested dict of the model's `nnx.Param` values.
    opt_state: the optax state of `params`.
    model_state: nested dict of the model's other variables (e.g. BatchNorm statistics).
    rng: uint32 key data of the dropout key (step `s` uses `fold_in(key, s)`); an argument
      rather than a constant, so every seed of a study runs the same compiled step.
    nonfinite_step: int32 (), -1, or the first step whose loss or gradients were NaN/Inf
      (tracked on the device, so detecting it needs no per-step host sync).
  """

  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any
  rng: jax.Array
  nonfinite_step: jax.Array

  def replace(self, **changes) -> TrainState:
    return dataclasses.replace(self, **changes)


def pure_variables(module_or_state) -> tuple[dict, dict]:
  """(params, model_state) of an `nnx.Module` or its `nnx.State`: the `nnx.Param` values and
  the other variables' values as the nested dicts a `TrainState` holds.

  With `Setup.merge` (dicts -> module), the only conversion between the module and the train
  state's one form, plain dicts (also what checkpoints hold).
  """
  if isinstance(module_or_state, nnx.State):
    params, rest = nnx.split_state(module_or_state, nnx.Param, ...)
  else:
    params, rest = nnx.state(module_or_state, nnx.Param, ...)
  return params.to_pure_dict(), rest.to_pure_dict()


@dataclasses.dataclass(frozen=True)
class Setup:
  """The jitted programs and shardings that create and describe one model's train state.

  Attributes:
    graphdef: the model's `nnx.GraphDef`.
    shardings: a `TrainState` of `NamedSharding`s (the state's layout on the mesh).
    abstract: a `TrainState` of `jax.ShapeDtypeStruct`s with those shardings.
    init: `(key, dropout_key, pretrained=None) -> TrainState`, jitted with
      `out_shardings=shardings` (`pretrained`: see `create`).
    from_params: `(params, key, dropout_key) -> TrainState` with the given params, a fresh
      optimizer state and fresh other variables; jitted likewise.
    tx: the optimizer.
  """

  graphdef: Any
  shardings: TrainState
  abstract: TrainState
  init: Callable[..., TrainState]
  from_params: Callable[..., TrainState]
  tx: optax.GradientTransformation

  @classmethod
  def create(
    cls,
    model_fn: Callable[[nnx.Rngs], nnx.Module],
    tx: optax.GradientTransformation,
    *,
    mesh: Mesh,
    axis_rules,
    scheme: Callable | None = None,
    fsdp_axis: str | None = sharding_lib.AUTO,
    ctx: ii.InitContext | None = None,
    source_fn: Callable | None = None,
    pretrained: Any = None,
  ) -> Setup:
    """Builds the init programs for `model_fn` under `scheme` (see `initlab.init.sharded_init`,
    which builds the abstract model once; `fsdp_axis`, `ctx` and `source_fn` as there).

    `pretrained`: the abstract param tree (`ShapeDtypeStruct`s with shardings) that `init`'s
    third argument will hold, or None; it reaches the scheme as `ctx.pretrained`.
    """
    graphdef, _, var_shardings = ii.sharded_init(
      model_fn, mesh=mesh, axis_rules=axis_rules, fsdp_axis=fsdp_axis
    )
    init_model = ii.init_fn(model_fn, scheme, ctx, source_fn)
    bare_model = ii.init_fn(model_fn)
    param_sh, model_sh = pure_variables(var_shardings)
    replicated = sharding_lib.replicated(mesh)

    def new_state(params, model_state, dropout_key):
      return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        model_state=model_state,
        rng=jax.random.key_data(dropout_key),
        nonfinite_step=jnp.full((), -1, jnp.int32),
      )

    def init(key, dropout_key, pretrained=None):
      return new_state(*pure_variables(init_model(key, pretrained)), dropout_key)

    def from_params(params, key, dropout_key):
      # The fresh model state (e.g. BatchNorm statistics) of the model without the scheme.
      return new_state(params, pure_variables(bare_model(key))[1], dropout_key)

    # Traces the model and the scheme once, abstractly (bad options fail here, cheaply).
    abstract = jax.eval_shape(init, jax.random.key(0), jax.random.key(0), pretrained)
    opt_sh = optax.tree_map_params(
      tx, lambda _, s: s, abstract.opt_state, param_sh, transform_non_params=lambda _: replicated
    )
    shardings = TrainState(
      step=replicated,
      params=param_sh,
      opt_state=opt_sh,
      model_state=model_sh,
      rng=replicated,
      nonfinite_step=replicated,
    )
    init = jax.jit(init, out_shardings=shardings)
    from_params = jax.jit(
      from_params, in_shardings=(param_sh, replicated, replicated), out_shardings=shardings
    )
    abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return cls(graphdef, shardings, abstract, init, from_params, tx)

  def merge(self, params, model_state) -> nnx.Module:
    """The `nnx.Module` holding these params and other variables (nested dicts; no copy)."""
    return nnx.merge(self.graphdef, params, model_state)

  def model(self, state: TrainState) -> nnx.Module:
    """The `nnx.Module` holding `state`'s params and model state (no copy)."""
    return self.merge(state.params, state.model_state)


def global_norm(tree) -> jax.Array:
  """sqrt of the sum of squares of every leaf, in float32."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.zeros((), jnp.float32)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))
