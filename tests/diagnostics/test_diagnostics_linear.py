"""Linear networks, where the diagnostics have exact closed forms (Saxe et al. 2014;
Pennington et al. 2017): the zoo MLP with activation='linear', 8 square 64×64 layers.

- Orthogonal W: the Jacobian J = W_1 ⋯ W_8 is orthogonal, so every singular value is 1 and
  every example keeps its norm: q_l = q_0 exactly, and the backward moments are all equal.
- Orthogonal × g: σ = g^8 and q_l = g^{2l} q_0 exactly.
- Gaussian W with Var = s/fan_in: E q_l = s^l q_0 (the product of per-layer gains) and
  E⟨σ²⟩ = s^8, but the spectrum spreads (no dynamical isometry).
"""

import jax
import numpy as np
import pytest

import initlab.diagnostics as dg
import initlab.init as ii
from initlab import models

N, HIDDEN, BATCH = 64, 7, 32
LAYERS = HIDDEN + 1  # hidden layers + head


@pytest.fixture(scope='module')
def results():
  config = models.default_config('mlp')
  config.update(
    dict(
      input_shape=(N,), depth=HIDDEN, width=N, num_classes=N, use_bias=False, activation='linear'
    )
  )
  schemes = {
    'orthogonal': ii.get_scheme('orthogonal'),
    'orthogonal_1.1': ii.Rules([('.*', ii.orthogonal(scale=1.1))], roles=('kernel',)),
    'lecun_normal': ii.get_scheme('lecun_normal'),
    'he_normal': ii.get_scheme('he_normal'),
  }
  x = jax.random.normal(jax.random.key(7), (BATCH, N))
  return dg.compare(
    lambda rngs: models.build(config, rngs=rngs),
    schemes,
    x,
    jax.random.key(0),
    num_jacobian_examples=4,
  )


def test_orthogonal_is_an_isometry(results):
  d = results['orthogonal']
  assert d.jacobian_exact and d.jacobian_from == 'input' and d.jacobian_shape == (N, N)
  assert d.jacobian_sv.shape == (4, N)
  np.testing.assert_allclose(d.jacobian_sv, 1.0, atol=1e-4)
  np.testing.assert_allclose(d.q, d.input_q, rtol=1e-5)
  np.testing.assert_allclose(d.grad_q, d.grad_q[-1], rtol=1e-5)
  s = d.jacobian_summary()
  assert abs(s['condition'] - 1) < 1e-3 and abs(s['mean_sq_sv'] - 1) < 1e-4


def test_scaled_orthogonal_matches_the_product_of_gains(results):
  d = results['orthogonal_1.1']
  np.testing.assert_allclose(d.jacobian_sv, 1.1**LAYERS, rtol=1e-4)
  np.testing.assert_allclose(d.q, d.input_q * 1.1 ** (2 * np.arange(1, LAYERS + 1)), rtol=1e-4)
  # Backward: each layer back multiplies the gradient's second moment by g².
  np.testing.assert_allclose(
    d.grad_q, d.grad_q[-1] * 1.1 ** (2 * np.arange(LAYERS - 1, -1, -1)), rtol=1e-4
  )


def test_gaussian_init_spreads_the_spectrum(results):
  d = results['lecun_normal']
  sv = d.jacobian_sv
  assert sv.max() / sv.min() > 10 and sv.std() > 0.3
  assert 0.7 < d.jacobian_summary()['mean_sq_sv'] < 1.4  # E⟨σ²⟩ = 1, the gains' product
  orth = results['orthogonal'].jacobian_sv
  assert sv.std() > 1000 * orth.std()


@pytest.mark.parametrize('scheme,gain', [('lecun_normal', 1.0), ('he_normal', 2.0)])
def test_gaussian_forward_variance_is_the_product_of_gains(results, scheme, gain):
  d = results[scheme]
  assert abs(dg.log2_slope(np.r_[d.input_q, d.q]) - np.log2(gain)) < 0.05
  expected = d.input_q * gain ** np.arange(1, LAYERS + 1)
  np.testing.assert_allclose(d.q, expected, rtol=0.2)
