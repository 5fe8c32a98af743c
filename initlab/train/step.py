"""The jitted train and eval steps: explicit shardings, donated state, metrics on device.

A train step returns the new state and a dict of scalar metrics that stay on the device
(`loss`, `accuracy`, `l2_params`, `l2_grads`, `l2_updates`, `learning_rate`, and
`nonfinite_step`: -1, or the first step whose loss or gradients were NaN/Inf). The loop
runs this step on log steps and a lean one without metrics in between (both track NaN/Inf
in the state), and fetches the metrics one step late: there is no per-step host sync.

The loss is the run's (`initlab.losses`: `config.train.loss`); a loss that needs a teacher
gets the logits of `Teacher` (a non-donated argument of the jitted step, under
`stop_gradient`). Only the trainable partition (`setup.trainable`) is differentiated and
updated; masked entries (`state.masks`) get no gradient and stay exactly 0.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from initlab import losses as losses_lib
from initlab.losses import INPUT_KEY, MASK_KEY, TARGET_KEY, masked_mean, model_input  # noqa: F401
from initlab.train import partition
from initlab.train import state as state_lib
from initlab.train.state import Setup, TrainState


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A frozen model whose logits a distillation loss reads.

  Attributes:
    graphdef: its `nnx.GraphDef` (any zoo architecture with the run's output space).
    variables: (params, model_state) nested dicts, on the run's mesh.
    shardings: their `NamedSharding`s, as a like tuple.
    source: where it was restored from (for messages).
  """

  graphdef: Any
  variables: Any
  shardings: Any
  source: str = ''

  def logits(self, variables, x) -> jax.Array:
    """The teacher's eval-mode logits on input `x`, without gradient."""
    model = nnx.merge(self.graphdef, *variables)
    return jax.lax.stop_gradient(model(x, train=False).astype(jnp.float32))


def _call(model: nnx.Module, x, train: bool, dropout_key):
  """`model(x, train=train)`, with a dropout key if the model's call takes `rngs`."""
  if train and 'rngs' in inspect.signature(model.__call__).parameters:
    return model(x, train=train, rngs=nnx.Rngs(dropout=dropout_key))
  return model(x, train=train)


def forward(setup: Setup, params, model_state, batch, *, task: str, train: bool, dropout_key=None):
  """(float32 logits, the new model state) of the model on `batch`."""
  model = setup.merge(params, model_state)
  logits = _call(model, model_input(batch, task), train, dropout_key).astype(jnp.float32)
  return logits, state_lib.pure_variables(model)[1]


def correct(logits, batch, task: str) -> jax.Array:
  """Per-example (per-token) 1.0 where the argmax is the label, float32."""
  return (jnp.argmax(logits, -1) == batch[TARGET_KEY[task]]).astype(jnp.float32)


def make_train_step(
  setup: Setup,
  *,
  task: str,
  batch_sharding,
  metrics: bool = True,
  learning_rate: Callable | None = None,
  loss: losses_lib.Loss = losses_lib.CE,
  teacher: Teacher | None = None,
) -> Callable:
  """`(state, batch) -> (state, metrics)`, jitted with donated state and explicit shardings.

  Args:
    setup: the model's `Setup` (graphdef, optimizer, state shardings, trainable partition).
    task: 'classification', 'lm' or 'node_classification' (loss over the batch's 'mask').
    batch_sharding: `NamedSharding` of every batch leaf (leading axis = global batch; a
      graph's is replicated).
    metrics: compute the logged metrics; False gives the lean step the loop runs between
      log steps (metrics `{}`), which saves a few reductions per step, noticeable for small
      models. It checks only the loss for NaN/Inf: a non-finite gradient makes the params,
      hence the next step's loss, non-finite, so it is caught at most one step later.
    learning_rate: optional schedule `step -> lr`, reported as the `learning_rate` metric.
    loss: the training loss (`initlab.losses.get_loss`).
    teacher: the frozen teacher of a loss that needs one; its variables are passed to the
      jitted step as a third, non-donated argument (not baked into the program).
  """
  fn = train_step_fn(setup, task=task, metrics=metrics, learning_rate=learning_rate, loss=loss)
  if teacher is None:
    return jax.jit(
      fn,
      in_shardings=(setup.shardings, batch_sharding),
      out_shardings=(setup.shardings, setup.shardings.step),
      donate_argnums=(0,),
    )
  step = jax.jit(
    lambda state, batch, variables: fn(state, batch, (teacher, variables)),
    in_shardings=(setup.shardings, batch_sharding, teacher.shardings),
    out_shardings=(setup.shardings, setup.shardings.step),
    donate_argnums=(0,),
  )
  return lambda state, batch: step(state, batch, teacher.variables)


def train_step_fn(
  setup: Setup,
  *,
  task: str,
  metrics: bool = True,
  learning_rate: Callable | None = None,
  loss: losses_lib.Loss = losses_lib.CE,
) -> Callable:
  """The train step `(state, batch, teacher=None) -> (state, metrics)` before `jax.jit` (args
  as `make_train_step`; `teacher`: (Teacher, its variables)); with `setup.tx`. The vmap
  sweep runner (`initlab.sweep.vmap`) maps this same function over stacked trials."""
  tx = setup.tx

  def train_step(state: TrainState, batch, teacher=None) -> tuple[TrainState, dict[str, jax.Array]]:
    dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    teacher_logits = None
    if loss.needs_teacher:
      if teacher is None:
        raise ValueError(f'loss {loss.name!r} needs a teacher (config.train.distill.teacher)')
      model, variables = teacher
      teacher_logits = model.logits(variables, model_input(batch, task))
    trainable = partition.select(state.params, setup.trainable)

    def loss_fn(trainable):
      params = partition.insert(state.params, trainable)
      logits, model_state = forward(
        setup, params, state.model_state, batch, task=task, train=True, dropout_key=dropout_key
      )
      value = losses_lib.mean_loss(loss, logits, batch, task, teacher_logits)
      return value, (logits, model_state)

    (value, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    grads = partition.apply_masks(grads, state.masks)
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    trainable = partition.apply_masks(optax.apply_updates(trainable, updates), state.masks)
    params = partition.insert(state.params, trainable)
    step = state.step + 1
    finite = jnp.isfinite(value)
    if metrics:
      l2_grads = state_lib.global_norm(grads)
      finite &= jnp.isfinite(l2_grads)
    nonfinite_step = jnp.where(~finite & (state.nonfinite_step < 0), step, state.nonfinite_step)
    new_state = state.replace(
      step=step,
      params=params,
      opt_state=opt_state,
      model_state=model_state,
      nonfinite_step=nonfinite_step,
    )
    if not metrics:
      return new_state, {}
    out = dict(
      loss=value,
      accuracy=masked_mean(correct(logits, batch, task), batch),
      l2_params=state_lib.global_norm(params),
      l2_grads=l2_grads,
      l2_updates=state_lib.global_norm(updates),
      nonfinite_step=nonfinite_step,
    )
    if learning_rate is not None:
      out['learning_rate'] = jnp.asarray(learning_rate(state.step), jnp.float32)
    return new_state, out

  return train_step


def make_eval_step(setup: Setup, *, task: str, batch_sharding) -> Callable:
  """`(state, batch) -> {'loss_sum', 'correct_sum', 'count'}` over unmasked examples/tokens."""
  return jax.jit(
    eval_step_fn(setup, task=task),
    in_shardings=(setup.shardings, batch_sharding),
    out_shardings=setup.shardings.step,
  )


def eval_step_fn(setup: Setup, *, task: str) -> Callable:
  """The eval step before `jax.jit` (shared with `initlab.sweep.vmap`)."""

  def eval_step(state: TrainState, batch) -> dict[str, jax.Array]:
    logits, _ = forward(setup, state.params, state.model_state, batch, task=task, train=False)
    ce = losses_lib.cross_entropy(logits, batch[TARGET_KEY[task]])
    hits = correct(logits, batch, task)
    weight = jnp.ones_like(ce)
    if MASK_KEY in batch:
      mask = batch[MASK_KEY].astype(jnp.float32)
      weight = weight * mask.reshape(mask.shape + (1,) * (ce.ndim - mask.ndim))
    return dict(
      loss_sum=jnp.sum(ce * weight), correct_sum=jnp.sum(hits * weight), count=jnp.sum(weight)
    )

  return eval_step


def summarize_eval(sums: dict[str, Any]) -> dict[str, float]:
  """`{'loss', 'accuracy'}` from summed eval outputs."""
  count = max(float(sums['count']), 1.0)
  return dict(loss=float(sums['loss_sum']) / count, accuracy=float(sums['correct_sum']) / count)
