r"""Quickstart study: 4 init schemes x 3 seeds of a ReLU MLP on the 8x8 digits (offline).

    python -m initlab.main --config=configs/quickstart.py --workdir=runs/quickstart

Measured time: README.md, 'Measured'. Re-running the command resumes a killed study. Then read
runs/quickstart/report.md. Arguments (`--config=configs/quickstart.py:smoke`):
  smoke: seconds on a CPU (2 schemes x 2 seeds, 30 steps); used by the tests.
Any key can be overridden, e.g. `--config.train.steps=500 --config.init.compare="('orthogonal',)"`.
"""

from initlab import config as config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False)
  config = config_lib.default_config()
  config.name = 'Quickstart: init schemes on digits (MLP)'
  config.model = config_lib.model_config(
    'mlp', input_shape=(8, 8, 1), depth=4, width=128, activation='relu', num_classes=10
  )
  config.init.compare = ('he_normal', 'glorot_uniform', 'orthogonal', 'lecun_normal')
  config.data.name = 'digits'
  config.data.eval_split = 'test'
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.05
  config.optimizer.kwargs.momentum = 0.9
  config.optimizer.schedule = 'cosine'
  config.train.steps = 300
  config.train.batch_size = 64
  config.train.eval_every = 50
  config.train.log_every = 10
  config.train.checkpoint_every = 100
  config.train.keep_checkpoints = 2
  config.seeds.num = 3
  config.diagnostics_at_init = True
  config.report.target = 0.9
  if arg.smoke:
    config.init.compare = ('he_normal', 'orthogonal')
    config.seeds.num = 2
    config.train.steps = 30
    config.train.eval_every = 10
    config.train.log_every = 5
    config.train.checkpoint_every = 10
    config.train.progress_bar = False
  return config
