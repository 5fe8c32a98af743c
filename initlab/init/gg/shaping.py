"""DeepShape: rank-preserving histogram specification onto a narrower GG (Wu et al., arXiv
2506.00486 v1–v3, the DeepShape section; the authors' code `deepshape.py::DeepShape.GGD_deepshape`
on their project page huggingface.co/spaces/shifeng3711/gg_prior). Deterministic; followed by a
few fine-tuning epochs.

On the grid of step 2^−b (b = `grid_bits`, 13 in the authors' code), over all selected params
flattened, q = round(θ·2^b):
  T   = smallest positive grid value v with count(q = v) ≤ adj_minnum     (`half_range`)
  fit (β̂, α̂) by moments about 0 (see `estimate`) on the θ with |θ|·2^b ≤ T, and μ̂ = their
      mean; μ_q = trunc(μ̂·2^b)   (β̂ by the exact r⁻¹; the authors' 0.10…2.99 table is
      `method="grid"`)
  β' = shape_scale·β̂,  α' = std_scale·α̂,  p(x) ∝ exp(−(|x − μ_q|/α')^β') on x = μ_q−T…μ_q+T
  the M entries with q in that range, in increasing θ, get the values x upward, ⌊M·p(x)⌋ each;
  entries out of the range keep q;  θ' = q'/2^b (everything lies on the grid).
The in-range values then follow GG(μ, α', β') cut to ±T, which re-fits to (β', α') when
(T/α')^β' ≫ 1 (the cut is negligible).

Where initlab departs from or fills in the authors' code:
  * q = round(θ·2^b) stands in for their quantizer (`LinearQuantizer(params, 13)`, not
    published).
  * Fit set: the unquantized θ with |θ| ≤ T·2^−b, as their code does (it filters the original
    params by that bound), not the grid values q·2^−b with |q| ≤ T. Measured on 2·10⁵ draws of
    GG(β=1.2, α=0.03), b = 13: with adj_minnum = 10 (T = 648) the grid-value fit changes β̂ by
    −0.02 % and moves 1.5 % of the entries, by 0.19 grid steps RMS (α' = 167 steps); with
    adj_minnum = 200 (T = 191) by −0.14 %, 7 % of the entries, 0.28 steps RMS. When T is a few
    steps, both fits are meaningless (the range holds a handful of grid values).
  * T: a positive grid value that no entry holds counts as count 0 (their code looks only at
    values present, and fails when none qualifies); the two differ only when such a gap lies
    below the first sparse value.
  * Ties in q are ordered by θ itself (their sort leaves them open), so the map is monotone in θ.
  * Floor leftovers: the ≤ 2T+1 entries at the top of the range left over by the floors keep q
    in their code; initlab raises them to max(q, last assigned value) so that monotonicity holds
    (`leftover="keep"`), or, with `leftover="spread"`, rounds the counts by largest remainder so
    that every entry in range gets a target value.
Vectorized: one stable sort (a single int64 sort of packed (value, index) keys for float32),
cumsums, a scatter and searchsorted; no loop over bins.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from initlab.init import tree as tree_lib
from initlab.init.gg import estimate as est

LEFTOVERS = ('keep', 'spread')


class DeepShapeInfo(NamedTuple):
  """What `deepshape` did. α values and μ are in param units, `half_range` T in grid steps."""

  beta: float  # β̂ of the in-range params before
  alpha: float  # α̂ before
  mu: float  # μ_q·2^−b
  beta_target: float  # β'
  alpha_target: float  # α'
  half_range: int  # T
  num_in_range: int  # M


@jax.jit
def _packed_argsort(flat):
  """Stable argsort and sorted values of float32 `flat` by ONE int64 sort (needs x64 enabled).

  Key = (order-preserving int32 image of the float bits) << 32 | index; XLA's CPU sort of a
  single integer array is ~7× faster than `jnp.argsort` (a two-operand float sort). −0 sorts
  before +0. The sorted values are decoded from the keys (no gather).
  """
  flip = lambda b: b ^ ((b >> 31) & 0x7FFFFFFF)  # an involution; negatives reverse order
  ordered = flip(jax.lax.bitcast_convert_type(flat, jnp.int32))
  idx = jnp.arange(flat.size, dtype=jnp.int64)
  keys = jnp.sort((ordered.astype(jnp.int64) << 32) | idx)
  s = jax.lax.bitcast_convert_type(flip((keys >> 32).astype(jnp.int32)), jnp.float32)
  return (keys & 0xFFFFFFFF).astype(jnp.int32), s


@jax.jit
def _argsort(flat):
  perm = jnp.argsort(flat, stable=True)
  return perm, flat[perm]


@functools.partial(jax.jit, static_argnums=2)
def _grid(flat, s, grid_bits):
  return jnp.round(s * 2.0**grid_bits).astype(jnp.int32), jnp.sum(~jnp.isfinite(flat))


def _prepare(flat, grid_bits):
  """(stable argsort, sorted values, their grid integers, count of non-finite values)."""
  if flat.dtype == jnp.float32 and flat.size < 2**31:
    with jax.enable_x64(True):
      perm, s = _packed_argsort(flat)
  else:
    perm, s = _argsort(flat)
  return (perm, s, *_grid(flat, s, grid_bits))


@functools.partial(jax.jit, static_argnums=2)
def _first_sparse_bin(q_sorted, adj_minnum, vcap):
  v = jnp.arange(1, vcap + 1, dtype=q_sorted.dtype)
  counts = jnp.searchsorted(q_sorted, v, side='right') - jnp.searchsorted(q_sorted, v, side='left')
  return v[jnp.argmax(counts <= adj_minnum)]


def _pow2(n: int) -> int:
  return 1 << max(int(n) - 1, 0).bit_length()


def grid_half_range(q_sorted, adj_minnum: int) -> int:
  """T = smallest v ≥ 1 with count(q = v) ≤ adj_minnum, for sorted integer grid values q."""
  q_sorted = jnp.asarray(q_sorted)
  vmax = max(abs(int(q_sorted[0])), abs(int(q_sorted[-1])))
  return int(_first_sparse_bin(q_sorted, adj_minnum, _pow2(vmax + 1)))


@jax.jit
def _in_range_moments(s, bound):
  inside = jnp.abs(s) <= bound
  z = jnp.where(inside, s, 0)
  return jnp.sum(inside), jnp.sum(jnp.abs(z)), jnp.sum(z * z), jnp.sum(z)


@functools.partial(jax.jit, static_argnames=('tcap', 'leftover', 'grid_bits', 'sizes', 'dtype'))
def _specify(
  perm, s, q, beta_t, alpha_q, mu_q, half_range, *, tcap, leftover, grid_bits, sizes, dtype
):
  """The DeepShape map on sorted values; returns the unsorted pieces of `sizes` and M.

  Target bins are the offsets x = −tcap…tcap from μ_q; those with |x| > T get count 0.
  """
  x = jnp.arange(-tcap, tcap + 1, dtype=jnp.int32)
  valid = jnp.abs(x) <= half_range
  p = jnp.where(valid, jnp.exp(-((jnp.abs(x).astype(s.dtype) / alpha_q) ** beta_t)), 0)
  lo = jnp.searchsorted(q, mu_q - half_range, side='left').astype(jnp.int32)
  m = jnp.searchsorted(q, mu_q + half_range, side='right').astype(jnp.int32) - lo
  mp = m * (p / jnp.sum(p))
  counts = jnp.floor(mp).astype(jnp.int32)
  if leftover == 'spread':  # largest remainder: every in-range entry gets a target value
    order = jnp.argsort(-(mp - counts), stable=True)
    counts = counts.at[order].add((jnp.arange(x.size) < m - jnp.sum(counts)).astype(jnp.int32))
  cum = jnp.cumsum(counts)
  total = cum[-1]
  j = jnp.arange(s.size, dtype=jnp.int32) - lo
  in_block = (j >= 0) & (j < m)
  # bin of in-block position j = #{k: cum[k] ≤ j}: a cumsum of marks at lo + cum (O(N), no search)
  marks = jnp.zeros(s.size, jnp.int32).at[lo + cum].add(1, mode='drop')
  target = mu_q + x[jnp.minimum(jnp.cumsum(marks), x.size - 1)]
  last = mu_q + x[jnp.minimum(jnp.searchsorted(cum, total - 1, side='right'), x.size - 1)]
  kept = jnp.where(total > 0, jnp.maximum(q, last), q)  # floor leftovers, raised to `last`
  new_q = jnp.where(in_block, jnp.where(j < total, target, kept), q)
  vals = new_q.astype(s.dtype) * 2.0**-grid_bits
  out = jnp.zeros_like(s).at[perm].set(vals).astype(dtype)
  return jnp.split(out, np.cumsum(sizes)[:-1]), m


def _reshape(prepared, sizes, dtype, *, beta_t, alpha_q, mu_q, half_range, grid_bits, leftover):
  perm, s, q, _ = prepared
  return _specify(
    perm,
    s,
    q,
    jnp.asarray(beta_t, s.dtype),
    jnp.asarray(alpha_q, s.dtype),
    jnp.int32(mu_q),
    jnp.int32(half_range),
    tcap=_pow2(half_range),
    leftover=leftover,
    grid_bits=grid_bits,
    sizes=tuple(sizes),
    dtype=dtype,
  )


def _check(leftover, grid_bits, adj_minnum):
  if leftover not in LEFTOVERS:
    raise ValueError(f'deepshape: leftover={leftover!r}; valid choices: {LEFTOVERS}')
  if not (isinstance(grid_bits, int) and 0 <= grid_bits <= 24):
    raise ValueError(f'deepshape: grid_bits={grid_bits!r}; expected an int in [0, 24]')
  if adj_minnum < 0:
    raise ValueError(f'deepshape: adj_minnum={adj_minnum!r}; expected ≥ 0')


def _prepare_checked(flat, grid_bits, what):
  prepared = _prepare(flat, grid_bits)
  bad, n = int(prepared[3]), flat.size
  if bad:
    raise ValueError(f'deepshape: {bad} of {n} values of {what} are NaN or ±inf')
  if n < est.MIN_SIZE or float(prepared[1][0]) == float(prepared[1][-1]):
    raise ValueError(f'deepshape: {what} is constant or has fewer than {est.MIN_SIZE} values')
  return prepared


def deepshape_tensor(
  x,
  beta_target: float,
  alpha_target: float,
  mu_target: float = 0.0,
  *,
  half_range: int | None = None,
  adj_minnum: int = 1000,
  grid_bits: int = 13,
  leftover: str = 'keep',
):
  """Histogram specification of the values of `x` onto GG(μ, α', β') on the 2^−b grid.

  Args:
    x: array of any shape.
    beta_target, alpha_target, mu_target: target GG (α, μ in units of x; μ rounded toward 0
      onto the grid).
    half_range: T in grid steps; default: the adj_minnum rule of the module doc.
    adj_minnum, grid_bits, leftover: see the module doc.

  Returns:
    Array like `x` (same shape and dtype) with every value on the grid.
  """
  _check(leftover, grid_bits, adj_minnum)
  x = jnp.asarray(x)
  flat = jnp.ravel(x).astype(jnp.result_type(x, jnp.float32))
  prepared = _prepare_checked(flat, grid_bits, f'an array of shape {x.shape}')
  if half_range is None:
    half_range = grid_half_range(prepared[2], adj_minnum)
  (out,), _ = _reshape(
    prepared,
    (flat.size,),
    x.dtype,
    beta_t=float(beta_target),
    alpha_q=float(alpha_target) * 2.0**grid_bits,
    mu_q=int(float(mu_target) * 2.0**grid_bits),
    half_range=int(half_range),
    grid_bits=grid_bits,
    leftover=leftover,
  )
  return out.reshape(x.shape)


def deepshape(
  params,
  shape_scale: float = 0.8,
  std_scale: float = 0.6,
  adj_minnum: int = 1000,
  grid_bits: int = 13,
  *,
  include: str | None = '.*',
  method: str = 'exact',
  leftover: str = 'keep',
  return_info: bool = False,
):
  """DeepShape over a param tree (arXiv 2506.00486 v1–v3); see the module doc.

  Args:
    params: NNX state, Linen dict or plain dict.
    shape_scale, std_scale: β' = shape_scale·β̂, α' = std_scale·α̂.
    adj_minnum: count threshold that sets the half range T.
    grid_bits: grid step 2^−grid_bits.
    include: regex of the leaf paths pooled and reshaped (fullmatch); default all float leaves,
      as the authors' code (None: leaves with ndim ≥ 2). Other leaves are unchanged.
    method: "exact" or "grid" (the authors' table) for β̂.
    leftover: "keep" (the authors' code, made monotone) or "spread".
    return_info: also return a `DeepShapeInfo`.

  Returns:
    The new params (same tree type, dtypes and shapes), and the info if `return_info`.
  """
  _check(leftover, grid_bits, adj_minnum)
  if method not in ('exact', 'grid'):
    raise ValueError(f"deepshape: method={method!r}; valid choices: ('exact', 'grid')")
  chosen = est.select_leaves(params, include)
  if not chosen:
    raise ValueError(f'deepshape: no float leaf matches include={include!r}')
  dtype = jnp.result_type(*[l.value for l in chosen], jnp.float32)
  flat = jnp.concatenate([jnp.ravel(l.value).astype(dtype) for l in chosen])
  prepared = _prepare_checked(flat, grid_bits, f'the {len(chosen)} pooled leaves')
  half_range = grid_half_range(prepared[2], adj_minnum)
  n, s1, s2, s0 = (float(v) for v in _in_range_moments(prepared[1], half_range * 2.0**-grid_bits))
  if n < est.MIN_SIZE or s1 == 0:
    raise ValueError(
      f'deepshape: {int(n)} values ({"all zero" if s1 == 0 else "too few"}) lie in the fitted '
      f'range |θ| ≤ T·2^-{grid_bits} with T={half_range} (adj_minnum={adj_minnum}); the grid '
      'is too fine for this many params: lower grid_bits or raise adj_minnum'
    )
  beta = float(est.beta_from_ratio(n * s2 / s1**2, method))
  alpha = float(est.alpha_from_std(beta, math.sqrt(s2 / n)))
  mu_q = int(s0 / n * 2.0**grid_bits)
  beta_t, alpha_t = shape_scale * beta, std_scale * alpha
  sizes = [math.prod(l.shape) for l in chosen]
  pieces, m = _reshape(
    prepared,
    sizes,
    dtype,
    beta_t=beta_t,
    alpha_q=alpha_t * 2.0**grid_bits,
    mu_q=mu_q,
    half_range=half_range,
    grid_bits=grid_bits,
    leftover=leftover,
  )
  new = {l.path: p.reshape(l.shape).astype(l.value.dtype) for l, p in zip(chosen, pieces)}
  out = tree_lib.map_leaves(lambda l: new.get(l.path, l.value), params)
  if not return_info:
    return out
  return out, DeepShapeInfo(
    beta, alpha, mu_q * 2.0**-grid_bits, beta_t, alpha_t, half_range, int(m)
  )


def grid_entropy(params, grid_bits: int = 13, include: str | None = '.*') -> float:
  """Empirical entropy (bits/param) of q = round(θ·2^b) pooled over the selected leaves."""
  chosen = est.select_leaves(params, include)
  flat = jnp.concatenate([jnp.ravel(l.value).astype(jnp.float32) for l in chosen])
  return float(_entropy(flat, grid_bits))


@functools.partial(jax.jit, static_argnums=1)
def _entropy(flat, grid_bits):
  q = jnp.sort(jnp.round(flat * 2.0**grid_bits).astype(jnp.int32))
  counts = jnp.searchsorted(q, q, side='right') - jnp.searchsorted(q, q, side='left')
  return -jnp.mean(jnp.log2(counts / q.size))  # each entry adds log2 p of its own value
