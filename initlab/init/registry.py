"""Name registries for initializers and schemes, so configs can say `init.name = "orthogonal"`.

An initializer factory has the `jax.nn.initializers` shape: `factory(*options, in_axis=...,
out_axis=..., batch_axis=...) -> init(key, shape, dtype)`. Registering it makes
`initlab.init.get_initializer(name, **options)` return a `LayoutInitializer`: a plain
initializer (Flax layout: in = -2, out = -1) that `Rules` re-binds to each param's spec.

A scheme factory returns a `Scheme` — `(key, params, ctx) -> params` — from options.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax.numpy as jnp

from initlab.init.specs import ParamSpec

_LAYOUT_KWARGS = ("in_axis", "out_axis", "batch_axis", "column_axis")
_INITIALIZERS: dict[str, Callable[..., Callable]] = {}
_SCHEMES: dict[str, Callable[..., Callable]] = {}


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
    opts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
    return f"{self.name}({', '.join(opts)})"


def register_initializer(name: str, *aliases: str):
  """Decorator: registers `factory(*options, in_axis, out_axis, batch_axis) -> init` by name."""
  def wrap(factory):
    for n in (name, *aliases):
      if n in _INITIALIZERS:
        raise ValueError(f"initializer name {n!r} is already registered")
      _INITIALIZERS[n] = factory
    return factory
  return wrap


def register_scheme(name: str):
  """Decorator: registers `factory(**options) -> Scheme` by name."""
  def wrap(factory):
    if name in _SCHEMES or name in _INITIALIZERS:
      raise ValueError(f"scheme name {name!r} is already registered")
    _SCHEMES[name] = factory
    return factory
  return wrap


def initializer_names() -> list[str]:
  return sorted(_INITIALIZERS)


def scheme_names() -> list[str]:
  """Every name `get_scheme` accepts: registered schemes and initializers."""
  return sorted(set(_SCHEMES) | set(_INITIALIZERS))


def get_initializer(name: str, *args, **kwargs) -> LayoutInitializer:
  if name not in _INITIALIZERS:
    raise KeyError(f"unknown initializer {name!r}; valid names: {', '.join(initializer_names())}")
  return LayoutInitializer(name, _INITIALIZERS[name], tuple(args), dict(kwargs))


def get_scheme(name: str, **options) -> Callable:
  """The scheme registered as `name`; an initializer name gives a kernel-only `Rules` scheme."""
  if name in _SCHEMES:
    return _SCHEMES[name](**options)
  if name in _INITIALIZERS:
    from initlab.init.rules import Rules  # pylint: disable=g-import-not-at-top
    return Rules([(".*", get_initializer(name, **options))], roles=("kernel",))
  raise KeyError(f"unknown init scheme {name!r}; valid names: {', '.join(scheme_names())}")
