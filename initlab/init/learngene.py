"""Learngene: descendant transformers of any depth initialized from a small auxiliary model.

TLEG ("Transformer as Linear Expansion of Learngene", Xia et al., AAAI 2024, arXiv 2312.05614,
Section 3, Eq. 1-2): every block tensor of layer l is a line in depth,

    θ_l = θ_A + c_l · θ_B,    c_l = l / L              (coeff='code', l = 0 .. L-1)
                              c_l = l / (L - 1)        (coeff='endpoint'; c_0 = 0 when L = 1)

The learngene (θ_A, θ_B) is trained inside an auxiliary model of depth L; a descendant of
depth L' uses the same rule with L'. 'code' is what the authors' code computes (the last
layer is θ_A + (L-1)/L · θ_B, not θ_A + θ_B) and the default; 'endpoint' puts θ_A and
θ_A + θ_B at the first and last layer.

SWS ("Exploring Learngene via Stage-wise Weight Sharing for Initializing Variable-sized
Models", Xia et al., IJCAI 2024, arXiv 2404.16897, Section 3): the auxiliary model has stages
(default sizes (3, 3, 4, 3, 3)) whose layers share one set of params; a descendant's layer i
copies stage `layer_map[i]` (`sws_layer_map`, or an explicit map such as the authors'
12-layer (0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4)).

Param layouts (the learngene zoo models'; paths as `initlab.init.tree` writes them):

- descendant, stacked (the scanned transformer LM): `blocks/<block param>` with a leading
  layer axis (depth, ...), e.g. 'blocks/attn/query/kernel' (depth, dim, heads, head_dim);
- descendant, one subtree per layer (ViT): `blocks/<i>/<block param>`, i = 0 .. depth-1;
- TLEG learngene: `gene_a/<block param>` and `gene_b/<block param>` (one block's shapes);
- SWS learngene: `gene_stages/<block param>` with a leading stage axis (num_stages, ...);
- both keep everything outside the blocks as the descendant has it (token_embed, pos_embed,
  patch_embed, cls_token, final_norm, head).

The plain functions (`tleg_expand`, `sws_expand`, ...) work on any tree; the registered
schemes 'tleg_expand' and 'sws_expand' (`initlab.init.families.learngene`) read the learngene
from `ctx.pretrained`
(`config.init.pretrained`) and write a descendant's params. `linearity_r2` measures TLEG's
premise: how linear in depth the block tensors of a trained (stacked) model are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from initlab.init import tree as tree_lib

COEFFS = ('code', 'endpoint')
SWS_STAGES = (3, 3, 4, 3, 3)  # The SWS paper's auxiliary model (16 layers, 5 stages).
BLOCKS = 'blocks'  # The descendant's block subtree.
TLEG_GENES = ('gene_a', 'gene_b')  # The TLEG learngene's two block subtrees.
SWS_GENE = 'gene_stages'  # The SWS learngene's stacked stage subtree.
HEAD = 'head'  # The classifier / LM head: copied only with copy_head=True.
DEFAULT_COPY = r'(?:token_embed|pos_embed|patch_embed|cls_token|final_norm)/.*'


# ------------------------------------------------------------------------------------------
# Plain functions.


def tleg_coefficients(depth: int, *, coeff: str = 'code') -> np.ndarray:
  """TLEG's c_l of layers l = 0 .. depth-1 (arXiv 2312.05614, Eq. 2), float64 (depth,).

  coeff='code': c_l = l / depth (the authors' code); 'endpoint': c_l = l / (depth - 1), and
  c_0 = 0 for depth 1. ValueError for depth < 1 or another `coeff`.
  """
  if coeff not in COEFFS:
    raise ValueError(f'tleg_coefficients: coeff={coeff!r}; valid choices: {COEFFS}')
  if int(depth) != depth or depth < 1:
    raise ValueError(f'tleg_coefficients: depth={depth!r} must be an int >= 1')
  depth = int(depth)
  layers = np.arange(depth, dtype=np.float64)
  if coeff == 'code':
    return layers / depth
  return layers / (depth - 1) if depth > 1 else np.zeros(1)


def _matched(a, b, what: str) -> tuple[list[tree_lib.Leaf], dict[str, Any]]:
  """(a's leaves, {path: b's value}); ValueError naming the first path or shape that differs."""
  a_leaves = tree_lib.leaves(a)
  b_values = {l.path: l.value for l in tree_lib.leaves(b)}
  a_paths = {l.path for l in a_leaves}
  for path in sorted(a_paths ^ set(b_values)):
    has, lacks = ('theta_a', 'theta_b') if path in a_paths else ('theta_b', 'theta_a')
    raise ValueError(f'{what}: {has} has param {path!r} but {lacks} has not; the trees must match')
  for leaf in a_leaves:
    other = tuple(b_values[leaf.path].shape)
    if leaf.shape != other:
      raise ValueError(
        f'{what}: param {leaf.path!r} has shape {leaf.shape} in theta_a but {other} in theta_b'
      )
  return a_leaves, b_values


def _line(a, b, c: np.ndarray):
  """a + c_l b stacked on a new leading axis, computed in >= float32, in a's dtype."""
  dtype = a.dtype
  compute = jnp.promote_types(dtype, jnp.float32)
  c = jnp.asarray(c, compute).reshape((-1,) + (1,) * a.ndim)
  return (a.astype(compute)[None] + c * jnp.asarray(b).astype(compute)[None]).astype(dtype)


def tleg_expand(theta_a, theta_b, depth: int, *, coeff: str = 'code'):
  """TLEG's expansion (arXiv 2312.05614, Eq. 1): a tree like `theta_a` whose leaves gain a
  leading `depth` axis, leaf[l] = θ_A + c_l · θ_B with c = `tleg_coefficients(depth, coeff)`.

  Computed with jnp (jit-able with `depth` and `coeff` static; works on tracers) in at least
  float32 and returned in θ_A's dtype. The trees must have the same paths and shapes, else
  a ValueError naming the first path that differs.
  """
  c = tleg_coefficients(depth, coeff=coeff)
  _, b_values = _matched(theta_a, theta_b, 'tleg_expand')
  return tree_lib.map_leaves(lambda l: _line(l.value, b_values[l.path], c), theta_a)


def sws_layer_map(depth: int, stages: Sequence[int] = SWS_STAGES) -> tuple[int, ...]:
  """The stage each of `depth` layers copies (SWS, arXiv 2404.16897), in stage order.

  initlab's rule: the layers are allocated to the stages proportionally to the stage sizes
  by the largest-remainder (Hamilton) method: stage k's quota is depth · s_k / Σs; every
  stage first gets the floor of its quota, the layers left over go one each to the stages
  with the largest remainders (exact rational comparison; ties to the earlier stage). Every
  stage must get at least one layer, so depth >= len(stages) (else ValueError naming both);
  a stage the rule leaves at 0 (a small stage at a small depth, e.g. stages (1, 10, 1) at
  depth 3) takes one layer from the stage holding the most layers (ties to the earlier
  stage), stages visited in order. Layers are then assigned in stage order: layer i copies
  stage map[i], and map is non-decreasing.

  `depth` = Σ stages gives every stage its own size back (the auxiliary model's own map).
  The rule need not reproduce a hand-written map (the authors' 12-layer
  (0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4) is (3, 3, 2, 2, 2) layers; this rule gives
  (3, 2, 3, 2, 2)): pass such a map explicitly (`sws_expand(layer_map=...)`) for parity.
  """
  stages = tuple(stages)
  if not stages or any(int(s) != s or s < 1 for s in stages):
    raise ValueError(f'sws_layer_map: stages={stages!r} must be a non-empty sequence of ints >= 1')
  if int(depth) != depth or depth < len(stages):
    raise ValueError(
      f'sws_layer_map: depth={depth!r} is less than the {len(stages)} stages of '
      f'stages={stages}; every stage needs at least one layer'
    )
  depth, stages, total = int(depth), tuple(int(s) for s in stages), sum(int(s) for s in stages)
  counts = [depth * s // total for s in stages]
  remainders = [depth * s % total for s in stages]  # Remainder · total: exact integers.
  by_remainder = sorted(range(len(stages)), key=lambda k: (-remainders[k], k))
  for k in by_remainder[: depth - sum(counts)]:
    counts[k] += 1
  for k in range(len(stages)):
    if counts[k] == 0:
      donor = max(range(len(stages)), key=lambda j: (counts[j], -j))
      counts[donor] -= 1
      counts[k] += 1
  return tuple(k for k, n in enumerate(counts) for _ in range(n))


def check_map(layer_map, what: str) -> tuple[int, ...]:
  layer_map = tuple(layer_map)
  if not layer_map or any(int(k) != k or k < 0 for k in layer_map):
    raise ValueError(f'{what}: layer_map={layer_map!r} must be a non-empty sequence of ints >= 0')
  return tuple(int(k) for k in layer_map)


def sws_expand(stage_params, layer_map: Sequence[int]):
  """SWS's expansion: a tree like `stage_params` (leaves (num_stages, ...)) whose leaves are
  gathered on the leading axis, leaf[i] = stage_params_leaf[layer_map[i]], (len(layer_map), ...).

  jit-able with `layer_map` static. ValueError for an empty map, a negative index or one
  past a leaf's stage count (naming the param).
  """
  layer_map = check_map(layer_map, 'sws_expand')
  index = np.asarray(layer_map, np.int32)

  def gather(leaf):
    if not leaf.shape or max(layer_map) >= leaf.shape[0]:
      raise ValueError(
        f'sws_expand: param {leaf.path!r} of shape {leaf.shape} has no stage {max(layer_map)} '
        f'(layer_map={layer_map}); its leading axis holds the stages'
      )
    return jnp.asarray(leaf.value)[index]

  return tree_lib.map_leaves(gather, stage_params)


def stacked_blocks(params) -> dict[str, Any]:
  """{block param: (L, ...) array} of a model's blocks, stacked (`blocks/<p>`, as is) or one
  subtree per layer (`blocks/<l>/<p>`, stacked here in layer order); what `linearity_r2`
  takes. ValueError for a tree without `blocks/`."""
  values = {l.path: l.value for l in tree_lib.leaves(params) if l.path.startswith(BLOCKS + '/')}
  if not values:
    raise ValueError(f'stacked_blocks: no {BLOCKS}/... params in this tree')
  per_layer = {}
  for path, value in values.items():
    _, first, rest = (path.split('/', 2) + [''])[:3]
    if not first.isdigit():
      per_layer = None
      break
    per_layer.setdefault(rest, {})[int(first)] = value
  if per_layer is None:
    return {p.split('/', 1)[1]: np.asarray(v) for p, v in values.items()}
  return {n: np.stack([np.asarray(v[l]) for l in sorted(v)]) for n, v in per_layer.items()}


def linearity_r2(stacked) -> dict[str, float]:
  """{path: R²} of how linear in depth each stacked (L, ...) leaf of `stacked` is.

  TLEG's premise (arXiv 2312.05614, Section 3, Fig. 1): the block tensors of a trained
  transformer are close to a line in the layer index. Every entry x_l (l = 0 .. L-1) is
  regressed on l by least squares with an intercept; the pooled R² over the tensor's
  entries is 1 - Σ residual² / Σ (x_l - mean_l x)², sums over all entries and layers (so
  entries that vary more across depth weigh more). 1.0 for a tensor exactly linear in l.

  Edge cases: L < 3 gives NaN (a line through one or two points always fits, so R² says
  nothing); a tensor constant across layers (Σ (x - mean)² = 0) gives 1.0 (it is a line
  of slope 0, with zero residual). Host-side analysis: computed with numpy in float64 on
  concrete arrays (not for use under jit). ValueError for a leaf without a layer axis.
  """
  out = {}
  for leaf in tree_lib.leaves(stacked):
    if not leaf.shape:
      raise ValueError(f'linearity_r2: param {leaf.path!r} is a scalar, not stacked (L, ...)')
    depth = leaf.shape[0]
    if depth < 3:
      out[leaf.path] = float('nan')
      continue
    x = np.asarray(leaf.value, np.float64).reshape(depth, -1)
    t = np.arange(depth, dtype=np.float64) - (depth - 1) / 2  # Centered layer index.
    xc = x - x.mean(axis=0)
    slope = (t @ xc) / (t @ t)
    total = float(np.sum(xc**2))
    residual = float(np.sum((xc - t[:, None] * slope[None]) ** 2))
    out[leaf.path] = 1.0 if total == 0 else 1.0 - residual / total
  return out


# ------------------------------------------------------------------------------------------
# Schemes.
