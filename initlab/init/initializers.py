"""Per-tensor initializers: every `jax.nn.initializers` one, plus ZerO, orthogonal over any
layout, and Fixup-style depth scaling. All follow `init(key, shape, dtype) -> Array`.

Layout-aware ones take `in_axis`, `out_axis`, `batch_axis` (ints or tuples) as in
`jax.nn.initializers.variance_scaling`; `Rules` fills them from each param's `ParamSpec`.
Formulas: REFERENCES.md §8 (classic baselines).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initlab.init.registry import get_initializer, register_initializer

Axes = int | Sequence[int]


def _axes(axes: Axes, ndim: int) -> tuple[int, ...]:
  axes = (axes,) if isinstance(axes, int) else tuple(axes)
  return tuple(a % ndim for a in axes)


def _as_matrices(matrix_init: Callable, in_axis: Axes, out_axis: Axes, batch_axis: Axes):
  """Lifts `matrix_init(key, (rows, cols), dtype)` to any layout.

  The tensor is viewed as (batch, rows, cols) with rows = receptive·in axes and cols = out
  axes; each batch slice gets its own key. Without batch axes the key is used as is, so a
  2-D (in, out) kernel equals `matrix_init(key, (in, out))`.
  """
  def init(key, shape, dtype=jnp.float32):
    ndim = len(shape)
    ins, outs, batch = _axes(in_axis, ndim), _axes(out_axis, ndim), _axes(batch_axis, ndim)
    receptive = tuple(a for a in range(ndim) if a not in ins + outs + batch)
    order = batch + receptive + ins + outs
    b = math.prod(shape[a] for a in batch)
    rows = math.prod(shape[a] for a in receptive + ins)
    cols = math.prod(shape[a] for a in outs)
    if batch:
      mats = jax.vmap(lambda k: matrix_init(k, (rows, cols), dtype))(jax.random.split(key, b))
    else:
      mats = matrix_init(key, (rows, cols), dtype)
    stacked = mats.reshape(tuple(shape[a] for a in order))
    return jnp.transpose(stacked, np.argsort(order))
  return init


def _broadcast_batch(init: Callable, batch_axis: Axes):
  """Applies a deterministic per-layer `init` identically along the batch axes."""
  def wrapped(key, shape, dtype=jnp.float32):
    batch = _axes(batch_axis, len(shape))
    inner = tuple(d for a, d in enumerate(shape) if a not in batch)
    value = init(key, inner, dtype)
    for a in batch:
      value = jnp.expand_dims(value, a)
    return jnp.broadcast_to(value, shape)
  return wrapped


def orthogonal(scale: float = 1.0, in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()):
  """W = scale·Q, Q the sign-fixed QR factor of a Gaussian (Saxe et al. 2014).

  Non-square views are semi-orthogonal. Conv kernels are viewed as (kh·kw·in, out).
  """
  return _as_matrices(jax.nn.initializers.orthogonal(scale), in_axis, out_axis, batch_axis)


def delta_orthogonal(scale: float = 1.0, in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()):
  """Conv kernel that is zero except its centre tap, scale·H with H (in, out) orthogonal.

  Xiao et al. 2018. Needs a conv layout (spatial…, in, out) with in ≤ out.
  """
  matrix = jax.nn.initializers.orthogonal(scale)

  def per_layer(key, shape, dtype=jnp.float32):
    if len(shape) not in (3, 4, 5):
      raise ValueError(f"delta_orthogonal needs a 1/2/3-D conv kernel, got shape {tuple(shape)}")
    cin, cout = shape[-2], shape[-1]
    if cin > cout:
      raise ValueError(f"delta_orthogonal needs in_channels ≤ out_channels, got {cin} > {cout}")
    centre = tuple(d // 2 for d in shape[:-2])
    return jnp.zeros(shape, dtype).at[centre].set(matrix(key, (cin, cout), dtype))

  def init(key, shape, dtype=jnp.float32):
    ndim = len(shape)
    if _axes(in_axis, ndim) != (ndim - 2,) or _axes(out_axis, ndim) != (ndim - 1,):
      raise ValueError(f"delta_orthogonal needs a (spatial…, in, out) conv layout, got shape {tuple(shape)}")
    batch = _axes(batch_axis, ndim)
    if not batch:
      return per_layer(key, shape, dtype)
    inner = tuple(d for a, d in enumerate(shape) if a not in batch)
    keys = jax.random.split(key, math.prod(shape[a] for a in batch))
    vals = jax.vmap(lambda k: per_layer(k, inner, dtype))(keys)
    vals = vals.reshape(tuple(shape[a] for a in batch) + inner)
    order = batch + tuple(a for a in range(ndim) if a not in batch)
    return jnp.transpose(vals, np.argsort(order))
  return init


def _hadamard(m: int) -> np.ndarray:
  """Sylvester Hadamard matrix H_m of size 2^m with entries ±1."""
  h = np.ones((1, 1))
  for _ in range(m):
    h = np.block([[h, h], [h, -h]])
  return h


def zero_matrix(fan_in: int, fan_out: int) -> np.ndarray:
  """ZerO (Zhao et al. 2022, arXiv 2110.12661, Algorithm 1) in Flax layout (in, out).

  With W = Kᵀ of shape (out, in): W = I* (partial identity) when out ≤ in; else
  W = c·I*·H_m·I* with m = ⌈log₂ out⌉ and c = 2^{-(m-1)/2}. The Hadamard scale c is the
  paper's; REFERENCES.md §8 marks it unverified.
  """
  if fan_out <= fan_in:
    return np.eye(fan_in, fan_out)
  m = math.ceil(math.log2(fan_out))
  w = 2.0 ** (-(m - 1) / 2) * _hadamard(m)[:fan_out, :fan_in]
  return w.T


def _zero_layer(shape, dtype, ins: tuple[int, ...], outs: tuple[int, ...]):
  ndim = len(shape)
  mat = zero_matrix(math.prod(shape[a] for a in ins), math.prod(shape[a] for a in outs))
  receptive = tuple(a for a in range(ndim) if a not in ins + outs)
  full = np.zeros(tuple(shape[a] for a in receptive) + mat.shape)
  full[tuple(shape[a] // 2 for a in receptive)] = mat
  order = receptive + ins + outs
  full = full.reshape(tuple(shape[a] for a in order))
  return jnp.asarray(np.transpose(full, np.argsort(order)), dtype)


def zero(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()):
  """ZerO init: deterministic (the key is unused), only zeros and ±c entries.

  Dense views use `zero_matrix`; conv kernels put it on the centre tap, zeros elsewhere;
  stacked layers all get the same matrix. Zeroing the last layer of each residual branch
  is a scheme-level rule, not part of this per-tensor init.
  """
  def init(key, shape, dtype=jnp.float32):
    del key
    ndim = len(shape)
    batch = _axes(batch_axis, ndim)
    inner = lambda axes: tuple(a - sum(b < a for b in batch) for a in _axes(axes, ndim))
    ins, outs = inner(in_axis), inner(out_axis)
    return _broadcast_batch(lambda k, s, d: _zero_layer(s, d, ins, outs), batch)(None, shape, dtype)
  return init


def scaled(init: Callable, factor: float):
  """`init` multiplied by a constant `factor`."""
  def wrapped(key, shape, dtype=jnp.float32):
    return (factor * init(key, shape, dtype)).astype(dtype)
  return wrapped


def fixup_factor(num_branches: int, branch_layers: int) -> float:
  """Fixup depth scale L^{-1/(2m-2)} for L residual branches of m layers (Zhang et al. 2019)."""
  if branch_layers < 2:
    raise ValueError(f"fixup needs branch_layers ≥ 2 (got {branch_layers})")
  return num_branches ** (-1.0 / (2 * branch_layers - 2))


def fixup_scaled(num_branches: int, branch_layers: int, gain: float = math.sqrt(2.0),
                 in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()):
  """He init (gain²/fan_in, untruncated normal) times the Fixup depth factor."""
  base = jax.nn.initializers.variance_scaling(
      gain**2, "fan_in", "normal", in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis)
  return scaled(base, fixup_factor(num_branches, branch_layers))


def _register_jax_initializers():
  """Registers every jax.nn.initializers factory; layout-free ones ignore the axis kwargs."""
  ji = jax.nn.initializers
  layout = ["variance_scaling", "glorot_normal", "glorot_uniform", "he_normal", "he_uniform",
            "lecun_normal", "lecun_uniform", "xavier_normal", "xavier_uniform",
            "kaiming_normal", "kaiming_uniform"]
  free = {"zeros": lambda: ji.zeros, "ones": lambda: ji.ones, "constant": ji.constant,
          "normal": ji.normal, "uniform": ji.uniform, "truncated_normal": ji.truncated_normal}
  for name in layout:
    register_initializer(name)(getattr(ji, name))
  for name, fn in free.items():
    register_initializer(name)(
        lambda *a, in_axis=None, out_axis=None, batch_axis=None, _fn=fn, **k: _fn(*a, **k))


_register_jax_initializers()
register_initializer("orthogonal")(orthogonal)
register_initializer("delta_orthogonal")(delta_orthogonal)
register_initializer("zero", "zer_o")(zero)
register_initializer("fixup_scaled")(fixup_scaled)
