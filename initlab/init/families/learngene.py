"""The learngene schemes 'tleg_expand' and 'sws_expand': a descendant's params from the
learngene in `ctx.pretrained` (`config.init.pretrained`).

The math (TLEG, arXiv 2312.05614; SWS, arXiv 2404.16897) and the param layouts are in
`initlab.init.learngene`; this module checks the trees against each other and writes them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from initlab.errors import ConfigError
from initlab.init import tree as tree_lib
from initlab.init.learngene import (
  BLOCKS,
  COEFFS,
  DEFAULT_COPY,
  HEAD,
  SWS_GENE,
  SWS_STAGES,
  TLEG_GENES,
  check_map,
  sws_expand,
  sws_layer_map,
  tleg_expand,
)
from initlab.init.registry import register_scheme
from initlab.init.schemes import InitContext, Scheme


def _fail(scheme: str, message: str):
  raise ConfigError(f'config.init.pretrained: {scheme}: {message}')


def _top(values: dict[str, Any]) -> str:
  top = sorted({p.split('/')[0] for p in values})
  return ', '.join(top) or 'no params'


def _subtree(values: dict[str, Any], prefix: str) -> dict[str, Any]:
  """{path below `prefix`/: value} of the leaves under `prefix`."""
  start = prefix + '/'
  return {p[len(start) :]: v for p, v in values.items() if p.startswith(start)}


def _learngene(ctx, scheme: str, genes: tuple[str, ...], layout: str) -> dict[str, Any]:
  """{path: value} of the learngene in `ctx.pretrained`; ConfigError if it lacks `genes`."""
  ctx = ctx if ctx is not None else InitContext()
  values = {l.path: l.value for l in tree_lib.leaves(ctx.require('pretrained', scheme))}
  missing = [g for g in genes if not _subtree(values, g)]
  if missing:
    _fail(
      scheme,
      f'expected a {layout} learngene (params {" and ".join(g + "/<block param>" for g in genes)})'
      f', but it has no {missing[0]}/...; its top-level params: {_top(values)}',
    )
  return values


def _descendant(params, scheme: str) -> tuple[str, int]:
  """('stacked' | 'list', depth) of the descendant's `blocks`; ConfigError if it has none."""
  blocks = [l for l in tree_lib.leaves(params) if l.path.startswith(BLOCKS + '/')]
  if not blocks:
    raise ConfigError(
      f'config.init: {scheme} expands into a model with {BLOCKS}/<param> (stacked) or '
      f'{BLOCKS}/<i>/<param> params, but this one has none (top-level: '
      f'{_top({l.path: 0 for l in tree_lib.leaves(params)})})'
    )
  indices = {l.path.split('/')[1] for l in blocks}
  if all(i.isdigit() for i in indices):
    depth = len(indices)
    if sorted(map(int, indices)) != list(range(depth)):
      raise ConfigError(
        f"config.init: {scheme}: the model's {BLOCKS}/<i> are {sorted(map(int, indices))}, "
        f'not 0 .. {depth - 1}'
      )
    return 'list', depth
  if any(i.isdigit() for i in indices):
    raise ConfigError(
      f'config.init: {scheme}: the model mixes stacked {BLOCKS}/<param> and per-layer '
      f'{BLOCKS}/<i>/<param> params'
    )
  depths = {l.shape[0] if l.shape else 0 for l in blocks}
  if len(depths) != 1 or 0 in depths:
    raise ConfigError(
      f"config.init: {scheme}: the model's stacked {BLOCKS}/<param> have leading (layer) "
      f'axes {sorted(depths)}; expected one depth'
    )
  return 'stacked', depths.pop()


def _write(
  params,
  layout: str,
  values: dict[str, Any],
  stacks: dict[str, Any],
  origin: dict[str, str],
  *,
  scheme: str,
  copy: str,
  copy_head: bool,
):
  """`params` (blocks in `layout`) with its blocks from `stacks` ({block param: (depth,
  ...)}) and the params matching `copy` (and the head, with `copy_head`) from the
  learngene's `values`.

  `origin[block param]` names the learngene param a stack came from, for errors. Every
  written value is cast to the descendant's dtype; other params are returned unchanged.
  """
  pattern = re.compile(copy)
  blocks = {l.path for l in tree_lib.leaves(params) if l.path.startswith(BLOCKS + '/')}
  wanted = {p.split('/', 2)[2] if layout == 'list' else p.split('/', 1)[1] for p in blocks}
  for name in sorted(set(stacks) - wanted):
    _fail(scheme, f'the learngene has {origin[name]!r}, which this model has no {BLOCKS} param for')

  def write(leaf):
    if leaf.path in blocks:
      if layout == 'list':
        _, i, name = leaf.path.split('/', 2)
      else:
        i, name = None, leaf.path.split('/', 1)[1]
      if name not in stacks:
        _fail(scheme, f'param {leaf.path!r} of this model has no {name!r} in the learngene')
      stack = stacks[name]
      have = tuple(stack.shape) if i is None else tuple(stack.shape[1:])
      if have != leaf.shape:
        src = tuple(values[origin[name]].shape)
        _fail(
          scheme,
          f'param {leaf.path!r} has shape {leaf.shape} in this model but the learngene '
          f'gives {have} (from {origin[name]!r} of shape {src})',
        )
      value = stack if i is None else stack[int(i)]
      return value.astype(leaf.value.dtype)
    is_head = leaf.path.split('/')[0] == HEAD
    if not (copy_head if is_head else pattern.fullmatch(leaf.path)):
      return leaf.value
    if leaf.path not in values:
      _fail(
        scheme,
        f'param {leaf.path!r} is to be copied but the learngene has no such param '
        f'(its top-level params: {_top(values)})',
      )
    have = tuple(values[leaf.path].shape)
    if have != leaf.shape:
      _fail(
        scheme,
        f'param {leaf.path!r} has shape {have} in the learngene but {leaf.shape} in this model',
      )
    return jnp.asarray(values[leaf.path]).astype(leaf.value.dtype)

  return tree_lib.map_leaves(write, params)


def _check_copy(scheme: str, copy: str, copy_head) -> str:
  try:
    re.compile(copy)
  except (re.error, TypeError) as e:
    raise ConfigError(f'config.init.{scheme}.copy: {copy!r} is not a regex ({e})') from None
  if not isinstance(copy_head, (bool, np.bool_)):
    raise ConfigError(f'config.init.{scheme}.copy_head: {copy_head!r}; expected True or False')
  return copy


@register_scheme(
  'tleg_expand',
  description='TLEG (arXiv 2312.05614): descendant blocks θ_A + c_l·θ_B from a learngene '
  '(init.pretrained: gene_a, gene_b); embeddings and final norm copied',
)
def tleg_expand_scheme(
  coeff: str = 'code', copy: str = DEFAULT_COPY, copy_head: bool = False
) -> Scheme:
  """TLEG (arXiv 2312.05614): a descendant of any depth from a TLEG learngene.

  Reads the learngene from `ctx.pretrained` (`gene_a/<block param>`, `gene_b/<block param>`
  and the non-block params) and writes the descendant's `params` (its fresh init, whose
  shapes give the depth L' and layout): every block param of layer l becomes
  gene_a + c_l · gene_b, c = `tleg_coefficients(L', coeff)`, written stacked (`blocks/<p>`,
  (L', ...)) or per layer (`blocks/<l>/<p>`) as the descendant holds its blocks.

  Options:
    coeff: 'code' (c_l = l/L', the authors' code) or 'endpoint' (c_l = l/(L'-1)).
    copy: regex (full match) of the non-block params copied from the learngene (default:
      token_embed, pos_embed, patch_embed, cls_token, final_norm). It never selects the
      blocks (expanded) nor the head.
    copy_head: copy `head/...` too (default False: the head keeps the descendant's own init,
      a descendant usually being for a new task).

  A param expanded or copied whose shape differs from the descendant's (another width, head
  count, vocabulary ...), a descendant block param the learngene lacks (or the reverse),
  or a learngene without gene_a / gene_b is a one-line ConfigError naming the param. Params
  neither expanded nor copied keep their value. Pure jnp on the params: runs under jax.jit
  and jax.eval_shape.
  """
  if coeff not in COEFFS:
    raise ConfigError(f'config.init.tleg_expand.coeff: {coeff!r}; valid choices: {COEFFS}')
  copy = _check_copy('tleg_expand', copy, copy_head)

  def scheme(key, params, ctx=None):
    del key
    values = _learngene(ctx, 'tleg_expand', TLEG_GENES, 'TLEG')
    gene_a, gene_b = (_subtree(values, g) for g in TLEG_GENES)
    for name in sorted(set(gene_a) ^ set(gene_b)):
      has, lacks = TLEG_GENES if name in gene_a else TLEG_GENES[::-1]
      _fail('tleg_expand', f'the learngene has {has}/{name} but no {lacks}/{name}')
    for name in sorted(gene_a):
      if tuple(gene_a[name].shape) != tuple(gene_b[name].shape):
        _fail(
          'tleg_expand',
          f'the learngene has gene_a/{name} of shape {tuple(gene_a[name].shape)} but '
          f'gene_b/{name} of shape {tuple(gene_b[name].shape)}',
        )
    layout, depth = _descendant(params, 'tleg_expand')
    stacks = tleg_expand(gene_a, gene_b, depth, coeff=coeff)
    origin = {name: f'gene_a/{name}' for name in gene_a}
    return _write(
      params,
      layout,
      values,
      stacks,
      origin,
      scheme='tleg_expand',
      copy=copy,
      copy_head=bool(copy_head),
    )

  return scheme


@register_scheme(
  'sws_expand',
  description='SWS (arXiv 2404.16897): descendant layers copy the stages of a stage-wise '
  'weight-sharing learngene (init.pretrained: gene_stages); embeddings and final norm copied',
)
def sws_expand_scheme(
  stages: Sequence[int] = SWS_STAGES,
  layer_map: Sequence[int] = (),
  copy: str = DEFAULT_COPY,
  copy_head: bool = False,
) -> Scheme:
  """SWS (arXiv 2404.16897): a descendant of any depth from a stage-wise learngene.

  Reads the learngene from `ctx.pretrained` (`gene_stages/<block param>`, leading stage
  axis, and the non-block params) and writes the descendant's `params` (its fresh init,
  whose shapes give the depth L' and layout): layer i's block params are stage
  `layer_map[i]`'s, written stacked (`blocks/<p>`, (L', ...)) or per layer
  (`blocks/<i>/<p>`) as the descendant holds its blocks.

  Options:
    stages: the learngene's stage sizes (its layers per stage); the map is
      `sws_layer_map(L', stages)` (proportional, largest remainder, >= 1 layer per stage;
      so L' >= len(stages)).
    layer_map: an explicit map (one stage index per descendant layer, any order), e.g.
      the authors' 12-layer (0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4); () uses `stages`.
    copy, copy_head: as `tleg_expand`.

  The learngene's stage count must equal len(stages) (with layer_map: max(layer_map) + 1),
  and an explicit map must have L' entries; these, shape mismatches (naming the param) and a
  learngene without gene_stages are one-line ConfigErrors. Params neither expanded nor
  copied keep their value. Pure jnp on the params: runs under jax.jit and jax.eval_shape.
  """
  try:
    stages = tuple(stages)
    sws_layer_map(len(stages), stages)  # Validates the sizes.
    layer_map = check_map(layer_map, 'sws_expand') if len(tuple(layer_map)) else ()
  except (ValueError, TypeError) as e:
    raise ConfigError(f'config.init.sws_expand: {e}') from None
  copy = _check_copy('sws_expand', copy, copy_head)

  def scheme(key, params, ctx=None):
    del key
    values = _learngene(ctx, 'sws_expand', (SWS_GENE,), 'SWS')
    gene = _subtree(values, SWS_GENE)
    counts = {tuple(v.shape)[:1] for v in gene.values()}
    if len(counts) != 1 or () in counts:
      _fail('sws_expand', f"the learngene's {SWS_GENE} params have leading axes {counts}")
    (num_stages,) = counts.pop()
    layout, depth = _descendant(params, 'sws_expand')
    if layer_map:
      want, source = max(layer_map) + 1, f'layer_map={layer_map} (max + 1)'
      if len(layer_map) != depth:
        _fail('sws_expand', f'layer_map={layer_map} has {len(layer_map)} layers, the model {depth}')
      mapping = layer_map
    else:
      want, source = len(stages), f'stages={stages}'
      if depth < len(stages):
        _fail(
          'sws_expand',
          f'the model has depth {depth}, less than the {len(stages)} stages of stages={stages}; '
          'every stage needs a layer (or give layer_map)',
        )
      mapping = sws_layer_map(depth, stages)
    if num_stages != want:
      _fail(
        'sws_expand',
        f'the learngene has {num_stages} stages ({SWS_GENE}/...) but {source} needs {want}',
      )
    stacks = sws_expand(gene, mapping)
    origin = {name: f'{SWS_GENE}/{name}' for name in gene}
    return _write(
      params,
      layout,
      values,
      stacks,
      origin,
      scheme='sws_expand',
      copy=copy,
      copy_head=bool(copy_head),
    )

  return scheme
