r"""Configs of the GG-priors study: configs/lm_shakespeare.py and configs/resnet_digits.py, shrunk.

    python -m initlab.main --config=experiments/gg_priors/configs.py:model=lm,beta=1.0 \
        --workdir=runs/gg_lm_beta1

Every run of the study is one of these configs (run.py builds them from the same arguments):
  model: 'lm' (transformer LM on tiny_shakespeare) or 'resnet' (ResNet-20 on digits 8x8).
  beta: GG shape of the init (`initlab.init.gg.generalized_gaussian`), equal variance
    gain²/fan_in for every beta (gain 1 for the LM, sqrt(2) for the ReLU ResNet).
  seed: the run's seed (seeds.init, .data and .dropout).
  steps: training steps (0: the study's default).
  smoke: a seconds-long version (from the base configs' smoke versions; few steps).
  backslash=λ: BackSlash after the optimizer with rdo = λ·N (`optimizer.extra`; 0: off).
  finetune=K: DeepShape's fine-tune instead: K steps at a constant 0.1x peak lr, evaluated at
    the end, data seed + 1000 (the run starts from given params: `train.run(start_from=)`).
"""

import math
import pathlib

from initlab import config as config_lib

BASE = pathlib.Path(__file__).resolve().parents[2] / 'configs'
# The study's sizes, chosen to fit the 20-minute CPU budget (README, "Compute").
LM_STEPS, RESNET_STEPS = 200, 100
FT_LR_RATIO, FT_DATA_SEED = 0.1, 1000


def get_config(arg=None):
  arg = config_lib.parse_arg(
    arg, model='lm', beta=2.0, seed=0, steps=0, smoke=False, backslash=0.0, finetune=0
  )
  base = dict(lm='lm_shakespeare.py', resnet='resnet_digits.py').get(arg.model)
  if base is None:
    raise config_lib.ConfigError(f"model={arg.model!r}; valid choices: 'lm', 'resnet'")
  config = config_lib.load(BASE / base, 'smoke' if arg.smoke else None)
  config.init.name = 'gg_model'
  config.init.compare = ()
  gain = 1.0 if arg.model == 'lm' else math.sqrt(2.0)
  config.init.gg_model = dict(beta=float(arg.beta), gain=gain, mode='fan_in')
  config.seeds.num = 1
  config.diagnostics_at_init = False
  config.optimizer.weight_decay = 0.0
  config.train.progress_bar = False
  config.train.checkpoint_every = 0  # only the final checkpoint
  config.train.keep_checkpoints = 1
  if arg.model == 'lm':
    config.name = f'GG LM beta={arg.beta}'
    if not arg.smoke:
      config.model.update(dict(dim=64, depth=2, max_len=64))
      config.data.seq_len = 64
      config.train.batch_size = 32
    config.optimizer.learning_rate = 3e-3
    config.optimizer.warmup_steps = 30
    config.train.update(dict(steps=LM_STEPS, eval_every=20, eval_steps=8, log_every=10))
  else:
    config.name = f'GG ResNet-20 beta={arg.beta}'
    config.optimizer.warmup_steps = 20
    config.train.update(dict(steps=RESNET_STEPS, eval_every=10, log_every=10))
    if not arg.smoke:
      config.train.batch_size = 64
  if arg.smoke:
    config.train.update(dict(steps=12, eval_every=6, eval_steps=2, log_every=1))
    config.optimizer.warmup_steps = 2
  if arg.steps:
    config.train.steps = arg.steps
  for key in ('init', 'data', 'dropout'):
    config.seeds[key] = arg.seed
  if arg.backslash:
    config.optimizer.extra = (('backslash', dict(rdo_per_param=arg.backslash)),)
  if arg.finetune:
    config.optimizer.schedule = 'constant'
    config.optimizer.learning_rate *= FT_LR_RATIO
    config.train.steps = config.train.eval_every = arg.finetune
    config.seeds.data = arg.seed + FT_DATA_SEED
  return config
