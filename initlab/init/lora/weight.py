"""Weight-only LoRA initializations in the Flax layout.

A kernel K is (..., n_in, m_out) (K = Wᵀ, W PyTorch's (out, in) weight); every scheme returns
(residual (..., n_in, m_out), lora_a (..., n_in, r), lora_b (..., r, m_out)) with the adapted
kernel residual + s · lora_a @ lora_b, s = alpha / r (alpha / √r with rslora), alpha = r by
default. PEFT's layout is A = lora_aᵀ (r, in), B = lora_bᵀ (out, r).

Math in float32 (float64 for float64 input with x64); factors are cast to `dtype` (default the
kernel's) first and the residual K - s·a@b is computed from the cast factors, so that the
adapted kernel reproduces K as exactly as the dtype allows (all but `default`, `gaussian`,
`orthogonal`, whose residual is K, and `loftq`, whose residual is the quantized base).
Leading axes: one call decomposes stacked layers (jax.vmap); layer i gets key
jax.random.split(key, #layers)[i].
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initlab.init.lora import _util, quant
from initlab.init.lora import svd as svd_lib

Factors = tuple[jax.Array, jax.Array, jax.Array]


def _setup(kernel: Any, rank: int, dtype: Any) -> tuple[jax.Array, jnp.dtype]:
  k = _util.as_compute(kernel)
  _util.check_rank(k.shape, rank)
  return k, _util.out_dtype(kernel, dtype)


def _scalar(x: float, like: jax.Array) -> jax.Array:
  """A traced scalar (so that e.g. each alpha does not compile a program of its own)."""
  return jnp.asarray(x, like.dtype)


# ------------------------------------------------------------------------------------------
# Random adapters: the kernel is the residual.


def default(
  kernel: Any,
  rank: int,
  *,
  alpha: float | None = None,
  rslora: bool = False,
  key: jax.Array | None = None,
  dtype: Any = None,
) -> Factors:
  """LoRA (arXiv 2106.09685, Section 4.1): lora_a ~ U(±1/√n_in) (n_in, r), lora_b = 0, residual K.

  PEFT's kaiming_uniform(a=√5) on A (r, n_in): bound = √3 · √(1/3) / √n_in = 1/√n_in.
  """
  k, out = _setup(kernel, rank, dtype)
  _util.require_key(key, "method 'default'")
  return _random_core(k, key, rank=rank, kind='default', out=out)


def gaussian(
  kernel: Any,
  rank: int,
  *,
  alpha: float | None = None,
  rslora: bool = False,
  key: jax.Array | None = None,
  dtype: Any = None,
) -> Factors:
  """PEFT's 'gaussian': lora_a ~ N(0, 1/r²) (n_in, r), lora_b = 0, residual = K."""
  k, out = _setup(kernel, rank, dtype)
  _util.require_key(key, "method 'gaussian'")
  return _random_core(k, key, rank=rank, kind='gaussian', out=out)


def orthogonal(
  kernel: Any,
  rank: int,
  *,
  alpha: float | None = None,
  rslora: bool = False,
  key: jax.Array | None = None,
  dtype: Any = None,
) -> Factors:
  """PEFT's 'orthogonal' (even r): Q (r, r) orthogonal (QR of a Gaussian);
  lora_a = G₁ Q[0::2] / 10 (n_in, r), lora_b = (G₂ Q[1::2])ᵀ / 10 (r, m_out), G ~ N(0, 1).

  Q[0::2] Q[1::2]ᵀ = 0, so lora_a @ lora_b = 0 up to rounding while both are nonzero (of rank
  r/2 each); residual = K.
  """
  k, out = _setup(kernel, rank, dtype)
  if rank % 2:
    raise ValueError(f"rank={rank}: method 'orthogonal' needs an even rank")
  _util.require_key(key, "method 'orthogonal'")
  return _random_core(k, key, rank=rank, kind='orthogonal', out=out)


def _one_random(kk: jax.Array, key: jax.Array, rank: int, kind: str):
  (n, m), dt = kk.shape, kk.dtype
  if kind == 'default':
    bound = 1.0 / math.sqrt(n)
    return jax.random.uniform(key, (n, rank), dt, -bound, bound), jnp.zeros((rank, m), dt)
  if kind == 'gaussian':
    return jax.random.normal(key, (n, rank), dt) / rank, jnp.zeros((rank, m), dt)
  half = rank // 2  # 'orthogonal': one draw, split into X (r, r), G₁ (n, r/2), G₂ (m, r/2).
  draw = jax.random.normal(key, (rank * rank + (n + m) * half,), dt)
  q = jnp.linalg.qr(draw[: rank * rank].reshape(rank, rank))[0]
  g1 = draw[rank * rank : rank * rank + n * half].reshape(n, half)
  g2 = draw[rank * rank + n * half :].reshape(m, half)
  return _util.mm(g1, q[0::2]) / 10.0, _util.mm(g2, q[1::2]).T / 10.0


@functools.partial(jax.jit, static_argnames=('rank', 'kind', 'out'))
def _random_core(k: jax.Array, key: jax.Array, *, rank: int, kind: str, out: jnp.dtype) -> Factors:
  """Residual K; random (lora_a, lora_b) of `kind` ('default', 'gaussian', 'orthogonal')."""
  one = functools.partial(_one_random, rank=rank, kind=kind)
  a, b = _util.over_batch(one, (k,), (2,), key)
  return k.astype(out), a.astype(out), b.astype(out)


# ------------------------------------------------------------------------------------------
# SVD and QR: PiSSA, MiLoRA, OLoRA.


def pissa(
  kernel: Any,
  rank: int,
  *,
  alpha: float | None = None,
  rslora: bool = False,
  key: jax.Array | None = None,
  dtype: Any = None,
  niter: int | None = None,
) -> Factors:
  """PiSSA (arXiv 2404.02948, eq. 2-3): the top-r singular triplets of K = U S Vᵀ.

  lora_a = U_r √(S_r/s) (n_in, r), lora_b = √(S_r/s) V_rᵀ (r, m_out), residual = K - s·a@b.
  niter=int: the randomized SVD svd_lowrank(K, r, niter, key) (PiSSA's fast mode; key needed).
  """
  k, out = _setup(kernel, rank, dtype)
  s = _scalar(_util.lora_scale(rank, alpha, rslora), k)
  if niter is None:
    return _svd_core(k, None, s, 0, 0, rank=rank, randomized=False, out=out)
  if isinstance(niter, bool) or not isinstance(niter, (int, np.integer)) or niter < 0:
    raise ValueError(f'niter={niter!r} must be None (exact SVD) or an int >= 0')
  _util.require_key(key, "method 'pissa' with niter (randomized SVD)")
  return _svd_core(k, key, s, 0, jnp.asarray(niter, jnp.int32), rank=rank, randomized=True, out=out)


def milora(
  kernel: Any,
  rank: int,
  *,
  alpha: float | None = None,
  rslora: bool = False,
  key: jax.Array | None = None,
  dtype: Any = None,
) -> Factors:
  """MiLoRA (arXiv 2406.09044, Section 3): as PiSSA with the bottom-r singular triplets of K."""
  k, out = _setup(kernel, rank, dtype)
  s = _scalar(_util.lora_scale(rank, alpha, rslora), k)
  start = min(k.shape[-2:]) - rank
  return _svd_core(k, None, s, start, 0, rank=rank, randomized=False, out=out)


def _one_svd(kk, key, s, start, niter, rank: int, randomized: bool):
  """K = U S Vᵀ; lora_a = U_I √(S_I/s), lora_b = √(S_I/s) V_Iᵀ, I = start .. start + r - 1."""
  if randomized:
    u, sv, v = svd_lib.randomized(kk, key, rank, niter)
    vt = v.T
  else:
    u, sv, vt = jnp.linalg.svd(kk, full_matrices=False)
    u = jax.lax.dynamic_slice_in_dim(u, start, rank, axis=1)
    sv = jax.lax.dynamic_slice_in_dim(sv, start, rank)
    vt = jax.lax.dynamic_slice_in_dim(vt, start, rank, axis=0)
  root = jnp.sqrt(sv / s)
  return u * root, root[:, None] * vt


@functools.partial(jax.jit, static_argnames=('rank', 'randomized', 'out'))
def _svd_core(k, key, s, start, niter, *, rank, randomized, out) -> Factors:
  one = lambda kk, key: _one_svd(kk, key, s, start, niter, rank, randomized)
  a, b = _util.over_batch(one, (k,), (2,), key)
  return _util.finish(k, a, b, s, out)


def olora(
  kernel: Any,
  rank: int,
  *,
  alpha: float | None = None,
  rslora: bool = False,
  key: jax.Array | None = None,
  dtype: Any = None,
) -> Factors:
  """OLoRA (arXiv 2406.01775, Section 3): thin QR W = Kᵀ = Q R (Q (m_out, k), R (k, n_in)).

  PEFT's B = Q[:, :r], A = R[:r] (no 1/s rebalancing): lora_a = R[:r]ᵀ (n_in, r),
  lora_b = Q[:, :r]ᵀ (r, m_out, orthonormal rows), residual = K - s·a@b.
  """
  k, out = _setup(kernel, rank, dtype)
  return _olora_core(k, _scalar(_util.lora_scale(rank, alpha, rslora), k), rank=rank, out=out)


def _one_olora(kk: jax.Array, _, rank: int):
  # Q[:, :r] of W = QR depends only on W's first r columns, and R[:r] = Q[:, :r]ᵀ W: a QR of
  # (m_out, r) instead of the full one (same Householder reflectors, so the same signs).
  w = kk.T
  q, r_head = jnp.linalg.qr(w[:, :rank], mode='reduced')
  r = jnp.concatenate([r_head, _util.mm(q.T, w[:, rank:])], axis=1)  # R[:r], upper triangular.
  return r.T, q.T


@functools.partial(jax.jit, static_argnames=('rank', 'out'))
def _olora_core(k, s, *, rank, out) -> Factors:
  a, b = _util.over_batch(functools.partial(_one_olora, rank=rank), (k,), (2,), None)
  return _util.finish(k, a, b, s, out)


# ------------------------------------------------------------------------------------------
# LoLDU.


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LDU:
  """Rank-r LoLDU factors of W = Kᵀ (m_out, n_in) (arXiv 2410.13618, Section 3).

  perm (..., m_out) int: the row permutation P as an index, P @ X = X[perm] (W = (L U)[perm]);
  lower (..., m_out, r): L[:, :r], unit lower triangular; z (..., r): D[:r] = diag(U)[:r];
  upper (..., r, n_in): (D⁻¹ U)[:r], unit diagonal; sigma (...): alpha / r.
  """

  perm: jax.Array
  lower: jax.Array
  z: jax.Array
  upper: jax.Array
  sigma: jax.Array

  def permuted_lower(self) -> jax.Array:
    """P L_r (..., m_out, r)."""
    return jnp.take_along_axis(self.lower, self.perm[..., :, None], axis=-2)

  def weight(self) -> jax.Array:
    """σ P L_r diag(z) U_r (..., m_out, n_in) in PyTorch layout (the adapter's ΔW)."""
    core = _util.mm(self.permuted_lower() * self.z[..., None, :], self.upper)
    return self.sigma[..., None, None] * core


def loldu_factors(kernel: Any, rank: int, alpha: float | None = None) -> LDU:
  """LoLDU (arXiv 2410.13618, eq. 4-6): W = Kᵀ = P L D U, LU with partial pivoting.

  D = diag(U), U ← D⁻¹ U; keeps L_r = L[:, :r], z = D[:r], U_r = U[:r], σ = alpha/r (alpha = r
  by default). A zero pivot (singular W) leaves its row of U undivided (diag entry 0).
  """
  k = _util.as_compute(kernel)
  _util.check_rank(k.shape, rank)
  return _ldu_core(k, _scalar((rank if alpha is None else alpha) / rank, k), rank=rank)


def _one_ldu(kk: jax.Array, _, sigma: jax.Array, rank: int) -> LDU:
  w = kk.T
  m, n = w.shape
  size = min(m, n)
  lu, _, permutation = jax.lax.linalg.lu(w)  # w[permutation] = L U.
  lower = jnp.tril(lu[:, :size], -1) + jnp.eye(m, size, dtype=w.dtype)
  upper = jnp.triu(lu[:size, :])
  d = jnp.diagonal(upper)
  upper = upper / jnp.where(d == 0, 1, d)[:, None]
  perm = jnp.argsort(permutation).astype(jnp.int32)
  return LDU(perm, lower[:, :rank], d[:rank], upper[:rank], sigma)


@functools.partial(jax.jit, static_argnames=('rank',))
def _ldu_core(k: jax.Array, sigma: jax.Array, *, rank: int) -> LDU:
  one = lambda kk, key: _one_ldu(kk, key, sigma, rank)
  return _util.over_batch(one, (k,), (2,), None)


def loldu(
  kernel: Any,
  rank: int,
  *,
  alpha: float | None = None,
  rslora: bool = False,
  key: jax.Array | None = None,
  dtype: Any = None,
) -> Factors:
  """LoLDU as (residual, lora_a, lora_b): ΔK = (σ P L_r diag(z) U_r)ᵀ.

  lora_a = (diag(z) U_r)ᵀ (n_in, r), lora_b = (P L_r)ᵀ (r, m_out), residual = K - s·a@b
  (s = σ = alpha/r unless rslora; see `loldu_factors` for the trainable z and σ).
  """
  k, out = _setup(kernel, rank, dtype)
  s = _scalar(_util.lora_scale(rank, alpha, rslora), k)
  return _loldu_core(k, s, rank=rank, out=out)


@functools.partial(jax.jit, static_argnames=('rank', 'out'))
def _loldu_core(k, s, *, rank, out) -> Factors:
  f = _ldu_core(k, s, rank=rank)  # sigma is irrelevant to (a, b).
  a = jnp.swapaxes(f.upper, -1, -2) * f.z[..., None, :]
  b = jnp.swapaxes(f.permuted_lower(), -1, -2)
  return _util.finish(k, a, b, s, out)


# ------------------------------------------------------------------------------------------
# LoftQ.


def loftq(
  kernel: Any,
  rank: int,
  *,
  alpha: float | None = None,
  rslora: bool = False,
  key: jax.Array | None = None,
  dtype: Any = None,
  num_bits: int = 4,
  method: str = 'nf4',
  num_iter: int = 1,
  block_size: int = 64,
  compat_peft_loftq_scaling: bool = False,
) -> Factors:
  """LoftQ (arXiv 2310.08659, Algorithm 1), alternating T = num_iter times from a@b = 0:

  Q_t = fake_quantize(K - s·a@b);  K - Q_t = U S Vᵀ;  lora_a = U_r √(S_r/s), lora_b = √(S_r/s) V_rᵀ.

  Returns (Q_T, a, b): the residual is the quantized base, so Q_T + s·a@b only approximates K.
  Quantization blocks of `block_size` run along the rows of W = Kᵀ (bitsandbytes' layout, so
  Q matches PEFT's NF4 base).
  compat_peft_loftq_scaling=True reproduces PEFT (huggingface/peft issue #1982): no 1/s in the
  factors and Q_t = fake_quantize(K - a@b), which is off by s when s != 1.
  """
  k, out = _setup(kernel, rank, dtype)
  table = jnp.asarray(quant.padded_levels(num_bits, method), k.dtype)  # Checks both.
  size = k.shape[-2] * k.shape[-1]
  if (
    isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1
  ):
    raise ValueError(f'block_size={block_size!r} must be a positive int')
  if size % block_size:
    raise ValueError(
      f'block_size={block_size} must divide n_in·m_out = {size} (kernel shape {tuple(k.shape)})'
    )
  if isinstance(num_iter, bool) or not isinstance(num_iter, (int, np.integer)) or num_iter < 1:
    raise ValueError(f'num_iter={num_iter!r} must be an int >= 1')
  s = _util.lora_scale(rank, alpha, rslora)
  c = _scalar(1.0 if compat_peft_loftq_scaling else s, k)
  num_iter = jnp.asarray(num_iter, jnp.int32)
  return _loftq_core(k, c, num_iter, table, rank=rank, block_size=int(block_size), out=out)


def _one_loftq(kk: jax.Array, c, num_iter, table, rank: int, block_size: int):
  def step(_, carry):
    _, a, b = carry
    # Blocks run along W = Kᵀ's rows (PyTorch's memory order), as bitsandbytes' (PEFT's) do.
    q = quant.fake_quantize_with((kk - c * _util.mm(a, b)).T, table, block_size).T
    u, sv, vt = jnp.linalg.svd(kk - q, full_matrices=False)
    root = jnp.sqrt(sv[:rank] / c)
    return q, u[:, :rank] * root, root[:, None] * vt[:rank]

  (n, m), dt = kk.shape, kk.dtype
  start = (jnp.zeros_like(kk), jnp.zeros((n, rank), dt), jnp.zeros((rank, m), dt))  # a@b = 0.
  return jax.lax.fori_loop(0, num_iter, step, start)


@functools.partial(jax.jit, static_argnames=('rank', 'block_size', 'out'))
def _loftq_core(k, c, num_iter, table, *, rank, block_size, out) -> Factors:
  one = lambda kk, _: _one_loftq(kk, c, num_iter, table, rank, block_size)
  q, a, b = _util.over_batch(one, (k,), (2,), None)
  return q.astype(out), a.astype(out), b.astype(out)
