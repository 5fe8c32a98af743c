"""The config schema: every valid key with its default, and `validate(config)`.

A config module starts from `default_config()` and changes what it needs:

    def get_config(arg=None):
      config = initlab.config.default_config()
      config.model = initlab.config.model_config('mlp', depth=2, width=128)
      config.train.steps = 300
      return config

`validate(config)` runs at the start of every run and raises `ConfigError` (a `ValueError`)
that names the offending key, what was expected and the valid choices: unknown or mistyped
keys, wrong value types, unknown optimizer / schedule / init scheme / model / dtype / sharding
preset, a malformed mesh, a batch size that the data-parallel mesh axes do not divide.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import re
from typing import Any, Sequence

import ml_collections
from ml_collections import config_dict

from initlab.errors import ConfigError  # Re-exported: config.ConfigError.

SCHEDULES = ('constant', 'cosine', 'warmup_cosine')
DTYPES = ('float32', 'bfloat16', 'float16', 'float64')
# Keys checked by their own rules (their schema depends on another value, or several types
# are valid).
_FREE_KEYS = ('model', 'init', 'optimizer.kwargs', 'sharding', 'data.graph')
_NOT_OPTIMIZERS = ('lbfgs', 'scale_by_learning_rate', 'scale_by_rprop')


def default_config() -> ml_collections.ConfigDict:
  """Every top-level key a config may set, with its default (the schema)."""
  c = ml_collections.ConfigDict()
  c.name = ''  # Title of the run / study report.
  # Zoo model: `name` + options of `initlab.models.default_config(name)`. Its `dtype` and
  # `param_dtype` come from `config.dtype`.
  c.model = ml_collections.ConfigDict({'name': 'mlp'})
  # Init scheme: `init.name` (+ options `init.<name>.<opt>`), or a study over `init.compare`.
  # `init.pretrained`: a run directory or an Orbax checkpoint (directory or step) whose params
  # and model state the schemes read as `ctx.pretrained` / `ctx.pretrained_state` (e.g.
  # 'from_pretrained'), restored on this mesh; or {name: path} of several sources (the
  # schemes then read {name: tree}).
  c.init = ml_collections.ConfigDict(
    {
      'name': 'he_normal',
      'compare': (),
      'pretrained': config_dict.FieldReference('', field_type=object),
    }
  )
  c.data = ml_collections.ConfigDict(
    dict(
      name='digits',  # 'digits', 'tiny_shakespeare', TFDS name.
      data_dir=config_dict.placeholder(str),  # Default: initlab.data.default_data_dir().
      seq_len=config_dict.placeholder(int),  # Language modelling window.
      image_key=config_dict.placeholder(str),  # TFDS catalog datasets only.
      label_key=config_dict.placeholder(str),
      image_scale=config_dict.placeholder(float),
      train_split='train',
      eval_split='test',
      # Label ids to keep, relabelled to their index (classification; initlab.data.subset):
      # (5, 6, 7, 8, 9) -> labels 0..4, num_classes 5. () = all classes.
      classes=(),
      # Options of a generated graph ('csbm', 'chung_lu'; initlab.data.graphs), checked there.
      graph=ml_collections.ConfigDict(),
    )
  )
  # Width parametrization (initlab.init.families.parametrization, Tensor Programs V):
  # 'standard' leaves the init scheme and the optimizer as they are; 'ntk' and 'mup' scale
  # init variances (after `init`) and per-param learning rates (in the optimizer) by the
  # width relative to `base_width`, the value of the model's width option (`width_key`:
  # '' = mlp/resnet 'width', vit/transformer_lm 'dim') at which init and LR were tuned.
  c.parametrization = ml_collections.ConfigDict(
    dict(
      name='standard',  # 'standard' | 'ntk' | 'mup'.
      base_width=0.0,  # > 0 for ntk and mup; at this width they equal standard.
      width_key='',
      zero_readout=False,  # mup: the classifier starts at 0 (TP V, Section D.2).
    )
  )
  c.optimizer = ml_collections.ConfigDict(
    dict(
      name='adam',  # Any optax optimizer taking `learning_rate` first.
      learning_rate=1e-3,  # Peak learning rate.
      schedule='constant',  # One of SCHEDULES.
      warmup_steps=0,  # warmup_cosine: linear warm-up from 0.
      end_lr_ratio=0.0,  # cosine schedules: final lr = ratio * peak.
      weight_decay=0.0,  # Decoupled if the optimizer takes it, else added (L2).
      grad_clip_norm=0.0,  # Clip by global norm; 0 = off.
      kwargs=ml_collections.ConfigDict(),  # Extra optax arguments, e.g. b1, momentum.
      # Transforms chained after the optimizer: names or (name, {option: value}) pairs of
      # `initlab.train.optim.transform_names()`, e.g. (('backslash', {'rdo': 2e3}),).
      extra=(),
      # Regex of the params the optimizer trains (full match on 'a/b/kernel' paths); '' is
      # every param. Frozen params keep their init and get no optimizer state.
      trainable='',
    )
  )
  # Low-rank adapters (initlab.init.adapters): `targets` is a regex of kernel paths (full
  # match, e.g. r'.*(query|value)/kernel'; '' = no adapters). The params then hold a `lora`
  # subtree, the model runs with kernel + s·lora_a@lora_b (s = alpha/rank, alpha 0 = rank;
  # rslora: alpha/sqrt(rank)), only the adapters train (unless optimizer.trainable says
  # otherwise), and `init.name` may be a LoRA-init scheme ('pissa', 'olora', ...).
  # `train_also`: a regex of base params trained beside the adapters (PEFT's
  # modules_to_save, e.g. r'head/.*' for a new task's classifier).
  c.lora = ml_collections.ConfigDict(
    dict(targets='', rank=8, alpha=0.0, rslora=False, train_also='')
  )
  c.train = ml_collections.ConfigDict(
    dict(
      steps=1000,
      batch_size=128,  # Global batch size.
      eval_batch_size=0,  # 0: same as batch_size.
      eval_every=200,  # Also at the last step; 0 = only at the end.
      eval_steps=0,  # Max eval batches per evaluation; 0 = the whole split.
      log_every=50,
      checkpoint_every=200,  # Also at the last step; 0 = only at the end.
      keep_checkpoints=2,
      progress_bar=True,
      loss='ce',  # One of initlab.losses.loss_names(): 'ce', 'distill'.
      # loss='distill': (1 - alpha) CE + alpha T^2 KL(teacher || student), teacher: a run
      # directory or Orbax checkpoint of any model with this dataset's output space.
      distill=ml_collections.ConfigDict(dict(teacher='', temperature=1.0, alpha=0.5)),
    )
  )
  c.mesh = (('data', -1), ('model', 1))  # (axis name, size); one size may be -1 (the rest).
  # A preset (initlab.models.SHARDING_PRESETS) or a tuple of (logical axis, mesh axis) rules.
  c.sharding = config_dict.FieldReference('data_parallel', field_type=object)
  c.dtype = ml_collections.ConfigDict(dict(param_dtype='float32', compute_dtype='float32'))
  c.seeds = ml_collections.ConfigDict(dict(init=0, data=0, dropout=0, num=1))
  c.init_from = ''  # Checkpoint dir of another run: params only.
  c.diagnostics_at_init = False
  c.report = ml_collections.ConfigDict(
    dict(target=config_dict.placeholder(float), target_metric='eval/accuracy')
  )
  return c


def model_config(name: str, **options) -> ml_collections.ConfigDict:
  """`config.model` for zoo model `name` with `options` (checked against its defaults)."""
  from initlab import models  # pylint: disable=g-import-not-at-top

  cfg = ml_collections.ConfigDict({'name': name, **options})
  _check_model(cfg, models)
  return cfg


def full_model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The zoo's defaults for `config.model.name`, updated with `config.model` and the dtypes."""
  from initlab import models  # pylint: disable=g-import-not-at-top

  cfg = models.default_config(config.model.name)  # A preset ('resnet20') names its model.
  options = config.model.to_dict() if hasattr(config.model, 'to_dict') else dict(config.model)
  with cfg.unlocked():
    cfg.update({k: v for k, v in options.items() if k != 'name'})
    if 'dtype' in cfg:
      cfg.dtype = config.dtype.compute_dtype
    if 'param_dtype' in cfg:
      cfg.param_dtype = config.dtype.param_dtype
  return cfg


# Paths a user gives; made absolute at the entry.
PATH_KEYS = (
  'init_from',
  'data.data_dir',
  'init.pretrained',
  'data.graph.raw_dir',
  'train.distill.teacher',
)


def resolve_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` whose PATH_KEYS are absolute ('~' expanded, relative to the cwd).

  Runs resolve them once, at the entry, so that Orbax (which refuses relative paths) and
  later reruns from another directory see the same paths.
  """
  from initlab import rundir  # pylint: disable=g-import-not-at-top

  out = config.copy_and_resolve_references()
  with out.unlocked():
    for key in PATH_KEYS:
      *parents, leaf = key.split('.')
      node = out
      for k in parents:
        node = node.get(k) or {}  # data.graph may be absent or empty
      value = node.get(leaf)
      if isinstance(value, (dict, ml_collections.ConfigDict)):  # init.pretrained {name: path}
        node[leaf] = {k: rundir.absolute(v) if v else v for k, v in dict(value).items()}
      elif value:
        node[leaf] = rundir.absolute(value)
  return out


def override_error(config: ml_collections.ConfigDict, key: str) -> str | None:
  """Why `--config.<key>=...` cannot apply to `config` (None if the key exists).

  Names the first missing part of the dotted `key`, the closest valid key and all of them
  (those the config sets and those the schema allows), as `validate` does.
  """
  from initlab import models  # pylint: disable=g-import-not-at-top

  node, schema = config, default_config()
  parts = key.split('.')
  for i, part in enumerate(parts):
    where = '.'.join(parts[:i])
    if not hasattr(node, 'keys'):
      return f'config.{where} is a value ({node!r}), it has no key {part!r}.'
    if part in node:
      node = node[part]
      schema = schema.get(part) if hasattr(schema, 'get') else None
      continue
    valid = set(node.keys()) | (set(schema.keys()) if hasattr(schema, 'keys') else set())
    if where == 'model':
      zoo = [k for k in _model_options(models, node) if k not in ('dtype', 'param_dtype')]
      if part in zoo:
        return (
          f'config.model.{part} is an option of model {node.get("name")!r} that this '
          'config does not set; command-line overrides can only change keys the config '
          'sets, so set it in the config file.'
        )
      valid |= set(zoo)
    if where == 'init':
      if part in _scheme_names():
        return (
          f'config.init.{part}: options of init scheme {part!r} that this config does not '
          'set; command-line overrides can only change keys the config sets, so set '
          f'config.init.{part} in the config file.'
        )
      valid |= set(_scheme_names())
    return str(
      _unknown('.'.join(parts[: i + 1]), sorted(valid), f'config.{where}' if where else 'config')
    )
  return None


def _model_options(models, model_cfg) -> list[str]:
  try:
    return list(models.default_config(model_cfg.get('name')).keys())
  except (KeyError, ValueError):
    return []


def _scheme_names() -> list[str]:
  import initlab.init as ii  # pylint: disable=g-import-not-at-top

  return list(ii.scheme_names())


def scheme_options(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
  """The options `config.init.<name>.*` of init scheme `name` (empty if none are set)."""
  opts = config.init.get(name)
  if opts is None:
    return {}
  return opts.to_dict() if hasattr(opts, 'to_dict') else dict(opts)


def schemes_of(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The init schemes a config runs: `init.compare` if set, else `(init.name,)`."""
  compare = tuple(config.init.get('compare') or ())
  return compare if compare else (config.init.name,)


def optimizer_names() -> list[str]:
  """optax functions whose first argument is `learning_rate` (what `optimizer.name` accepts)."""
  import optax  # pylint: disable=g-import-not-at-top

  names = []
  for name in dir(optax):
    fn = getattr(optax, name)
    if name.startswith('_') or not name.islower() or not callable(fn) or name in _NOT_OPTIMIZERS:
      continue
    try:
      params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
      continue
    if params and params[0] == 'learning_rate':
      names.append(name)
  return names


def mesh_shape(mesh: Sequence[Sequence[Any]], num_devices: int) -> dict[str, int]:
  """`{axis: size}` of `config.mesh` on `num_devices` devices (`initlab.sharding.mesh_shape`)."""
  from initlab import sharding  # pylint: disable=g-import-not-at-top

  try:
    return sharding.mesh_shape(mesh, num_devices, where='config.mesh')
  except ValueError as e:
    raise ConfigError(str(e)) from None


def validate(
  config: ml_collections.ConfigDict,
  *,
  num_devices: int | None = None,
  process_count: int | None = None,
) -> None:
  """Raises ConfigError for unknown keys, wrong types and values initlab cannot run.

  Args:
    config: the full run config.
    num_devices: devices of the mesh (default: `jax.device_count()`).
    process_count: processes (default: `jax.process_count()`).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from initlab import models  # pylint: disable=g-import-not-at-top
  from initlab import sharding  # pylint: disable=g-import-not-at-top

  _check_keys(config, default_config(), '')
  _check_model(config.model, models)
  _check_init(config.init)
  _check_optimizer(config.optimizer)
  _check_lora(config.lora)
  _check_parametrization(config)
  loss_of(config)
  t = config.train
  for key in ('steps', 'batch_size', 'log_every', 'keep_checkpoints'):
    _check(t[key] >= 1, f'train.{key}', f'a positive int, got {t[key]}')
  for key in ('eval_batch_size', 'eval_every', 'eval_steps', 'checkpoint_every'):
    _check(t[key] >= 0, f'train.{key}', f'an int >= 0, got {t[key]}')
  for key in ('param_dtype', 'compute_dtype'):
    _check(
      config.dtype[key] in DTYPES,
      f'dtype.{key}',
      f'one of {list(DTYPES)}, got {config.dtype[key]!r}',
    )
  for key in ('init', 'data', 'dropout'):
    _check(config.seeds[key] >= 0, f'seeds.{key}', f'an int >= 0, got {config.seeds[key]}')
  _check(config.seeds.num >= 1, 'seeds.num', f'an int >= 1, got {config.seeds.num}')
  classes = tuple(config.data.get('classes') or ())
  _check(
    all(type(k) is int and k >= 0 for k in classes) and len(set(classes)) == len(classes),
    'data.classes',
    f'distinct int label ids >= 0 (() = all classes), got {classes!r}',
  )
  _check_sharding(config.sharding, models)
  num_devices = jax.device_count() if num_devices is None else num_devices
  process_count = jax.process_count() if process_count is None else process_count
  shape = mesh_shape(config.mesh, num_devices)
  rules = sharding.axis_rules(config.sharding)
  for logical, mesh_axis in rules:
    for axis in mesh_axis if isinstance(mesh_axis, (tuple, list)) else (mesh_axis,):
      _check(
        axis is None or axis in shape,
        'sharding',
        f'rules whose mesh axes exist in config.mesh {list(shape)}; the rule for '
        f'{logical!r} names mesh axis {axis!r}',
      )
  axes = sharding.batch_axes(shape)
  split = math.prod(shape[a] for a in axes)
  for key in ('batch_size', 'eval_batch_size'):
    size = t[key] or t.batch_size
    _check(
      size % split == 0,
      f'train.{key}',
      f'a multiple of the data-parallel mesh axes {dict((a, shape[a]) for a in axes)} '
      f'(size {split}, from mesh={tuple(map(tuple, config.mesh))} on {num_devices} '
      f'devices), got {key}={size}',
    )
    _check(
      size % process_count == 0,
      f'train.{key}',
      f'a multiple of the process count {process_count}, got {size}',
    )


def _check(ok: bool, key: str, expected: str) -> None:
  if not ok:
    raise ConfigError(f'config.{key}: expected {expected}.')


def _type_ok(value: Any, want: type) -> bool:
  if want is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if want is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if want in (tuple, list):
    return isinstance(value, (tuple, list))
  if want is ml_collections.ConfigDict:
    return isinstance(value, (ml_collections.ConfigDict, dict))
  return isinstance(value, want)


def _unknown(key: str, valid: Sequence[str], where: str) -> ConfigError:
  close = difflib.get_close_matches(key.rsplit('.', 1)[-1], valid, n=1)
  hint = f' Did you mean {close[0]!r}?' if close else ''
  return ConfigError(
    f'Unknown config key {key!r}.{hint} Valid keys in {where}: {", ".join(sorted(valid))}.'
  )


def _check_keys(config, schema, prefix: str) -> None:
  """Every key of `config` exists in `schema` with a value of the schema's type."""
  for key in config.keys():
    full = f'{prefix}{key}'
    if key not in schema:
      raise _unknown(full, list(schema.keys()), f'config.{prefix[:-1]}' if prefix else 'config')
    if full in _FREE_KEYS:
      continue
    want = schema.get_type(key) if hasattr(schema, 'get_type') else type(schema[key])
    value = config[key]
    if value is None:
      continue  # None is "unset" for placeholders and optional keys.
    _check(
      _type_ok(value, want), full, f'type {want.__name__}, got {value!r} ({type(value).__name__})'
    )
    if want is ml_collections.ConfigDict:
      _check_keys(value, schema[key], f'{full}.')


def _check_model(cfg, models) -> None:
  name = cfg.get('name')
  valid = list(models.model_names()) if hasattr(models, 'model_names') else None
  try:
    defaults = models.default_config(name)
  except (KeyError, ValueError) as e:
    listed = f'; valid: {valid}' if valid else ''
    raise ConfigError(f'config.model.name: unknown model {name!r}{listed} ({e}).') from None
  for key in cfg.keys():
    if key in ('dtype', 'param_dtype'):
      raise ConfigError(
        f'config.model.{key}: set by config.dtype.'
        f'{"compute_dtype" if key == "dtype" else "param_dtype"} instead.'
      )
    if key not in defaults:
      raise _unknown(f'model.{key}', list(defaults.keys()), f'config.model (model {name!r})')
    want, value = defaults.get_type(key), cfg[key]
    if value is not None and defaults[key] is not None:
      _check(
        _type_ok(value, want),
        f'model.{key}',
        f'type {want.__name__}, got {value!r} ({type(value).__name__})',
      )


def _check_init(init) -> None:
  import initlab.init as ii  # pylint: disable=g-import-not-at-top

  names = ii.scheme_names()
  compare = init.get('compare') or ()
  _check(
    isinstance(compare, (tuple, list)) and all(isinstance(n, str) for n in compare),
    'init.compare',
    f'a tuple of scheme names, got {compare!r}',
  )
  _check(isinstance(init.get('name'), str), 'init.name', 'a scheme name')
  _check(len(set(compare)) == len(compare), 'init.compare', f'distinct names, got {compare}')
  named = [('init.name', init.name)] + [(f'init.compare[{i}]', n) for i, n in enumerate(compare)]
  for key, name in named:
    _check(name in names, key, f'an init scheme name, got {name!r}; valid: {", ".join(names)}')
  pretrained = init.get('pretrained')
  pretrained = '' if pretrained is None else pretrained
  if isinstance(pretrained, (dict, ml_collections.ConfigDict)):
    _check(
      len(pretrained) > 0,
      'init.pretrained',
      "a path, {name: path} of at least one source, or '' for none; got an empty mapping",
    )
    for name, path in dict(pretrained).items():
      _check(
        isinstance(path, str) and bool(path),
        f'init.pretrained[{name!r}]',
        f'a run directory or Orbax checkpoint path, got {path!r}',
      )
  else:
    _check(
      isinstance(pretrained, str),
      'init.pretrained',
      f"a run directory or Orbax checkpoint path, {{name: path}}, or '' for none; got "
      f'{pretrained!r}',
    )
  for key in init.keys():
    if key in ('name', 'compare', 'pretrained'):
      continue
    if key not in names:
      raise _unknown(
        f'init.{key}',
        ['name', 'compare', 'pretrained', *names],
        'config.init (name, compare, pretrained, or <scheme>.<option>)',
      )
    opts = init[key]
    _check(
      isinstance(opts, (ml_collections.ConfigDict, dict)),
      f'init.{key}',
      f'a ConfigDict of options of scheme {key!r}, got {opts!r}',
    )
    opts = opts.to_dict() if hasattr(opts, 'to_dict') else dict(opts)
    try:
      scheme = ii.get_scheme(key, **opts)
      if key in ii.initializer_names():
        ii.get_initializer(key, **opts).bind(None)
      del scheme
    except TypeError as e:
      raise ConfigError(f'config.init.{key}: bad options {opts} for scheme {key!r}: {e}.') from None


def loss_of(config: ml_collections.ConfigDict):
  """The `initlab.losses.Loss` of `config.train.loss` (options from `config.train.distill`);
  ConfigError naming the key and the valid choices."""
  from initlab import losses  # pylint: disable=g-import-not-at-top

  t = config.train
  name = t.get('loss', 'ce')
  _check(
    name in losses.loss_names(),
    'train.loss',
    f'one of {", ".join(map(repr, losses.loss_names()))}, got {name!r}',
  )
  options = {}
  if name == 'distill':
    d = t.distill
    _check(
      isinstance(d.teacher, str) and bool(d.teacher),
      'train.distill.teacher',
      f"the run directory or Orbax checkpoint of the teacher (train.loss='distill'), got "
      f'{d.teacher!r}',
    )
    options = dict(temperature=d.temperature, alpha=d.alpha)
  try:
    return losses.get_loss(name, **options)
  except ValueError as e:
    raise ConfigError(f'config.train.distill: {e}.') from None


def _check_lora(lora) -> None:
  if not lora.targets:
    return
  try:
    re.compile(lora.targets)
  except re.error as e:
    raise ConfigError(f'config.lora.targets: not a regular expression ({e}): {lora.targets!r}.')
  _check(lora.rank >= 1, 'lora.rank', f'an int >= 1, got {lora.rank}')
  _check(lora.alpha >= 0, 'lora.alpha', f'a float >= 0 (0: alpha = rank), got {lora.alpha}')


def _check_parametrization(config) -> None:
  from initlab.init.families import parametrization  # pylint: disable=g-import-not-at-top

  p = config.parametrization
  try:
    parametrization.check(
      p.name,
      p.base_width,
      model_config=full_model_config(config),
      width_key_=p.width_key,
      zero_readout=p.zero_readout,
    )
  except ValueError as e:
    raise ConfigError(f'config.{e}.') from None


def _check_optimizer(opt) -> None:
  import optax  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top

  try:
    re.compile(opt.get('trainable', ''))
  except re.error as e:
    raise ConfigError(
      f'config.optimizer.trainable: not a regular expression ({e}): {opt.trainable!r}.'
    ) from None

  names = optimizer_names()
  _check(
    opt.name in names,
    'optimizer.name',
    f'an optax optimizer, got {opt.name!r}; valid: {", ".join(names)}',
  )
  from initlab.train import optim  # pylint: disable=g-import-not-at-top

  optim.parse_extra(opt.extra)
  _check(
    opt.schedule in SCHEDULES,
    'optimizer.schedule',
    f'one of {list(SCHEDULES)}, got {opt.schedule!r}',
  )
  _check(opt.learning_rate >= 0, 'optimizer.learning_rate', f'>= 0, got {opt.learning_rate}')
  for key in ('warmup_steps', 'end_lr_ratio', 'weight_decay', 'grad_clip_norm'):
    _check(opt[key] >= 0, f'optimizer.{key}', f'>= 0, got {opt[key]}')
  params = inspect.signature(getattr(optax, opt.name)).parameters
  has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
  valid = [p for p in params if p not in ('learning_rate', 'weight_decay')]
  for key in opt.kwargs.keys():
    if key not in valid and not has_var_kw:
      raise _unknown(f'optimizer.kwargs.{key}', valid, f'optax.{opt.name} arguments')


def _check_sharding(sharding, models) -> None:
  if isinstance(sharding, str):
    presets = list(models.SHARDING_PRESETS)
    try:
      models.logical_axis_rules(sharding)
    except (KeyError, ValueError):
      raise ConfigError(
        f'config.sharding: expected a preset, one of {presets}, or a tuple of '
        f'(logical axis, mesh axis) rules; got {sharding!r}.'
      ) from None
    return
  ok = isinstance(sharding, (tuple, list)) and all(
    isinstance(r, (tuple, list))
    and len(r) == 2
    and isinstance(r[0], str)
    and (r[1] is None or isinstance(r[1], (str, tuple, list)))
    for r in sharding
  )
  _check(
    ok,
    'sharding',
    f'a preset name or a tuple of (logical axis, mesh axis | None) rules, got {sharding!r}',
  )


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses a config module's `arg` ('smoke', 'smoke,sharding=fsdp') against `defaults`.

  A bare name sets that boolean to True; `key=value` parses the value as the type of the
  default. Unknown names raise ConfigError listing the valid ones.
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    key = key.strip()
    if key not in defaults:
      raise ConfigError(f'Unknown config argument {key!r}; valid: {", ".join(defaults)}.')
    default = defaults[key]
    if not value:
      _check(isinstance(default, bool), f'<arg {key}>', f'{key}=<value> ({type(default).__name__})')
      out[key] = True
    elif isinstance(default, bool):
      out[key] = value.lower() in ('1', 'true', 'yes')
    else:
      out[key] = type(default)(value)
  return out


def load(path: str | os.PathLike, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config module at `path`, as `--config=<path>:<arg>` loads it.

  Lets config modules derive from each other without being a package, e.g. in
  experiments/x/configs.py: `load(REPO / 'configs/lm_shakespeare.py', 'smoke')`. A relative
  `path` is taken from the current directory.
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  if not path.is_file():
    raise ConfigError(f'No config module at {str(path)!r}.')
  spec = importlib.util.spec_from_file_location(f'initlab_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)
