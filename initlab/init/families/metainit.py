"""MetaInit (Dauphin & Schoenholz, "MetaInit: Initializing learning by learning to
initialize", NeurIPS 2019, Section 3 and Algorithm 1).

Only the norm of each weight tensor is tuned (the paper tunes every tensor of ≥ 2 dims; here:
every kernel and embedding, and each layer's slice of a stacked one, see `datastage`). The
objective is the gradient quotient

    GQ(θ) = (1/N) Σ_i | (g_i − (Hg)_i) / (g_i + ε·sgn g_i) − 1 |,

g = ∇L(θ), H the Hessian of the loss, N the number of params, sgn 0 = +1 and not
differentiated: (g − Hg) is the first-order gradient after a step θ − g, so GQ measures
how much one gradient step changes the gradient. Hg is a Hessian-vector product, the
forward derivative of the gradient: `jax.jvp(jax.grad(L), (θ,), (g,))`, and ∇GQ is taken
through it (g as the tangent included). Each step draws a batch, computes GQ and its
derivative d_j with respect to tensor j's norm, and takes a signSGD step with momentum
on the norm: m_j ← μ m_j − lr·sgn d_j, ‖θ_j‖ ← ‖θ_j‖ + m_j (directions unchanged).

Data: by default synthetic, as in the paper: inputs ~ N(0, 1) of the training batch's shape
(tokens uniform over the vocabulary for an LM) and uniform random labels, fresh each step
from the scheme's key; `data='batches'` cycles through `ctx.data.batches` instead. The
loss is the training loss `ctx.data.loss` in eval mode (the paper's `model.eval()`).
A tensor of norm 0 (e.g. a zero-initialized classifier) has no direction and is left as is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from initlab.init.families import datastage
from initlab.init.registry import register_scheme

DATA = ('synthetic', 'batches')
# (input, label) keys; a graph batch keeps its edges and mask, only features/labels are drawn.
_KEYS = {
  'classification': ('image', 'label'),
  'lm': ('inputs', 'targets'),
  'node_classification': ('features', 'labels'),
}


def gradient_quotient(loss_fn, params, eps: float = 1e-5) -> jax.Array:
  """GQ of `loss_fn` at `params` (module docstring), float32 ().

  Hessian-vector product by forward-over-reverse differentiation: jvp of grad.
  """
  g = jax.grad(loss_fn)(params)
  _, hg = jax.jvp(jax.grad(loss_fn), (params,), (g,))
  total, count = 0.0, 0
  for gi, hi in zip(jax.tree.leaves(g), jax.tree.leaves(hg)):
    gi, hi = gi.astype(jnp.float32), hi.astype(jnp.float32)
    sign = jax.lax.stop_gradient(jnp.where(gi >= 0, 1.0, -1.0))
    total = total + jnp.sum(jnp.abs((gi - hi) / (gi + eps * sign) - 1.0))
    count += gi.size
  return total / count


def synthetic_batches(data, template, num_classes: int):
  """`key -> batch` like `template`: N(0, 1) inputs (uniform tokens for lm), uniform labels
  in [0, num_classes), in the template's shardings."""
  inputs_key, labels_key = _KEYS[data.task]
  x, y = template[inputs_key], template[labels_key]

  def constrain(value, like):
    sharding = getattr(like, 'sharding', None)
    if isinstance(sharding, jax.sharding.NamedSharding):
      return jax.lax.with_sharding_constraint(value, sharding)
    return value

  def make(key):
    kx, ky = jax.random.split(key)
    if data.task == 'lm':
      new_x = jax.random.randint(kx, x.shape, 0, num_classes, x.dtype)
    else:
      new_x = jax.random.normal(kx, x.shape, jnp.float32).astype(x.dtype)
    new_y = jax.random.randint(ky, y.shape, 0, num_classes, y.dtype)
    return {**template, inputs_key: constrain(new_x, x), labels_key: constrain(new_y, y)}

  return make


def run(key, params, ctx, **options):
  """MetaInit on `params` with the options of `metainit` (its defaults; `num_batches` is the
  pipeline's); returns `(params, gq)`: the new params (in the given shardings) and the GQ
  before each step, a numpy float array (steps,)."""
  o = datastage.options_of(metainit, options)
  data, steps, lr, momentum = o.data, o.steps, o.lr, o.momentum
  if data not in DATA:
    raise ValueError(f"init scheme 'metainit': data={data!r}; valid choices: {', '.join(DATA)}")
  ctx_data = datastage.data_context(ctx, 'metainit')
  tensors = datastage.scaled_tensors(ctx_data, params)
  norms = datastage.slice_norms(params, tensors)
  template = datastage.batch_at(ctx_data.batches, 0)
  if data == 'synthetic':
    num_classes = jax.eval_shape(
      lambda p, x: ctx_data.apply(p, x), params, ctx_data.inputs(template)
    ).shape[-1]
    make_batch = synthetic_batches(ctx_data, template, num_classes)

  def gq_of_scales(scales, params, batch):
    loss = lambda p: ctx_data.loss(p, batch, train=o.train)
    return gradient_quotient(loss, datastage.apply_scales(params, tensors, scales), o.eps)

  @jax.jit
  def step(scales, memory, params, norms, batch):  # params: arguments, not constants
    gq, d = jax.value_and_grad(gq_of_scales)(scales, params, batch)
    new_scales, new_memory = {}, {}
    for path, n0 in norms.items():
      # d GQ / d‖θ_j‖ = (d GQ / d s_j) / ‖θ_j⁰‖: the same sign.
      m = momentum * memory[path] - lr * jnp.sign(d[path])
      alive = n0 > 0
      new_memory[path] = jnp.where(alive, m, 0.0)
      new_scales[path] = jnp.where(
        alive, (scales[path] * n0 + m) / jnp.where(alive, n0, 1.0), scales[path]
      )
    return new_scales, new_memory, gq

  batch_fn = jax.jit(make_batch) if data == 'synthetic' else None
  scales = datastage.ones(tensors)
  memory = {p: jnp.zeros_like(s) for p, s in scales.items()}
  history = []
  for t in range(steps):
    batch = (
      batch_fn(jax.random.fold_in(key, t))
      if batch_fn is not None
      else datastage.batch_at(ctx_data.batches, t)
    )
    scales, memory, gq = step(scales, memory, params, norms, batch)
    history.append(gq)
  gq = np.asarray(jnp.stack(history)) if history else np.zeros(0)
  return datastage.scaled_like(params, tensors, scales), gq


@register_scheme(
  'metainit',
  description='MetaInit: per-tensor norms by signSGD on the '
  'gradient quotient (Dauphin & Schoenholz 2019)',
)
def metainit(
  steps: int = 500,
  lr: float = 0.1,
  momentum: float = 0.9,
  eps: float = 1e-5,
  data: str = 'synthetic',
  train: bool = False,
  num_batches: int = 1,
):
  """MetaInit (NeurIPS 2019, Algorithm 1; defaults are the paper's); data stage.

  Args:
    steps: signSGD steps on the norms.
    lr, momentum: the signSGD step on each norm (absolute norm units, as in the paper).
    eps: the ε guard of the gradient quotient's denominator.
    data: 'synthetic' (the paper: Gaussian inputs, random labels) or 'batches' (cycle
      through the run's training batches `ctx.data.batches`).
    train: evaluate the loss in train mode (BatchNorm batch statistics); the paper uses eval.
    num_batches: training batches the pipeline draws (the shape template for 'synthetic').
  """
  options = dict(locals())  # all of the above, passed on to `run`
  if data not in DATA:  # Checked here too, so a bad config fails before any data is drawn.
    raise ValueError(f"init scheme 'metainit': data={data!r}; valid choices: {', '.join(DATA)}")
  datastage.check_positive(
    'metainit', ('steps', 'num_batches'), steps=steps, lr=lr, eps=eps, num_batches=num_batches
  )
  if not 0 <= momentum < 1:
    raise ValueError(f"init scheme 'metainit': momentum={momentum!r} must be in [0, 1)")
  return datastage.stage_scheme(run, **options)
