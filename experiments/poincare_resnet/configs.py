r"""Configs of the Poincaré ResNet study (issue 12, item 5): configs/poincare_resnet_digits.py and
configs/resnet_digits.py on equal terms (same depth, data, batch and steps).

    python -m initlab.main --config=experiments/poincare_resnet/configs.py:model=poincare \
        --workdir=runs/poincare_study

Arguments:
  model: 'poincare' (Poincaré ResNet-20, widths 8-16-32, c = 0.1, identity init, Adam 1e-2:
    configs/poincare_resnet_digits.py) or 'euclid' (ResNet-20, batch norm, He init, SGD
    Nesterov 0.1: configs/resnet_digits.py). Each keeps its base config's optimizer.
  bn: 'midpoint' (the model's batch norm) or 'frechet': the same model whose batch norm takes
    the Fréchet mean by Karcher flow (`initlab.hyperbolic.ball.frechet_mean`, `KARCHER_ITERS`
    steps) instead of the gyromidpoint. The model has no such option: run.py swaps the mean
    for the runs of this config (`run.frechet_bn`); the name records it.
  seeds: seeds of the init scheme.
  steps: training steps (0: `STEPS`).
  smoke: seconds-long version (the base configs' smoke models, 10 steps, 1 seed).
"""

import pathlib

from initlab import config as config_lib

BASE = pathlib.Path(__file__).resolve().parents[2] / 'configs'
# Reduced from the base configs' 600/1000 steps to fit 2 shared CPU cores (README, "Compute").
STEPS, BATCH = 300, 64
KARCHER_ITERS = 5
MODELS = dict(
  poincare=('poincare_resnet_digits.py', 'poincare_identity'),
  euclid=('resnet_digits.py', 'he_normal'),
)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, model='poincare', bn='midpoint', seeds=3, steps=0, smoke=False)
  if arg.model not in MODELS:
    raise config_lib.ConfigError(f'model={arg.model!r}; valid choices: {list(MODELS)}')
  if arg.bn not in ('midpoint', 'frechet') or (arg.bn == 'frechet' and arg.model != 'poincare'):
    raise config_lib.ConfigError(
      f"bn={arg.bn!r} with model={arg.model!r}; valid: 'midpoint', or 'frechet' with 'poincare'"
    )
  base, scheme = MODELS[arg.model]
  config = config_lib.load(BASE / base, 'smoke' if arg.smoke else None)
  config.init.name = scheme
  config.init.compare = ()
  config.seeds.num = 1 if arg.smoke else arg.seeds
  config.diagnostics_at_init = False
  config.train.progress_bar = False
  if not arg.smoke:
    steps = arg.steps or STEPS
    config.train.update(
      dict(steps=steps, batch_size=BATCH, eval_every=steps, log_every=20, checkpoint_every=steps)
    )
    config.optimizer.warmup_steps = 20
  bn = ', Fréchet-mean BN' if arg.bn == 'frechet' else ''
  config.name = f'{"Poincaré " if arg.model == "poincare" else ""}ResNet-{config.model.depth}{bn}'
  return config
