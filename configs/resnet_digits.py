r"""ResNet-20 on the 8x8 digits (the net is fully convolutional, so 8x8x1 inputs work as is).

    python -m initlab.main --config=configs/resnet_digits.py --workdir=runs/resnet_digits

Compares He-normal with Fixup-style init (`fixup`) over 2 seeds. Arguments:
  smoke: seconds on a CPU (a ResNet-8 at width 0.25, 10 steps).
  scheme=<name>: one run with that init scheme instead of the comparison.
"""

from initlab import config as config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, scheme='')
  config = config_lib.default_config()
  config.name = 'ResNet-20 on digits'
  config.model = config_lib.model_config(
    'resnet', depth=20, width=1.0, norm='batch', input_shape=(8, 8, 1), num_classes=10
  )
  config.init.compare = ('he_normal', 'fixup')
  config.seeds.num = 2
  config.data.name = 'digits'
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.1
  config.optimizer.kwargs.momentum = 0.9
  config.optimizer.kwargs.nesterov = True
  config.optimizer.schedule = 'warmup_cosine'
  config.optimizer.warmup_steps = 50
  config.optimizer.weight_decay = 5e-4
  config.train.steps = 1000
  config.train.batch_size = 128
  config.train.eval_every = 200
  config.train.log_every = 20
  config.train.checkpoint_every = 200
  config.diagnostics_at_init = True
  if arg.scheme:
    config.init.name = arg.scheme
    config.init.compare = ()
    config.seeds.num = 1
  if arg.smoke:
    config.model.depth = 8
    config.model.width = 0.25
    config.seeds.num = 1
    config.train.steps = 10
    config.train.batch_size = 32
    config.train.eval_every = 5
    config.train.checkpoint_every = 5
    config.train.log_every = 5
    config.optimizer.warmup_steps = 2
    config.train.progress_bar = False
  return config
