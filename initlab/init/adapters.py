"""Low-rank adapters on any param tree: the targets, their matrix view, and the fold.

    adapters = resolve(leaves, targets=r'.*(query|value)/kernel', rank=16, alpha=32.0)
    params = adapters.attach(key, params)        # + params['lora'], PEFT's default init
    model = merge_module(Adapted(graphdef, adapters), params, model_state)  # W + s·a@b

A target kernel is seen as a matrix (*batch, n, m): its batch (stacked-layer) axes first,
then its in-axes and receptive-field axes flattened into n, then its out-axes flattened into m
(a conv kernel (kh, kw, in, out) is (kh·kw·in, out), as PEFT's conv LoRA: A a kh×kw conv to r
channels, B a 1×1 conv; an attention kernel (embed, heads, head_dim) is (embed,
heads·head_dim)). Its adapter lives at `lora/<target path>/` beside the base tree, in the
Flax layout of Hu et al. (arXiv 2106.09685, eq. 3): `lora_a` (*batch, n, r), `lora_b`
(*batch, r, m), and the model runs with

    kernel_eff = kernel + s · lora_a @ lora_b,   s = alpha / r  (rsLoRA: alpha / √r,
                                                               arXiv 2312.03732)

(PEFT's A (r, in) is lora_aᵀ, its B (out, r) is lora_bᵀ). Two more kinds keep the same fold
with other trainable parts: 'loldu' (arXiv 2410.13618: kernel + σ·(lora_a·z) @ lora_b with
frozen triangular factors, trainable `lora_z` (*batch, r) and scalar `lora_sigma`) and
'lora_sb' (arXiv 2411.19557: kernel + s·lora_a @ lora_r @ lora_b, only the r×r `lora_r`
trained). Base params are never touched by the fold: adapters are a separate subtree, so
the base stays bit-identical unless an init scheme documents that it rewrites it (PiSSA's
residual, ...).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from initlab.errors import ConfigError
from initlab.init import specs as specs_lib
from initlab.init import tree as tree_lib

ROOT = 'lora'
KINDS = {  # kind -> (its params, the trainable ones)
  'lora': (('lora_a', 'lora_b'), ('lora_a', 'lora_b')),
  'loldu': (('lora_a', 'lora_b', 'lora_z', 'lora_sigma'), ('lora_z', 'lora_sigma')),
  'lora_sb': (('lora_a', 'lora_r', 'lora_b'), ('lora_r',)),
}


@dataclasses.dataclass(frozen=True)
class Target:
  """One adapted kernel.

  Attributes:
    path: the kernel's path, e.g. 'blocks/attn/query/kernel'.
    shape, dtype: the kernel's.
    batch_axes, row_axes, col_axes: its axes in the matrix view (rows: in + receptive).
    rank, alpha, rslora: the adapter's rank r and scale s = alpha/r (alpha/√r).
    sharding: the kernel's `PartitionSpec` entries per axis (for the adapter's), or None.
    scale_rank: the r of the scale when the adapter is allocated wider than the configured
      rank (EVA's redistribution: rank = round(ρ·r) columns, masks keep k_ℓ of them), or None.
  """

  path: str
  shape: tuple[int, ...]
  dtype: Any
  batch_axes: tuple[int, ...]
  row_axes: tuple[int, ...]
  col_axes: tuple[int, ...]
  rank: int
  alpha: float
  rslora: bool = False
  sharding: tuple | None = None
  scale_rank: int | None = None

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return tuple(self.shape[a] for a in self.batch_axes)

  @property
  def n(self) -> int:
    return math.prod(self.shape[a] for a in self.row_axes)

  @property
  def m(self) -> int:
    return math.prod(self.shape[a] for a in self.col_axes)

  @property
  def scale(self) -> float:
    r = self.scale_rank or self.rank
    return self.alpha / (math.sqrt(r) if self.rslora else r)

  @property
  def _order(self) -> tuple[int, ...]:
    return self.batch_axes + self.row_axes + self.col_axes

  def to_matrix(self, kernel: jax.Array) -> jax.Array:
    """(*batch, n, m) view of `kernel` (a transpose and a reshape)."""
    return jnp.transpose(kernel, self._order).reshape(self.batch_shape + (self.n, self.m))

  def from_matrix(self, matrix: jax.Array) -> jax.Array:
    """The kernel of shape `shape` whose matrix view is `matrix` (inverse of `to_matrix`)."""
    dims = tuple(self.shape[a] for a in self._order)
    inverse = tuple(self._order.index(a) for a in range(len(self.shape)))
    return jnp.transpose(matrix.reshape(dims), inverse)

  def adapter_shapes(self, kind: str = 'lora') -> dict[str, tuple[int, ...]]:
    b, r = self.batch_shape, self.rank
    shapes = {'lora_a': b + (self.n, r), 'lora_b': b + (r, self.m)}
    if kind == 'loldu':
      shapes.update(lora_z=b + (r,), lora_sigma=b)
    if kind == 'lora_sb':
      shapes['lora_r'] = b + (r, r)
    return shapes

  def adapter_spec(self, name: str) -> PartitionSpec:
    """The sharding of adapter param `name`: batch axes and the single row (col) axis as the
    kernel's; the rank axis and flattened axes replicated."""
    if self.sharding is None:
      return PartitionSpec()
    batch = tuple(self.sharding[a] for a in self.batch_axes)
    row = self.sharding[self.row_axes[0]] if len(self.row_axes) == 1 else None
    col = self.sharding[self.col_axes[0]] if len(self.col_axes) == 1 else None
    rest = {
      'lora_a': (row, None),
      'lora_b': (None, col),
      'lora_z': (None,),
      'lora_sigma': (),
      'lora_r': (None, None),
    }[name]
    return PartitionSpec(*batch, *rest)


@dataclasses.dataclass(frozen=True)
class Adapters:
  """The adapted kernels of one model and their kind ('lora', 'loldu' or 'lora_sb')."""

  targets: tuple[Target, ...]
  kind: str = 'lora'

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'adapter kind {self.kind!r}; valid kinds: {", ".join(KINDS)}')

  @property
  def names(self) -> tuple[str, ...]:
    return KINDS[self.kind][0]

  def trainable_regex(self) -> str:
    """Regex of the adapter params the optimizer trains (the base is frozen)."""
    return f'{ROOT}/.*/({"|".join(KINDS[self.kind][1])})'

  def target(self, path: str) -> Target:
    for t in self.targets:
      if t.path == path:
        return t
    raise KeyError(f'no adapter on {path!r}; adapted: {[t.path for t in self.targets]}')

  def abstract(self) -> dict:
    """The `lora` subtree as `ShapeDtypeStruct`s (float32 `lora_sigma`, else the kernel's)."""
    out: dict = {}
    for t in self.targets:
      for name, shape in t.adapter_shapes(self.kind).items():
        _put(out, t.path.split('/') + [name], jax.ShapeDtypeStruct(shape, t.dtype))
    return out

  def shardings(self, mesh) -> dict:
    """`NamedSharding`s of the `lora` subtree (see `Target.adapter_spec`)."""
    out: dict = {}
    for t in self.targets:
      for name in t.adapter_shapes(self.kind):
        _put(out, t.path.split('/') + [name], NamedSharding(mesh, t.adapter_spec(name)))
    return out

  def attach(self, key: jax.Array, params: dict) -> dict:
    """`params` plus a `lora` subtree in PEFT's default init (arXiv 2106.09685 §4.1;
    PEFT `init_lora_weights=True`): lora_a ~ U(±1/√n) (kaiming-uniform with a = √5 on
    A (r, n)), lora_b = 0, so the model's output is unchanged; 'loldu': z = 0, σ = s;
    'lora_sb': R = 0. Targets get keys folded with their path hash."""
    from initlab.init.rules import leaf_key  # pylint: disable=g-import-not-at-top

    lora: dict = {}
    for t in self.targets:
      shapes = t.adapter_shapes(self.kind)
      bound = 1.0 / math.sqrt(t.n)
      for name, shape in shapes.items():
        if name == 'lora_a':
          value = jax.random.uniform(leaf_key(key, t.path), shape, jnp.float32, -bound, bound)
        elif name == 'lora_sigma':
          value = jnp.full(shape, t.scale, jnp.float32)
        else:
          value = jnp.zeros(shape, jnp.float32)
        _put(lora, t.path.split('/') + [name], value.astype(t.dtype))
    return {**params, ROOT: lora}

  def delta(self, adapter: dict, t: Target) -> jax.Array:
    """The (*batch, n, m) update the adapter adds to target `t`'s matrix view, float32."""
    a, b = adapter['lora_a'].astype(jnp.float32), adapter['lora_b'].astype(jnp.float32)
    if self.kind == 'loldu':
      sigma = adapter['lora_sigma'].astype(jnp.float32)[..., None, None]
      return sigma * _mm(a * adapter['lora_z'].astype(jnp.float32)[..., None, :], b)
    if self.kind == 'lora_sb':
      return t.scale * _mm(_mm(a, adapter['lora_r'].astype(jnp.float32)), b)
    return t.scale * _mm(a, b)

  def fold(self, params: dict) -> dict:
    """The base tree with every target kernel + its adapter's update (no `lora` key)."""
    params = dict(params)
    lora = params.pop(ROOT)
    for t in self.targets:
      adapter = get_at(lora, t.path.split('/'))
      kernel = get_at(params, t.path.split('/'))
      update = t.from_matrix(self.delta(adapter, t))
      params = set_at(params, t.path.split('/'), (kernel + update).astype(kernel.dtype))
    return params

  def unfold(self, merged: dict, lora: dict) -> dict:
    """The inverse of `fold` (unmerge): the base kernels `merged − update`, with `lora`."""
    params = dict(merged)
    for t in self.targets:
      update = t.from_matrix(self.delta(get_at(lora, t.path.split('/')), t))
      kernel = get_at(params, t.path.split('/'))
      params = set_at(params, t.path.split('/'), (kernel - update).astype(kernel.dtype))
    return {**params, ROOT: lora}


def resolve(
  leaves: Sequence[tree_lib.Leaf],
  *,
  targets: str,
  rank: int,
  alpha: float = 0.0,
  rslora: bool = False,
  kind: str = 'lora',
  shardings: dict[str, PartitionSpec] | None = None,
  key: str = 'lora',
  rank_factor: float = 1.0,
) -> Adapters:
  """The `Adapters` for the kernels among `leaves` (with logical names, as `tree.leaves` of
  an abstract NNX state gives) whose paths fully match `targets`.

  `alpha` 0 means alpha = rank (s = 1). `shardings`: {path: the kernel's PartitionSpec}.
  `rank_factor` > 1 allocates min(round(rank_factor·rank), n, m) columns per adapter (its
  scale keeps `rank`): room for a scheme that redistributes ranks under masks (EVA's ρ).
  Errors (one line, naming `key`.<option>): a bad regex, a regex matching no kernel (some
  kernel paths listed), a matched param that is not a kernel, rank < 1 or > min(n, m).
  """
  try:
    regex = re.compile(targets)
  except re.error as e:
    raise ConfigError(f'config.{key}.targets: not a regular expression ({e}): {targets!r}')
  if kind not in KINDS:
    raise ConfigError(f'adapter kind {kind!r}; valid: {", ".join(KINDS)}')
  if not isinstance(rank, int) or rank < 1:
    raise ConfigError(f'config.{key}.rank: expected an int >= 1, got {rank!r}')
  chosen, kernels = [], []
  for leaf in leaves:
    if leaf.path.split('/')[0] == ROOT:
      continue
    try:
      spec = specs_lib.infer_spec(leaf.path, leaf.shape, leaf.names)
    except specs_lib.LayoutError:
      spec = None
    if spec is not None and spec.role == 'kernel':
      kernels.append(leaf.path)
    if not regex.fullmatch(leaf.path):
      continue
    if spec is None or spec.role != 'kernel':
      raise ConfigError(
        f'config.{key}.targets: {targets!r} matches {leaf.path!r}, which is not a kernel '
        f'(role {spec.role if spec else "unknown"}); adapters go on kernels'
      )
    rows = tuple(a for a in range(len(leaf.shape)) if a not in spec.out_axes + spec.batch_axes)
    t = Target(
      leaf.path,
      tuple(leaf.shape),
      leaf.value.dtype,
      spec.batch_axes,
      rows,
      spec.out_axes,
      rank,
      float(alpha or rank),
      bool(rslora),
      _entries((shardings or {}).get(leaf.path), len(leaf.shape)),
    )
    if rank > min(t.n, t.m):
      raise ConfigError(
        f'config.{key}.rank: {rank} exceeds min(in, out) = {min(t.n, t.m)} of {leaf.path!r} '
        f'(matrix view {t.n}x{t.m} of shape {t.shape})'
      )
    if rank_factor > 1:
      wide = min(round(rank_factor * rank), t.n, t.m)
      t = dataclasses.replace(t, rank=wide, scale_rank=rank)
    chosen.append(t)
  if not chosen:
    raise ConfigError(
      f'config.{key}.targets: {targets!r} matches no kernel of this model; its kernels: '
      f'{", ".join(kernels[:8])}{", ..." if len(kernels) > 8 else ""}'
    )
  return Adapters(tuple(chosen), kind)


def _entries(spec: PartitionSpec | None, ndim: int) -> tuple | None:
  if spec is None:
    return None
  return tuple(spec) + (None,) * (ndim - len(spec))


@dataclasses.dataclass(frozen=True, eq=False)
class Adapted:
  """A model's `nnx.GraphDef` with its adapters: `merge_module` folds them in."""

  graphdef: Any
  adapters: Adapters


def merge_module(graphdef, params: dict, model_state: dict) -> nnx.Module:
  """`nnx.merge(graphdef, params, model_state)`; for an `Adapted` graphdef, with the
  adapters folded into their kernels first (the model runs with kernel + update)."""
  if isinstance(graphdef, Adapted):
    return nnx.merge(graphdef.graphdef, graphdef.adapters.fold(params), model_state)
  return nnx.merge(graphdef, params, model_state)


def split(params: dict) -> tuple[dict, dict]:
  """(base params, the `lora` subtree or {})."""
  params = dict(params)
  return params, params.pop(ROOT, {})


def _mm(a, b):
  """a @ b in full float32 (accelerators' default precision would round the update to
  bf16/TF32, and the init schemes' residuals are exact only against the exact product)."""
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _key(tree, k):
  """`k`, or int(k) where the tree's keys are ints (NNX lists: 'blocks/0/...')."""
  if k not in tree and k.lstrip('-').isdigit() and int(k) in tree:
    return int(k)
  return k


def get_at(tree, keys):
  """The node of nested dict `tree` at `keys` (path segments; '0' finds an int key 0)."""
  for k in keys:
    tree = tree[_key(tree, k)]
  return tree


def _put(tree: dict, keys, value) -> None:
  for k in keys[:-1]:
    tree = tree.setdefault(k, {})
  tree[keys[-1]] = value


def set_at(tree: dict, keys, value) -> dict:
  """A copy of `tree` (copied along `keys` only) with `value` at `keys`."""
  out = dict(tree)
  k = _key(tree, keys[0])
  out[k] = value if len(keys) == 1 else set_at(tree[k], keys[1:], value)
  return out
