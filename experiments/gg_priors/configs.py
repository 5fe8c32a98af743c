r"""Configs of the GG-priors study (REFERENCES.md §1.7): a small byte LM and a ResNet-20.

    python -m initlab.main --config=experiments/gg_priors/configs.py:model=lm,beta=1.0 \
        --workdir=runs/gg_lm_beta1

Arguments (`:key=value,...`):
  model: 'lm' (transformer LM on tiny_shakespeare) or 'resnet' (ResNet-20 on digits 8x8).
  beta: GG shape of the init (`initlab.init.gg.generalized_gaussian`), equal variance
    gain²/fan_in for every beta (gain 1 for the LM, sqrt(2) for the ReLU ResNet).
  steps: training steps (0: the study's default).
  smoke: a seconds-long version (tiny model, few steps).
"""
import math

from initlab import config as config_lib

# The study's sizes, chosen to fit the 20-minute CPU budget (README, "Compute").
LM_STEPS, RESNET_STEPS = 200, 100


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, model='lm', beta=2.0, steps=0, smoke=False)
  config = config_lib.default_config()
  config.init.name = 'gg_model'
  gain = 1.0 if arg.model == 'lm' else math.sqrt(2.0)
  config.init.gg_model = dict(beta=float(arg.beta), gain=gain, mode='fan_in')
  config.train.progress_bar = False
  config.train.checkpoint_every = 0   # only the final checkpoint
  config.train.keep_checkpoints = 1
  if arg.model == 'lm':
    config.name = f'GG LM beta={arg.beta}'
    config.model = config_lib.model_config(
        'transformer_lm', vocab_size=256, dim=64, depth=2, num_heads=4, mlp_ratio=4.0,
        max_len=64, activation='gelu')
    config.data.name = 'tiny_shakespeare'
    config.data.seq_len = 64
    config.data.eval_split = 'validation'
    config.optimizer.name = 'adamw'
    config.optimizer.learning_rate = 3e-3
    config.optimizer.schedule = 'warmup_cosine'
    config.optimizer.warmup_steps = 30
    config.optimizer.end_lr_ratio = 0.1
    config.optimizer.grad_clip_norm = 1.0
    config.optimizer.kwargs.b2 = 0.95
    config.train.steps = LM_STEPS
    config.train.batch_size = 32
    config.train.eval_every = 20
    config.train.eval_steps = 8
    config.train.log_every = 10
    config.report.target_metric = 'eval/loss'
  elif arg.model == 'resnet':
    config.name = f'GG ResNet-20 beta={arg.beta}'
    config.model = config_lib.model_config(
        'resnet', depth=20, width=1.0, norm='batch', input_shape=(8, 8, 1), num_classes=10)
    config.data.name = 'digits'
    config.data.eval_split = 'test'
    config.optimizer.name = 'sgd'
    config.optimizer.learning_rate = 0.1
    config.optimizer.kwargs.momentum = 0.9
    config.optimizer.kwargs.nesterov = True
    config.optimizer.schedule = 'warmup_cosine'
    config.optimizer.warmup_steps = 20
    config.train.steps = RESNET_STEPS
    config.train.batch_size = 64
    config.train.eval_every = 10
    config.train.log_every = 10
  else:
    raise ValueError(f"model={arg.model!r}; valid choices: 'lm', 'resnet'")
  if arg.steps:
    config.train.steps = int(arg.steps)
  if arg.smoke:
    if arg.model == 'lm':
      config.model.update(dict(dim=32, depth=1, num_heads=2, max_len=32))
      config.data.seq_len = 32
      config.train.batch_size = 8
    else:
      config.model.update(dict(depth=8, width=0.25))
      config.train.batch_size = 32
    config.train.steps = int(arg.steps) or 12
    config.train.eval_every = 6
    config.train.eval_steps = 2
    config.train.log_every = 1     # only the logging step is compiled (faster smoke)
    config.optimizer.warmup_steps = 2
  return config
