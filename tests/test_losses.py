"""initlab.losses against independent float64 numpy computations."""

import numpy as np
import pytest

from initlab import losses


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _numpy_distill(s, t, y, temperature, alpha):
  """(1 - α) CE(s, y) + α T² Σ p_t (log p_t - log p_s), from the definition, float64."""
  s, t = s.astype(np.float64), t.astype(np.float64)
  ce = -np.take_along_axis(_log_softmax(s), y[..., None], -1)[..., 0]
  log_pt, log_ps = _log_softmax(t / temperature), _log_softmax(s / temperature)
  kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(-1)
  return (1 - alpha) * ce + alpha * temperature**2 * kl


@pytest.mark.parametrize('shape', [(6, 5), (3, 4, 7)], ids=['classification', 'lm_per_token'])
@pytest.mark.parametrize('temperature,alpha', [(1.0, 0.5), (4.0, 1.0), (2.0, 0.0)])
def test_distill_equals_numpy(shape, temperature, alpha):
  rng = np.random.default_rng(0)
  s = rng.normal(size=shape).astype(np.float32) * 3
  t = rng.normal(size=shape).astype(np.float32) * 3
  y = rng.integers(0, shape[-1], size=shape[:-1])
  loss = losses.get_loss('distill', temperature=temperature, alpha=alpha)
  got = np.asarray(loss(s, y, t))
  assert got.shape == shape[:-1]  # Per example, per token for the LM.
  np.testing.assert_allclose(got, _numpy_distill(s, t, y, temperature, alpha), rtol=2e-5, atol=2e-6)


def test_distill_is_zero_against_itself_and_gradient_flows_to_the_student_only():
  import jax

  rng = np.random.default_rng(1)
  s = rng.normal(size=(4, 10)).astype(np.float32)
  y = rng.integers(0, 10, size=4)
  loss = losses.get_loss('distill', temperature=3.0, alpha=1.0)
  np.testing.assert_allclose(loss(s, y, s), 0.0, atol=1e-6)
  t = rng.normal(size=(4, 10)).astype(np.float32)
  g_teacher = jax.grad(lambda t: loss(s, y, t).sum())(t)
  g_student = jax.grad(lambda s: loss(s, y, t).sum())(s)
  assert np.all(g_teacher == 0) and np.abs(g_student).max() > 1e-3


def test_mean_loss_averages_over_a_graph_mask():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(5, 3)).astype(np.float32)
  labels = np.array([0, 1, 2, 1, 0])
  mask = np.array([True, False, True, True, False])
  batch = {'labels': labels, 'mask': mask}
  got = losses.mean_loss(losses.CE, logits, batch, 'node_classification')
  ce = -np.take_along_axis(_log_softmax(logits.astype(np.float64)), labels[:, None], -1)[:, 0]
  np.testing.assert_allclose(got, ce[mask].mean(), rtol=1e-6)


def test_bad_names_and_options_are_named():
  with pytest.raises(ValueError, match=r"unknown loss 'kl'.*valid: ce, distill"):
    losses.get_loss('kl')
  with pytest.raises(ValueError, match="no option 'temp'"):
    losses.get_loss('distill', temp=2.0)
  with pytest.raises(ValueError, match='alpha'):
    losses.get_loss('distill', alpha=1.5)
  with pytest.raises(ValueError, match='teacher logits of shape'):
    losses.get_loss('distill')(np.zeros((2, 3)), np.zeros(2, int), np.zeros((2, 4)))
