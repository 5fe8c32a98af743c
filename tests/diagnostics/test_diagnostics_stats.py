"""The statistics and Jacobian-spectrum formulas against numpy on hand-made inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initlab.diagnostics import jacobian, stats

correlation = jax.jit(stats.correlation)  # one compile per shape instead of one per op


def test_q_var_c_match_numpy():
  h = np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float32)
  m = stats.as_matrix(jnp.asarray(h))
  assert m.shape == (5, 12)
  flat = h.reshape(5, -1).astype(np.float64)
  assert np.isclose(stats.second_moment(m), np.mean(flat**2), rtol=1e-5)
  assert np.isclose(stats.unit_variance(m), np.mean(flat.var(axis=0)), rtol=1e-5)
  cos = [
    flat[a] @ flat[b] / np.linalg.norm(flat[a]) / np.linalg.norm(flat[b])
    for a in range(5)
    for b in range(5)
    if a != b
  ]
  assert np.isclose(correlation(m), np.mean(cos), atol=1e-6)


def test_correlation_edge_cases():
  row = jnp.array([[1.0, 2.0, -1.0]])
  assert np.isclose(correlation(jnp.tile(row, (3, 1))), 1.0)  # identical inputs
  assert np.isclose(correlation(jnp.eye(3)), 0.0)  # orthogonal inputs
  assert np.isnan(correlation(jnp.zeros((3, 3))))  # zero signal
  with_dead = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # a zero example
  assert np.isclose(correlation(with_dead), 2**-0.5)  # is left out
  assert np.isnan(correlation(row))  # one example
  assert np.isnan(stats.layer_stats(jnp.ones((4, 3), jnp.int32))['q'])  # tokens


def test_relu_c_map_closed_form():
  assert np.isclose(stats.relu_c_map(1.0), 1.0)
  assert np.isclose(stats.relu_c_map(0.0), 1 / np.pi)
  assert np.isclose(stats.relu_c_map(-1.0), 0.0)
  c = np.linspace(-1, 0.999, 50)
  assert np.all(np.diff(stats.relu_c_map(c)) > 0) and np.all(stats.relu_c_map(c) > c)
  # Monte Carlo: cos of relu(W a), relu(W b) for Gaussian W, wide layer.
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=64), rng.normal(size=64)
  w = rng.normal(size=(200_000, 64))
  ha, hb = np.maximum(w @ a, 0), np.maximum(w @ b, 0)
  c0 = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
  assert np.isclose(
    ha @ hb / np.linalg.norm(ha) / np.linalg.norm(hb), stats.relu_c_map(c0), atol=5e-3
  )


def test_log2_slope():
  assert np.isclose(stats.log2_slope(2.0 ** -np.arange(10)), -1.0)
  assert np.isclose(stats.log2_slope([3.0, 3.0, 0.0, 3.0]), 0.0)  # zeros are skipped
  assert np.isnan(stats.log2_slope([0.0, 0.0, 1.0]))


@pytest.mark.parametrize('m,n', [(3, 7), (7, 3)])  # jacrev and jacfwd branches
def test_exact_singular_values(m, n):
  a = jax.random.normal(jax.random.key(0), (m, n))
  sv = jacobian.singular_values(lambda v: jnp.tanh(a @ v), jnp.zeros(n), jax.random.key(1))
  np.testing.assert_allclose(sv, np.linalg.svd(np.asarray(a), compute_uv=False), rtol=1e-5)
  assert jacobian.is_exact(m, n, 256)


@pytest.mark.parametrize('m,n', [(120, 200), (200, 120)])  # output- and input-side sketches
def test_sketch_is_unbiased_in_mean_square_and_interlaces(m, n):
  a = jax.random.normal(jax.random.key(0), (m, n)) * jnp.linspace(0.2, 2.0, n)
  true = np.linalg.svd(np.asarray(a), compute_uv=False)
  sketch = lambda k: jacobian.singular_values(lambda v: a @ v, jnp.zeros(n), k, 32)
  sv = np.asarray(jax.jit(jax.vmap(sketch))(jax.random.split(jax.random.key(1), 16)))
  assert sv.shape == (16, 32) and not jacobian.is_exact(m, n, 32)
  assert np.isclose(np.mean(sv**2), np.mean(true**2), rtol=0.1)
  assert sv.max() <= true.max() * (1 + 1e-5) and sv.min() >= true.min() * (1 - 1e-5)


def test_summary():
  s = jacobian.summary(np.array([[2.0, 1.0], [4.0, 1.0]]))
  assert s == dict(mean_sq_sv=5.5, max_sv=4.0, min_sv=1.0, condition=3.0)
  assert np.isinf(jacobian.summary(np.array([[1.0, 0.0]]))['condition'])
  assert np.isnan(jacobian.summary(np.zeros((1, 2)))['condition'])
