"""LSUV: layer-sequential unit-variance init (Mishkin & Matas 2016, arXiv 1511.06422, Alg. 1).

  1. every kernel gets an orthogonal init (Saxe et al. 2014; convs as (kh·kw·in, out));
  2. then, layer by layer in forward order: measure the variance v of the layer's output
     on the batch and set W ← W / √v, until |v − 1| < tol or `max_iters` rescales.

Normalized layers: every module that holds a `kernel` Param (nnx.Linear, LinearGeneral,
Conv, Einsum, …: the MLP's hidden layers and head, a ResNet's convs and head, a
transformer's patch embedding, query/key/value/out and fc1/fc2 projections and head). The
variance is that of the module's own output (bias added, before any norm, activation or
residual add), over every element of the output on all of `ctx.data.batches`. Biases,
embeddings and norm params are left as they are. The models run in eval mode
(`train=False`: BatchNorm uses its running statistics, 0 and 1 at init).

Capturing each layer's output: while the model runs, each kernel module instance's class is
swapped for a subclass whose `__call__` records the output under its kernel's param path
(in the calling thread's context only). The layer classes themselves are never modified
(unlike `flax.nnx.capture(..., method_outputs=...)`, which instruments the classes), so other
modules and other threads are unaffected. The model runs through its
`stages()` hook (initlab's models: composing them is the forward pass), which for the
scanned LM gives one block per layer holding that layer's slice of the stacked params: slice
i of blocks/mlp/fc1/kernel is normalized on its own ('blocks/mlp/fc1/kernel[i]').
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
import types

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from initlab.init import tree as tree_lib
from initlab.init.families import datastage
from initlab.init.families.orthogonal import orthogonal as orthogonal_init
from initlab.init.registry import register_scheme
from initlab.init.rules import Rules
from initlab.init.schemes import with_stage


def _is_kernel_module(m) -> bool:
  return isinstance(getattr(m, 'kernel', None), nnx.Param)


_RECORDER = contextvars.ContextVar('lsuv_recorder', default=None)
_RECORDING_CLASSES: dict[type, type] = {}
_RECORDING_CLASSES_LOCK = threading.Lock()


def _recording_class(cls: type) -> type:
  """A subclass of `cls` whose `__call__` reports to this context's recorder, if any.

  Made once per class (a Module subclass registers itself with Flax's graph registries, so
  one per call would pile up there). Only instances whose `__class__` `_intercept` swapped
  to it use it; `cls` and its other instances are never touched.
  """
  with _RECORDING_CLASSES_LOCK:
    sub = _RECORDING_CLASSES.get(cls)
    if sub is not None:
      return sub

    def __call__(self, *args, **kwargs):
      call = super(sub, self).__call__
      recorder = _RECORDER.get()
      return call(*args, **kwargs) if recorder is None else recorder(self, call, args, kwargs)

    kwds = {'pytree': cls._pytree__is_pytree} if hasattr(cls, '_pytree__is_pytree') else {}
    namespace = {
      '__call__': __call__,
      '__module__': cls.__module__,
      '__qualname__': cls.__qualname__,
    }
    sub = types.new_class(cls.__name__, (cls,), kwds, lambda ns: ns.update(namespace))
    _RECORDING_CLASSES[cls] = sub
    return sub


@contextlib.contextmanager
def _intercept(modules, units: dict[int, tuple[str, int | None]]):
  """Records `(unit, output)` of every call of a module in `units` (id -> unit) in order.

  Each module instance's `__class__` is swapped to its class's `_recording_class` for the
  duration (and restored after), and the recorder is set in this thread's context only: no
  class is modified, so other modules and other threads' calls run and are not recorded.
  """
  record, active = [], set()

  def recorder(module, call, args, kwargs):
    key = id(module)
    if key not in units or key in active:
      return call(*args, **kwargs)
    active.add(key)
    try:
      out = call(*args, **kwargs)
    finally:
      active.discard(key)
    record.append((units[key], out))
    return out

  swapped = {id(m): (m, type(m)) for m in modules}
  token = _RECORDER.set(recorder)
  try:
    for m, cls in swapped.values():
      object.__setattr__(m, '__class__', _recording_class(cls))
    yield record
  finally:
    for m, cls in swapped.values():
      object.__setattr__(m, '__class__', cls)
    _RECORDER.reset(token)


def _stages(model):
  return model.stages(train=False) if hasattr(model, 'stages') else [('model', model)]


def layer_outputs(model, x) -> tuple[jax.Array, list[tuple[tuple[str, int | None], jax.Array]]]:
  """Runs `model` on `x` (eval mode) through its stages; returns (logits, [(unit, output)]).

  A unit is (kernel param path, slice index or None): the output of the module holding that
  kernel, in call order. Modules of a stage that is not part of `model`'s graph (the LM's
  per-layer copies of its stacked blocks, stage 'blocks/i') map to slice i of the stacked
  params under the stage name's prefix.
  """
  stages = _stages(model)
  units, modules = {}, []
  for path, m in nnx.iter_modules(model):
    if _is_kernel_module(m):
      units[id(m)] = ('/'.join(map(str, path + ('kernel',))), None)
      modules.append(m)
  inside = {id(m) for _, m in nnx.iter_modules(model)}
  for name, fn in stages:
    if isinstance(fn, nnx.Module) and id(fn) not in inside:
      prefix, _, index = name.rpartition('/')
      if not index.isdigit():
        raise ValueError(
          f'lsuv: stage {name!r} holds a copy of stacked layers but is not '
          "named '<prefix>/<layer index>'"
        )
      for path, m in nnx.iter_modules(fn):
        if _is_kernel_module(m):
          units[id(m)] = ('/'.join((prefix,) + tuple(map(str, path)) + ('kernel',)), int(index))
          modules.append(m)
  with _intercept(modules, units) as record:
    for _, fn in stages:
      x = fn(x)
  return x, record


def _pooled(parts):
  """Variance of the union of parts [(count, mean, variance)]: Σ n (var + (mean − m)²) / N,
  m the pooled mean (no E[y²] − E[y]² cancellation)."""
  total = sum(n for n, _, _ in parts)
  mean = sum(n * m for n, m, _ in parts) / total
  return sum(n * (v + jnp.square(m - mean)) for n, m, v in parts) / total


def unit_name(unit) -> str:
  path, index = unit
  return path if index is None else f'{path}[{index}]'


def _plan(data, params):
  """The units in forward order and, per kernel path, the unit index of each slice."""
  units = []

  def run(p):
    logits, record = layer_outputs(data.model(p), data.inputs(data.batches[0]))
    units.extend(unit for unit, _ in record)
    return logits

  jax.eval_shape(run, params)
  order = list(dict.fromkeys(units))
  if not order:
    raise ValueError("lsuv: the model ran no module holding a 'kernel' param; nothing to normalize")
  slices = {}
  for u, (path, index) in enumerate(order):
    slices.setdefault(path, {})[index] = u
  return order, slices


def _scaled_params(params, slices, scales):
  """params with kernel `path` (slice i) multiplied by scales[unit index]."""
  index = {
    p: sorted(s.items(), key=lambda kv: -1 if kv[0] is None else kv[0]) for p, s in slices.items()
  }

  def visit(leaf):
    if leaf.path not in index:
      return leaf.value
    entries = index[leaf.path]
    if entries[0][0] is None:
      return leaf.value * scales[entries[0][1]].astype(leaf.value.dtype)
    if [i for i, _ in entries] != list(range(leaf.shape[0])):
      raise ValueError(
        f'lsuv: the stages ran slices {[i for i, _ in entries]} of stacked '
        f'{leaf.path!r} (shape {leaf.shape}); every slice must run once'
      )
    s = jnp.stack([scales[u] for _, u in entries]).astype(leaf.value.dtype)
    return leaf.value * s.reshape((-1,) + (1,) * (leaf.value.ndim - 1))

  return tree_lib.map_leaves(visit, params)


def output_variances(data, params, batches=None) -> dict[str, float]:
  """Variance of every kernel layer's output over `batches` (default: the context's).

  Keys are `unit_name`s: the kernel path, with '[i]' for slice i of a stacked kernel.
  """
  batches = tuple(data.batches if batches is None else batches)
  order, slices = _plan(data, params)
  variances = _variance_fn(data, order, slices)
  v = np.asarray(variances(params, jnp.ones(len(order)), batches))
  return {unit_name(u): float(x) for u, x in zip(order, v)}


def _variance_fn(data, order, slices):
  def variances(params, scales, batches):
    params = _scaled_params(params, slices, scales)
    parts = {u: [] for u in order}
    for batch in batches:
      _, record = layer_outputs(data.model(params), data.inputs(batch))
      for unit, y in record:
        y = y.astype(jnp.float32)
        parts[unit].append((y.size, jnp.mean(y), jnp.var(y)))
    return jnp.stack([_pooled(parts[u]) for u in order])

  return jax.jit(variances)


@register_scheme(
  'lsuv',
  description="LSUV: orthogonal, then each layer's output variance "
  'scaled to 1 on a batch, in forward order (Mishkin & Matas 2016)',
)
def lsuv(tol: float = 0.1, max_iters: int = 10, orthogonal: bool = True, num_batches: int = 1):
  """Layer-sequential unit-variance init (arXiv 1511.06422, Algorithm 1); data stage.

  Args:
    tol: stop rescaling a layer when |Var(output) − 1| < tol (the paper's 0.1).
    max_iters: at most this many rescales per layer (the paper's 10).
    orthogonal: first give every kernel an orthogonal init (step 1); False starts from the
      params the param stage made.
    num_batches: training batches the variances are measured on (`ctx.data.batches`).
  Layers, outputs and stacked params: see the module docstring. A layer whose output has
  zero or non-finite variance raises a ValueError naming it.
  """
  datastage.check_positive(
    'lsuv', ('max_iters', 'num_batches'), tol=tol, max_iters=max_iters, num_batches=num_batches
  )

  def scheme(key, params, ctx=None):
    data = datastage.data_context(ctx, 'lsuv')
    given = params
    if orthogonal:
      rules = Rules([('.*', orthogonal_init())], roles=('kernel',))
      params = jax.jit(lambda k, p: rules(k, datastage.annotated(data, p)).to_pure_dict())(
        key, params
      )
    order, slices = _plan(data, params)
    variances = _variance_fn(data, order, slices)
    batches = tuple(data.batches)
    scales, current = np.ones(len(order), np.float32), None
    for u in range(len(order)):
      for _ in range(max_iters):
        if current is None:  # All layers' variances under the current scales.
          current = np.asarray(variances(params, jnp.asarray(scales), batches))
        v = float(current[u])
        if not (math.isfinite(v) and v > 0):
          raise ValueError(
            f'lsuv: layer {unit_name(order[u])!r} has output variance {v} on '
            'the batch; cannot scale it to 1'
          )
        if abs(v - 1.0) < tol:
          break
        scales[u] /= math.sqrt(v)
        current = None
    out = jax.jit(lambda p, s: _scaled_params(p, slices, s))(params, jnp.asarray(scales))
    return datastage.like(out, given)

  return with_stage(scheme, 'data', num_batches=num_batches)
