"""CIFAR-style ResNet (He et al. 2016, §4.2): resnet20/32/56/110/...

    model = ResNet(depth=20, width=1.0, norm='batch', input_shape=(32, 32, 3),
                   num_classes=10, rngs=nnx.Rngs(0))
    logits = model(images, train=True)   # (B, H, W, 3) -> (B, 10)

Layout: stem 3x3 conv (16w) -> 3 stages of n = (depth - 2) / 6 basic blocks with 16w,
32w, 64w channels (stride 2 at the first block of stages 2 and 3) -> global average
pool -> Dense head. A basic block is relu(x' + bn(conv(relu(bn(conv(x)))))).

Shortcut: 'option A' of the paper, parameter free: where a block halves the resolution
and widens the channels, the identity is subsampled with stride 2 and zero-padded in
the channel axis. So the params are the convs, norms and head only:
ResNet-20 has 269,722 params at width 1 with 10 classes (see `param_count`).

norm='none' drops the BatchNorms and gives every conv a bias (for Fixup-style and
other normalization-free init studies).

Static per-layer widths (e.g. for structured pruning at init such as PreCropping, which keeps
the net dense with fewer channels per layer), two options, both () by default (= the layout
above, the same params as before the options existed):

  stage_widths=(c1, c2, c3): the residual stream width of each stage (default round(16w),
    round(32w), round(64w); when set, `width` is unused). The stem writes c1 channels.
  block_widths=(b_0, ..., b_{3n-1}): the inner width of each basic block, one per block in
    order over all stages (stage1's n blocks, then stage2's, then stage3's); default: the
    block's stage width.

Which widths must be shared: every block of a stage adds its output to the same residual
stream, so the stream width is ONE value per stage: each block's input and output, its
conv2 output (`conv2/kernel` (3, 3, b_i, c_s)), the BatchNorm after conv2 (`norm2`, c_s),
the shortcut, and for stage 1 the stem's conv and norm all have the stage's width c_s. Only
the inner width is free per block: conv1's output (`conv1/kernel` (3, 3, cin, b_i), cin the
stream entering the block: c_{s-1} for the first block of stages 2 and 3, else c_s), the
BatchNorm after it (`norm1`, b_i; with norm='none' conv1's bias) and conv2's input. `layout()`
resolves both options. The option-A shortcut zero-pads the
stream where a stage widens it and has no params to drop channels, so stage_widths must be
non-decreasing (c1 <= c2 <= c3).
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from initlab.models import layers
from initlab.models.registry import InputSpec, register_model

NORMS = ('batch', 'none')
BASE_WIDTHS = (16, 32, 64)


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      name='resnet',
      depth=20,  # 6n + 2: 20, 32, 44, 56, 110, ...
      width=1.0,  # Channel multiplier: stage widths round(16w, 32w, 64w).
      stage_widths=(),  # 3 residual-stream widths (one per stage); () = from `width`.
      block_widths=(),  # Inner width of each block (3n, stage by stage); () = its stage's.
      norm='batch',  # One of NORMS.
      input_shape=(32, 32, 3),  # (H, W, C); only C is used (the net is fully convolutional).
      num_classes=10,
      dtype='float32',
      param_dtype='float32',
    )
  )


def blocks_per_stage(depth: int) -> int:
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(f'resnet: depth={depth} must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110, ...)')
  return (depth - 2) // 6


def stage_widths(width: float) -> tuple[int, ...]:
  widths = tuple(int(round(b * width)) for b in BASE_WIDTHS)
  if min(widths) < 1:
    raise ValueError(f'resnet: width={width} gives stage widths {widths}; need >= 1 channel')
  return widths


_multiplied_widths = stage_widths  # The option `stage_widths` shadows the name below.


def layout(
  depth: int, width: float = 1.0, stage_widths=(), block_widths=()
) -> tuple[tuple[int, int, int], tuple[tuple[int, ...], ...]]:
  """(stream widths (c1, c2, c3), (inner widths of stage 1's n blocks, of stage 2's, of
  stage 3's)) of the ResNet with these options (module docstring); raises ValueError
  naming a bad option."""
  n = blocks_per_stage(depth)
  default = _multiplied_widths(width) if not stage_widths else (1, 1, 1)  # Only its length.
  streams = layers.layer_widths('resnet', 'stage_widths', stage_widths, default, 'one per stage')
  if list(streams) != sorted(streams):
    raise ValueError(
      f'resnet: stage_widths={streams!r} must be non-decreasing (the option-A shortcut '
      'zero-pads the residual stream where a stage widens it; it cannot drop channels)'
    )
  inner = layers.layer_widths(
    'resnet',
    'block_widths',
    block_widths,
    tuple(c for c in streams for _ in range(n)),
    f'one per residual block, stage by stage: 3 stages x {n} for depth={depth}',
  )
  return streams, tuple(inner[s * n : (s + 1) * n] for s in range(3))


def param_count(
  depth: int,
  width: float = 1.0,
  num_classes: int = 10,
  in_channels: int = 3,
  norm: str = 'batch',
  *,
  stage_widths=(),
  block_widths=(),
) -> int:
  """Closed-form number of params of `ResNet(...)` (option-A shortcut)."""
  streams, inner = layout(depth, width, stage_widths, block_widths)
  per_channel = 2 if norm == 'batch' else 1  # BN (scale, bias), or else a conv bias.

  def conv(cin, cout):
    return 9 * cin * cout + per_channel * cout

  total, cin = conv(in_channels, streams[0]), streams[0]
  for cout, blocks in zip(streams, inner):
    for b in blocks:
      total += conv(cin, b) + conv(b, cout)
      cin = cout
  return total + streams[-1] * num_classes + num_classes


def _conv3x3(cin, cout, stride, *, use_bias, dtype, param_dtype, rngs) -> nnx.Conv:
  """3x3 conv, kernel (3, 3, cin, cout) tagged (None, None, 'conv_in', 'conv_out')."""
  return nnx.Conv(
    cin,
    cout,
    (3, 3),
    strides=stride,
    padding='SAME',
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=param_dtype,
    kernel_init=layers.partitioned(layers.default_conv_init, None, None, 'conv_in', 'conv_out'),
    bias_init=layers.partitioned(layers.zeros_init, 'conv_out'),
    rngs=rngs,
  )


def _norm_layer(c, *, norm, dtype, param_dtype, rngs) -> nnx.BatchNorm | None:
  if norm == 'none':
    return None
  return nnx.BatchNorm(
    c,
    momentum=0.9,
    epsilon=1e-5,
    dtype=dtype,
    param_dtype=param_dtype,
    scale_init=layers.partitioned(layers.ones_init, 'conv_out'),
    bias_init=layers.partitioned(layers.zeros_init, 'conv_out'),
    rngs=rngs,
  )


def _apply_norm(norm: nnx.BatchNorm | None, x, train: bool):
  return x if norm is None else norm(x, use_running_average=not train)


class ConvNorm(nnx.Module):
  """The stem: 3x3 conv then BatchNorm (or no norm). Params: conv, norm."""

  def __init__(self, cin, cout, *, norm, dtype, param_dtype, rngs):
    self.conv = _conv3x3(
      cin, cout, 1, use_bias=norm == 'none', dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )
    self.norm = _norm_layer(cout, norm=norm, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x, train: bool = False):
    return _apply_norm(self.norm, self.conv(x), train)


class BasicBlock(nnx.Module):
  """(B, H, W, cin) -> (B, H/stride, W/stride, cout). Params: conv1 (cin -> inner), norm1
  (inner), conv2 (inner -> cout), norm2 (cout); `inner` defaults to cout."""

  def __init__(self, cin, cout, stride, inner=None, *, norm, dtype, param_dtype, rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    inner = cout if inner is None else inner
    self.conv1 = _conv3x3(cin, inner, stride, use_bias=norm == 'none', **kw)
    self.norm1 = _norm_layer(inner, norm=norm, **kw)
    self.conv2 = _conv3x3(inner, cout, 1, use_bias=norm == 'none', **kw)
    self.norm2 = _norm_layer(cout, norm=norm, **kw)
    self.stride, self.pad = stride, cout - cin

  def __call__(self, x, train: bool = False):
    y = jax.nn.relu(_apply_norm(self.norm1, self.conv1(x), train))
    y = _apply_norm(self.norm2, self.conv2(y), train)
    shortcut = x[:, :: self.stride, :: self.stride, :] if self.stride > 1 else x
    if self.pad:  # Option A: zero channels, half on each side.
      lo = self.pad // 2
      shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (lo, self.pad - lo)))
    return jax.nn.relu(y + shortcut)


class Stage(nnx.Module):
  """n basic blocks; the first one has `stride` and changes the width. `inner`: the n
  blocks' inner widths (default: cout each)."""

  def __init__(self, cin, cout, n, stride, inner=None, **kw):
    inner = (cout,) * n if inner is None else tuple(inner)
    if len(inner) != n:
      raise ValueError(f'resnet: Stage of {n} blocks got {len(inner)} inner widths {inner}')
    self.blocks = nnx.List(
      [
        BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, inner[i], **kw)
        for i in range(n)
      ]
    )


def _data_options(config, meta) -> dict:
  """Fully convolutional: any image size; the channels and classes are the dataset's."""
  shape = (*config['input_shape'][:-1], meta.input_shape[-1])
  return dict(input_shape=shape, num_classes=meta.num_classes)


@register_model(
  'resnet',
  task='classification',
  default_config=default_config,
  input_spec=lambda c: InputSpec(tuple(c['input_shape'])),
  data_options=_data_options,
  presets={f'resnet{d}': dict(depth=d) for d in (20, 32, 44, 56, 110)},
  optional=('stage_widths', 'block_widths'),  # Added later: configs recorded before lack it.
)
class ResNet(layers.Staged):
  """(B, H, W, C) images -> (B, num_classes) logits."""

  def __init__(
    self,
    *,
    depth,
    width,
    stage_widths=(),
    block_widths=(),
    norm,
    input_shape,
    num_classes,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
  ):
    if norm not in NORMS:
      raise ValueError(f'resnet: norm={norm!r}; valid: {NORMS}')
    n = blocks_per_stage(depth)
    widths, inner = layout(depth, width, stage_widths, block_widths)
    kw = dict(norm=norm, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.stem = ConvNorm(input_shape[-1], widths[0], **kw)
    self.stage1 = Stage(widths[0], widths[0], n, 1, inner[0], **kw)
    self.stage2 = Stage(widths[0], widths[1], n, 2, inner[1], **kw)
    self.stage3 = Stage(widths[1], widths[2], n, 2, inner[2], **kw)
    self.head = layers.dense(
      widths[2], num_classes, ('embed', 'classes'), dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )

  def stages(self, train: bool = False):
    """[('stem', conv-bn-relu)] + [('stageS/blocks/i', block)] + [('head', pool -> Dense)]."""
    out = [('stem', lambda x: jax.nn.relu(self.stem(x, train)))]
    for s, stage in enumerate((self.stage1, self.stage2, self.stage3), start=1):
      out += [
        (f'stage{s}/blocks/{i}', lambda x, b=block: b(x, train))
        for i, block in enumerate(stage.blocks)
      ]
    return out + [('head', lambda x: self.head(x.mean(axis=(1, 2))).astype(jnp.float32))]

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
