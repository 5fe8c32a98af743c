"""Pruning at init (initlab.init.pruning): SNIP (arXiv 1810.02340), GraSP (arXiv 2002.07376)
and SynFlow (arXiv 2006.05467) scores against independent references on tiny models, and
the global top-k masks built from them."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from initlab.init import pruning

D_IN, HID, OUT, B = 5, 7, 3, 8


def _mlp_params(seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  return {
    'dense1': {
      'kernel': rng.normal(size=(D_IN, HID)).astype(dtype),
      'bias': rng.normal(size=(HID,)).astype(dtype) * 0.1,
    },
    'dense2': {
      'kernel': rng.normal(size=(HID, OUT)).astype(dtype),
      'bias': rng.normal(size=(OUT,)).astype(dtype) * 0.1,
    },
  }


def _mlp(params, x):
  """logits (B, OUT) = tanh(x W1 + b1) W2 + b2."""
  h = jnp.tanh(x @ params['dense1']['kernel'] + params['dense1']['bias'])
  return h @ params['dense2']['kernel'] + params['dense2']['bias']


def _batch(seed=1, dtype=np.float32):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(B, D_IN)).astype(dtype), rng.integers(0, OUT, size=(B,))


def _np_grads(params, x, y):
  """∂L/∂W1, ∂L/∂W2 of the mean softmax cross-entropy, by hand in float64."""
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
  x = np.asarray(x, np.float64)
  w1, b1, w2, b2 = (p['dense1']['kernel'], p['dense1']['bias'], p['dense2']['kernel'],
                    p['dense2']['bias'])  # fmt: skip
  a = np.tanh(x @ w1 + b1)
  z = a @ w2 + b2
  sm = np.exp(z - z.max(1, keepdims=True))
  sm /= sm.sum(1, keepdims=True)
  dz = (sm - np.eye(OUT)[y]) / len(y)
  dw2 = a.T @ dz
  dw1 = x.T @ ((dz @ w2.T) * (1 - a**2))
  return dw1, dw2


def test_prunable_marks_only_kernels():
  params = {
    'conv': {'kernel': jnp.ones((3, 3, 2, 4)), 'bias': jnp.ones((4,))},
    'head': {'kernel': jnp.ones((4, 2))},
    'ln': {'scale': jnp.ones((4,)), 'bias': jnp.ones((4,))},
    'embed': {'embedding': jnp.ones((10, 4))},
    'odd': {'foo': jnp.ones((3, 3))},
    'vec': {'kernel': jnp.ones((4,))},
  }
  flags = pruning.prunable(params)
  assert flags['conv'] == {'kernel': True, 'bias': False}
  assert flags['head'] == {'kernel': True}
  assert flags['ln'] == {'scale': False, 'bias': False}
  assert flags['embed'] == {'embedding': False}
  assert flags['odd'] == {'foo': False}
  assert flags['vec'] == {'kernel': False}


def test_snip_matches_hand_gradient():
  params = _mlp_params()
  x, y = _batch()
  s = pruning.scores('snip', _mlp, params, x, y)
  dw1, dw2 = _np_grads(params, x, y)
  w1, w2 = params['dense1']['kernel'], params['dense2']['kernel']
  assert s['dense1']['bias'] is None and s['dense2']['bias'] is None
  assert s['dense1']['kernel'].dtype == jnp.float32
  np.testing.assert_allclose(s['dense1']['kernel'], np.abs(w1 * dw1), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(s['dense2']['kernel'], np.abs(w2 * dw2), rtol=1e-4, atol=1e-7)


def test_scores_under_jit():
  params = _mlp_params()
  x, y = _batch()
  f = jax.jit(lambda p, x, y: pruning.scores('snip', _mlp, p, x, y))
  s = f(params, x, y)
  ref = pruning.scores('snip', _mlp, params, x, y)
  np.testing.assert_allclose(s['dense2']['kernel'], ref['dense2']['kernel'], rtol=1e-6)


def test_grasp_is_minus_theta_times_finite_difference_hg():
  """−θ ⊙ Hg with Hg = (∇L(θ + εg) − ∇L(θ − εg)) / 2ε, kernels moved, biases fixed."""
  with jax.enable_x64(True):
    params = jax.tree.map(jnp.asarray, _mlp_params(dtype=np.float64))
    x, y = _batch(dtype=np.float64)
    s = pruning.scores('grasp', _mlp, params, x, y)

    def kgrad(p):
      g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(_mlp(p, x), y).mean())(
        p
      )
      return {n: g[n]['kernel'] for n in ('dense1', 'dense2')}

    g = kgrad(params)
    eps = 1e-5

    def moved(sign):
      p = jax.tree.map(lambda v: v, params)
      for n in g:
        p[n] = dict(p[n], kernel=params[n]['kernel'] + sign * eps * g[n])
      return kgrad(p)

    plus, minus = moved(1.0), moved(-1.0)
    for n in g:
      hg = (plus[n] - minus[n]) / (2 * eps)
      want = -params[n]['kernel'] * hg
      np.testing.assert_allclose(s[n]['kernel'], want, rtol=1e-4, atol=1e-9)
      assert s[n]['bias'] is None


def test_synflow_is_data_free():
  params = _mlp_params()
  x1, _ = _batch(seed=1)
  x2, _ = _batch(seed=2)
  s1 = pruning.scores('synflow', _mlp, params, x1)
  s2 = pruning.scores('synflow', _mlp, params, x2 * 10)
  for n in ('dense1', 'dense2'):
    np.testing.assert_array_equal(s1[n]['kernel'], s2[n]['kernel'])
    assert (s1[n]['kernel'] >= 0).all()


def test_synflow_closed_form_two_layer_linear():
  """R = 1ᵀ|W1||W2|1 (x @ W1 @ W2, no biases): s(W1)ij = |W1ij| Σk |W2jk|,
  s(W2)jk = |W2jk| Σi |W1ij|, both divided by the global max."""
  p = _mlp_params(seed=3)
  params = {'l1': {'kernel': p['dense1']['kernel']}, 'l2': {'kernel': p['dense2']['kernel']}}
  w1, w2 = (np.abs(params[n]['kernel']).astype(np.float64) for n in ('l1', 'l2'))
  s1 = w1 * w2.sum(1)[None, :]
  s2 = w2 * w1.sum(0)[:, None]
  top = max(s1.max(), s2.max())
  s = pruning.scores('synflow', lambda p, x: x @ p['l1']['kernel'] @ p['l2']['kernel'],
                     params, np.zeros((4, D_IN), np.float32))  # fmt: skip
  np.testing.assert_allclose(s['l1']['kernel'], s1 / top, rtol=1e-6)
  np.testing.assert_allclose(s['l2']['kernel'], s2 / top, rtol=1e-6)


def test_synflow_deep_net_does_not_overflow():
  """16 layers of 16×16 weights ~100: R ~ 1600^16 overflows float32, not float64."""
  rng = np.random.default_rng(0)
  params = {f'l{i}': {'kernel': rng.uniform(50, 150, (16, 16)).astype(np.float32)}
            for i in range(16)}  # fmt: skip

  def deep(p, x):
    for i in range(16):
      x = x @ p[f'l{i}']['kernel']
    return x

  s = pruning.scores('synflow', deep, params, np.ones((2, 16), np.float32))
  allv = np.concatenate([np.ravel(v['kernel']) for v in s.values()])
  assert np.isfinite(allv).all() and allv.max() == 1.0 and allv.min() > 0


def test_magnitude_random_and_errors():
  params = _mlp_params()
  s = pruning.scores('magnitude', _mlp, params)
  np.testing.assert_array_equal(s['dense1']['kernel'], np.abs(params['dense1']['kernel']))
  r = pruning.scores('random', _mlp, params, key=jax.random.key(0))
  assert r['dense1']['kernel'].shape == (D_IN, HID) and r['dense2']['bias'] is None
  with pytest.raises(ValueError, match='key'):
    pruning.scores('random', _mlp, params)
  with pytest.raises(ValueError, match="'snap'.*synflow"):
    pruning.scores('snap', _mlp, params)


def _toy_scores():
  rng = np.random.default_rng(5)
  return {
    'a': {'kernel': jnp.asarray(rng.normal(size=(4, 5))), 'bias': None},
    'b': {'kernel': jnp.asarray(rng.normal(size=(5, 3)))},
  }


def _kept_and_dropped(s, m):
  sv = np.concatenate([np.ravel(s[n]['kernel']) for n in ('a', 'b')])
  mv = np.concatenate([np.ravel(m[n]['kernel']) for n in ('a', 'b')])
  return sv[mv], sv[~mv]


def test_masks_keep_highest_exact_count():
  s = _toy_scores()
  m = pruning.masks(s, 0.3)
  kept, dropped = _kept_and_dropped(s, m)
  assert len(kept) == round(0.3 * 35) and m['a']['bias'] is None
  assert m['a']['kernel'].dtype == jnp.bool_
  assert kept.min() > dropped.max()


def test_masks_grasp_keeps_lowest():
  s = _toy_scores()
  m = pruning.masks(s, 0.3, method='grasp')
  kept, dropped = _kept_and_dropped(s, m)
  assert len(kept) == round(0.3 * 35)
  assert kept.max() < dropped.min()


def test_masks_density_bounds_and_ties():
  s = _toy_scores()
  for bad in (0, 1.5):
    with pytest.raises(ValueError, match=f'density={bad}'):
      pruning.masks(s, bad)
  full = pruning.masks(s, 1.0)
  assert all(bool(v.all()) for v in jax.tree.leaves(full))
  assert (
    int(pruning.masks(s, 1e-6)['a']['kernel'].sum())
    + int(pruning.masks(s, 1e-6)['b']['kernel'].sum())
    == 1
  )
  ties = jax.tree.map(jnp.ones_like, s)
  m = pruning.masks(ties, 0.8)  # 28 of 35: all of a (first in tree order), then b's first 8
  assert bool(m['a']['kernel'].all()) and bool(m['b']['kernel'].ravel()[:8].all())
  assert not m['b']['kernel'].ravel()[8:].any()


def test_synflow_masks_one_round_equals_single_shot():
  params = _mlp_params()
  x, _ = _batch()
  it = pruning.synflow_masks(_mlp, params, x, 0.4, rounds=1)
  one = pruning.masks(pruning.scores('synflow', _mlp, params, x), 0.4)
  for n in ('dense1', 'dense2'):
    np.testing.assert_array_equal(it[n]['kernel'], one[n]['kernel'])
    assert it[n]['bias'] is None


def test_synflow_masks_rescore_each_round():
  """rounds=2 against a reference: keep √p on the first scores, rescore the masked net,
  keep p among the survivors; the final count is exact."""
  params = _mlp_params(seed=7)
  x, _ = _batch()
  d, n_all = 0.2, D_IN * HID + HID * OUT
  it = pruning.synflow_masks(_mlp, params, x, d, rounds=2)
  m1 = pruning.masks(pruning.scores('synflow', _mlp, params, x), d**0.5)
  masked = pruning.apply_masks(params, m1)
  s2 = pruning.scores('synflow', _mlp, masked, x)
  s2 = jax.tree.map(lambda v, m: jnp.where(m, v, -1.0), s2, m1)
  ref = pruning.masks(s2, d)
  total = sum(int(it[n]['kernel'].sum()) for n in ('dense1', 'dense2'))
  assert total == round(d * n_all)
  for n in ('dense1', 'dense2'):
    np.testing.assert_array_equal(it[n]['kernel'], ref[n]['kernel'])
    assert not (np.asarray(it[n]['kernel']) & ~np.asarray(m1[n]['kernel'])).any()
  many = pruning.synflow_masks(_mlp, params, x, d, rounds=20)
  assert sum(int(v.sum()) for v in jax.tree.leaves(many)) == round(d * n_all)


def test_synflow_masks_pruned_stay_pruned():
  """Round 1 keeps only W1[0, 1] (score 0.4; W1[0, 0] 0.2, W2 ≤ 0.2), which disconnects the
  net: in round 2 every score is 0. The survivor must stay kept, not the lower-index W1[0, 0]
  that was already pruned (pruned entries rank below every kept one)."""
  params = {
    'l1': {'kernel': np.array([[0.01, 10.0]], np.float32)},
    'l2': {'kernel': np.array([[10.0, 10.0], [0.02, 0.02]], np.float32)},
  }
  f = lambda p, x: x @ p['l1']['kernel'] @ p['l2']['kernel']
  m = pruning.synflow_masks(f, params, np.ones((1, 1), np.float32), 0.05, rounds=2)
  np.testing.assert_array_equal(m['l1']['kernel'], [[False, True]])
  assert not m['l2']['kernel'].any()


def test_layer_densities_and_shuffle_keep_counts():
  s = _toy_scores()
  m = pruning.masks(s, 0.4)
  dens = pruning.layer_densities(m)
  assert set(dens) == {'a/kernel', 'b/kernel'}
  assert dens['a/kernel'] == int(m['a']['kernel'].sum()) / 20
  assert dens['b/kernel'] == int(m['b']['kernel'].sum()) / 15
  sh = pruning.shuffle_masks(m, jax.random.key(0))
  assert sh['a']['bias'] is None
  assert pruning.layer_densities(sh) == dens
  assert any(not np.array_equal(sh[n]['kernel'], m[n]['kernel']) for n in ('a', 'b'))
  again = pruning.shuffle_masks(m, jax.random.key(0))
  for n in ('a', 'b'):
    np.testing.assert_array_equal(sh[n]['kernel'], again[n]['kernel'])
