"""GG shape estimation by moment matching (and ML) and the fit report."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from initlab.init import gg


def test_moment_ratio_reference_values():
  with jax.enable_x64(True):
    for beta, r in ((0.5, 10 / 3), (1.0, 2.0), (2.0, math.pi / 2)):
      assert float(gg.moment_ratio(beta)) == pytest.approx(r, rel=1e-12)
    for beta, r in ((0.1, 216.83), (1.5, 1.6981), (2.99, 1.4617)):
      assert float(gg.moment_ratio(beta)) == pytest.approx(r, abs=6e-5 * r)
    assert float(gg.moment_ratio(1e4)) == pytest.approx(4 / 3, rel=1e-3)
    b = np.linspace(0.05, 20, 500)
    assert np.all(np.diff(np.asarray(gg.moment_ratio(b))) < 0)  # strictly decreasing
    ref = special.gamma(1 / b) * special.gamma(3 / b) / special.gamma(2 / b) ** 2
    np.testing.assert_allclose(gg.moment_ratio(b), ref, rtol=1e-10)


def test_beta_from_ratio_inverts_exactly_and_vectorizes():
  with jax.enable_x64(True):
    betas = jnp.array([0.1, 0.37, 1.0, 2.0, 4.5, 10.0])
    back = jax.jit(gg.beta_from_ratio)(gg.moment_ratio(betas))
    np.testing.assert_allclose(back, betas, rtol=1e-9)
  assert float(gg.beta_from_ratio(1.2)) == pytest.approx(gg.BETA_MAX, rel=1e-5)  # below 4/3
  assert float(gg.beta_from_ratio(1e30)) == pytest.approx(gg.BETA_MIN, rel=1e-5)
  grid = gg.beta_from_ratio(gg.moment_ratio(jnp.array([0.05, 1.234, 2.0, 5.0])), 'grid')
  np.testing.assert_allclose(grid, [0.10, 1.23, 2.00, 2.99], atol=1e-6)  # clamped 0.10…2.99


def _gennorm(beta, seed, n=100_000, scale=0.05):
  return stats.gennorm.rvs(beta, scale=scale, size=n, random_state=seed).astype(np.float32)


@pytest.mark.parametrize('beta', (0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0))
def test_mle_recovers_beta(beta):
  f = gg.fit(_gennorm(beta, seed=int(100 * beta)), 'mle')
  assert float(f.beta) == pytest.approx(beta, rel=0.03)
  assert float(f.alpha) == pytest.approx(0.05, rel=0.05)  # α̂ moves with β̂ (Γ(1/β) factor)


def test_mle_is_the_scipy_maximum_likelihood():
  x = _gennorm(1.5, seed=5, n=20_000)
  f = gg.fit(x, 'mle')
  beta, _, alpha = stats.gennorm.fit(x.astype(np.float64), floc=0)
  assert float(f.beta) == pytest.approx(beta, rel=2e-3)
  assert float(f.alpha) == pytest.approx(alpha, rel=2e-3)


@pytest.mark.parametrize('beta', (0.5, 0.75, 1.0, 1.5, 2.0))
def test_exact_recovers_beta(beta):
  x = _gennorm(beta, seed=int(100 * beta))
  f = gg.fit(x)
  assert float(f.beta) == pytest.approx(beta, rel=0.03)
  assert float(f.alpha) == pytest.approx(0.05, rel=0.03)
  assert float(f.mu) == 0.0
  assert abs(float(gg.fit(x, 'grid').beta) - float(f.beta)) <= 0.0051


def test_center_fits_about_the_mean():
  x = _gennorm(1.0, seed=1) + 0.3
  f = gg.fit(x, center=True)
  assert float(f.mu) == pytest.approx(0.3, abs=1e-3) and float(f.beta) == pytest.approx(
    1.0, rel=0.03
  )


@pytest.mark.parametrize(
  'x, match',
  [
    (np.zeros(100), 'constant'),
    (np.full(100, 0.5), 'constant'),
    (np.r_[np.ones(50), np.nan], 'NaN'),
    (np.r_[np.arange(50.0), np.inf], 'inf'),
    (np.arange(3.0), 'min_size'),
  ],
)
def test_fit_rejects_degenerate_input(x, match):
  with pytest.raises(ValueError, match=match):
    gg.fit(x)


def test_fit_rejects_bad_method():
  with pytest.raises(ValueError, match="method='moments'.*exact"):
    gg.fit(np.arange(10.0), 'moments')


def test_fit_tree_per_tensor_and_pooled():
  rng = np.random.default_rng(0)
  laplace = stats.gennorm.rvs(1.0, size=(200, 300), random_state=1)
  params = {
    'a': {'kernel': jnp.asarray(laplace, jnp.float32), 'bias': jnp.zeros((300,))},
    'b': {'kernel': jnp.asarray(rng.normal(size=(300, 200)), jnp.float32)},
  }
  fits = gg.fit_tree(params)
  assert sorted(fits) == ['a/kernel', 'b/kernel']  # biases skipped (ndim < 2)
  assert float(fits['a/kernel'].beta) == pytest.approx(1.0, rel=0.03)
  assert float(fits['b/kernel'].beta) == pytest.approx(2.0, rel=0.03)
  pooled = gg.fit_tree(params, pooled=True)[gg.POOLED]
  both = jnp.concatenate([params['a']['kernel'].ravel(), params['b']['kernel'].ravel()])
  np.testing.assert_allclose(pooled.beta, gg.fit(both).beta, rtol=1e-5)
  with pytest.raises(ValueError, match="'a/bias'.*constant"):
    gg.fit_tree(params, include='.*')


def test_plot_fits(tmp_path):
  params = {
    'l1': {'kernel': jnp.asarray(_gennorm(1.0, 0).reshape(100, 1000))},
    'l2': {'kernel': jnp.asarray(_gennorm(2.0, 1).reshape(1000, 100))},
  }
  path = tmp_path / 'fits.png'
  fits = gg.plot_fits(params, str(path), max_layers=1)
  assert path.stat().st_size > 1000 and sorted(fits) == ['l1/kernel', 'l2/kernel']
