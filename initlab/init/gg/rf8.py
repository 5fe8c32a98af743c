"""RF8: a residual 8-bit float for GG-shaped weights (Wu et al., "It Takes a Good Model to Train a
Good Model: Generalized Gaussian Priors for Optimized LLMs", arXiv 2506.00486 v1–v3, the RF8
section; the authors' code `rf8.py::rf8(model, n=4)` on their project page,
huggingface.co/spaces/shifeng3711/gg_prior).

Value rule (the authors' code, n = 4): e₁ = round(log₂|w|), d₁ = sign(w)·2^e₁;
e₂ = round(log₂|w − d₁|), d₂ = sign(w − d₁)·2^e₂; ŵ = d₁ + [e₁ − e₂ ≤ 4]·d₂: a leading power of
two plus, when it is at most 2⁴ smaller, a second one. Rounding in the log domain is done exactly:
round(log₂ a) for a = f·2^k, f ∈ [1, 2), is k + [f ≥ √2]; w − d₁ is exact (Sterbenz). Since
|w|/2^e₁ ∈ [1/√2, √2), the gap e₁ − e₂ is ≥ 1 (= 1 only with a positive residual), so
|ŵ|/2^e₁ ∈ {0.75, 0.875, 0.9375, 1, 1.0625, 1.125, 1.25, 1.5}.

Byte (initlab's layout; the paper's bit layout was not checked): bit 7 sign, bits 6–3 the
exponent field f = E − bias, bits 2–0 a residual code c, |ŵ| = m[c]·2^E with
    c:    0        1     2     3      4      5       6       7
    m: special    1   0.75  1.25   0.875  1.125  0.9375  1.0625
E is the *canonical* exponent round(log₂|ŵ|): a value 1.5·2^e₁ is stored as 0.75·2^(e₁+1), so
7 codes hold the 8 mantissas and code 0 is free for specials.

Exponent window: 16 levels per tensor, bias = e_max − 15 (int32 scalar), where e_max is the
largest exponent of the RF8 values written with their mantissa in (3/4, 3/2]: that is max e₁
over finite nonzero w, except when every entry at the top e₁ rounds down to 0.75·2^e₁, then
e_max = max e₁ − 1. Every entry whose RF8 value fits the window (E ≥ bias) is kept, so every
entry with e₁ ≥ max e₁ − 15 is, and the top value 1.5·2^e_max (canonically 0.75·2^(bias+16),
one field above 15) gets the special code c = 0, f = 15. Entries below the window flush to ±0.
Why not plain max e₁: RF8 values are not all fixed points of it (1.4 ↦ 1.5, whose own e₁ is one
higher), so re-encoding could shift the window and drop its bottom level; with e_max taken over
the RF8 values rf8∘rf8 = rf8 holds, and the window never starts above max e₁ − 15. Measured on
10⁶ draws of N(0, 0.02²) (max ≈ 4.9σ rounds to 0.75·2^−3): bias −19, 64 entries flushed (plain
max e₁: 125); scaled so that the max rounds to 1.5·2^−3: 68 flushed (plain max e₁: 72; e_max
taken over the canonical E, as before this rule: 127). The RMS error is unchanged (3.99 %).
Example: rf8([1.4, 2⁻¹⁵]) = [1.5, 2⁻¹⁵] (bias −15).
Specials: c = 0 is ±0 with f = 0 (0x00 / 0x80), ±1.5·2^e_max with f = 15, NaN otherwise (NaN
encodes to 0x08); ±inf saturates to ±1.5·2^e_max; subnormal and tiny values flush like any value
below the window. A tensor with no finite nonzero value gets bias 0.

`fp8_e4m3_fake_quant` is the baseline at 8 bits: `ml_dtypes.float8_e4m3fn` round-to-nearest-even
after a per-tensor scale s = amax/448 (amax over finite |w|; the usual FP8 "per-tensor scaling"),
so the largest |w| maps to E4M3's largest finite value; inf saturates, NaN stays NaN.
"""

from __future__ import annotations

import fractions
import functools
import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from initlab.init import tree as tree_lib
from initlab.init.gg import estimate as est

EXP_LEVELS = 16
NAN_CODE = 0x08  # field 1, code 0
TOP_MANTISSA = 1.5  # code 0 in the top field
MANTISSAS = (0.0, 1.0, 0.75, 1.25, 0.875, 1.125, 0.9375, 1.0625)  # by residual code c
E4M3_MAX = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)  # 448


def _sqrt2_floor(dtype) -> float:
  """Largest value of `dtype` below √2: for f in [1, 2), f ≥ √2 ⇔ f > this."""
  s = np.sqrt(np.asarray(2.0, dtype))
  if fractions.Fraction(float(s)) ** 2 >= 2:
    s = np.nextafter(s, np.asarray(0.0, dtype))
  return float(s)


def _round_log2(a):
  """round(log₂ a) for finite a > 0, exactly (ties cannot occur: √2 is irrational)."""
  f, k = jnp.frexp(a)  # a = f·2^k, f ∈ [0.5, 1)
  return (k - 1 + (2 * f > _sqrt2_floor(a.dtype))).astype(jnp.int32)


def _float(w):
  w = jnp.asarray(w)
  return w.astype(jnp.result_type(w, jnp.float32))


@jax.jit
def _encode(w):
  w = _float(w)
  a = jnp.abs(w)
  finite_nz = jnp.isfinite(w) & (a > 0)
  safe = jnp.where(finite_nz, a, 1.0)
  e1 = _round_log2(safe)
  r = safe - jnp.ldexp(jnp.ones_like(safe), e1)  # exact residual of |w| (Sterbenz)
  e2 = _round_log2(jnp.where(r != 0, jnp.abs(r), 1.0))
  k = e1 - e2
  keep = (r != 0) & (k <= 4)
  up = r > 0
  # canonical (exponent shift, code): k=1 only happens with r > 0, i.e. 1.5·2^e1 = 0.75·2^(e1+1)
  code = jnp.where(~keep, 1, jnp.where(k == 1, 2, 2 * k - 2 + up.astype(jnp.int32)))
  e = e1 + (keep & (k == 1)).astype(jnp.int32)
  e_low = e - (code == 2).astype(jnp.int32)  # exponent with the mantissa in (3/4, 3/2]
  e_max = jnp.max(jnp.where(finite_nz, e_low, jnp.iinfo(jnp.int32).min))
  bias = jnp.where(jnp.any(finite_nz), e_max - (EXP_LEVELS - 1), 0).astype(jnp.int32)
  field = e - bias
  top = field == EXP_LEVELS  # 0.75·2^(e_max+1) = 1.5·2^e_max
  sat = jnp.isinf(w)  # ±inf → the largest value, 1.5·2^e_max
  field = jnp.where(top | sat, EXP_LEVELS - 1, field)
  code = jnp.where(top | sat, 0, code)
  live = (finite_nz & (field >= 0)) | sat
  sign = (jnp.signbit(w) & ~jnp.isnan(w)).astype(jnp.int32)
  byte = jnp.where(live, (sign << 7) | (field << 3) | code, sign << 7)
  byte = jnp.where(jnp.isnan(w), NAN_CODE, byte)
  return byte.astype(jnp.uint8), bias


def rf8_encode(w):
  """Encodes `w` (any shape, float) to RF8: (codes uint8 of w's shape, bias int32 scalar)."""
  return _encode(w)


def rf8_decode(codes, bias, dtype=jnp.float32):
  """Decodes RF8 `codes` with per-tensor `bias` to `dtype` (computed exactly in ≥ float32)."""
  return _decode(codes, bias, dtype=jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnames='dtype')
def _decode(codes, bias, *, dtype):
  c = jnp.asarray(codes).astype(jnp.int32)
  compute = jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32
  sign, field, code = c >> 7, (c >> 3) & 0xF, c & 0x7
  top = (code == 0) & (field == EXP_LEVELS - 1)
  mant = jnp.where(top, TOP_MANTISSA, jnp.asarray(MANTISSAS, compute)[code])
  mag = jnp.ldexp(mant, field + jnp.asarray(bias, jnp.int32))
  val = jnp.where(sign == 1, -mag, mag)
  val = jnp.where((code == 0) & (field != 0) & ~top, jnp.nan, val)
  return val.astype(dtype)


def rf8_fake_quant(w):
  """decode(encode(w)) in w's dtype: the RF8 value of every entry."""
  w = jnp.asarray(w)
  return rf8_decode(*rf8_encode(w), dtype=w.dtype)


def rf8_fake_quant_tree(params, include: str | None = '.*'):
  """`rf8_fake_quant` on every float leaf whose path fullmatches `include` (default all, as the
  reference applies RF8 to every parameter; None: leaves with ndim ≥ 2)."""
  chosen = {l.path for l in est.select_leaves(params, include)}
  return tree_lib.map_leaves(
    lambda l: rf8_fake_quant(l.value) if l.path in chosen else l.value, params
  )


def rf8_nbytes(params, include: str | None = '.*') -> int:
  """Bytes of the RF8 form of the selected float leaves: 1 per value + 4 (int32 bias) per tensor."""
  chosen = est.select_leaves(params, include)
  return sum(math.prod(l.shape) + 4 for l in chosen)


def size_table(params, include: str | None = '.*') -> dict:
  """Sizes in bytes of the selected leaves as float32, bfloat16 and RF8, with ratios."""
  chosen = est.select_leaves(params, include)
  n = sum(math.prod(l.shape) for l in chosen)
  rf8 = rf8_nbytes(params, include)
  return dict(
    num_params=n,
    num_tensors=len(chosen),
    float32=4 * n,
    bfloat16=2 * n,
    rf8=rf8,
    ratio_vs_float32=rf8 / max(4 * n, 1),
    ratio_vs_bfloat16=rf8 / max(2 * n, 1),
  )


@jax.jit
def _e4m3(w):
  x = _float(w)
  finite = jnp.isfinite(x)
  amax = jnp.max(jnp.where(finite, jnp.abs(x), 0))
  scale = jnp.where(amax > 0, amax / E4M3_MAX, 1.0)
  y = jnp.clip(x / scale, -E4M3_MAX, E4M3_MAX)  # inf → ±448 (E4M3 has no inf)
  y = jnp.where(jnp.isnan(x), jnp.nan, y)
  return y.astype(jnp.float8_e4m3fn).astype(x.dtype) * scale


def fp8_e4m3_fake_quant(w):
  """Per-tensor-scaled FP8 E4M3 (round-to-nearest-even) round trip, in w's dtype (module doc)."""
  w = jnp.asarray(w)
  return _e4m3(w).astype(w.dtype)
