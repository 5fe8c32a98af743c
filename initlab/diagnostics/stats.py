"""Per-layer signal statistics: q-values, c-values and their mean-field maps.

Every function takes an activation (or gradient) `h` of shape (B, ...), batch first, and
views it as a (B, N) matrix of N units per example.

Definitions (Poole et al. 2016, "Exponential expressivity in deep neural networks through
transient chaos"; Schoenholz et al. 2017, "Deep information propagation"):
  q   = (1/(B·N)) Σ_b Σ_i h_bi²              the length (second moment) of the signal,
  var = (1/N) Σ_i Var_b(h_bi)                the per-unit variance over the batch, averaged,
  c   = mean_{a≠b} q_ab / sqrt(q_aa q_bb),   q_ab = (1/N) Σ_i h_ai h_bi,
i.e. c is the mean (uncentred) cosine similarity between the representations of two
different inputs. The papers define q and c on pre-activations; here they are measured on
whatever each stage outputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def as_matrix(h) -> jax.Array | None:
  """The float leaves of `h` (any pytree of (B, ...) arrays) as one (B, N) float32 matrix.

  Returns None when `h` has no floating-point leaf (e.g. integer tokens).
  """
  parts = [x for x in jax.tree.leaves(h) if jnp.issubdtype(x.dtype, jnp.inexact)]
  if not parts:
    return None
  batch = parts[0].shape[0]
  return jnp.concatenate([x.reshape(batch, -1).astype(jnp.float32) for x in parts], axis=1)


def second_moment(h: jax.Array) -> jax.Array:
  """q: mean of h² over batch and units. `h`: (B, N). Returns a scalar."""
  return jnp.mean(jnp.square(h))


def unit_variance(h: jax.Array) -> jax.Array:
  """Variance over the batch of each unit, averaged over units. `h`: (B, N). Returns a scalar."""
  return jnp.mean(jnp.var(h, axis=0))


def correlation(h: jax.Array) -> jax.Array:
  """c: mean over pairs a ≠ b of q_ab / sqrt(q_aa q_bb) (Poole et al. 2016, eq. 4).

  `h`: (B, N). Returns a scalar. Pairs with a zero example (q_aa = 0, e.g. a dead ReLU
  layer for that input) are left out, as their correlation is undefined; NaN if no pair is left.
  """
  batch = h.shape[0]
  gram = h @ h.T / h.shape[1]  # (B, B): q_ab
  diag = jnp.diag(gram)
  alive = diag > 0
  pair = alive[:, None] & alive[None, :] & ~jnp.eye(batch, dtype=bool)
  cos = gram / jnp.sqrt(jnp.where(pair, jnp.outer(diag, diag), 1.0))
  count = jnp.sum(pair)
  return jnp.where(count > 0, jnp.sum(jnp.where(pair, cos, 0.0)) / jnp.maximum(count, 1), jnp.nan)


def layer_stats(h) -> dict[str, jax.Array]:
  """{'q', 'var', 'c'} of one activation pytree `h` of (B, ...) arrays; NaN if not float."""
  m = as_matrix(h)
  if m is None:
    return dict(q=jnp.nan, var=jnp.nan, c=jnp.nan)
  return dict(q=second_moment(m), var=unit_variance(m), c=correlation(m))


def relu_c_map(c):
  """Closed-form c-map of a ReLU layer with Gaussian weights (any scale, no bias).

  If z = W x with W_ij ~ N(0, σ²/N) and h = relu(z), the cosine of h_a and h_b in the
  wide limit is (sqrt(1 − c²) + (π − arccos c)·c)/π, where c is the cosine of x_a and x_b
  (arc-cosine kernel of degree 1, Cho & Saul 2009; the ReLU case of the c-map of Poole et
  al. 2016, eq. 5). It depends only on the angle, and its only stable fixed point is c = 1.
  """
  c = np.clip(np.asarray(c, np.float64), -1.0, 1.0)
  return (np.sqrt(1.0 - c**2) + (np.pi - np.arccos(c)) * c) / np.pi


def log2_slope(values) -> float:
  """Least-squares slope of log2(values) against the index (doubling per step = +1).

  NaN if fewer than two values are positive and finite.
  """
  v = np.asarray(values, np.float64)
  idx = np.arange(v.size)
  ok = np.isfinite(v) & (v > 0)
  if ok.sum() < 2:
    return float('nan')
  return float(np.polyfit(idx[ok], np.log2(v[ok]), 1)[0])
