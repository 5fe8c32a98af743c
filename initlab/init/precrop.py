"""PreCropping: a dense, narrower network whose layers keep the parameter fractions that a
pruning-at-init method picks (Cai, Hua, Chen, Suh, De Sa, Zhang, arXiv 2203.02549).

The paper's finding: accuracy at init depends mainly on the layer-wise densities p_l, not on
the granularity of pruning, so channels can be cropped to follow p_l and the network stays
dense. Its exact channel rule is NOT public (no code; the ICLR'23 "PreCrop" version solves a
convex allocation with an expected-SynFlow proxy). This module implements initlab's rule:

* Channel groups share one ratio r_g: a layer's outputs, the next layer's inputs and the
  norm between; every conv adding to one residual stream (one group per ResNet stage); the
  network's input and its logits are fixed (r = 1). A layer l with kernel size k_l and base
  widths C_in, C_out keeps P'_l = k_l · ⌈r_in C_in⌉ · ⌈r_out C_out⌉ params, so matching the
  density asks r_in(l) · r_out(l) ≈ p_l.
* Solve, with u_g = log r_g over the free groups (`solve`):

      min_u  Σ_l (u_in(l) + u_out(l) − log p_l)²   s.t.  u_g ≤ 0  (dropped with reconfigure)

  plus the layout's order constraints (the ResNet's option-A shortcut needs non-decreasing
  stream widths). On a chain whose p_l are consistent the residual is 0 and p_l is exact.
* Widths (`crop`): r_g C_g rounded (≥ 1, optionally to a multiple), then a common shift of
  every free u_g (bisection) and single-group steps bring the kernel params to the PAI budget
  Σ_l p_l P_l within `tolerance` (1%).

A `Layout` describes a model's channel groups; `layout(model_config)` knows the zoo's 'mlp'
(a chain of dense layers), 'vgg' (a chain of 3x3 convs) and 'resnet' (stem, 3 stage
streams, one inner group per block).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections
import numpy as np
import scipy.optimize

INPUT, LOGITS = 'input', 'logits'  # The fixed groups.
MIN_DENSITY = 1e-6  # A fully pruned layer counts as this density (its log is finite).


@dataclasses.dataclass(frozen=True)
class Layer:
  """One prunable kernel: its param path, the groups of its input and output channels and
  its kernel size k (kh·kw for a conv, 1 for a dense layer)."""

  path: str
  group_in: str
  group_out: str
  k: int


@dataclasses.dataclass(frozen=True)
class Layout:
  """A model's channel groups.

  Attributes:
    layers: the prunable kernels, in forward order.
    widths: {group: its width in the dense model}; INPUT and LOGITS included.
    order: pairs (a, b) whose widths must satisfy width(a) <= width(b).
    apply: `{group: width} -> model config` of the cropped model.
  """

  layers: tuple[Layer, ...]
  widths: Mapping[str, int]
  order: tuple[tuple[str, str], ...]
  apply: Callable[[Mapping[str, int]], ml_collections.ConfigDict]

  @property
  def free(self) -> tuple[str, ...]:
    """The groups whose width PreCropping chooses, in first-use order."""
    seen = dict.fromkeys(g for l in self.layers for g in (l.group_in, l.group_out))
    return tuple(g for g in seen if g not in (INPUT, LOGITS))

  def kernel_params(self, widths: Mapping[str, int] | None = None) -> int:
    """Σ_l k_l · width(in) · width(out) of the kernels (the dense model's without `widths`)."""
    w = {**self.widths, **(widths or {})}
    return sum(l.k * w[l.group_in] * w[l.group_out] for l in self.layers)


def _mlp(cfg) -> Layout:
  hidden = tuple(cfg.get('widths') or ()) or (cfg.width,) * cfg.depth
  groups = [f'hidden{i}' for i in range(len(hidden))]
  chain = [INPUT, *groups, LOGITS]
  paths = [f'hidden/{i}/kernel' for i in range(len(hidden))] + ['head/kernel']
  layers = tuple(Layer(p, a, b, 1) for p, a, b in zip(paths, chain[:-1], chain[1:]))
  widths = {INPUT: int(np.prod(cfg.input_shape)), LOGITS: cfg.num_classes}
  widths.update(zip(groups, map(int, hidden)))

  def apply(w):
    out = ml_collections.ConfigDict(cfg.to_dict())
    out.widths = tuple(int(w[g]) for g in groups)
    return out

  return Layout(layers, widths, (), apply)


def _vgg(cfg) -> Layout:
  widths = tuple(int(w) for w in cfg.widths)
  groups = [f'conv{i}' for i in range(len(widths))]
  chain = [INPUT, *groups, LOGITS]
  paths = [f'convs/{i}/conv/kernel' for i in range(len(widths))] + ['head/kernel']
  ks = [9] * len(widths) + [1]
  layers = tuple(Layer(p, a, b, k) for p, a, b, k in zip(paths, chain[:-1], chain[1:], ks))
  sizes = {INPUT: int(cfg.input_shape[-1]), LOGITS: cfg.num_classes, **dict(zip(groups, widths))}

  def apply(w):
    out = ml_collections.ConfigDict(cfg.to_dict())
    out.widths = tuple(int(w[g]) for g in groups)
    return out

  return Layout(layers, sizes, (), apply)


def _resnet(cfg) -> Layout:
  # The zoo ResNet's options (initlab.models.resnet; init/ does not import models/): n blocks
  # per stage, stream widths `stage_widths` or round(16w, 32w, 64w), inner widths
  # `block_widths` (3n, stage by stage) or the stage's stream width.
  n = (cfg.depth - 2) // 6
  streams = tuple(cfg.get('stage_widths') or ()) or tuple(
    round(c * cfg.width) for c in (16, 32, 64)
  )
  flat = tuple(cfg.get('block_widths') or ()) or tuple(c for c in streams for _ in range(n))
  inner = tuple(flat[s * n : (s + 1) * n] for s in range(3))
  widths = {INPUT: int(cfg.input_shape[-1]), LOGITS: cfg.num_classes}
  layers = [Layer('stem/conv/kernel', INPUT, 'stream1', 9)]
  blocks = []
  for s, stage_inner in enumerate(inner, start=1):
    widths[f'stream{s}'] = int(streams[s - 1])
    for b, width in enumerate(stage_inner):
      g = f'stage{s}_block{b}'
      widths[g] = int(width)
      blocks.append(g)
      enter = f'stream{s - 1}' if b == 0 and s > 1 else f'stream{s}'
      prefix = f'stage{s}/blocks/{b}'
      layers.append(Layer(f'{prefix}/conv1/kernel', enter, g, 9))
      layers.append(Layer(f'{prefix}/conv2/kernel', g, f'stream{s}', 9))
  layers.append(Layer('head/kernel', 'stream3', LOGITS, 1))

  def apply(w):
    out = ml_collections.ConfigDict(cfg.to_dict())
    out.stage_widths = tuple(int(w[f'stream{s}']) for s in (1, 2, 3))
    out.block_widths = tuple(int(w[g]) for g in blocks)
    return out

  return Layout(tuple(layers), widths, (('stream1', 'stream2'), ('stream2', 'stream3')), apply)


LAYOUTS: dict[str, Callable[[Any], Layout]] = {'mlp': _mlp, 'resnet': _resnet, 'vgg': _vgg}


def layout(model_config) -> Layout:
  """The channel groups of a zoo model config (its defaults filled in). ValueError naming the
  model and the supported ones otherwise."""
  name = model_config.get('name')
  if name not in LAYOUTS:
    raise ValueError(
      f'precrop: model {name!r} has no channel layout; supported: {", ".join(sorted(LAYOUTS))}'
    )
  return LAYOUTS[name](model_config)


def solve(lay: Layout, densities: Mapping[str, float], *, reconfigure: bool = False) -> dict:
  """{free group: ratio r_g} minimizing Σ_l (log r_in + log r_out − log p_l)² (module
  docstring); r_g <= 1 unless `reconfigure` (then r_g <= 4). `densities`: {kernel path: p_l}
  for every layer of `lay` (KeyError naming a missing one)."""
  free = lay.free
  index = {g: i for i, g in enumerate(free)}
  rows, target = np.zeros((len(lay.layers), len(free))), np.zeros(len(lay.layers))
  for i, l in enumerate(lay.layers):
    if l.path not in densities:
      raise KeyError(f'precrop: no density for layer {l.path!r}; have {sorted(densities)}')
    target[i] = math.log(max(float(densities[l.path]), MIN_DENSITY))
    for g in (l.group_in, l.group_out):
      if g in index:
        rows[i, index[g]] += 1.0
  upper = math.log(4.0) if reconfigure else 0.0
  lower = math.log(1.0 / max(lay.widths[g] for g in free)) - 1.0  # Below 1 channel anyway.
  constraints = [
    {
      'type': 'ineq',  # log(r_b C_b) - log(r_a C_a) >= 0.
      'fun': lambda u, a=index[a], b=index[b], c=math.log(lay.widths[b] / lay.widths[a]): (
        u[b] - u[a] + c
      ),
    }
    for a, b in lay.order
  ]
  start = np.full(len(free), min(upper, max(lower, float(np.mean(target)) / 2)))
  res = scipy.optimize.minimize(
    lambda u: float(np.sum((rows @ u - target) ** 2)),
    start,
    jac=lambda u: 2 * rows.T @ (rows @ u - target),
    bounds=[(lower, upper)] * len(free),
    constraints=constraints,
    method='SLSQP',
    options={'ftol': 1e-12, 'maxiter': 500},
  )
  return {g: float(math.exp(res.x[index[g]])) for g in free}


def _round(x: float, multiple: int) -> int:
  return max(multiple, int(round(x / multiple)) * multiple) if multiple > 1 else max(1, round(x))


def crop(
  lay: Layout,
  ratios: Mapping[str, float],
  budget: float,
  *,
  multiple: int = 1,
  reconfigure: bool = False,
  tolerance: float = 0.01,
) -> dict[str, int]:
  """{free group: width} following `ratios` whose kernel params are within `tolerance` of
  `budget` (module docstring). ValueError when no widths can meet it: the budget is below
  the 1-channel model's or above the widest allowed model's."""
  cap = 4.0 if reconfigure else 1.0
  log_r = {g: math.log(r) for g, r in ratios.items()}

  def widths_at(shift):
    w = {}
    for g in lay.free:
      r = min(cap, math.exp(log_r[g] + shift))
      w[g] = min(_round(r * lay.widths[g], multiple), _round(cap * lay.widths[g], multiple))
    for a, b in lay.order:  # Rounding may break an order constraint by a channel.
      w[b] = max(w[b], w[a])
    return w

  count = lambda w: lay.kernel_params(w)
  lo, hi = -30.0, 30.0
  if not count(widths_at(lo)) <= budget <= count(widths_at(hi)):
    raise ValueError(
      f'precrop: a kernel budget of {budget:.0f} params cannot be met: the narrowest model '
      f'(1 channel per group) has {count(widths_at(lo))}, the widest allowed '
      f'{count(widths_at(hi))}'
    )
  for _ in range(100):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if count(widths_at(mid)) < budget else (lo, mid)
  best = min((widths_at(lo), widths_at(hi)), key=lambda w: abs(count(w) - budget))
  step = max(1, multiple)
  while abs(count(best) - budget) > tolerance * budget:
    moves = []
    for g in lay.free:
      for d in (-step, step):
        w = dict(best, **{g: best[g] + d})
        if 1 <= w[g] <= _round(cap * lay.widths[g], multiple) and all(
          w[a] <= w[b] for a, b in lay.order
        ):
          moves.append(w)
    better = min(moves, key=lambda w: abs(count(w) - budget), default=None)
    if better is None or abs(count(better) - budget) >= abs(count(best) - budget):
      break
    best = better
  return best


def budget(lay: Layout, densities: Mapping[str, float]) -> float:
  """The PAI budget Σ_l p_l · P_l: the kernel params the masks keep."""
  return sum(
    float(densities[l.path]) * l.k * lay.widths[l.group_in] * lay.widths[l.group_out]
    for l in lay.layers
  )
