"""Building blocks shared by the zoo: activations, annotated layers, transformer parts.

Every kernel and embedding is created through `partitioned(init, *names)`, which
stores its logical axis names as the variable's `out_sharding` metadata (read by
`initlab.init` for fans and by `initlab.models.logical_axis_rules` for sharding).
Logical names used in the zoo: see `initlab.sharding.LOGICAL_AXES`.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp

from initlab.init import learngene as learngene_lib

Array = jax.Array
Dtype = Any

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
  'relu': jax.nn.relu,
  'tanh': jnp.tanh,
  'linear': lambda x: x,
  'gelu': lambda x: jax.nn.gelu(x, approximate=False),
  'gelu_tanh': lambda x: jax.nn.gelu(x, approximate=True),
  'silu': jax.nn.silu,
  'sigmoid': jax.nn.sigmoid,
}


def flat_kernel_init(init):
  """`init` for a (*window, in, out) kernel, drawn as its (prod(window) * in, out) matrix.

  For i.i.d. fan-in scaled inits (lecun/he normal) this is the same distribution as
  drawing the kernel directly, and XLA compiles the 2-D draw several times faster on CPU.
  """

  def flat_init(key, shape, dtype=jnp.float32):
    flat = (math.prod(shape[:-1]), shape[-1])
    return init(key, flat, dtype).reshape(shape)

  return flat_init


# Module defaults (Flax's); init schemes in initlab.init replace them.
default_kernel_init = nnx.initializers.lecun_normal()
default_conv_init = flat_kernel_init(default_kernel_init)
default_embed_init = nnx.initializers.variance_scaling(1.0, 'fan_in', 'normal', out_axis=0)
zeros_init = nnx.initializers.zeros_init()
ones_init = nnx.initializers.ones_init()


def partitioned(init, *names: str | None):
  """`init` that tags its variable with the logical axis `names` (one per axis)."""
  return nnx.with_partitioning(init, names)


def activation(name: str, key: str = 'activation') -> Callable[[Array], Array]:
  """The activation function called `name`; `key` names the config option in errors."""
  if name not in ACTIVATIONS:
    raise ValueError(f'{key}={name!r} is not a known activation; valid: {sorted(ACTIVATIONS)}')
  return ACTIVATIONS[name]


def layer_widths(
  model: str, option: str, values, default: tuple[int, ...], what: str
) -> tuple[int, ...]:
  """Per-layer widths option `option` of `model`: `default` if `values` is empty, else
  `values` as a tuple of len(default) Python ints >= 1 (numpy integers are fine).

  `what` says what the entries are (e.g. 'one per hidden layer, depth=3'). Raises ValueError
  naming `model: option`, the expected length and the given value.
  """
  length = len(default)
  if not isinstance(values, (tuple, list)):
    raise ValueError(f'{model}: {option}={values!r} must be a tuple of ints ({what}), or ()')
  if not values:
    return tuple(default)
  if len(values) != length:
    raise ValueError(
      f'{model}: {option}={tuple(values)!r} has {len(values)} entries; need {length} '
      f'({what}), or () for the default'
    )
  out = []
  for i, v in enumerate(values):
    try:
      v = operator.index(v) if not isinstance(v, bool) else None
    except TypeError:
      v = None
    if v is None or v < 1:
      raise ValueError(
        f'{model}: {option}={tuple(values)!r} must hold ints >= 1; entry {i} is {values[i]!r}'
      )
    out.append(int(v))
  return tuple(out)


def dense(
  in_features: int,
  out_features: int,
  names: tuple[str | None, str | None],
  *,
  dtype: Dtype,
  param_dtype: Dtype,
  rngs: nnx.Rngs,
  use_bias: bool = True,
  kernel_init=None,
) -> nnx.Linear:
  """nnx.Linear with kernel (in, out) tagged `names` and bias (out,) tagged names[1:].

  `kernel_init`: the kernel's initializer (default `default_kernel_init`); the bias is 0.
  """
  return nnx.Linear(
    in_features,
    out_features,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=param_dtype,
    kernel_init=partitioned(kernel_init or default_kernel_init, *names),
    bias_init=partitioned(zeros_init, names[1]),
    rngs=rngs,
  )


def layer_norm(
  dim: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs, scale_init=None
) -> nnx.LayerNorm:
  """LayerNorm over the last axis; scale and bias (dim,) tagged ('embed',).

  `scale_init`: the scale's initializer (default 1); the bias is 0.
  """
  return nnx.LayerNorm(
    dim,
    epsilon=1e-6,
    dtype=dtype,
    param_dtype=param_dtype,
    scale_init=partitioned(scale_init or ones_init, 'embed'),
    bias_init=partitioned(zeros_init, 'embed'),
    rngs=rngs,
  )


class Staged(nnx.Module):
  """A model that is its `stages(train)` composed: calling it runs them in order."""

  def __call__(self, x: Array, train: bool = False) -> Array:
    for _, stage in self.stages(train):
      x = stage(x)
    return x


class MlpBlock(nnx.Module):
  """Position-wise feed-forward block: (..., dim) -> fc1 -> act -> fc2 -> (..., dim).

  Kernels: fc1 (dim, hidden) ('embed', 'mlp'); fc2 (hidden, dim) ('mlp', 'embed'), drawn
  from `kernel_init` (default `default_kernel_init`).
  """

  def __init__(
    self, dim: int, hidden: int, *, activation_fn, dtype, param_dtype, rngs, kernel_init=None
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, kernel_init=kernel_init)
    self.fc1 = dense(dim, hidden, ('embed', 'mlp'), **kw)
    self.fc2 = dense(hidden, dim, ('mlp', 'embed'), **kw)
    self.activation_fn = activation_fn

  def __call__(self, x: Array) -> Array:
    return self.fc2(self.activation_fn(self.fc1(x)))


class Attention(nnx.Module):
  """Multi-head self-attention, (B, T, dim) -> (B, T, dim).

  Kernels (DenseGeneral layout): `query`, `key`, `value` (dim, heads, head_dim) tagged
  ('embed', 'heads', 'kv'); `out` (heads, head_dim, dim) tagged ('heads', 'kv', 'embed'); drawn
  from `kernel_init` (default `default_kernel_init`).
  """

  def __init__(
    self, dim: int, num_heads: int, *, causal: bool, dtype, param_dtype, rngs, kernel_init=None
  ):
    if num_heads < 1 or dim % num_heads:
      raise ValueError(f'num_heads={num_heads} must be >= 1 and divide dim={dim}')
    head_dim = dim // num_heads
    kernel_init = kernel_init or default_kernel_init

    def projection():
      return nnx.LinearGeneral(
        dim,
        (num_heads, head_dim),
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=partitioned(kernel_init, 'embed', 'heads', 'kv'),
        bias_init=partitioned(zeros_init, 'heads', 'kv'),
        rngs=rngs,
      )

    self.query = projection()
    self.key = projection()
    self.value = projection()
    self.out = nnx.LinearGeneral(
      (num_heads, head_dim),
      dim,
      axis=(-2, -1),
      dtype=dtype,
      param_dtype=param_dtype,
      kernel_init=partitioned(kernel_init, 'heads', 'kv', 'embed'),
      bias_init=partitioned(zeros_init, 'embed'),
      rngs=rngs,
    )
    self.causal = causal

  def __call__(self, x: Array) -> Array:
    q, k, v = self.query(x), self.key(x), self.value(x)  # (B, T, heads, head_dim) each
    y = jax.nn.dot_product_attention(q, k, v, is_causal=self.causal)
    return self.out(y)


class TransformerBlock(nnx.Module):
  """Pre-LayerNorm residual block: x + attn(norm1(x)), then + mlp(norm2(x)). (B, T, dim).

  `kernel_init` (every attention and MLP kernel) and `norm_scale_init` (both LayerNorm
  scales) replace the defaults (`default_kernel_init`, 1); biases are 0.
  """

  def __init__(
    self,
    dim: int,
    num_heads: int,
    mlp_hidden: int,
    *,
    causal: bool,
    activation_fn,
    dtype,
    param_dtype,
    rngs,
    kernel_init=None,
    norm_scale_init=None,
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = layer_norm(dim, scale_init=norm_scale_init, **kw)
    self.attn = Attention(dim, num_heads, causal=causal, kernel_init=kernel_init, **kw)
    self.norm2 = layer_norm(dim, scale_init=norm_scale_init, **kw)
    self.mlp = MlpBlock(dim, mlp_hidden, activation_fn=activation_fn, kernel_init=kernel_init, **kw)

  def __call__(self, x: Array) -> Array:
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


# Learngene variants of the transformer zoo models (`transformer_lm`, `vit`, option `learngene`):
# the model stores a few block-shaped param sets (the learngene) instead of `depth` blocks,
# and its forward pass runs the ordinary blocks on their expansion to `depth` layers.
LEARNGENES = ('', 'tleg', 'sws')  # '': the ordinary model.
LEARNGENE_COEFFS = learngene_lib.COEFFS  # TLEG's c_l: 'code' l/L, 'endpoint' l/(L-1).
DEFAULT_LEARNGENE_STAGES = learngene_lib.SWS_STAGES  # The SWS paper's (3, 3, 4, 3, 3).
# TLEG's kernels: timm's trunc_normal_(std=0.02), as the authors' code (arXiv 2312.05614): its
# bounds are absolute (±2, i.e. ±100 std), so in effect N(0, 0.02²) clipped at ±2.
TLEG_KERNEL_INIT = nnx.initializers.truncated_normal(0.02, lower=-100.0, upper=100.0)


def learngene_options(model: str, learngene, coeff, stages, depth: int) -> tuple[int, ...]:
  """Checks the learngene options of `model`; returns `stages` as a tuple of ints.

  Raises ValueError naming `model: option`, the given value and the valid ones: `learngene`
  one of LEARNGENES, `learngene_coeff` one of LEARNGENE_COEFFS, `learngene_stages` a
  non-empty tuple of ints >= 1; a learngene needs depth >= 1, and 'sws' depth ==
  sum(learngene_stages).
  """
  if learngene not in LEARNGENES:
    raise ValueError(
      f"{model}: learngene={learngene!r}; valid: {LEARNGENES} ('' is the ordinary model)"
    )
  if coeff not in LEARNGENE_COEFFS:
    raise ValueError(f'{model}: learngene_coeff={coeff!r}; valid: {LEARNGENE_COEFFS}')
  if not isinstance(stages, (tuple, list)) or not stages:
    raise ValueError(
      f'{model}: learngene_stages={stages!r} must be a non-empty tuple of ints >= 1 '
      '(the number of layers of each stage)'
    )
  stages = layer_widths(model, 'learngene_stages', stages, (1,) * len(stages), 'layers per stage')
  if learngene and depth < 1:
    raise ValueError(f'{model}: learngene={learngene!r} needs depth >= 1; got depth={depth}')
  if learngene == 'sws' and sum(stages) != depth:
    raise ValueError(
      f"{model}: learngene='sws' needs depth == sum(learngene_stages); got depth={depth}, "
      f'learngene_stages={stages} (sum {sum(stages)})'
    )
  return stages


def learngene_genes(learngene: str, stages: tuple[int, ...], block, key) -> dict[str, nnx.Module]:
  """The learngene's param sets, {attribute name: module}, drawn from `key`.

  `block(rngs, **inits)` builds one TransformerBlock of the model (`inits`: its
  `kernel_init` / `norm_scale_init`).
  'tleg' (arXiv 2312.05614, the method section): {'gene_a': θ_A, 'gene_b': θ_B}, two blocks
  without a layer axis; kernels TLEG_KERNEL_INIT, biases 0, LayerNorm γ_A = 1, β_A = 0,
  γ_B = β_B = 0 (the authors' code).
  'sws' (arXiv 2404.16897, the method section): {'gene_stages': one block whose params carry
  a leading stage axis (len(stages), ...) tagged 'layers'}, each stage drawn as an ordinary
  block, with its own key.
  """
  if learngene == 'tleg':
    key_a, key_b = jax.random.split(key)
    return dict(
      gene_a=block(nnx.Rngs(key_a), kernel_init=TLEG_KERNEL_INIT),
      gene_b=block(nnx.Rngs(key_b), kernel_init=TLEG_KERNEL_INIT, norm_scale_init=zeros_init),
    )

  @nnx.vmap(transform_metadata={nnx.PARTITION_NAME: 'layers'})
  def make_stages(k):
    return block(nnx.Rngs(k))

  return dict(gene_stages=make_stages(jax.random.split(key, len(stages))))


def learngene_expand(
  model: nnx.Module, learngene: str, depth: int, coeff: str, stages: tuple[int, ...]
) -> dict:
  """The block params of the `depth` layers `model`'s learngene expands to, as a pure dict
  (the path tree of one TransformerBlock) whose leaves carry a leading layer axis (depth, ...).

  'tleg': leaf l = θ_A + c_l·θ_B (`initlab.init.learngene.tleg_expand`, coefficients
  `coeff`; in θ_A's param dtype); 'sws': layer l holds its stage's params (`sws_expand` of
  `sws_layer_map(depth, stages)`, which for depth == sum(stages) gives stage k its
  stages[k] layers, in order).
  """
  params = lambda m: nnx.state(m, nnx.Param).to_pure_dict()
  if learngene == 'tleg':
    return learngene_lib.tleg_expand(params(model.gene_a), params(model.gene_b), depth, coeff=coeff)
  if learngene == 'sws':
    layer_map = learngene_lib.sws_layer_map(depth, stages)
    return learngene_lib.sws_expand(params(model.gene_stages), layer_map)
  raise ValueError(f'learngene={learngene!r} has no expansion; valid: {LEARNGENES[1:]}')


def learngene_hints(learngene: str) -> dict:
  """`init_hints()` residual regexes of a learngene model's genes (see the model docstrings).

  'sws': every stage's final / branch kernels (each layer holds exactly one stage's kernels,
  so a per-tensor rule gives every layer that rule's distribution). 'tleg': residual_final
  matches the final kernels of θ_A and θ_B (0 in both makes every θ_l's final kernel 0),
  residual_branch is None: an i.i.d. rule applied to θ_A and θ_B gives layer l the variance
  (1 + c_l²) times the rule's, so Fixup's depth scaling would be wrong; Fixup refuses the
  model instead (it needs residual_branch).
  """
  final, branch = r'(attn/out|mlp/fc2)/kernel', r'(attn/(query|key|value|out)|mlp/fc[12])/kernel'
  if learngene == 'tleg':
    return dict(residual_final=f'gene_[ab]/{final}', residual_branch=None)
  return dict(residual_final=f'gene_stages/{final}', residual_branch=f'gene_stages/{branch}')
