"""The model registry: build zoo models by name from a config, `build(config.model, rngs=...)`.

    config = initlab.models.default_config('resnet20')   # every option, with defaults
    config.width = 2.0
    model = initlab.models.build(config, rngs=nnx.Rngs(0))

A model config is `name` plus exactly the options of that model's `default_config()`
(no unknown and no missing keys), so a typo fails at build time with the key named. The
one exception: options a model registers as `optional` (added after configs were recorded,
e.g. the per-layer widths 'widths', 'stage_widths', 'block_widths', 'mlp_dims') may be
missing and then take their default, which builds the model as before the option existed;
so a model config recorded earlier (a checkpoint's 'built_model') still builds.
Presets (e.g. 'resnet20') are default configs with some options set.

Each model registers itself in its own module by decorating its class:

    @register_model('toy', task='classification', default_config=default_config,
                    input_spec=lambda c: InputSpec(tuple(c['input_shape'])))
    class Toy(nnx.Module): ...

and `initlab.models.__init__` imports every zoo module, so the registry is complete once
`initlab.models` is imported. The entry says everything the rest of initlab asks about a
model: its task, one example's input (`input_spec`, e.g. for random-input diagnostics) and
which options the dataset fixes (`data_options`, checked by `check_fits` before training).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

ConfigFn = Callable[[], ml_collections.ConfigDict]
# `data_options(model config, data Metadata) -> {option: value the dataset needs}`.
DataOptionsFn = Callable[[Mapping[str, Any], Any], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """One example's input: `shape` (None: a sequence length the caller picks) of floats, or of
  integer tokens in [0, vocab_size) when `vocab_size` is set."""

  shape: tuple[int | None, ...]
  vocab_size: int | None = None


def same_as_data(config: Mapping[str, Any], meta: Any) -> dict[str, Any]:
  """Default `data_options`: each of input_shape / num_classes / vocab_size that the model
  config has must equal the dataset's (`initlab.data.Metadata`) value."""
  keys = ('input_shape', 'num_classes', 'vocab_size')
  return {k: getattr(meta, k) for k in keys if k in config and getattr(meta, k) is not None}


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  """A registered model: `cls(**options, rngs=rngs)` builds it (options = default_config()
  minus `name`); it trains on datasets of `task` ('classification', 'lm')."""

  name: str
  cls: type[nnx.Module]
  task: str
  default_config: ConfigFn
  input_spec: Callable[[Mapping[str, Any]], InputSpec] | None = None
  data_options: DataOptionsFn = same_as_data
  presets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  optional: tuple[str, ...] = ()


_MODELS: dict[str, ModelEntry] = {}
_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {}  # preset -> (model, overrides)
_DTYPE_KEYS = ('dtype', 'param_dtype')


def _same_class(a: type, b: type) -> bool:
  """`b` is `a` or its re-definition (a notebook cell or module run again)."""
  return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _check_entry(entry: ModelEntry) -> None:
  """Raises ValueError, naming the model, for an entry that could not be built by name."""
  name, where = entry.name, f'register_model({entry.name!r})'
  if not isinstance(entry.cls, type):
    raise ValueError(f'{where}: decorates a class (an nnx.Module), got {entry.cls!r}')
  if not isinstance(entry.task, str) or not entry.task:
    raise ValueError(
      f"{where}: task must name the task it trains on, e.g. 'classification' "
      f"or 'lm'; got {entry.task!r}"
    )
  for key in ('default_config', 'input_spec', 'data_options'):
    fn = getattr(entry, key)
    if fn is not None and not callable(fn):
      raise ValueError(f'{where}: {key} must be a function, got {fn!r}')
  config = entry.default_config()
  if config.get('name') != name:
    raise ValueError(
      f'{where}: default_config() must return name={name!r}, got name={config.get("name")!r}'
    )
  params = inspect.signature(entry.cls.__init__).parameters
  if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
    missing = sorted({*config.keys(), 'rngs'} - {'name'} - set(params))
    if missing:
      raise ValueError(
        f'{where}: {entry.cls.__qualname__}(...) takes no keyword(s) {missing} '
        f'that default_config() has (every option, and rngs)'
      )
  unknown = sorted(set(entry.optional) - set(config) | ({'name'} & set(entry.optional)))
  if unknown:
    raise ValueError(f'{where}: optional names unknown option(s) {unknown}')
  for preset, overrides in entry.presets.items():
    unknown = sorted(set(overrides) - set(config) | ({'name'} & set(overrides)))
    if unknown:
      raise ValueError(f'{where}: preset {preset!r} sets unknown option(s) {unknown}')
    owner = _PRESETS.get(preset, (name,))[0]
    if preset in _MODELS or owner != name:
      raise ValueError(f'{where}: preset {preset!r} is already a model or a preset of {owner!r}')


def register_model(
  name: str,
  *,
  task: str,
  default_config: ConfigFn,
  input_spec: Callable[[Mapping[str, Any]], InputSpec] | None = None,
  data_options: DataOptionsFn = same_as_data,
  presets: Mapping[str, Mapping[str, Any]] | None = None,
  optional: tuple[str, ...] = (),
):
  """Class decorator: registers the decorated nnx.Module as model `name`.

  Args:
    name: the config name (`config.model.name`).
    task: what it trains on, matched against the dataset's `Metadata.task`
      ('classification': images -> (B, classes) logits; 'lm': tokens -> (B, T, vocab)).
    default_config: returns `name` plus every keyword option of the class (not `rngs`).
    input_spec: model config -> `InputSpec` of one example (for random-input diagnostics).
    data_options: (model config, data Metadata) -> {option: value that dataset needs};
      `check_fits` compares them with the config. Default `same_as_data`.
    presets: {preset name: option overrides}, e.g. {'resnet20': {'depth': 20}}.
    optional: options a model config may leave out (then their default applies): options
      added after configs were recorded, whose default builds the model as before.

  Registering a name again with the same class (or its re-definition, e.g. a notebook cell
  run twice) replaces the entry; with a different class it is an error.
  """

  def decorate(cls):
    entry = ModelEntry(
      name,
      cls,
      task,
      default_config,
      input_spec,
      data_options,
      dict(presets or {}),
      tuple(optional),
    )
    if not isinstance(name, str) or not name or name in _PRESETS:
      raise ValueError(
        f'register_model: name must be a new model name, got {name!r}'
        f'{" (a preset)" if name in _PRESETS else ""}'
      )
    old = _MODELS.get(name)
    if old is not None and not (isinstance(cls, type) and _same_class(old.cls, cls)):
      raise ValueError(
        f'register_model({name!r}): already registered to '
        f'{old.cls.__module__}.{old.cls.__qualname__}; pick another name'
      )
    _check_entry(entry)
    for preset in old.presets if old else ():
      _PRESETS.pop(preset, None)
    _MODELS[name] = entry
    _PRESETS.update({p: (name, dict(o)) for p, o in entry.presets.items()})
    return cls

  return decorate


def _entry(name: Any) -> ModelEntry:
  if name in _MODELS:
    return _MODELS[name]
  hint = f' (a preset: use initlab.models.default_config({name!r}))' if name in _PRESETS else ''
  raise ValueError(f'model name={name!r} is unknown{hint}; valid names: {model_names()}')


def input_spec(config: Mapping[str, Any]) -> InputSpec:
  """The `InputSpec` of model config `config` (`name` + options)."""
  entry = _entry(config['name'])
  if entry.input_spec is None:
    raise ValueError(
      f'model {entry.name!r} has no registered input spec; models with one: '
      f'{tuple(n for n, e in sorted(_MODELS.items()) if e.input_spec)}'
    )
  return entry.input_spec(config)


def _same(a: Any, b: Any) -> bool:
  as_tuple = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v
  return as_tuple(a) == as_tuple(b)


def check_fits(config: Mapping[str, Any], meta: Any) -> None:
  """Raises ValueError naming `config.model.<key>` if model config `config` (full: every
  option) cannot train on the dataset described by `meta` (an `initlab.data.Metadata`)."""
  entry = _entry(config['name'])
  if meta.task != entry.task:
    fitting = [n for n, e in sorted(_MODELS.items()) if e.task == meta.task]
    raise ValueError(
      f'config.model.name={entry.name!r} is a {entry.task!r} model but dataset '
      f'{meta.name!r} is {meta.task!r}; {meta.task!r} models: {fitting}'
    )
  for key, want in entry.data_options(config, meta).items():
    if not _same(config[key], want):
      raise ValueError(
        f'config.model.{key}={config[key]!r} does not fit dataset '
        f'{meta.name!r}; set config.model.{key}={want!r}.'
      )


def model_names() -> tuple[str, ...]:
  return tuple(sorted(_MODELS))


def preset_names() -> tuple[str, ...]:
  return tuple(_PRESETS)


def default_config(name: str) -> ml_collections.ConfigDict:
  """Config of model or preset `name` with every option at its default."""
  if name in _PRESETS:
    model, overrides = _PRESETS[name]
    config = _MODELS[model].default_config()
    config.update(overrides)
    return config
  if name not in _MODELS:
    raise ValueError(
      f'model {name!r} is unknown; valid models: {model_names()}, presets: {preset_names()}'
    )
  return _MODELS[name].default_config()


def _options(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
  """(name, constructor kwargs) of a model config, with every key checked."""
  config = dict(config.items())
  name = config.pop('name', None)
  if name is None:
    raise ValueError(f'model config has no `name`; valid names: {model_names()}')
  entry = _entry(name)
  defaults = entry.default_config()
  valid = sorted(k for k in defaults if k != 'name')
  unknown = sorted(set(config) - set(valid))
  if unknown:
    raise ValueError(f'model {name!r} has no option(s) {unknown}; valid options: {valid}')
  for key in set(entry.optional) - set(config):  # E.g. a config recorded before the option.
    config[key] = defaults[key]
  missing = sorted(set(valid) - set(config))
  if missing:
    raise ValueError(
      f'model {name!r} config is missing option(s) {missing} (defaults: '
      f'{ {k: defaults[k] for k in missing} }); start from '
      f'initlab.models.default_config({name!r})'
    )
  for key in _DTYPE_KEYS:
    if key in config:
      try:
        config[key] = jnp.dtype(config[key])
      except TypeError as e:
        raise ValueError(
          f"model {name!r}: {key}={config[key]!r} is not a dtype; e.g. 'float32', "
          "'bfloat16', 'float16'"
        ) from e
  for key, value in config.items():
    if isinstance(value, list):  # e.g. input_shape given on the command line.
      config[key] = tuple(value)
  return name, config


def build(config_model: Mapping[str, Any], *, rngs: nnx.Rngs) -> nnx.Module:
  """The model that `config_model` (`name` + options) describes, with fresh params.

  Params are created under the current mesh and logical-axis rules when eager sharding
  is on (`with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):`). Without a mesh,
  eager sharding is switched off for the construction, so params are plain
  single-device arrays that keep their logical names as metadata.
  """
  name, options = _options(config_model)
  cls = _MODELS[name].cls
  if nnx.using_eager_sharding() and jax.sharding.get_abstract_mesh().empty:
    with nnx.use_eager_sharding(False):
      return cls(**options, rngs=rngs)
  return cls(**options, rngs=rngs)
