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
) -> nnx.Linear:
  """nnx.Linear with kernel (in, out) tagged `names` and bias (out,) tagged names[1:]."""
  return nnx.Linear(
    in_features,
    out_features,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=param_dtype,
    kernel_init=partitioned(default_kernel_init, *names),
    bias_init=partitioned(zeros_init, names[1]),
    rngs=rngs,
  )


def layer_norm(dim: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
  """LayerNorm over the last axis; scale and bias (dim,) tagged ('embed',)."""
  return nnx.LayerNorm(
    dim,
    epsilon=1e-6,
    dtype=dtype,
    param_dtype=param_dtype,
    scale_init=partitioned(ones_init, 'embed'),
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

  Kernels: fc1 (dim, hidden) ('embed', 'mlp'); fc2 (hidden, dim) ('mlp', 'embed').
  """

  def __init__(self, dim: int, hidden: int, *, activation_fn, dtype, param_dtype, rngs):
    self.fc1 = dense(dim, hidden, ('embed', 'mlp'), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.fc2 = dense(hidden, dim, ('mlp', 'embed'), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.activation_fn = activation_fn

  def __call__(self, x: Array) -> Array:
    return self.fc2(self.activation_fn(self.fc1(x)))


class Attention(nnx.Module):
  """Multi-head self-attention, (B, T, dim) -> (B, T, dim).

  Kernels (DenseGeneral layout): `query`, `key`, `value` (dim, heads, head_dim) tagged
  ('embed', 'heads', 'kv'); `out` (heads, head_dim, dim) tagged ('heads', 'kv', 'embed').
  """

  def __init__(self, dim: int, num_heads: int, *, causal: bool, dtype, param_dtype, rngs):
    if num_heads < 1 or dim % num_heads:
      raise ValueError(f'num_heads={num_heads} must be >= 1 and divide dim={dim}')
    head_dim = dim // num_heads

    def projection():
      return nnx.LinearGeneral(
        dim,
        (num_heads, head_dim),
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=partitioned(default_kernel_init, 'embed', 'heads', 'kv'),
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
      kernel_init=partitioned(default_kernel_init, 'heads', 'kv', 'embed'),
      bias_init=partitioned(zeros_init, 'embed'),
      rngs=rngs,
    )
    self.causal = causal

  def __call__(self, x: Array) -> Array:
    q, k, v = self.query(x), self.key(x), self.value(x)  # (B, T, heads, head_dim) each
    y = jax.nn.dot_product_attention(q, k, v, is_causal=self.causal)
    return self.out(y)


class TransformerBlock(nnx.Module):
  """Pre-LayerNorm residual block: x + attn(norm1(x)), then + mlp(norm2(x)). (B, T, dim)."""

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
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = layer_norm(dim, **kw)
    self.attn = Attention(dim, num_heads, causal=causal, **kw)
    self.norm2 = layer_norm(dim, **kw)
    self.mlp = MlpBlock(dim, mlp_hidden, activation_fn=activation_fn, **kw)

  def __call__(self, x: Array) -> Array:
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))
