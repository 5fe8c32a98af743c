"""Uniform leaf access for param trees: Flax NNX state, Linen variables, plain dicts.

Every leaf is seen as a `Leaf(path, value, names)`: `path` is a '/'-joined string
such as 'blocks/attn/query/kernel', `value` the array (or `jax.ShapeDtypeStruct`),
`names` the logical axis names from the variable's metadata (or None).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from flax import nnx
from flax.core import meta as linen_meta


@dataclasses.dataclass(frozen=True)
class Leaf:
  path: str
  value: Any
  names: tuple[str | None, ...] | None = None

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.value.shape)


def _is_boxed(x) -> bool:
  return isinstance(x, (nnx.Variable, linen_meta.AxisMetadata))


def _key_str(k) -> str:
  for attr in ('key', 'idx', 'name'):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def path_str(path) -> str:
  """'/'-joined path of a jax key path, without trailing '.value' accessors."""
  parts = [_key_str(k) for k in path]
  while parts and parts[-1] in ('value', 'raw_value'):
    parts.pop()
  return '/'.join(parts)


def _unbox(x) -> tuple[Any, tuple | None]:
  if isinstance(x, nnx.Variable):
    meta = x.get_metadata()
    names = meta.get('out_sharding') or meta.get('sharding_names') or meta.get('sharding')
    return x.get_value(), (tuple(names) if names is not None else None)
  if isinstance(x, linen_meta.AxisMetadata):
    names = getattr(x, 'names', None)
    return x.unbox(), (tuple(names) if names is not None else None)
  return x, None


def _rebox(box, value):
  if isinstance(box, nnx.Variable):
    return box.replace(value)
  if isinstance(box, linen_meta.AxisMetadata):
    return box.replace_boxed(value)
  return value


def leaves(tree) -> list[Leaf]:
  """All array leaves of `tree` with their paths and logical axis names."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_boxed)
  out = []
  for path, x in flat:
    value, names = _unbox(x)
    out.append(Leaf(path_str(path), value, names))
  return out


def map_leaves(fn: Callable[[Leaf], Any], tree):
  """Rebuilds `tree` with `fn(leaf)` as each leaf's new value (boxes are kept)."""

  def visit(path, x):
    value, names = _unbox(x)
    return _rebox(x, fn(Leaf(path_str(path), value, names)))

  return jax.tree_util.tree_map_with_path(visit, tree, is_leaf=_is_boxed)
