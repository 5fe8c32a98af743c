"""The train state and how it is created: directly sharded, inside `jax.jit`.

    setup = state.Setup.create(model_fn, tx, mesh=mesh, axis_rules=rules, scheme=scheme)
    train_state = setup.init(key, dropout_key)       # params + optimizer state, born sharded
    train_state = setup.from_params(params, model_state, masks, key, dropout_key)  # data stage
    abstract = setup.abstract                        # for checkpoint restore

The optimizer state covers the trainable partition only (`setup.trainable`, from
`config.optimizer.trainable`; `initlab.train.partition`). Masks (`setup.masked`, the params
a scheme may mask, declared by its `masks` attribute) live in the state as bool arrays; every
state this module builds has its masked entries at exactly 0.

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
from initlab.init.tree import path_str
from initlab.train import partition


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
    masks: nested dict of bool arrays over the masked params (`Setup.masked`; {} for none):
      False entries of those params are 0 and stay 0.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any
  rng: jax.Array
  nonfinite_step: jax.Array
  masks: Any = dataclasses.field(default_factory=dict)

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
    init: `(key, dropout_key, pretrained=None, pretrained_state=None) -> TrainState`,
      jitted with `out_shardings=shardings` (`pretrained`: see `create`).
    from_params: `(params, model_state, masks, key, dropout_key) -> TrainState` with these
      params, model state and masks (masks applied), a fresh optimizer state; jitted likewise.
    tx: the optimizer (of the trainable partition).
    trainable: the paths of the trainable params, or None (every param).
    masked: the paths of the params that carry masks (empty: none).
    adapters: the model's low-rank adapters (`ii.adapters.Adapters`: params['lora'],
      folded into their kernels by `merge`), or None.
  """

  graphdef: Any
  shardings: TrainState
  abstract: TrainState
  init: Callable[..., TrainState]
  from_params: Callable[..., TrainState]
  tx: optax.GradientTransformation
  trainable: frozenset | None = None
  masked: frozenset = frozenset()
  adapters: ii.adapters.Adapters | None = None

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
    pretrained_state: Any = None,
    trainable: str = '',
    masked: str = '',
    lora: dict | None = None,
  ) -> Setup:
    """Builds the init programs for `model_fn` under `scheme` (see `initlab.init.sharded_init`,
    which builds the abstract model once; `fsdp_axis`, `ctx` and `source_fn` as there).

    `pretrained`, `pretrained_state`: the abstract param tree and model state
    (`ShapeDtypeStruct`s with shardings; for several sources {name: tree}) that `init`'s
    third and fourth arguments will hold, or None; they reach the scheme as
    `ctx.pretrained` and `ctx.pretrained_state`. `trainable`: regex of the params the
    optimizer updates ('' every param; `config.optimizer.trainable`). `masked`: regex of the
    params that carry masks ('' none; the scheme's `masks` attribute). `lora`: options of
    `ii.adapters.resolve` (targets, rank, alpha, rslora, kind) and `train_also` (a regex of
    base params trained too), or None: the params then hold a `lora` subtree (born in
    PEFT's default init, after the scheme's param stage), `merge` folds it into the target
    kernels, and by default only it (and `train_also`) is trainable.
    """
    graphdef, abstract_vars, var_shardings = _abstract_and_shardings(
      model_fn, mesh, axis_rules, fsdp_axis
    )
    init_model = ii.init_fn(model_fn, scheme, ctx, source_fn, with_masks=True)
    param_sh, model_sh = pure_variables(var_shardings)
    abstract_params = pure_variables(abstract_vars)[0]
    adapters = None
    if lora:
      lora = dict(lora)
      train_also = lora.pop('train_also', '')
      adapters = _adapters(abstract_vars, param_sh, lora)
      graphdef = ii.adapters.Adapted(graphdef, adapters)
      mesh_of = jax.tree.leaves(param_sh)[0].mesh
      param_sh = {**param_sh, ii.adapters.ROOT: adapters.shardings(mesh_of)}
      abstract_params = {**abstract_params, ii.adapters.ROOT: adapters.abstract()}
      trainable = trainable or '|'.join(
        f'(?:{r})' for r in (adapters.trainable_regex(), train_also) if r
      )
    trainable = partition.trainable_paths(abstract_params, trainable)
    masked = partition.trainable_paths(abstract_params, masked, key='init (masks of the scheme)')
    masked = masked or frozenset()
    replicated = sharding_lib.replicated(mesh)

    def new_state(params, model_state, masks, dropout_key):
      params = partition.apply_masks(params, masks)
      return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(partition.select(params, trainable)),
        model_state=model_state,
        rng=jax.random.key_data(dropout_key),
        nonfinite_step=jnp.full((), -1, jnp.int32),
        masks=masks,
      )

    def full_masks(params, given):
      ones = jax.tree.map(lambda x: jnp.ones(x.shape, bool), partition.select(params, masked))
      if given is None:
        return ones
      given = partition.check_masks(given, params, 'init scheme')
      extra = sorted(set(_paths(given)) - masked)
      if extra:
        raise ValueError(
          f'the init scheme returned a mask for {extra[0]!r}, a param its `masks` attribute '
          f'({sorted(masked)[:3] or "no param"}) does not declare'
        )
      return partition.insert(ones, given)

    def init(key, dropout_key, pretrained=None, pretrained_state=None):
      state, masks = init_model(key, pretrained, pretrained_state)
      params, model_state = pure_variables(state)
      if adapters is not None:
        params = adapters.attach(jax.random.fold_in(key, 2), params)
      return new_state(params, model_state, full_masks(params, masks), dropout_key)

    def from_params(params, model_state, masks, key, dropout_key):
      del key
      return new_state(params, model_state, masks, dropout_key)

    # Traces the model and the scheme once, abstractly (bad options fail here, cheaply).
    abstract = jax.eval_shape(
      init, jax.random.key(0), jax.random.key(0), pretrained, pretrained_state
    )
    opt_sh = optax.tree_map_params(
      tx,
      lambda _, s: s,
      abstract.opt_state,
      partition.select(param_sh, trainable),
      transform_non_params=lambda _: replicated,
    )
    shardings = TrainState(
      step=replicated,
      params=param_sh,
      opt_state=opt_sh,
      model_state=model_sh,
      rng=replicated,
      nonfinite_step=replicated,
      masks=partition.select(param_sh, masked),
    )
    init = jax.jit(init, out_shardings=shardings)
    from_params = jax.jit(
      from_params,
      in_shardings=(param_sh, model_sh, shardings.masks, replicated, replicated),
      out_shardings=shardings,
    )
    abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return cls(graphdef, shardings, abstract, init, from_params, tx, trainable, masked, adapters)

  def merge(self, params, model_state) -> nnx.Module:
    """The `nnx.Module` holding these params and other variables (nested dicts; no copy);
    adapters, if any, folded into their kernels."""
    return ii.adapters.merge_module(self.graphdef, params, model_state)

  def model(self, state: TrainState) -> nnx.Module:
    """The `nnx.Module` holding `state`'s params and model state (no copy)."""
    return self.merge(state.params, state.model_state)


def _paths(tree) -> list[str]:
  return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _adapters(abstract_vars, param_sh, lora: dict) -> ii.adapters.Adapters:
  """The run's adapters over the abstract model's params (logical names give the fans)."""
  params = nnx.split_state(abstract_vars, nnx.Param, ...)[0]
  specs = {p: s.spec for p, s in _path_items(param_sh)}
  return ii.adapters.resolve(ii.leaves(params), shardings=specs, **lora)


def adapters_of(abstract_vars, var_shardings, lora: dict) -> ii.adapters.Adapters:
  """The adapters a run recorded (config.json 'adapters': `Setup.create`'s `lora` options)
  over an abstract model and its variables' shardings."""
  return _adapters(abstract_vars, pure_variables(var_shardings)[0], lora)


def _path_items(tree):
  return [(path_str(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _abstract_and_shardings(model_fn, mesh, axis_rules, fsdp_axis):
  """(graphdef, abstract variables, their shardings) of `model_fn` on `mesh`."""
  mesh = sharding_lib.as_auto_mesh(mesh)
  graphdef, abstract_vars = ii.abstract_model(model_fn)
  shardings = sharding_lib.state_shardings(abstract_vars, mesh, axis_rules, fsdp_axis=fsdp_axis)
  return graphdef, abstract_vars, shardings


def global_norm(tree) -> jax.Array:
  """sqrt of the sum of squares of every leaf, in float32."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.zeros((), jnp.float32)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))
