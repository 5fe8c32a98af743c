"""Post-training analyses of the GG study: β̂ fits, near-zero counts, quantization, DeepShape.

Thresholds and grids (initlab's choices for this small-scale study, see README):
  NEAR_ZERO   |θ| < 1e-3 counts a kernel entry as "near zero" (BackSlash); the pruned model
              sets exactly those entries to 0. 1e-3 is ~1 % of the kernels' init std
              (0.06-0.18 here), below the RF8/FP8 resolution of typical weights.
  GRID_BITS   DeepShape / entropy grid 2^-10 (the reference's 2^-13 assumes LLM-sized tensors:
              with ~1e5 params most 2^-13 bins hold < 1000 entries, so T would be ~1 step).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

import initlab.init as ii

NEAR_ZERO = 1e-3
GRID_BITS = 10


WEIGHTS = r'.*(kernel|embedding)'  # the weight matrices; biases and norm params are skipped
STACKED = 'blocks/'  # LM: scanned layers carry a leading layer axis


def _kernels(params):
  return [l.value for l in ii.gg.estimate.select_leaves(params, WEIGHTS)]


def weight_layers(params) -> dict[str, jax.Array]:
  """{path: weight}: kernels and embeddings, scanned (stacked) layers split per layer."""
  out = {}
  for l in ii.gg.estimate.select_leaves(params, WEIGHTS):
    if l.path.startswith(STACKED) and l.value.shape[0] > 0:
      for i in range(l.value.shape[0]):
        out[l.path.replace(STACKED, f'{STACKED}{i}/', 1)] = l.value[i]
    else:
      out[l.path] = l.value
  return out


def is_weight(path) -> bool:
  """Whether a `jax.tree_util` key path names a kernel or an embedding."""
  return str(getattr(path[-1], 'key', path[-1])) in ('kernel', 'embedding')


def num_kernel_params(params) -> int:
  return sum(x.size for x in _kernels(params))


def layer_betas(params) -> dict[str, float]:
  """β̂ (moment estimate, `initlab.init.gg.fit_tree`) of every kernel / embedding."""
  return {k: float(f.beta) for k, f in ii.gg.fit_tree(weight_layers(params)).items()}


def pooled_fit(params) -> dict[str, float]:
  f = ii.gg.fit_tree(params, pooled=True, include=WEIGHTS)[ii.gg.POOLED]
  return dict(beta=float(f.beta), alpha=float(f.alpha))


def near_zero_fraction(params, threshold: float = NEAR_ZERO) -> float:
  """Fraction of kernel entries with |θ| < threshold."""
  ks = _kernels(params)
  return float(sum(jnp.sum(jnp.abs(x) < threshold) for x in ks) / sum(x.size for x in ks))


def prune(params, threshold: float = NEAR_ZERO):
  """Kernel entries with |θ| < threshold set to 0 (other leaves unchanged)."""
  return jax.tree_util.tree_map_with_path(
    lambda p, x: jnp.where(jnp.abs(x) < threshold, 0, x) if is_weight(p) else x, params
  )


def quantize(params, kind: str):
  """Fake-quantized params: 'rf8' (every float leaf, as the reference), 'fp8' (E4M3 with a
  per-tensor amax scale, every leaf) or 'fp32' (unchanged)."""
  if kind == 'fp32':
    return params
  if kind == 'rf8':
    return ii.gg.rf8_fake_quant_tree(params)
  if kind == 'fp8':
    return jax.tree.map(ii.gg.fp8_e4m3_fake_quant, params)
  raise ValueError(f"quantize: kind={kind!r}; valid choices: 'fp32', 'rf8', 'fp8'")


def deepshape_adj_minnum(params, grid_bits: int = GRID_BITS, at_sigma: float = 3.0) -> int:
  """The count threshold that puts DeepShape's half range T near `at_sigma` pooled std.

  The reference's adj_minnum = 1000 is tied to LLM tensor sizes; here it is the expected
  count of a 2^-b bin at `at_sigma`·σ under a normal of the pooled kernels' std σ.
  """
  ks = _kernels(params)
  n = sum(x.size for x in ks)
  sigma = math.sqrt(float(sum(jnp.sum(jnp.square(x)) for x in ks)) / n)
  step = 2.0**-grid_bits
  count = n * step / (sigma * math.sqrt(2 * math.pi)) * math.exp(-0.5 * at_sigma**2)
  return max(1, int(count))


def deepshape(params, grid_bits: int = GRID_BITS):
  """DeepShape (β' = 0.8β̂, α' = 0.6α̂) on the pooled kernels; returns (params, info dict)."""
  adj = deepshape_adj_minnum(params, grid_bits)
  new, info = ii.gg.deepshape(
    params, adj_minnum=adj, grid_bits=grid_bits, include=WEIGHTS, return_info=True
  )
  return new, dict(info._asdict(), adj_minnum=adj, grid_bits=grid_bits)


def in_range_fit(params, half_range: int, grid_bits: int = GRID_BITS) -> dict[str, float]:
  """(β̂, α̂) of the pooled kernel entries with |θ| ≤ T·2^-b (what DeepShape fits)."""
  x = np.concatenate([np.asarray(k, np.float64).ravel() for k in _kernels(params)])
  x = x[np.abs(x) <= half_range * 2.0**-grid_bits]
  f = ii.gg.fit(x)
  return dict(beta=float(f.beta), alpha=float(f.alpha))


def entropy_bits(params, grid_bits: int = GRID_BITS) -> float:
  """Entropy (bits/param) of the kernels on the 2^-b grid (`grid_entropy`)."""
  return ii.gg.grid_entropy(params, grid_bits, include=WEIGHTS)
