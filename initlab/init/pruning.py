"""Pruning at initialization (PAI): single-shot saliency scores and global top-k masks.

Plain functions on param trees (nested dicts of arrays, e.g. `nnx.state(model, nnx.Param)`
as a pure dict). Only kernels (conv/dense weights, ndim >= 2; see `prunable`) are scored and
masked; biases, norm params and embeddings are left dense (their score/mask leaf is None).

  snip      |θ ⊙ ∂L/∂θ|                      Lee et al. 2019, arXiv 1810.02340.
  grasp     −θ ⊙ (H g), g = ∂L/∂θ            Wang et al. 2020, arXiv 2002.07376;
                                              the *highest* scores are removed.
  synflow   |θ| ⊙ ∂R/∂|θ|, R = 1ᵀ f(|θ|, 1)   Tanaka et al. 2020, arXiv 2006.05467;
                                              iterative: `synflow_masks`.
  magnitude |θ|;  random  uniform(key).

L is the mean softmax cross-entropy of `apply_fn(params, inputs)` (logits (B, classes)) with
integer `labels` (B,). Gradients and Hessian-vector products are taken w.r.t. the kernels
only: biases and norm params are held fixed.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from initlab.init import rules, specs
from initlab.init import tree as tree_lib

METHODS = ('snip', 'grasp', 'synflow', 'magnitude', 'random')


def _is_kernel(leaf: tree_lib.Leaf) -> bool:
  try:
    role = specs.infer_role(leaf.path)
  except specs.LayoutError:
    return False
  return role == 'kernel' and len(leaf.shape) >= 2


def prunable(params: Any) -> Any:
  """Tree of bool like `params`: True for conv/dense kernels (role 'kernel', ndim >= 2)."""
  return tree_lib.map_leaves(_is_kernel, params)


def _split(params):
  """(leaves, treedef, flags): flags[i] says whether leaves[i] is a prunable kernel."""
  leaves, treedef = jax.tree.flatten(params)
  flags = tuple(bool(f) for f in jax.tree.leaves(prunable(params)))
  return leaves, treedef, flags


def _merge(kernels, leaves, flags):
  """`leaves` with the prunable ones replaced, in order, by `kernels`."""
  it = iter(kernels)
  return [next(it) if f else x for x, f in zip(leaves, flags)]


def _kernel_loss(apply_fn, leaves, treedef, flags, inputs, labels):
  """L as a function of the kernel list only (other params are closed over, fixed)."""

  def loss(kernels):
    params = jax.tree.unflatten(treedef, _merge(kernels, leaves, flags))
    logits = apply_fn(params, inputs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  return loss


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _synflow_raw(apply_fn, treedef, flags, leaves, x):
  """|θ| ⊙ ∂R/∂|θ| for the kernels (unnormalized), R = sum(apply_fn(|params|, x))."""
  leaves = [jnp.abs(v) for v in leaves]

  def flow(kernels):
    params = jax.tree.unflatten(treedef, _merge(kernels, leaves, flags))
    return jnp.sum(apply_fn(params, x))

  kernels = [v for v, f in zip(leaves, flags) if f]
  grads = jax.grad(flow)(kernels)
  return [k * g for k, g in zip(kernels, grads)]


def _synflow(apply_fn, leaves, treedef, flags, inputs):
  """SynFlow in float64, normalized by the global max score and returned as float32."""
  with jax.enable_x64(True):

    def f64(v):
      v = jnp.asarray(v)
      return v.astype(jnp.float64) if jnp.issubdtype(v.dtype, jnp.floating) else v

    leaves = [f64(v) for v in leaves]
    x_dtype = jnp.float64 if jnp.issubdtype(inputs.dtype, jnp.floating) else inputs.dtype
    x = jnp.ones((1,) + tuple(inputs.shape[1:]), x_dtype)
    raw = _synflow_raw(apply_fn, treedef, flags, leaves, x)
    top = jnp.max(jnp.stack([jnp.max(s) for s in raw]))
    top = jnp.where(top > 0, top, 1.0)
    return [(s / top).astype(jnp.float32) for s in raw]


def scores(
  method: str,
  apply_fn: Callable,
  params: Any,
  inputs: Any = None,
  labels: Any = None,
  *,
  key: jax.Array | None = None,
) -> Any:
  """Single-shot saliency: a tree like `params`, float32 scores on kernels, None elsewhere.

  `apply_fn(params, inputs) -> logits` (B, classes); `labels` (B,) int. 'snip' and 'grasp'
  need both; 'synflow' needs `inputs` for its shape only (its values are never read: the
  input is all ones of shape (1,) + inputs.shape[1:]) and is computed in float64, then
  divided by the global max score so that float32 does not overflow (only the ranking
  matters; scores below ~1e-45 of the max become 0). 'random' needs `key`.
  """
  if method not in METHODS:
    raise ValueError(f'unknown pruning method {method!r}; valid methods: {METHODS}')
  leaves, treedef, flags = _split(params)
  kernels = [jnp.asarray(v) for v, f in zip(leaves, flags) if f]
  if method in ('snip', 'grasp'):
    if inputs is None or labels is None:
      raise ValueError(f'method {method!r} needs `inputs` and `labels` (a batch)')
    loss = _kernel_loss(apply_fn, leaves, treedef, flags, inputs, labels)
    g = jax.lax.stop_gradient(jax.grad(loss)(kernels))
    if method == 'snip':
      out = [jnp.abs(k * gk) for k, gk in zip(kernels, g)]
    else:
      hg = jax.jvp(jax.grad(loss), (kernels,), (g,))[1]
      out = [-k * h for k, h in zip(kernels, hg)]
  elif method == 'synflow':
    if inputs is None:
      raise ValueError("method 'synflow' needs `inputs` (for its shape only)")
    out = _synflow(apply_fn, leaves, treedef, flags, jnp.asarray(inputs))
  elif method == 'magnitude':
    out = [jnp.abs(k) for k in kernels]
  else:
    if key is None:
      raise ValueError("method 'random' needs `key` (a jax.random key)")
    out = [jax.random.uniform(jax.random.fold_in(key, i), k.shape) for i, k in enumerate(kernels)]
  out = [s.astype(jnp.float32) for s in out]
  return jax.tree.unflatten(treedef, _merge(out, [None] * len(leaves), flags))


def _kept(density: float, total: int) -> int:
  if not 0 < density <= 1:
    raise ValueError(f'density must be in (0, 1], got density={density!r}')
  return max(1, round(density * total))


def _top_k(scored: Any, k: int, lowest: bool) -> Any:
  """Global mask keeping the k highest (lowest) entries; ties go to the lower flat index."""
  flat = [jnp.ravel(s) for s in jax.tree.leaves(scored)]
  allv = jnp.concatenate(flat)
  order = jnp.argsort(allv if lowest else -allv, stable=True)
  keep = jnp.zeros(allv.shape, bool).at[order[:k]].set(True)
  parts = jnp.split(keep, list(itertools.accumulate(f.size for f in flat))[:-1])
  it = iter(parts)
  return jax.tree.map(lambda s: next(it).reshape(s.shape), scored)


def masks(scores: Any, density: float, *, method: str = 'snip') -> Any:
  """Global top-k mask (bool, like `scores`; None where scores are None).

  k = round(density · N) (at least 1) over all N scored entries; density in (0, 1]. Keeps
  the k highest scores, for 'grasp' the k lowest (the highest are removed, arXiv 2002.07376). Ties are broken by flat index (stable argsort over the leaves in tree order).
  """
  total = sum(s.size for s in jax.tree.leaves(scores))
  return _top_k(scores, _kept(density, total), lowest=method == 'grasp')


def apply_masks(params: Any, masks: Any) -> Any:
  """params ⊙ mask on masked leaves; leaves whose mask is None are unchanged."""
  leaves, treedef = jax.tree.flatten(params)
  mflat = jax.tree.flatten(masks, is_leaf=lambda m: m is None)[0]
  out = [x if m is None else x * m.astype(x.dtype) for x, m in zip(leaves, mflat)]
  return jax.tree.unflatten(treedef, out)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _synflow_round(apply_fn, treedef, flags, leaves, kernel_masks, x, k):
  """One iterative-SynFlow round in one program: the masked params' scores (float64), −1 on
  pruned entries, the global top `k` (a traced int, so every round reuses the program; ties
  to the lower flat index). Returns the new kernel masks (list, in kernel order)."""
  it = iter(kernel_masks)
  masked = [v * next(it).astype(v.dtype) if f else v for v, f in zip(leaves, flags)]
  raw = _synflow_raw(apply_fn, treedef, flags, masked, x)
  flat = jnp.concatenate([jnp.ravel(jnp.where(m, s, -1.0)) for s, m in zip(raw, kernel_masks)])
  order = jnp.argsort(-flat, stable=True)
  rank = jnp.zeros(order.shape, order.dtype).at[order].set(jnp.arange(order.size))
  keep = rank < k
  parts = jnp.split(keep, list(itertools.accumulate(s.size for s in raw))[:-1])
  return [part.reshape(s.shape) for part, s in zip(parts, raw)]


def synflow_masks(
  apply_fn: Callable, params: Any, inputs: Any, density: float, *, rounds: int = 100
) -> Any:
  """Iterative SynFlow (arXiv 2006.05467): round k = 1..rounds rescores the masked
  params and keeps the global top density^(k/rounds) fraction. Pruned entries stay pruned
  (their score is set to −1 before the top-k), so the kept count falls monotonically to
  exactly round(density · N) (at least 1). Every round is one compiled program (float64)."""
  if rounds < 1:
    raise ValueError(f'rounds must be >= 1, got rounds={rounds!r}')
  leaves, treedef, flags = _split(params)
  total = sum(int(jnp.size(x)) for x, f in zip(leaves, flags) if f)
  _kept(density, total)
  inputs = jnp.asarray(inputs)
  with jax.enable_x64(True):
    f64 = [
      jnp.asarray(v).astype(jnp.float64)
      if jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating)
      else jnp.asarray(v)
      for v in leaves
    ]
    x_dtype = jnp.float64 if jnp.issubdtype(inputs.dtype, jnp.floating) else inputs.dtype
    x = jnp.ones((1,) + tuple(inputs.shape[1:]), x_dtype)
    kernel_masks = [jnp.ones(jnp.shape(v), bool) for v, f in zip(leaves, flags) if f]
    for r in range(1, rounds + 1):
      k = jnp.asarray(_kept(density ** (r / rounds), total), jnp.int64)
      kernel_masks = _synflow_round(apply_fn, treedef, flags, f64, kernel_masks, x, k)
  return jax.tree.unflatten(treedef, _merge(kernel_masks, [None] * len(leaves), flags))


def layer_densities(masks: Any) -> dict[str, float]:
  """{path: kept / total} for every masked leaf."""
  return {l.path: float(jnp.sum(l.value)) / l.value.size for l in tree_lib.leaves(masks)}


def shuffle_masks(masks: Any, key: jax.Array) -> Any:
  """Each layer's mask randomly permuted (same kept count, positions shuffled): the
  layer-wise-density-only ablation (Frankle et al. 2021, arXiv 2009.08576). The key
  of a leaf is `fold_in(key, hash(path))`, independent of tree order."""

  def visit(leaf):
    m = leaf.value
    perm = jax.random.permutation(rules.leaf_key(key, leaf.path), jnp.ravel(m))
    return perm.reshape(m.shape)

  return tree_lib.map_leaves(visit, masks)
