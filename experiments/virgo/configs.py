r"""Configs of the Virgo study (issue 11, item 5): configs/gcn_cora.py on Cora or Chung-Lu.

    python -m initlab.main --config=experiments/virgo/configs.py:dataset=chung_lu,depth=6 \
        --workdir=runs/virgo_chung_lu_6

Every study of run.py is one of these configs: GCN (hidden 64, dropout 0.5, Adam 0.01, L2
5e-4, 200 full-batch steps) under glorot_normal (Xavier), he_normal (Kaiming fan_in) and virgo
(Li, Song, Song, Wipf, ICML 2023, arXiv 2312.02622; harmonic mean), 5 seeds each. Arguments:
  dataset: 'cora' (public Planetoid split) or 'chung_lu' (the registered heavy-tailed
    Chung-Lu graph with its default options, `initlab.data.graphs.CHUNG_LU_DEFAULTS`).
  depth: message-passing layers.
  seeds: seeds per scheme.
  steps: training steps (0: gcn_cora's 200).
  smoke: seconds-long version (gcn_cora's smoke: 10 steps), still all schemes.
"""

import pathlib

from initlab import config as config_lib
from initlab.data import graphs

BASE = pathlib.Path(__file__).resolve().parents[2] / 'configs' / 'gcn_cora.py'
SCHEMES = ('glorot_normal', 'he_normal', 'virgo')
DATASETS = ('cora', 'chung_lu')


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, dataset='cora', depth=2, seeds=5, steps=0, smoke=False)
  if arg.dataset not in DATASETS:
    raise config_lib.ConfigError(f'dataset={arg.dataset!r}; valid choices: {list(DATASETS)}')
  config = config_lib.load(BASE, f'depth={arg.depth}' + (',smoke' if arg.smoke else ''))
  config.init.compare = SCHEMES
  config.seeds.num = 1 if arg.smoke else arg.seeds
  if arg.steps:
    config.train.steps = arg.steps
    config.train.checkpoint_every = arg.steps
  if arg.dataset == 'chung_lu':
    opts = graphs.CHUNG_LU_DEFAULTS
    config.name = f'GCN-{arg.depth} on Chung-Lu'
    config.data.name = 'chung_lu'
    config.model.num_features = opts['num_features']
    config.model.num_classes = opts['num_classes']
  return config
