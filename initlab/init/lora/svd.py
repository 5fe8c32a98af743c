"""Singular value decompositions for the LoRA initializations: exact (`top_svd`) and randomized.

`svd_lowrank` is the randomized range finder of Halko, Martinsson & Tropp (arXiv 0909.4061,
Algorithm 4.4, subspace iteration with re-orthonormalization) with the semantics of
`torch.svd_lowrank` (no oversampling: the sketch has exactly q columns), as PiSSA's fast mode
(arXiv 2404.02948, Section 3) and LoRA-GA (arXiv 2407.05000) use it.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initlab.init.lora import _util


def _basis(x: jax.Array) -> jax.Array:
  return jnp.linalg.qr(x, mode='reduced')[0]


def svd_lowrank(
  m: Any, q: int, niter: int, key: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Randomized rank-q SVD m ≈ U diag(S) Vᵀ: U (..., rows, q), S (..., q), V (..., cols, q).

  Ω ~ N(0, 1) (cols, q); Q = qr(M Ω); niter times Q = qr(M qr(Mᵀ Q)); Û S Vᵀ = svd(Qᵀ M);
  U = Q Û. Exact when rank(M) <= q. Leading axes of m: one call, keys split per matrix.
  """
  m = _util.as_compute(m)
  if m.ndim < 2:
    raise ValueError(f'm must have shape (..., rows, cols), got shape {tuple(m.shape)}')
  rows, cols = m.shape[-2:]
  if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or not 1 <= q <= min(rows, cols):
    raise ValueError(f'q={q!r} must be an int in [1, min(rows, cols) = {min(rows, cols)}]')
  if isinstance(niter, bool) or not isinstance(niter, (int, np.integer)) or niter < 0:
    raise ValueError(f'niter={niter!r} must be an int >= 0')
  _util.require_key(key, 'svd_lowrank')
  return _svd_lowrank(m, key, jnp.asarray(niter, jnp.int32), q=int(q))


def randomized(x: jax.Array, key: jax.Array, q: int, niter: Any) -> tuple[jax.Array, ...]:
  """`svd_lowrank` of one matrix x (rows, cols) without checks; niter may be traced."""
  basis = _basis(_util.mm(x, jax.random.normal(key, (x.shape[1], q), x.dtype)))
  step = lambda _, b: _basis(_util.mm(x, _basis(_util.mm(x.T, b))))
  basis = jax.lax.fori_loop(0, niter, step, basis)
  u_hat, s, vt = jnp.linalg.svd(_util.mm(basis.T, x), full_matrices=False)
  return _util.mm(basis, u_hat), s, vt.T


@functools.partial(jax.jit, static_argnames=('q',))
def _svd_lowrank(m: jax.Array, key: jax.Array, niter: jax.Array, *, q: int):
  one = lambda x, k: randomized(x, k, q, niter)
  return _util.over_batch(one, (m,), (2,), key)


def top_svd(m: Any, k: int | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Exact thin SVD m = U diag(S) Vᵀ truncated to the top k (all when None).

  Returns U (..., rows, k), S (..., k) descending, V (..., cols, k) (V, not Vᵀ, as svd_lowrank).
  """
  return _top_svd(_util.as_compute(m), k=k)


@functools.partial(jax.jit, static_argnames=('k',))
def _top_svd(m: jax.Array, *, k: int | None):
  u, s, vt = jnp.linalg.svd(m, full_matrices=False)
  k = s.shape[-1] if k is None else k
  return u[..., :k], s[..., :k], jnp.swapaxes(vt[..., :k, :], -1, -2)
