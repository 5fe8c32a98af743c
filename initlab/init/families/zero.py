"""ZerO (Zhao, Schäfer & Anandkumar 2022, arXiv 2110.12661): deterministic init from zeros,
ones and a normalized Hadamard transform. Public name `zero_hadamard` (config name
"zero_hadamard"; the old name "zero" still resolves, with a FutureWarning), chosen so that
it cannot be mistaken for `zeros`.

Algorithm 1 of the paper, for a layer W ∈ R^{P×Q} (P = out, Q = in; Flax stores K = Wᵀ):
  P = Q: W = I;   P < Q: W = I* (partial identity);
  P > Q: W = c·I*·H_m·I*, m = ⌈log₂ P⌉, H_m the 2^m×2^m Sylvester–Hadamard matrix.
We take c = 2^{-m/2}, which makes c·H_m orthogonal (H_m H_mᵀ = 2^m I), so an expanding
layer maps its input isometrically when P = 2^m (all singular values 1) and contracts
otherwise (singular values ≤ 1, W is a block of an orthogonal matrix). This is the
normalization of the authors' implementation (github.com/jiaweizzhao/ZerO-initialization,
`Hadamard_Transform`, H/2^{m/2}). Algorithm 1 as printed states c = 2^{-(m-1)/2}; with a 2^m×2^m
H_m that gives singular values √2 per expanding layer (2^{k/2} after k of them), which
contradicts the isometry the construction is for, so we do not use it.

Conv kernels get the matrix on the centre tap, zeros elsewhere (the paper's convolutional
extension). Grouped/depthwise convs (`feature_group_count=g`, see
`initlab.init.families.orthogonal`): each group's (in/g, out/g) block is its own ZerO
matrix, so a depthwise conv's centre tap is 1 per channel (the identity).

The `zero_full` scheme adds the paper's residual rule: the last layer of every residual
branch is 0 (the paper's rule for ResNets).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initlab.init.families.orthogonal import check_layer_axes, split_groups
from initlab.init.registry import get_initializer, register_initializer, register_scheme, rename
from initlab.init.rules import Rules
from initlab.init.schemes import InitContext, Scheme
from initlab.init.specs import normalize_axes

Axes = int | Sequence[int]


def _hadamard(m: int) -> np.ndarray:
  """Sylvester Hadamard matrix H_m of size 2^m with entries ±1."""
  h = np.ones((1, 1))
  for _ in range(m):
    h = np.block([[h, h], [h, -h]])
  return h


def zero_matrix(fan_in: int, fan_out: int) -> np.ndarray:
  """ZerO's matrix (arXiv 2110.12661, Algorithm 1) in Flax layout (in, out), float64.

  With W = Kᵀ of shape (out, in): W = I* (partial identity) when out ≤ in; else
  W = 2^{-m/2}·I*·H_m·I* with m = ⌈log₂ out⌉ (module docstring for the scale).
  """
  if fan_out <= fan_in:
    return np.eye(fan_in, fan_out)
  m = math.ceil(math.log2(fan_out))
  return (2.0 ** (-m / 2) * _hadamard(m)[:fan_out, :fan_in]).T


@register_initializer(
  'zero_hadamard',
  description='ZerO (Zhao et al. 2022): deterministic '
  'identity / normalized-Hadamard, centre tap for convs, per group',
)
def zero_hadamard(
  feature_group_count: int = 1, in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()
):
  """ZerO init: deterministic (the key is unused), only zeros and ±2^{-m/2} entries.

  The in axes × out axes view is `zero_matrix(in, out)` (per group); conv kernels put it
  on the centre tap of their receptive (spatial) axes, zeros elsewhere. Zeroing the last layer of each residual branch
  is the `zero_full` scheme's rule, not part of this per-tensor init.
  """
  check_layer_axes('zero_hadamard', batch_axis, feature_group_count)

  def init(key, shape, dtype=jnp.float32):
    del key
    ndim = len(shape)
    ins, outs = normalize_axes(in_axis, ndim), normalize_axes(out_axis, ndim)
    n_in, n_out = math.prod(shape[a] for a in ins), math.prod(shape[a] for a in outs)
    per = split_groups('zero_hadamard', n_out, feature_group_count)
    mat = np.tile(zero_matrix(n_in, per), (1, feature_group_count))
    receptive = tuple(a for a in range(ndim) if a not in ins + outs)
    full = np.zeros(tuple(shape[a] for a in receptive) + mat.shape)
    full[tuple(shape[a] // 2 for a in receptive)] = mat
    order = receptive + ins + outs
    full = full.reshape(tuple(shape[a] for a in order))
    return jnp.asarray(np.transpose(full, np.argsort(order)), dtype)

  return init


rename('zero', 'zero_hadamard')


@register_scheme(
  'zero_full',
  description='ZerO kernels + last layer of every residual branch 0 (hint residual_final)',
)
def zero_full() -> Scheme:
  """ZerO with its residual rule (arXiv 2110.12661): `zero_hadamard` kernels, and the last
  layer of every residual branch set to 0. Reads hint 'residual_final'."""

  def scheme(key, params, ctx=None):
    ctx = ctx or InitContext()
    rules = Rules(
      [
        (ctx.hint('residual_final', 'zero_full'), jax.nn.initializers.zeros),
        ('.*', get_initializer('zero_hadamard')),
      ],
      roles=('kernel',),
    )
    return rules(key, params, ctx)

  return scheme
