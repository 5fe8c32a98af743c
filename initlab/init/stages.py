"""The staged init of a run: architecture, param and data stage (what `initlab.train` runs).

    plan = stages.plan(scheme)                    # splits a (chained) scheme by stage
    model_config = stages.resize(plan, model_config, ctx)    # 1. architecture stage
    ... Setup.create(build(model_config), scheme=plan.param, pretrained=...)   # 2. param stage
    params = stages.run_data_stage(plan, key, params, ctx)    # 3. data stage

1. architecture: every part's `resize(model_config, ctx) -> model_config`, in order, before
   the model is built; a param-stage scheme may also return `SchemeResult(params,
   model_config)` (seen while tracing the init: `initlab.init.ArchitectureChange`), and the
   run then builds that model from the scheme's params.
2. param: the param-stage parts inside the jitted, sharded init (`initlab.init.init_fn`):
   `ctx.hints`, `ctx.dataset`, `ctx.model_config`, `ctx.pretrained`.
3. data: the data-stage parts, in order, after the init, with `ctx.data` (a `DataContext`
   over training batches drawn with their own seed); their params are re-placed into the
   param shardings.

A chain's part i gets `fold_in(key, i)` in every stage, as when the chain is called directly.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import jax
import numpy as np

from initlab.errors import ConfigError
from initlab.init import registry
from initlab.init import tree as tree_lib
from initlab.init.schemes import InitContext, stage_of

DATA_SEED_SALT = 0xDA7A  # Data-stage batches: seed = hash(seeds.data, DATA_SEED_SALT).


def _name(scheme) -> str:
  return getattr(scheme, '__qualname__', None) or type(scheme).__name__


def _parts(scheme, path=()):
  """(index path, scheme) of every part of a (nested) chain, in order."""
  inner = getattr(scheme, 'stages', None)
  if inner is None:
    yield path, scheme
    return
  for i, part in enumerate(inner):
    yield from _parts(part, path + (i,))


def _fold(key, path):
  for i in path:
    key = jax.random.fold_in(key, i)
  return key


@dataclasses.dataclass(frozen=True)
class Plan:
  """A scheme split by stage.

  Attributes:
    scheme: the whole scheme.
    resizes: the architecture-stage functions `resize(model_config, ctx)`, in order.
    param: the param-stage scheme (the whole scheme if it has no data part), or None.
    data: ((index path, scheme), ...) of the data-stage parts, in order.
    num_batches: training batches the data stage draws (max of the parts' `num_batches`).
  """

  scheme: Callable
  resizes: tuple
  param: Callable | None
  data: tuple
  num_batches: int


def plan(scheme: Callable | None) -> Plan:
  """Splits `scheme` (maybe a chain across stages) into its stages."""
  if scheme is None:
    return Plan(None, (), None, (), 0)
  parts = list(_parts(scheme))
  resizes = tuple(p.resize for _, p in parts if getattr(p, 'resize', None) is not None)
  data = tuple((path, p) for path, p in parts if stage_of(p) == 'data')
  for path, p in data:
    later = [q for qpath, q in parts if qpath > path and stage_of(q) != 'data']
    if later:
      raise ValueError(
        f'init scheme {_name(later[0])} runs in the param stage but comes after '
        f'{_name(p)}, a data-stage scheme; put param-stage schemes first'
      )
  if not data:
    param = scheme
  else:
    param_parts = [(path, p) for path, p in parts if stage_of(p) != 'data']

    def param(key, params, ctx=None):
      for path, p in param_parts:
        params = p(_fold(key, path), params, ctx)
      return params

    param = param if param_parts else None
  num_batches = max([int(getattr(p, 'num_batches', 1)) for _, p in data], default=0)
  return Plan(scheme, resizes, param, data, num_batches)


def resize(p: Plan, model_config, ctx: InitContext):
  """The architecture stage: `model_config` after every part's `resize`, in order."""
  for fn in p.resizes:
    model_config = fn(model_config, dataclasses.replace(ctx, model_config=model_config))
  return model_config


def dataset_facts(meta) -> dict[str, Any]:
  """`InitContext.dataset` of a dataset `Metadata` (and its graph statistics, if any)."""
  facts = {f.name: getattr(meta, f.name) for f in dataclasses.fields(meta)}
  facts.update(getattr(meta, 'graph_stats', None) or {})
  return facts


def data_seed(seed: int) -> int:
  """The seed of the data stage's batches: derived from `seeds.data`, independent of it."""
  return int(np.random.SeedSequence([int(seed), DATA_SEED_SALT]).generate_state(1)[0])


def run_data_stage(p: Plan, key: jax.Array, params, ctx: InitContext, shardings):
  """Applies the data-stage parts to `params` in order; returns them placed on `shardings`.

  `key` is the scheme's key (`fold_in(init key, 1)`, as in the param stage); part `path`
  gets it folded with `path`. `ctx.data` must be set.
  """
  structure = jax.tree.structure(params)
  for path, part in p.data:
    params = part(_fold(key, path), params, ctx)
    if jax.tree.structure(params) != structure:
      raise ValueError(
        f'data-stage init scheme {_name(part)} returned params of another tree '
        f"({jax.tree.structure(params)}); a data-stage scheme keeps the model's"
      )
    params = jax.device_put(params, shardings)
  return params


@registry.register_scheme(
  'from_pretrained',
  description='Copies the params of config.init.pretrained (same paths and shapes) whose '
  'path matches `include`',
)
def from_pretrained(include: str = '.*'):
  """Copies `ctx.pretrained` into every param whose path matches the regex `include`.

  A matched param that the pretrained tree lacks, or holds with another shape, is a one-line
  ConfigError naming its path. Other params keep what earlier schemes of a chain gave them.
  """
  pattern = re.compile(include)

  def scheme(key, params, ctx=None):
    del key
    ctx = ctx if ctx is not None else InitContext()
    source = {
      l.path: l.value for l in tree_lib.leaves(ctx.require('pretrained', 'from_pretrained'))
    }

    def copy(leaf):
      if not pattern.fullmatch(leaf.path):
        return leaf.value
      if leaf.path not in source:
        raise ConfigError(
          f'config.init.pretrained has no param {leaf.path!r} (the '
          f"model's tree does not match the pretrained one; it has "
          f'{len(source)} params, e.g. {sorted(source)[:3]})'
        )
      have, want = source[leaf.path].shape, leaf.value.shape
      if have != want:
        raise ConfigError(
          f'config.init.pretrained: param {leaf.path!r} has shape '
          f'{tuple(have)} there but {tuple(want)} in this model'
        )
      return source[leaf.path].astype(leaf.value.dtype)

    return tree_lib.map_leaves(copy, params)

  return scheme
