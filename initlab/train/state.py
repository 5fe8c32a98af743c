"""The train state and how it is created: directly sharded, inside `jax.jit`.

    setup = state.Setup.create(model_fn, tx, mesh=mesh, axis_rules=rules, scheme=scheme)
    train_state = setup.init(key, dropout_key)       # params + optimizer state, born sharded
    train_state = setup.from_params(params, key, dropout_key)  # e.g. params from `init_from`
    abstract = setup.abstract                        # for checkpoint restore

Params and the other model variables (e.g. BatchNorm statistics) are plain nested dicts
(`nnx.State.to_pure_dict()`), so the state is an ordinary pytree for optax and Orbax;
`Setup.model(state)` turns it back into the `nnx.Module`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import optax

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


def _pure(state: nnx.State) -> dict:
  return state.to_pure_dict()


def to_nnx_state(template: nnx.State, pure: dict) -> nnx.State:
  """A copy of `template` (an `nnx.State`) holding the values of the nested dict `pure`."""
  state = jax.tree.map(lambda x: x, template)
  nnx.replace_by_pure_dict(state, pure)
  return state


@dataclasses.dataclass(frozen=True)
class Setup:
  """The jitted programs and shardings that create and describe one model's train state.

  Attributes:
    graphdef: the model's `nnx.GraphDef`.
    params_template, model_state_template: abstract `nnx.State`s (Param / other variables).
    shardings: a `TrainState` of `NamedSharding`s (the state's layout on the mesh).
    abstract: a `TrainState` of `jax.ShapeDtypeStruct`s with those shardings.
    init: `(key, dropout_key) -> TrainState`, jitted with `out_shardings=shardings`.
    from_params: `(params, key, dropout_key) -> TrainState` with the given params, a fresh
      optimizer state and fresh other variables; jitted likewise.
    tx: the optimizer.
  """
  graphdef: Any
  params_template: nnx.State
  model_state_template: nnx.State
  shardings: TrainState
  abstract: TrainState
  init: Callable[..., TrainState]
  from_params: Callable[..., TrainState]
  tx: optax.GradientTransformation

  @classmethod
  def create(cls, model_fn: Callable[[nnx.Rngs], nnx.Module], tx: optax.GradientTransformation,
             *, mesh: Mesh, axis_rules, scheme: Callable | None = None,
             fsdp_axis: str | None = None) -> Setup:
    """Builds the init programs for `model_fn` under `scheme` (see `initlab.init.sharded_init`)."""
    graphdef, init_model, var_shardings = ii.sharded_init(
        model_fn, mesh=mesh, axis_rules=axis_rules, scheme=scheme, fsdp_axis=fsdp_axis)
    param_sh, model_sh = nnx.split_state(var_shardings, nnx.Param, ...)
    param_sh, model_sh = _pure(param_sh), _pure(model_sh)
    _, abstract_vars = ii.abstract_model(model_fn)
    params_template, model_state_template = nnx.split_state(abstract_vars, nnx.Param, ...)
    replicated = NamedSharding(mesh, PartitionSpec())

    abstract_params = _pure(params_template)
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, param_sh,
                                   transform_non_params=lambda _: replicated)
    shardings = TrainState(step=replicated, params=param_sh, opt_state=opt_sh,
                           model_state=model_sh, rng=replicated, nonfinite_step=replicated)

    def new_state(params, model_state, dropout_key):
      return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                        opt_state=tx.init(params), model_state=model_state,
                        rng=jax.random.key_data(dropout_key),
                        nonfinite_step=jnp.full((), -1, jnp.int32))

    def init(key, dropout_key):
      params, model_state = nnx.split_state(init_model(key), nnx.Param, ...)
      return new_state(_pure(params), _pure(model_state), dropout_key)

    def from_params(params, key, dropout_key):
      # The fresh model state (e.g. BatchNorm statistics); XLA drops the unused param init.
      _, model_state = nnx.split_state(init_model(key), nnx.Param, ...)
      return new_state(params, _pure(model_state), dropout_key)

    init = jax.jit(init, out_shardings=shardings)
    from_params = jax.jit(from_params, in_shardings=(param_sh, replicated, replicated),
                          out_shardings=shardings)
    abstract = jax.eval_shape(init, jax.random.key(0), jax.random.key(0))
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            abstract, shardings)
    return cls(graphdef, params_template, model_state_template, shardings, abstract, init,
               from_params, tx)

  def merge(self, params, model_state) -> nnx.Module:
    """The `nnx.Module` holding these params and other variables (no copy)."""
    return nnx.merge(self.graphdef, to_nnx_state(self.params_template, params),
                     to_nnx_state(self.model_state_template, model_state))

  def model(self, state: TrainState) -> nnx.Module:
    """The `nnx.Module` holding `state`'s params and model state (no copy)."""
    return self.merge(state.params, state.model_state)


def global_norm(tree) -> jax.Array:
  """sqrt of the sum of squares of every leaf, in float32."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.zeros((), jnp.float32)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))
