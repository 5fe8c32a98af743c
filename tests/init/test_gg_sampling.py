"""The default GG sampler ("icdf", inversion through a table; initlab/init/gg/sampling.py):
quantiles against scipy float64, KS against scipy.stats.gennorm on 2^20 draws, n·Var within 1%."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from initlab.init import gg
from initlab.init.gg import sampling

BETAS = (0.3, 0.5, 1.0, 1.5, 2.0, 4.0, 8.0)


@pytest.mark.parametrize('beta', (0.3, 1.0, 8.0))
def test_table_quantiles_match_scipy_to_float32_precision(beta):
  # v over every octave the sampler reads, both halves: Q⁺ = survival⁻¹, Q⁻ = CDF⁻¹ of |X|
  v = (2.0 ** np.random.default_rng(0).uniform(-32, -1, 100_000)).astype(np.float32)
  v = np.concatenate([v, np.float32([2.0**-32, 0.5, 1e-9])])
  table = sampling.icdf_table(beta)
  for lower, inverse in ((False, special.gammainccinv), (True, special.gammaincinv)):
    x = np.asarray(sampling.icdf_lookup(table, jnp.asarray(v), jnp.full(v.shape, lower)))
    ref = inverse(1.0 / beta, v.astype(np.float64)) ** (1.0 / beta)
    assert np.max(np.abs(x / ref - 1)) < 3e-7, (beta, lower)  # float32 eps = 1.19e-7


@pytest.mark.parametrize('beta', BETAS)
def test_default_sampler_ks_and_variance(beta):
  # 2^25 draws in one jitted call: Var's sampling error is √((kurt+2)/N) ≤ 0.23% even for
  # β = 0.3 (excess kurtosis 171), so a 1% bound is > 4σ; KS on the first 2^20 ≥ 1e6 draws.
  n, cols = 4096, 8192  # fan_in = n
  w = gg.generalized_gaussian(beta)(jax.random.key(int(10 * beta)), (n, cols))
  w = np.asarray(w)
  var = np.square(w, dtype=np.float64).sum(1).sum() / w.size
  assert n * var / 2.0 == pytest.approx(1.0, rel=0.01), beta
  alpha = gg.gg_alpha(beta, 2.0 / n)
  ks = stats.kstest(w.ravel()[: 2**20].astype(np.float64), stats.gennorm(beta, scale=alpha).cdf)
  assert ks.pvalue > 1e-3, (beta, ks)


def test_auto_picks_icdf_in_range_and_marsaglia_tsang_elsewhere():
  key, shape = jax.random.key(1), (64, 64)
  same = lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  same(gg.standard_gg(key, 1.5, shape), gg.standard_gg(key, 1.5, shape, sampler='icdf'))
  same(gg.standard_gg(key, 0.2, shape), gg.standard_gg(key, 0.2, shape, sampler='marsaglia_tsang'))
  with jax.enable_x64(True):
    a = gg.standard_gg(key, 1.5, shape, jnp.float64)
    same(a, gg.standard_gg(key, 1.5, shape, jnp.float64, sampler='marsaglia_tsang'))


@pytest.mark.parametrize('sampler', ('icdf', 'marsaglia_tsang'))
def test_truncated_inversion_and_kept_options(sampler):
  beta, bound = 1.5, 1.2
  x = np.asarray(
    gg.standard_gg(jax.random.key(4), beta, (1 << 18,), bound=bound, sampler=sampler), np.float64
  )
  g = stats.gennorm(beta)
  cdf = lambda t: (g.cdf(np.clip(t, -bound, bound)) - g.cdf(-bound)) / (1 - 2 * g.cdf(-bound))
  assert np.abs(x).max() <= bound
  assert stats.kstest(x, cdf).pvalue > 1e-3
  y = np.asarray(gg.standard_gg(jax.random.key(4), beta, (1 << 18,), sampler=sampler), np.float64)
  assert stats.kstest(y, g.cdf).pvalue > 1e-3
  assert np.abs(y).max() > bound * 2  # untruncated reaches the tail


def test_tails_go_beyond_normal_resolution():
  # the smallest survival the table reads is 2^-32 (normal's erf⁻¹ of 23-bit uniforms: 2^-24)
  table = sampling.icdf_table(2.0)
  top = float(sampling.icdf_lookup(table, jnp.float32(2.0**-32), jnp.bool_(False)))
  assert top == pytest.approx(math.sqrt(special.gammainccinv(0.5, 2.0**-32)), rel=1e-6)
  normal_max = math.sqrt(2) * special.erfinv(1 - 2.0**-23)  # 5.3σ
  assert top * math.sqrt(2) > 6.3 > normal_max + 1  # X ~ N(0, ½) for β = 2
