"""Model-level schemes: `(key, params, ctx) -> params`, composable and registered by name.

A scheme needs more than one tensor's shape: depth (Fixup), graph statistics, a batch and
the apply function (LSUV), pretrained params (learngene). `InitContext` carries those.
A scheme that changes the architecture returns `SchemeResult(params, model_config)`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol

import jax

from initlab.init import initializers  # noqa: F401  (registers the initializer names)
from initlab.init.registry import get_initializer, register_scheme
from initlab.init.rules import Rules


@dataclasses.dataclass(frozen=True)
class InitContext:
  """What a scheme may read besides the params.

  Attributes:
    hints: facts the model states about itself (`model.init_hints()`), e.g.
      'residual_final' (regex of the last layer of every residual branch), 'classifier'
      (regex of the output layer), 'num_branches', 'branch_layers', 'depth'.
    model_config: the model's config, for schemes that rebuild or resize the model.
    batch: an input batch, for data-dependent schemes.
    apply_fn: `apply_fn(params, batch) -> outputs`, for data-dependent schemes.
    pretrained: a pretrained param tree, for schemes that start from one.
    extras: anything else a scheme documents that it reads.
  """
  hints: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  model_config: Any = None
  batch: Any = None
  apply_fn: Callable | None = None
  pretrained: Any = None
  extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def hint(self, name: str, scheme: str):
    if name not in self.hints:
      raise KeyError(f"init scheme {scheme!r} needs the model hint {name!r}; "
                     f"this model gives {sorted(self.hints)} (see the model's init_hints())")
    return self.hints[name]


@dataclasses.dataclass(frozen=True)
class SchemeResult:
  """Returned by schemes that change the architecture."""
  params: Any
  model_config: Any


class Scheme(Protocol):
  def __call__(self, key: jax.Array, params: Any, ctx: InitContext | None = None) -> Any:
    ...


def chain(*schemes: Scheme) -> Scheme:
  """Applies `schemes` in order; the i-th gets `fold_in(key, i)`."""
  def chained(key, params, ctx=None):
    for i, scheme in enumerate(schemes):
      params = scheme(jax.random.fold_in(key, i), params, ctx)
    return params
  return chained


@register_scheme("fixup")
def fixup(gain: float = 2.0 ** 0.5) -> Scheme:
  """Fixup (Zhang, Dauphin & Ma 2019; REFERENCES.md §8): the classifier and the last layer of
  every residual branch are 0; other kernels get He init × L^{-1/(2m-2)}.

  Reads hints 'residual_final', 'classifier', 'num_branches', 'branch_layers'. The scalar
  multipliers and biases of full Fixup are architectural, not part of this scheme.
  """
  def scheme(key, params, ctx=None):
    ctx = ctx or InitContext()
    zeros = jax.nn.initializers.zeros
    rules = Rules([
        (ctx.hint("classifier", "fixup"), zeros),
        (ctx.hint("residual_final", "fixup"), zeros),
        (".*", get_initializer("fixup_scaled", ctx.hint("num_branches", "fixup"),
                               ctx.hint("branch_layers", "fixup"), gain)),
    ], roles=("kernel",))
    return rules(key, params, ctx)
  return scheme


@register_scheme("zero_full")
def zero_full() -> Scheme:
  """ZerO with its residual rule (arXiv 2110.12661): ZerO kernels, and the last layer of every
  residual branch set to 0. Reads hint 'residual_final'."""
  def scheme(key, params, ctx=None):
    ctx = ctx or InitContext()
    rules = Rules([
        (ctx.hint("residual_final", "zero_full"), jax.nn.initializers.zeros),
        (".*", get_initializer("zero")),
    ], roles=("kernel",))
    return rules(key, params, ctx)
  return scheme
