"""Fixup (Zhang, Dauphin & Ma 2019, arXiv 1901.09321, Section 3, the Fixup rule):

  1. the classification layer and the last layer of each residual branch are 0;
  2. every other layer gets a standard init (He et al.), and the weight layers *inside the
     residual branches* are scaled by L^{-1/(2m-2)} (L branches of m layers each).

Layers outside the branches (a ResNet's stem, a ViT's patch embedding, shortcut projections)
keep plain He init. The scalar multipliers and biases of full Fixup are architectural, not
part of this scheme. The model says where its branches are (`init_hints()`):
'residual_branch' (regex of every kernel inside a branch), 'residual_final', 'classifier',
'num_branches' = L, 'branch_layers' = m.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from initlab.init.registry import get_initializer, register_initializer, register_scheme
from initlab.init.rules import Rules
from initlab.init.schemes import InitContext, Scheme

Axes = int | Sequence[int]


def scaled(init: Callable, factor: float):
  """`init` multiplied by a constant `factor`."""

  def wrapped(key, shape, dtype=jnp.float32):
    return (factor * init(key, shape, dtype)).astype(dtype)

  return wrapped


def fixup_factor(num_branches: int, branch_layers: int) -> float:
  """Fixup depth scale L^{-1/(2m-2)} for L residual branches of m layers (arXiv 1901.09321)."""
  if branch_layers < 2:
    raise ValueError(f'fixup needs branch_layers ≥ 2 (got {branch_layers})')
  if num_branches < 1:
    raise ValueError(f'fixup needs num_branches ≥ 1 (got {num_branches}): a residual model')
  return num_branches ** (-1.0 / (2 * branch_layers - 2))


@register_initializer(
  'fixup_scaled',
  description='He normal (untruncated) × L^{-1/(2m-2)}: a layer inside a Fixup residual branch',
)
def fixup_scaled(
  num_branches: int,
  branch_layers: int,
  gain: float = math.sqrt(2.0),
  in_axis: Axes = -2,
  out_axis: Axes = -1,
  batch_axis: Axes = (),
):
  """He init (gain²/fan_in, untruncated normal) times the Fixup depth factor."""
  base = jax.nn.initializers.variance_scaling(
    gain**2, 'fan_in', 'normal', in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis
  )
  return scaled(base, fixup_factor(num_branches, branch_layers))


@register_scheme(
  'fixup',
  description='Fixup: classifier and last branch layers 0, branch '
  'layers He × L^{-1/(2m-2)}, others He (residual models)',
)
def fixup(gain: float = 2.0**0.5) -> Scheme:
  """Fixup (arXiv 1901.09321): classifier and the last layer of every residual branch 0,
  the other kernels inside branches He × L^{-1/(2m-2)}, all other kernels plain He.

  He here is `variance_scaling(gain², 'fan_in', 'normal')` (untruncated). Reads hints
  'classifier', 'residual_final', 'residual_branch', 'num_branches', 'branch_layers'.
  """

  def scheme(key, params, ctx=None):
    ctx = ctx or InitContext()
    hint = lambda name: ctx.hint(name, 'fixup')
    classifier, final, branch = hint('classifier'), hint('residual_final'), hint('residual_branch')
    if branch is None or final is None:
      raise ValueError(
        "init scheme 'fixup' needs a residual model: this model's hints "
        f'residual_branch={branch!r}, residual_final={final!r}'
      )
    rules = Rules(
      [
        (classifier, jax.nn.initializers.zeros),
        (final, jax.nn.initializers.zeros),
        (branch, fixup_scaled(hint('num_branches'), hint('branch_layers'), gain)),
        ('.*', get_initializer('variance_scaling', gain**2, 'fan_in', 'normal')),
      ],
      roles=('kernel',),
    )
    return rules(key, params, ctx)

  return scheme
