"""LSUV: layer-sequential unit-variance init (Mishkin & Matas 2016, arXiv 1511.06422, Alg. 1).

  1. every kernel gets an orthogonal init (Saxe et al. 2014; convs as (kh·kw·in, out));
  2. then, layer by layer in forward order: measure the variance v of the layer's output
     on the batch and set W ← W / √v, until |v − 1| < tol or `max_iters` rescales.

Normalized layers: every module that holds a `kernel` Param (nnx.Linear, LinearGeneral,
Conv, Einsum, …: the MLP's hidden layers and head, a ResNet's convs and head, a
transformer's patch embedding, query/key/value/out and fc1/fc2 projections and head). The
variance is that of the module's own output (bias added, before any norm, activation or
residual add), over every element of the output on all of `ctx.data.batches`. Biases,
embeddings and norm params are left as they are. The models run in eval mode
(`train=False`: BatchNorm uses its running statistics, 0 and 1 at init).

Each layer's output is captured by `initlab.init.families.capture.layer_outputs` (no hooks
in the model code); for the scanned LM, slice i of blocks/mlp/fc1/kernel is normalized on its
own ('blocks/mlp/fc1/kernel[i]').
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from initlab.init import tree as tree_lib
from initlab.init.families import datastage
from initlab.init.families.capture import layer_outputs  # noqa: F401  (re-exported)
from initlab.init.families.orthogonal import orthogonal as orthogonal_init
from initlab.init.registry import register_scheme
from initlab.init.rules import Rules
from initlab.init.schemes import with_stage


def _pooled(parts):
  """Variance of the union of parts [(count, mean, variance)]: Σ n (var + (mean − m)²) / N,
  m the pooled mean (no E[y²] − E[y]² cancellation)."""
  total = sum(n for n, _, _ in parts)
  mean = sum(n * m for n, m, _ in parts) / total
  return sum(n * (v + jnp.square(m - mean)) for n, m, v in parts) / total


def unit_name(unit) -> str:
  path, index = unit
  return path if index is None else f'{path}[{index}]'


def _plan(data, params):
  """The units in forward order and, per kernel path, the unit index of each slice."""
  units = []

  def run(p):
    logits, record = layer_outputs(data.model(p), data.inputs(data.batches[0]))
    units.extend(unit for unit, _ in record)
    return logits

  jax.eval_shape(run, params)
  order = list(dict.fromkeys(units))
  if not order:
    raise ValueError("lsuv: the model ran no module holding a 'kernel' param; nothing to normalize")
  slices = {}
  for u, (path, index) in enumerate(order):
    slices.setdefault(path, {})[index] = u
  return order, slices


def _scaled_params(params, slices, scales):
  """params with kernel `path` (slice i) multiplied by scales[unit index]."""
  index = {
    p: sorted(s.items(), key=lambda kv: -1 if kv[0] is None else kv[0]) for p, s in slices.items()
  }

  def visit(leaf):
    if leaf.path not in index:
      return leaf.value
    entries = index[leaf.path]
    if entries[0][0] is None:
      return leaf.value * scales[entries[0][1]].astype(leaf.value.dtype)
    if [i for i, _ in entries] != list(range(leaf.shape[0])):
      raise ValueError(
        f'lsuv: the stages ran slices {[i for i, _ in entries]} of stacked '
        f'{leaf.path!r} (shape {leaf.shape}); every slice must run once'
      )
    s = jnp.stack([scales[u] for _, u in entries]).astype(leaf.value.dtype)
    return leaf.value * s.reshape((-1,) + (1,) * (leaf.value.ndim - 1))

  return tree_lib.map_leaves(visit, params)


def output_variances(data, params, batches=None) -> dict[str, float]:
  """Variance of every kernel layer's output over `batches` (default: the context's).

  Keys are `unit_name`s: the kernel path, with '[i]' for slice i of a stacked kernel.
  """
  batches = tuple(data.batches if batches is None else batches)
  order, slices = _plan(data, params)
  variances = _variance_fn(data, order, slices)
  v = np.asarray(variances(params, jnp.ones(len(order)), batches))
  return {unit_name(u): float(x) for u, x in zip(order, v)}


def _variance_fn(data, order, slices):
  def variances(params, scales, batches):
    params = _scaled_params(params, slices, scales)
    parts = {u: [] for u in order}
    for batch in batches:
      _, record = layer_outputs(data.model(params), data.inputs(batch))
      for unit, y in record:
        y = y.astype(jnp.float32)
        parts[unit].append((y.size, jnp.mean(y), jnp.var(y)))
    return jnp.stack([_pooled(parts[u]) for u in order])

  return jax.jit(variances)


@register_scheme(
  'lsuv',
  description="LSUV: orthogonal, then each layer's output variance "
  'scaled to 1 on a batch, in forward order (Mishkin & Matas 2016)',
)
def lsuv(tol: float = 0.1, max_iters: int = 10, orthogonal: bool = True, num_batches: int = 1):
  """Layer-sequential unit-variance init (arXiv 1511.06422, Algorithm 1); data stage.

  Args:
    tol: stop rescaling a layer when |Var(output) − 1| < tol (the paper's 0.1).
    max_iters: at most this many rescales per layer (the paper's 10).
    orthogonal: first give every kernel an orthogonal init (step 1); False starts from the
      params the param stage made.
    num_batches: training batches the variances are measured on (`ctx.data.batches`).
  Layers, outputs and stacked params: see the module docstring. A layer whose output has
  zero or non-finite variance raises a ValueError naming it.
  """
  datastage.check_positive(
    'lsuv', ('max_iters', 'num_batches'), tol=tol, max_iters=max_iters, num_batches=num_batches
  )

  def scheme(key, params, ctx=None):
    data = datastage.data_context(ctx, 'lsuv')
    given = params
    if orthogonal:
      rules = Rules([('.*', orthogonal_init())], roles=('kernel',))
      params = jax.jit(lambda k, p: rules(k, datastage.annotated(data, p)).to_pure_dict())(
        key, params
      )
    order, slices = _plan(data, params)
    variances = _variance_fn(data, order, slices)
    batches = tuple(data.batches)
    scales, current = np.ones(len(order), np.float32), None
    for u in range(len(order)):
      for _ in range(max_iters):
        if current is None:  # All layers' variances under the current scales.
          current = np.asarray(variances(params, jnp.asarray(scales), batches))
        v = float(current[u])
        if not (math.isfinite(v) and v > 0):
          raise ValueError(
            f'lsuv: layer {unit_name(order[u])!r} has output variance {v} on '
            'the batch; cannot scale it to 1'
          )
        if abs(v - 1.0) < tol:
          break
        scales[u] /= math.sqrt(v)
        current = None
    out = jax.jit(lambda p, s: _scaled_params(p, slices, s))(params, jnp.asarray(scales))
    return datastage.like(out, given)

  return with_stage(scheme, 'data', num_batches=num_batches)
