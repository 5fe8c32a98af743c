"""Data- and gradient-dependent LoRA initializations: CorDA, LoRA-GA, LoRA-SB and EVA.

Flax layout as in `initlab.init.lora.weight`: kernel and gradient (..., n_in, m_out),
lora_a (..., n_in, r), lora_b (..., r, m_out), adapted kernel residual + s · lora_a @ lora_b;
W = Kᵀ and G_W = gradᵀ are PyTorch's (out, in) matrices the papers write.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initlab.init.lora import _util
from initlab.init.lora import svd as svd_lib

Factors = tuple[jax.Array, jax.Array, jax.Array]
NORMALIZE = ('peft', 'absmax', 'none')
CORDA_MODES = ('ipm', 'kpm')
LORA_GA_VARIANTS = ('reference', 'peft')
LORA_GA_DIRECTIONS = ('ArB2r', 'A2rBr', 'ArBr')
LORA_GA_SCALES = ('stable', 'gd', 'unit')
CORDA_INV_TOL = 0.05  # ‖C̃ C̃⁻¹ - I‖_F below which the damping stops doubling.
CORDA_MAX_DOUBLINGS = 20


# ------------------------------------------------------------------------------------------
# CorDA (arXiv 2406.05223, Section 3.1).


def corda_covariance(x: Any, normalize: str = 'peft') -> jax.Array:
  """C = (1/N) Σ_i X̂_iᵀ X̂_i (n_in, n_in) of N samples X_i (tokens, n_in) or rows (n_in,).

  x: (N, tokens, n_in) or (N, n_in). normalize: 'peft' X̂ = X / |max X| (PEFT's hook divides
  by the absolute value of the sample's maximum), 'absmax' X̂ = X / max|X|, 'none' X̂ = X.
  """
  _util.check_choice('normalize', normalize, NORMALIZE)
  x = _util.as_compute(x)
  if x.ndim == 2:
    x = x[:, None, :]
  if x.ndim != 3:
    raise ValueError(f'x must have shape (samples, tokens, n_in) or (samples, n_in), got {x.shape}')
  return _covariance(x, normalize=normalize)


@functools.partial(jax.jit, static_argnames=('normalize',))
def _covariance(x: jax.Array, *, normalize: str) -> jax.Array:
  if normalize == 'peft':
    scale = jnp.abs(jnp.max(x, axis=(1, 2)))
  elif normalize == 'absmax':
    scale = jnp.max(jnp.abs(x), axis=(1, 2))
  else:
    scale = jnp.ones(x.shape[:1], x.dtype)
  x = x / jnp.where(scale == 0, 1, scale)[:, None, None]
  return jnp.einsum('sti,stj->ij', x, x, precision=_util.HIGHEST) / x.shape[0]


def corda_svd(
  kernel: Any, covariance: Any, *, damping: float = 0.01
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """W = Kᵀ = U diag(Σ) Vᵀ with U Σ V̂ᵀ = svd(W C̃) and Vᵀ = V̂ᵀ C̃⁻¹ (exact, not orthonormal).

  C̃ = C + λ·mean(diag C)·I, λ = damping doubled (at most 20 times) until ‖C̃ C̃⁻¹ - I‖_F < 0.05.
  Returns U (..., m_out, k), Σ (..., k) descending, Vᵀ (..., k, n_in), k = min(n_in, m_out).
  """
  k = _util.as_compute(kernel)
  c = jnp.asarray(covariance).astype(k.dtype)
  if k.ndim < 2 or c.shape[-2:] != (k.shape[-2],) * 2:
    raise ValueError(
      f'covariance must have shape (..., n_in, n_in) for kernel shape {tuple(k.shape)}, '
      f'got {tuple(c.shape)}'
    )
  return _corda_svd(k, c, jnp.asarray(damping, k.dtype))


def _one_corda_svd(kk: jax.Array, cc: jax.Array, damping: jax.Array, _):
  eye = jnp.eye(cc.shape[0], dtype=cc.dtype)
  mean_diag = jnp.mean(jnp.diagonal(cc))

  def damped(lam):
    fixed = cc + lam * mean_diag * eye
    inv = jnp.linalg.inv(fixed)
    return fixed, inv, jnp.linalg.norm(_util.mm(fixed, inv) - eye)

  def cond(state):
    _, doublings, err = state
    return (err >= CORDA_INV_TOL) & (doublings < CORDA_MAX_DOUBLINGS)

  def body(state):
    lam, doublings, _ = state
    return 2 * lam, doublings + 1, damped(2 * lam)[2]

  lam, _, _ = jax.lax.while_loop(cond, body, (damping, 0, damped(damping)[2]))
  fixed, inv, _ = damped(lam)
  u, sv, vht = jnp.linalg.svd(_util.mm(kk.T, fixed), full_matrices=False)
  return u, sv, _util.mm(vht, inv)


@jax.jit
def _corda_svd(k: jax.Array, c: jax.Array, damping: jax.Array):
  lead = k.shape[:-2]
  damping = jnp.broadcast_to(damping, lead)
  return _util.over_batch(_one_corda_svd, (k, c, damping), (2, 2, 0), None)


def corda(
  kernel: Any,
  covariance: Any,
  rank: int,
  *,
  mode: str = 'ipm',
  alpha: float | None = None,
  rslora: bool = False,
  damping: float = 0.01,
  dtype: Any = None,
) -> Factors:
  """CorDA: W = U Σ Vᵀ from `corda_svd`; 'ipm' keeps the top r, 'kpm' the bottom r.

  PEFT's A = (Σ_r/s)^½ V_rᵀ, B = U_r (Σ_r/s)^½: lora_a = Aᵀ (n_in, r), lora_b = Bᵀ (r, m_out),
  residual = K - s·a@b. covariance (..., n_in, n_in), e.g. from `corda_covariance`.
  """
  _util.check_choice('mode', mode, CORDA_MODES)
  k = _util.as_compute(kernel)
  _util.check_rank(k.shape, rank)
  out = _util.out_dtype(kernel, dtype)
  c = jnp.asarray(covariance).astype(k.dtype)
  if c.shape[-2:] != (k.shape[-2],) * 2:
    raise ValueError(
      f'covariance must have shape (..., n_in, n_in) for kernel shape {tuple(k.shape)}, '
      f'got {tuple(c.shape)}'
    )
  s = jnp.asarray(_util.lora_scale(rank, alpha, rslora), k.dtype)
  start = 0 if mode == 'ipm' else min(k.shape[-2:]) - rank
  u, sv, vt = _corda_svd(k, c, jnp.asarray(damping, k.dtype))  # The program corda_svd runs.
  return _corda_factors(k, u, sv, vt, s, start, rank=rank, out=out)


@functools.partial(jax.jit, static_argnames=('rank', 'out'))
def _corda_factors(k, u, sv, vt, s, start, *, rank, out) -> Factors:
  """The factors of the r triplets start .. start + r - 1 of `corda_svd`."""
  u = jax.lax.dynamic_slice_in_dim(u, start, rank, axis=-1)
  sv = jax.lax.dynamic_slice_in_dim(sv, start, rank, axis=-1)
  vt = jax.lax.dynamic_slice_in_dim(vt, start, rank, axis=-2)
  root = jnp.sqrt(sv / s)
  a = jnp.swapaxes(vt, -1, -2) * root[..., None, :]
  b = jnp.swapaxes(u, -1, -2) * root[..., :, None]
  return _util.finish(k, a, b, s, out)


# ------------------------------------------------------------------------------------------
# LoRA-GA (arXiv 2407.05000, Section 3.2) and LoRA-SB (arXiv 2411.19557, Section 4).


def _lora_ga_indices(direction: str, rank: int) -> tuple[np.ndarray, np.ndarray]:
  """(indices of A's right singular vectors, indices of B's left singular vectors)."""
  if direction == 'ArB2r':
    return np.arange(rank), np.arange(rank, 2 * rank)
  if direction == 'A2rBr':
    return np.arange(rank, 2 * rank), np.arange(rank)
  return np.arange(1, 2 * rank, 2), np.arange(0, 2 * rank, 2)  # 'ArBr'.


def lora_ga(
  kernel: Any,
  grad: Any,
  rank: int,
  *,
  alpha: float | None = None,
  rslora: bool = False,
  key: jax.Array | None = None,
  niter: int = 4,
  variant: str = 'reference',
  direction: str = 'ArB2r',
  scale: str = 'stable',
  gamma: float = 16,
  dtype: Any = None,
) -> Factors:
  """LoRA-GA: rsvd(G_W = gradᵀ, q = min(4r, m_out, n_in), niter) = U S Vᵀ.

  variant='reference' (the authors' code, Outsider565/LoRA-GA): 'ArB2r' A = V[:, :r]ᵀ,
  B = U[:, r:2r]; 'A2rBr' A = V[:, r:2r]ᵀ, B = U[:, :r]; 'ArBr' A = V[:, 1:2r:2]ᵀ,
  B = U[:, 0:2r:2]. scale 'stable': A, B ·= m_out^¼/√gamma; 'gd': A, B /= s; 'unit': none.
  variant='peft' (huggingface/peft): B ·= diag(S) of B's indices, and 'stable' scales B only.
  lora_a = Aᵀ (n_in, r), lora_b = Bᵀ (r, m_out), residual = K - s·a@b. Needs 2r <= min(n, m).
  """
  _util.check_choice('variant', variant, LORA_GA_VARIANTS)
  _util.check_choice('direction', direction, LORA_GA_DIRECTIONS)
  _util.check_choice('scale', scale, LORA_GA_SCALES)
  k = _util.as_compute(kernel)
  g = _util.as_compute(grad).astype(k.dtype)
  if g.shape != k.shape:
    raise ValueError(f'grad shape {tuple(g.shape)} must equal the kernel shape {tuple(k.shape)}')
  _util.check_rank(k.shape, rank, limit=min(k.shape[-2:]) // 2)
  _util.require_key(key, "method 'lora_ga'")
  out = _util.out_dtype(kernel, dtype)
  s = _util.lora_scale(rank, alpha, rslora)
  if isinstance(niter, bool) or not isinstance(niter, (int, np.integer)) or niter < 0:
    raise ValueError(f'niter={niter!r} must be an int >= 0')
  idx_a, idx_b = _lora_ga_indices(direction, rank)
  stable = k.shape[-1] ** 0.25 / gamma**0.5  # m_out^¼ / √gamma.
  a_mult, b_mult = {'stable': (stable, stable), 'gd': (1 / s, 1 / s), 'unit': (1.0, 1.0)}[scale]
  if variant == 'peft' and scale == 'stable':
    a_mult = 1.0
  return _lora_ga(
    k,
    g,
    key,
    jnp.asarray(niter, jnp.int32),
    jnp.asarray(idx_a, jnp.int32),
    jnp.asarray(idx_b, jnp.int32),
    jnp.asarray([s, a_mult, b_mult], k.dtype),
    jnp.asarray(variant == 'peft'),
    rank=rank,
    out=out,
  )


@functools.partial(jax.jit, static_argnames=('rank', 'out'))
def _lora_ga(k, g, key, niter, idx_a, idx_b, scales, with_sv, *, rank, out) -> Factors:
  """A = mult_a · V[:, idx_a]ᵀ, B = mult_b · U[:, idx_b] (· diag(S[idx_b]) with_sv); scales =
  (s, mult_a, mult_b); direction, scale and variant are data, so they share one program."""
  s, a_mult, b_mult = scales[0], scales[1], scales[2]

  def one(gg, key):
    g_w = gg.T
    u, sv, v = svd_lib.randomized(g_w, key, min(4 * rank, *g_w.shape), niter)
    b_sv = jnp.where(with_sv, sv[idx_b], 1)
    return a_mult * v[:, idx_a], (b_mult * b_sv)[:, None] * u[:, idx_b].T

  a, b = _util.over_batch(one, (g,), (2,), key)
  return _util.finish(k, a, b, s, out)


def lora_sb(
  grad_sign_sum: Any,
  rank: int,
  *,
  lr_eff: float,
  key: jax.Array | None = None,
  niter: int = 10,
  dtype: Any = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """LoRA-SB: ΔK₁ = -lr_eff · sign(grad) (the first Adam-like step, grad summed, Flax layout)
  ≈ lora_a @ r_matrix @ lora_b, the rank-r svd_lowrank(ΔK₁, r, niter, key) = U_r Σ_r V_rᵀ.

  Returns lora_a = U_r (n_in, r), r_matrix = diag(Σ_r) (r, r), lora_b = V_rᵀ (r, m_out): PEFT's
  B = lora_bᵀ, R = r_matrixᵀ, A = lora_aᵀ with B R A = ΔW₁ = ΔK₁ᵀ. The kernel is unchanged.
  """
  g = _util.as_compute(grad_sign_sum)
  _util.check_rank(g.shape, rank)
  _util.require_key(key, "method 'lora_sb'")
  if isinstance(niter, bool) or not isinstance(niter, (int, np.integer)) or niter < 0:
    raise ValueError(f'niter={niter!r} must be an int >= 0')
  out = _util.out_dtype(grad_sign_sum, dtype)
  lr_eff, niter = jnp.asarray(lr_eff, g.dtype), jnp.asarray(niter, jnp.int32)
  return _lora_sb(g, lr_eff, key, niter, rank=rank, out=out)


@functools.partial(jax.jit, static_argnames=('rank', 'out'))
def _lora_sb(g, lr_eff, key, niter, *, rank, out):
  one = lambda gg, key: svd_lib.randomized(gg, key, rank, niter)
  u, sv, v = _util.over_batch(one, (-lr_eff * jnp.sign(g),), (2,), key)
  r_matrix = sv[..., :, None] * jnp.eye(rank, dtype=sv.dtype)
  return u.astype(out), r_matrix.astype(out), jnp.swapaxes(v, -1, -2).astype(out)


# ------------------------------------------------------------------------------------------
# EVA (arXiv 2410.07170, Section 3): PCA of layer inputs, rank redistribution, lora_a init.


def pca_components(x: Any, k: int) -> tuple[jax.Array, jax.Array]:
  """Exact PCA of rows x (..., N, d): X - x̄ = U S Vᵀ.

  Returns the top-k components Vᵀ[:k] (..., k, d) and their explained variance ratios
  S_i² / Σ_j S_j² (..., k).
  """
  return _pca(_util.as_compute(x), k=int(k))


@functools.partial(jax.jit, static_argnames=('k',))
def _pca(x: jax.Array, *, k: int) -> tuple[jax.Array, jax.Array]:
  centred = x - jnp.mean(x, axis=-2, keepdims=True)
  _, sv, vt = jnp.linalg.svd(centred, full_matrices=False)
  ratio = sv**2 / jnp.sum(sv**2, axis=-1, keepdims=True)
  return vt[..., :k, :], ratio[..., :k]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class IncrementalPCA:
  """Incremental PCA state (Ross et al. 2008, as sklearn's IncrementalPCA and PEFT's EVA).

  n (): rows seen; mean (d,); components (k, d): unit right singular vectors V (rows);
  singular_values (k,): S; var (d,): the running per-feature (population) variance.
  """

  n: jax.Array
  mean: jax.Array
  components: jax.Array
  singular_values: jax.Array
  var: jax.Array

  @property
  def explained_variance_ratio(self) -> jax.Array:
    """S_i² / (N Σ_j var_j) (k,): the share of the total variance of every component."""
    return self.singular_values**2 / (self.n * jnp.sum(self.var))


def ipca_init(d: int, k: int, dtype: Any = jnp.float32) -> IncrementalPCA:
  """The empty state: no rows seen, k components of dimension d."""
  zeros = jnp.zeros
  return IncrementalPCA(
    zeros((), dtype),
    zeros((d,), dtype),
    zeros((k, d), dtype),
    zeros((k,), dtype),
    zeros((d,), dtype),
  )


def ipca_update(state: IncrementalPCA, batch: Any) -> IncrementalPCA:
  """One batch X (b, d): x̄ = mean X; M = [diag(S) V; X - x̄; √(N b/(N+b)) (μ - x̄)];
  S, V ← top-k SVD(M); μ ← (N μ + b x̄)/(N+b); var by Chan et al.'s pairwise update; N ← N+b.
  """
  x = jnp.asarray(batch).astype(state.mean.dtype)
  if x.ndim != 2 or x.shape[1] != state.mean.shape[0]:
    raise ValueError(f'batch must have shape (b, {state.mean.shape[0]}), got {tuple(x.shape)}')
  return _ipca_update(state, x)


@jax.jit
def _ipca_update(state: IncrementalPCA, x: jax.Array) -> IncrementalPCA:
  n, b = state.n, x.shape[0]
  total = n + b
  x_mean = jnp.mean(x, axis=0)
  delta = x_mean - state.mean
  x_var = jnp.mean((x - x_mean) ** 2, axis=0)
  var = (n * state.var + b * x_var + n * b / total * delta**2) / total
  stacked = jnp.concatenate(
    [
      state.singular_values[:, None] * state.components,
      x - x_mean,
      (jnp.sqrt(n * b / total) * (state.mean - x_mean))[None],
    ]
  )
  _, sv, vt = jnp.linalg.svd(stacked, full_matrices=False)
  k = state.components.shape[0]
  mean = (n * state.mean + b * x_mean) / total
  return IncrementalPCA(total, mean, vt[:k], sv[:k], var)


def eva_ranks(
  evrs: Mapping[str, Any], ranks: Mapping[str, int] | int, rho: float = 2.0
) -> dict[str, int]:
  """EVA's rank redistribution: pool evr_ℓ[:round(ρ r_ℓ)] over the layers, keep the global top
  R = Σ_ℓ r_ℓ; layer ℓ gets k_ℓ = #its kept entries (ties: earlier layer, lower index first).

  rho = 1 returns the input ranks (when every evr_ℓ has r_ℓ entries); rho >= 1.
  """
  if rho < 1:
    raise ValueError(f'rho={rho!r} must be >= 1')
  names = list(evrs)
  ranks = {name: ranks for name in names} if isinstance(ranks, int) else dict(ranks)
  missing = [name for name in names if name not in ranks]
  if missing:
    raise ValueError(f'ranks has no entry for layers {missing}')
  pool = []
  for layer, name in enumerate(names):
    values = np.asarray(evrs[name], dtype=np.float64)[: round(rho * ranks[name])]
    pool += [(-float(v), layer, i) for i, v in enumerate(values)]
  counts = dict.fromkeys(names, 0)
  for _, layer, _ in sorted(pool)[: sum(ranks[name] for name in names)]:
    counts[names[layer]] += 1
  return counts


def eva_init(
  components: Any,
  k: int,
  n_in: int,
  r_alloc: int,
  whiten: bool = False,
  singular_values: Any = None,
  dtype: Any = None,
) -> jax.Array:
  """EVA's lora_a (..., n_in, r_alloc): columns [:k] = components[:k]ᵀ (÷ √S[:k] with whiten,
  as PEFT), the rest 0; lora_b = 0 (r_alloc, m_out). components (..., k_max, n_in) rows.
  """
  comps = _util.as_compute(components)
  out = _util.out_dtype(components, dtype)
  if comps.ndim < 2 or comps.shape[-1] != n_in:
    raise ValueError(f'components must have shape (..., k_max, {n_in}), got {tuple(comps.shape)}')
  if not 0 <= k <= min(r_alloc, comps.shape[-2]):
    raise ValueError(f'k={k!r} must be in [0, min(r_alloc={r_alloc}, k_max={comps.shape[-2]})]')
  top = comps[..., :k, :]
  if whiten:
    if singular_values is None:
      raise ValueError('singular_values is required with whiten=True')
    top = top / jnp.sqrt(_util.as_compute(singular_values)[..., :k, None]).astype(top.dtype)
  lora_a = jnp.zeros(comps.shape[:-2] + (n_in, r_alloc), comps.dtype)
  return lora_a.at[..., :, :k].set(jnp.swapaxes(top, -1, -2)).astype(out)
