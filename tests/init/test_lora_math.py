"""initlab.init.lora: the math of the LoRA initializations in the Flax layout, in float64.

K (n_in, m_out) = (32, 48), r = 4, alpha = 8 (s = 2) unless a test says otherwise; every check
is one a plausible bug (wrong side of a transpose, a missing √, s not applied) breaks.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from initlab.init import lora

N_IN, M_OUT, R, ALPHA = 32, 48, 4, 8
S = ALPHA / R
EXACT = 1e-12
PUBLISHED_NF4 = [
  -1.0,
  -0.6961928009986877,
  -0.5250730514526367,
  -0.39491748809814453,
  -0.28444138169288635,
  -0.18477343022823334,
  -0.09105003625154495,
  0.0,
  0.07958029955625534,
  0.16093020141124725,
  0.24611230194568634,
  0.33791524171829224,
  0.44070982933044434,
  0.5626170039176941,
  0.7229568362236023,
  1.0,
]


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def _kernel(seed=0, shape=(N_IN, M_OUT)):
  return np.random.default_rng(seed).normal(size=shape)


def _spectrum(decay, seed=0, shape=(N_IN, M_OUT)):
  """A matrix with singular values decay**i (i = 0, 1, ...) and random singular vectors."""
  rng = np.random.default_rng(seed)
  k = min(shape)
  u = np.linalg.qr(rng.normal(size=(shape[0], k)))[0]
  v = np.linalg.qr(rng.normal(size=(shape[1], k)))[0]
  return (u * decay ** np.arange(k)) @ v.T


def _part(m, idx):
  """The part of m on its singular triplets idx (numpy SVD)."""
  u, sv, vt = np.linalg.svd(m, full_matrices=False)
  return (u[:, idx] * sv[idx]) @ vt[idx]


def _np(*xs):
  return [np.asarray(x) for x in xs]


def _covariance(seed=1):
  """A CorDA covariance of correlated, anisotropic inputs (64 samples of 8 tokens)."""
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(N_IN, N_IN)) * np.linspace(2.0, 0.1, N_IN)
  return lora.corda_covariance(rng.normal(size=(64, 8, N_IN)) @ mix)


def _same_up_to_sign(x, y, axis):
  """x equals y up to a sign per column (axis=0 sums over rows) or per row (axis=1)."""
  sign = np.sign(np.sum(x * y, axis=axis, keepdims=True))
  np.testing.assert_allclose(x * sign, y, atol=1e-10, rtol=0)


# ------------------------------------------------------------------------------------------
# Output preservation and the SVD schemes.


def _factors(method):
  k, key = _kernel(), jax.random.key(0)
  if method in ('pissa', 'milora', 'olora', 'loldu'):
    return lora.decompose(k, R, method, alpha=ALPHA)
  if method == 'pissa_rsvd':
    return lora.decompose(k, R, 'pissa', alpha=ALPHA, key=key, niter=2)
  if method.startswith('corda'):
    return lora.corda(k, _covariance(), R, mode=method[-3:], alpha=ALPHA)
  return lora.lora_ga(k, _kernel(5), R, alpha=ALPHA, key=key)


@pytest.mark.parametrize(
  'method', ['pissa', 'pissa_rsvd', 'milora', 'olora', 'loldu', 'corda_ipm', 'corda_kpm', 'lora_ga']
)
def test_residual_plus_adapter_is_the_kernel(method):
  residual, a, b = _np(*_factors(method))
  assert residual.dtype == a.dtype == b.dtype == np.float64
  assert (residual.shape, a.shape, b.shape) == ((N_IN, M_OUT), (N_IN, R), (R, M_OUT))
  assert np.abs(residual + S * a @ b - _kernel()).max() <= EXACT
  assert np.abs(S * a @ b).max() > 0.1  # Not trivially preserving.


def test_pissa_is_the_best_rank_r_part_with_balanced_factors():
  k = _kernel()
  residual, a, b = _np(*lora.pissa(k, R, alpha=ALPHA))
  np.testing.assert_allclose(S * a @ b, _part(k, slice(0, R)), atol=1e-12)
  np.testing.assert_allclose(residual, _part(k, slice(R, None)), atol=1e-12)
  # a = U_r √(S_r/s), b = √(S_r/s) V_rᵀ: aᵀa = b bᵀ = diag(S_r / s) (a missing √ or s breaks it).
  top = np.linalg.svd(k, compute_uv=False)[:R] / S
  np.testing.assert_allclose(a.T @ a, np.diag(top), atol=1e-12)
  np.testing.assert_allclose(b @ b.T, np.diag(top), atol=1e-12)


def test_milora_is_the_bottom_rank_r_part():
  k = _kernel()
  residual, a, b = _np(*lora.milora(k, R, alpha=ALPHA))
  np.testing.assert_allclose(S * a @ b, _part(k, slice(N_IN - R, None)), atol=1e-12)
  np.testing.assert_allclose(residual, _part(k, slice(0, N_IN - R)), atol=1e-12)
  bottom = np.linalg.svd(k, compute_uv=False)[-R:] / S
  np.testing.assert_allclose(a.T @ a, np.diag(bottom), atol=1e-12)


def test_randomized_pissa_is_close_to_the_exact_top_r():
  """Singular values 0.5^i: subspace iteration (niter=4) converges like (σ_{r+1}/σ_r)^(2·4)."""
  k = _spectrum(0.5)
  residual, a, b = _np(*lora.pissa(k, R, alpha=ALPHA, key=jax.random.key(3), niter=4))
  top = _part(k, slice(0, R))
  assert np.linalg.norm(S * a @ b - top) <= 1e-3 * np.linalg.norm(top)
  assert np.abs(residual + S * a @ b - k).max() <= EXACT


def test_olora_factors_are_the_qr_of_w():
  k = _kernel()
  residual, a, b = _np(*lora.olora(k, R, alpha=ALPHA))
  np.testing.assert_allclose(b @ b.T, np.eye(R), atol=1e-12)  # Orthonormal rows of Q[:, :r]ᵀ.
  assert np.abs(np.triu(a, 1)).max() == 0  # a = R[:r]ᵀ: R is upper triangular.
  q, r = np.linalg.qr(k.T)  # W = Kᵀ = Q R.
  _same_up_to_sign(b.T, q[:, :R], axis=0)
  _same_up_to_sign(a.T, r[:R], axis=1)
  np.testing.assert_allclose(residual, k - S * a @ b, atol=1e-12)


def test_orthogonal_product_is_zero_with_nonzero_factors():
  residual, a, b = _np(*lora.orthogonal(_kernel(), R, alpha=ALPHA, key=jax.random.key(1)))
  assert np.abs(a @ b).max() <= 1e-15
  assert np.abs(a).max() > 0.05 and np.abs(b).max() > 0.05
  # a = G₁ Q[0::2] / 10 and b = (G₂ Q[1::2])ᵀ / 10 have rank r/2 each, in orthogonal subspaces.
  assert np.linalg.matrix_rank(a) == R // 2 and np.linalg.matrix_rank(b) == R // 2
  assert np.linalg.matrix_rank(np.concatenate([a, b.T])) == R
  np.testing.assert_array_equal(residual, _kernel())


def test_default_and_gaussian_statistics():
  """512 x 64 entries: the sample std is within 3% of the formula (its error is ~0.4%)."""
  n, m, r = 512, 96, 64
  k = _kernel(shape=(n, m))
  residual, a, b = _np(*lora.default(k, r, key=jax.random.key(0)))
  bound = 1 / np.sqrt(n)
  assert np.abs(a).max() <= bound and np.abs(a).max() > 0.99 * bound
  assert abs(a.std() / (bound / np.sqrt(3)) - 1) < 0.03
  assert not b.any() and a.shape == (n, r) and b.shape == (r, m)
  np.testing.assert_array_equal(residual, k)
  residual, a, b = _np(*lora.gaussian(k, r, key=jax.random.key(0)))
  assert abs(a.std() * r - 1) < 0.03 and abs(a.mean()) < 3e-4
  assert not b.any()
  np.testing.assert_array_equal(residual, k)


# ------------------------------------------------------------------------------------------
# CorDA, LoRA-GA, LoRA-SB.


def test_corda_covariance_normalizations():
  x = np.array([[1.0, -3.0], [2.0, 1.0], [-4.0, -2.0]])
  outer = lambda rows: sum(np.outer(v, v) for v in rows) / 3
  # 'peft': X / |max X| (sample 3: max -2, so it is divided by 2); 'absmax': X / max|X|.
  peft = outer([x[0] / 1, x[1] / 2, x[2] / 2])
  absmax = outer([x[0] / 3, x[1] / 2, x[2] / 4])
  np.testing.assert_allclose(lora.corda_covariance(x), peft, atol=1e-15)
  np.testing.assert_allclose(lora.corda_covariance(x, 'absmax'), absmax, atol=1e-15)
  np.testing.assert_allclose(lora.corda_covariance(x, 'none'), outer(x), atol=1e-15)
  tokens = np.random.default_rng(0).normal(size=(5, 7, 3))
  expected = sum(t.T @ t / np.abs(t.max()) ** 2 for t in tokens) / 5
  np.testing.assert_allclose(lora.corda_covariance(tokens), expected, atol=1e-14)


def test_corda_decomposition_is_exact_and_ipm_keeps_the_top_part():
  k, c = _kernel(), _covariance()
  u, sv, vt = _np(*lora.corda_svd(k, c))
  assert np.abs((u * sv) @ vt - k.T).max() <= 1e-10  # W = U Σ (V̂ᵀ C̃⁻¹).
  np.testing.assert_allclose(u.T @ u, np.eye(N_IN), atol=1e-12)
  assert np.all(np.diff(sv) <= 0)
  # The SVD is of W C̃, C̃ = C + 0.01·mean(diag C)·I (the inverse is accurate: no doubling).
  c = np.asarray(c)
  damped = c + 0.01 * np.mean(np.diag(c)) * np.eye(N_IN)
  assert np.linalg.norm(damped @ np.linalg.inv(damped) - np.eye(N_IN)) < 0.05
  _, sv_ref, vt_ref = np.linalg.svd(k.T @ damped, full_matrices=False)
  np.testing.assert_allclose(sv, sv_ref, rtol=1e-12)
  _same_up_to_sign(vt, vt_ref @ np.linalg.inv(damped), axis=1)
  _, a, b = _np(*lora.corda(k, c, R, alpha=ALPHA))
  np.testing.assert_allclose(S * a @ b, ((u[:, :R] * sv[:R]) @ vt[:R]).T, atol=1e-12)
  # A = (Σ_r/s)^½ V_rᵀ, B = U_r (Σ_r/s)^½: b's rows are the scaled left vectors of W C̃.
  np.testing.assert_allclose(b @ b.T, np.diag(sv[:R] / S), atol=1e-12)


def test_corda_kpm_with_identity_covariance_is_milora():
  """C = I: C̃ = 1.01 I (λ = 0.01, no doubling), so s·a@b and the residual equal MiLoRA's
  exactly, and the factors are rebalanced by √1.01: a = a_MiLoRA / √1.01, b = b_MiLoRA · √1.01."""
  k = _kernel()
  res_c, a_c, b_c = _np(*lora.corda(k, np.eye(N_IN), R, mode='kpm', alpha=ALPHA))
  res_m, a_m, b_m = _np(*lora.milora(k, R, alpha=ALPHA))
  np.testing.assert_allclose(S * a_c @ b_c, S * a_m @ b_m, atol=1e-12)
  np.testing.assert_allclose(res_c, res_m, atol=1e-12)
  _same_up_to_sign(a_c * np.sqrt(1.01), a_m, axis=0)
  _same_up_to_sign(b_c / np.sqrt(1.01), b_m, axis=1)


@pytest.mark.parametrize('variant', ['reference', 'peft'])
@pytest.mark.parametrize(
  'direction, idx_a, idx_b',
  [
    ('ArB2r', [0, 1, 2, 3], [4, 5, 6, 7]),
    ('A2rBr', [4, 5, 6, 7], [0, 1, 2, 3]),
    ('ArBr', [1, 3, 5, 7], [0, 2, 4, 6]),
  ],
)
def test_lora_ga_first_step_lies_in_the_top_2r_gradient_subspace(variant, direction, idx_a, idx_b):
  """G = grad (Flax) = L Σ Rᵀ. A GD step on (a, b) moves the adapted kernel K + s·a@b by
  ΔK = -η s² (a aᵀ G + G bᵀ b): inside span(L_2r) on the left and span(R_2r) on the right."""
  k, grad = _kernel(), _spectrum(0.7, seed=4)
  residual, a, b = _np(
    *lora.lora_ga(
      k, grad, R, alpha=ALPHA, key=jax.random.key(2), variant=variant, direction=direction
    )
  )
  update = -(S**2) * (a @ a.T @ grad + grad @ b.T @ b)
  left, sv, right_t = np.linalg.svd(grad, full_matrices=False)
  out_left = update - left[:, : 2 * R] @ (left[:, : 2 * R].T @ update)
  out_right = update - (update @ right_t[: 2 * R].T) @ right_t[: 2 * R]
  assert np.linalg.norm(update) > 1e-3
  assert np.linalg.norm(out_left) <= 1e-6 * np.linalg.norm(update)
  assert np.linalg.norm(out_right) <= 1e-6 * np.linalg.norm(update)
  # A = V[:, idx_a]ᵀ: lora_a's columns are grad's left vectors idx_a; lora_b's rows the right.
  c = M_OUT**0.25 / 16**0.5
  _same_up_to_sign(a * (1 if variant == 'peft' else 1 / c), left[:, idx_a], axis=0)
  b_scale = c * (sv[idx_b][:, None] if variant == 'peft' else 1)
  np.testing.assert_allclose(np.abs(np.sum(b / b_scale * right_t[idx_b], axis=1)), 1, atol=1e-6)
  if variant == 'reference':  # 'stable': ΔK = -s² c² · (rank-2r part of G).
    np.testing.assert_allclose(update, -(S**2) * c**2 * _part(grad, slice(0, 2 * R)), atol=1e-6)
  assert np.abs(residual + S * a @ b - k).max() <= EXACT


def test_lora_ga_scales():
  k, grad, key = _kernel(), _spectrum(0.7, seed=4), jax.random.key(2)
  _, a_unit, b_unit = _np(*lora.lora_ga(k, grad, R, alpha=ALPHA, key=key, scale='unit'))
  _, a_gd, b_gd = _np(*lora.lora_ga(k, grad, R, alpha=ALPHA, key=key, scale='gd'))
  np.testing.assert_allclose(a_unit.T @ a_unit, np.eye(R), atol=1e-10)
  np.testing.assert_allclose(a_gd * S, a_unit, atol=1e-12)
  np.testing.assert_allclose(b_gd * S, b_unit, atol=1e-12)


def test_lora_sb_is_the_best_rank_r_part_of_the_sign_step():
  """grad = P Q (P: one-hot groups of rows, r groups) makes sign(grad) exactly rank r."""
  rng = np.random.default_rng(6)
  groups = np.eye(R)[rng.integers(0, R, N_IN)]
  groups[:R] = np.eye(R)  # Every group present.
  grad = groups @ rng.normal(size=(R, M_OUT))
  step = -0.01 * np.sign(grad)
  a, r_matrix, b = _np(*lora.lora_sb(grad, R, lr_eff=0.01, key=jax.random.key(0)))
  assert (a.shape, r_matrix.shape, b.shape) == ((N_IN, R), (R, R), (R, M_OUT))
  np.testing.assert_allclose(a @ r_matrix @ b, step, atol=1e-12)
  np.testing.assert_allclose(a @ r_matrix @ b, _part(step, slice(0, R)), atol=1e-12)
  np.testing.assert_allclose(a.T @ a, np.eye(R), atol=1e-12)
  np.testing.assert_allclose(b @ b.T, np.eye(R), atol=1e-12)
  diag = np.diag(r_matrix)
  np.testing.assert_array_equal(r_matrix, np.diag(diag))
  assert np.all(diag > 0) and np.all(np.diff(diag) <= 0)


# ------------------------------------------------------------------------------------------
# LoLDU, LoftQ and the quantizer.


def test_loldu_factors_reproduce_w_with_scipy_pivoting():
  k = _kernel()
  w = k.T
  full = lora.loldu_factors(k, N_IN)  # Full rank: min(n_in, m_out) = 32.
  perm, lower, z, upper = _np(full.perm, full.lower, full.z, full.upper)
  np.testing.assert_array_equal(np.sort(perm), np.arange(M_OUT))
  p = np.eye(M_OUT)[perm]  # P @ X = X[perm].
  np.testing.assert_allclose(p @ lower @ np.diag(z) @ upper, w, atol=1e-12)
  np.testing.assert_allclose(np.asarray(full.weight()), w, atol=1e-12)  # σ = 1.
  p_ref, l_ref, u_ref = scipy.linalg.lu(w)  # The same partial pivoting.
  np.testing.assert_array_equal(p, p_ref)
  np.testing.assert_allclose(lower, l_ref, atol=1e-12)
  np.testing.assert_allclose(z, np.diag(u_ref), atol=1e-12)
  np.testing.assert_allclose(np.diag(upper), 1, atol=1e-15)
  assert np.abs(np.tril(upper, -1)).max() == 0 and np.abs(np.triu(lower, 1)).max() == 0
  # Rank r: σ = alpha/r = s, lora_a = (diag(z) U_r)ᵀ, lora_b = (P L_r)ᵀ.
  f = lora.loldu_factors(k, R, alpha=ALPHA)
  assert float(f.sigma) == S
  residual, a, b = _np(*lora.loldu(k, R, alpha=ALPHA))
  np.testing.assert_allclose(a, (z[:R, None] * upper[:R]).T, atol=1e-12)
  np.testing.assert_allclose(b, (p @ lower[:, :R]).T, atol=1e-12)
  np.testing.assert_allclose(S * a @ b, np.asarray(f.weight()).T, atol=1e-12)
  np.testing.assert_allclose(residual.T, w - S * p @ lower[:, :R] @ np.diag(z[:R]) @ upper[:R])


def test_loftq_alternation_reduces_the_quantization_error():
  k = _kernel()
  base = np.linalg.norm(k - np.asarray(lora.fake_quantize(k.T)).T)
  errors = []
  for num_iter in range(1, 6):
    q, a, b = _np(*lora.loftq(k, R, alpha=ALPHA, num_iter=num_iter))
    errors.append(np.linalg.norm(k - (q + S * a @ b)))
  assert errors[0] < base
  assert all(e2 <= e1 * (1 + 1e-9) for e1, e2 in itertools.pairwise(errors)), errors
  assert errors[-1] < errors[0]
  # T = 1: Q = Q(K) (blocks along W = Kᵀ's rows, bitsandbytes' order) and s·a@b is the best
  # rank-r part of K - Q(K).
  q, a, b = _np(*lora.loftq(k, R, alpha=ALPHA))
  np.testing.assert_allclose(q, np.asarray(lora.fake_quantize(k.T)).T, atol=0)
  assert np.any(q != np.asarray(lora.fake_quantize(k)))  # Which the kernel's own order is not.
  np.testing.assert_allclose(S * a @ b, _part(k - q, slice(0, R)), atol=1e-12)


def test_loftq_peft_scaling_is_worse_unless_s_is_one():
  """PEFT's factors miss 1/s: with T = 1, Q = Q(K) either way and PEFT's adapter is s·T for the
  rank-r part T of E = K - Q, so ‖E - s·T‖² = ‖E - T‖² + (s - 1)²‖T‖² (T ⟂ E - T)."""
  k = _kernel()

  def run(alpha, compat, num_iter):
    q, a, b = _np(
      *lora.loftq(k, R, alpha=alpha, num_iter=num_iter, compat_peft_loftq_scaling=compat)
    )
    return q, alpha / R * a @ b, np.linalg.norm(k - (q + alpha / R * a @ b))

  q, adapter, err = run(ALPHA, False, 1)
  q_peft, adapter_peft, err_peft = run(ALPHA, True, 1)
  np.testing.assert_array_equal(q, q_peft)
  np.testing.assert_allclose(adapter_peft, S * adapter, atol=1e-12)
  np.testing.assert_allclose(err_peft**2, err**2 + (S - 1) ** 2 * np.linalg.norm(adapter) ** 2)
  assert run(ALPHA, True, 2)[2] > 1.2 * run(ALPHA, False, 2)[2]  # Still worse after T = 2.
  for num_iter in (1, 2):  # s = 1: the same factors.
    for x, y in zip(run(R, True, num_iter), run(R, False, num_iter)):
      np.testing.assert_array_equal(x, y)


def test_nf4_levels_are_the_published_values():
  levels = lora.nf4_levels()
  np.testing.assert_allclose(levels, PUBLISHED_NF4, atol=1e-6, rtol=0)
  assert levels[7] == 0 and (levels > 0).sum() == 8 and (levels < 0).sum() == 7


@pytest.mark.parametrize('method, num_bits', [('nf4', 4), ('int', 4), ('int', 3)])
def test_quantize_round_trip_is_the_nearest_level(method, num_bits):
  x = np.random.default_rng(2).normal(size=(6, 64)) * np.linspace(0.1, 3, 64)
  codes, absmax = lora.quantize(x, num_bits, method, block_size=32)
  assert codes.dtype == jnp.uint8 and codes.shape == (12, 32) and absmax.shape == (12,)
  back = np.asarray(lora.dequantize(codes, absmax, x.shape, num_bits, method))
  blocks = x.reshape(12, 32)
  np.testing.assert_allclose(np.asarray(absmax), np.abs(blocks).max(axis=1), atol=0)
  levels = lora.quant.levels(num_bits, method)
  candidates = levels[None, None, :] * np.asarray(absmax)[:, None, None]
  nearest = np.abs(blocks[..., None] - candidates).min(axis=-1)
  np.testing.assert_allclose(np.abs(blocks - back.reshape(12, 32)), nearest, atol=1e-12)
  half_gap = np.diff(levels).max() / 2
  assert np.all(np.abs(blocks - back.reshape(12, 32)) <= half_gap * np.asarray(absmax)[:, None])
  np.testing.assert_array_equal(lora.fake_quantize(x, num_bits, method, 32), back)
  if method == 'int':
    np.testing.assert_allclose(
      levels, np.arange(-(2 ** (num_bits - 1) - 1), 2 ** (num_bits - 1)) / (2 ** (num_bits - 1) - 1)
    )


# ------------------------------------------------------------------------------------------
# EVA.


def test_incremental_pca_matches_the_exact_pca():
  rng = np.random.default_rng(7)
  d, k = 16, 4
  scales = np.concatenate([[10.0, 7.0, 5.0, 3.0], np.full(d - 4, 0.2)])
  rotation = np.linalg.qr(rng.normal(size=(d, d)))[0]
  x = rng.normal(size=(200, d)) * scales @ rotation + rng.normal(size=d)
  components, ratio = _np(*lora.pca_components(x, k))
  for keep, cos_tol in ((k, 1e-3), (d, 1e-10)):  # Truncated (approximate) and full (exact).
    state = lora.ipca_init(d, keep, jnp.float64)
    for batch in np.split(x, 5):
      state = lora.ipca_update(state, batch)
    cos = np.abs(np.sum(np.asarray(state.components)[:k] * components, axis=1))
    assert np.all(cos > 1 - cos_tol), cos
    np.testing.assert_allclose(state.explained_variance_ratio[:k], ratio, rtol=10 * cos_tol)
    np.testing.assert_allclose(state.mean, x.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(state.var, x.var(axis=0), atol=1e-12)
    assert float(state.n) == 200
  centred = x - x.mean(axis=0)
  sv = np.linalg.svd(centred, compute_uv=False)
  np.testing.assert_allclose(ratio, sv[:k] ** 2 / (sv**2).sum(), atol=1e-14)


def test_eva_ranks_pools_the_explained_variance():
  evrs = {'q': [0.5, 0.3, 0.1, 0.05], 'v': [0.4, 0.08, 0.07, 0.06]}
  # rho=2: pools q[:4] and v[:4]; the top 4 are 0.5 (q), 0.4 (v), 0.3 (q), 0.1 (q).
  assert lora.eva_ranks(evrs, 2, rho=2.0) == {'q': 3, 'v': 1}
  assert lora.eva_ranks(evrs, 2, rho=1.0) == {'q': 2, 'v': 2}
  # q's cap round(2·1) = 2 keeps 0.1 out: the top 4 of [0.5, 0.3] + v[:4] are .5, .4, .3, .08.
  assert lora.eva_ranks(evrs, {'q': 1, 'v': 3}, rho=2.0) == {'q': 2, 'v': 2}
  assert lora.eva_ranks(evrs, {'q': 1, 'v': 3}, rho=1.0) == {'q': 1, 'v': 3}


def test_eva_init_puts_the_components_in_the_first_columns():
  rng = np.random.default_rng(8)
  components, sv = rng.normal(size=(6, N_IN)), np.array([9.0, 4.0, 1.0, 0.5, 0.2, 0.1])
  a = np.asarray(lora.eva_init(components, 3, N_IN, 5))
  np.testing.assert_array_equal(a[:, :3], components[:3].T)
  assert a.shape == (N_IN, 5) and not a[:, 3:].any()
  a = np.asarray(lora.eva_init(components, 3, N_IN, 5, whiten=True, singular_values=sv))
  np.testing.assert_allclose(a[:, :3], components[:3].T / np.sqrt(sv[:3]), atol=1e-15)


# ------------------------------------------------------------------------------------------
# The randomized SVD, batching, dtypes and errors.


def test_svd_lowrank_with_full_q_reproduces_the_matrix():
  shape = (20, 12)  # (The other orientation, rows < cols, runs in the PiSSA tests.)
  m = _kernel(9, shape)
  q = min(shape)
  u, sv, v = _np(*lora.svd_lowrank(m, q, 1, jax.random.key(0)))
  assert (u.shape, sv.shape, v.shape) == ((shape[0], q), (q,), (shape[1], q))
  np.testing.assert_allclose((u * sv) @ v.T, m, atol=1e-12)
  np.testing.assert_allclose(sv, np.linalg.svd(m, compute_uv=False), atol=1e-12)
  np.testing.assert_allclose(u.T @ u, np.eye(q), atol=1e-12)
  np.testing.assert_allclose(v.T @ v, np.eye(q), atol=1e-12)


def _call(method, k, i, key):
  """`method` on the stack k (i None) or on its layer i (k = stack[i], key = its split key)."""
  pick = lambda x: x if i is None else x[i]
  return {
    'pissa': lambda: lora.pissa(k, R, alpha=ALPHA),
    'loldu': lambda: lora.loldu(k, R, alpha=ALPHA),
    'corda': lambda: lora.corda(
      k, pick(np.stack([_covariance(seed) for seed in range(3)])), R, alpha=ALPHA
    ),
    'lora_ga': lambda: lora.lora_ga(k, pick(_kernel(11, (3, N_IN, M_OUT))), R, key=key),
  }[method]()


@pytest.mark.parametrize('method', ['pissa', 'loldu', 'corda', 'lora_ga'])
def test_stacked_kernels_equal_separate_calls(method):
  """Leading axes: one call; layer i uses key jax.random.split(key, 3)[i] (LoRA-GA's rsvd)."""
  stack, key = _kernel(10, (3, N_IN, M_OUT)), jax.random.key(4)
  together = _np(*_call(method, stack, None, key))
  for i, layer_key in enumerate(jax.random.split(key, 3)):
    for x, y in zip(together, _np(*_call(method, stack[i], i, layer_key))):
      assert x.shape[0] == 3
      np.testing.assert_allclose(x[i], y, atol=1e-12, rtol=0)


def test_low_precision_kernels():
  """bf16 in: math in float32, factors in bf16, residual = bf16(K - s·a@b) from the bf16 factors."""
  k32 = jnp.asarray(_kernel(), jnp.float32)
  kernel = k32.astype(jnp.bfloat16)
  residual, a, b = lora.pissa(kernel, R, alpha=ALPHA)
  assert residual.dtype == a.dtype == b.dtype == jnp.bfloat16
  expected = kernel.astype(jnp.float32) - S * a.astype(jnp.float32) @ b.astype(jnp.float32)
  np.testing.assert_array_equal(residual, expected.astype(jnp.bfloat16))
  residual, a, b = lora.olora(_kernel(), R, alpha=ALPHA, dtype=jnp.float32)
  assert residual.dtype == a.dtype == jnp.float32
  assert (
    np.abs(
      np.asarray(residual, np.float64)
      + S * np.asarray(a, np.float64) @ np.asarray(b, np.float64)
      - _kernel()
    ).max()
    < 1e-5
  )


def test_decompose_dispatches_with_options_and_rslora():
  key = jax.random.key(0)
  for method in lora.METHODS:  # (The random schemes on the statistics test's kernel.)
    k, r = (_kernel(shape=(512, 96)), 64) if method in ('default', 'gaussian') else (_kernel(), R)
    out = _np(*lora.decompose(k, r, method, alpha=ALPHA, key=key))
    direct = _np(*getattr(lora, method)(k, r, alpha=ALPHA, key=key))
    assert [x.shape for x in out] == [k.shape, (k.shape[0], r), (r, k.shape[1])]
    for x, y in zip(out, direct):
      np.testing.assert_array_equal(x, y)
  q, a, b = _np(*lora.decompose(_kernel(), R, 'loftq', method='int', num_bits=4))
  np.testing.assert_array_equal(q, np.asarray(lora.fake_quantize(_kernel().T, 4, 'int')).T)
  _, a, b = _np(*lora.decompose(_kernel(), R, 'pissa', alpha=ALPHA, rslora=True))
  np.testing.assert_allclose(ALPHA / np.sqrt(R) * a @ b, _part(_kernel(), slice(0, R)), atol=1e-12)


@pytest.mark.parametrize(
  'call, words',
  [
    (lambda k: lora.decompose(k, R, 'svd'), ['method', "'pissa'", "'loftq'"]),
    (lambda k: lora.decompose(k, 33, 'pissa'), ['rank=33', '(32, 48)']),
    (lambda k: lora.decompose(k, 0, 'olora'), ['rank=0']),
    (lambda k: lora.decompose(k, 3, 'orthogonal', key=jax.random.key(0)), ['rank=3', 'even']),
    (lambda k: lora.decompose(k, R, 'pissa', nitre=2), ["'nitre'", 'niter']),
    (lambda k: lora.decompose(k, R, 'olora', niter=2), ["'niter'", 'none']),
    (lambda k: lora.decompose(k, R, 'default'), ['key']),
    (lambda k: lora.decompose(k, R, 'pissa', niter=2), ['key']),
    (lambda k: lora.decompose(k, R, 'loftq', block_size=100), ['block_size=100', '1536']),
    (lambda k: lora.decompose(k, R, 'loftq', method='nf3'), ['method', "'nf4'", "'int'"]),
    (lambda k: lora.decompose(k, R, 'loftq', num_bits=3), ['num_bits=3']),
    (lambda k: lora.corda(k, np.eye(N_IN), R, mode='xpm'), ['mode', "'ipm'", "'kpm'"]),
    (lambda k: lora.corda(k, np.eye(M_OUT), R), ['covariance']),
    (lambda k: lora.lora_ga(k, k, R, key=jax.random.key(0), direction='AB'), ['direction']),
    (lambda k: lora.lora_ga(k, k, 17, key=jax.random.key(0)), ['rank=17']),
    (lambda k: lora.lora_ga(k, k, R), ['key']),
    (lambda k: lora.quantize(k[:3, :5], block_size=4), ['block_size=4', '15']),
    (lambda k: lora.eva_ranks({'q': [0.5]}, 1, rho=0.5), ['rho']),
  ],
)
def test_bad_input_names_the_option(call, words):
  with pytest.raises(ValueError) as info:
    call(_kernel())
  message = str(info.value)
  assert '\n' not in message
  for word in words:
    assert word in message, message
