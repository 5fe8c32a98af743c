"""Shared parts of the data-stage schemes (LSUV, MetaInit, GradInit): per-tensor scales.

A data-stage scheme gets `params`, the plain nested dict of the model's `nnx.Param` values,
and `ctx.data`, a `DataContext` (`initlab.init.schemes`). MetaInit and GradInit tune one
positive scale per weight tensor; a stacked (scanned) tensor, e.g. the LM's
blocks/mlp/fc1/kernel (layers, in, out), gets one scale per slice of its stacked axes, so
every layer is scaled on its own. Stacked axes come from the params' logical axis names
('layers'), read from the model (`ctx.data.model(params)`): a plain dict has no names.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
from typing import Any, Callable, Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from initlab.init import tree as tree_lib
from initlab.init.schemes import with_stage
from initlab.init.specs import infer_spec

WEIGHT_ROLES = ('kernel', 'embedding')


@dataclasses.dataclass(frozen=True)
class Scaled:
  """One scaled tensor: its param path, shape and stacked axes (one scale per slice)."""

  path: str
  shape: tuple[int, ...]
  batch_axes: tuple[int, ...]

  @property
  def scale_shape(self) -> tuple[int, ...]:
    """Shape of its scale array: the stacked axes' sizes (() for an unstacked tensor)."""
    return tuple(self.shape[a] for a in self.batch_axes)

  def broadcast(self, scale: jax.Array) -> jax.Array:
    """`scale` (scale_shape) reshaped to broadcast against the tensor."""
    return scale.reshape([d if a in self.batch_axes else 1 for a, d in enumerate(self.shape)])


def data_context(ctx, scheme: str):
  """`ctx.data` (the data stage's `DataContext`); a one-line error naming `scheme` if absent."""
  if ctx is None:
    raise ValueError(
      f'init scheme {scheme!r} runs in the data stage and needs ctx.data (a '
      'DataContext with the model, batches and loss); got no context'
    )
  return ctx.require('data', scheme)


def annotated(data, params):
  """`params` as an `nnx.State` of Params carrying the model's logical axis names."""
  return nnx.state(data.model(params), nnx.Param)


def scaled_tensors(data, params, roles: Sequence[str] = WEIGHT_ROLES) -> list[Scaled]:
  """The tensors of `params` whose role (`initlab.init.specs`) is in `roles`, in path order."""
  out = []
  for leaf in tree_lib.leaves(annotated(data, params)):
    spec = infer_spec(leaf.path, leaf.shape, leaf.names)
    if spec.role in roles:
      out.append(Scaled(leaf.path, leaf.shape, spec.batch_axes))
  return out


def ones(tensors: Sequence[Scaled]) -> dict[str, jax.Array]:
  """Scale 1 for every tensor: `{path: ones(scale_shape)}`."""
  return {t.path: jnp.ones(t.scale_shape, jnp.float32) for t in tensors}


def apply_scales(params, tensors: Sequence[Scaled], scales: dict[str, jax.Array]):
  """`params` with each tensor in `tensors` multiplied by its (broadcast) scale."""
  by_path = {t.path: t for t in tensors}

  def visit(leaf):
    t = by_path.get(leaf.path)
    if t is None:
      return leaf.value
    return leaf.value * t.broadcast(scales[t.path]).astype(leaf.value.dtype)

  return tree_lib.map_leaves(visit, params)


def slice_norms(params, tensors: Sequence[Scaled]) -> dict[str, jax.Array]:
  """Frobenius norm of each tensor (of each slice of a stacked one): `{path: scale_shape}`."""
  values = {l.path: l.value for l in tree_lib.leaves(params)}

  def norm(t):
    x = jnp.square(values[t.path].astype(jnp.float32))
    rest = tuple(a for a in range(len(t.shape)) if a not in t.batch_axes)
    return jnp.sqrt(jnp.sum(x, axis=rest))

  return {t.path: norm(t) for t in tensors}


def like(new, old):
  """`new` placed in the shardings of `old` (the params a scheme was given)."""
  return jax.tree.map(
    lambda n, o: jax.device_put(n, o.sharding) if hasattr(o, 'sharding') else n, new, old
  )


def scaled_like(params, tensors: Sequence[Scaled], scales: dict[str, jax.Array]):
  """`apply_scales(params, tensors, scales)`, jitted, in the shardings of `params`."""
  out = jax.jit(lambda p, s: apply_scales(p, tensors, s))(params, scales)
  return like(out, params)


def options_of(factory: Callable, options: dict[str, Any]) -> types.SimpleNamespace:
  """`options` over the defaults of the scheme `factory`, as attributes: a scheme's `run` takes
  the factory's options, so they and their defaults are written once (a TypeError names an
  option the factory does not take)."""
  bound = inspect.signature(factory).bind(**options)
  bound.apply_defaults()
  return types.SimpleNamespace(**bound.arguments)


def stage_scheme(run: Callable, num_batches: int, **options):
  """The data-stage scheme `(key, params, ctx=None) -> params` drawing `num_batches` training
  batches: the params of `run(key, params, ctx, **options)`, which returns `(params, history)`."""

  def scheme(key, params, ctx=None):
    return run(key, params, ctx, **options)[0]

  return with_stage(scheme, 'data', num_batches=num_batches)


def batch_at(batches: Sequence[Any], i: int):
  """Batch `i` of `batches`, cycling."""
  if not batches:
    raise ValueError('the data stage gave no batches (ctx.data.batches is empty)')
  return batches[i % len(batches)]


def check_positive(scheme: str, ints: Sequence[str] = (), **values):
  """A ValueError naming the option when a value is not a finite number > 0 (an int for the
  options named in `ints`)."""
  for name, value in values.items():
    kind = int if name in ints else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if not (ok and value > 0 and math.isfinite(value)):
      what = 'an int' if name in ints else 'a number'
      raise ValueError(f'init scheme {scheme!r}: option {name}={value!r} must be {what} > 0')
