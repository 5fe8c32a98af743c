"""Orthogonal (Saxe et al. 2014, arXiv 1312.6120) and delta-orthogonal (Xiao et al. 2018,
arXiv 1806.05393) initializers, group-aware.

Grouped and depthwise convs. A Flax conv with `feature_group_count=g` has a kernel
(*spatial, in/g, out): output channels [j·out/g, (j+1)·out/g) form group j and read only
that group's in/g input channels, so group j's weights are the block
`kernel[..., :, j·out/g:(j+1)·out/g]`. With `feature_group_count=g` both initializers make
each group's block what they would make for an ungrouped layer of that size, with its own
key: orthogonal gives every (kh·kw·in/g, out/g) block (semi-)orthogonal columns or rows,
delta-orthogonal gives every (in/g, out/g) centre tap orthogonal. For a depthwise conv
(in/g = 1) the delta-orthogonal centre tap is ±scale per channel. The kernel shape alone
does not tell the group count (in/g could be any layer's in), so it is an argument.

Stacked (scanned) params: `Rules` generates them one slice at a time (`initlab.init.rules`);
these factories take one layer's shape and refuse a `batch_axis`.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initlab.init.registry import register_initializer
from initlab.init.specs import normalize_axes

Axes = int | Sequence[int]


def check_layer_axes(name: str, batch_axis: Axes, feature_group_count: int):
  """The argument checks every per-layer (unstacked) structured initializer shares."""
  if (batch_axis,) if isinstance(batch_axis, int) else tuple(batch_axis):
    raise ValueError(
      f'{name}: batch_axis={batch_axis!r} is not supported in a direct call; stacked params '
      'are initialized one layer at a time by ii.Rules (give the axis the logical name '
      "'layers', or pass Rules(..., specs=...) with batch_axes)"
    )
  if not isinstance(feature_group_count, int) or feature_group_count < 1:
    raise ValueError(f'{name}: feature_group_count={feature_group_count!r} must be an int ≥ 1')


def split_groups(name: str, cols: int, groups: int) -> int:
  """Columns per group; `cols` (the out size) must be divisible by `groups`."""
  if cols % groups:
    raise ValueError(
      f'{name}: feature_group_count={groups} does not divide the {cols} output '
      'features of the kernel'
    )
  return cols // groups


def grouped_matrix(matrix_init: Callable, key, rows: int, cols: int, groups: int, dtype, name: str):
  """A (rows, cols) matrix whose column block j (of `groups`) is `matrix_init(key_j, (rows,
  cols/groups))`; with one group it is `matrix_init(key, (rows, cols))` (same key)."""
  if groups == 1:
    return matrix_init(key, (rows, cols), dtype)
  per = split_groups(name, cols, groups)
  blocks = jax.vmap(lambda k: matrix_init(k, (rows, per), dtype))(jax.random.split(key, groups))
  return jnp.transpose(blocks, (1, 0, 2)).reshape(rows, cols)


@register_initializer(
  'orthogonal',
  description='W = scale·Q, Q (semi-)orthogonal (QR of a '
  'Gaussian); convs as (kh·kw·in, out), per group',
)
def orthogonal(
  scale: float = 1.0,
  feature_group_count: int = 1,
  in_axis: Axes = -2,
  out_axis: Axes = -1,
  batch_axis: Axes = (),
):
  """W = scale·Q, Q the sign-fixed QR factor of a Gaussian (Saxe et al. 2014, arXiv 1312.6120).

  The tensor is viewed as a (rows, cols) matrix with rows = receptive·in axes and cols = out
  axes (a conv kernel as (kh·kw·in, out)); non-square views are semi-orthogonal. A 2-D (in,
  out) kernel equals `jax.nn.initializers.orthogonal(scale)(key, (in, out))`. With
  `feature_group_count=g` each of the g column blocks is drawn on its own (module docstring).
  """
  check_layer_axes('orthogonal', batch_axis, feature_group_count)
  matrix = jax.nn.initializers.orthogonal(scale)

  def init(key, shape, dtype=jnp.float32):
    ndim = len(shape)
    ins, outs = normalize_axes(in_axis, ndim), normalize_axes(out_axis, ndim)
    receptive = tuple(a for a in range(ndim) if a not in ins + outs)
    order = receptive + ins + outs
    rows = math.prod(shape[a] for a in receptive + ins)
    cols = math.prod(shape[a] for a in outs)
    mat = grouped_matrix(matrix, key, rows, cols, feature_group_count, dtype, 'orthogonal')
    return jnp.transpose(mat.reshape(tuple(shape[a] for a in order)), np.argsort(order))

  init.whole_slice = True  # QR: Rules computes each stacked slice on one device only
  return init


@register_initializer(
  'delta_orthogonal',
  description='conv kernel zero but its centre tap, '
  'scale·(orthogonal in×out) per group (Xiao et al. 2018)',
)
def delta_orthogonal(
  scale: float = 1.0,
  feature_group_count: int = 1,
  in_axis: Axes = -2,
  out_axis: Axes = -1,
  batch_axis: Axes = (),
):
  """Conv kernel (*spatial, in, out) that is zero except its centre tap, scale·H with H an
  (in, out) orthogonal matrix (Xiao et al. 2018, arXiv 1806.05393).

  Needs in ≤ out per group (in ≤ out/g): H has orthonormal rows, so the conv is an
  isometry. With `feature_group_count=g` the centre tap is g such blocks side by side.
  """
  check_layer_axes('delta_orthogonal', batch_axis, feature_group_count)
  matrix = jax.nn.initializers.orthogonal(scale)

  def init(key, shape, dtype=jnp.float32):
    ndim = len(shape)
    if ndim not in (3, 4, 5):
      raise ValueError(f'delta_orthogonal needs a 1/2/3-D conv kernel, got shape {tuple(shape)}')
    if normalize_axes(in_axis, ndim) != (ndim - 2,) or normalize_axes(out_axis, ndim) != (
      ndim - 1,
    ):
      raise ValueError(
        f'delta_orthogonal needs a (spatial…, in, out) conv layout, got shape {tuple(shape)}'
      )
    cin, cout = shape[-2], shape[-1]
    per = split_groups('delta_orthogonal', cout, feature_group_count)
    if cin > per:
      raise ValueError(
        f'delta_orthogonal needs in_channels ≤ out_channels per group, got '
        f'{cin} > {per} (feature_group_count={feature_group_count})'
      )
    centre = tuple(d // 2 for d in shape[:-2])
    tap = grouped_matrix(matrix, key, cin, cout, feature_group_count, dtype, 'delta_orthogonal')
    return jnp.zeros(shape, dtype).at[centre].set(tap)

  init.whole_slice = True  # QR (see orthogonal)
  return init
