"""Samplers for the standard generalized Gaussian, density ∝ exp(−|x|^β).

If G ~ Gamma(1/β, 1) then |X| = G^{1/β} (with a random sign) has density
β/(2Γ(1/β))·exp(−|x|^β) (change of variables g = |x|^β; e.g. Nardon & Pianca, J. Stat. Comput.
Simul. 79(11), 2009). Three samplers of that one distribution:

"icdf" (the default for float32 and β ∈ [0.3, 8]): inversion, one 32-bit word per draw, as cheap
as `jax.random.normal` (benchmarks/gg.py). Bit 31 is the sign; bit 30 picks the half of the
|X|-distribution; bits 0–29 give v = (m + ½)·2⁻³¹ ∈ (0, ½). In the upper half v is the
survival S = P(|X| > x), in the lower half the CDF F = P(|X| ≤ x); then
  x = Q⁺(v) = (Γ⁻¹_upper(1/β, v))^{1/β}   or   x = Q⁻(v) = (Γ⁻¹_lower(1/β, v))^{1/β},
both read from a float64-built table of cubic Hermite pieces (end values by scipy's
gammainccinv / gammaincinv, end slopes dx/dv = ∓1/p(x), p the density of |X|) over 32 octaves
of v × 64 cells each, indexed by v's float32 exponent and top mantissa bits, so the relative
resolution is the same near x = 0 and deep in the tail: the table's quantile error is ~1e-7
relative (float32 rounding; tests/init/test_gg_init.py), and the tails reach S = 2⁻³², further
than `jax.random.normal`'s 2⁻²⁴. Truncation |X| ≤ b is inversion too: F = F(b)·u, no rejection.
Everything is elementwise on the output's shape, so under `jit` with sharded outputs every
device computes only its shards (same bits on any mesh: partitionable threefry).

"marsaglia_tsang": Gamma(a) by Marsaglia & Tsang (2000, ACM TOMS 26(3)), fully vectorized:
  d = a − 1/3,  c = 1/√(9d),  z ~ N(0,1),  u ~ U(0,1),  v = (1 + cz)³,
  accept iff 1 + cz > 0 and log u < z²/2 + d − dv + d·log v;  then G = d·v.
It needs a ≥ 1, so for β > 1 (a = 1/β < 1) it uses the boost G_a = G_{a+1}·U^{1/a}, which for
|X| = G_a^{1/β} simplifies to |X| = G_{1+1/β}^{1/β}·U (no underflow). Rejected entries (≤ ~8%,
plus those beyond an optional truncation bound) are refilled from a pool of fresh proposals
of size ⌈n/8⌉ + 64 (the r-th rejected slot takes the r-th accepted proposal) until none is
left: usually one refill round. Exact in float64 too; ~3–5× `jax.random.normal` on CPU, and
its flat refill pool is not sharded (whole-tensor temporaries on every device).

"jax": `jax.random.generalized_normal` (through `jax.random.gamma`, 60–100× slower than
`normal` on CPU): the reference.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

SAMPLERS = ('auto', 'icdf', 'marsaglia_tsang', 'jax')
ICDF_BETAS = (0.3, 8.0)  # where "auto" picks "icdf" (tested there); else "marsaglia_tsang"
_OCTAVES, _CELL_BITS = 32, 6  # table: v ∈ [2⁻³², 1) by octave, 2⁶ cells per octave


@functools.lru_cache(maxsize=64)
def icdf_table(beta: float) -> np.ndarray:
  """(2·32·64, 4) float32 cubic coefficients c of x(t) = c0 + t(c1 + t(c2 + t·c3)), t ∈ [0, 1)
  across a cell. Rows [0, 2048): Q⁺ (v = survival of |X|), then Q⁻ (v = CDF); row
  (half·32 + e + 32)·64 + j covers v ∈ 2^e·[1 + j/64, 1 + (j+1)/64] (module doc). Hermite
  pieces through the float64 quantiles and slopes at the cell ends. Of the octave [½, 1) only
  v = ½ is read; its cells reaching v = 1 (Q⁻(1) = ∞) are set to 0.
  """
  a = 1.0 / beta
  octave = 2.0 ** np.arange(-_OCTAVES, 0, dtype=np.float64)[:, None]
  cells = np.arange(2**_CELL_BITS)[None, :] / 2**_CELL_BITS
  lo, hi = octave * (1 + cells), octave * (1 + cells + 2.0**-_CELL_BITS)
  rows = []
  for inverse, sign in ((special.gammainccinv, -1.0), (special.gammaincinv, 1.0)):
    ends = []
    for v in (lo, hi):
      g = inverse(a, v)  # float64
      slope = sign * math.exp(math.lgamma(a)) / beta * np.exp(g)  # dx/dv = ±1/p(x)
      ends.append((g**a, slope * (hi - lo)))
    (x0, m0), (x1, m1) = ends
    with np.errstate(invalid='ignore'):
      coef = (x0, m0, 3 * (x1 - x0) - 2 * m0 - m1, 2 * (x0 - x1) + m0 + m1)
    rows.append(np.stack(coef, -1).reshape(-1, 4))
  table = np.concatenate(rows)
  return np.where(np.isfinite(table), table, 0.0).astype(np.float32)


def icdf_lookup(table, v, lower):
  """x = Q⁻(v) where `lower` else Q⁺(v), for float32 v ∈ [2⁻³², ½] (module doc)."""
  vb = jax.lax.bitcast_convert_type(v, jnp.int32)
  frac = 23 - _CELL_BITS
  octave = (vb >> 23) - 127 + _OCTAVES
  cell = (lower.astype(jnp.int32) * _OCTAVES + octave) * 2**_CELL_BITS
  cell += (vb >> frac) & (2**_CELL_BITS - 1)
  t = (vb & (2**frac - 1)).astype(jnp.float32) * 2.0**-frac
  c = jnp.asarray(table)[cell]
  return c[..., 0] + t * (c[..., 1] + t * (c[..., 2] + t * c[..., 3]))


@functools.partial(jax.jit, static_argnames=('shape',))
def _icdf(key, table, mass, bound, *, shape):
  """float32 draws of `shape`; with mass = F(bound) < 1 conditioned on |X| ≤ bound."""
  bits = jax.random.bits(key, shape, jnp.uint32)
  sign = jnp.where(bits >> 31 == 1, -1.0, 1.0).astype(jnp.float32)
  if bound is None:
    lower = (bits >> 30) & 1 == 1
    v = ((bits & (2**30 - 1)).astype(jnp.float32) + 0.5) * 2.0**-31
  else:  # CDF y = F(b)·u; the half with y > ½ reads Q⁺ at S = 1 − y (exact in float32)
    y = mass * (((bits & (2**31 - 1)).astype(jnp.float32) + 0.5) * 2.0**-31)
    lower = y <= 0.5
    v = jnp.maximum(jnp.where(lower, y, 1.0 - y), 2.0**-32)
  x = icdf_lookup(table, v, lower)
  if bound is not None:
    x = jnp.minimum(x, bound)  # the last cell's rounding
  return sign * x


def _uniform_bits(bits, dtype):
  """Uniforms in the open interval (0, 1) from the top mantissa bits of random words."""
  nmant = jnp.finfo(dtype).nmant
  top = (bits >> (8 * bits.dtype.itemsize - nmant)).astype(dtype)
  return (top + 0.5) * (2.0**-nmant)


def _fast_proposal(beta, boost: bool) -> Callable:
  """`propose(key, n, dtype) -> (|x|, ok, sign)` for X ∝ exp(−|x|^β), by Marsaglia–Tsang.

  One `jax.random.bits` call per proposal (rows: normal, test uniform, boost uniform); the
  sign is the low bit of the test uniform's word, independent of its top bits. `beta` may be
  traced; `boost` (β > 1) is static.
  """
  a = 1.0 / beta + (1.0 if boost else 0.0)
  d = a - 1.0 / 3.0
  c = 1.0 / jnp.sqrt(9.0 * d)

  def propose(key, n, dtype):
    word = jnp.uint64 if jnp.dtype(dtype).itemsize == 8 else jnp.uint32
    bits = jax.random.bits(key, (3 if boost else 2, n), word)
    z = math.sqrt(2.0) * jax.lax.erf_inv(2.0 * _uniform_bits(bits[0], dtype) - 1.0)
    u = _uniform_bits(bits[1], dtype)
    sign = 1.0 - 2.0 * (bits[1] & 1).astype(dtype)
    dd, cc = d.astype(dtype), c.astype(dtype)
    t = 1.0 + cc * z
    ok = t > 0
    log_v = 3.0 * jnp.log(jnp.where(ok, t, 1.0))
    v = jnp.exp(log_v)
    ok &= jnp.log(u) < 0.5 * z * z + dd - dd * v + dd * log_v
    mag = jnp.exp((jnp.log(dd) + log_v) / beta.astype(dtype))  # G^{1/β}, G = d·v
    if boost:
      mag = mag * _uniform_bits(bits[2], dtype)  # · U  (boost, see module doc)
    return mag, ok, sign

  return propose


def _jax_proposal(beta: float) -> Callable:
  def propose(key, n, dtype):
    x = jax.random.generalized_normal(key, beta, (n,), dtype)
    return jnp.abs(x), jnp.ones((n,), bool), jnp.where(x < 0, -1.0, 1.0).astype(dtype)

  return propose


def _fill(key, propose, n, dtype, bound):
  """n accepted draws of X: proposals with `ok` and |X| ≤ bound; rejected slots refilled."""
  k0, kloop = jax.random.split(key)
  mag, ok, sign = propose(k0, n, dtype)
  ok &= mag <= bound
  pool = -(-n // 8) + 64

  def cond(state):
    return ~jnp.all(state[2])

  def compact(keep, values, size, fill):
    """values[keep] moved to the front of a length-`size` array (the rest `fill`)."""
    rank = jnp.cumsum(keep, dtype=jnp.int32) - 1
    return (
      jnp.full((size,), fill, values.dtype).at[jnp.where(keep, rank, size)].set(values, mode='drop')
    )

  def body(state):
    i, mag, ok = state
    cand, cand_ok, _ = propose(jax.random.fold_in(kloop, i), pool, dtype)
    cand_ok &= cand <= bound
    good = compact(cand_ok, cand, pool, 0)
    slots = compact(~ok, jnp.arange(n, dtype=jnp.int32), pool, n)  # n: dropped by scatters
    slots = jnp.where(jnp.arange(pool) < jnp.sum(cand_ok), slots, n)
    mag = mag.at[slots].set(good, mode='drop')
    ok = ok.at[slots].set(True, mode='drop')
    return i + 1, mag, ok

  _, mag, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), mag, ok))
  return sign * mag  # the sign of a slot is independent of the magnitude that fills it


@functools.partial(jax.jit, static_argnames=('n', 'dtype', 'boost'))
def _fast_flat(key, beta, bound, *, n, dtype, boost):
  # β and the bound are traced: one compilation serves every β on the same side of 1.
  return _fill(key, _fast_proposal(beta, boost), n, dtype, bound.astype(dtype))


@functools.partial(jax.jit, static_argnames=('beta', 'n', 'dtype'))
def _jax_flat(key, bound, *, beta, n, dtype):
  return _fill(key, _jax_proposal(beta), n, dtype, bound.astype(dtype))


def standard_gg(
  key: jax.Array,
  beta: float,
  shape,
  dtype=jnp.float32,
  *,
  bound: float | None = None,
  sampler: str = 'auto',
) -> jax.Array:
  """Draws of X with density β/(2Γ(1/β))·exp(−|x|^β), optionally truncated to |X| ≤ bound.

  Args:
    key: PRNG key.
    beta: shape β > 0 (python float).
    shape: output shape.
    dtype: float dtype of the result; computed in float64 if it is float64 (with x64 enabled),
      else in float32.
    bound: if given, the draws are conditioned on |X| ≤ bound.
    sampler: "icdf", "marsaglia_tsang" or "jax" (module doc): the same distribution, different
      random streams. "auto" is "icdf" for float32 and β ∈ `ICDF_BETAS`, else "marsaglia_tsang".

  Returns:
    Array of `shape` and `dtype`. "icdf" draws `shape` elementwise (shardable); the others draw
    the first n = prod(shape) of `_bucket(n)` flat draws, compiled once per (bucket, dtype,
    β > 1) and reused for every β.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f'sampler={sampler!r}; valid choices: {SAMPLERS}')
  shape = tuple(int(s) for s in shape)
  n = math.prod(shape)
  out_dtype = jax.dtypes.canonicalize_dtype(dtype)
  dtype = out_dtype if out_dtype == jnp.float64 else jnp.dtype(jnp.float32)
  if sampler == 'auto':
    icdf = dtype == jnp.float32 and ICDF_BETAS[0] <= beta <= ICDF_BETAS[1]
    sampler = 'icdf' if icdf else 'marsaglia_tsang'
  if n == 0:
    return jnp.zeros(shape, out_dtype)
  if sampler == 'icdf':
    mass = None if bound is None else float(special.gammainc(1.0 / beta, bound**beta))
    x = _icdf(key, icdf_table(float(beta)), mass, bound, shape=shape)
    return x.astype(out_dtype)
  bound = jnp.asarray(math.inf if bound is None else bound, jnp.float32)
  m = _bucket(n)
  if sampler == 'marsaglia_tsang':
    beta_arr = jnp.asarray(beta, jnp.float64 if dtype == jnp.float64 else jnp.float32)
    flat = _fast_flat(key, beta_arr, bound, n=m, dtype=dtype, boost=bool(beta > 1.0))
  else:
    flat = _jax_flat(key, bound, beta=float(beta), n=m, dtype=dtype)
  return flat[:n].reshape(shape).astype(out_dtype)


def _bucket(n: int) -> int:
  """Draw size for n values: ≥ 4096 and 4 sizes per octave (≤ 25% extra), so that tensors of
  different shapes share compilations; the first n draws are used."""
  if n <= 4096:
    return 4096
  step = 2 ** (n.bit_length() - 3)
  return -(-n // step) * step
