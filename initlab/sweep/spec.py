"""Sweep specs: which trials a sweep runs, each with a stable id and its own run directory.

A config module may define `get_sweep(arg=None)` beside `get_config`, returning a dict:

    def get_sweep(arg=None):
      return {
        'product': {'optimizer.learning_rate': [0.01, 0.05], 'init.name': ['he_normal', 'orthogonal']},
        'zip': {'model.width': [64, 128], 'model.depth': [2, 4]},  # one axis, moved together
        'seeds': 16,                                               # default config.seeds.num
      }

The trials are the product of the `product` keys and each `zip` axis (a dict, or a list of
dicts: one axis each), times the seeds. Without `get_sweep`, a config's implied sweep is
`init.compare` x `seeds.num` (what `initlab.train.run_study` runs); a `get_sweep` whose spec
names no `init.name` also sweeps `init.compare`. Seed k of every point uses `seeds.init + k`,
`seeds.data + k` and `seeds.dropout + k`, so points are compared on the same data orders.

Trial ids are `<group>/seed_<k>` and the run directory is `<workdir>/runs/<group>/seed_<k>/`
(`initlab.rundir.run_dir`), so a sweep's workdir is a study's and `initlab.report` reads it.
`<group>` is readable: the scheme name for `init.name`, `<leaf>=<value>` for other keys,
joined by ','; when that is not a safe directory name or is long, it is shortened and a hash
of the point (its dotted keys and values) is appended, so ids stay unique and stable. Each
trial also carries `hash`, of its full run config (minus cosmetics): the manifest uses it to
notice a trial whose config changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import re
from typing import Any, Mapping, Sequence

import ml_collections

from initlab import config as config_lib
from initlab import rundir
from initlab.errors import ConfigError

FIELDS = ('product', 'zip', 'seeds')
# Keys the vmap runner may vary inside one compiled program: they change the init or the
# learning rate (a traced per-trial value), not the shapes of the model, data or optimizer.
VMAP_KEYS = ('seeds.', 'init.', 'optimizer.learning_rate', 'name')
_COSMETIC = ('name', 'train.progress_bar')
_SAFE = re.compile(r'^[A-Za-z0-9._=,+-]{1,64}$')


@dataclasses.dataclass(frozen=True)
class Trial:
  """One run of a sweep.

  Attributes:
    id: '<group>/seed_<k>' (stable; also the run directory under `<workdir>/runs/`).
    group: the point of the sweep without the seed (what the report compares).
    seed: k, the seed index.
    point: {dotted key: value} of this trial's sweep point (no seeds).
    config: the full run config as JSON types (`ml_collections.ConfigDict(trial.config)`).
    hash: of `config` minus cosmetic keys (name, train.progress_bar).
  """

  id: str
  group: str
  seed: int
  point: dict[str, Any]
  config: dict[str, Any]
  hash: str

  def run_config(self) -> ml_collections.ConfigDict:
    """The run's ConfigDict (JSON lists back to the tuples configs use)."""
    return ml_collections.ConfigDict(_tuples(self.config))

  def workdir(self, root) -> pathlib.Path:
    return rundir.run_dir(root, self.group, self.seed)

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> Trial:
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


def load_sweep(path, arg: str | None = None) -> dict[str, Any] | None:
  """`get_sweep(arg)` of the config module at `path`, or None if it defines none."""
  import importlib.util  # pylint: disable=g-import-not-at-top

  module_spec = importlib.util.spec_from_file_location('_initlab_sweep_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  fn = getattr(module, 'get_sweep', None)
  if fn is None:
    return None
  return fn() if arg is None else fn(arg)


def axes(config: ml_collections.ConfigDict, sweep: Mapping[str, Any] | None) -> list[list[dict]]:
  """The sweep's axes, checked: each a list of {dotted key: value} points (ConfigError)."""
  sweep = dict(sweep or {})
  for field in sweep:
    if field not in FIELDS:
      raise ConfigError(f'sweep: unknown field {field!r}; valid: {", ".join(FIELDS)}')
  out, seen = [], set()

  def check_key(where, key):
    if not isinstance(key, str) or not key:
      raise ConfigError(f'{where}: keys are dotted config keys, got {key!r}')
    if key in seen:
      raise ConfigError(f'{where}[{key!r}]: swept twice; name each key once')
    if key == 'seeds.num' or key == 'init.compare':
      raise ConfigError(f"{where}[{key!r}]: set sweep 'seeds' / sweep init.name instead")
    problem = config_lib.override_error(config, key)
    if problem and 'does not set' not in problem:  # Scheme/model options may be new keys.
      raise ConfigError(f'{where}[{key!r}]: {problem}')
    seen.add(key)

  def values(where, key, vals):
    if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence):
      raise ConfigError(f'{where}[{key!r}]: expected a list of values, got {vals!r}')
    if not vals:
      raise ConfigError(f'{where}[{key!r}]: empty list of values; give at least one')
    return list(vals)

  product = sweep.get('product') or {}
  if not isinstance(product, Mapping):
    raise ConfigError(f'sweep.product: expected {{dotted key: [values]}}, got {product!r}')
  for key, vals in product.items():
    check_key('sweep.product', key)
    out.append([{key: v} for v in values('sweep.product', key, vals)])
  zips = sweep.get('zip') or []
  for i, z in enumerate([zips] if isinstance(zips, Mapping) else list(zips)):
    where = f'sweep.zip[{i}]' if not isinstance(zips, Mapping) else 'sweep.zip'
    if not isinstance(z, Mapping) or not z:
      raise ConfigError(f'{where}: expected a non-empty {{dotted key: [values]}}, got {z!r}')
    cols = {}
    for key, vals in z.items():
      check_key(where, key)
      cols[key] = values(where, key, vals)
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
      raise ConfigError(f'{where}: zipped keys need equal lengths, got {lengths}')
    out.append([dict(zip(cols, row)) for row in zip(*cols.values())])
  compare = tuple(config.init.get('compare') or ())
  if compare and 'init.name' not in seen:
    out.insert(0, [{'init.name': s} for s in compare])
  return out


def num_seeds(config, sweep) -> int:
  seeds = (sweep or {}).get('seeds', config.seeds.num)
  if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
    raise ConfigError(f'sweep.seeds: expected a positive int, got {seeds!r}')
  return seeds


def trials(
  config: ml_collections.ConfigDict, sweep: Mapping[str, Any] | None = None
) -> list[Trial]:
  """Every trial of `config` x `sweep` in run order (points, then seeds). Raises ConfigError."""
  points = [{}]
  for axis in axes(config, sweep):
    points = [{**p, **q} for p in points for q in axis]
  seeds = num_seeds(config, sweep)
  groups = {}
  out = []
  for point in points:
    group = group_name(point, config)
    if groups.setdefault(group, point) != point:
      raise ConfigError(f'sweep: points {groups[group]} and {point} give the same id {group!r}')
    for k in range(seeds):
      c = _trial_config(config, point, k, group)
      out.append(
        Trial(
          id=f'{group}/seed_{k}', group=group, seed=k, point=point, config=c, hash=config_hash(c)
        )
      )
  return out


def check_vmappable(trials_: Sequence[Trial]) -> None:
  """ConfigError naming the first swept key outside VMAP_KEYS (it may change shapes)."""
  for t in trials_:
    for key in t.point:
      if not any(key == k or (k.endswith('.') and key.startswith(k)) for k in VMAP_KEYS):
        raise ConfigError(
          f'sweep key {key!r}: the vmap runner stacks trials that differ only in '
          f'{", ".join(k.rstrip(".") + ("*" if k.endswith(".") else "") for k in VMAP_KEYS)} '
          f'({key!r} may change shapes or the compiled program); use --runner=sequential '
          'or processes'
        )


def group_name(point: Mapping[str, Any], config) -> str:
  """The readable id of a sweep point (see the module docstring)."""
  if not point:
    return config.init.name
  parts = [
    str(v) if k == 'init.name' else f'{k.rsplit(".", 1)[-1]}={_fmt(v)}' for k, v in point.items()
  ]
  name = ','.join(parts)
  if _SAFE.match(name) and not name.startswith('.'):
    return name
  digest = hashlib.sha1(_canonical(point).encode()).hexdigest()[:8]
  return re.sub(r'[^A-Za-z0-9._=,+-]', '_', name)[:40].lstrip('.') + '-' + digest


def config_hash(config: Mapping[str, Any]) -> str:
  flat = {k: v for k, v in rundir.flatten(config).items() if k not in _COSMETIC}
  return hashlib.sha1(_canonical(flat).encode()).hexdigest()[:12]


def _tuples(v):
  if isinstance(v, dict):
    return {k: _tuples(x) for k, x in v.items()}
  return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _fmt(v) -> str:
  return json.dumps(v) if not isinstance(v, str) else v


def _canonical(obj) -> str:
  return json.dumps(rundir.encode(obj), sort_keys=True, default=str)


def _trial_config(config, point, k, group) -> dict[str, Any]:
  c = ml_collections.ConfigDict(config.to_dict())
  c.init.compare = ()
  for key, value in point.items():
    _set(c, key, value)
  for key in ('init', 'data', 'dropout'):
    c.seeds[key] = config.seeds[key] + k
  c.seeds.num = 1
  c.name = f'{config.name or "run"} / {group} / seed {k}'
  return json.loads(c.to_json())


def _set(c: ml_collections.ConfigDict, key: str, value) -> None:
  *parents, leaf = key.split('.')
  node = c
  for p in parents:
    if p not in node:
      with node.unlocked():
        node[p] = ml_collections.ConfigDict()
    node = node[p]
  try:
    with node.unlocked():
      node[leaf] = tuple(value) if isinstance(value, list) else value
  except TypeError as e:  # ConfigDict's type check: a float key given a str, ...
    raise ConfigError(f'sweep[{key!r}]: value {value!r}: {e}') from None
