"""Sharded init: build a model abstractly, derive param shardings, initialize under `jax.jit`.

    model = create_sharded(lambda rngs: build(cfg, rngs=rngs), mesh=mesh,
                           axis_rules=rules, key=key, scheme=get_scheme("orthogonal"))

Construction and the scheme run inside one `jax.jit(..., out_shardings=...)`, so each
device computes only its own shards and no host holds the whole model (REFERENCES.md §9).
With partitionable threefry (JAX's default) the values do not depend on the mesh.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from initlab.init import tree as tree_lib
from initlab.init.schemes import InitContext, SchemeResult

AxisRules = Sequence[tuple[str, str | tuple[str, ...] | None]]


def make_mesh(axes: Sequence[tuple[str, int]] = (("data", -1), ("model", 1)), devices=None) -> Mesh:
  """A mesh from `(name, size)` pairs, one size may be -1 ("the rest"); axes are `Auto`.

  Auto (not Explicit) axes let XLA partition the init program from its out_shardings, so
  each device generates only its own shard of random numbers.
  """
  devices = list(jax.devices() if devices is None else devices)
  names = tuple(n for n, _ in axes)
  sizes = [int(s) for _, s in axes]
  known = math.prod(s for s in sizes if s != -1)
  if sizes.count(-1) > 1 or len(devices) % known:
    raise ValueError(f"mesh {tuple(axes)} does not fit {len(devices)} devices "
                     "(at most one size may be -1 and the others must divide the device count)")
  sizes = [len(devices) // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh {tuple(axes)} has {math.prod(sizes)} devices, but {len(devices)} are given")
  return jax.make_mesh(tuple(sizes), names, devices=devices, axis_types=(AxisType.Auto,) * len(names))


def as_auto_mesh(mesh: Mesh) -> Mesh:
  """The same devices and axis names with `Auto` axis types."""
  if all(t == AxisType.Auto for t in mesh.axis_types):
    return mesh
  return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def abstract_model(model_fn: Callable[[nnx.Rngs], nnx.Module]):
  """(graphdef, abstract state) of `model_fn(rngs)` without allocating any param."""
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: model_fn(nnx.Rngs(0)))
  return nnx.split(model)


def _mesh_axis_size(mesh: Mesh, axis) -> int:
  axes = axis if isinstance(axis, tuple) else (axis,)
  return math.prod(mesh.shape[a] for a in axes)


def logical_to_mesh_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                         axis_rules: AxisRules) -> PartitionSpec:
  """Maps logical axis names to mesh axes: first rule for a name whose mesh axes are unused
  and divide the dimension wins; otherwise that dimension is replicated."""
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


def fsdp_spec(shape: Sequence[int], mesh: Mesh, axis: str = "data") -> PartitionSpec:
  """Shards the largest dimension divisible by the `axis` size; replicates small params."""
  size = mesh.shape.get(axis, 1)
  if size == 1 or math.prod(shape) < 2 * size:
    return PartitionSpec()
  dims = sorted(range(len(shape)), key=lambda d: -shape[d])
  for d in dims:
    if shape[d] % size == 0:
      return PartitionSpec(*[axis if i == d else None for i in range(len(shape))])
  return PartitionSpec()


def state_shardings(abstract_state: Any, mesh: Mesh, axis_rules: AxisRules, *,
                    fsdp_axis: str | None = "data") -> Any:
  """A `NamedSharding` per leaf: from logical names via `axis_rules`; params without names
  are FSDP-sharded over `fsdp_axis` (None: replicated)."""
  def visit(leaf: tree_lib.Leaf):
    if leaf.names is not None:
      spec = logical_to_mesh_spec(leaf.names, leaf.shape, mesh, axis_rules)
    elif fsdp_axis is not None:
      spec = fsdp_spec(leaf.shape, mesh, fsdp_axis)
    else:
      spec = PartitionSpec()
    return NamedSharding(mesh, spec)
  return tree_lib.map_leaves(visit, abstract_state)


def sharded_init(model_fn: Callable[[nnx.Rngs], nnx.Module], *, mesh: Mesh, axis_rules: AxisRules,
                 scheme: Callable | None = None, ctx: InitContext | None = None,
                 fsdp_axis: str | None = "data"):
  """The jitted init program: returns `(graphdef, init, shardings)` with `init(key) -> state`.

  Args:
    model_fn: `rngs -> nnx.Module`; must not depend on concrete values.
    mesh, axis_rules: where params live; logical names come from the variables' metadata.
    scheme: optional `(key, params, ctx) -> params` applied to the `nnx.Param` state.
    ctx: passed to the scheme; by default its `hints` are `model.init_hints()` if defined.
    fsdp_axis: mesh axis for params that name no logical axes (None: replicate them).
  Construction gets `fold_in(key, 0)`, the scheme `fold_in(key, 1)`. Call `init` (or
  `init.lower(key)`) under `jax.set_mesh(mesh)`.
  """
  mesh = as_auto_mesh(mesh)
  graphdef, abstract_state = abstract_model(model_fn)
  shardings = state_shardings(abstract_state, mesh, axis_rules, fsdp_axis=fsdp_axis)

  def init(key):
    with nnx.use_eager_sharding(False):
      model = model_fn(nnx.Rngs(jax.random.fold_in(key, 0)))
    if scheme is not None:
      context = ctx
      if context is None:
        hints = model.init_hints() if hasattr(model, "init_hints") else {}
        context = InitContext(hints=hints)
      params = scheme(jax.random.fold_in(key, 1), nnx.state(model, nnx.Param), context)
      if isinstance(params, SchemeResult):
        raise ValueError("a scheme that changes the architecture returns a new model config; "
                         "apply it before building the model, not inside sharded init")
      nnx.update(model, params)
    return nnx.state(model)

  return graphdef, jax.jit(init, out_shardings=shardings), shardings


def create_sharded(model_fn: Callable[[nnx.Rngs], nnx.Module], *, mesh: Mesh, axis_rules: AxisRules,
                   key: jax.Array, scheme: Callable | None = None, ctx: InitContext | None = None,
                   fsdp_axis: str | None = "data") -> nnx.Module:
  """`model_fn(rngs)` with every param created directly in its sharding (see `sharded_init`)."""
  graphdef, init, _ = sharded_init(model_fn, mesh=mesh, axis_rules=axis_rules, scheme=scheme,
                                   ctx=ctx, fsdp_axis=fsdp_axis)
  return nnx.merge(graphdef, init(key))
