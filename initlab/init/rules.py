"""`Rules`: an ordered list of (path regex, initializer) applied to a whole param tree.

First match wins; unmatched leaves keep their value. Each leaf's key is
`fold_in(key, stable_hash(path))`, so a param's init depends only on the key and its own
path: not on tree order, on other params, or on the device count. Slice i of a stacked
(scanned) param gets `fold_in(leaf_key, i)`: it equals the same initializer run on that
layer alone, and is generated layer by layer to keep temporaries small. This is the one
place that handles stacked params: initializers only ever see one layer's shape.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initlab.init import tree as tree_lib
from initlab.init.registry import LayoutInitializer
from initlab.init.specs import EMBEDDING_FAN_IN, LayoutError, ParamSpec, infer_role, infer_spec


def path_hash(path: str) -> int:
  """A stable 31-bit hash of a param path (sha256; independent of Python's hash seed)."""
  return int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], 'little') & 0x7FFFFFFF


def leaf_key(key: jax.Array, path: str) -> jax.Array:
  return jax.random.fold_in(key, path_hash(path))


def _per_slice(init: Callable, spec: ParamSpec, key: jax.Array, shape: tuple[int, ...], dtype):
  """A stacked param, one slice of its batch axes at a time.

  Slice i (row-major over the batch axes) gets `fold_in(key, i)` and is generated inside
  `lax.map`, so temporaries (random bits) stay at one layer's size, also under sharding.
  """
  batch = spec.batch_axes
  rest = tuple(a for a in range(len(shape)) if a not in batch)
  renumber = lambda axes: tuple(rest.index(a) for a in axes)
  inner = ParamSpec(spec.role, renumber(spec.in_axes), renumber(spec.out_axes))
  if isinstance(init, LayoutInitializer) and not init.layout_fixed:
    init = init.bind(inner)
  inner_shape = tuple(shape[a] for a in rest)
  n = math.prod(shape[a] for a in batch)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
  one_slice = lambda k: init(k, inner_shape, dtype)
  mesh = jax.sharding.get_abstract_mesh()
  if getattr(init, 'whole_slice', False) and not mesh.empty and mesh.size > 1:
    slices = _spread_slices(one_slice, keys, mesh)
  else:
    slices = jax.lax.map(one_slice, keys)
  slices = slices.reshape(tuple(shape[a] for a in batch) + inner_shape)
  return jnp.transpose(slices, np.argsort(batch + rest))


def _spread_slices(one_slice: Callable, keys: jax.Array, mesh) -> jax.Array:
  """`lax.map(one_slice, keys)` with slice i computed on one device only.

  For initializers marked `whole_slice` (a QR: no partitioning rule, so under sharded outputs
  every device would compute every slice in full): the slices are dealt out over all devices
  of the mesh (padded with repeats to a multiple of the device count, then dropped), each
  device maps over its share, and the caller's sharding moves them where they belong. Each
  slice is the same computation as in `lax.map`, so the values do not depend on the mesh.
  """
  n, devices = keys.shape[0], mesh.size
  padded = keys[jnp.arange(-(-n // devices) * devices) % n]
  spec = jax.sharding.PartitionSpec(tuple(mesh.axis_names))
  spread = jax.shard_map(
    lambda k: jax.lax.map(one_slice, k), mesh=mesh, in_specs=spec, out_specs=spec
  )
  return spread(padded)[:n]


class Rules:
  """Applies `(regex, initializer)` rules to every leaf of a param tree.

  Args:
    rules: `(pattern, init)` pairs; `pattern` must `re.fullmatch` the leaf path
      ('blocks/0/attn/query/kernel'). `init` is a `(key, shape, dtype)` initializer; a
      `LayoutInitializer` (anything from `initlab.init`) is bound to the leaf's `ParamSpec`
      so its fans are right for Dense, Conv, attention and stacked kernels.
    roles: if given, only leaves with these roles ('kernel', 'bias', 'embedding',
      'norm_scale', 'norm_offset') are candidates; leaves whose role is unknown are skipped.
    specs: `{pattern: ParamSpec}` overrides for params whose layout cannot be inferred.
    strict: every pattern must match at least one candidate leaf.
    embedding_fan_in: "features" (default: fan_in = D of a (V, D) embedding, as Flax's
      `nn.Embed` and PyTorch) or "vocab" (fan_in = V, for reproducing reference code that
      reads `weight.shape[0]`). Applies to inferred embedding specs, not to `specs`.

  `rules(key, params, ctx=None)` returns a tree of the same structure (NNX state, Linen
  variables or plain dict). On an abstract tree (ShapeDtypeStructs), matched leaves come
  back as arrays: that is how sharded init materializes params under `jax.jit`.
  """

  def __init__(
    self,
    rules: Sequence[tuple[str, Callable]],
    *,
    roles: Sequence[str] | None = None,
    specs: Mapping[str, ParamSpec] | None = None,
    strict: bool = True,
    embedding_fan_in: str = 'features',
  ):
    if embedding_fan_in not in EMBEDDING_FAN_IN:
      raise ValueError(
        f'Rules(embedding_fan_in={embedding_fan_in!r}); valid choices: {EMBEDDING_FAN_IN}'
      )
    self.embedding_fan_in = embedding_fan_in
    self.rules = [(re.compile(p), init) for p, init in rules]
    self.roles = tuple(roles) if roles is not None else None
    self.specs = [(re.compile(p), s) for p, s in (specs or {}).items()]
    self.strict = strict

  def spec(self, leaf: tree_lib.Leaf) -> ParamSpec:
    for pattern, spec in self.specs:
      if pattern.fullmatch(leaf.path):
        return spec
    return infer_spec(leaf.path, leaf.shape, leaf.names, self.embedding_fan_in)

  def _spec_or_none(self, leaf) -> ParamSpec | None:
    try:
      return self.spec(leaf)
    except LayoutError:
      return None

  def _candidate(self, leaf) -> bool:
    if self.roles is None:
      return True
    if any(p.fullmatch(leaf.path) for p, _ in self.specs):
      return self.spec(leaf).role in self.roles
    try:
      return infer_role(leaf.path) in self.roles
    except LayoutError:
      return False

  def match(self, path: str) -> Callable | None:
    for pattern, init in self.rules:
      if pattern.fullmatch(path):
        return init
    return None

  def __call__(self, key: jax.Array, params: Any, ctx: Any = None) -> Any:
    del ctx
    all_leaves = tree_lib.leaves(params)
    candidates = {l.path for l in all_leaves if self._candidate(l)}
    if self.strict:
      for pattern, _ in self.rules:
        if not any(pattern.fullmatch(p) for p in candidates):
          shown = sorted(candidates)[:8]
          raise ValueError(
            f'init rule {pattern.pattern!r} matched no param (roles={self.roles}); '
            f'params look like: {shown}{" ..." if len(candidates) > 8 else ""}'
          )

    def visit(leaf: tree_lib.Leaf):
      init = self.match(leaf.path) if leaf.path in candidates else None
      if init is None:
        return leaf.value
      layout = isinstance(init, LayoutInitializer) and not init.layout_fixed
      spec = self.spec(leaf) if layout else self._spec_or_none(leaf)
      k = leaf_key(key, leaf.path)
      if spec is not None and spec.batch_axes:
        value = _per_slice(init, spec, k, leaf.shape, leaf.value.dtype)
      else:
        value = (init.bind(spec) if layout else init)(k, leaf.shape, leaf.value.dtype)
      if tuple(value.shape) != leaf.shape:
        raise ValueError(
          f'initializer for {leaf.path!r} returned shape {value.shape}, expected {leaf.shape}'
        )
      return jnp.asarray(value, leaf.value.dtype)

    return tree_lib.map_leaves(visit, params)

  def __repr__(self):
    body = ', '.join(f'({p.pattern!r}, {i!r})' for p, i in self.rules)
    return f'Rules([{body}], roles={self.roles})'
