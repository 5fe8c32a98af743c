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

Learngene variants (option `learngene`, default '' = the ordinary model above; the same
options and params as `transformer_lm`'s, see its module docstring): instead of `blocks`
the model stores 'tleg' genes `gene_a/<block path>`, `gene_b/<block path>` (one
TransformerBlock's params each, no layer axis; layer l uses θ_A + c_l·θ_B, arXiv
2312.05614) or 'sws' `gene_stages/<block path>` with a leading stage axis tagged 'layers'
(layer l uses its stage's params, arXiv 2404.16897; depth == sum(learngene_stages)). The
forward pass runs, for each layer l, the ordinary block computation with layer l's params
of the expansion, so an ordinary ViT whose `blocks/l` hold them (same patch embedding, class
token, positions, final norm and head) gives the same logits. `mlp_dims` must then be () or
one width repeated (the genes have one block shape). `stages()`: 'embed', 'layers/i' (plain
functions running layer i of the expansion, computed when `stages` is called; not modules
of the model, so LSUV normalizes only the patch embedding and head), 'head'; `init_hints()`
as `layers.learngene_hints`.
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
      learngene='',  # One of layers.LEARNGENES: '' (ordinary), 'tleg' or 'sws'.
      learngene_coeff='code',  # TLEG coefficients c_l: 'code' l/L or 'endpoint' l/(L-1).
      learngene_stages=layers.DEFAULT_LEARNGENE_STAGES,  # SWS: layers per stage (sum = depth).
    )
  )


@register_model(
  'vit',
  task='classification',
  default_config=default_config,
  input_spec=lambda c: InputSpec(tuple(c['input_shape'])),
  # Added later: configs recorded before lack them.
  optional=('mlp_dims', 'learngene', 'learngene_coeff', 'learngene_stages'),
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
    learngene='',
    learngene_coeff='code',
    learngene_stages=layers.DEFAULT_LEARNGENE_STAGES,
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
    learngene_stages = layers.learngene_options(
      'vit', learngene, learngene_coeff, learngene_stages, depth
    )
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
    if learngene:
      if len(set(hidden)) > 1:
        raise ValueError(
          f'vit: learngene={learngene!r} gives every layer one block shape; mlp_dims='
          f'{tuple(mlp_dims)!r} must be () or one width repeated'
        )
      types = dict(dtype=dtype, param_dtype=param_dtype)
      block = lambda rngs, **inits: layers.TransformerBlock(
        dim, num_heads, hidden[0], causal=False, activation_fn=act, rngs=rngs, **types, **inits
      )
      genes = layers.learngene_genes(learngene, learngene_stages, block, rngs.params())
      for name, gene in genes.items():
        setattr(self, name, gene)
      self.blocks = None
    else:
      self.blocks = nnx.List(
        [
          layers.TransformerBlock(dim, num_heads, h, causal=False, activation_fn=act, **kw)
          for h in hidden
        ]
      )
    self.final_norm = layers.layer_norm(dim, **kw)
    self.head = layers.dense(dim, num_classes, ('embed', 'classes'), **kw)
    self.pool = pool
    self.depth = depth
    self.learngene, self.learngene_coeff = learngene, learngene_coeff
    self.learngene_stages = learngene_stages

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

  def layer_blocks(self) -> list[layers.TransformerBlock]:
    """The block of each layer: `blocks`, or for a learngene blocks holding (copies of) each
    layer's params of its expansion (computed now, from the genes)."""
    if not self.learngene:
      return list(self.blocks)
    expanded = layers.learngene_expand(
      self, self.learngene, self.depth, self.learngene_coeff, self.learngene_stages
    )
    graphdef = nnx.graphdef(self.gene_a if self.learngene == 'tleg' else self.gene_stages)
    return [
      nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], expanded)) for i in range(self.depth)
    ]

  def stages(self, train: bool = False):
    """[('embed', ...)] + [('blocks/i', block i)] + [('head', norm -> pool -> Dense)].

    A learngene ViT gives [('layers/i', layer i's block call)] instead (module docstring).
    """
    del train  # No train-dependent layers.
    if self.learngene:
      blocks = [(f'layers/{i}', b.__call__) for i, b in enumerate(self.layer_blocks())]
    else:
      blocks = [(f'blocks/{i}', b) for i, b in enumerate(self.blocks)]
    return [('embed', self.embed)] + blocks + [('head', self.classify)]

  def init_hints(self) -> dict:
    residual = dict(
      residual_final=r'blocks/\d+/(attn/out|mlp/fc2)/kernel',
      residual_branch=r'blocks/\d+/(attn/(query|key|value|out)|mlp/fc[12])/kernel',
    )
    if self.learngene:
      residual = layers.learngene_hints(self.learngene)
    return dict(
      depth=self.depth + 2,
      classifier=r'head/kernel',
      **residual,
      num_branches=2 * self.depth,
      branch_layers=2,
    )
