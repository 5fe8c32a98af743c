"""Poincaré-ball ops against independent float64 numpy implementations of their textbook
formulas (Ganea et al. 2018, arXiv 1805.09112; HNN++, arXiv 2006.08210), and the gyrovector
identities, on random points with norms up to (1 − 1e-6)/√c."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initlab import hyperbolic as hb
from initlab.hyperbolic import ball

CS = (1.0, 0.1, 2.5)
RADII = np.array([0.0, 1e-9, 0.1, 0.5, 0.9, 0.99, 1 - 1e-4, 1 - 1e-6])  # in units of 1/√c


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def points(rng, c, n=None, d=5, radii=RADII):
  """Random directions with norms radius/√c: every radius in `radii` appears."""
  n = len(radii) * 3 if n is None else n
  u = rng.normal(size=(n, d))
  u /= np.linalg.norm(u, axis=-1, keepdims=True)
  r = np.resize(radii, n)
  rng.shuffle(r)
  return u * r[:, None] / np.sqrt(c)


# ---- independent numpy references (textbook forms) ------------------------------------------


def np_norm(x):
  return np.linalg.norm(x, axis=-1, keepdims=True)


def np_lambda(x, c):
  return 2 / (1 - c * np.sum(x * x, -1, keepdims=True))


def np_add(x, y, c):
  xy, x2, y2 = (
    np.sum(x * y, -1, keepdims=True),
    np.sum(x * x, -1, keepdims=True),
    np.sum(y * y, -1, keepdims=True),
  )
  num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
  return num / (1 + 2 * c * xy + c**2 * x2 * y2)


def np_scalar(r, x, c):
  n = np_norm(x)
  return np.tanh(r * np.arctanh(np.sqrt(c) * n)) * x / (np.sqrt(c) * n)


def np_exp0(v, c):
  n = np_norm(v)
  return np.tanh(np.sqrt(c) * n) * v / (np.sqrt(c) * n)


def np_log0(y, c):
  n = np_norm(y)
  return np.arctanh(np.sqrt(c) * n) * y / (np.sqrt(c) * n)


def np_exp(x, v, c):
  n = np_norm(v)
  return np_add(x, np.tanh(np.sqrt(c) * np_lambda(x, c) * n / 2) * v / (np.sqrt(c) * n), c)


def np_log(x, y, c):
  w = np_add(-x, y, c)
  n = np_norm(w)
  return 2 / (np.sqrt(c) * np_lambda(x, c)) * np.arctanh(np.sqrt(c) * n) * w / n


def np_dist(x, y, c):
  return 2 / np.sqrt(c) * np.arctanh(np.sqrt(c) * np_norm(np_add(-x, y, c)))[..., 0]


def np_gyr(u, v, w, c):
  """The definition ⊖(u⊕v) ⊕ (u ⊕ (v ⊕ w)); linear in w, so w is scaled into the ball."""
  s = 0.1 / (np.sqrt(c) * np_norm(w))
  return np_add(-np_add(u, v, c), np_add(u, np_add(v, s * w, c), c), c) / s


def np_midpoint(xs, c, w):
  """½ ⊗ (Σ wᵢλᵢxᵢ / Σ wᵢ(λᵢ − 1)), ½ ⊗ via tanh/artanh; xs (N, ..., d), w (N, ...)."""
  lam = np_lambda(xs, c)
  mt = np.sum(w[..., None] * lam * xs, 0) / np.sum(w[..., None] * (lam - 1), 0)
  return np_scalar(0.5, mt, c)


def close(a, b, tol=1e-10):
  a, b = np.asarray(a), np.asarray(b)
  assert a.shape == b.shape, (a.shape, b.shape)
  np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# ---- against the references -----------------------------------------------------------------


@pytest.mark.parametrize('c', CS)
def test_ops_equal_numpy_float64(c):
  rng = np.random.default_rng(int(c * 10))
  x, y = points(rng, c), points(rng, c)
  v = rng.normal(size=x.shape) * rng.uniform(0.01, 3, size=(len(x), 1))
  r = rng.normal(size=len(x))
  assert hb.mobius_add(x, y, c).dtype == jnp.float64
  close(hb.lambda_x(x, c), np_lambda(x, c)[..., 0])
  close(hb.mobius_add(x, y, c), np_add(x, y, c))
  nz = np_norm(x)[:, 0] > 0  # the numpy formulas divide by ‖x‖
  close(hb.mobius_scalar(r[nz], x[nz], c), np_scalar(r[nz, None], x[nz], c))
  close(hb.expmap0(v, c), np_exp0(v, c))
  close(hb.logmap0(x[nz], c), np_log0(x[nz], c))
  close(hb.expmap(x, v, c), np_exp(x, v, c))
  # log/dist: with BOTH points within 1e-6 of the boundary, 1 − √c‖(−x) ⊕ y‖ ~ 1e-12 and any
  # float64 evaluation of artanh loses ~1e-16/1e-12 relative, so pair each point (all radii)
  # with one of norm ≤ 0.9/√c, in both orders
  y9 = points(rng, c, len(x), radii=RADII[(RADII <= 0.9) & (RADII > 0)])  # w ≠ 0 for numpy
  for a, b in ((x, y9), (y9, x)):
    close(hb.logmap(a, b, c), np_log(a, b, c))
    close(hb.dist(a, b, c), np_dist(a, b, c))


@pytest.mark.parametrize('c', CS)
def test_gyration_transport_midpoint_variance_equal_numpy(c):
  rng = np.random.default_rng(7)
  radii = RADII[RADII <= 0.9]  # the composed definition of gyr is itself ill-conditioned nearer
  u, v = points(rng, c, 12, radii=radii), points(rng, c, 12, radii=radii)
  w = rng.normal(size=u.shape)
  close(hb.gyration(u, v, w, c), np_gyr(u, v, w, c))
  close(hb.transport(u, v, w, c), np_lambda(u, c) / np_lambda(v, c) * np_gyr(v, -u, w, c))
  xs = np.stack([points(rng, c, 6) for _ in range(4)])  # (N=4, 6, d)
  wts = rng.uniform(0.1, 2.0, size=(4, 6))
  close(hb.midpoint(xs, c), np_midpoint(xs, c, np.ones((4, 6))))
  close(hb.midpoint(xs, c, weights=wts), np_midpoint(xs, c, wts))
  close(hb.midpoint(np.swapaxes(xs, 0, 1), c, weights=wts.T, axis=1), np_midpoint(xs, c, wts))
  mu = np_midpoint(xs, c, wts)
  var = np.sum(wts * np_dist(xs, mu[None], c) ** 2, 0) / np.sum(wts, 0)
  close(hb.frechet_variance(xs, c, weights=wts), var, 1e-9)
  close(
    hb.frechet_variance(xs, c, mu=mu[::-1]), np.mean(np_dist(xs, mu[None, ::-1], c) ** 2, 0), 1e-9
  )


def test_midpoint_code_form_agrees():
  """The gyromidpoint's code form γᵢ² = λᵢ/2, m̃ = Σγᵢ²xᵢ/(Σγᵢ² − N/2), m = γ_m̃/(1 + γ_m̃)·m̃
  (Poincaré ResNet, arXiv 2303.14027, §3) gives the same point."""
  rng = np.random.default_rng(3)
  xs = points(rng, 1.0, 9)
  g2 = np_lambda(xs, 1.0) / 2
  mt = np.sum(g2 * xs, 0) / (np.sum(g2) - len(xs) / 2)
  gm = 1 / np.sqrt(1 - np.sum(mt * mt))
  close(hb.midpoint(xs, 1.0), gm / (1 + gm) * mt, 1e-14)


# ---- identities ------------------------------------------------------------------------------


@pytest.mark.parametrize('c', CS)
def test_identities_up_to_the_boundary(c):
  rng = np.random.default_rng(11)
  x, y = points(rng, c, 64), points(rng, c, 64)
  assert np.max(np.sqrt(c) * np_norm(x)) == pytest.approx(1 - 1e-6)
  zero = np.zeros_like(x)
  close(hb.mobius_add(x, zero, c), x, 1e-15)
  close(hb.mobius_add(zero, x, c), x, 1e-15)
  close(hb.mobius_add(-x, x, c), zero, 1e-15)
  close(hb.expmap0(hb.logmap0(x, c), c), x, 1e-12)
  close(hb.mobius_add(-x, hb.mobius_add(x, y, c), c), y, 1e-8)  # left cancellation
  lam = np_lambda(x, c)[..., 0]
  log = np.asarray(hb.logmap(x, y, c))
  close(hb.dist(x, y, c), lam * np.linalg.norm(log, axis=-1), 1e-12)
  near = np.sqrt(c) * np_norm(x)[..., 0] < 0.99  # the exp/log round trip at x needs λ_x ≲ 1e2
  close(hb.expmap(x[near], log[near], c), y[near], 1e-9)
  close(hb.mobius_scalar(1.0, x, c), x, 1e-12)
  close(hb.mobius_scalar(2.0, x, c), hb.mobius_add(x, x, c), 1e-9)
  close(hb.dist(x, x, c), np.zeros(len(x)), 1e-7)


@pytest.mark.parametrize('c', CS)
def test_midpoint_and_transport_properties(c):
  rng = np.random.default_rng(5)
  x, y = (
    points(rng, c, 16, radii=RADII[RADII <= 0.99]),
    points(rng, c, 16, radii=RADII[RADII <= 0.99]),
  )
  m = hb.midpoint(np.stack([x, y]), c)
  # the midpoint of two points halves their geodesic
  close(hb.dist(m, x, c), hb.dist(x, y, c) / 2, 1e-10)
  close(hb.dist(m, y, c), hb.dist(x, y, c) / 2, 1e-10)
  # it commutes with left gyrotranslation a ⊕ ·, an isometry
  xs = np.stack([x, y, points(rng, c, 16, radii=RADII[RADII <= 0.99])])
  a = points(rng, c, 1, radii=[0.6])
  close(hb.midpoint(hb.mobius_add(a, xs, c), c), hb.mobius_add(a, hb.midpoint(xs, c), c), 1e-10)
  close(hb.midpoint(x[None], c), x, 1e-12)
  # transport keeps the Riemannian norm λ‖v‖ and maps log_x y to −log_y x
  v = rng.normal(size=x.shape)
  pt = hb.transport(x, y, v, c)
  close(
    hb.lambda_x(y, c) * np.linalg.norm(pt, axis=-1),
    hb.lambda_x(x, c) * np.linalg.norm(v, axis=-1),
    1e-10,
  )
  close(hb.transport(x, y, hb.logmap(x, y, c), c), -hb.logmap(y, x, c), 1e-9)


def test_float32_matches_float64():
  rng = np.random.default_rng(2)
  x, y = points(rng, 1.0, 16, radii=[0.0, 0.3, 0.9]), points(rng, 1.0, 16, radii=[0.5, 0.95])
  for f in (
    lambda a, b: hb.mobius_add(a, b, 1.0),
    lambda a, b: hb.dist(a, b, 1.0),
    lambda a, b: hb.logmap(a, b, 1.0),
    lambda a, b: hb.expmap0(a - b, 1.0),
  ):
    lo = f(x.astype(np.float32), y.astype(np.float32))
    assert lo.dtype == jnp.float32
    np.testing.assert_allclose(lo, f(x, y), rtol=2e-4, atol=2e-5)


def test_project_dtype_eps_and_curvature_helpers():
  assert hb.proj_eps(jnp.float32) == 4e-3 and hb.proj_eps(jnp.float64) == 1e-5
  for dt, eps in ((np.float32, 4e-3), (np.float64, 1e-5)):
    x = np.array([[3.0, 4.0], [0.1, 0.0], [0.0, 0.0]], dt)
    p = np.asarray(hb.project(x, 4.0))
    assert p.dtype == dt
    np.testing.assert_allclose(np.linalg.norm(p[0]), (1 - eps) / 2, rtol=1e-6)
    np.testing.assert_array_equal(p[1:], x[1:])
  c = hb.softplus_curvature(jnp.float64(-30.0))
  assert c > 0
  close(hb.softplus_curvature(hb.softplus_inverse(0.1)), 0.1, 1e-14)


@pytest.mark.parametrize(
  'bad, match',
  [
    (lambda: hb.mobius_add(np.ones(2, np.int32), np.ones(2, np.int32), 1.0), 'float32 or float64'),
    (lambda: hb.expmap0(np.ones(2, np.float16), 1.0), 'valid dtypes'),
    (lambda: hb.expmap0(np.ones(2), -1.0), 'c must be > 0'),
    (lambda: hb.expmap0(np.ones(2), np.ones(2)), 'c must be a scalar'),
    (lambda: hb.midpoint(np.ones((3, 2)) * 0.1, 1.0, axis=1), 'axis=1 must name a batch axis'),
    (lambda: ball.frechet_mean(np.ones((3, 2)) * 0.1, 1.0, iters=-1), 'iters=-1 must be'),
  ],
)
def test_bad_input_errors(bad, match):
  with pytest.raises(ValueError, match=match):
    bad()


def np_frechet_mean(xs, c, w):
  """argmin_μ Σᵢ wᵢ d(xᵢ, μ)² by BFGS over μ = exp₀(v) (scipy, float64), from the origin."""
  from scipy.optimize import minimize

  cost = lambda v: np.sum(w * np_dist(xs, np_exp0(v[None], c), c) ** 2)
  v = minimize(cost, np.full(xs.shape[-1], 1e-3), method='BFGS', options={'gtol': 1e-13}).x
  return np_exp0(v[None], c)[0]


@pytest.mark.parametrize('c', [1.0, 0.1])
def test_frechet_mean_karcher_flow_minimizes_squared_distances(c):
  """Karcher flow (from the gyromidpoint) reaches the float64 minimizer of Σ wᵢ d(xᵢ, μ)², which
  the gyromidpoint itself misses (they differ for spread-out points), batched and weighted."""
  rng = np.random.default_rng(7)
  xs = points(rng, c, n=4 * 12, d=3, radii=[0.2, 0.6, 0.9, 0.97]).reshape(4, 12, 3)
  w = rng.uniform(0.2, 2.0, size=(4, 12))
  mu = ball.frechet_mean(xs, c, weights=w, axis=1, iters=20)
  assert mu.shape == (4, 3)
  for b in range(4):
    ref = np_frechet_mean(xs[b], c, w[b])
    close(mu[b], ref, tol=1e-6)  # BFGS stops at ~1e-8 in μ (the cost is flat to 1e-16 there)
    cost = lambda m, b=b: np.sum(w[b] * np_dist(xs[b], np.asarray(m)[None], c) ** 2)
    assert cost(mu[b]) <= cost(ref) * (1 + 1e-13)
    assert np.max(np.abs(np.asarray(hb.midpoint(xs[b], c, w[b])) - ref)) > 1e-3
  close(ball.frechet_mean(xs, c, axis=1, iters=0), hb.midpoint(xs, c, axis=1), tol=1e-15)
