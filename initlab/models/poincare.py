"""Poincaré-ball layers (HNN++, Shimizu et al., arXiv 2006.08210; Poincaré ResNet, van Spengler,
Berkhout & Mettes, arXiv 2303.14027): `PoincareLinear`, `PoincareConv2d`, `PoincareBatchNorm`,
`PoincareMLR`. The geometry lives in `initlab.hyperbolic` (layer math: `initlab.hyperbolic.nn`);
the ResNet built from them in `initlab.models.poincare_resnet`.

    layer = PoincareLinear(64, 64, c=1.0, rngs=nnx.Rngs(0))
    y = layer(x)               # x (..., 64) in the ball {c‖x‖² < 1} -> y (..., 64) in the ball

Params use the names the init machinery reads: `kernel` = z (in, out), tagged `names`
(default ('embed', 'mlp')), and `bias` = r (out,), tagged names[1:]. The module's own init is
HNN++'s standard one (z ~ N(0, 1/(2·in·out)), r = 0); the registered initializers
`poincare_identity` (z = ½·I) and `hnnpp` (the standard one) replace it from a config.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from initlab.hyperbolic import nn as hnn
from initlab.hyperbolic.fc import poincare_fc, standard_std
from initlab.models import layers


def hnnpp_kernel_init(key, shape, dtype=jnp.float32):
  """HNN++'s standard kernel init for an (in, out) kernel: N(0, 1/(2·in·out))."""
  return standard_std(shape[-2], shape[-1]) * jax.random.normal(key, shape, dtype)


def hnnpp_conv_init(key, shape, dtype=jnp.float32):
  """HNN++'s standard init of a (*window, in, out) conv kernel: N(0, 1/(2·K·in·out))."""
  return standard_std(math.prod(shape[:-1]), shape[-1]) * jax.random.normal(key, shape, dtype)


class PoincareLinear(nnx.Module):
  """HNN++ Poincaré fully-connected layer, (..., in) -> (..., out), points of 𝔹_c.

  c: the curvature magnitude (> 0), a fixed Python float.
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    *,
    c: float = 1.0,
    names: tuple[str | None, str | None] = ('embed', 'mlp'),
    kernel_init=None,
    dtype=None,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if in_features < 1 or out_features < 1:
      raise ValueError(
        f'PoincareLinear: in_features={in_features} and out_features={out_features} must be >= 1'
      )
    if not c > 0:
      raise ValueError(f'PoincareLinear: c={c} must be > 0 (the ball has curvature -c)')
    kinit = layers.partitioned(kernel_init or hnnpp_kernel_init, *names)
    binit = layers.partitioned(layers.zeros_init, names[1])
    self.kernel = nnx.Param(kinit(rngs.params(), (in_features, out_features), param_dtype))
    self.bias = nnx.Param(binit(rngs.params(), (out_features,), param_dtype))
    self.c, self.dtype = c, dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype or jnp.result_type(x, self.kernel[...])
    z, r = self.kernel[...].astype(dtype), self.bias[...].astype(dtype)
    return poincare_fc(jnp.asarray(x, dtype), z, r, self.c)


def _check(name, c, **sizes):
  for key, n in sizes.items():
    if n < 1:
      raise ValueError(f'{name}: {key}={n} must be >= 1')
  if not c > 0:
    raise ValueError(f'{name}: c={c} must be > 0 (the ball has curvature -c)')


class PoincareConv2d(nnx.Module):
  """HNN++ Poincaré convolution (`initlab.hyperbolic.nn.poincare_conv2d`): (B, H, W, in)
  points -> (B, H', W', out) points.

  kernel (kh, kw, in, out) tagged `names` (default (None, None, 'conv_in', 'conv_out')): the
  HNN++ z of the (in·K, out) unfolded FC in channel-major row order, kernel[i, j, ch, o] =
  z[ch·K + i·kw + j, o] (K = kh·kw); bias r (out,). Own init: HNN++'s standard one,
  z ~ N(0, 1/(2·in·K·out)).
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size=(3, 3),
    *,
    stride=1,
    padding=0,
    c: float = 1.0,
    names=(None, None, 'conv_in', 'conv_out'),
    kernel_init=None,
    dtype=None,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    _check('PoincareConv2d', c, in_features=in_features, out_features=out_features)
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    kinit = layers.partitioned(kernel_init or hnnpp_conv_init, *names)
    binit = layers.partitioned(layers.zeros_init, names[-1])
    self.kernel = nnx.Param(kinit(rngs.params(), (kh, kw, in_features, out_features), param_dtype))
    self.bias = nnx.Param(binit(rngs.params(), (out_features,), param_dtype))
    self.c, self.stride, self.padding, self.dtype = c, stride, padding, dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype or jnp.result_type(x, self.kernel[...])
    k, r = self.kernel[...].astype(dtype), self.bias[...].astype(dtype)
    return hnn.poincare_conv2d(jnp.asarray(x, dtype), k, r, self.c, self.stride, self.padding)


class PoincareBatchNorm(nnx.Module):
  """Midpoint batch norm (Poincaré ResNet §4; `initlab.hyperbolic.nn.batch_norm`): (..., C)
  points -> (..., C) points, statistics over every axis but the last.

  Params: `bias` (C,) (the target midpoint β = exp₀(bias), tagged names), `scale` () (the
  target dispersion, 1 at init). Training normalizes with the batch's gyromidpoint μ_B and
  Fréchet variance σ²_B and updates the running statistics `mean` (C,) (a point) and `var` ()
  (`initlab.hyperbolic.nn.running_stats`, `momentum`). Evaluation (use_running_average=True)
  uses the running statistics when `running_stats` is True: an improvement over the
  reference code, whose running buffers are never updated, so that its eval output depends on
  how the eval batch is composed; `running_stats=False` is the reference behaviour (batch
  statistics in eval too).
  """

  def __init__(
    self,
    features: int,
    *,
    c: float = 1.0,
    momentum: float = 0.9,
    epsilon: float = 1e-6,
    running_stats: bool = True,
    names=('conv_out',),
    dtype=None,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    _check('PoincareBatchNorm', c, features=features)
    if not 0 <= momentum < 1:
      raise ValueError(f'PoincareBatchNorm: momentum={momentum} must be in [0, 1)')
    key = rngs.params()
    self.bias = nnx.Param(
      layers.partitioned(layers.zeros_init, *names)(key, (features,), param_dtype)
    )
    self.scale = nnx.Param(layers.partitioned(layers.ones_init)(key, (), param_dtype))
    self.mean = nnx.BatchStat(jnp.zeros((features,), param_dtype))
    self.var = nnx.BatchStat(jnp.ones((), param_dtype))
    self.c, self.momentum, self.epsilon = c, momentum, epsilon
    self.running_stats, self.dtype = running_stats, dtype

  def __call__(self, x: jax.Array, use_running_average: bool = False) -> jax.Array:
    dtype = self.dtype or jnp.result_type(x, self.bias[...])
    x = jnp.asarray(x, dtype)
    bias, scale = self.bias[...].astype(dtype), self.scale[...].astype(dtype)
    if use_running_average and self.running_stats:
      mean, var = self.mean[...].astype(dtype), self.var[...].astype(dtype)
    else:  # hnn.batch_stats: the one place a study swaps the mean (e.g. for a Fréchet mean)
      mean, var = hnn.batch_stats(x.reshape(-1, x.shape[-1]), self.c)
    if not use_running_average:
      sdt = self.mean[...].dtype
      stats = (self.mean[...], self.var[...], mean.astype(sdt), var.astype(sdt))
      new = hnn.running_stats(*stats, self.momentum, self.c)
      self.mean[...], self.var[...] = (jax.lax.stop_gradient(a) for a in new)
    return hnn.batch_norm(x, mean, var, bias, scale, self.c, self.epsilon)


class PoincareMLR(nnx.Module):
  """HNN++ hyperbolic multinomial logistic regression head (`initlab.hyperbolic.nn.mlr_logits`):
  (..., in) points -> (..., classes) float logits. kernel z (in, classes) tagged `names`
  (default ('embed', 'classes')), bias r (classes,); own init HNN++'s standard one."""

  def __init__(
    self,
    in_features: int,
    num_classes: int,
    *,
    c: float = 1.0,
    names=('embed', 'classes'),
    kernel_init=None,
    dtype=None,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    _check('PoincareMLR', c, in_features=in_features, num_classes=num_classes)
    kinit = layers.partitioned(kernel_init or hnnpp_kernel_init, *names)
    binit = layers.partitioned(layers.zeros_init, names[1])
    self.kernel = nnx.Param(kinit(rngs.params(), (in_features, num_classes), param_dtype))
    self.bias = nnx.Param(binit(rngs.params(), (num_classes,), param_dtype))
    self.c, self.dtype = c, dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype or jnp.result_type(x, self.kernel[...])
    z, r = self.kernel[...].astype(dtype), self.bias[...].astype(dtype)
    return hnn.mlr_logits(jnp.asarray(x, dtype), z, r, self.c)
