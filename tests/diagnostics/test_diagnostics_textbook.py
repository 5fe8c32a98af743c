"""Textbook signal propagation, end to end on the zoo MLP with Gaussian inputs.

Deep ReLU MLP, 30 hidden layers of width 512, no bias, batch of 64 N(0, 1) inputs:
- He init keeps the forward second moment q_l = mean h_l² flat: E q_l = q_{l-1}, since
  E relu(z)² = Var(z)/2 and Var(z) = 2 q_{l-1} (He et al. 2015, eq. 10);
- LeCun init halves it per layer: E q_l = q_{l-1}/2, a log2 slope of −1;
- He init keeps the backward second moment flat too (fan_in = fan_out; He et al. eq. 14);
- the c-values follow the ReLU c-map c_l = f(c_{l-1}) (`stats.relu_c_map`) and rise to 1.

At finite width log q_l is a random walk over the init (Var ≈ 5/width per layer for one input;
Hanin 2018), so "flat" is tested on the mean profile over 8 independent inits, as the
textbook statement is one about the expectation over the weights. With 8 inits the
ratio of the mean profile's ends stayed within [0.63, 1.15] over 6 disjoint seed sets.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import initlab.diagnostics as dg
import initlab.init as ii
from initlab import models

DEPTH, WIDTH, BATCH, SEEDS = 30, 512, 64, 8


@pytest.fixture(scope='module')
def runs():
  config = models.default_config('mlp')
  config.update(dict(input_shape=(WIDTH,), depth=DEPTH, width=WIDTH, use_bias=False))
  x = jax.random.normal(jax.random.key(123), (BATCH, WIDTH))
  schemes = {'he': ii.get_scheme('he_normal'), 'lecun': ii.get_scheme('lecun_normal')}
  out = [
    dg.compare(
      lambda rngs: models.build(config, rngs=rngs),
      schemes,
      x,
      jax.random.key(seed),
      num_jacobian_examples=0,
    )
    for seed in range(SEEDS)
  ]
  return x, out


def _hidden(runs, scheme, field):
  """(SEEDS, DEPTH) values of `field` at the hidden stages (the head is left out)."""
  _, out = runs
  assert out[0][scheme].names[:DEPTH] == tuple(f'hidden/{i}' for i in range(DEPTH))
  return np.stack([getattr(r[scheme], field)[:DEPTH] for r in out])


def test_he_forward_variance_is_flat(runs):
  q = _hidden(runs, 'he', 'q')
  mean = q.mean(axis=0)
  assert 0.5 <= mean[-1] / mean[0] <= 2.0, mean
  assert abs(dg.log2_slope(mean)) < 0.06
  # Closed form at the first layer: E q_1 = q_0 (the input's mean square).
  x, _ = runs
  assert np.isclose(mean[0], float(jnp.mean(x**2)), rtol=0.05)


def test_lecun_forward_variance_halves_per_layer(runs):
  q = _hidden(runs, 'lecun', 'q')
  for profile in q:
    assert abs(dg.log2_slope(profile) + 1.0) < 0.15
  x, _ = runs
  assert np.isclose(q[:, 0].mean(), float(jnp.mean(x**2)) / 2, rtol=0.05)


def test_he_gradient_variance_is_flat(runs):
  g = _hidden(runs, 'he', 'grad_q').mean(axis=0)
  assert 0.5 <= g[0] / g[-1] <= 2.0, g
  assert abs(dg.log2_slope(g)) < 0.04
  # LeCun backward: each layer back halves the gradient's second moment.
  assert abs(dg.log2_slope(_hidden(runs, 'lecun', 'grad_q').mean(axis=0)) - 1.0) < 0.15


def test_relu_c_values_rise_to_one_along_the_c_map(runs):
  x, out = runs
  c = _hidden(runs, 'he', 'c').mean(axis=0)
  assert c[0] < 0.4 and c[-1] > 0.9
  assert np.all(np.diff(c) > -0.02)
  # Closed form: iterate the ReLU c-map from every input pair's cosine, average over pairs.
  xn = np.asarray(x, np.float64)
  cos = xn @ xn.T / np.outer(np.linalg.norm(xn, axis=1), np.linalg.norm(xn, axis=1))
  pairs = cos[~np.eye(BATCH, dtype=bool)]
  theory = []
  for _ in range(10):
    pairs = dg.relu_c_map(pairs)
    theory.append(pairs.mean())
  np.testing.assert_allclose(c[:10], theory, atol=0.03)
  # c depends only on angles: LeCun (He scaled by 1/sqrt 2, same keys) gives the same c.
  np.testing.assert_allclose(out[0]['lecun'].c, out[0]['he'].c, atol=1e-5)
