"""The width parametrization (standard, NTK, μP) of a zoo model: builds the model abstractly.

    p = parametrize.from_config(config, model_config)   # a run's `config.parametrization`
    p = parametrize.from_model_config('mup', model_config, base_width=64)

The tables, factors and checks are `initlab.init.families.parametrization` (pure: param trees
in, no model); this module builds the models they are computed from (`initlab.models`), so
`initlab.init` never imports the model zoo.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from initlab import models
from initlab.errors import ConfigError
from initlab.init.families import parametrization as param_lib
from initlab.init.families.parametrization import Parametrization


def abstract_params(model_config) -> tuple[Any, dict]:
  """(abstract `nnx.Param` state, init_hints()) of the zoo model `model_config`."""
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: models.build(model_config, rngs=nnx.Rngs(0)))
  hints = model.init_hints() if hasattr(model, 'init_hints') else {}
  return nnx.state(model, nnx.Param), hints


def from_model_config(
  name: str,
  model_config,
  base_width: float,
  *,
  width_key_: str = '',
  optimizer: str = 'adam',
  zero_readout: bool = False,
) -> Parametrization:
  """The parametrization `name` of zoo model `model_config` (a full model ConfigDict).

  The base model is `model_config` with its width option (`width_key_`, default the first of
  WIDTH_KEYS it has: mlp/resnet 'width', vit/transformer_lm 'dim') set to `base_width`.
  'standard' needs no base (`base_width` may be 0). `optimizer`: 'adam' or 'sgd'.
  """
  param_lib.check(
    name, base_width, model_config=model_config, width_key_=width_key_, zero_readout=zero_readout
  )
  if name == 'standard':
    return Parametrization.standard()
  params, hints = abstract_params(model_config)
  base, _ = abstract_params(param_lib.with_width(model_config, base_width, width_key_))
  return Parametrization.build(
    name,
    params,
    base,
    classifier=hints.get('classifier'),
    optimizer=optimizer,
    zero_readout=zero_readout,
  )


def from_config(config, model_config) -> Parametrization:
  """The parametrization of a run config (`config.parametrization`; see `initlab.config`) for
  the model config `model_config` the run builds; bad values raise ConfigError."""
  p = config.parametrization
  try:
    return from_model_config(
      p.name,
      model_config,
      p.base_width,
      width_key_=p.width_key,
      optimizer=param_lib.optimizer_kind(config.optimizer.name),
      zero_readout=p.zero_readout,
    )
  except ValueError as e:
    raise ConfigError(f'config.{e}') from None
