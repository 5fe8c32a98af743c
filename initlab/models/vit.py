"""Small Vision Transformer (Dosovitskiy et al. 2021) for low-resolution images.

    model = ViT(input_shape=(32, 32, 3), patch_size=4, dim=192, depth=6, num_heads=3,
                mlp_ratio=4.0, num_classes=10, pool='cls', activation='gelu',
                dtype='float32', param_dtype='float32', rngs=nnx.Rngs(0))
    logits = model(images)     # (B, 32, 32, 3) -> (B, 10)

Patches are embedded by a (p, p, C, dim) conv with stride p (`patch_embed`), a learned
class token (`cls_token`, a one-row embedding table, pool='cls' only) is prepended, a
learned position embedding (`pos_embed`) added, then `depth` pre-LayerNorm transformer
blocks (`blocks/i`), a final LayerNorm, pooling (class token or mean) and a Dense head.

Per-block MLP widths (e.g. for structured pruning at init, which keeps the net dense with
fewer units per layer): the blocks are separate modules (an nnx.List, not scanned), so
`mlp_dims=(h_0, ..., h_{depth-1})` gives block i an MLP of hidden width h_i
(`blocks/i/mlp/fc1/kernel` (dim, h_i), `fc2` (h_i, dim)); `mlp_ratio` is then unused. The
default `mlp_dims=()` gives every block round(mlp_ratio * dim): the same params as before the
option existed. `dim` is the residual stream width, shared by every block (and
the embeddings, norms and head), so it stays one value.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from initlab.models import layers
from initlab.models.registry import InputSpec, register_model

POOLS = ('cls', 'mean')


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      name='vit',
      input_shape=(32, 32, 3),  # (H, W, C); H and W must be multiples of patch_size.
      patch_size=4,
      dim=192,
      depth=6,
      num_heads=3,
      mlp_ratio=4.0,  # MLP hidden width = round(mlp_ratio * dim).
      mlp_dims=(),  # MLP hidden width of each block (`depth` ints); () = from mlp_ratio.
      num_classes=10,
      pool='cls',  # One of POOLS.
      activation='gelu',  # One of layers.ACTIVATIONS.
      dtype='float32',
      param_dtype='float32',
    )
  )


@register_model(
  'vit',
  task='classification',
  default_config=default_config,
  input_spec=lambda c: InputSpec(tuple(c['input_shape'])),
  optional=('mlp_dims',),  # Added later: configs recorded before lack it.
)
class ViT(layers.Staged):
  """(B, H, W, C) images -> (B, num_classes) logits."""

  def __init__(
    self,
    *,
    input_shape,
    patch_size,
    dim,
    depth,
    num_heads,
    mlp_ratio,
    mlp_dims=(),
    num_classes,
    pool,
    activation,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
  ):
    h, w, c = input_shape
    if patch_size < 1 or h % patch_size or w % patch_size:
      raise ValueError(
        f'vit: patch_size={patch_size} must divide input_shape={tuple(input_shape)} (H and W)'
      )
    if pool not in POOLS:
      raise ValueError(f'vit: pool={pool!r}; valid: {POOLS}')
    if depth < 0:
      raise ValueError(f'vit: depth={depth} must be >= 0')
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.patch_embed = nnx.Conv(
      c,
      dim,
      (patch_size, patch_size),
      strides=patch_size,
      padding='VALID',
      kernel_init=layers.partitioned(layers.default_conv_init, None, None, 'conv_in', 'conv_out'),
      bias_init=layers.partitioned(layers.zeros_init, 'conv_out'),
      **kw,
    )
    pos_init = layers.partitioned(nnx.initializers.normal(0.02), None, 'embed')
    self.cls_token = nnx.Embed(1, dim, embedding_init=pos_init, **kw) if pool == 'cls' else None
    num_tokens = (h // patch_size) * (w // patch_size) + (pool == 'cls')
    self.pos_embed = nnx.Embed(num_tokens, dim, embedding_init=pos_init, **kw)
    act = layers.activation(activation)
    hidden = layers.layer_widths(
      'vit',
      'mlp_dims',
      mlp_dims,
      (int(round(mlp_ratio * dim)),) * depth,
      f'one per block, depth={depth}',
    )
    self.blocks = nnx.List(
      [
        layers.TransformerBlock(dim, num_heads, h, causal=False, activation_fn=act, **kw)
        for h in hidden
      ]
    )
    self.final_norm = layers.layer_norm(dim, **kw)
    self.head = layers.dense(dim, num_classes, ('embed', 'classes'), **kw)
    self.pool = pool

  def embed(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C) images -> (B, tokens, dim) patch (+ class) tokens with positions."""
    x = self.patch_embed(x)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    if self.cls_token is not None:
      cls = jnp.broadcast_to(
        self.cls_token.embedding[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1])
      )
      x = jnp.concatenate([cls, x], axis=1)
    pos = self.pos_embed.embedding[...]
    if x.shape[1] != pos.shape[0]:
      raise ValueError(
        f'vit: got {x.shape[1]} tokens for a position table of {pos.shape[0]}; '
        'the image size must equal config input_shape'
      )
    return x + pos.astype(x.dtype)

  def classify(self, x: jax.Array) -> jax.Array:
    """(B, tokens, dim) -> (B, num_classes) float32 logits."""
    x = self.final_norm(x)
    x = x[:, 0] if self.pool == 'cls' else x.mean(axis=1)
    return self.head(x).astype(jnp.float32)

  def stages(self, train: bool = False):
    """[('embed', ...)] + [('blocks/i', block i)] + [('head', norm -> pool -> Dense)]."""
    del train  # No train-dependent layers.
    return (
      [('embed', self.embed)]
      + [(f'blocks/{i}', b) for i, b in enumerate(self.blocks)]
      + [('head', self.classify)]
    )

  def init_hints(self) -> dict:
    return dict(
      depth=len(self.blocks) + 2,
      classifier=r'head/kernel',
      residual_final=r'blocks/\d+/(attn/out|mlp/fc2)/kernel',
      residual_branch=r'blocks/\d+/(attn/(query|key|value|out)|mlp/fc[12])/kernel',
      num_branches=2 * len(self.blocks),
      branch_layers=2,
    )
