"""HNN++ Poincaré FC layer (arXiv 2006.08210 §3.2) and its inits: the identity init of Poincaré
ResNet (arXiv 2303.14027) is the identity map and keeps tangent norms through 30 layers, where
HNN++'s standard init collapses to the origin."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from initlab import hyperbolic as hb
from initlab import init as ii
from initlab.hyperbolic import fc
from initlab.hyperbolic.fc import poincare_fc
from initlab.models.poincare import PoincareLinear


def np_fc(x, z, r, c):
  """Textbook float64 HNN++ FC (without the final projection)."""
  sc = np.sqrt(c)
  lam = 2 / (1 - c * np.sum(x * x, -1, keepdims=True))
  zn = np.linalg.norm(z, axis=0)
  v = (
    2
    * zn
    / sc
    * np.arcsinh(sc * lam * (x @ (z / zn)) * np.cosh(2 * sc * r) - (lam - 1) * np.sinh(2 * sc * r))
  )
  w = np.sinh(sc * v) / sc
  return w / (1 + np.sqrt(1 + c * np.sum(w * w, -1, keepdims=True)))


def ball(rng, n, d, c, rmax=0.95):
  u = rng.normal(size=(n, d))
  u /= np.linalg.norm(u, axis=-1, keepdims=True)
  return u * rng.uniform(0, rmax, size=(n, 1)) / np.sqrt(c)


def layer(n, m, scheme=None, c=1.0, param_dtype=jnp.float32, **options):
  with nnx.use_eager_sharding(False):
    mod = PoincareLinear(n, m, c=c, param_dtype=param_dtype, rngs=nnx.Rngs(0))
  if scheme:
    params = ii.get_scheme(scheme, **options)(jax.random.key(1), nnx.state(mod, nnx.Param))
    nnx.update(mod, params)
  return mod


@pytest.mark.parametrize('c', [1.0, 0.1])
def test_fc_equals_numpy_float64(c):
  rng = np.random.default_rng(0)
  x = ball(rng, 16, 6, c)
  z, r = rng.normal(size=(6, 5)) * 0.4, rng.normal(size=5) * 0.3
  with jax.enable_x64(True):
    y = poincare_fc(x, z, r, c)
    assert y.dtype == jnp.float64
    ref = np_fc(x, z, r, c)
    assert np.max(np.sqrt(c) * np.linalg.norm(ref, axis=-1)) < 1 - hb.proj_eps(np.float64)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('c', [1.0, 0.1])
def test_identity_init_is_the_identity_map(c):
  rng = np.random.default_rng(1)
  x = ball(rng, 64, 16, c, rmax=0.99)
  mod = layer(16, 16, 'poincare_identity', c=c)
  np.testing.assert_array_equal(mod.kernel[...], 0.5 * np.eye(16))
  np.testing.assert_array_equal(mod.bias[...], 0)
  np.testing.assert_allclose(mod(x.astype(np.float32)), x, atol=1e-6)
  with jax.enable_x64(True):
    mod64 = layer(16, 16, 'poincare_identity', c=c, param_dtype=jnp.float64)
    np.testing.assert_allclose(mod64(x), x, atol=1e-14)
    # expanding: (x, 0); contracting keeps x when the dropped coordinates are 0
    np.testing.assert_allclose(layer(16, 24, 'poincare_identity', c=c)(x)[:, :16], x, atol=1e-14)
    np.testing.assert_allclose(layer(16, 24, 'poincare_identity', c=c)(x)[:, 16:], 0, atol=1e-14)
    xs = np.concatenate([x[:, :8], np.zeros((64, 8))], -1)
    np.testing.assert_allclose(layer(16, 8, 'poincare_identity', c=c)(xs), x[:, :8], atol=1e-14)


def _tangent_norm_after(scheme, depth=30, c=1.0):
  """Mean tangent norm after each of `depth` stacked exp₀ → FC → log₀ layers (64-d,
  batch 256, tangent inputs of norm 1), float32."""
  rng = np.random.default_rng(2)
  v = rng.normal(size=(256, 64)).astype(np.float32)
  v /= np.linalg.norm(v, axis=-1, keepdims=True)
  mods = []
  for i in range(depth):
    with nnx.use_eager_sharding(False):
      mod = PoincareLinear(64, 64, c=c, rngs=nnx.Rngs(i))
    if scheme:
      nnx.update(mod, ii.get_scheme(scheme)(jax.random.key(i), nnx.state(mod, nnx.Param)))
    mods.append(mod)
  norms = []
  for mod in mods:
    v = hb.logmap0(mod(hb.expmap0(v, c)), c)
    norms.append(float(jnp.mean(jnp.linalg.norm(v, axis=-1))))
  return np.array(norms)


@pytest.mark.parametrize('c', [1.0, 0.1])
def test_identity_init_keeps_norm_through_30_layers_standard_collapses(c):
  ident = _tangent_norm_after('poincare_identity', c=c)
  assert np.all(ident >= 0.98), ident
  np.testing.assert_allclose(ident, 1.0, atol=1e-4)
  std = _tangent_norm_after(None, c=c)  # the module's own init: HNN++ standard
  assert std[-1] < 1e-3, std
  assert np.all(np.diff(std) <= 0) and std[4] < 1e-3, std  # 3e-4 after 5 layers at c = 1
  hnn = _tangent_norm_after('hnnpp', c=c)
  assert hnn[-1] < 1e-3, hnn


def test_identity_gradients_finite_with_zero_columns():
  """½·eye(8, 12) has four zero columns (‖z_k‖ = 0): values and gradients stay finite."""
  mod = layer(8, 12, 'poincare_identity')
  x = ball(np.random.default_rng(3), 4, 8, 1.0).astype(np.float32)
  x[0] = 0

  def loss(z, r, x):
    return jnp.sum(poincare_fc(x, z, r, 1.0) ** 2)

  grads = jax.jit(jax.grad(loss, (0, 1, 2)))(mod.kernel[...], mod.bias[...], x)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_init_shapes_and_options():
  key = jax.random.key(0)
  pid = lambda **o: np.asarray(ii.get_initializer('poincare_identity', **o)(key, shp))
  shp = (5, 7)
  np.testing.assert_array_equal(pid(), 0.5 * np.eye(5, 7))
  shp = (7, 5)
  np.testing.assert_array_equal(pid(), 0.5 * np.eye(7, 5))
  hnn = np.asarray(ii.get_initializer('hnnpp')(key, shp))
  np.testing.assert_array_equal(pid(when='expanding'), hnn)  # HypLL: n > m -> standard
  shp = (3, 3, 4, 40)  # conv kernel: K = 9, n = 36 rows in channel-major order c·K + p
  ref = pid()
  h, w, c, o = np.nonzero(ref)
  np.testing.assert_array_equal(o, c * 9 + h * 3 + w)  # output o <- channel ⌊o/K⌋, tap o mod K
  assert len(o) == 36 and np.all(ref[h, w, c, o] == 0.5)
  ctr = pid(conv='centre_tap')
  np.testing.assert_array_equal(ctr[1, 1], 0.5 * np.eye(4, 40))
  assert np.count_nonzero(ctr) == 4
  # HNN++ standard: std (2nm)^(-1/2), n = fan_in with the receptive field
  big = np.asarray(ii.get_initializer('hnnpp')(key, (3, 3, 32, 64)))
  assert big.std() == pytest.approx((2 * 288 * 64) ** -0.5, rel=0.02)
  assert 'poincare_identity' in ii.describe() and 'hnnpp' in ii.describe()


@pytest.mark.parametrize(
  'options, match',
  [
    ({'when': 'sometimes'}, "when='sometimes'; valid choices"),
    ({'conv': 'middle'}, "conv='middle'; valid choices"),
  ],
)
def test_bad_options(options, match):
  with pytest.raises(ValueError, match=match):
    ii.get_initializer('poincare_identity', **options)(jax.random.key(0), (3, 3))


def test_layer_bad_arguments():
  with pytest.raises(ValueError, match='c=-1.0 must be > 0'):
    layer(3, 3, c=-1.0)
  with pytest.raises(ValueError, match='out_features=0 must be >= 1'):
    layer(3, 0)


def test_fc_core_custom_vjp_check_grads_float64():
  """check_grads (reverse, float64) of the FC core's hand-written VJP w.r.t. x, z, r and c."""
  rng = np.random.default_rng(4)
  with jax.enable_x64(True), hb.use_custom_vjp(True):
    x = jnp.asarray(ball(rng, 6, 4, 0.7, rmax=0.8).reshape(2, 3, 4))
    args = (x, jnp.asarray(rng.normal(size=(4, 5)) * 0.5), jnp.asarray(rng.normal(size=5) * 0.3))
    check_grads(fc._core_custom, args + (jnp.float64(0.7),), order=1, modes=['rev'])
    check_grads(poincare_fc, args + (jnp.float64(0.7),), order=1, modes=['rev'])


def _fc_vjp(custom, cot, *args):
  with hb.use_custom_vjp(custom):  # read at trace time
    out, pull = jax.vjp(poincare_fc, *args)
  return out, pull(cot)


@pytest.mark.parametrize('dtype, tol', [(np.float64, 1e-9), (np.float32, 2e-4)])
def test_fc_custom_vjp_equals_autodiff_everywhere(dtype, tol):
  """Custom vs autodiff cotangents at x = 0, up to 1 − 1e-6 of the radius, zero columns of z
  (the identity init with n < m) and clipped sinh/cosh arguments (huge r)."""
  rng = np.random.default_rng(5)
  with jax.enable_x64(dtype == np.float64):
    for c in (1.0, 0.1):
      x = ball(rng, 8, 6, c, rmax=1 - 1e-6)
      # the boundary row: 1 − 1e-6 of the radius in float64; in float32 the projection radius
      # 1 − 4e-3 (the largest norm a float32 layer sees): at 1 − 1e-6, 1 − c‖x‖² keeps ~1 digit
      # in float32 and the two backward passes round it differently (13% apart)
      edge = 1e-6 if dtype == np.float64 else hb.proj_eps(np.float32)
      x[0], x[1] = 0, x[1] / np.linalg.norm(x[1]) * (1 - edge) / np.sqrt(c)
      z = 0.5 * np.eye(6, 9) + rng.normal(size=(6, 9)) * np.array([0.3] * 6 + [0] * 3)
      r = rng.normal(size=9) * 0.3
      r[0] = 1e3
      args = tuple(jnp.asarray(a, dtype) for a in (x, z, r, c))
      cot = jnp.asarray(rng.normal(size=(8, 9)), dtype)
      outs = {custom: jax.jit(_fc_vjp, static_argnums=0)(custom, cot, *args) for custom in (1, 0)}
      np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=tol, atol=tol)
      for a, b in zip(outs[1][1], outs[0][1]):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert bool(jnp.all(jnp.isfinite(a)))
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(jnp.max(abs(b)))))
