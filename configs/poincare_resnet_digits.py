r"""Poincaré ResNet-20 (widths 8-16-32, c = 0.1) on the 8x8 digits: identity vs HNN++ init.

    python -m initlab.main --config=configs/poincare_resnet_digits.py --workdir=runs/poincare

Compares Poincaré ResNet's identity init (`poincare_identity`, arXiv 2303.14027 §4) with
HNN++'s standard one (`hnnpp`, arXiv 2006.08210) over 2 seeds, with Adam (the params z, r
are Euclidean, so Riemannian Adam is plain Adam here). Arguments
(`--config=configs/poincare_resnet_digits.py:small,scheme=hnnpp`):
  smoke: seconds on a CPU (a Poincaré ResNet-8 at widths 4-4-8, 10 steps).
  small: a Poincaré ResNet-8 at widths 8-8-16, one seed, 120 steps: 98% test accuracy
    (tests/train/test_poincare_resume.py); most of its minute on a CPU is XLA compiling.
  scheme=<name>: one run with that init scheme instead of the comparison.
  conv=<mode>: what the identity init means for convs, 'reference_eye' (default) or
    'centre_tap' (see `initlab.init.families.poincare`).
"""

from initlab import config as config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, small=False, scheme='', conv='reference_eye')
  config = config_lib.default_config()
  config.name = 'Poincaré ResNet-20 on digits'
  config.model = config_lib.model_config(
    'poincare_resnet', depth=20, widths=(8, 16, 32), c=0.1, input_shape=(8, 8, 1), num_classes=10
  )
  config.init.compare = ('poincare_identity', 'hnnpp')
  config.init.poincare_identity = {'conv': arg.conv}
  config.seeds.num = 2
  config.data.name = 'digits'
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 1e-2
  config.optimizer.schedule = 'warmup_cosine'
  config.optimizer.warmup_steps = 20
  config.train.steps = 600
  config.train.batch_size = 64
  config.train.eval_every = 200
  config.train.log_every = 20
  config.train.checkpoint_every = 200
  config.report.target = 0.9
  if arg.scheme:
    config.init.name = arg.scheme
    config.init.compare = ()
    config.seeds.num = 1
  if arg.small or arg.smoke:
    config.name = 'Poincaré ResNet-8 on digits'
    config.model.depth = 8
    config.model.widths = (8, 8, 16)
    config.seeds.num = 1
    config.train.steps = 120
    config.train.eval_every = 0
    config.train.checkpoint_every = 40
    config.train.progress_bar = False
  if arg.smoke:
    config.model.widths = (4, 4, 8)
    config.train.steps = 10
    config.train.batch_size = 32
    config.train.eval_every = 5
    config.train.checkpoint_every = 5
    config.train.log_every = 5
    config.optimizer.warmup_steps = 2
  return config
