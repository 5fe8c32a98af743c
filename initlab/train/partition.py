"""The trainable partition of a param tree, and fixed 0/1 masks.

    trainable = partition.trainable_paths(params, r'.*head.*')  # config.optimizer.trainable
    sub = partition.select(params, trainable)       # nested dict of the trainable leaves only
    params = partition.insert(params, sub)          # those leaves replaced
    params = partition.apply_masks(params, masks)   # masked entries set to exactly 0

The optimizer sees only `select(params, trainable)`: frozen params get no optimizer state,
no clipping, no weight decay, and the step differentiates only the trainable leaves. The
default (every param trainable) selects the whole tree, so a run without a partition has
the same optimizer state (and checkpoints) as before partitions existed.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp

from initlab.errors import ConfigError
from initlab.init import tree as tree_lib


def trainable_paths(params, pattern: str, *, key: str = 'optimizer.trainable') -> frozenset | None:
  """The paths of `params` that the regex `pattern` fully matches; None for '' (all).

  A pattern that matches no param is a one-line ConfigError naming `key` and a few paths.
  """
  if not pattern:
    return None
  try:
    regex = re.compile(pattern)
  except re.error as e:
    raise ConfigError(f'config.{key}: not a regular expression ({e}): {pattern!r}') from None
  paths = [l.path for l in tree_lib.leaves(params)]
  chosen = frozenset(p for p in paths if regex.fullmatch(p))
  if not chosen:
    raise ConfigError(
      f'config.{key}: {pattern!r} matches no param of this model; its params: '
      f'{", ".join(paths[:6])}{", ..." if len(paths) > 6 else ""}'
    )
  return chosen


def _walk(tree, prefix=()):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _walk(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def _path(keys) -> str:
  return '/'.join(map(str, keys))


def select(tree: Any, paths: frozenset | None) -> Any:
  """The nested dict of `tree`'s leaves at `paths` (None: `tree` itself)."""
  if paths is None:
    return tree
  out: dict = {}
  for keys, leaf in _walk(tree):
    if _path(keys) in paths:
      node = out
      for k in keys[:-1]:
        node = node.setdefault(k, {})
      node[keys[-1]] = leaf
  return out


def insert(tree: Any, sub: Any) -> Any:
  """`tree` (nested dicts) with the leaves that `sub` holds replaced by `sub`'s."""
  if sub is tree:
    return tree
  out = dict(tree)
  for k, v in sub.items():
    out[k] = insert(tree[k], v) if isinstance(v, dict) else v
  return out


def apply_masks(tree: Any, masks: Any) -> Any:
  """`tree` with every leaf that `masks` (a nested dict of bool arrays, a subset of `tree`'s
  paths) holds set to `where(mask, leaf, 0)`: masked entries are exactly 0."""
  if not masks:
    return tree
  return insert(
    tree,
    jax.tree.map(lambda m, x: jnp.where(m, x, jnp.zeros_like(x)), masks, select_like(tree, masks)),
  )


def select_like(tree: Any, sub: Any) -> Any:
  """`tree`'s leaves at the paths of `sub`, as a tree like `sub`."""
  return select(tree, frozenset(_path(k) for k, _ in _walk(sub)))


def check_masks(masks: Any, params: Any, where: str) -> Any:
  """`masks` as bool arrays, checked to name params of `params` with their shapes."""
  have = {_path(k): v for k, v in _walk(params)}
  for keys, m in _walk(masks):
    p = _path(keys)
    if p not in have:
      raise ValueError(f'{where}: a mask for {p!r}, which is not a param of this model')
    if tuple(m.shape) != tuple(have[p].shape):
      raise ValueError(
        f'{where}: the mask of {p!r} has shape {tuple(m.shape)}, the param {tuple(have[p].shape)}'
      )
  return jax.tree.map(lambda m: m.astype(bool), masks)
