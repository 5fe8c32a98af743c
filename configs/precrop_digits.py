r"""Pruning at init vs PreCropping: a ResNet-20 on the 8x8 digits at one density, one arm.

    python -m initlab.main --config=configs/precrop_digits.py:arm=precrop,density=0.1 \
        --workdir=runs/precrop_d10
    python -m initlab.main --config=configs/precrop_digits.py:arm=mask,score=snip,density=0.1 \
        --workdir=runs/snip_d10

Arms (arXiv 2203.02549's comparison; equal kernel params in every arm but 'dense'):
  dense     he_normal, all params.
  mask      `pai_mask`: the dense net under the global top-k mask of `score` at `density`.
  shuffled  the same mask permuted within each layer (same layer densities p_l).
  random    `pai_mask` with score 'random' (the same density in every layer, in expectation).
  precrop   `precrop`: a dense narrower net whose layers keep the `score` mask's densities
            (initlab's channel rule; the paper's exact rule is not public).
  uniform   the dense net with every width scaled by one factor, so that its kernel params
            are density x the dense net's (`uniform_width`).
Arguments: arm, score ('snip', 'grasp', 'synflow'), density, seeds, smoke (a ResNet-8 at
width 0.5, 10 steps). Training: resnet_digits.py's (SGD + Nesterov, cosine, 1000 steps).
"""

import pathlib

import numpy as np

from initlab import config as config_lib

ARMS = ('dense', 'mask', 'shuffled', 'random', 'precrop', 'uniform')
SCORES = ('snip', 'grasp', 'synflow')
BASE = pathlib.Path(__file__).resolve().parent / 'resnet_digits.py'


def uniform_width(model_config, density: float) -> float:
  """The width multiplier w whose ResNet (stage widths round(16w, 32w, 64w)) has the kernel
  params closest to `density` x those of `model_config` (`initlab.init.precrop.layout`)."""
  from initlab.init import precrop  # pylint: disable=g-import-not-at-top

  target = density * precrop.layout(model_config).kernel_params()

  def kernels(w):
    c = model_config.copy_and_resolve_references()
    c.width = float(w)
    return precrop.layout(c).kernel_params()

  grid = np.linspace(1 / 16, model_config.width, 2048)  # 16w >= 1: every stage has a channel.
  return float(grid[int(np.argmin([abs(kernels(w) - target) for w in grid]))])


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, arm='precrop', score='synflow', density=0.1, seeds=3, smoke=False)
  for name, value, valid in (('arm', arg.arm, ARMS), ('score', arg.score, SCORES)):
    if value not in valid:
      raise config_lib.ConfigError(f'<arg {name}>: {value!r}; valid: {", ".join(valid)}')
  if not 0 < arg.density <= 1:
    raise config_lib.ConfigError(f'<arg density>: {arg.density!r}; expected a number in (0, 1]')
  config = config_lib.load(BASE, 'scheme=he_normal' + (',smoke' if arg.smoke else ''))
  if arg.smoke:
    config.model.width = 0.5
  config.name = f'ResNet-{config.model.depth} on digits: {arg.arm} at density {arg.density:g}'
  config.seeds.num = 1 if arg.smoke else arg.seeds
  config.diagnostics_at_init = False
  options = dict(score=arg.score, density=float(arg.density))
  if arg.arm in ('mask', 'shuffled', 'random'):
    config.init.name = 'pai_mask'
    config.init.pai_mask = dict(options, shuffle=arg.arm == 'shuffled')
    if arg.arm == 'random':
      config.init.pai_mask.score = 'random'
  elif arg.arm == 'precrop':
    config.init.name = 'precrop'
    config.init.precrop = options
  elif arg.arm == 'uniform':
    config.model.width = uniform_width(config.model, arg.density)
  return config
