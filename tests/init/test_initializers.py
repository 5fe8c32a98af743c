"""Every initializer against its formula (≥1e6 draws) or an independent numpy reference:
variance scaling (He et al. 2015, arXiv 1502.01852), orthogonal (arXiv 1312.6120),
delta-orthogonal (arXiv 1806.05393), ZerO (arXiv 2110.12661, Algorithm 1), Fixup (arXiv 1901.09321)."""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import initlab.init as ii

# (name, shape, spec) — a Dense, a 3×3 Conv and a stacked (scanned) Dense kernel.
LAYOUTS = {
  'dense': ((1024, 1024), ii.ParamSpec('kernel', (0,), (1,))),
  'conv3x3': ((3, 3, 96, 1280), ii.ParamSpec('kernel', (2,), (3,))),
  'stacked': ((4, 384, 768), ii.ParamSpec('kernel', (1,), (2,), (0,))),
}


def _fans(layout):
  shape, spec = LAYOUTS[layout]
  return spec.fans(shape)


def _expected_var(name, fan_in, fan_out):
  avg = (fan_in + fan_out) / 2
  return {
    'lecun_normal': 1 / fan_in,
    'lecun_uniform': 1 / fan_in,
    'glorot_normal': 1 / avg,
    'glorot_uniform': 1 / avg,
    'xavier_normal': 1 / avg,
    'xavier_uniform': 1 / avg,
    'he_normal': 2 / fan_in,
    'he_uniform': 2 / fan_in,
    'kaiming_normal': 2 / fan_in,
    'kaiming_uniform': 2 / fan_in,
  }[name]


def _draw(init, layout, key=0):
  shape, spec = LAYOUTS[layout]
  rules = ii.Rules([('.*', init)], specs={'.*': spec})
  return np.asarray(rules(jax.random.key(key), {'w': jnp.zeros(shape)})['w'], np.float64)


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
@pytest.mark.parametrize(
  'name',
  [
    'lecun_normal',
    'lecun_uniform',
    'glorot_normal',
    'glorot_uniform',
    'he_normal',
    'he_uniform',
    'xavier_normal',
    'kaiming_uniform',
  ],
)
def test_variance_scaling_family(name, layout):
  w = _draw(getattr(ii, name)(), layout)
  assert w.size >= 1_000_000
  expected = _expected_var(name, *_fans(layout))
  assert abs(w.var() / expected - 1) < 0.02, (name, layout, w.var(), expected)


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
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


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
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
  assert np.all(ii.zeros(jax.random.key(0), (3, 4)) == 0)
  assert np.all(ii.ones(jax.random.key(0), (3, 4)) == 1)
  assert np.all(ii.constant(0.5)(jax.random.key(0), (3, 4)) == 0.5)


def test_conv_fans_from_rules():
  spec = ii.infer_spec('conv/kernel', (3, 3, 16, 32))
  assert spec.fans((3, 3, 16, 32)) == (144, 288)
  stacked = ii.infer_spec('blocks/mlp/kernel', (6, 64, 256), ('layers', 'embed', 'mlp'))
  assert stacked.fans((6, 64, 256)) == (64, 256) and stacked.batch_axes == (0,)
  q = ii.infer_spec('attn/query/kernel', (64, 4, 16))
  o = ii.infer_spec('attn/out/kernel', (4, 16, 64))
  assert q.fans((64, 4, 16)) == (64, 64) and o.fans((4, 16, 64)) == (64, 64)


def _np_hadamard(n):
  """n×n Sylvester–Hadamard matrix from its closed form H[i, j] = (-1)^popcount(i & j)."""
  i, j = np.meshgrid(np.arange(n), np.arange(n), indexing='ij')
  return (-1.0) ** np.vectorize(lambda v: bin(v).count('1'))(i & j)


def test_zero_matrix_cases():
  np.testing.assert_array_equal(ii.zero_matrix(8, 8), np.eye(8))
  np.testing.assert_array_equal(ii.zero_matrix(8, 4), np.eye(8, 4))  # out < in: partial identity
  w = ii.zero_matrix(3, 6)  # out > in: m = ⌈log₂ 6⌉ = 3, c = 2^{-m/2}
  np.testing.assert_allclose(w, 2.0**-1.5 * _np_hadamard(8)[:6, :3].T, rtol=1e-15)
  assert w.shape == (3, 6)


@pytest.mark.parametrize('fan_in,fan_out', [(16, 64), (3, 8), (5, 6), (24, 100)])
def test_zero_expanding_layer_is_a_contraction_or_isometry(fan_in, fan_out):
  """Algorithm 1 with c = 2^{-m/2}: c·H_m is orthogonal, so W = c·I*·H_m·I* has singular values
  ≤ 1, all exactly 1 when out = 2^m. (The old c = 2^{-(m-1)/2} gave √2.)"""
  sv = np.linalg.svd(np.asarray(ii.zero_matrix(fan_in, fan_out), np.float64), compute_uv=False)
  assert sv.max() <= 1 + 1e-12, sv
  if fan_out & (fan_out - 1) == 0:
    np.testing.assert_allclose(sv, 1.0, rtol=1e-12)
  k = np.asarray(ii.zero_hadamard()(None, (3, 3, fan_in, fan_out)), np.float64)
  np.testing.assert_allclose(k[1, 1], ii.zero_matrix(fan_in, fan_out), rtol=1e-6)


def test_zero_is_deterministic_and_conv_centred():
  k = ii.zero_hadamard()(jax.random.key(0), (3, 3, 4, 4))
  k2 = ii.zero_hadamard()(jax.random.key(7), (3, 3, 4, 4))
  np.testing.assert_array_equal(k, k2)
  np.testing.assert_array_equal(k[1, 1], np.eye(4))
  assert float(jnp.abs(k).sum()) == 4.0
  stacked = ii.Rules([('.*', ii.zero_hadamard())])(
    jax.random.key(0), {'scan': {'kernel': jnp.zeros((3, 5, 5))}}
  )
  np.testing.assert_array_equal(stacked['scan']['kernel'], np.broadcast_to(np.eye(5), (3, 5, 5)))


def test_delta_orthogonal():
  k = np.array(ii.delta_orthogonal(scale=2.0)(jax.random.key(0), (3, 3, 16, 32)))
  centre = k[1, 1]
  np.testing.assert_allclose(centre @ centre.T, 4 * np.eye(16), atol=1e-4)
  k[1, 1] = 0
  assert np.all(k == 0)
  with pytest.raises(ValueError, match='in_channels'):
    ii.delta_orthogonal()(jax.random.key(0), (3, 3, 32, 16))
  with pytest.raises(ValueError, match='conv kernel'):
    ii.delta_orthogonal()(jax.random.key(0), (32, 16))


# Grouped convs: Flax kernel (kh, kw, in/g, out); group j = output channels [j·out/g, (j+1)·out/g).
def _group_blocks(tap, groups):
  per = tap.shape[-1] // groups
  return [tap[..., j * per : (j + 1) * per] for j in range(groups)]


def test_depthwise_structured_inits_are_per_channel_identities():
  c = 32  # depthwise: in/g = 1, g = c
  k = np.array(
    ii.delta_orthogonal(scale=1.5, feature_group_count=c)(jax.random.key(0), (3, 3, 1, c))
  )
  np.testing.assert_allclose(np.abs(k[1, 1]), 1.5, rtol=1e-6)  # ±scale per channel, not rms 1.5/√c
  k[1, 1] = 0
  assert np.all(k == 0)
  z = np.asarray(ii.zero_hadamard(feature_group_count=c)(None, (3, 3, 1, c)))
  np.testing.assert_array_equal(z[1, 1], np.ones((1, c)))  # identity per channel
  assert np.abs(z).sum() == c
  o = np.asarray(ii.orthogonal(feature_group_count=c)(jax.random.key(1), (3, 3, 1, c)))
  np.testing.assert_allclose(
    np.linalg.norm(o.reshape(9, c), axis=0), 1.0, rtol=1e-5
  )  # unit column per channel


def test_grouped_structured_inits_per_group_blocks():
  g, shape = 4, (3, 3, 8, 32)  # in/g = 8, out/g = 8
  tap = np.asarray(ii.delta_orthogonal(scale=2.0, feature_group_count=g)(jax.random.key(0), shape))[
    1, 1
  ]
  blocks = _group_blocks(tap, g)
  for b in blocks:
    np.testing.assert_allclose(b @ b.T, 4 * np.eye(8), atol=1e-4)
  assert not np.allclose(blocks[0], blocks[1])  # each group its own draw
  z = np.asarray(ii.zero_hadamard(feature_group_count=g)(None, shape))[1, 1]
  for b in _group_blocks(z, g):
    np.testing.assert_array_equal(b, np.eye(8))
  w = np.asarray(ii.orthogonal(scale=1.5, feature_group_count=g)(jax.random.key(2), shape)).reshape(
    72, 32
  )
  for b in _group_blocks(w, g):  # (kh·kw·in/g = 72, out/g = 8): orthonormal columns
    np.testing.assert_allclose(b.T @ b, 1.5**2 * np.eye(8), atol=1e-4)
  # Ungrouped, the same kernel is one (72, 32) semi-orthogonal matrix: group blocks are not independent.
  one = np.asarray(ii.orthogonal()(jax.random.key(2), shape)).reshape(72, 32)
  np.testing.assert_allclose(one.T @ one, np.eye(32), atol=1e-4)
  with pytest.raises(ValueError, match='feature_group_count=3 does not divide the 32'):
    ii.delta_orthogonal(feature_group_count=3)(jax.random.key(0), shape)
  with pytest.raises(ValueError, match='per group'):
    ii.delta_orthogonal(feature_group_count=8)(jax.random.key(0), shape)  # in/g 8 > out/g 4


def test_grouped_inits_through_rules_use_the_kernel_spec():
  tree = {'dw': {'kernel': jnp.zeros((3, 3, 1, 16))}}
  out = ii.Rules([('dw/kernel', ii.delta_orthogonal(feature_group_count=16))])(
    jax.random.key(0), tree
  )
  np.testing.assert_allclose(np.abs(np.asarray(out['dw']['kernel'])[1, 1]), 1.0, rtol=1e-6)


def test_structured_inits_leave_stacking_to_rules():
  for init in (
    ii.orthogonal(batch_axis=0),
    ii.delta_orthogonal(batch_axis=0),
    ii.zero_hadamard(batch_axis=0),
  ):
    with pytest.raises(ValueError, match='batch_axis=0 is not supported in a direct call.*Rules'):
      init(jax.random.key(0), (2, 3, 3, 4, 4))
  # Through Rules, a stacked kernel's slice i is the initializer on that layer with fold_in(key, i).
  tree = {'blocks': {'kernel': jnp.zeros((3, 8, 8))}}
  spec = ii.ParamSpec('kernel', (1,), (2,), (0,))
  out = ii.Rules([('.*', ii.orthogonal())], specs={'.*': spec})(jax.random.key(0), tree)['blocks'][
    'kernel'
  ]
  leaf_key = ii.leaf_key(jax.random.key(0), 'blocks/kernel')
  for i in range(3):
    np.testing.assert_array_equal(out[i], ii.orthogonal()(jax.random.fold_in(leaf_key, i), (8, 8)))


JAX_NAMES = sorted(
  n
  for n in set(dir(jax.nn.initializers)) & set(dir(ii))
  if not n.startswith('_') and inspect.isfunction(getattr(jax.nn.initializers, n))
)


def _is_initializer(fn):
  """An initializer is called as fn(key, shape, ...); a factory returns one."""
  return list(inspect.signature(fn).parameters)[:2] == ['key', 'shape']


def test_names_shared_with_jax_follow_jax():
  assert {'zeros', 'ones', 'he_normal', 'orthogonal', 'delta_orthogonal', 'constant'} <= set(
    JAX_NAMES
  )
  for name in JAX_NAMES:
    ours, theirs = getattr(ii, name), getattr(jax.nn.initializers, name)
    assert _is_initializer(ours) == _is_initializer(theirs), name
  assert ii.zeros is jax.nn.initializers.zeros and ii.ones is jax.nn.initializers.ones
  out = ii.Rules([(r'.*bias', ii.zeros), (r'.*kernel', ii.ones)])(
    jax.random.key(0), {'d': {'kernel': jnp.zeros((3, 4)), 'bias': jnp.ones((4,))}}
  )
  assert np.all(out['d']['bias'] == 0) and np.all(out['d']['kernel'] == 1)
  # Same numbers as JAX for a Flax (in, out) kernel and the same key.
  key = jax.random.key(5)
  for name in ('he_normal', 'lecun_uniform', 'glorot_normal', 'orthogonal'):
    np.testing.assert_array_equal(
      getattr(ii, name)()(key, (16, 8)), getattr(jax.nn.initializers, name)()(key, (16, 8))
    )


def test_zero_o_is_not_confusable_with_zeros():
  assert not hasattr(ii, 'zero')
  with pytest.warns(FutureWarning, match="'zero' is renamed to 'zero_hadamard'"):
    init = ii.get_initializer('zero')
  np.testing.assert_array_equal(init(None, (4, 4)), np.eye(4))
