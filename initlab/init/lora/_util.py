"""Shared plumbing of `initlab.init.lora`: compute dtypes, leading batch axes, checks, the scale.

Kept private: the public names live in the modules (svd, quant, weight, data) and the package.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST


def mm(a: jax.Array, b: jax.Array) -> jax.Array:
  """a @ b at full precision (no bf16/TF32 passes on accelerators)."""
  return jnp.matmul(a, b, precision=HIGHEST)


def as_compute(x: Any) -> jax.Array:
  """x as float64 when it is float64 (x64 enabled), else as float32 (bf16/fp16/int cast up)."""
  x = jnp.asarray(x)
  return x.astype(jnp.float64 if x.dtype == jnp.float64 else jnp.float32)


def out_dtype(x: Any, dtype: Any = None) -> jnp.dtype:
  """`dtype`, else x's dtype when floating, else the compute dtype."""
  if dtype is not None:
    return jnp.dtype(dtype)
  x_dtype = jnp.asarray(x).dtype
  return x_dtype if jnp.issubdtype(x_dtype, jnp.floating) else as_compute(x).dtype


def lora_scale(rank: int, alpha: float | None = None, rslora: bool = False) -> float:
  """s = alpha / r, or alpha / sqrt(r) with rsLoRA (arXiv 2312.03732); alpha defaults to r."""
  alpha = rank if alpha is None else alpha
  return alpha / math.sqrt(rank) if rslora else alpha / rank


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
  if value not in choices:
    raise ValueError(f'{name}={value!r} is not one of: {", ".join(map(repr, choices))}')


def check_rank(shape: Sequence[int], rank: Any, *, limit: int | None = None) -> None:
  """rank is an int in [1, limit] (limit: min(n_in, m_out) of the (..., n_in, m_out) shape)."""
  shape = tuple(shape)
  if len(shape) < 2:
    raise ValueError(f'kernel must have shape (..., n_in, m_out), got shape {shape}')
  limit = min(shape[-2:]) if limit is None else limit
  if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= limit:
    raise ValueError(
      f'rank={rank!r} must be an int in [1, {limit}] (min(n_in, m_out) = {min(shape[-2:])}) '
      f'for kernel shape {shape}'
    )


def require_key(key: Any, what: str) -> None:
  if key is None:
    raise ValueError(f'key is required for {what}: pass key=jax.random.key(seed)')


def over_batch(
  fn: Callable[..., Any], arrays: Sequence[jax.Array], core_ndims: Sequence[int], key: Any = None
) -> Any:
  """fn(*cores, key) over the common leading axes of `arrays` (jax.vmap on a flat batch).

  Each array has its own number of core (trailing) axes. With leading axes L, the batch element
  i (row-major over L) gets key `jax.random.split(key, prod(L))[i]`; without, fn gets `key`.
  Outputs (any pytree) get the leading axes L back.
  """
  lead = arrays[0].shape[: arrays[0].ndim - core_ndims[0]]
  for x, nd in zip(arrays, core_ndims):
    if x.ndim < nd or x.shape[: x.ndim - nd] != lead:
      shapes = [tuple(y.shape) for y in arrays]
      raise ValueError(f'leading (batch) axes differ between the inputs: shapes {shapes}')
  if not lead:
    return fn(*arrays, key)
  size = math.prod(lead)
  flat = [x.reshape((size,) + x.shape[x.ndim - nd :]) for x, nd in zip(arrays, core_ndims)]
  if key is None:
    out = jax.vmap(lambda *xs: fn(*xs, None))(*flat)
  else:
    out = jax.vmap(fn)(*flat, jax.random.split(key, size))
  return jax.tree.map(lambda y: y.reshape(lead + y.shape[1:]), out)


def finish(
  kernel: jax.Array, a: jax.Array, b: jax.Array, s: float, dtype: jnp.dtype
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(kernel - s·a@b, a, b) in `dtype`; the residual uses the factors after the cast to `dtype`."""
  a, b = a.astype(dtype), b.astype(dtype)
  residual = kernel - s * mm(a.astype(kernel.dtype), b.astype(kernel.dtype))
  return residual.astype(dtype), a, b
