"""RF8 (arXiv 2506.00486 v1–v3; the authors' `rf8.py`) and the FP8 E4M3 baseline."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initlab.init import gg

MANTISSAS = {0.75, 0.875, 0.9375, 1.0, 1.0625, 1.125, 1.25, 1.5}


@pytest.fixture(scope='module')
def normal_weights():
  return (np.random.default_rng(0).standard_normal(1_000_000) * 0.02).astype(np.float32)


def test_reference_statistics_on_gaussian_weights(normal_weights):
  w = normal_weights.astype(np.float64)
  codes, bias = gg.rf8_encode(normal_weights)
  assert codes.dtype == jnp.uint8 and codes.shape == w.shape and bias.dtype == jnp.int32
  w_hat = np.asarray(gg.rf8_decode(codes, bias), np.float64)
  kept = w_hat != 0  # ~1e-4 of entries flush below e_max − 15
  assert (~kept).sum() < 300 and np.all(np.abs(w[~kept]) < 2.0 ** (int(bias) - 0.5))
  assert 0.038 < np.sqrt(np.mean((w_hat - w) ** 2)) / 0.02 < 0.042  # 3.99 %
  assert np.max(np.abs(w_hat - w)[kept] / np.abs(w[kept])) == pytest.approx(0.108, abs=0.002)
  e1_kept = np.round(np.log2(np.abs(w[kept])))
  assert set(np.unique(np.abs(w_hat[kept]) / 2.0**e1_kept)) == MANTISSAS
  # from initlab's output: ŵ − d₁ is the kept second digit ±2^e₂ (or 0); gaps e₁ − e₂ of 1…4
  residual = w_hat[kept] - np.sign(w[kept]) * 2.0**e1_kept
  has = residual != 0
  assert 0.872 <= np.mean(has) <= 0.873  # residual kept
  gaps, counts = np.unique(e1_kept[has] - np.log2(np.abs(residual[has])), return_counts=True)
  np.testing.assert_array_equal(gaps, [1, 2, 3, 4])
  np.testing.assert_allclose(counts, [63.4e3, 421e3, 260e3, 128.3e3], rtol=0.003)


def _authors_rule(w):
  """The authors' rf8 (n = 4) in float64 numpy, and the 16-exponent window below max e₁."""
  with np.errstate(divide='ignore'):
    e1 = np.round(np.log2(np.abs(w)))
    d1 = np.sign(w) * 2.0**e1
    e2 = np.round(np.log2(np.abs(w - d1)))  # −inf where w is a power of two
  w_hat = d1 + np.where(e1 - e2 <= 4, np.sign(w - d1) * 2.0**e2, 0.0)
  return w_hat, e1 >= e1.max() - 15


@pytest.mark.parametrize('top', ['0.75', '1.5'])
def test_matches_the_authors_rule_in_the_window(normal_weights, top):
  # top "0.75": max|w| ≈ 0.098 rounds to 0.75·2^-3; "1.5": scaled so that it rounds to 1.5·2^-3
  scale = 1.0 if top == '0.75' else 0.175 / float(np.abs(normal_weights).max())
  x = (normal_weights * np.float32(scale)).astype(np.float32)
  want, window = _authors_rule(x.astype(np.float64))
  got = np.asarray(gg.rf8_fake_quant(x), np.float64)
  np.testing.assert_array_equal(got[window], want[window])  # every e₁ ≥ max e₁ − 15 kept
  below = got[~window]
  assert np.all((below == 0) | (below == want[~window]))  # below: flushed, or exact
  assert 50 < np.sum(got == 0) < 100
  np.testing.assert_array_equal(gg.rf8_fake_quant(got.astype(np.float32)), got)  # idempotent


def test_window_is_sixteen_exponents_below_the_top_digit():
  w = jnp.array([1.4, 2.0**-15, 2.0**-16 * 1.1])  # 1.4 ↦ 1.5 = 1 + 2⁻¹ (e₁ = 0, e_max = 0)
  out = gg.rf8_fake_quant(w)
  np.testing.assert_array_equal(out, [1.5, 2.0**-15, 0.0])
  np.testing.assert_array_equal(gg.rf8_fake_quant(out), out)
  codes, bias = gg.rf8_encode(w)
  assert int(bias) == -15 and int(codes[0]) == 0x78 and int(codes[1]) == 0x01


def test_idempotent(normal_weights):
  codes, bias = gg.rf8_encode(normal_weights)
  w_hat = gg.rf8_decode(codes, bias)
  codes2, bias2 = gg.rf8_encode(w_hat)
  np.testing.assert_array_equal(codes2, codes)
  assert int(bias2) == int(bias)
  np.testing.assert_array_equal(gg.rf8_fake_quant(w_hat), w_hat)


def test_worked_values_and_specials():
  w = jnp.array([1.03, 1.0625, -1.4, 0.72, 0.0, -0.0, jnp.nan, jnp.inf, -jnp.inf, 1e-30])
  out = np.asarray(gg.rf8_fake_quant(w))
  np.testing.assert_array_equal(out[:4], [1.0, 1.0625, -1.5, 0.75])
  assert out[4] == 0 and not np.signbit(out[4]) and out[5] == 0 and np.signbit(out[5])
  assert np.isnan(out[6])
  np.testing.assert_array_equal(out[7:9], [1.5, -1.5])  # ±1.5·2^e_max, e_max = max e₁ = 0
  assert out[9] == 0  # below e_max − 15: flushed
  codes, bias = gg.rf8_encode(w)
  assert list(np.asarray(codes)[4:9]) == [0x00, 0x80, 0x08, 0x78, 0xF8] and int(bias) == -15
  assert int(gg.rf8_encode(jnp.zeros(3))[1]) == 0


def test_dtypes_and_tree_and_sizes():
  w = jnp.linspace(-0.1, 0.1, 64).reshape(8, 8)
  assert gg.rf8_fake_quant(w.astype(jnp.bfloat16)).dtype == jnp.bfloat16
  with jax.enable_x64(True):
    w64 = jnp.asarray(np.random.default_rng(1).normal(size=(8, 8)))
    np.testing.assert_array_equal(
      gg.rf8_fake_quant(w64), gg.rf8_fake_quant(w64.astype(jnp.float32))
    )
  tree = {'dense': {'kernel': w, 'bias': jnp.zeros(8)}, 'step': jnp.int32(3)}
  out = gg.rf8_fake_quant_tree(tree)
  np.testing.assert_array_equal(out['dense']['kernel'], gg.rf8_fake_quant(w))
  assert int(out['step']) == 3
  assert gg.rf8_nbytes(tree) == 64 + 8 + 2 * 4
  table = gg.size_table(tree)
  assert table['float32'] == 4 * 72 and table['bfloat16'] == 2 * 72 and table['rf8'] == 80


def test_fp8_e4m3_baseline(normal_weights):
  w = normal_weights.astype(np.float64)
  q = np.asarray(gg.fp8_e4m3_fake_quant(normal_weights), np.float64)
  assert np.max(np.abs(q)) == pytest.approx(np.max(np.abs(w)), rel=1e-6)  # amax ↦ 448
  rms = np.sqrt(np.mean((q - w) ** 2)) / 0.02
  rf8 = (
    np.sqrt(np.mean((np.asarray(gg.rf8_fake_quant(normal_weights), np.float64) - w) ** 2)) / 0.02
  )
  assert 0.02 < rms < rf8  # 3 mantissa bits beat RF8's RMS
  out = np.asarray(gg.fp8_e4m3_fake_quant(jnp.array([1.0, -2.0, jnp.inf, jnp.nan])))
  np.testing.assert_array_equal(out[:3], [1.0, -2.0, 2.0])
  assert np.isnan(out[3])
