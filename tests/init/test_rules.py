"""Rules: first match wins, path-hashed keys, any tree type, clear errors."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import initlab.init as ii


def _tree():
  return {
    'conv': {'kernel': jnp.zeros((3, 3, 8, 16)), 'bias': jnp.ones((16,))},
    'dense': {'kernel': jnp.zeros((32, 10)), 'bias': jnp.ones((10,))},
    'norm': {'scale': jnp.zeros((16,))},
  }


def test_first_match_wins_and_unmatched_keep_value():
  rules = ii.Rules([(r'dense/kernel', ii.zeros), (r'.*kernel', ii.ones), (r'.*bias', ii.zeros)])
  out = rules(jax.random.key(0), _tree())
  assert np.all(out['dense']['kernel'] == 0) and np.all(out['conv']['kernel'] == 1)
  assert np.all(out['conv']['bias'] == 0) and np.all(out['norm']['scale'] == 0)


def test_same_numbers_regardless_of_tree_order_or_other_leaves():
  key = jax.random.key(3)
  a = {'x': {'kernel': jnp.zeros((16, 16))}, 'y': {'kernel': jnp.zeros((16, 4))}}
  b = {
    'y': {'kernel': jnp.zeros((16, 4))},
    'x': {'kernel': jnp.zeros((16, 16))},
    'z': {'kernel': jnp.zeros((4, 4))},
  }
  rules = ii.Rules([('.*kernel', ii.he_normal())])
  ra, rb = rules(key, a), rules(key, b)
  for name in ('x', 'y'):
    np.testing.assert_array_equal(ra[name]['kernel'], rb[name]['kernel'])
  assert not np.array_equal(ra['x']['kernel'][:4, :4], rb['z']['kernel'])


def test_nnx_state_linen_and_plain_dict_agree():
  key = jax.random.key(0)

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.dense = nnx.Linear(32, 10, rngs=rngs)

  state = nnx.state(Net(nnx.Rngs(1)), nnx.Param)
  plain = {'dense': {'kernel': jnp.zeros((32, 10)), 'bias': jnp.zeros((10,))}}
  linen = {
    'dense': {
      'kernel': nn.Partitioned(jnp.zeros((32, 10)), ('embed', 'mlp')),
      'bias': jnp.zeros((10,)),
    }
  }
  rules = ii.Rules([(r'dense/kernel', ii.orthogonal())])
  from_state = rules(key, state)['dense']['kernel'][...]
  from_plain = rules(key, plain)['dense']['kernel']
  from_linen = rules(key, linen)['dense']['kernel']
  assert isinstance(from_linen, nn.Partitioned) and from_linen.names == ('embed', 'mlp')
  np.testing.assert_array_equal(from_state, from_plain)
  np.testing.assert_array_equal(from_linen.value, from_plain)


def test_roles_filter_and_named_scheme():
  out = ii.get_scheme('ones')(jax.random.key(0), _tree())
  assert np.all(out['conv']['kernel'] == 1) and np.all(out['dense']['kernel'] == 1)
  assert np.all(out['conv']['bias'] == 1) and np.all(out['norm']['scale'] == 0)  # untouched
  out = ii.Rules([('.*', ii.zeros)], roles=('bias',))(jax.random.key(0), _tree())
  assert np.all(out['conv']['bias'] == 0) and np.all(out['norm']['scale'] == 0)


def test_unknown_names_and_unmatched_rules_raise():
  with pytest.raises(KeyError, match="unknown init scheme 'nope'.*orthogonal"):
    ii.get_scheme('nope')
  with pytest.raises(KeyError, match="unknown initializer 'nope'.*he_normal"):
    ii.get_initializer('nope')
  with pytest.raises(ValueError, match=r"rule 'attn/.\*' matched no param.*conv/kernel"):
    ii.Rules([(r'attn/.*', ii.zeros)])(jax.random.key(0), _tree())


def test_uninferable_layout_names_the_path():
  tree = {'odd': {'kernel': jnp.zeros((7,))}, 'weird': {'thing': jnp.zeros((3, 3))}}
  with pytest.raises(ii.LayoutError, match='odd/kernel'):
    ii.Rules([(r'odd/kernel', ii.he_normal())])(jax.random.key(0), tree)
  with pytest.raises(ii.LayoutError, match='weird/thing'):
    ii.Rules([(r'weird/thing', ii.he_normal())])(jax.random.key(0), tree)
  with pytest.raises(ii.LayoutError, match='logical axis names'):
    ii.infer_spec('a/kernel', (3, 4), ('embed',))
  # an explicit spec makes it work
  rules = ii.Rules(
    [(r'weird/thing', ii.he_normal())], specs={r'weird/thing': ii.ParamSpec('kernel', (0,), (1,))}
  )
  assert rules(jax.random.key(0), tree)['weird']['thing'].std() > 0


def test_abstract_tree_materializes_matched_leaves():
  abstract = {'d': {'kernel': jax.ShapeDtypeStruct((8, 4), jnp.bfloat16)}}
  out = ii.Rules([('.*', ii.lecun_normal())])(jax.random.key(0), abstract)
  assert out['d']['kernel'].dtype == jnp.bfloat16 and out['d']['kernel'].shape == (8, 4)


def test_chain_and_model_level_schemes():
  tree = {
    'block': {
      'conv1': {'kernel': jnp.zeros((3, 3, 4, 4))},
      'conv2': {'kernel': jnp.zeros((3, 3, 4, 4))},
    },
    'head': {'kernel': jnp.zeros((4, 10))},
  }
  ctx = ii.InitContext(
    hints={
      'residual_final': r'block/conv2/kernel',
      'classifier': r'head/kernel',
      'residual_branch': r'block/conv\d/kernel',
      'num_branches': 16,
      'branch_layers': 2,
    }
  )
  out = ii.get_scheme('fixup')(jax.random.key(0), tree, ctx)
  assert np.all(out['head']['kernel'] == 0) and np.all(out['block']['conv2']['kernel'] == 0)
  assert float(out['block']['conv1']['kernel'].std()) > 0
  out = ii.get_scheme('zero_full')(jax.random.key(0), tree, ctx)
  np.testing.assert_array_equal(out['block']['conv1']['kernel'][1, 1], np.eye(4))
  assert np.all(out['block']['conv2']['kernel'] == 0)
  with pytest.raises(KeyError, match="needs the model hint 'classifier'"):
    ii.get_scheme('fixup')(jax.random.key(0), tree, ii.InitContext())
  chained = ii.chain(ii.get_scheme('ones'), ii.Rules([('head/kernel', ii.zeros)]))
  out = chained(jax.random.key(0), tree)
  assert np.all(out['head']['kernel'] == 0) and np.all(out['block']['conv1']['kernel'] == 1)


def test_chain_warns_when_a_scheme_is_fully_overwritten():
  tree = {
    'block': {
      'conv1': {'kernel': jnp.zeros((3, 3, 4, 4))},
      'conv2': {'kernel': jnp.zeros((3, 3, 4, 4))},
    },
    'head': {'kernel': jnp.zeros((4, 10))},
  }
  ctx = ii.InitContext(
    hints={
      'residual_final': r'block/conv2/kernel',
      'classifier': r'head/kernel',
      'residual_branch': r'block/conv\d/kernel',
      'num_branches': 4,
      'branch_layers': 2,
    }
  )
  key = jax.random.key(0)
  with pytest.warns(UserWarning, match=r'every param that scheme 0 \(Rules.*orthogonal.*no effect'):
    out = ii.chain(ii.get_scheme('orthogonal'), ii.get_scheme('fixup'))(key, tree, ctx)
  # ... and indeed it equals the second scheme alone (with the chain's key for step 1).
  alone = ii.get_scheme('fixup')(jax.random.fold_in(key, 1), tree, ctx)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(alone)):
    np.testing.assert_array_equal(a, b)
  # General first, narrower after: both take effect, no warning.
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    out = ii.chain(ii.get_scheme('he_normal'), ii.Rules([(r'block/.*kernel', ii.orthogonal())]))(
      key, tree
    )
  w = np.asarray(out['block']['conv1']['kernel']).reshape(36, 4)
  np.testing.assert_allclose(w.T @ w, np.eye(4), atol=1e-5)
  assert float(out['head']['kernel'].std()) > 0
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    ii.chain(ii.get_scheme('orthogonal'), ii.get_scheme('fixup'), warn=False)(key, tree, ctx)


def test_unnamed_3d_kernel_outside_attention_is_refused():
  """A Linen nn.scan stack (6, 128, 128) is not a 1-D conv: refuse instead of fan_in 768."""
  tree = {'encoder': {'mlp': {'kernel': jnp.zeros((6, 128, 128))}}}
  with pytest.raises(
    ii.LayoutError, match=r"encoder/mlp/kernel.*\(6, 128, 128\).*'layers'.*specs="
  ):
    ii.Rules([('.*', ii.he_normal())])(jax.random.key(0), tree)
  with pytest.raises(ii.LayoutError, match='encoder/mlp/kernel'):
    ii.infer_spec('encoder/mlp/kernel', (6, 128, 128), ('embed', 'mlp', None))
  # Named axes, a 'scan' container, an explicit spec, or a conv module all say what it is.
  assert ii.infer_spec('encoder/mlp/kernel', (6, 128, 128), ('layers', 'embed', 'mlp')).fans(
    (6, 128, 128)
  ) == (128, 128)
  assert ii.infer_spec('scan/mlp/kernel', (6, 128, 128)).fans((6, 128, 128)) == (128, 128)
  assert ii.infer_spec('conv1d/kernel', (3, 16, 32)).fans((3, 16, 32)) == (48, 96)
  assert ii.infer_spec('attn/query/kernel', (64, 4, 16)).fans((64, 4, 16)) == (64, 64)
  spec = ii.ParamSpec('kernel', (1,), (2,), (0,))
  w = ii.Rules([('.*', ii.he_normal())], specs={'.*': spec})(jax.random.key(0), tree)['encoder'][
    'mlp'
  ]['kernel']
  assert abs(float(jnp.var(w)) * 128 / 2 - 1) < 0.05


def test_embedding_fans_follow_flax():
  """(V, D) embedding: fan_in = D (Flax nn.Embed, PyTorch), fan_out = V; 'vocab' only on request."""
  v, d = 1000, 96
  spec = ii.infer_spec('token_embed/embedding', (v, d), ('vocab', 'embed'))
  assert spec.fans((v, d)) == (d, v)
  assert ii.infer_spec('cls_token/embedding', (1, d)).fans((1, d)) == (d, 1)
  assert ii.infer_spec('e/embedding', (v, d), embedding_fan_in='vocab').fans((v, d)) == (v, d)
  tree = {'e': {'embedding': jnp.zeros((v, d))}}
  w = ii.Rules([('.*', ii.he_normal())])(jax.random.key(0), tree)['e']['embedding']
  assert abs(float(jnp.var(w)) * d / 2 - 1) < 0.02  # Var = 2/D (was 2/V: 10× too small)
  flax_w = nn.Embed(v, d).init(jax.random.key(1), jnp.zeros((1,), jnp.int32))['params']['embedding']
  lecun = ii.Rules([('.*', ii.variance_scaling(1.0, 'fan_in', 'normal'))])(jax.random.key(0), tree)[
    'e'
  ]['embedding']
  assert (
    abs(float(jnp.var(lecun)) / float(jnp.var(flax_w)) - 1) < 0.03
  )  # same law as Flax's own default
  vocab = ii.Rules([('.*', ii.he_normal())], embedding_fan_in='vocab')(jax.random.key(0), tree)[
    'e'
  ]['embedding']
  assert abs(float(jnp.var(vocab)) * v / 2 - 1) < 0.02
  with pytest.raises(ValueError, match="embedding_fan_in='V'.*features"):
    ii.Rules([], embedding_fan_in='V')
