"""Virgo: graph-aware variances for GNN kernels (Li, Song, Song, Wipf, "On the Initialization
of Graph Neural Networks", ICML 2023, arXiv 2312.02622; the layer variances of its forward
and backward analysis, as the authors' code computes them, virgo_icml2023 `utils.py`).

Model: Z_l = Â H_{l-1} W_l, H_l = ReLU(Z_l) for l < L, Â = D̃^{-1/2}(A + I)D̃^{-1/2} (GCN with
self-loops). N nodes, m0 input features, m hidden width, C classes, layers l = 1..L.

  graph terms   x̄_i = (1/m0) Σ_j X_ij,   a_k = ‖Âᵏ x̄‖²,   b_k = ‖Âᵏ 1_N‖²   (k = 1..L)
  forward       σ²_f(1) = 2/m0,           σ²_f(l) = (2/m) a_{l-1}/a_l            (l ≥ 2)
  backward      σ²_b(L) = N/((C-1) b_1),  σ²_b(l) = (2/m) b_{L-l}/b_{L-l+1}      (l ≤ L-1)
  combined      harmonic: 2/(1/σ²_f + 1/σ²_b);  arithmetic: (σ²_f + σ²_b)/2
  draw          W_l ~ U(-√(3σ²(l)), √(3σ²(l)))

The 2 is the ReLU gate (each path open with probability ½); a_k and b_k are L sparse
mat-vecs (`jax.ops.segment_sum` over the edges). Baselines by name: `xavier_uniform`,
`he_uniform` (Kaiming fan_in) and `kaiming_fan_out` (registered here), all uniform as in the
paper's comparison. `virgo_forward`, `virgo_backward`, `virgo_arithmetic` name the modes, so
one study (`init.compare`) can hold several.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np

from initlab.init.registry import register_initializer, register_scheme
from initlab.init.rules import Rules
from initlab.init.schemes import InitContext, Scheme
from initlab.init.specs import infer_spec
from initlab.init import tree as tree_lib

MODES = ('forward', 'backward', 'harmonic', 'arithmetic')
MEANS = ('harmonic', 'arithmetic')


def propagate(x: jax.Array, senders, receivers, num_nodes: int) -> jax.Array:
  """Â x for Â = D̃^{-1/2}(A + I)D̃^{-1/2}; `senders`/`receivers` (E,): symmetric edges
  without self-loops (the self-loops are added here); x: (N,) or (N, d)."""
  deg = 1.0 + jax.ops.segment_sum(jnp.ones(receivers.shape, x.dtype), receivers, num_nodes)
  inv_sqrt = jax.lax.rsqrt(deg)
  y = x * inv_sqrt.reshape((-1,) + (1,) * (x.ndim - 1))
  agg = jax.ops.segment_sum(y[senders], receivers, num_nodes) + y
  return agg * inv_sqrt.reshape((-1,) + (1,) * (x.ndim - 1))


@functools.partial(jax.jit, static_argnames='num_layers')
def graph_terms(senders, receivers, feature_mean, num_layers: int) -> tuple[jax.Array, ...]:
  """(a, b), each (L,): a_k = ‖Âᵏ x̄‖², b_k = ‖Âᵏ 1‖² for k = 1..L (canonical edges)."""
  n = feature_mean.shape[0]
  dtype = jnp.result_type(float)  # float64 when x64 is on
  senders, receivers = jnp.asarray(senders), jnp.asarray(receivers)
  x = jnp.stack([jnp.asarray(feature_mean, dtype), jnp.ones(n, dtype)], axis=1)
  out = []
  for _ in range(num_layers):
    x = propagate(x, senders, receivers, n)
    out.append(jnp.sum(x * x, axis=0))
  out = jnp.stack(out)
  return out[:, 0], out[:, 1]


def layer_variances(
  a, b, *, num_nodes: int, in_features: int, hidden: int, num_classes: int
) -> tuple[jax.Array, jax.Array]:
  """(forward, backward) σ² of layers 1..L from the graph terms (module docstring)."""
  if num_classes < 2:
    raise ValueError(
      f'virgo: num_classes must be >= 2 (the backward term has C - 1), got {num_classes}'
    )
  fwd = jnp.concatenate([jnp.full((1,), 2.0 / in_features, a.dtype), 2.0 / hidden * a[:-1] / a[1:]])
  # Layer l < L: (2/m) b_{L-l}/b_{L-l+1}, i.e. layers L-1..1 use k = 1..L-1: reversed.
  hidden_bwd = (2.0 / hidden * b[:-1] / b[1:])[::-1]
  bwd = jnp.concatenate(
    [hidden_bwd, jnp.full((1,), num_nodes / ((num_classes - 1) * b[0]), b.dtype)]
  )
  return fwd, bwd


def combine(forward, backward, mean: str = 'harmonic') -> jax.Array:
  if mean == 'harmonic':
    return 2.0 / (1.0 / forward + 1.0 / backward)
  if mean == 'arithmetic':
    return (forward + backward) / 2.0
  raise ValueError(f'virgo: mean={mean!r}; valid: {", ".join(MEANS)}')


def variances(
  senders,
  receivers,
  features,
  *,
  num_layers: int,
  hidden: int,
  num_classes: int,
  mean: str = 'harmonic',
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Virgo's per-layer weight variances (forward, backward, combined), each (num_layers,).

  Args:
    senders, receivers: int (E,) directed edges; symmetrized, deduplicated and given
      self-loops here as GCN does (existing self-loops are dropped first).
    features: (N, m0) node features.
    num_layers: L; hidden: m; num_classes: C (≥ 2).
    mean: 'harmonic' (the authors' default) or 'arithmetic' for `combined`.
  Computed in JAX's default float (float64 when jax_enable_x64 is on).
  """
  if mean not in MEANS:
    raise ValueError(f'virgo: mean={mean!r}; valid: {", ".join(MEANS)}')
  if num_layers < 1:
    raise ValueError(f'virgo: num_layers must be >= 1, got {num_layers}')
  from initlab.data.graphs import canonical_edges  # pylint: disable=g-import-not-at-top

  features = jnp.asarray(features, jnp.result_type(float))
  n, m0 = features.shape
  s, r = canonical_edges(np.asarray(senders), np.asarray(receivers), n)
  a, b = graph_terms(s, r, features.mean(axis=1), num_layers)
  fwd, bwd = layer_variances(
    a, b, num_nodes=n, in_features=m0, hidden=hidden, num_classes=num_classes
  )
  return fwd, bwd, combine(fwd, bwd, mean)


def _uniform(variance: float):
  bound = float(np.sqrt(3.0 * variance))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _layer_kernels(params, patterns) -> list[list[tree_lib.Leaf]]:
  """The kernel leaves matched by each layer's regex (sorted by path)."""
  kernels = []
  for leaf in tree_lib.leaves(params):
    try:
      if infer_spec(leaf.path, leaf.shape, leaf.names).role == 'kernel':
        kernels.append(leaf)
    except ValueError:
      continue
  out = []
  for l, pattern in enumerate(patterns):
    matched = sorted((k for k in kernels if re.fullmatch(pattern, k.path)), key=lambda k: k.path)
    if not matched:
      raise ValueError(
        f"init scheme 'virgo': model hint gnn_layers[{l}] = {pattern!r} matches "
        f'no kernel; kernels: {sorted(k.path for k in kernels)[:8]}'
      )
    out.append(matched)
  return out


def model_variances(params, ctx: InitContext, mode: str = 'harmonic') -> np.ndarray:
  """σ²(l) of `mode` for the GNN whose params are `params` on the graph in `ctx` (float64 (L,)).

  Reads `ctx.dataset['graph']` (`initlab.data.graphs.graph_stats`) and the model hint
  'gnn_layers' (one regex per message-passing layer, in order). m0 = fan_in and m = fan_out
  of layer 1's first kernel (by path), C = fan_out of layer L's last kernel.
  """
  graph = ctx.require('graph', 'virgo')
  layers = _layer_kernels(params, ctx.require('gnn_layers', 'virgo'))
  fans = lambda leaf: infer_spec(leaf.path, leaf.shape, leaf.names).fans(leaf.shape)
  in_features, hidden = fans(layers[0][0])
  num_classes = fans(layers[-1][-1])[1]
  with jax.ensure_compile_time_eval():  # Concrete even inside the jitted init.
    a, b = graph_terms(graph['senders'], graph['receivers'], graph['feature_mean'], len(layers))
    fwd, bwd = layer_variances(
      a,
      b,
      num_nodes=graph['num_nodes'],
      in_features=in_features,
      hidden=hidden,
      num_classes=num_classes,
    )
    out = {'forward': fwd, 'backward': bwd}.get(mode)
    out = np.asarray(combine(fwd, bwd, mode) if out is None else out, np.float64)
  if not np.all(np.isfinite(out) & (out > 0)):
    raise ValueError(
      f"init scheme 'virgo': variances {out.tolist()} are not all finite and "
      '> 0 (all-zero features make a_k = 0)'
    )
  return out


@register_scheme(
  'virgo',
  description='Virgo (arXiv 2312.02622): GNN kernels U(±√(3σ²)) with '
  'graph-aware forward/backward variances; mode forward|backward|harmonic|'
  'arithmetic',
)
def virgo(mode: str = 'harmonic') -> Scheme:
  """Virgo init of every message-passing kernel (module docstring); other params untouched.

  Needs the graph statistics (`ctx.dataset['graph']`, a graph dataset) and the model hint
  'gnn_layers'. `mode`: 'forward' (σ²_f), 'backward' (σ²_b), 'harmonic' (default) or
  'arithmetic' mean of the two.
  """
  if mode not in MODES:
    raise ValueError(f"init scheme 'virgo': mode={mode!r}; valid: {', '.join(MODES)}")

  def scheme(key, params, ctx=None):
    ctx = ctx if ctx is not None else InitContext()
    var = model_variances(params, ctx, mode)
    patterns = ctx.require('gnn_layers', 'virgo')
    rules = Rules([(p, _uniform(v)) for p, v in zip(patterns, var)], roles=('kernel',))
    return rules(key, params, ctx)

  return scheme


@register_initializer(
  'kaiming_fan_out', description='Kaiming fan_out, uniform: Var = 2/fan_out (GNN baseline)'
)
def kaiming_fan_out(in_axis=-2, out_axis=-1, batch_axis=()):
  """He et al. (arXiv 1502.01852) in fan_out mode, uniform: U(±√(6/fan_out))."""
  return jax.nn.initializers.variance_scaling(
    2.0, 'fan_out', 'uniform', in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis
  )


for _mode in ('forward', 'backward', 'arithmetic'):  # One name per mode, for init.compare.
  register_scheme(
    f'virgo_{_mode}',
    description=f"Virgo (arXiv 2312.02622) in mode '{_mode}': virgo(mode={_mode!r})",
  )(functools.partial(virgo, mode=_mode))
