"""GradInit (Zhu et al. 2021, arXiv 2102.08098): the objective against numpy float64 on a
linear classifier, its decrease, determinism, recovery from a bad scale, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import initlab.init as ii
from initlab.init.families import datastage, gradinit
from initlab.init.schemes import stage_of

import datastage_testlib as tl


def _np_loss(w, b, x, y):
  z = x @ w + b
  z = z - z.max(axis=1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
  return -logp[np.arange(len(y)), y].mean(), np.exp(logp)


@pytest.mark.parametrize('optimizer,gamma', [('sgd', 100.0), ('adam', 100.0), ('sgd', 1e-3)])
def test_objective_matches_numpy_on_a_linear_classifier(optimizer, gamma):
  """MLP depth 0 = softmax regression: ∇W = xᵀ(p − onehot)/B, ∇b = mean(p − onehot).
  Objective: ‖g‖_p when above γ (p = 2 sgd, 1 adam), else the loss on the next batch after
  θ − η·A[g] (A[g] = g for sgd, g/(|g| + 1e-8) for adam)."""
  params, ctx = tl.setup('mlp', depth=0, num_batches=2, batch_size=64)
  tensors = datastage.scaled_tensors(ctx.data, params)
  assert [t.path for t in tensors] == ['head/kernel']
  scale = 1.7
  fn = gradinit.objective_fn(ctx.data, tensors, inner_lr=0.3, optimizer=optimizer, gamma=gamma)
  b1, b2 = ctx.data.batches
  value, (norm, loss) = fn({'head/kernel': jnp.float32(scale)}, params, b1, b2)
  w = np.asarray(params['head']['kernel'], np.float64) * scale
  b = np.asarray(params['head']['bias'], np.float64)
  x1, y1 = np.asarray(b1['image'], np.float64).reshape(64, -1), np.asarray(b1['label'])
  x2, y2 = np.asarray(b2['image'], np.float64).reshape(64, -1), np.asarray(b2['label'])
  _, p = _np_loss(w, b, x1, y1)
  err = p - np.eye(10)[y1]
  gw, gb = x1.T @ err / 64, err.mean(axis=0)
  if optimizer == 'sgd':
    expect_norm = np.sqrt((gw**2).sum() + (gb**2).sum())
    sw, sb = gw, gb
  else:
    expect_norm = np.abs(gw).sum() + np.abs(gb).sum()
    sw, sb = gw / (np.abs(gw) + 1e-8), gb / (np.abs(gb) + 1e-8)
  expect_loss, _ = _np_loss(w - 0.3 * sw, b - 0.3 * sb, x2, y2)
  assert float(norm) == pytest.approx(expect_norm, rel=1e-4)
  assert float(loss) == pytest.approx(expect_loss, rel=1e-4)
  assert float(value) == pytest.approx(
    expect_norm if expect_norm > gamma else expect_loss, rel=1e-4
  )


def test_objective_decreases_and_is_deterministic():
  params, ctx = tl.setup('resnet', num_batches=2, batch_size=32)
  out, h = gradinit.run(jax.random.key(0), params, ctx, steps=20, lr=0.02)
  assert h['objective'][-5:].mean() < h['objective'][:5].mean() - 0.05, h['objective']
  again, h2 = gradinit.run(jax.random.key(0), params, ctx, steps=20, lr=0.02)
  np.testing.assert_array_equal(h['objective'], h2['objective'])
  jax.tree.map(np.testing.assert_array_equal, out, again)


def test_gradient_norm_phase_lowers_the_norm():
  """With γ below the gradient norm, the objective is ‖g‖₂ and it goes down."""
  params, ctx = tl.setup('mlp', num_batches=2, batch_size=64)
  _, h = gradinit.run(jax.random.key(0), params, ctx, steps=20, lr=0.02, gamma=1e-3)
  np.testing.assert_array_equal(h['objective'], h['grad_norm'])
  assert h['grad_norm'][-1] < 0.7 * h['grad_norm'][0]


@pytest.mark.parametrize('factor', [10.0, 0.1])
def test_bad_scale_comes_back_within_2x_of_he(factor):
  """He init × 10 or × 0.1 everywhere: every kernel's norm ends within 2× of He's.
  Measured (200 steps, τ = 0.02, γ = 1): 0.89…1.05 (from ×10) and 0.62…0.75 (from ×0.1)."""
  he = ii.get_scheme('he_normal')
  params, ctx = tl.setup('mlp', num_batches=2, batch_size=128, scheme=he)
  ref = tl.kernel_norms(params)
  bad = jax.tree.map(lambda x: x * factor, params)
  out, _ = gradinit.run(jax.random.key(0), bad, ctx, steps=200, lr=0.02, gamma=1.0)
  got = tl.kernel_norms(out)
  ratios = {k: got[k] / ref[k] for k in ref}
  assert all(0.5 < r < 2 for r in ratios.values()), ratios


def test_same_on_1_and_8_devices_stacked_lm(devices):
  results = []
  for n in (1, 8):
    mesh = tl.mesh(n)
    params, ctx = tl.setup('transformer_lm', num_batches=2, batch_size=16, mesh=mesh)
    with jax.set_mesh(mesh):
      out, h = gradinit.run(jax.random.key(0), params, ctx, steps=3, lr=0.05)
    results.append((jax.tree.map(np.asarray, out), h['objective'], params))
  (a, ha, p), (b, hb, _) = results
  np.testing.assert_allclose(ha, hb, rtol=1e-4)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6), a, b)
  w, w0 = (
    np.asarray(a['blocks']['mlp']['fc1']['kernel']),
    np.asarray(p['blocks']['mlp']['fc1']['kernel']),
  )
  ratio = np.linalg.norm(w.reshape(2, -1), axis=1) / np.linalg.norm(w0.reshape(2, -1), axis=1)
  assert not np.allclose(ratio[0], ratio[1], rtol=1e-5), ratio  # one scale per layer


def test_registered_data_stage_scheme_and_bad_options():
  scheme = ii.get_scheme('gradinit', steps=2)
  assert stage_of(scheme) == 'data' and scheme.num_batches == 2
  with pytest.raises(ValueError, match=r"optimizer='rmsprop'; valid choices: sgd, adam"):
    ii.get_scheme('gradinit', optimizer='rmsprop')
  with pytest.raises(ValueError, match='alpha_min=0'):
    ii.get_scheme('gradinit', alpha_min=0)
  params, ctx = tl.setup('vit', num_batches=2, batch_size=8)
  out = scheme(jax.random.key(0), params, ctx)
  assert not np.allclose(
    out['blocks'][0]['mlp']['fc1']['kernel'], params['blocks'][0]['mlp']['fc1']['kernel']
  )
