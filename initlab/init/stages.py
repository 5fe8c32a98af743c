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
from initlab.init.schemes import InitContext, SchemeResult, finish, stage_of, unwrap

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
    param: the param-stage scheme (the whole scheme if it has no data part), or None. Made
      from a chain's param parts, it unwraps a part's `SchemeResult` as `chain` does: the
      later parts get its params, and it returns a `SchemeResult` with the last params and
      the fields the parts set (e.g. the new model config, for the architecture stage).
    data: ((index path, scheme), ...) of the data-stage parts, in order.
    num_batches: training batches the data stage draws (max of the parts' `num_batches`).
    parts: ((index path, scheme), ...) of every part, in order.
    probes: ((index path, scheme), ...) of the parts with a `probe` (architecture from data).
    masks: regex of the params the parts declare masks for (their `masks`; '' for none).
    streams: a part restores the pretrained sources itself (`streams_pretrained`).
  """

  scheme: Callable
  resizes: tuple
  param: Callable | None
  data: tuple
  num_batches: int
  parts: tuple = ()
  probes: tuple = ()
  masks: str = ''
  streams: bool = False


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
      result = None
      for path, p in param_parts:  # As `chain`: a SchemeResult's params go to later parts.
        params, result = unwrap(p(_fold(key, path), params, ctx), result)
      return finish(params, result)

    param = param if param_parts else None
  num_batches = max([int(getattr(p, 'num_batches', 1)) for _, p in data], default=0)
  return Plan(
    scheme,
    resizes,
    param,
    data,
    num_batches,
    parts=tuple(parts),
    probes=tuple((path, p) for path, p in parts if getattr(p, 'probe', None) is not None),
    masks='|'.join(f'(?:{p.masks})' for _, p in parts if getattr(p, 'masks', None)),
    streams=any(getattr(p, 'streams_pretrained', False) for _, p in parts),
  )


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
  """The seed of the data stage's batches, from the run's `seeds.data` (`seed`) alone.

  It is a hash of `seed` and DATA_SEED_SALT: the same for every `seeds.init` (and every
  scheme), so runs that differ only in their init seed or scheme see the same data-stage
  batches and their inits differ only by the init itself; it differs from `seed`, so the
  data stage does not draw training's first batches, and training's data order (seeded with
  `seeds.data`) is untouched. A study's seed k shifts `seeds.data` too (`seeds.data + k`,
  `initlab.train.study`), so its k-th runs share their data-stage batches and other k differ.
  """
  return int(np.random.SeedSequence([int(seed), DATA_SEED_SALT]).generate_state(1)[0])


def run_data_stage(p: Plan, key: jax.Array, params, ctx: InitContext, shardings):
  """Applies the data-stage parts to `params` in order; returns them placed on `shardings`,
  or, when a part returned a `SchemeResult` (masks, model state), that result with them.

  `key` is the scheme's key (`fold_in(init key, 1)`, as in the param stage); part `path`
  gets it folded with `path`. `ctx.data` must be set. A data-stage part keeps the model:
  a new `model_config` (or another param tree) is a ValueError naming the part.
  """
  structure = jax.tree.structure(params)
  result = None
  for path, part in p.data:
    out = part(_fold(key, path), params, ctx)
    params, result = unwrap(out, result)
    if jax.tree.structure(params) != structure or (result and result.model_config is not None):
      raise ValueError(
        f'data-stage init scheme {_name(part)} returned params of another tree or model '
        f"({jax.tree.structure(params)}); a data-stage scheme keeps the model's"
      )
    params = jax.device_put(params, shardings)
  return finish(params, result)


@registry.register_scheme(
  'from_pretrained',
  description='Copies the params of config.init.pretrained (same paths and shapes) whose '
  'path matches `include`',
)
def from_pretrained(include: str = '.*'):
  """Copies `ctx.pretrained` into every param whose path matches the regex `include`.

  A matched param that the pretrained tree lacks, or holds with another shape, is a one-line
  ConfigError naming its path. Other params keep what earlier schemes of a chain gave them.
  With `ctx.pretrained_state` (a run restores it with the params), the other variables
  (BatchNorm statistics) of every module that holds a copied param are copied too, and the
  scheme returns `SchemeResult(params, model_state=...)`. Several sources ({name: tree}) are
  not for this scheme: use one that merges them.
  """
  pattern = re.compile(include)

  def scheme(key, params, ctx=None):
    del key
    ctx = ctx if ctx is not None else InitContext()
    pretrained = ctx.require('pretrained', 'from_pretrained')
    top = {l.path.split('/')[0] for l in tree_lib.leaves(params)}
    if isinstance(pretrained, dict) and pretrained and not {str(k) for k in pretrained} & top:
      raise ConfigError(
        f'config.init.pretrained: from_pretrained copies one source, got several '
        f'({", ".join(map(str, pretrained))}); use a scheme that merges them'
      )
    source = {l.path: l.value for l in tree_lib.leaves(pretrained)}

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

    params = tree_lib.map_leaves(copy, params)
    if ctx.pretrained_state is None:
      return params
    modules = {
      l.path.rpartition('/')[0] for l in tree_lib.leaves(params) if pattern.fullmatch(l.path)
    }
    state = _subtree(ctx.pretrained_state, lambda path: path.rpartition('/')[0] in modules)
    return SchemeResult(params, model_state=state) if state else params

  return scheme


def _subtree(tree, keep, prefix=()) -> dict:
  """The nested dict of `tree`'s leaves whose '/'-joined path `keep` accepts."""
  out = {}
  for key, value in tree.items():
    path = prefix + (key,)
    if isinstance(value, dict):
      inner = _subtree(value, keep, path)
      if inner:
        out[key] = inner
    elif keep('/'.join(map(str, path))):
      out[key] = value
  return out


@registry.register_scheme(
  'model_init',
  description="The model's own initializers: params as built (e.g. a learngene's TLEG init)",
)
def model_init():
  """Leaves every param as the model's modules initialized it."""
  return lambda key, params, ctx=None: params
