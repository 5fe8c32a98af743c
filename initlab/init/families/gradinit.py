"""GradInit (Zhu, Ni, Xu, Kong, Huang & Goldstein 2021, arXiv 2102.08098, Algorithm 1).

Learns one scale α_j ≥ α_min per weight tensor (every kernel and embedding, each layer's
slice of a stacked one, see `datastage`), directions unchanged, so that the training loss
after one step of the target optimizer is as small as possible while the gradient stays
bounded. Iteration t, on batches S (for the step) and S̃ (for the loss after it):

    g = ∇_θ L(S; θ_α)
    if ‖g‖_p > γ:  minimize ‖g‖_p                  over α
    else:          minimize L(S̃; θ_α − η·A[g])     over α
    α ← max(α, α_min)

A[g] is the target optimizer's first step direction: g for SGD (p = 2), and Adam's first
bias-corrected step g/(|g| + 1e-8) ≈ sgn g for Adam (p = 1): the first-order loss decrease
of the step is η‖g‖₂² resp. η‖g‖₁. The objective is minimized by Adam over α with
learning rate `lr` (the paper's τ), differentiating through g. S and S̃ are consecutive
training batches of `ctx.data.batches` (cycled: with the default two, always the same
pair); the loss is the training loss `ctx.data.loss` in train mode (BatchNorm batch
statistics, as in training).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from initlab.init.families import datastage
from initlab.init.registry import register_scheme

OPTIMIZERS = {'sgd': 2, 'adam': 1}  # target optimizer -> p of the gradient-norm constraint


def objective_fn(
  ctx_data, tensors, *, inner_lr: float, optimizer: str, gamma: float, train: bool = True
):
  """`(scales, params, batch, next_batch) -> (objective, (grad_norm, loss_after_step))`
  (module docstring); `scales` is `{path: scale_shape array}` for `tensors`."""
  p_norm = OPTIMIZERS[optimizer]

  def objective(scales, params, batch, next_batch):
    theta = datastage.apply_scales(params, tensors, scales)
    g = jax.grad(lambda p: ctx_data.loss(p, batch, train=train))(theta)
    leaves = [x.astype(jnp.float32) for x in jax.tree.leaves(g)]
    if p_norm == 1:
      norm = sum(jnp.sum(jnp.abs(x)) for x in leaves)
      step = jax.tree.map(lambda x: x / (jnp.abs(x) + 1e-8), g)
    else:
      norm = jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))
      step = g
    after = jax.tree.map(lambda t, s: t - inner_lr * s.astype(t.dtype), theta, step)
    loss = ctx_data.loss(after, next_batch, train=train)
    return jnp.where(norm > gamma, norm, loss), (norm, loss)

  return objective


def run(key, params, ctx, **options):
  """GradInit on `params` with the options of `gradinit` (its defaults; `num_batches` is the
  pipeline's); returns `(params, history)`: the new params (in the given shardings) and a
  dict of numpy (steps,) arrays 'objective', 'grad_norm', 'loss' measured before each update.
  `key` is unused (the batches are the context's): deterministic."""
  del key
  o = datastage.options_of(gradinit, options)
  ctx_data = datastage.data_context(ctx, 'gradinit')
  tensors = datastage.scaled_tensors(ctx_data, params)
  objective = objective_fn(
    ctx_data, tensors, inner_lr=o.inner_lr, optimizer=o.optimizer, gamma=o.gamma, train=o.train
  )
  tx = optax.adam(o.lr)

  @jax.jit
  def step(scales, opt_state, params, batch, next_batch):
    (value, (norm, loss)), d = jax.value_and_grad(objective, has_aux=True)(
      scales, params, batch, next_batch
    )
    updates, opt_state = tx.update(d, opt_state, scales)
    scales = jax.tree.map(
      lambda s: jnp.maximum(s, o.alpha_min), optax.apply_updates(scales, updates)
    )
    return scales, opt_state, jnp.stack([value, norm, loss])

  scales = datastage.ones(tensors)
  opt_state = tx.init(scales)
  history = []
  for t in range(o.steps):
    batch = datastage.batch_at(ctx_data.batches, 2 * t)
    next_batch = datastage.batch_at(ctx_data.batches, 2 * t + 1)
    scales, opt_state, record = step(scales, opt_state, params, batch, next_batch)
    history.append(record)
  h = np.asarray(jnp.stack(history)) if history else np.zeros((0, 3))
  history = dict(objective=h[:, 0], grad_norm=h[:, 1], loss=h[:, 2])
  return datastage.scaled_like(params, tensors, scales), history


@register_scheme(
  'gradinit',
  description='GradInit: per-tensor scales minimizing the loss '
  'after one optimizer step, gradient norm ≤ γ (Zhu et al. 2021)',
)
def gradinit(
  steps: int = 100,
  lr: float = 0.01,
  inner_lr: float = 0.1,
  optimizer: str = 'sgd',
  gamma: float = 1.0,
  alpha_min: float = 0.01,
  train: bool = True,
  num_batches: int = 2,
):
  """GradInit (arXiv 2102.08098, Algorithm 1); data stage.

  Args:
    steps: Adam steps on the scales (the paper runs one epoch).
    lr: Adam's learning rate on the scales (the paper's τ).
    inner_lr: η, the learning rate of the one simulated step of the target optimizer.
    optimizer: the target optimizer, 'sgd' (constraint on ‖g‖₂) or 'adam' (on ‖g‖₁).
    gamma: γ, the gradient-norm bound.
    alpha_min: lower bound of every scale.
    train: loss in train mode (BatchNorm batch statistics).
    num_batches: training batches the pipeline draws (≥ 2: a step batch and a loss batch).
  """
  options = dict(locals())  # all of the above, passed on to `run`
  if optimizer not in OPTIMIZERS:
    raise ValueError(
      f"init scheme 'gradinit': optimizer={optimizer!r}; valid choices: {', '.join(OPTIMIZERS)}"
    )
  datastage.check_positive(
    'gradinit',
    ('steps', 'num_batches'),
    steps=steps,
    lr=lr,
    inner_lr=inner_lr,
    gamma=gamma,
    alpha_min=alpha_min,
    num_batches=num_batches,
  )
  return datastage.stage_scheme(run, **options)
