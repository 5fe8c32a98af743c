"""GG shape estimation by moment matching (Sharifi & Leon-Garcia, IEEE Trans. Circuits Syst.
Video Technol. 5(1), 1995; as BackSlash, arXiv 2504.16968, and DeepShape, arXiv 2506.00486 v1–v3,
use it).

The GG density (scipy's `gennorm(β, loc=μ, scale=α)`) and its moments:
    f(x; μ, α, β) = β/(2αΓ(1/β))·exp(−(|x−μ|/α)^β),
    E[(x−μ)²] = α²Γ(3/β)/Γ(1/β),   E|x−μ| = αΓ(2/β)/Γ(1/β);
β = 1 is Laplace, β = 2 is N(μ, α²/2), β → ∞ tends to U(μ ± α).
Moment matching: the ratio of the two moments depends on β alone, ρ̂ = N·Σθ²/(Σ|θ|)² and r(β) = Γ(1/β)Γ(3/β)/Γ(2/β)² (strictly decreasing from
+∞ at β → 0 to 4/3 at β → ∞); β̂ solves r(β̂) = ρ̂, σ̂ = sqrt(Σθ²/N), α̂ = σ̂·sqrt(Γ(1/β̂)/Γ(3/β̂)).

Methods:
  exact  r⁻¹ by bisection in log β on [BETA_MIN, BETA_MAX] (clamped there); jittable, vectorized.
  grid   argmin over the 0.01 grid 0.10…2.99 of the authors' code (its `.pt` tables), for
         parity with it.
  mle    the exact estimate refined by maximizing the GG log-likelihood over β with α profiled
         out: α̂(β) = (β/N·Σ|θ−μ|^β)^{1/β}; golden-section search in log β. Lower variance than
         moments for heavy tails and for β ≳ 3, where r(β) is flat.
Moments are about 0 unless `center=True` (then μ̂ = mean and θ − μ̂ is fitted).
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from initlab.init import tree as tree_lib

METHODS = ('exact', 'grid', 'mle')
BETA_MIN, BETA_MAX = 0.02, 50.0
BETA_GRID = np.round(np.arange(10, 300) / 100.0, 2)  # 0.10, 0.11, …, 2.99 (290 entries)
MIN_SIZE = 8
POOLED = '*'
_BISECT_STEPS = 60
_GOLDEN_STEPS = 32  # bracket width 3 → 3·0.618^32 ≈ 6e-7 in log β


class GGFit(NamedTuple):
  """GG(μ, α, β) fit: 0-d arrays (`float(fit.beta)` for a Python number)."""

  beta: Any
  alpha: Any
  mu: Any


def _log_ratio(beta):
  return gammaln(1.0 / beta) + gammaln(3.0 / beta) - 2.0 * gammaln(2.0 / beta)


def moment_ratio(beta):
  """r(β) = Γ(1/β)Γ(3/β)/Γ(2/β)² = E[θ²]/E[|θ|]² of GG(0, α, β) (module doc)."""
  return jnp.exp(_log_ratio(jnp.asarray(beta, jnp.result_type(beta, float))))


def beta_from_ratio(rho, method: str = 'exact'):
  """β̂ with r(β̂) = ρ (elementwise; jittable). `exact`: bisection in log β clamped to
  [BETA_MIN, BETA_MAX]; `grid`: nearest r on BETA_GRID (clamped to 0.10…2.99)."""
  rho = jnp.asarray(rho, jnp.result_type(rho, float))
  if method == 'grid':
    table = moment_ratio(jnp.asarray(BETA_GRID, rho.dtype))
    idx = jnp.argmin(jnp.abs(rho[..., None] - table), axis=-1)
    return jnp.asarray(BETA_GRID, rho.dtype)[idx]
  if method != 'exact':
    raise ValueError(f"beta_from_ratio: method={method!r}; valid choices: ('exact', 'grid')")
  log_rho = jnp.log(rho)
  lo = jnp.full(rho.shape, math.log(BETA_MIN), rho.dtype)
  hi = jnp.full(rho.shape, math.log(BETA_MAX), rho.dtype)

  def step(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    too_small = _log_ratio(jnp.exp(mid)) > log_rho  # r(β) too big ⇒ β too small
    return jnp.where(too_small, mid, lo), jnp.where(too_small, hi, mid)

  lo, hi = jax.lax.fori_loop(0, _BISECT_STEPS, step, (lo, hi))
  return jnp.exp(0.5 * (lo + hi))


def alpha_from_std(beta, sigma):
  """α = σ·sqrt(Γ(1/β)/Γ(3/β)): the scale of a GG with std σ (the variance in the module doc)."""
  return sigma * jnp.exp(0.5 * (gammaln(1.0 / beta) - gammaln(3.0 / beta)))


def _profile_loglik(log_abs, n, log_beta):
  """Mean GG log-likelihood at β = e^{log_beta} with α profiled out, in data units of 1.

  `log_abs` are the arrays log|θ − μ| (scaled); returns (log-likelihood, log α̂).
  """
  beta = jnp.exp(log_beta)
  s = sum(jnp.sum(jnp.exp(beta * la)) for la in log_abs) / n  # Σ|y|^β / N (|0|^β = 0)
  log_alpha = (jnp.log(beta) + jnp.log(s)) / beta
  return jnp.log(beta) - math.log(2.0) - log_alpha - gammaln(1.0 / beta) - 1.0 / beta, log_alpha


def _mle_refine(arrays, mu, scale, n, beta0):
  """Golden-section search (one likelihood pass per step) in log β on log β0 ± 1.5."""
  invphi = (math.sqrt(5.0) - 1.0) / 2.0
  log_abs = [jnp.log(jnp.abs((x - mu) / scale)) for x in arrays]
  f = lambda t: _profile_loglik(log_abs, n, t)[0]
  a = jnp.maximum(jnp.log(beta0) - 1.5, math.log(BETA_MIN))
  b = jnp.minimum(jnp.log(beta0) + 1.5, math.log(BETA_MAX))
  c, d = b - invphi * (b - a), a + invphi * (b - a)

  def step(_, state):
    a, b, c, d, fc, fd = state
    left = fc > fd  # the maximum is in [a, d]
    a, b = jnp.where(left, a, c), jnp.where(left, d, b)
    new = jnp.where(left, b - invphi * (b - a), a + invphi * (b - a))
    f_new = f(new)
    return (
      a,
      b,
      jnp.where(left, new, d),
      jnp.where(left, c, new),
      jnp.where(left, f_new, fd),
      jnp.where(left, fc, f_new),
    )

  a, b, *_ = jax.lax.fori_loop(0, _GOLDEN_STEPS, step, (a, b, c, d, f(c), f(d)))
  t = 0.5 * (a + b)
  return jnp.exp(t), scale * jnp.exp(_profile_loglik(log_abs, n, t)[1])


def _fit_arrays(arrays: Sequence[jax.Array], method: str, center: bool) -> GGFit:
  """Jittable pooled fit over `arrays` (no input checks)."""
  return _fit_and_summary(arrays, method, center)[0]


def _fit_and_summary(arrays, method, center):
  """(GGFit, all values finite, Σ|θ − θ₀|) in one pass; the last two drive `_checked_fit`."""
  dtype = jnp.result_type(*arrays, jnp.float32)
  arrays = [jnp.ravel(x).astype(dtype) for x in arrays if x.size]
  n = sum(x.size for x in arrays)
  mu = sum(jnp.sum(x) for x in arrays) / n if center else jnp.zeros((), dtype)
  s1 = sum(jnp.sum(jnp.abs(x - mu)) for x in arrays)
  s2 = sum(jnp.sum(jnp.square(x - mu)) for x in arrays)
  spread = sum(jnp.sum(jnp.abs(x - arrays[0][0])) for x in arrays)
  beta = beta_from_ratio(n * s2 / s1**2, 'grid' if method == 'grid' else 'exact')
  sigma = jnp.sqrt(s2 / n)
  if method == 'mle':
    beta, alpha = _mle_refine(arrays, mu, sigma, n, beta)
  else:
    alpha = alpha_from_std(beta, sigma)
  return GGFit(beta, alpha, mu), jnp.isfinite(s1 + s2), spread


_fit_jit = jax.jit(_fit_and_summary, static_argnames=('method', 'center'))


def _checked_fit(arrays, what: str, min_size: int, method: str = 'exact', center: bool = False):
  """`_fit_jit` with ValueErrors for too few, non-finite or constant values."""
  n = sum(int(np.size(x)) for x in arrays)
  if n < min_size:
    raise ValueError(f'cannot fit a GG to {what}: {n} values, need at least min_size={min_size}')
  result, finite, spread = _fit_jit(list(arrays), method=method, center=center)
  if not bool(finite):
    bad = sum(int(jnp.sum(~jnp.isfinite(x))) for x in arrays)
    raise ValueError(f'cannot fit a GG to {what}: {bad} of {n} values are NaN or ±inf')
  if float(spread) == 0:
    first = next(x for x in arrays if np.size(x)).ravel()[0]
    raise ValueError(
      f'cannot fit a GG to {what}: all {n} values equal {float(first)} (constant input)'
    )
  return result


def fit(x, method: str = 'exact', *, center: bool = False, min_size: int = MIN_SIZE) -> GGFit:
  """Fits GG(μ, α, β) to the values of `x` (any shape), see the module doc.

  Args:
    x: array of any shape; integer arrays are converted to float.
    method: "exact", "grid" or "mle".
    center: fit θ − mean(θ) and report μ̂ = mean; else μ̂ = 0 (the BackSlash/DeepShape estimator).
    min_size: fewer values raise ValueError.

  Returns:
    GGFit of 0-d arrays. Raises ValueError on NaN/inf, constant (e.g. all-zero) or too-small
    input (checked when `x` is concrete; under jit there is no check).
  """
  if method not in METHODS:
    raise ValueError(f'fit: method={method!r}; valid choices: {METHODS}')
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  if isinstance(x, jax.core.Tracer):
    return _fit_arrays([x], method, center)
  return _checked_fit([x], f'an array of shape {x.shape}', min_size, method, center)


def select_leaves(params, include: str | None = None) -> list[tree_lib.Leaf]:
  """Float leaves whose path fullmatches `include`; by default every float leaf with ndim ≥ 2
  (kernels and embeddings; biases and norm scales are skipped)."""
  pattern = re.compile(include) if include is not None else None
  out = []
  for leaf in tree_lib.leaves(params):
    if not jnp.issubdtype(jnp.result_type(leaf.value), jnp.floating):
      continue
    if pattern.fullmatch(leaf.path) if pattern else len(leaf.shape) >= 2:
      out.append(leaf)
  return out


def fit_tree(
  params,
  pooled: bool = False,
  method: str = 'exact',
  *,
  include: str | None = None,
  center: bool = False,
  min_size: int = MIN_SIZE,
) -> dict[str, GGFit]:
  """GG fits of the leaves of a param tree (NNX state, Linen dict or plain dict).

  Args:
    params: the tree.
    pooled: one fit over all selected leaves jointly, under the key `POOLED` ("*").
    method, center, min_size: as in `fit`.
    include: regex the leaf path must fullmatch; default: float leaves with ndim ≥ 2.

  Returns:
    {path: GGFit} (or {"*": GGFit} when pooled).
  """
  if method not in METHODS:
    raise ValueError(f'fit_tree: method={method!r}; valid choices: {METHODS}')
  chosen = select_leaves(params, include)
  if not chosen:
    raise ValueError(
      f'fit_tree: no float leaf selected (include={include!r}); paths: '
      f'{[l.path for l in tree_lib.leaves(params)][:8]}'
    )
  if pooled:
    values = [l.value for l in chosen]
    return {
      POOLED: _checked_fit(values, f'the {len(values)} pooled leaves', min_size, method, center)
    }
  return {
    l.path: _checked_fit(
      [l.value], f'param {l.path!r} of shape {l.shape}', min_size, method, center
    )
    for l in chosen
  }


def gg_logpdf(x, fit_: GGFit):
  """log f(x; μ, α, β) = log β − log 2α − lnΓ(1/β) − (|x−μ|/α)^β (the density of the module doc)."""
  beta, alpha, mu = fit_
  return (
    jnp.log(beta) - jnp.log(2.0 * alpha) - gammaln(1.0 / beta) - (jnp.abs(x - mu) / alpha) ** beta
  )
