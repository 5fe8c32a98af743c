r"""Configs of the Virgo study (issue 11, item 5): configs/gcn_cora.py's setup on any graph.

    python -m initlab.main --config=experiments/virgo/configs.py:dataset=citeseer,model=gin,depth=6 \
        --workdir=runs/virgo_citeseer_gin6

Every study of run.py is one of these configs: a GNN (hidden 64, dropout 0.5, Adam 0.01, L2
5e-4, 200 full-batch steps) under `SCHEMES`, 5 seeds each: glorot_normal (Xavier),
he_normal (Kaiming fan_in), kaiming_fan_out (Kaiming fan_out), virgo (Li, Song, Song, Wipf,
ICML 2023, arXiv 2312.02622; harmonic mean) and virgo_forward (its forward variances).
Arguments:
  dataset: one of `DATASETS`: 'cora', 'citeseer' (public Planetoid splits), 'csbm',
    'chung_lu' (registered synthetic graphs with their defaults, `initlab.data.graphs`) or
    'chung_lu_heavy' (chung_lu with `HEAVY`: heavy-tailed degrees and feature counts).
  model: 'gcn', 'sage' or 'gin'.
  depth: message-passing layers.
  seeds: seeds per scheme.
  steps: training steps (0: gcn_cora's 200).
  schemes: '+'-separated subset of `SCHEMES` ('' = all).
  smoke: seconds-long version (gcn_cora's smoke: 10 steps, 1 seed), still all schemes.
"""

import pathlib

from initlab import config as config_lib
from initlab import data
from initlab.data import graphs

BASE = pathlib.Path(__file__).resolve().parents[2] / 'configs' / 'gcn_cora.py'
SCHEMES = ('glorot_normal', 'he_normal', 'kaiming_fan_out', 'virgo', 'virgo_forward')
MODELS = ('gcn', 'sage', 'gin')
# chung_lu with heavier-tailed degrees (exponent 2.2, max 1000) and power-law feature counts
HEAVY = graphs.CHUNG_LU_HEAVY
DATASETS = ('cora', 'citeseer', 'csbm', 'chung_lu', 'chung_lu_heavy')
NAMES = {'cora': 'Cora', 'citeseer': 'CiteSeer', 'csbm': 'CSBM', 'chung_lu': 'Chung-Lu'}


def _choice(key, value, valid):
  if value not in valid:
    raise config_lib.ConfigError(f'{key}={value!r}; valid choices: {list(valid)}')


def get_config(arg=None):
  arg = config_lib.parse_arg(
    arg, dataset='cora', model='gcn', depth=2, seeds=5, steps=0, schemes='', smoke=False
  )
  _choice('dataset', arg.dataset, DATASETS)
  _choice('model', arg.model, MODELS)
  schemes = tuple(arg.schemes.split('+')) if arg.schemes else SCHEMES
  for s in schemes:
    _choice('schemes', s, SCHEMES)
  config = config_lib.load(BASE, f'depth={arg.depth}' + (',smoke' if arg.smoke else ''))
  config.init.compare = schemes
  config.seeds.num = 1 if arg.smoke else arg.seeds
  if arg.steps:
    config.train.steps = arg.steps
    config.train.checkpoint_every = arg.steps
  config.data.name = arg.dataset.removesuffix('_heavy')
  if arg.dataset == 'chung_lu_heavy':
    config.data.graph = dict(HEAVY)
  meta = data.metadata(config.data)
  config.model.name = arg.model
  config.model.num_features = meta.input_shape[-1]
  config.model.num_classes = meta.num_classes
  name = NAMES.get(arg.dataset, 'heavy-tailed Chung-Lu')
  config.name = f'{arg.model.upper()}-{arg.depth} on {name}'
  return config
