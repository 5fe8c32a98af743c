"""Fully connected classifier on flattened images.

    model = MLP(input_shape=(8, 8, 1), depth=3, width=256, activation='tanh',
                num_classes=10, rngs=nnx.Rngs(0))
    logits = model(images)        # (B, 8, 8, 1) -> (B, 10)

`depth` counts the hidden Dense+activation layers; the output layer `head` comes on
top (depth=0 is a linear classifier). Hidden kernels alternate their logical names
('embed', 'mlp'), ('mlp', 'embed'), ... so that consecutive layers never map the same
mesh axis twice; the head kernel is (…, 'classes').

Per-layer widths (e.g. for structured pruning at init, which keeps the net dense with fewer
units per layer): `widths=(w_0, ..., w_{depth-1})` gives hidden layer i `w_i` units (its
kernel `hidden/i/kernel` is (w_{i-1} or input features, w_i), the head's is (w_{depth-1},
num_classes)); `width` is then unused. The default `widths=()` gives every hidden layer
`width` units: the same params as before the option existed.
"""

from __future__ import annotations

import math

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from initlab.models import layers
from initlab.models.registry import InputSpec, register_model


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      name='mlp',
      input_shape=(32, 32, 3),  # (H, W, C) of one image; flattened to H*W*C features.
      depth=2,  # Number of hidden Dense+activation layers.
      width=256,
      widths=(),  # Per-hidden-layer widths (`depth` ints); () = every hidden layer `width`.
      activation='relu',  # One of layers.ACTIVATIONS.
      use_bias=True,
      num_classes=10,
      dtype='float32',
      param_dtype='float32',
    )
  )


def _flatten(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1)


@register_model(
  'mlp',
  task='classification',
  default_config=default_config,
  input_spec=lambda c: InputSpec((math.prod(c['input_shape']),)),
  optional=('widths',),  # Added later: configs recorded before lack it.
)
class MLP(layers.Staged):
  """(B, H, W, C) images (or (B, features)) -> (B, num_classes) logits."""

  def __init__(
    self,
    *,
    input_shape,
    depth,
    width,
    widths=(),
    activation,
    use_bias,
    num_classes,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
  ):
    if depth < 0 or width < 1:
      raise ValueError(f'mlp: depth={depth} must be >= 0 and width={width} >= 1')
    widths = layers.layer_widths(
      'mlp', 'widths', widths, (width,) * depth, f'one per hidden layer, depth={depth}'
    )
    self.activation_fn = layers.activation(activation)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, use_bias=use_bias)
    names = ('embed', 'mlp')
    hidden, features = [], math.prod(input_shape)
    for w in widths:
      hidden.append(layers.dense(features, w, names, **kw))
      names, features = names[::-1], w
    self.hidden = nnx.List(hidden)
    self.head = layers.dense(features, num_classes, (names[0], 'classes'), **kw)

  def stages(self, train: bool = False):
    """[('hidden/i', flatten -> Dense -> act) for each hidden layer] + [('head', Dense)]."""
    del train  # No train-dependent layers.
    out = [
      (f'hidden/{i}', lambda x, l=layer: self.activation_fn(l(_flatten(x))))
      for i, layer in enumerate(self.hidden)
    ]
    return out + [('head', lambda x: self.head(_flatten(x)).astype(jnp.float32))]

  def init_hints(self) -> dict:
    return dict(
      depth=len(self.hidden) + 1,
      classifier=r'head/kernel',
      residual_final=None,
      residual_branch=None,
      num_branches=0,
      branch_layers=0,
    )
