"""Coordinate check (Tensor Programs V, arXiv 2203.03466, Appendix D.1): after 3 Adam steps
the per-layer activation RMS of an MLP stays flat in width under μP and grows under the
standard parametrization."""

import jax.numpy as jnp
import numpy as np
import pytest

from initlab import config as config_lib
from initlab.diagnostics import coord_check, default_widths, plot_coord_check

WIDTHS = (64, 128, 256, 512, 1024)


def _config(lr=1e-2):
  config = config_lib.default_config()
  config.model = config_lib.model_config('mlp', input_shape=(8, 8, 1), depth=3, width=64)
  config.optimizer.learning_rate = lr
  config.parametrization.base_width = 64.0
  config.init.name = 'variance_scaling'  # He, untruncated: compiles faster than he_normal.
  config.init.variance_scaling = dict(scale=2.0, mode='fan_in', distribution='normal')
  return config


@pytest.fixture(scope='module')
def result():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(8, 8, 8, 1)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, size=8))
  return coord_check(_config(), WIDTHS, steps=3, parametrizations=('standard', 'mup'), batch=(x, y))


def test_mup_activations_stay_within_factor_2_over_widths(result):
  assert result.layers == ('hidden/0', 'hidden/1', 'hidden/2', 'head')
  for layer, rms in result.final('mup').items():
    assert np.all(np.isfinite(rms)) and rms.max() / rms.min() <= 2.0, (layer, rms)


def test_standard_activations_grow_with_width(result):
  """The textbook picture: with Adam at a fixed lr the update of a layer whose fan_in is the
  width moves its output by O(width), so every layer after the input one grows with width,
  the logits most; the input layer (fan_in fixed) does not."""
  final = result.final('standard')
  for layer in ('hidden/1', 'hidden/2', 'head'):
    rms = final[layer]
    slope = np.polyfit(np.log(WIDTHS), np.log(rms), 1)[0]  # Log-log slope over the widths.
    assert np.all(rms[1:] > 0.95 * rms[:-1]) and rms[-1] / rms[0] > 2 and slope > 0.2, (layer, rms)
  assert final['head'][-1] / final['head'][0] > 20
  assert final['hidden/0'].max() / final['hidden/0'].min() <= 2.0


def test_mup_is_standard_at_the_base_width(result):
  """At width = base_width every factor is 1: the same init and the same trajectory."""
  for layer in result.layers:
    np.testing.assert_allclose(
      result.rms['mup'][layer][0], result.rms['standard'][layer][0], rtol=1e-5
    )
  # At init, μP's readout shrinks like 1/sqrt(r) relative to standard (Var × 1/r).
  t0 = {p: result.rms[p]['head'][:, 0] for p in ('standard', 'mup')}
  ratio = t0['mup'] / t0['standard']
  np.testing.assert_allclose(ratio, np.sqrt(64 / np.asarray(WIDTHS)), rtol=1e-4)


def test_data_and_plot(result, tmp_path):
  d = result.to_dict()
  assert d['widths'] == list(WIDTHS) and d['steps'] == 3
  assert np.asarray(d['rms']['mup']['head']).shape == (len(WIDTHS), 4)
  path = plot_coord_check(result, tmp_path / 'coord_check.png')
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_bad_parametrization_name():
  with pytest.raises(ValueError, match='parametrization.name: expected one of standard, ntk, mup'):
    coord_check(
      _config(), (64,), parametrizations=('sp',), batch=(jnp.zeros((2, 64)), jnp.zeros(2, int))
    )


def test_widths_from_config():
  """base_width doubling up to the config's model width (the model's own width last)."""
  config = _config()
  config.model.width = 1024
  assert default_widths(config) == WIDTHS
  config.model.width, config.parametrization.base_width = 600, 100.0
  assert default_widths(config) == (100, 200, 400, 600)
  config.parametrization.base_width = 0.0
  with pytest.raises(ValueError, match='base_width=0.0 must be > 0'):
    default_widths(config)
