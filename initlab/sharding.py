"""Where arrays live: the mesh, logical-axis rules, param / state / batch shardings.

    mesh = make_mesh((("data", -1), ("model", 1)))       # or make_mesh(config): config.mesh
    rules = logical_axis_rules("fsdp")                   # or axis_rules(config.sharding)
    shardings = state_shardings(abstract_state, mesh, rules)
    batch = batch_sharding(mesh)                         # leading axis over the batch axes

Used by sharded init (`initlab.init`), the zoo (`initlab.models` re-exports the presets) and
training (`initlab.train`), so a sharding decision is made in one place.

Presets assume mesh axes named 'data' (batch / FSDP) and 'model' (tensor parallel). Meshes
have `Auto` axis types: XLA then partitions an init program from its out_shardings, so each
device draws only its own shard of random numbers (on `Explicit` axes, JAX 0.10's
`jax.make_mesh` default, values created inside the program would come out replicated).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AxisRules = Sequence[tuple[str, str | tuple[str, ...] | None]]

# Param axes: 'layers' = stacked (scanned) layers, 'embed' = model width, 'mlp' = MLP hidden,
# 'heads'/'kv' = attention heads/head dim, 'vocab', 'classes', 'conv_in'/'conv_out' = conv
# channels. Activation axis: 'batch'.
LOGICAL_AXES = (
  'batch',
  'layers',
  'embed',
  'mlp',
  'heads',
  'kv',
  'vocab',
  'classes',
  'conv_in',
  'conv_out',
)
BATCH_AXES = ('data', 'fsdp', 'replica')  # Mesh axes that split the batch, when present.

_SHARDED = {
  # Params replicated, batch split over 'data'.
  'data_parallel': {'batch': 'data'},
  # FSDP: each param's model-width axis ('embed'; 'conv_out' for convs) split over 'data'.
  'fsdp': {'batch': 'data', 'embed': 'data', 'conv_out': 'data'},
  # Megatron-style tensor parallelism over 'model', batch over 'data'.
  'tensor_parallel': {'batch': 'data', 'mlp': 'model', 'heads': 'model', 'vocab': 'model'},
}
PRESETS = tuple(_SHARDED)
AUTO = 'auto'  # `fsdp_axis` value: decided by `default_fsdp_axis(mesh, axis_rules)`.


def logical_axis_rules(preset: str) -> tuple[tuple[str, str | None], ...]:
  """((logical_name, mesh_axis or None), ...) for `preset` in PRESETS, one per LOGICAL_AXES.

  Usable with `flax.nnx.logical_axis_rules(...)` and `flax.linen.logical_to_mesh_sharding`
  (every name has a rule: Flax would pass an unmapped name through as a mesh axis name).
  """
  if preset not in _SHARDED:
    raise ValueError(f'sharding preset {preset!r} is unknown; valid: {PRESETS}')
  return tuple((name, _SHARDED[preset].get(name)) for name in LOGICAL_AXES)


def axis_rules(sharding: str | AxisRules) -> tuple[tuple[str, Any], ...]:
  """The rules of `config.sharding`: a preset name, or explicit (logical, mesh axis) pairs
  (a list of mesh axes becomes a tuple)."""
  if isinstance(sharding, str):
    return logical_axis_rules(sharding)
  return tuple((name, tuple(axis) if isinstance(axis, list) else axis) for name, axis in sharding)


def mesh_shape(
  axes: Sequence[Sequence[Any]], num_devices: int, *, where: str = 'mesh'
) -> dict[str, int]:
  """`{axis: size}` of `(name, size)` pairs on `num_devices` devices (-1 = the rest).

  Raises ValueError '<where>: expected ...' for malformed pairs, repeated names, or sizes
  that do not fit `num_devices`.
  """

  def check(ok, expected):
    if not ok:
      raise ValueError(f'{where}: expected {expected}.')

  check(
    isinstance(axes, (tuple, list))
    and axes
    and all(
      isinstance(a, (tuple, list))
      and len(a) == 2
      and isinstance(a[0], str)
      and isinstance(a[1], int)
      and not isinstance(a[1], bool)
      for a in axes
    ),
    f'a tuple of (axis name, size) pairs such as (("data", -1), ("model", 1)), got {axes!r}',
  )
  names, sizes = [a[0] for a in axes], [a[1] for a in axes]
  check(len(set(names)) == len(names), f'distinct axis names, got {names}')
  check(
    all(s == -1 or s >= 1 for s in sizes) and sizes.count(-1) <= 1,
    f'sizes >= 1 with at most one -1, got {sizes}',
  )
  known = math.prod(s for s in sizes if s != -1)
  fits = f'; {tuple(map(tuple, axes))} does not fit {num_devices} devices'
  if -1 in sizes:
    check(
      num_devices % known == 0,
      f'fixed axis sizes (product {known}) that divide the {num_devices} devices{fits}',
    )
    sizes = [num_devices // known if s == -1 else s for s in sizes]
  check(
    math.prod(sizes) == num_devices,
    f'axis sizes whose product is the number of devices ({num_devices}), got {sizes}{fits}',
  )
  return dict(zip(names, sizes))


def make_mesh(axes: Any = (('data', -1), ('model', 1)), devices=None) -> Mesh:
  """The mesh of `(name, size)` pairs (or of a config's `config.mesh`) over `devices`
  (default: all), with `Auto` axis types; one size may be -1 ("the rest")."""
  axes = getattr(axes, 'mesh', axes)
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(axes, len(devices))
  return jax.make_mesh(
    tuple(shape.values()), tuple(shape), devices=devices, axis_types=(AxisType.Auto,) * len(shape)
  )


def as_auto_mesh(mesh: Mesh) -> Mesh:
  """The same devices and axis names with `Auto` axis types."""
  if all(t == AxisType.Auto for t in mesh.axis_types):
    return mesh
  return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def batch_axes(mesh: Mesh | Mapping[str, int]) -> tuple[str, ...]:
  """The mesh axes that split the batch: those of BATCH_AXES present in the mesh."""
  shape = mesh.shape if isinstance(mesh, Mesh) else mesh
  return tuple(a for a in BATCH_AXES if a in shape)


def default_fsdp_axis(mesh: Mesh | Mapping[str, int], axis_rules: AxisRules) -> str | None:
  """Mesh axis of the params (and other variables) that name no logical axis.

  The mesh's first batch axis, unless `axis_rules` place no param axis on the mesh (only
  'batch' is mapped: data parallelism), then None (replicated): such params follow the rest
  of the model. The one rule of `sharded_init`, `Setup.create` and config-driven runs.
  """
  if all(axis is None or name == 'batch' for name, axis in axis_rules):
    return None
  axes = batch_axes(mesh)
  return axes[0] if axes else None


def _mesh_axis_size(mesh: Mesh, axis) -> int:
  return math.prod(mesh.shape[a] for a in (axis if isinstance(axis, tuple) else (axis,)))


def logical_to_mesh_spec(
  names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, axis_rules: AxisRules
) -> PartitionSpec:
  """Maps logical axis names to mesh axes: the first rule for a name whose mesh axes are
  unused and divide the dimension wins; otherwise that dimension is replicated."""
  used: set[str] = set()
  spec = []
  for name, dim in zip(names, shape):
    choice = None
    for logical, mesh_axis in axis_rules:
      if logical != name or mesh_axis is None:
        continue
      axes = mesh_axis if isinstance(mesh_axis, tuple) else (mesh_axis,)
      if used.isdisjoint(axes) and dim % _mesh_axis_size(mesh, mesh_axis) == 0:
        choice = mesh_axis
        used.update(axes)
        break
    spec.append(choice)
  return PartitionSpec(*spec)


def fsdp_spec(shape: Sequence[int], mesh: Mesh, axis: str | None) -> PartitionSpec:
  """Shards the largest dimension divisible by the `axis` size; replicates small params
  (fewer than 2 elements per device) and everything when `axis` is None."""
  size = mesh.shape.get(axis, 1) if axis is not None else 1
  if size == 1 or math.prod(shape) < 2 * size:
    return PartitionSpec()
  for d in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[d] % size == 0:
      return PartitionSpec(*[axis if i == d else None for i in range(len(shape))])
  return PartitionSpec()


def state_shardings(
  abstract_state: Any, mesh: Mesh, axis_rules: AxisRules, *, fsdp_axis: str | None = AUTO
) -> Any:
  """A `NamedSharding` per leaf of `abstract_state` (boxes kept): from the leaf's logical
  names via `axis_rules`; leaves without names are FSDP-sharded over `fsdp_axis` (None:
  replicated; AUTO: `default_fsdp_axis(mesh, axis_rules)`)."""
  from initlab.init import tree as tree_lib  # pylint: disable=g-import-not-at-top

  if fsdp_axis == AUTO:
    fsdp_axis = default_fsdp_axis(mesh, axis_rules)

  def visit(leaf: tree_lib.Leaf):
    if leaf.names is not None:
      return NamedSharding(mesh, logical_to_mesh_spec(leaf.names, leaf.shape, mesh, axis_rules))
    return NamedSharding(mesh, fsdp_spec(leaf.shape, mesh, fsdp_axis))

  return tree_lib.map_leaves(visit, abstract_state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the mesh's batch axes (BATCH_AXES)."""
  axes = batch_axes(mesh)
  return NamedSharding(mesh, PartitionSpec(axes if axes else None))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())
