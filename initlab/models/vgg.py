"""VGG-style chain CNN (Simonyan & Zisserman 2015, arXiv 1409.1556, scaled to small images).

    model = VGG(widths=(16, 32, 64, 64), pool_after=(0, 1, 3), input_shape=(8, 8, 1),
                num_classes=10, norm='batch', rngs=nnx.Rngs(0))
    logits = model(images, train=True)   # (B, H, W, C) -> (B, 10)

Layout: conv i (3x3, `widths[i]` channels, `convs/i/conv/kernel` (3, 3, c_{i-1}, c_i)) ->
BatchNorm (`convs/i/norm`, or a conv bias with norm='none') -> relu, then a 2x2 max pool
(stride 2, 'SAME' padding: a 1x1 map stays 1x1) after every conv listed in `pool_after`;
global average pool; Dense head. A pure chain: every layer's output channels are the next
layer's inputs, which makes it the reference net for channel-pruning rules (PreCropping).
The default is VGG-11's pattern at a quarter of its widths: 8 convs, (16, 32, 64, 64, 128,
128, 128, 128), pooled after convs 0, 1, 3, 5, 7.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from initlab.models import layers
from initlab.models.registry import InputSpec, register_model
from initlab.models.resnet import _apply_norm, _conv3x3, _data_options, _norm_layer, NORMS


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      name='vgg',
      widths=(16, 32, 64, 64, 128, 128, 128, 128),  # Output channels of each 3x3 conv.
      pool_after=(0, 1, 3, 5, 7),  # Conv indices followed by a 2x2 max pool.
      norm='batch',  # 'batch' or 'none' (then every conv has a bias).
      input_shape=(32, 32, 3),
      num_classes=10,
      dtype='float32',
      param_dtype='float32',
    )
  )


class ConvBlock(nnx.Module):
  """3x3 conv -> BatchNorm (or conv bias) -> relu. Params: conv, norm."""

  def __init__(self, cin, cout, *, norm, dtype, param_dtype, rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv = _conv3x3(cin, cout, 1, use_bias=norm == 'none', **kw)
    self.norm = _norm_layer(cout, norm=norm, **kw)

  def __call__(self, x, train: bool = False):
    return jax.nn.relu(_apply_norm(self.norm, self.conv(x), train))


@register_model(
  'vgg',
  task='classification',
  default_config=default_config,
  input_spec=lambda c: InputSpec(tuple(c['input_shape'])),
  data_options=_data_options,
)
class VGG(layers.Staged):
  """(B, H, W, C) images -> (B, num_classes) logits."""

  def __init__(
    self,
    *,
    widths,
    pool_after,
    norm,
    input_shape,
    num_classes,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
  ):
    if norm not in NORMS:
      raise ValueError(f'vgg: norm={norm!r}; valid: {NORMS}')
    if not widths:
      raise ValueError('vgg: widths=() has no conv; give one width per conv layer')
    widths = layers.layer_widths('vgg', 'widths', widths, (1,) * len(widths), 'one per conv')
    bad = [i for i in pool_after if not 0 <= i < len(widths)]
    if bad:
      raise ValueError(
        f'vgg: pool_after={tuple(pool_after)!r} names convs {bad} of 0..{len(widths) - 1}'
      )
    kw = dict(norm=norm, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    cins = (input_shape[-1], *widths[:-1])
    self.convs = nnx.List([ConvBlock(a, b, **kw) for a, b in zip(cins, widths)])
    self.pool_after = tuple(int(i) for i in pool_after)
    self.head = layers.dense(
      widths[-1], num_classes, ('embed', 'classes'), dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )

  def _pool(self, i, x):
    if i not in self.pool_after:
      return x
    return nnx.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')

  def stages(self, train: bool = False):
    """[('convs/i', conv-bn-relu [-> pool])] + [('head', global pool -> Dense)]."""
    out = [
      (f'convs/{i}', lambda x, i=i, c=conv: self._pool(i, c(x, train)))
      for i, conv in enumerate(self.convs)
    ]
    return out + [('head', lambda x: self.head(x.mean(axis=(1, 2))).astype(jnp.float32))]

  def init_hints(self) -> dict:
    return dict(
      depth=len(self.convs) + 1,
      classifier=r'head/kernel',
      residual_final=None,
      residual_branch=None,
      num_branches=0,
      branch_layers=0,
    )
