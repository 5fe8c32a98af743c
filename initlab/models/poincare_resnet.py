"""Poincaré ResNet (van Spengler, Berkhout & Mettes, arXiv 2303.14027): a CIFAR-style ResNet
whose every layer lives on the Poincaré ball 𝔹_c, from pixels to logits.

    config = initlab.models.default_config('poincare_resnet20')  # widths (8, 16, 32), c = 0.1
    model = initlab.models.build(config, rngs=nnx.Rngs(0))
    logits = model(images, train=True)   # (B, H, W, C) -> (B, num_classes) float32

Layout (the reference's `hyperbolic-8-16-32-resnet-20`): each pixel's channel vector mapped
onto the ball with exp₀ -> stem (3x3 `PoincareConv2d`, `PoincareBatchNorm`, tangent ReLU) ->
3 stages of n = (depth − 2)/6 blocks of widths `widths` (stride 2 at the first block of stages
2 and 3) -> gyromidpoint pooling over the pixels -> HNN++ MLR head (`PoincareMLR`).

Block (ReLU = `tangent_relu`, exp₀ ∘ relu ∘ log₀):
  f(x) = bn2(conv2(relu(bn1(conv1(x)))));   y = relu(f(x) ⊕ s(x))   (Möbius addition, the
  reference's 'fr' order), s = the identity, or a 1x1 stride-s `PoincareConv2d` where the
  block changes the resolution or the width (the reference's downsample path).
Every activation between layers is a point of the ball (the reference passes log₀ of it;
the same network).

c is the fixed curvature magnitude (reference default 0.1). `bn_running_stats`: eval uses the
BatchNorm running statistics (True, initlab's improvement) or the eval batch's own (False,
the reference behaviour); see `PoincareBatchNorm`.
"""

from __future__ import annotations

from flax import nnx
import jax.numpy as jnp
import ml_collections

from initlab.hyperbolic import expmap0, mobius_add, project
from initlab.hyperbolic import nn as hnn
from initlab.models import layers
from initlab.models.poincare import PoincareBatchNorm, PoincareConv2d, PoincareMLR
from initlab.models.registry import InputSpec, register_model


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      name='poincare_resnet',
      depth=20,  # 6n + 2: 8, 14, 20, 32, ...
      widths=(8, 16, 32),  # Channels of the three stages (the stem has widths[0]).
      c=0.1,  # Curvature magnitude (> 0) of every layer's ball.
      bn_running_stats=True,  # Eval normalizes with running statistics (False: batch ones).
      bn_momentum=0.9,
      input_shape=(32, 32, 3),  # (H, W, C); only C is used (fully convolutional).
      num_classes=10,
      dtype='float32',
      param_dtype='float32',
    )
  )


def blocks_per_stage(depth: int) -> int:
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(
      f'poincare_resnet: depth={depth} must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...)'
    )
  return (depth - 2) // 6


def _check_widths(widths) -> tuple[int, int, int]:
  widths = tuple(widths)
  if len(widths) != 3 or any(not isinstance(w, int) or w < 1 for w in widths):
    raise ValueError(f'poincare_resnet: widths={widths!r} must be 3 ints >= 1, e.g. (8, 16, 32)')
  return widths


class ConvNorm(nnx.Module):
  """3x3 Poincaré conv (padding 1) then midpoint batch norm. Params: conv, norm."""

  def __init__(self, cin, cout, stride, *, c, bn, dtype, param_dtype, rngs):
    kw = dict(c=c, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv = PoincareConv2d(cin, cout, (3, 3), stride=stride, padding=1, **kw)
    self.norm = PoincareBatchNorm(cout, **bn, **kw)

  def __call__(self, x, train: bool = False):
    return self.norm(self.conv(x), use_running_average=not train)


class PoincareBlock(nnx.Module):
  """(B, H, W, cin) -> (B, H/stride, W/stride, cout) points. Params: conv1, norm1, conv2,
  norm2, and `shortcut` (a 1x1 conv) where stride > 1 or cin != cout."""

  def __init__(self, cin, cout, stride, *, c, bn, dtype, param_dtype, rngs):
    kw = dict(c=c, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv1 = PoincareConv2d(cin, cout, (3, 3), stride=stride, padding=1, **kw)
    self.norm1 = PoincareBatchNorm(cout, **bn, **kw)
    self.conv2 = PoincareConv2d(cout, cout, (3, 3), stride=1, padding=1, **kw)
    self.norm2 = PoincareBatchNorm(cout, **bn, **kw)
    self.shortcut = (
      PoincareConv2d(cin, cout, (1, 1), stride=stride, **kw) if stride > 1 or cin != cout else None
    )
    self.c = c

  def __call__(self, x, train: bool = False):
    y = hnn.tangent_relu(self.norm1(self.conv1(x), use_running_average=not train), self.c)
    y = self.norm2(self.conv2(y), use_running_average=not train)
    skip = x if self.shortcut is None else self.shortcut(x)
    return hnn.tangent_relu(project(mobius_add(y, skip, self.c), self.c), self.c)


class Stage(nnx.Module):
  """n blocks; the first one has `stride` and changes the width."""

  def __init__(self, cin, cout, n, stride, **kw):
    self.blocks = nnx.List(
      [
        PoincareBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, **kw)
        for i in range(n)
      ]
    )


def _data_options(config, meta) -> dict:
  """Fully convolutional: any image size; the channels and classes are the dataset's."""
  shape = (*config['input_shape'][:-1], meta.input_shape[-1])
  return dict(input_shape=shape, num_classes=meta.num_classes)


@register_model(
  'poincare_resnet',
  task='classification',
  default_config=default_config,
  input_spec=lambda c: InputSpec(tuple(c['input_shape'])),
  data_options=_data_options,
  presets={f'poincare_resnet{d}': dict(depth=d) for d in (8, 14, 20, 32, 44)},
)
class PoincareResNet(layers.Staged):
  """(B, H, W, C) images -> (B, num_classes) float32 logits; module docstring."""

  def __init__(
    self,
    *,
    depth,
    widths,
    c,
    bn_running_stats,
    bn_momentum,
    input_shape,
    num_classes,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
  ):
    n, widths = blocks_per_stage(depth), _check_widths(widths)
    if not c > 0:
      raise ValueError(f'poincare_resnet: c={c} must be > 0 (the ball has curvature -c)')
    bn = dict(running_stats=bool(bn_running_stats), momentum=bn_momentum)
    kw = dict(c=c, bn=bn, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.stem = ConvNorm(input_shape[-1], widths[0], 1, **kw)
    self.stage1 = Stage(widths[0], widths[0], n, 1, **kw)
    self.stage2 = Stage(widths[0], widths[1], n, 2, **kw)
    self.stage3 = Stage(widths[1], widths[2], n, 2, **kw)
    self.head = PoincareMLR(
      widths[2], num_classes, c=c, dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )
    self.c, self.dtype = c, dtype

  def stages(self, train: bool = False):
    """[('stem', exp₀ -> conv-bn-relu)] + [('stageS/blocks/i', block)] + [('head', midpoint
    pool -> MLR)]; every stage but the head returns points of the ball."""

    def stem(x):
      x = project(expmap0(jnp.asarray(x, self.dtype or jnp.float32), self.c), self.c)
      return hnn.tangent_relu(self.stem(x, train), self.c)

    out = [('stem', stem)]
    for s, stage in enumerate((self.stage1, self.stage2, self.stage3), start=1):
      out += [
        (f'stage{s}/blocks/{i}', lambda x, b=block: b(x, train))
        for i, block in enumerate(stage.blocks)
      ]
    head = lambda x: self.head(hnn.midpoint_pool(x, self.c)).astype(jnp.float32)
    return out + [('head', head)]

  def init_hints(self) -> dict:
    n = len(self.stage1.blocks)
    return dict(
      depth=3 * n + 2,
      classifier=r'head/kernel',
      residual_final=r'stage\d+/blocks/\d+/conv2/kernel',
      residual_branch=r'stage\d+/blocks/\d+/conv[12]/kernel',
      num_branches=3 * n,
      branch_layers=2,
    )
