"""Name registries for initializers and schemes, so configs can say `init.name = "orthogonal"`.

An initializer factory has the `jax.nn.initializers` shape: `factory(*options, in_axis=...,
out_axis=..., batch_axis=...) -> init(key, shape, dtype)`. `register_initializer(name)`
records it and returns its public form: a factory with the same options whose result is a
`LayoutInitializer`, a plain initializer (Flax layout: in = -2, out = -1) that `Rules`
re-binds to each param's spec. `get_initializer(name, **options)` gives the same object.

A scheme factory returns a `Scheme` — `(key, params, ctx) -> params` — from options.

Every name has a one-line description (`description=`, else the factory docstring's first
line): `describe()`, `scheme_table()`, `python -m initlab.init --list`.

Registering a name again replaces the entry (re-running a notebook cell that registers a
scheme must work); it warns when the new factory is defined elsewhere than the old one.
An initializer and a scheme may not share a name.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping
import warnings

import jax.numpy as jnp

from initlab.init.specs import ParamSpec

_LAYOUT_KWARGS = ('in_axis', 'out_axis', 'batch_axis', 'column_axis')
_INITIALIZERS: dict[str, Callable[..., Callable]] = {}
_SCHEMES: dict[str, Callable[..., Callable]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_RENAMED: dict[str, str] = {}  # old config name -> current name (looked up with a warning)


@dataclasses.dataclass(frozen=True)
class LayoutInitializer:
  """A `jax.nn.initializers` initializer whose fan axes come from a `ParamSpec`.

  Called directly, `init(key, shape, dtype)`, it uses the factory's default (Flax) layout;
  `init.bind(spec)` gives the initializer for a param with that spec. Axis kwargs given
  explicitly at construction are kept as given and never re-bound.
  """

  name: str
  factory: Callable[..., Callable]
  args: tuple = ()
  kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def layout_fixed(self) -> bool:
    return any(k in self.kwargs for k in _LAYOUT_KWARGS)

  def bind(self, spec: ParamSpec | None) -> Callable:
    if spec is None or self.layout_fixed:
      return self.factory(*self.args, **self.kwargs)
    return self.factory(*self.args, **spec.jax_axes(), **self.kwargs)

  def __call__(self, key, shape, dtype=jnp.float32):
    return self.bind(None)(key, shape, dtype)

  def __repr__(self):
    opts = [repr(a) for a in self.args] + [f'{k}={v!r}' for k, v in self.kwargs.items()]
    return f'{self.name}({", ".join(opts)})'


def _first_line(factory, description: str | None) -> str:
  if description:
    return description
  doc = (getattr(factory, '__doc__', None) or '').strip()
  return doc.splitlines()[0].strip() if doc else ''


def _origin(factory) -> tuple[str, str]:
  return getattr(factory, '__module__', ''), getattr(factory, '__qualname__', repr(factory))


def _add(
  table: dict, other: dict, kind: str, other_kind: str, name: str, factory, description: str | None
):
  if name in other:
    raise ValueError(
      f'cannot register {kind} {name!r}: {name!r} is already a registered '
      f'{other_kind}, and an initializer and a scheme cannot share a name'
    )
  if name in table and _origin(table[name]) != _origin(factory):
    warnings.warn(
      f'{kind} {name!r} was already registered by {".".join(_origin(table[name]))}; '
      f'replacing it with {".".join(_origin(factory))}',
      stacklevel=3,
    )
  table[name] = factory
  _DESCRIPTIONS[name] = _first_line(factory, description)
  _RENAMED.pop(name, None)


def register_initializer(name: str, *aliases: str, description: str | None = None):
  """Decorator: registers `factory(*options, in_axis, out_axis, batch_axis) -> init` by name.

  Returns the public factory: same options, returns a `LayoutInitializer` (callable as
  `init(key, shape, dtype)`); the raw factory stays reachable as `.raw`.
  """

  def wrap(factory):
    for n in (name, *aliases):
      _add(_INITIALIZERS, _SCHEMES, 'initializer', 'scheme', n, factory, description)
    for alias in aliases:
      _DESCRIPTIONS[alias] = f'alias of {name}: {_DESCRIPTIONS[name]}'

    @functools.wraps(factory)
    def make(*args, **kwargs) -> LayoutInitializer:
      return LayoutInitializer(name, factory, tuple(args), dict(kwargs))

    make.raw = factory
    return make

  return wrap


def register_scheme(name: str, description: str | None = None):
  """Decorator: registers `factory(**options) -> Scheme` by name; returns `factory`."""

  def wrap(factory):
    _add(_SCHEMES, _INITIALIZERS, 'scheme', 'initializer', name, factory, description)
    return factory

  return wrap


def rename(old: str, new: str):
  """Keeps `old` as a config name for `new`: looking it up works and emits a FutureWarning."""
  _RENAMED[old] = new


def _resolve(name: str) -> str:
  if name in _RENAMED and name not in _INITIALIZERS and name not in _SCHEMES:
    warnings.warn(
      f'init name {name!r} is renamed to {_RENAMED[name]!r}; the old name will go',
      FutureWarning,
      stacklevel=3,
    )
    return _RENAMED[name]
  return name


def initializer_names() -> list[str]:
  return sorted(_INITIALIZERS)


def scheme_names() -> list[str]:
  """Every name `get_scheme` accepts: registered schemes and initializers."""
  return sorted(set(_SCHEMES) | set(_INITIALIZERS))


def get_initializer(name: str, *args, **kwargs) -> LayoutInitializer:
  name = _resolve(name)
  if name not in _INITIALIZERS:
    raise KeyError(f'unknown initializer {name!r}; valid names: {", ".join(initializer_names())}')
  return LayoutInitializer(name, _INITIALIZERS[name], tuple(args), dict(kwargs))


def get_scheme(name: str, **options) -> Callable:
  """The scheme registered as `name`; an initializer name gives a kernel-only `Rules` scheme."""
  name = _resolve(name)
  if name in _SCHEMES:
    return _SCHEMES[name](**options)
  if name in _INITIALIZERS:
    from initlab.init.rules import Rules  # pylint: disable=g-import-not-at-top

    return Rules([('.*', get_initializer(name, **options))], roles=('kernel',))
  raise KeyError(f'unknown init scheme {name!r}; valid names: {", ".join(scheme_names())}')


def describe(name: str | None = None) -> str | dict[str, str]:
  """The one-line description of `name`, or `{name: description}` for every registered name."""
  if name is None:
    return {n: _DESCRIPTIONS.get(n, '') for n in scheme_names()}
  resolved = _resolve(name)
  if resolved not in _INITIALIZERS and resolved not in _SCHEMES:
    raise KeyError(f'unknown init name {name!r}; valid names: {", ".join(scheme_names())}')
  return _DESCRIPTIONS.get(resolved, '')


def scheme_table() -> str:
  """One line per name: name, kind (initializer: kernels only by name; scheme), description."""
  names = scheme_names()
  width = max(map(len, names))
  kind = lambda n: 'scheme' if n in _SCHEMES else 'initializer'
  return '\n'.join(f'{n:<{width}}  {kind(n):<11}  {_DESCRIPTIONS.get(n, "")}' for n in names)
