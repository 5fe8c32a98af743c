"""Blockwise absmax quantization for LoftQ (arXiv 2310.08659): NF4 or symmetric int levels.

NF4 (QLoRA, arXiv 2305.14314, Section 3 and Appendix E): 16 levels, the quantiles of N(0, 1)
normalized to [-1, 1], asymmetric with an exact zero: 8 positive levels Φ⁻¹(p) at
p = linspace(δ, 1/2, 9)[:-1], 7 negative levels -Φ⁻¹(p) at p = linspace(δ, 1/2, 8)[:-1], and 0,
all divided by Φ⁻¹(δ), δ = 0.9677083. Φ⁻¹ is `statistics.NormalDist().inv_cdf` (float64).

'int': the 2^b - 1 symmetric uniform levels k / (2^(b-1) - 1), |k| <= 2^(b-1) - 1.

A tensor is flattened and split into blocks of `block_size` entries; each block is divided by
its absmax and every entry is coded as the index of its nearest level.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initlab.init.lora import _util

METHODS = ('nf4', 'int')
NF4_OFFSET = 0.9677083


def nf4_levels(offset: float = NF4_OFFSET) -> np.ndarray:
  """The 16 NF4 levels (float64, ascending): QLoRA arXiv 2305.14314, Appendix E."""
  ppf = statistics.NormalDist().inv_cdf
  positive = [ppf(p) for p in np.linspace(offset, 0.5, 9)[:-1]]
  negative = [-ppf(p) for p in np.linspace(offset, 0.5, 8)[:-1]]
  values = np.sort(np.array(positive + [0.0] + negative))
  return values / values.max()


NF4_LEVELS = nf4_levels()


def levels(num_bits: int = 4, method: str = 'nf4') -> np.ndarray:
  """The ascending quantization levels in [-1, 1] (float64) of `method` with `num_bits`."""
  _util.check_choice('method', method, METHODS)
  if method == 'nf4':
    if num_bits != 4:
      raise ValueError(f"num_bits={num_bits!r}: method 'nf4' has 4 bits")
    return NF4_LEVELS
  valid = isinstance(num_bits, (int, np.integer)) and not isinstance(num_bits, bool)
  if not valid or not 2 <= num_bits <= 8:
    raise ValueError(f'num_bits={num_bits!r} must be an int in [2, 8]')
  top = 2 ** (num_bits - 1) - 1
  return np.arange(-top, top + 1, dtype=np.float64) / top


def padded_levels(num_bits: int = 4, method: str = 'nf4') -> np.ndarray:
  """`levels` padded to 2^num_bits entries by repeating the top level, which is then never the
  nearest one (ties go to the lower level); methods of equal num_bits share table shapes."""
  table = levels(num_bits, method)
  return np.concatenate([table, np.full(2**num_bits - table.size, table[-1])])


def _check_block_size(x: jax.Array, block_size: Any) -> int:
  valid = isinstance(block_size, (int, np.integer)) and not isinstance(block_size, bool)
  if not valid or block_size < 1:
    raise ValueError(f'block_size={block_size!r} must be a positive int')
  if x.size % block_size:
    raise ValueError(
      f'block_size={block_size} must divide the size {x.size} of x (shape {tuple(x.shape)})'
    )
  return int(block_size)


def quantize(
  x: Any, num_bits: int = 4, method: str = 'nf4', block_size: int = 64
) -> tuple[jax.Array, jax.Array]:
  """Codes (x.size // block_size, block_size) uint8 and absmax (x.size // block_size,)."""
  x = _util.as_compute(x)
  table = jnp.asarray(padded_levels(num_bits, method), x.dtype)
  return _quantize(x, table, block_size=_check_block_size(x, block_size))


def quantize_with(x: jax.Array, table: jax.Array, block_size: int) -> tuple[jax.Array, jax.Array]:
  """`quantize` with an ascending level table (traceable; no checks)."""
  blocks = x.reshape(-1, block_size)
  absmax = jnp.max(jnp.abs(blocks), axis=1)
  normed = blocks / jnp.where(absmax == 0, 1, absmax)[:, None]
  midpoints = (table[1:] + table[:-1]) / 2
  return jnp.searchsorted(midpoints, normed).astype(jnp.uint8), absmax


def dequantize_with(codes: jax.Array, absmax: jax.Array, table: jax.Array) -> jax.Array:
  """levels[codes] · absmax (blocks, block_size) (traceable; no checks)."""
  return table.astype(absmax.dtype)[codes.astype(jnp.int32)] * absmax[:, None]


_quantize = jax.jit(quantize_with, static_argnames=('block_size',))


def dequantize(
  codes: jax.Array,
  absmax: jax.Array,
  shape: Sequence[int],
  num_bits: int = 4,
  method: str = 'nf4',
  dtype: Any = None,
) -> jax.Array:
  """levels[codes] · absmax of each block, reshaped to `shape` (dtype: absmax's by default)."""
  table = jnp.asarray(padded_levels(num_bits, method), absmax.dtype)
  dtype = jnp.dtype(dtype or absmax.dtype)
  return _dequantize(codes, absmax, table, shape=tuple(shape), dtype=dtype)


@functools.partial(jax.jit, static_argnames=('shape', 'dtype'))
def _dequantize(codes, absmax, table, *, shape, dtype):
  return dequantize_with(codes, absmax, table).reshape(shape).astype(dtype)


def fake_quantize(
  x: Any, num_bits: int = 4, method: str = 'nf4', block_size: int = 64, dtype: Any = None
) -> jax.Array:
  """dequantize(quantize(x)): x rounded to its blockwise levels, x's shape (dtype: compute)."""
  x = _util.as_compute(x)
  table = jnp.asarray(padded_levels(num_bits, method), x.dtype)
  out = jnp.dtype(dtype or x.dtype)
  return _fake_quantize(x, table, block_size=_check_block_size(x, block_size), dtype=out)


def fake_quantize_with(x: jax.Array, table: jax.Array, block_size: int) -> jax.Array:
  """`fake_quantize` with an ascending level table (traceable; no checks)."""
  return dequantize_with(*quantize_with(x, table, block_size), table).reshape(x.shape)


@functools.partial(jax.jit, static_argnames=('block_size', 'dtype'))
def _fake_quantize(x, table, *, block_size, dtype):
  return fake_quantize_with(x, table, block_size).astype(dtype)
