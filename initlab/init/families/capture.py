"""Which inputs and outputs each kernel-holding module sees while a model runs (no hooks
in the model code): LSUV reads the outputs, LoRA inits (CorDA, EVA) the inputs.

    logits, record = layer_outputs(model, x)          # [((kernel path, slice), output)]
    logits, record = layer_outputs(model, x, what='input')

Capturing: while the model runs, each kernel module instance's class is swapped for a
subclass whose `__call__` records under its kernel's param path (in the calling thread's
context only). The layer classes themselves are never modified (unlike
`flax.nnx.capture(..., method_outputs=...)`, which instruments the classes), so other modules
and other threads are unaffected. The model runs through its `stages()` hook (initlab's
models: composing them is the forward pass), which for the scanned LM gives one block per
layer holding that layer's slice of the stacked params (unit ('blocks/mlp/fc1/kernel', i)).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import types

from flax import nnx
import jax

WHAT = ('output', 'input')


def _is_kernel_module(m) -> bool:
  return isinstance(getattr(m, 'kernel', None), nnx.Param)


_RECORDER = contextvars.ContextVar('capture_recorder', default=None)
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
def _intercept(modules, units: dict[int, tuple[str, int | None]], what: str = 'output'):
  """Records `(unit, output)` (`what='input'`: its first argument) of every call of a
  module in `units` (id -> unit) in order.

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
    record.append((units[key], out if what == 'output' else args[0]))
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


def layer_outputs(
  model, x, what: str = 'output'
) -> tuple[jax.Array, list[tuple[tuple[str, int | None], jax.Array]]]:
  """Runs `model` on `x` (eval mode) through its stages; returns (logits, [(unit, output)])
  (`what='input'`: the input each module got).

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
          f"stage {name!r} holds a copy of stacked layers but is not named '<prefix>/<layer index>'"
        )
      for path, m in nnx.iter_modules(fn):
        if _is_kernel_module(m):
          units[id(m)] = ('/'.join((prefix,) + tuple(map(str, path)) + ('kernel',)), int(index))
          modules.append(m)
  if what not in WHAT:
    raise ValueError(f'layer_outputs: what={what!r}; valid: {WHAT}')
  with _intercept(modules, units, what) as record:
    for _, fn in stages:
      x = fn(x)
  return x, record
