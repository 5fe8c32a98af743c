"""Model-level schemes: `(key, params, ctx) -> params`, composable and registered by name.

A scheme needs more than one tensor's shape: depth (Fixup), graph statistics, a batch and
the apply function (LSUV), pretrained params (learngene). `InitContext` carries those.
A scheme that changes the architecture returns `SchemeResult(params, model_config)`.
Schemes live with their family in `initlab.init.families` (and `initlab.init.gg`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol
import warnings

import jax

from initlab.init import tree as tree_lib


@dataclasses.dataclass(frozen=True)
class InitContext:
  """What a scheme may read besides the params.

  Attributes:
    hints: facts the model states about itself (`model.init_hints()`), e.g.
      'residual_final' (regex of the last layer of every residual branch),
      'residual_branch' (regex of every kernel inside a residual branch), 'classifier'
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


def _name(scheme) -> str:
  return getattr(scheme, "__qualname__", None) or repr(scheme)


def chain(*schemes: Scheme, warn: bool = True) -> Scheme:
  """Applies `schemes` in order; the i-th gets `fold_in(key, i)`.

  A later scheme overwrites what an earlier one set on the same params, so order the
  general before the specific: `chain(ii.get_scheme("he_normal"), ii.Rules([(r".*attn/.*
  kernel", ii.orthogonal())]))` is He everywhere but orthogonal attention. With `warn`,
  a scheme whose every param is rewritten by later ones (it has no effect, e.g.
  `chain(orthogonal, fixup)`: Fixup sets every kernel) raises a UserWarning. A param
  counts as set when the scheme returns a different array object for it.
  """
  def chained(key, params, ctx=None):
    written = []
    for i, scheme in enumerate(schemes):
      before = {l.path: l.value for l in tree_lib.leaves(params)}
      params = scheme(jax.random.fold_in(key, i), params, ctx)
      after = [] if isinstance(params, SchemeResult) else tree_lib.leaves(params)
      written.append({l.path for l in after if before.get(l.path) is not l.value})
    for i, paths in enumerate(written if warn else ()):
      later = set().union(*written[i + 1:])
      if paths and paths <= later:
        warnings.warn(f"chain: every param that scheme {i} ({_name(schemes[i])}) sets is set "
                      f"again by a later scheme, so scheme {i} has no effect; put the general "
                      "scheme first and narrower ones after it", UserWarning, stacklevel=2)
    return params
  return chained
