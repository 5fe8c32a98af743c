"""Pruning at init and PreCropping: schemes 'pai_mask' (an unstructured mask from a PAI score,
kept through training) and 'precrop' (a dense, narrower model with the mask's layer densities).

The scores and masks are `initlab.init.pruning` (SNIP arXiv 1810.02340, GraSP arXiv
2002.07376, SynFlow arXiv 2006.05467); the channel rule is `initlab.init.precrop` (PreCropping,
arXiv 2203.02549, with initlab's own rule: the paper's is unverified).
"""

from __future__ import annotations

import logging

import jax

from initlab.errors import ConfigError
from initlab.init import precrop as precrop_lib
from initlab.init import pruning
from initlab.init import tree as tree_lib
from initlab.init.registry import get_scheme, register_scheme
from initlab.init.schemes import SchemeResult, chain, with_stage

KERNELS = r'.*kernel'  # The params a PAI mask may cover (conv and dense kernels).


def _check(name: str, score: str, density, base: str, rounds: int) -> None:
  if score not in pruning.METHODS:
    raise ConfigError(
      f'config.init.{name}.score: {score!r}; valid choices: {", ".join(pruning.METHODS)}'
    )
  if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
    raise ConfigError(f'config.init.{name}.density: {density!r}; expected a number in (0, 1]')
  if not isinstance(rounds, int) or rounds < 1:
    raise ConfigError(f'config.init.{name}.rounds: {rounds!r}; expected an int >= 1')
  try:
    get_scheme(base)
  except (KeyError, ValueError) as e:
    raise ConfigError(f'config.init.{name}.base: {e}') from None


def _masks(name, score, density, rounds, key, params, ctx):
  """PAI masks of `params`' kernels ({path: bool array} tree, kernels only) on ctx.data's
  first batch (SynFlow: iterative over `rounds`, data-free)."""
  data = ctx.require('data', name)
  batch = data.batches[0]
  inputs = data.inputs(batch)
  apply_fn = lambda p, x: data.apply(p, x)
  if not any(jax.tree.leaves(pruning.prunable(params))):
    raise ConfigError(f'config.init.name={name!r}: this model has no conv or dense kernel to prune')
  if score == 'synflow':
    masks = pruning.synflow_masks(apply_fn, params, inputs, density, rounds=rounds)
  else:
    scores = pruning.scores(score, apply_fn, params, inputs, batch.get('label'), key=key)
    masks = pruning.masks(scores, density, method=score)
  return masks


def _kernels_only(masks) -> dict:
  out = {}
  for path, value in ((l.path, l.value) for l in tree_lib.leaves(masks) if l.value is not None):
    node = out
    *parents, last = path.split('/')
    for p in parents:
      node = node.setdefault(int(p) if p.isdigit() else p, {})
    node[last] = value
  return out


@register_scheme(
  'pai_mask',
  description='pruning at init (SNIP / GraSP / SynFlow / magnitude / random): a global top-k '
  'mask of the kernels at `density`, kept at 0 through training',
)
def pai_mask(
  score: str = 'snip',
  density: float = 0.1,
  base: str = 'he_normal',
  rounds: int = 100,
  shuffle: bool = False,
):
  """`base` init, then (data stage, one training batch) the mask of `score` at `density`:
  the run keeps the masked kernel entries at exactly 0 (the step masks gradients and params).

  Options: score (`initlab.init.pruning.METHODS`), density in (0, 1], base (a registered
  scheme for the dense init), rounds (SynFlow's iterations), shuffle (permute each layer's
  mask: same layer densities p_l, random positions: the granularity ablation of arXiv
  2203.02549)."""
  _check('pai_mask', score, density, base, rounds)

  def scheme(key, params, ctx=None):
    masks = _masks('pai_mask', score, density, rounds, key, params, ctx)
    if shuffle:
      masks = pruning.shuffle_masks(masks, jax.random.fold_in(key, 1))
    kept = _kernels_only(masks)
    masked = tree_lib.map_leaves(
      lambda l: l.value * _lookup(kept, l.path) if _lookup(kept, l.path) is not None else l.value,
      params,
    )
    return SchemeResult(masked, masks=kept)

  return chain(get_scheme(base), with_stage(scheme, 'data', masks=KERNELS, num_batches=1))


def _lookup(tree, path):
  node = tree
  for p in path.split('/'):
    if not isinstance(node, dict):
      return None
    node = node.get(int(p) if p.isdigit() else p)
    if node is None:
      return None
  return node


@register_scheme(
  'precrop',
  description='PreCropping (arXiv 2203.02549; initlab channel rule): a dense narrower model '
  'whose layers keep the densities of a PAI mask, freshly initialized',
)
def precrop(
  score: str = 'synflow',
  density: float = 0.1,
  base: str = 'he_normal',
  rounds: int = 100,
  reconfigure: bool = False,
  multiple: int = 1,
):
  """Architecture from data: on the dense probe model (`base` init, one training batch), the
  mask of `score` at `density` gives layer densities p_l; `initlab.init.precrop` solves the
  channel ratios and widths (kernel params within 1% of the mask's), and the run builds that
  model (recorded in config.json, reused on resume) with a fresh `base` init.

  Options: score, density, base, rounds as 'pai_mask'; reconfigure (ratios up to 4: layers
  may widen), multiple (round channels to a multiple, e.g. 8). Supported models:
  `initlab.init.precrop.LAYOUTS`."""
  _check('precrop', score, density, base, rounds)
  if not isinstance(multiple, int) or multiple < 1:
    raise ConfigError(f'config.init.precrop.multiple: {multiple!r}; expected an int >= 1')
  base_scheme = get_scheme(base)

  def probe(key, params, ctx):
    try:
      lay = precrop_lib.layout(ctx.model_config)
    except ValueError as e:
      raise ConfigError(f'config.init.name=precrop: {e}') from None
    params = base_scheme(key, params, ctx)
    masks = _masks('precrop', score, density, rounds, jax.random.fold_in(key, 1), params, ctx)
    densities = {p: float(v) for p, v in pruning.layer_densities(masks).items()}
    ratios = precrop_lib.solve(lay, densities, reconfigure=bool(reconfigure))
    try:
      widths = precrop_lib.crop(
        lay,
        ratios,
        precrop_lib.budget(lay, densities),
        multiple=multiple,
        reconfigure=bool(reconfigure),
      )
    except ValueError as e:
      raise ConfigError(f'config.init.precrop.density={density}: {e}') from None
    logging.info(
      'precrop: layer densities %s -> ratios %s -> widths %s: %d kernel params (dense %d, '
      'budget %.0f)',
      densities,
      ratios,
      widths,
      lay.kernel_params(widths),
      lay.kernel_params(),
      precrop_lib.budget(lay, densities),
    )
    return lay.apply(widths)

  return with_stage(
    lambda key, params, ctx=None: base_scheme(key, params, ctx), 'param', probe=probe
  )
