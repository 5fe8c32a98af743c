"""Decoder-only (causal) transformer language model with stacked, scanned blocks.

    model = TransformerLM(vocab_size=256, dim=128, depth=4, num_heads=4, mlp_ratio=4.0,
                          max_len=256, activation='gelu', remat=False, dtype='float32',
                          param_dtype='float32', rngs=nnx.Rngs(0))
    logits = model(tokens)     # int (B, T) -> (B, T, vocab_size), T <= max_len

Token embedding (`token_embed`, (vocab, dim) tagged ('vocab', 'embed')) plus a learned
position embedding (`pos_embed`, (max_len, dim)), `depth` pre-LayerNorm blocks, a final
LayerNorm and an untied Dense head (`head`, ('embed', 'vocab')).

The blocks are built once with `nnx.vmap` and live in `blocks` as ONE block whose params
carry a leading layer axis: e.g. blocks/mlp/fc1/kernel is (depth, dim, hidden) tagged
('layers', 'embed', 'mlp'). The forward pass runs them with `nnx.scan` (optionally under
`nnx.remat`), so compile time does not grow with depth.

Per-layer mlp_dim: not available, the blocks are scanned. Their params are stacked along the
leading 'layers' axis, so every layer has the same shapes (one `mlp_ratio` for all); per-layer
MLP widths (e.g. structured pruning at init) would need unstacked blocks.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from initlab.models import layers
from initlab.models.registry import InputSpec, register_model


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      name='transformer_lm',
      vocab_size=256,
      dim=128,
      depth=4,
      num_heads=4,
      mlp_ratio=4.0,  # MLP hidden width = round(mlp_ratio * dim).
      max_len=256,  # Longest sequence (size of the position table).
      activation='gelu',  # One of layers.ACTIVATIONS.
      remat=False,  # Rematerialize each block in the backward pass (saves memory).
      dtype='float32',
      param_dtype='float32',
    )
  )


def _data_options(config, meta) -> dict:
  """The dataset fixes the vocabulary; the position table must hold its windows."""
  return dict(vocab_size=meta.vocab_size, max_len=max(config['max_len'], meta.input_shape[0]))


@register_model(
  'transformer_lm',
  task='lm',
  default_config=default_config,
  input_spec=lambda c: InputSpec((None,), vocab_size=c['vocab_size']),
  data_options=_data_options,
)
class TransformerLM(nnx.Module):
  """int (B, T) tokens -> (B, T, vocab_size) next-token logits (float32)."""

  def __init__(
    self,
    *,
    vocab_size,
    dim,
    depth,
    num_heads,
    mlp_ratio,
    max_len,
    activation,
    remat,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
  ):
    if depth < 1:
      raise ValueError(f'transformer_lm: depth={depth} must be >= 1')
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.token_embed = nnx.Embed(
      vocab_size,
      dim,
      embedding_init=layers.partitioned(layers.default_embed_init, 'vocab', 'embed'),
      rngs=rngs,
      **kw,
    )
    self.pos_embed = nnx.Embed(
      max_len,
      dim,
      embedding_init=layers.partitioned(nnx.initializers.normal(0.02), None, 'embed'),
      rngs=rngs,
      **kw,
    )
    act, hidden = layers.activation(activation), int(round(mlp_ratio * dim))

    @nnx.vmap(transform_metadata={nnx.PARTITION_NAME: 'layers'})
    def make_blocks(key):
      return layers.TransformerBlock(
        dim, num_heads, hidden, causal=True, activation_fn=act, rngs=nnx.Rngs(key), **kw
      )

    self.blocks = make_blocks(jax.random.split(rngs.params(), depth))
    self.final_norm = layers.layer_norm(dim, rngs=rngs, **kw)
    self.head = layers.dense(dim, vocab_size, ('embed', 'vocab'), rngs=rngs, **kw)
    self.depth, self.remat = depth, remat

  def embed(self, tokens: jax.Array) -> jax.Array:
    """int (B, T) -> (B, T, dim)."""
    max_len = self.pos_embed.embedding.shape[0]
    if tokens.shape[-1] > max_len:
      raise ValueError(f'transformer_lm: sequence length {tokens.shape[-1]} > max_len={max_len}')
    x = self.token_embed(tokens)
    return x + self.pos_embed.embedding[: tokens.shape[-1]].astype(x.dtype)

  def classify(self, x: jax.Array) -> jax.Array:
    """(B, T, dim) -> (B, T, vocab_size) float32 logits."""
    return self.head(self.final_norm(x)).astype(jnp.float32)

  def apply_blocks(self, x: jax.Array) -> jax.Array:
    """All blocks, scanned over the layer axis: (B, T, dim) -> (B, T, dim)."""

    def body(x, block):
      return block(x)

    if self.remat:
      body = nnx.remat(body)
    return nnx.scan(body, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(x, self.blocks)

  def block(self, i: int) -> layers.TransformerBlock:
    """A TransformerBlock holding (a copy of) layer i's slice of the stacked params."""
    return self._unstack()[i]

  def _unstack(self) -> list[layers.TransformerBlock]:
    graphdef, state = nnx.split(self.blocks)
    return [
      nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state)) for i in range(self.depth)
    ]

  def stages(self, train: bool = False):
    """[('embed', ...)] + [('blocks/i', block i)] + [('head', norm -> Dense)].

    Block stages hold slices of the stacked params taken when `stages` is called: call
    it again after changing the params (e.g. inside the traced function that gets them).
    """
    del train  # No train-dependent layers.
    return (
      [('embed', self.embed)]
      + [(f'blocks/{i}', b) for i, b in enumerate(self._unstack())]
      + [('head', self.classify)]
    )

  def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    del train
    return self.classify(self.apply_blocks(self.embed(tokens)))

  def init_hints(self) -> dict:
    return dict(
      depth=self.depth + 2,
      classifier=r'head/kernel',
      residual_final=r'blocks/(attn/out|mlp/fc2)/kernel',
      residual_branch=r'blocks/(attn/(query|key|value|out)|mlp/fc[12])/kernel',
      num_branches=2 * self.depth,
      branch_layers=2,
    )
