"""GG initializer (arXiv 2506.00486): variance, fans, distribution, registry, schemes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

import initlab.init as ii
from initlab.init import gg
from initlab.init.specs import infer_spec

BETAS = (0.5, 1.0, 1.5, 2.0, 3.0, 8.0)


def _shapes_tree():
  # 2^20 draws each (one compilation): Dense (in, out), Conv (kh, kw, in, out), stacked
  # (layers, in, out) — whose fan_in is not in·kh·kw·layers.
  return {
    'dense': {'kernel': jnp.zeros((1024, 1024)), 'bias': jnp.ones((1024,))},
    'conv': {'kernel': jnp.zeros((4, 4, 64, 1024))},
    'stacked': {'kernel': jnp.zeros((4, 512, 512))},
  }


FAN_IN = {'dense': 1024, 'conv': 4 * 4 * 64, 'stacked': 512}
SHAPE = (512, 2048)


@pytest.mark.parametrize('beta', BETAS)
def test_fan_in_variance_through_rules(beta):
  out = ii.get_scheme('gg', beta=beta)(jax.random.key(int(10 * beta)), _shapes_tree())
  for name, fan in FAN_IN.items():
    w = np.asarray(out[name]['kernel'], np.float64)
    assert abs(fan * w.var() / 2.0 - 1) < 0.02, (name, fan * w.var())
    assert abs(w.mean()) < 5 * math.sqrt(2.0 / fan / w.size)
  np.testing.assert_array_equal(out['dense']['bias'], 1.0)  # kernels only


def test_fan_out_and_fan_avg_modes_use_the_conv_receptive_field():
  tree = {'conv': {'kernel': jnp.zeros((4, 4, 64, 1024))}}
  for mode, n in (
    ('fan_out', 16 * 1024),
    ('fan_avg', 16 * (64 + 1024) / 2),
    ('torch_shape0', 1024),
  ):
    w = ii.get_scheme('gg', beta=1.0, gain=1.0, mode=mode)(jax.random.key(1), tree)['conv'][
      'kernel'
    ]
    assert abs(n * float(jnp.var(w)) - 1) < 0.02, mode
  fans = lambda shape, **axes: tuple(gg.fan_size(shape, m, **axes) for m in ('fan_in', 'fan_out'))
  assert fans((3, 3, 64, 1800)) == (576, 16200)
  assert fans((4, 512, 256), batch_axis=0) == (512, 256)
  assert fans((8, 64, 3, 3), in_axis=1, out_axis=0) == (576, 72)  # torch layout
  assert gg.fan_size((8, 64, 3, 3), 'torch_shape0', in_axis=1, out_axis=0) == 8
  assert not hasattr(gg, 'compute_fans')  # one fan rule: ParamSpec.fans
  with pytest.raises(ValueError, match='axis 4 is out of range'):
    gg.fan_size((3, 3, 64, 8), in_axis=4)


@pytest.mark.parametrize('beta', BETAS + (0.3,))
def test_ks_against_scipy_gennorm(beta):
  w = np.asarray(gg.generalized_gaussian(beta)(jax.random.key(7), SHAPE), np.float64).ravel()
  alpha = gg.gg_alpha(beta, 2.0 / 512)
  assert stats.kstest(w[:200_000], stats.gennorm(beta, scale=alpha).cdf).pvalue > 1e-3


def test_jax_sampler_matches_scipy_gennorm():
  # α·jax.random.generalized_normal; its one compilation (~8 s on CPU) serves all three draws.
  beta, shape = 1.5, (64, 512)
  alpha = gg.gg_alpha(beta, 2.0 / 64)
  w = gg.generalized_gaussian(beta, sampler='jax')(jax.random.key(0), shape)
  w = np.asarray(w, np.float64).ravel()
  assert stats.kstest(w, stats.gennorm(beta, scale=alpha).cdf).pvalue > 1e-3
  assert 64 * w.var() == pytest.approx(2.0, rel=0.03)
  init = gg.generalized_gaussian(beta, sampler='jax', truncate=2.0)
  t = init(jax.random.key(1), shape)
  np.testing.assert_array_equal(
    init(jax.random.key(1), shape, jnp.bfloat16), t.astype(jnp.bfloat16)
  )
  kappa = gg.truncation_variance_factor(beta, 2.0)
  c = 2.0 * math.sqrt(2.0 / 64 / kappa)  # support ±c·σ/√κ, σ² = 2/64
  g = stats.gennorm(beta, scale=alpha / math.sqrt(kappa))
  cdf = lambda x: (g.cdf(np.clip(x, -c, c)) - g.cdf(-c)) / (g.cdf(c) - g.cdf(-c))
  t = np.asarray(t, np.float64).ravel()
  assert np.abs(t).max() <= c * (1 + 1e-6)
  assert stats.kstest(t, cdf).pvalue > 1e-3


def test_reference_alpha_values():
  # α = sqrt((ξ/n)·Γ(1/β)/Γ(3/β)) at n = 512, ξ = 2 (float64 values, 7 decimals).
  for beta, alpha in ((0.5, 0.0057054), (1.0, 0.0441942), (2.0, 0.0883883)):
    assert gg.gg_alpha(beta, 2.0 / 512) == pytest.approx(alpha, abs=5e-8)  # 7 decimals
  assert gg.gg_alpha(2.0, 2.0 / 512) == pytest.approx(math.sqrt(2) * 0.0625)
  # the initializer draws exactly α·(standard GG) with that α
  key = jax.random.key(3)
  w = gg.generalized_gaussian(0.5)(key, SHAPE)
  np.testing.assert_allclose(
    w, gg.gg_alpha(0.5, 2.0 / 512) * gg.standard_gg(key, 0.5, SHAPE), rtol=1e-6
  )


def test_beta_two_is_untruncated_he_normal():
  key_a, key_b = jax.random.key(0), jax.random.key(1)
  w = np.asarray(gg.generalized_gaussian(2.0)(key_a, SHAPE), np.float64).ravel()
  he = jax.nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')(key_b, SHAPE)
  he = np.asarray(he, np.float64).ravel()
  assert stats.ks_2samp(w[:200_000], he[:200_000]).pvalue > 1e-3
  assert w.var() / he.var() == pytest.approx(1, abs=0.01)
  assert abs(stats.kurtosis(w)) < 0.02 and np.abs(w).max() > 4 * math.sqrt(2 / 512)  # untruncated


@pytest.mark.parametrize('beta', (0.5, 2.0))
def test_truncation_keeps_the_variance(beta):
  w = np.asarray(gg.generalized_gaussian(beta, truncate=2.0)(jax.random.key(2), SHAPE), np.float64)
  kappa = gg.truncation_variance_factor(beta, 2.0)
  assert 512 * w.var() == pytest.approx(2.0, rel=0.02)
  assert np.abs(w).max() <= 2.0 * math.sqrt(2 / 512 / kappa) * (1 + 1e-6)
  if beta == 2.0:  # JAX's truncated-normal constant, and its he_normal statistics
    assert math.sqrt(kappa) == pytest.approx(0.87962566103423978, rel=1e-12)
    he = np.asarray(jax.nn.initializers.he_normal()(jax.random.key(5), SHAPE), np.float64)
    assert stats.ks_2samp(w.ravel()[:200_000], he.ravel()[:200_000]).pvalue > 1e-3


def test_dtypes():
  key = jax.random.key(0)
  w32 = gg.generalized_gaussian(1.0)(key, SHAPE)
  np.testing.assert_array_equal(
    gg.generalized_gaussian(1.0)(key, SHAPE, jnp.bfloat16), w32.astype(jnp.bfloat16)
  )
  with jax.enable_x64(True):
    w = gg.generalized_gaussian(1.0, gain=1.0)(key, (64, 64), jnp.float64)
    assert w.dtype == jnp.float64 and 64 * float(jnp.var(w)) == pytest.approx(1.0, rel=0.15)


@pytest.mark.parametrize(
  'kwargs, match',
  [
    (dict(beta=0.0), 'beta=0.0'),
    (dict(beta=float('nan')), 'beta=nan'),
    (dict(beta=1.0, mode='fan_geo'), "mode='fan_geo'.*fan_in"),
    (dict(beta=1.0, gain=-1.0), 'gain=-1.0'),
    (dict(beta=1.0, truncate=0.0), 'truncate=0.0'),
    (dict(beta=1.0, sampler='numpy'), "sampler='numpy'"),
  ],
)
def test_bad_options_name_the_value(kwargs, match):
  with pytest.raises(ValueError, match=match):
    gg.generalized_gaussian(**kwargs)


def test_one_dimensional_shape_is_an_error():
  with pytest.raises(ValueError, match='1-D tensor'):
    gg.generalized_gaussian(1.0)(jax.random.key(0), (16,))


def test_registry_names():
  assert repr(ii.get_initializer('gg', beta=1.5)) == 'gg(beta=1.5)'
  init = ii.get_initializer('generalized_gaussian', 1.5)
  assert jax.eval_shape(lambda k: init(k, (4, 3)), jax.random.key(0)).shape == (4, 3)
  assert 'gg' in ii.scheme_names() and 'gg_model' in ii.scheme_names()


def test_gg_model_rules_and_embeddings():
  tree = {
    'embed': {'embedding': jnp.zeros((1024, 1024))},
    'dense': {'kernel': jnp.zeros((64, 32)), 'bias': jnp.ones((32,))},
    'layer_norm': {'scale': jnp.zeros((32,)), 'bias': jnp.ones((32,))},
  }
  key = jax.random.key(4)
  out = ii.get_scheme('gg_model', beta=1.0)(key, tree)
  np.testing.assert_array_equal(out['embed']['embedding'], 0)  # excluded by default
  same = ii.get_scheme('gg', beta=1.0)(key, tree)['dense']['kernel']
  np.testing.assert_array_equal(out['dense']['kernel'], same)
  np.testing.assert_array_equal(out['dense']['bias'], 0)
  np.testing.assert_array_equal(out['layer_norm']['scale'], 1)
  np.testing.assert_array_equal(out['layer_norm']['bias'], 0)
  tree['embed']['embedding'] = jnp.zeros((2048, 512))
  # the general rule (Flax's nn.Embed, PyTorch): fan_in = features D; the authors' gg_init reads
  # n = shape[0] = vocab V, only on request (embedding_fan_in="vocab" or mode="torch_shape0")
  assert infer_spec('embed/embedding', (2048, 512)).fans((2048, 512))[0] == 512
  for n, opts in (
    (512, {}),
    (2048, dict(embedding_fan_in='vocab')),
    (2048, dict(mode='torch_shape0')),
    (2048, dict(mode='torch_shape0', embedding_fan_in='vocab')),
  ):
    emb = ii.get_scheme('gg_model', beta=1.0, include_embeddings=True, **opts)(key, tree)
    assert n * float(jnp.var(emb['embed']['embedding'])) == pytest.approx(2.0, rel=0.02), opts
  with pytest.raises(ValueError, match="embedding_fan_in='rows'.*features"):
    ii.get_scheme('gg_model', embedding_fan_in='rows')


def test_works_on_abstract_nnx_state():
  class Net(nnx.Module):
    def __init__(self, rngs):
      self.conv = nnx.Conv(3, 16, (3, 3), rngs=rngs)
      self.dense = nnx.Linear(64, 10, rngs=rngs)

  # abstract (no default init is compiled); Rules materializes the matched kernels
  state = nnx.state(nnx.eval_shape(lambda: Net(nnx.Rngs(0))), nnx.Param)
  out = ii.get_scheme('gg', beta=0.5)(jax.random.key(0), state)
  k = out['conv']['kernel'][...]
  assert isinstance(k, jax.Array) and k.shape == (3, 3, 3, 16) and float(jnp.std(k)) > 0


def test_sharded_init_is_identical_on_1_and_8_devices(devices):
  class Net(nnx.Module):
    def __init__(self, rngs):
      part, inits = nnx.with_partitioning, nnx.initializers
      self.embed = nnx.Embed(
        256, 64, rngs=rngs, embedding_init=part(inits.normal(1.0), ('vocab', 'embed'))
      )
      self.up = nnx.Linear(
        64, 128, rngs=rngs, kernel_init=part(inits.lecun_normal(), ('embed', 'mlp'))
      )

  rules = [('embed', 'data'), ('mlp', 'model'), ('vocab', 'model')]
  scheme = ii.get_scheme('gg_model', beta=0.7, include_embeddings=True)
  out = {}
  for n in (1, 8):
    mesh = ii.make_mesh((('data', -1), ('model', 2 if n > 1 else 1)), devices=devices[:n])
    model = ii.create_sharded(
      Net, mesh=mesh, axis_rules=rules, key=jax.random.key(2), scheme=scheme
    )
    out[n] = {l.path: l.value for l in ii.leaves(nnx.state(model, nnx.Param))}
  for path, value in out[8].items():
    assert len(value.sharding.device_set) == 8 or value.ndim < 2, path
    np.testing.assert_array_equal(np.asarray(value), np.asarray(out[1][path]), err_msg=path)
  assert 64 * float(jnp.var(out[8]['up/kernel'])) == pytest.approx(2, rel=0.1)
