"""Empirical variance of every initializer against its formula (REFERENCES.md §8), ≥1e6 draws."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import initlab.init as ii

# (name, shape, spec) — a Dense, a 3×3 Conv and a stacked (scanned) Dense kernel.
LAYOUTS = {
    "dense": ((1024, 1024), ii.ParamSpec("kernel", (0,), (1,))),
    "conv3x3": ((3, 3, 96, 1280), ii.ParamSpec("kernel", (2,), (3,))),
    "stacked": ((4, 384, 768), ii.ParamSpec("kernel", (1,), (2,), (0,))),
}


def _fans(layout):
  shape, spec = LAYOUTS[layout]
  return spec.fans(shape)


def _expected_var(name, fan_in, fan_out):
  avg = (fan_in + fan_out) / 2
  return {
      "lecun_normal": 1 / fan_in, "lecun_uniform": 1 / fan_in,
      "glorot_normal": 1 / avg, "glorot_uniform": 1 / avg,
      "xavier_normal": 1 / avg, "xavier_uniform": 1 / avg,
      "he_normal": 2 / fan_in, "he_uniform": 2 / fan_in,
      "kaiming_normal": 2 / fan_in, "kaiming_uniform": 2 / fan_in,
  }[name]


def _draw(init, layout, key=0):
  shape, spec = LAYOUTS[layout]
  rules = ii.Rules([(".*", init)], specs={".*": spec})
  return np.asarray(rules(jax.random.key(key), {"w": jnp.zeros(shape)})["w"], np.float64)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", ["lecun_normal", "lecun_uniform", "glorot_normal", "glorot_uniform",
                                  "he_normal", "he_uniform", "xavier_normal", "kaiming_uniform"])
def test_variance_scaling_family(name, layout):
  w = _draw(getattr(ii, name)(), layout)
  assert w.size >= 1_000_000
  expected = _expected_var(name, *_fans(layout))
  assert abs(w.var() / expected - 1) < 0.02, (name, layout, w.var(), expected)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_orthogonal_variance_and_orthogonality(layout):
  shape, spec = LAYOUTS[layout]
  w = _draw(ii.orthogonal(scale=1.5), layout)
  fan_in, fan_out = spec.fans(shape)
  rows, cols = fan_in, fan_out // math.prod(shape[a] for a in spec.receptive_axes(len(shape)))
  assert abs(w.var() / (1.5**2 / max(rows, cols)) - 1) < 0.02
  mats = w.reshape((-1, rows, cols)) if spec.batch_axes else w.reshape((1, rows, cols))
  for m in mats:
    gram = m.T @ m if rows >= cols else m @ m.T
    np.testing.assert_allclose(gram, 1.5**2 * np.eye(min(rows, cols)), atol=1e-4)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_fixup_scaled_variance(layout):
  w = _draw(ii.fixup_scaled(num_branches=9, branch_layers=2), layout)
  fan_in, _ = _fans(layout)
  assert abs(w.var() / (2 / fan_in * 9 ** (-1.0)) - 1) < 0.02  # L^{-2/(2m-2)} = 9^{-1}


def test_layout_free_initializers():
  shape = (1000, 1000)
  w = np.asarray(ii.normal(stddev=0.02)(jax.random.key(1), shape), np.float64)
  assert abs(w.var() / 0.02**2 - 1) < 0.02
  w = np.asarray(ii.uniform(scale=0.1)(jax.random.key(2), shape), np.float64)
  assert abs(w.var() / (0.1**2 / 12) - 1) < 0.02 and w.min() >= 0 and w.max() < 0.1
  w = np.asarray(ii.truncated_normal(stddev=0.1)(jax.random.key(3), shape), np.float64)
  assert abs(w.var() / (0.1**2 * stats.truncnorm(-2, 2).var()) - 1) < 0.02
  assert np.all(ii.zeros()(jax.random.key(0), (3, 4)) == 0)
  assert np.all(ii.ones()(jax.random.key(0), (3, 4)) == 1)
  assert np.all(ii.constant(0.5)(jax.random.key(0), (3, 4)) == 0.5)


def test_conv_fans_from_rules():
  spec = ii.infer_spec("conv/kernel", (3, 3, 16, 32))
  assert spec.fans((3, 3, 16, 32)) == (144, 288)
  stacked = ii.infer_spec("blocks/mlp/kernel", (6, 64, 256), ("layers", "embed", "mlp"))
  assert stacked.fans((6, 64, 256)) == (64, 256) and stacked.batch_axes == (0,)
  q = ii.infer_spec("attn/query/kernel", (64, 4, 16))
  o = ii.infer_spec("attn/out/kernel", (4, 16, 64))
  assert q.fans((64, 4, 16)) == (64, 64) and o.fans((4, 16, 64)) == (64, 64)


def test_zero_matrix_cases():
  np.testing.assert_array_equal(ii.zero_matrix(8, 8), np.eye(8))
  np.testing.assert_array_equal(ii.zero_matrix(8, 4), np.eye(8, 4))       # out < in: partial identity
  w = ii.zero_matrix(3, 6)                                                # out > in: m = 3, c = 2^-1
  hadamard_rows = np.array([[1, 1, 1], [1, -1, 1], [1, 1, -1], [1, -1, -1], [1, 1, 1], [1, -1, 1]])
  np.testing.assert_array_equal(w, 0.5 * hadamard_rows.T)
  assert w.shape == (3, 6)


def test_zero_is_deterministic_and_conv_centred():
  k = ii.zero()(jax.random.key(0), (3, 3, 4, 4))
  k2 = ii.zero()(jax.random.key(7), (3, 3, 4, 4))
  np.testing.assert_array_equal(k, k2)
  np.testing.assert_array_equal(k[1, 1], np.eye(4))
  assert float(jnp.abs(k).sum()) == 4.0
  stacked = ii.Rules([(".*", ii.zero())])(jax.random.key(0), {"scan": {"kernel": jnp.zeros((3, 5, 5))}})
  np.testing.assert_array_equal(stacked["scan"]["kernel"], np.broadcast_to(np.eye(5), (3, 5, 5)))


def test_delta_orthogonal():
  k = np.array(ii.delta_orthogonal(scale=2.0)(jax.random.key(0), (3, 3, 16, 32)))
  centre = k[1, 1]
  np.testing.assert_allclose(centre @ centre.T, 4 * np.eye(16), atol=1e-4)
  k[1, 1] = 0
  assert np.all(k == 0)
  with pytest.raises(ValueError, match="in_channels"):
    ii.delta_orthogonal()(jax.random.key(0), (3, 3, 32, 16))
  with pytest.raises(ValueError, match="conv kernel"):
    ii.delta_orthogonal()(jax.random.key(0), (32, 16))
