"""Build zoo models by name from a config: `build(config.model, rngs=...)`.

    config = initlab.models.default_config('resnet20')   # every option, with defaults
    config.width = 2.0
    model = initlab.models.build(config, rngs=nnx.Rngs(0))

A model config is `name` plus exactly the options of that model's `default_config()`
(no unknown and no missing keys), so a typo fails at build time with the key named.
Presets (e.g. 'resnet20') are default configs with some options set.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from initlab.models import mlp, resnet, transformer_lm, vit


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """One example's input: `shape` (None: a sequence length the caller picks) of floats, or of
  integer tokens in [0, vocab_size) when `vocab_size` is set."""
  shape: tuple[int | None, ...]
  vocab_size: int | None = None


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  cls: type[nnx.Module]                                  # Called as cls(**options, rngs=rngs).
  default_config: Callable[[], ml_collections.ConfigDict]
  input_spec: Callable[[Any], InputSpec] | None = None  # model config -> its input


_MODELS: dict[str, ModelEntry] = {}
_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    'resnet20': ('resnet', dict(depth=20)),
    'resnet32': ('resnet', dict(depth=32)),
    'resnet44': ('resnet', dict(depth=44)),
    'resnet56': ('resnet', dict(depth=56)),
    'resnet110': ('resnet', dict(depth=110)),
}
_DTYPE_KEYS = ('dtype', 'param_dtype')


def register_model(name: str, cls: type[nnx.Module],
                   default_config: Callable[[], ml_collections.ConfigDict],
                   input_spec: Callable[[Any], InputSpec] | None = None) -> None:
  """Adds a model: `default_config()` must return `name` plus every keyword option of `cls`;
  `input_spec(config)` says what one example's input is (for random-input diagnostics)."""
  if name in _MODELS:
    raise ValueError(f'model {name!r} is already registered')
  _MODELS[name] = ModelEntry(cls, default_config, input_spec)


def input_spec(config: Mapping[str, Any]) -> InputSpec:
  """The `InputSpec` of model config `config` (`name` + options)."""
  name = config['name']
  entry = _MODELS.get(name)
  if entry is None or entry.input_spec is None:
    raise ValueError(f'model {name!r} has no registered input spec; models with one: '
                     f'{tuple(n for n, e in sorted(_MODELS.items()) if e.input_spec)}')
  return entry.input_spec(config)


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
    raise ValueError(f'model {name!r} is unknown; valid models: {model_names()}, '
                     f'presets: {preset_names()}')
  return _MODELS[name].default_config()


def _options(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
  """(name, constructor kwargs) of a model config, with every key checked."""
  config = dict(config.items())
  name = config.pop('name', None)
  if name is None:
    raise ValueError(f'model config has no `name`; valid names: {model_names()}')
  if name not in _MODELS:
    hint = (f" (a preset: use initlab.models.default_config({name!r}))" if name in _PRESETS
            else '')
    raise ValueError(f'model name={name!r} is unknown{hint}; valid names: {model_names()}')
  defaults = _MODELS[name].default_config()
  valid = sorted(k for k in defaults if k != 'name')
  unknown = sorted(set(config) - set(valid))
  if unknown:
    raise ValueError(f'model {name!r} has no option(s) {unknown}; valid options: {valid}')
  missing = sorted(set(valid) - set(config))
  if missing:
    raise ValueError(f'model {name!r} config is missing option(s) {missing} (defaults: '
                     f'{ {k: defaults[k] for k in missing} }); start from '
                     f'initlab.models.default_config({name!r})')
  for key in _DTYPE_KEYS:
    if key in config:
      try:
        config[key] = jnp.dtype(config[key])
      except TypeError as e:
        raise ValueError(f"model {name!r}: {key}={config[key]!r} is not a dtype; e.g. 'float32', "
                         "'bfloat16', 'float16'") from e
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


_image = lambda c: InputSpec(tuple(c['input_shape']))
register_model('mlp', mlp.MLP, mlp.default_config,
               lambda c: InputSpec((math.prod(c['input_shape']),)))
register_model('resnet', resnet.ResNet, resnet.default_config, _image)
register_model('vit', vit.ViT, vit.default_config, _image)
register_model('transformer_lm', transformer_lm.TransformerLM, transformer_lm.default_config,
               lambda c: InputSpec((None,), vocab_size=c['vocab_size']))
