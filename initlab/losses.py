"""Training losses, in one place: the train step, the data stage (`ctx.data.loss`, so LSUV,
MetaInit and GradInit) and the eval step all compute their loss here.

    loss = losses.get_loss('distill', temperature=2.0, alpha=1.0)    # config.train.loss
    per_example = loss(logits, labels, teacher_logits)               # (B,) or (B, T) float32
    value = losses.mean_loss(loss, logits, batch, task, teacher_logits)   # the step's scalar

A loss is a registered factory `(**options) -> fn(logits, labels, teacher_logits) -> per
example values` (per token for the LM, per node for graphs); the batch mean (over the
labelled nodes of a graph's `mask`) is `masked_mean`. `needs_teacher` losses get the logits
of a teacher model (`config.train.distill.teacher`), computed under `stop_gradient`.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

# Batch keys of the tasks (see `initlab.data`). A 'node_classification' batch is a whole graph:
# the model reads the batch dict itself, the loss averages over the nodes of its 'mask'.
INPUT_KEY = {'classification': 'image', 'lm': 'inputs'}
TARGET_KEY = {'classification': 'label', 'lm': 'targets', 'node_classification': 'labels'}
MASK_KEY = 'mask'
GRAPH_TASK = 'node_classification'


def model_input(batch, task: str):
  """What the model of `task` is called on: `batch[INPUT_KEY[task]]`, or the graph dict."""
  return batch if task == GRAPH_TASK else batch[INPUT_KEY[task]]


def masked_mean(x, batch):
  """Mean of per-example `x` over the batch, or over its `mask` when it has one (a graph's
  nodes of one split; padding in eval batches)."""
  if MASK_KEY not in batch:
    return jnp.mean(x)
  w = batch[MASK_KEY].astype(x.dtype)
  w = w.reshape(w.shape + (1,) * (x.ndim - w.ndim))
  return jnp.sum(x * w) / jnp.maximum(jnp.sum(jnp.broadcast_to(w, x.shape)), 1)


def cross_entropy(logits, labels) -> jax.Array:
  """Softmax cross-entropy of integer `labels`, per example (per token), float32."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def distillation(logits, labels, teacher_logits, *, temperature: float, alpha: float):
  """(1 − α)·CE(s, y) + α·T²·KL(softmax(t/T) ‖ softmax(s/T)), per example (per token).

  Hinton et al. 2015 (arXiv 1503.02531, Sec. 2: the T² keeps the soft term's gradient scale
  as T changes); α weighs the teacher as DeiT's `distillation-alpha` (arXiv 2012.12877), so
  α = 1 is pure distillation. The teacher's logits carry no gradient.
  """
  s = logits.astype(jnp.float32) / temperature
  t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / temperature
  log_p_t = jax.nn.log_softmax(t, axis=-1)
  kl = jnp.sum(jnp.exp(log_p_t) * (log_p_t - jax.nn.log_softmax(s, axis=-1)), axis=-1)
  soft = temperature**2 * kl
  if alpha == 1.0:
    return soft
  return (1.0 - alpha) * cross_entropy(logits, labels) + alpha * soft


@dataclasses.dataclass(frozen=True)
class Loss:
  """A configured loss: `loss(logits, labels, teacher_logits=None)` -> per-example values."""

  name: str
  fn: Callable
  needs_teacher: bool
  options: dict[str, Any]

  def __call__(self, logits, labels, teacher_logits=None) -> jax.Array:
    if self.needs_teacher and teacher_logits is None:
      raise ValueError(f'loss {self.name!r} needs the logits of a teacher model')
    if teacher_logits is not None and teacher_logits.shape != logits.shape:
      raise ValueError(
        f'loss {self.name!r}: teacher logits of shape {teacher_logits.shape} for student '
        f'logits of shape {logits.shape} (the two models must share the output space)'
      )
    return self.fn(logits, labels, teacher_logits)


_LOSSES: dict[str, tuple[Callable, bool, str]] = {}


def register_loss(name: str, *, needs_teacher: bool = False, description: str = ''):
  """Decorator registering `factory(**options) -> fn(logits, labels, teacher_logits)`."""

  def register(factory):
    if name in _LOSSES:
      raise ValueError(f'register_loss: {name!r} is already registered')
    _LOSSES[name] = (factory, needs_teacher, description)
    return factory

  return register


def loss_names() -> list[str]:
  return sorted(_LOSSES)


def option_names(name: str) -> list[str]:
  """The options `get_loss(name, ...)` takes."""
  return list(inspect.signature(_LOSSES[name][0]).parameters)


def get_loss(name: str, **options) -> Loss:
  """The loss `name` with `options`; ValueError naming the valid names or options."""
  if name not in _LOSSES:
    raise ValueError(f'unknown loss {name!r}; valid: {", ".join(loss_names())}')
  factory, needs_teacher, _ = _LOSSES[name]
  valid = option_names(name)
  for key in options:
    if key not in valid:
      raise ValueError(f'loss {name!r} has no option {key!r}; valid: {", ".join(valid) or "none"}')
  return Loss(name, factory(**options), needs_teacher, dict(options))


@register_loss('ce', description='softmax cross-entropy with the labels')
def _ce():
  return lambda logits, labels, teacher_logits=None: cross_entropy(logits, labels)


@register_loss(
  'distill',
  needs_teacher=True,
  description='(1-alpha) CE + alpha T^2 KL(teacher || student) at temperature T',
)
def _distill(temperature: float = 1.0, alpha: float = 0.5):
  if not temperature > 0:
    raise ValueError(f'temperature: expected > 0, got {temperature!r}')
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f'alpha: expected a weight in [0, 1], got {alpha!r}')

  def fn(logits, labels, teacher_logits):
    return distillation(logits, labels, teacher_logits, temperature=temperature, alpha=alpha)

  return fn


CE = get_loss('ce')


def mean_loss(loss: Loss, logits, batch, task: str, teacher_logits=None) -> jax.Array:
  """The scalar training loss of `batch`: `loss` per example, averaged (`masked_mean`)."""
  return masked_mean(loss(logits, batch[TARGET_KEY[task]], teacher_logits), batch)
