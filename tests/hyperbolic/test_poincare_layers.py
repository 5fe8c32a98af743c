"""Poincaré ResNet layers (HNN++ arXiv 2006.08210; Poincaré ResNet arXiv 2303.14027) against
independent float64 numpy implementations of their textbook formulas: β-concatenation, the
conv (channel-major unfold), midpoint batch norm and its running statistics, tangent ReLU,
midpoint pooling, the MLR head; and what the identity init means for a conv."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import special

from initlab import hyperbolic as hb
from initlab import init as ii
from initlab.hyperbolic import nn as hnn
from initlab.models.poincare import PoincareBatchNorm, PoincareConv2d, PoincareMLR

TOL = dict(rtol=1e-10, atol=1e-12)

# ---- textbook float64 formulas (Ganea et al. 2018; HNN++ §2-3) -------------------------------


def sq(x):
  return np.sum(x * x, -1, keepdims=True)


def np_exp0(v, c):
  n = np.sqrt(c * sq(v))
  return np.tanh(n) * v / np.where(n > 0, n, 1)


def np_log0(y, c):
  n = np.sqrt(c * sq(y))
  return np.arctanh(n) * y / np.where(n > 0, n, 1)


def np_madd(x, y, c):
  xy, x2, y2 = np.sum(x * y, -1, keepdims=True), sq(x), sq(y)
  num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
  return num / (1 + 2 * c * xy + c * c * x2 * y2)


def np_lam(x, c):
  return 2 / (1 - c * sq(x))


def np_expmap(x, v, c):
  n = np.sqrt(c * sq(v))
  return np_madd(x, np.tanh(np_lam(x, c) * n / 2) * v / n, c)


def np_logmap(x, y, c):
  w = np_madd(-x, y, c)
  n = np.sqrt(c * sq(w))
  return 2 / (np.sqrt(c) * np_lam(x, c)) * np.arctanh(n) * w / np.sqrt(sq(w))


def np_gyr(u, v, w, c):
  """gyr[u, v]w = ⊖(u ⊕ v) ⊕ (u ⊕ (v ⊕ w)) by its definition; linear in w, so a tangent
  vector w is scaled into the ball and back."""
  s = 0.1 / np.sqrt(c) / np.max(np.linalg.norm(w, axis=-1))
  w = w * s
  return np_madd(-np_madd(u, v, c), np_madd(u, np_madd(v, w, c), c), c) / s


def np_transport(x, y, v, c):
  return np_lam(x, c) / np_lam(y, c) * np_gyr(y, -x, v, c)


def np_mscalar(r, x, c):
  n = np.sqrt(c * sq(x))
  return np.tanh(r * np.arctanh(n)) * x / n


def np_midpoint(xs, c):
  """½ ⊗ (Σ λᵢxᵢ / Σ (λᵢ − 1)) over axis 0."""
  lam = np_lam(xs, c)
  return np_mscalar(0.5, np.sum(lam * xs, 0) / np.sum(lam - 1, 0), c)


def np_dist(x, y, c):
  return 2 / np.sqrt(c) * np.arctanh(np.sqrt(c * sq(np_madd(-x, y, c))))[..., 0]


def np_fc(x, z, r, c):
  """HNN++ FC (§3.2), correct conformal factor λ = 2/(1 − c‖x‖²)."""
  w = np.sinh(np.sqrt(c) * np_mlr(x, z, r, c)) / np.sqrt(c)
  return w / (1 + np.sqrt(1 + c * sq(w)))


def np_mlr(x, z, r, c):
  """HNN++ §3.1: v_k = (2‖z_k‖/√c) asinh(√c λ ⟨x, ẑ_k⟩ cosh(2√c r_k) − (λ − 1) sinh(2√c r_k))."""
  sc, lam, zn = np.sqrt(c), np_lam(x, c), np.linalg.norm(z, axis=0)
  a = sc * lam * (x @ (z / zn)) * np.cosh(2 * sc * r) - (lam - 1) * np.sinh(2 * sc * r)
  return 2 * zn / sc * np.arcsinh(a)


def np_beta_ratio(ni, n):
  return special.beta(n / 2, 0.5) / special.beta(ni / 2, 0.5)


def np_conv(x, kernel, r, c, stride, pad):
  """Loop reference: each output pixel's window unfolded channel-major (index ch·K + i·kw + j,
  zero tangent outside the image), β-concatenated, then the HNN++ FC with z[ch·K + p] =
  kernel[i, j, ch]."""
  b, h, w, ci = x.shape
  kh, kw, _, co = kernel.shape
  k = kh * kw
  t = np_log0(x, c) * np_beta_ratio(ci, ci * k)
  ho, wo = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
  z = np.zeros((ci * k, co))
  for i in range(kh):
    for j in range(kw):
      for ch in range(ci):
        z[ch * k + i * kw + j] = kernel[i, j, ch]
  out = np.zeros((b, ho, wo, co))
  for n in range(b):
    for oh in range(ho):
      for ow in range(wo):
        v = np.zeros(ci * k)
        for i in range(kh):
          for j in range(kw):
            y, xx = oh * stride - pad + i, ow * stride - pad + j
            if 0 <= y < h and 0 <= xx < w:
              for ch in range(ci):
                v[ch * k + i * kw + j] = t[n, y, xx, ch]
        out[n, oh, ow] = np_fc(np_exp0(v[None], c), z, r, c)[0]
  return out


def ball(rng, shape, c, rmax=0.9):
  u = rng.normal(size=shape)
  u /= np.linalg.norm(u, axis=-1, keepdims=True)
  return u * rng.uniform(0, rmax, size=shape[:-1] + (1,)) / np.sqrt(c)


# ---- tests ------------------------------------------------------------------------------------


def test_beta_ratio_and_concat_equal_numpy():
  assert hnn.beta_ratio(16, 144) == pytest.approx(0.328739, abs=5e-7)  # HNN++ 3x3, 16 channels
  for ni, n in ((1, 9), (3, 27), (16, 144), (5, 12), (7, 7)):
    assert hnn.beta_ratio(ni, n) == pytest.approx(np_beta_ratio(ni, n), rel=1e-12)
  with pytest.raises(ValueError, match='n_i=5, n=3'):
    hnn.beta_ratio(5, 3)
  rng, c = np.random.default_rng(0), 0.3
  xs = [ball(rng, (4, d), c) for d in (2, 5, 3)]
  ref = np_exp0(np.concatenate([np_beta_ratio(x.shape[-1], 10) * np_log0(x, c) for x in xs], -1), c)
  with jax.enable_x64(True):
    np.testing.assert_allclose(hnn.beta_concat(xs, c), ref, **TOL)


@pytest.mark.parametrize('stride, pad, window', [(1, 1, (3, 3)), (2, 1, (3, 3)), (2, 0, (1, 1))])
def test_conv_equals_numpy_loops(stride, pad, window):
  rng, c = np.random.default_rng(1), 0.5
  x = ball(rng, (2, 5, 6, 3), c, rmax=0.95)
  kernel = rng.normal(size=(*window, 3, 4)) * 0.4
  r = rng.normal(size=4) * 0.2
  with jax.enable_x64(True):
    y = hnn.poincare_conv2d(x, kernel, r, c, stride, pad)
    with nnx.use_eager_sharding(False):
      mod = PoincareConv2d(
        3, 4, window, stride=stride, padding=pad, c=c, param_dtype=jnp.float64, rngs=nnx.Rngs(0)
      )
    mod.kernel[...], mod.bias[...] = kernel, r
    ym = mod(x)
  ref = np_conv(x, kernel, r, c, stride, pad)
  assert y.shape == ref.shape == ym.shape
  np.testing.assert_allclose(y, ref, **TOL)
  np.testing.assert_array_equal(y, ym)


def _selection_output(x, window, c, rows):
  """What a conv whose kernel is ½ on one row per output (z = ½ e_{rows[o]}, r = 0) computes:
  with v the patch tangent (β-scaled, channel-major) and v_S = v[rows], HNN++'s FC gives
  w = λ_x x_S, so log₀(y) = asinh(sinh(2√c‖v‖)‖v_S‖/‖v‖)/(2√c) · v_S/‖v_S‖."""
  (kh, kw), ci = window, x.shape[-1]
  sc = np.sqrt(c)
  t = np_log0(x, c) * np_beta_ratio(ci, ci * kh * kw)
  tp = np.pad(t, ((0, 0), (kh // 2,) * 2, (kw // 2,) * 2, (0, 0)))
  b, h, w, _ = x.shape
  v = np.stack([tp[:, i : i + h, j : j + w] for i in range(kh) for j in range(kw)], -1).reshape(
    b, h, w, -1
  )
  vs, nv = v[..., rows], np.linalg.norm(v, axis=-1, keepdims=True)
  ns = np.linalg.norm(vs, axis=-1, keepdims=True)
  with np.errstate(invalid='ignore', divide='ignore'):
    scale = np.arcsinh(np.sinh(2 * sc * nv) * ns / nv) / (2 * sc) / ns
  return np.where(ns > 0, scale, 0) * vs  # 0 where the selected coordinates are


@pytest.mark.parametrize('conv', ['centre_tap', 'reference_eye'])
def test_identity_init_conv_is_the_documented_selection(conv):
  """poincare_identity's conv kernels are selections: centre_tap picks each pixel's own
  channels (rows ch·K + K//2), reference_eye rows o (channel ⌊o/K⌋ at tap o mod K). Then
  log₀ of the output is the selected patch coordinates, rescaled as `_selection_output`."""
  rng, c, ch = np.random.default_rng(2), 0.1, 4
  x = ball(rng, (2, 5, 5, ch), c, rmax=0.9)
  x[:, 1:3, 1:3] = 0  # some pixels at the origin, whose windows are partly zero
  kernel = np.asarray(
    ii.get_initializer('poincare_identity', conv=conv)(jax.random.key(0), (3, 3, ch, ch))
  )
  k = 9
  rows = [o * k + k // 2 for o in range(ch)] if conv == 'centre_tap' else list(range(ch))
  z = np.asarray(hnn.conv_matrix(jnp.asarray(kernel)))
  np.testing.assert_array_equal(z, 0.5 * np.eye(ch * k)[:, rows])
  with jax.enable_x64(True):
    y = hnn.poincare_conv2d(x, kernel, np.zeros(ch), c, 1, 1)
    np.testing.assert_allclose(hb.logmap0(y, c), _selection_output(x, (3, 3), c, rows), **TOL)


def test_centre_tap_identity_on_isolated_pixels_and_1x1():
  """centre_tap with C_in = C_out: a pixel whose neighbours are at the origin maps to itself
  scaled by the β-ratio in the tangent space (log₀ y = B(9C/2,½)/B(C/2,½)·log₀ x); a 1x1
  identity conv (β-ratio 1) is exactly the identity."""
  rng, c, ch = np.random.default_rng(3), 0.1, 5
  x = np.zeros((1, 7, 7, ch))
  x[0, 1, 1], x[0, 4, 5] = ball(rng, (2, ch), c, rmax=0.95)
  init = lambda shape: ii.get_initializer('poincare_identity', conv='centre_tap')(
    jax.random.key(0), shape, jnp.float64
  )
  with jax.enable_x64(True):
    y = hnn.poincare_conv2d(x, init((3, 3, ch, ch)), np.zeros(ch), c, 1, 1)
    beta = np_beta_ratio(ch, 9 * ch)
    for p in ((1, 1), (4, 5)):
      np.testing.assert_allclose(
        hb.logmap0(y[0, p[0], p[1]], c), beta * np_log0(x[0, p[0], p[1]], c), **TOL
      )
    xs = ball(rng, (2, 4, 4, ch), c, rmax=0.99)
    np.testing.assert_allclose(
      hnn.poincare_conv2d(xs, init((1, 1, ch, ch)), np.zeros(ch), c), xs, rtol=1e-12, atol=1e-14
    )


def test_relu_pool_mlr_equal_numpy():
  rng, c = np.random.default_rng(4), 0.7
  x = ball(rng, (3, 4, 5, 6), c, rmax=0.95)
  z, r = rng.normal(size=(6, 4)), rng.normal(size=4) * 0.3
  with jax.enable_x64(True):
    np.testing.assert_allclose(
      hnn.tangent_relu(x, c), np_exp0(np.maximum(np_log0(x, c), 0), c), **TOL
    )
    pooled = np.stack([np_midpoint(x[b].reshape(-1, 6), c) for b in range(3)])
    np.testing.assert_allclose(hnn.midpoint_pool(x, c), pooled, **TOL)
    np.testing.assert_allclose(hnn.mlr_logits(pooled, z, r, c), np_mlr(pooled, z, r, c), **TOL)
    with nnx.use_eager_sharding(False):
      head = PoincareMLR(6, 4, c=c, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    head.kernel[...], head.bias[...] = z, r
    np.testing.assert_array_equal(head(pooled), hnn.mlr_logits(pooled, z, r, c))


def np_batch_norm(x, mean, var, bias, scale, c, eps=1e-6):
  """exp_β(scale/√(var + eps) · PT_{mean→β}(log_mean x)), β = exp₀(bias) (Lou et al. 2020)."""
  beta = np_exp0(bias, c)
  v = np_transport(mean, beta, np_logmap(mean, x, c), c)
  return np_expmap(beta, scale / np.sqrt(var + eps) * v, c)


def test_batch_norm_equals_textbook_formula():
  rng, c = np.random.default_rng(5), 0.4
  x = ball(rng, (50, 6), c, rmax=0.95)
  mean, bias = ball(rng, (6,), c, rmax=0.6), rng.normal(size=6) * 0.5
  with jax.enable_x64(True):
    mu, var = hnn.batch_stats(x, c)
    np.testing.assert_allclose(mu, np_midpoint(x, c), **TOL)
    np.testing.assert_allclose(var, np.mean(np_dist(x, np_midpoint(x, c), c) ** 2), **TOL)
    got = hnn.batch_norm(x, mean, 0.3, bias, 1.7, c)
    np.testing.assert_allclose(got, np_batch_norm(x, mean, 0.3, bias, 1.7, c), **TOL)
    # normalized: the output's midpoint is β and its Fréchet variance ≈ scale² (up to
    # midpoint ≠ Fréchet mean)
    y1 = hnn.batch_norm(x, mu, var, np.zeros(6), 1.0, c)
    assert np.linalg.norm(np_midpoint(np.asarray(y1), c)) < 0.05
    d0 = np_dist(np.asarray(y1), np.zeros(6), c)  # d(0, f ⊗ w) = f d(μ, x): variance f²σ²
    assert np.mean(d0**2) == pytest.approx(float(var) / (float(var) + 1e-6), rel=1e-10)


def _bn(c, **kw):
  with nnx.use_eager_sharding(False):
    return PoincareBatchNorm(6, c=c, momentum=0.8, param_dtype=jnp.float64, rngs=nnx.Rngs(0), **kw)


def test_batch_norm_running_statistics_used_in_eval():
  """Train mode normalizes with the batch's statistics and moves the running ones along the
  geodesic (mean) and convexly (var); eval mode uses the running statistics, so its output
  differs from the train-batch output and equals the formula with the running statistics;
  running_stats=False (the reference) uses the eval batch's own statistics."""
  rng, c = np.random.default_rng(6), 0.5
  x1, x2 = ball(rng, (2, 3, 4, 6), c), np_exp0(rng.normal(size=(2, 3, 4, 6)) + 0.5, c)
  with jax.enable_x64(True):
    bn = _bn(c)
    bn.bias[...], bn.scale[...] = rng.normal(size=6) * 0.3, 1.3
    bias, scale = np.asarray(bn.bias[...]), 1.3
    mean, var = np.zeros(6), 1.0
    for xb in (x1, x2):
      flat = xb.reshape(-1, 6)
      mb, vb = np_midpoint(flat, c), np.mean(np_dist(flat, np_midpoint(flat, c), c) ** 2)
      y = bn(xb)  # train mode
      np.testing.assert_allclose(
        y.reshape(-1, 6), np_batch_norm(flat, mb, vb, bias, scale, c), **TOL
      )
      mean = np_expmap(mean, 0.2 * np_logmap(mean, mb, c), c)  # exp_m((1 − momentum) log_m μ_B)
      var = 0.8 * var + 0.2 * vb
      np.testing.assert_allclose(bn.mean[...], mean, **TOL)
      np.testing.assert_allclose(bn.var[...], var, **TOL)
    running = np.asarray(bn.mean[...])
    ev = bn(x2, use_running_average=True)
    assert np.max(np.abs(ev - y)) > 1e-3  # not the train-batch normalization
    np.testing.assert_allclose(
      ev.reshape(-1, 6), np_batch_norm(x2.reshape(-1, 6), mean, var, bias, scale, c), **TOL
    )
    np.testing.assert_array_equal(bn.mean[...], running)  # eval leaves the statistics alone
    ref = _bn(c, running_stats=False)
    ref.bias[...], ref.scale[...] = bias, scale
    np.testing.assert_allclose(ref(x2, use_running_average=True), y, **TOL)
    np.testing.assert_array_equal(ref.mean[...], np.zeros(6))


def test_batch_norm_reads_batch_stats_through_the_module_function(monkeypatch):
  """PoincareBatchNorm takes its train-mode statistics from `hnn.batch_stats` at call time, so
  a study can swap the gyromidpoint for another mean (experiments/poincare_resnet: Fréchet)."""
  rng, c = np.random.default_rng(8), 0.5
  x = ball(rng, (10, 6), c)
  mu = ball(rng, (6,), c, rmax=0.5)
  monkeypatch.setattr(hnn, 'batch_stats', lambda xs, c: (jnp.asarray(mu), jnp.asarray(0.7)))
  with jax.enable_x64(True):
    bn = _bn(c)
    np.testing.assert_allclose(bn(x), np_batch_norm(x, mu, 0.7, np.zeros(6), 1.0, c), **TOL)
    np.testing.assert_allclose(bn.var[...], 0.8 + 0.2 * 0.7, **TOL)


def test_layers_float32_and_gradients_finite():
  """float32 inputs give float32 outputs close to float64, with finite gradients, from the
  origin up to the projection boundary."""
  rng, c = np.random.default_rng(7), 0.1
  x = ball(rng, (2, 4, 4, 3), c, rmax=1 - 1e-6)
  x[0, 0, 0] = 0
  with nnx.use_eager_sharding(False):
    conv = PoincareConv2d(3, 4, (3, 3), padding=1, c=c, rngs=nnx.Rngs(0))
    bn = PoincareBatchNorm(4, c=c, rngs=nnx.Rngs(0))

  def loss(conv, bn, x):
    return jnp.sum(hnn.midpoint_pool(hnn.tangent_relu(bn(conv(x)), c), c) ** 2)

  grads = nnx.jit(nnx.grad(loss, argnums=(0, 1, 2)))(conv, bn, jnp.asarray(x, jnp.float32))
  leaves = jax.tree.leaves(grads)
  assert all(a.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(a))) for a in leaves)
  with jax.enable_x64(True):
    y64 = hnn.poincare_conv2d(x, np.asarray(conv.kernel[...], np.float64), np.zeros(4), c, 1, 1)
  y32 = conv(jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(y32, y64, atol=2e-5)


def test_bad_arguments():
  with pytest.raises(ValueError, match='c=0.0 must be > 0'):
    PoincareConv2d(3, 4, c=0.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='momentum=1.0 must be in'):
    PoincareBatchNorm(3, momentum=1.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='num_classes=0 must be >= 1'):
    PoincareMLR(3, 0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='does not fit'):
    hnn.conv_patches(jnp.zeros((1, 2, 2, 3)), (3, 3), 1.0)
