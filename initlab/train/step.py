"""The jitted train and eval steps: explicit shardings, donated state, metrics on device.

A train step returns the new state and a dict of scalar metrics that stay on the device
(`loss`, `accuracy`, `l2_params`, `l2_grads`, `l2_updates`, `learning_rate`, and
`nonfinite_step`: -1, or the first step whose loss or gradients were NaN/Inf). The loop
runs this step on log steps and a lean one without metrics in between (both track NaN/Inf
in the state), and fetches the metrics one step late: there is no per-step host sync.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from initlab.train import state as state_lib
from initlab.train.state import Setup, TrainState

# Batch keys of the tasks (see `initlab.data`). A 'node_classification' batch is a whole graph
# (`initlab.train.node_task`): the model reads the batch dict itself, the loss averages over
# the nodes of its 'mask'.
INPUT_KEY = {'classification': 'image', 'lm': 'inputs'}
TARGET_KEY = {'classification': 'label', 'lm': 'targets', 'node_classification': 'labels'}
MASK_KEY = 'mask'


def model_input(batch, task: str):
  """What the model of `task` is called on: `batch[INPUT_KEY[task]]`, or the graph dict."""
  return batch if task == 'node_classification' else batch[INPUT_KEY[task]]


def masked_mean(x, batch):
  """Mean of per-example `x` (B,) over the batch, or over its `mask` when it has one (a
  graph's nodes of one split; padding in eval batches)."""
  if MASK_KEY not in batch:
    return jnp.mean(x)
  w = batch[MASK_KEY].astype(x.dtype)
  return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1)


def _call(model: nnx.Module, x, train: bool, dropout_key):
  """`model(x, train=train)`, with a dropout key if the model's call takes `rngs`."""
  if train and 'rngs' in inspect.signature(model.__call__).parameters:
    return model(x, train=train, rngs=nnx.Rngs(dropout=dropout_key))
  return model(x, train=train)


def losses(setup: Setup, params, model_state, batch, *, task: str, train: bool, dropout_key=None):
  """Per-example (per-token for LM) cross-entropy, correctness and the new model state.

  `params`, `model_state` and the returned model state are the `TrainState`'s nested dicts.
  """
  model = setup.merge(params, model_state)
  logits = _call(model, model_input(batch, task), train, dropout_key).astype(jnp.float32)
  labels = batch[TARGET_KEY[task]]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return ce, correct, state_lib.pure_variables(model)[1]


def make_train_step(
  setup: Setup,
  *,
  task: str,
  batch_sharding,
  metrics: bool = True,
  learning_rate: Callable | None = None,
) -> Callable:
  """`(state, batch) -> (state, metrics)`, jitted with donated state and explicit shardings.

  Args:
    setup: the model's `Setup` (graphdef, optimizer, state shardings).
    task: 'classification', 'lm' or 'node_classification' (loss over the batch's 'mask').
    batch_sharding: `NamedSharding` of every batch leaf (leading axis = global batch; a
      graph's is replicated).
    metrics: compute the logged metrics; False gives the lean step the loop runs between
      log steps (metrics `{}`), which saves a few reductions per step, noticeable for small
      models. It checks only the loss for NaN/Inf: a non-finite gradient makes the params,
      hence the next step's loss, non-finite, so it is caught at most one step later.
    learning_rate: optional schedule `step -> lr`, reported as the `learning_rate` metric.
  """
  return jax.jit(
    train_step_fn(setup, task=task, metrics=metrics, learning_rate=learning_rate),
    in_shardings=(setup.shardings, batch_sharding),
    out_shardings=(setup.shardings, setup.shardings.step),
    donate_argnums=(0,),
  )


def train_step_fn(
  setup: Setup, *, task: str, metrics: bool = True, learning_rate: Callable | None = None
) -> Callable:
  """The train step before `jax.jit` (args as `make_train_step`); with `setup.tx`. The
  vmap sweep runner (`initlab.sweep.vmap`) maps this same function over stacked trials."""
  tx = setup.tx

  def train_step(state: TrainState, batch) -> tuple[TrainState, dict[str, jax.Array]]:
    dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
      ce, correct, model_state = losses(
        setup, params, state.model_state, batch, task=task, train=True, dropout_key=dropout_key
      )
      return masked_mean(ce, batch), (correct, model_state)

    (loss, (correct, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step = state.step + 1
    finite = jnp.isfinite(loss)
    if metrics:
      l2_grads = state_lib.global_norm(grads)
      finite &= jnp.isfinite(l2_grads)
    nonfinite_step = jnp.where(~finite & (state.nonfinite_step < 0), step, state.nonfinite_step)
    new_state = TrainState(
      step=step,
      params=params,
      opt_state=opt_state,
      model_state=model_state,
      rng=state.rng,
      nonfinite_step=nonfinite_step,
    )
    if not metrics:
      return new_state, {}
    out = dict(
      loss=loss,
      accuracy=masked_mean(correct, batch),
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
    ce, correct, _ = losses(setup, state.params, state.model_state, batch, task=task, train=False)
    weight = jnp.ones_like(ce)
    if MASK_KEY in batch:
      mask = batch[MASK_KEY].astype(jnp.float32)
      weight = weight * mask.reshape(mask.shape + (1,) * (ce.ndim - mask.ndim))
    return dict(
      loss_sum=jnp.sum(ce * weight), correct_sum=jnp.sum(correct * weight), count=jnp.sum(weight)
    )

  return eval_step


def summarize_eval(sums: dict[str, Any]) -> dict[str, float]:
  """`{'loss', 'accuracy'}` from summed eval outputs."""
  count = max(float(sums['count']), 1.0)
  return dict(loss=float(sums['loss_sum']) / count, accuracy=float(sums['correct_sum']) / count)
