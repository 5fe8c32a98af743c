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

Learngene variants (option `learngene`, default '' = the ordinary model above): the model
stores a learngene instead of `blocks`, and its forward pass builds the stacked (depth, ...)
block params from it and runs exactly the ordinary model's scan on them, so an ordinary LM
whose `blocks` hold that expansion (same embeddings, final norm and head) gives the same
logits. Embeddings, final norm and head are the ordinary model's (paths, inits).

- 'tleg' ("Transformer as Linear Expansion of Learngene", Xia et al., AAAI 2024, arXiv
  2312.05614, the method section and Fig. 3): `gene_a/<block path>` = θ_A and
  `gene_b/<block path>` = θ_B, each one TransformerBlock's params without a layer axis (e.g.
  gene_a/attn/query/kernel (dim, heads, head_dim), gene_b/norm1/scale (dim,)); layer l
  (0-based) of `depth` = L uses θ_l = θ_A + c_l·θ_B for every block tensor, c_l = l/L
  (`learngene_coeff='code'`, the authors' code) or l/(L−1) ('endpoint'; c_0 = 0 for L = 1)
  (`initlab.init.learngene.tleg_expand`). Init as the authors' code: kernels timm
  trunc_normal_(std=0.02) (`layers.TLEG_KERNEL_INIT`), biases 0, γ_A = 1, β_A = 0,
  γ_B = β_B = 0.
- 'sws' ("Exploring Learngene via Stage-wise Weight Sharing for Initializing Variable-sized
  Models", IJCAI 2024, arXiv 2404.16897, the method section): `gene_stages/<block path>`
  with a leading stage axis (len(learngene_stages), ...) tagged 'layers'; layer l uses the
  params of its stage (stages in order: the first learngene_stages[0] layers stage 0, ...;
  `sws_layer_map` / `sws_expand`); depth must equal sum(learngene_stages). Each stage is
  drawn as an ordinary block, with its own key.

`stages()` of a learngene LM: 'embed', then 'layers/i' (a plain function running layer i of
the expansion, computed when `stages` is called), then 'head'. The layer stages are not
modules of the model, and no param path starts with `blocks`: LSUV (which rescales per-layer
kernels it finds in modules) normalizes only the head of a learngene LM, since a gene kernel
is not one layer's kernel. `init_hints()`: see `layers.learngene_hints` ('tleg' gives no
residual_branch, so Fixup refuses it); num_branches is the expanded model's, 2·depth.
"""

from __future__ import annotations

import functools

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
      learngene='',  # One of layers.LEARNGENES: '' (ordinary), 'tleg' or 'sws'.
      learngene_coeff='code',  # TLEG coefficients c_l: 'code' l/L or 'endpoint' l/(L-1).
      learngene_stages=layers.DEFAULT_LEARNGENE_STAGES,  # SWS: layers per stage (sum = depth).
    )
  )


def _make_blocks(keys, dim, num_heads, hidden, activation_fn, kw) -> layers.TransformerBlock:
  """ONE TransformerBlock whose params carry a leading layer axis (len(keys), ...)."""

  @nnx.vmap(transform_metadata={nnx.PARTITION_NAME: 'layers'})
  def make_blocks(key):
    return layers.TransformerBlock(
      dim, num_heads, hidden, causal=True, activation_fn=activation_fn, rngs=nnx.Rngs(key), **kw
    )

  return make_blocks(keys)


@functools.lru_cache(maxsize=64)
def _stacked_graphdef(dim, num_heads, hidden, activation, dtype, param_dtype) -> nnx.GraphDef:
  """The graph of the stacked `blocks` (shapes aside: built abstractly, for one layer)."""
  kw = dict(dtype=dtype, param_dtype=param_dtype)
  act = layers.activation(activation)
  # Built outside any mesh: under the run's mesh the 'layers' logical name would be taken for
  # a mesh axis. The graph holds no arrays, so no mesh is needed.
  no_mesh = jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((), ()))
  with no_mesh, nnx.use_eager_sharding(False):
    blocks = nnx.eval_shape(
      lambda: _make_blocks(jax.random.split(jax.random.key(0), 1), dim, num_heads, hidden, act, kw)
    )
  return nnx.graphdef(blocks)


def _data_options(config, meta) -> dict:
  """The dataset fixes the vocabulary; the position table must hold its windows."""
  return dict(vocab_size=meta.vocab_size, max_len=max(config['max_len'], meta.input_shape[0]))


@register_model(
  'transformer_lm',
  task='lm',
  default_config=default_config,
  input_spec=lambda c: InputSpec((None,), vocab_size=c['vocab_size']),
  data_options=_data_options,
  optional=('learngene', 'learngene_coeff', 'learngene_stages'),  # Added later.
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
    learngene='',
    learngene_coeff='code',
    learngene_stages=layers.DEFAULT_LEARNGENE_STAGES,
  ):
    if depth < 1:
      raise ValueError(f'transformer_lm: depth={depth} must be >= 1')
    learngene_stages = layers.learngene_options(
      'transformer_lm', learngene, learngene_coeff, learngene_stages, depth
    )
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
    if learngene:
      block = lambda rngs, **inits: layers.TransformerBlock(
        dim, num_heads, hidden, causal=True, activation_fn=act, rngs=rngs, **kw, **inits
      )
      genes = layers.learngene_genes(learngene, learngene_stages, block, rngs.params())
      for name, gene in genes.items():
        setattr(self, name, gene)
      self.blocks = None
    else:
      self.blocks = _make_blocks(
        jax.random.split(rngs.params(), depth), dim, num_heads, hidden, act, kw
      )
    self.final_norm = layers.layer_norm(dim, rngs=rngs, **kw)
    self.head = layers.dense(dim, vocab_size, ('embed', 'vocab'), rngs=rngs, **kw)
    self.depth, self.remat = depth, remat
    self.learngene, self.learngene_coeff = learngene, learngene_coeff
    self.learngene_stages = learngene_stages
    self._block_graph = (dim, num_heads, hidden, activation, dtype, param_dtype)

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

  def stacked_blocks(self) -> layers.TransformerBlock:
    """The stacked blocks the forward pass scans: `blocks`, or for a learngene a block whose
    params are its expansion to `depth` layers (computed now, from the genes)."""
    if not self.learngene:
      return self.blocks
    expanded = layers.learngene_expand(
      self, self.learngene, self.depth, self.learngene_coeff, self.learngene_stages
    )
    return nnx.merge(_stacked_graphdef(*self._block_graph), expanded)

  def apply_blocks(self, x: jax.Array) -> jax.Array:
    """All blocks, scanned over the layer axis: (B, T, dim) -> (B, T, dim)."""

    def body(x, block):
      return block(x)

    if self.remat:
      body = nnx.remat(body)
    return nnx.scan(body, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(x, self.stacked_blocks())

  def block(self, i: int) -> layers.TransformerBlock:
    """A TransformerBlock holding (a copy of) layer i's slice of the stacked params."""
    return self._unstack()[i]

  def _unstack(self) -> list[layers.TransformerBlock]:
    graphdef, state = nnx.split(self.stacked_blocks())
    return [
      nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state)) for i in range(self.depth)
    ]

  def stages(self, train: bool = False):
    """[('embed', ...)] + [('blocks/i', block i)] + [('head', norm -> Dense)].

    Block stages hold slices of the stacked params taken when `stages` is called: call
    it again after changing the params (e.g. inside the traced function that gets them).
    A learngene LM gives [('layers/i', layer i's block call)] instead (module docstring).
    """
    del train  # No train-dependent layers.
    if self.learngene:
      blocks = [(f'layers/{i}', b.__call__) for i, b in enumerate(self._unstack())]
    else:
      blocks = [(f'blocks/{i}', b) for i, b in enumerate(self._unstack())]
    return [('embed', self.embed)] + blocks + [('head', self.classify)]

  def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    del train
    return self.classify(self.apply_blocks(self.embed(tokens)))

  def init_hints(self) -> dict:
    residual = dict(
      residual_final=r'blocks/(attn/out|mlp/fc2)/kernel',
      residual_branch=r'blocks/(attn/(query|key|value|out)|mlp/fc[12])/kernel',
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
