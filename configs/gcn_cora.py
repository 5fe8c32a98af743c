r"""A 2-layer GCN on Cora (public Planetoid split, full batch): Xavier vs Kaiming vs Virgo.

    python -m initlab.main --config=configs/gcn_cora.py --workdir=runs/gcn_cora

Kipf & Welling's setup (arXiv 1609.02907, Sec. 5.2) with hidden 64: Adam, lr 0.01, L2 5e-4,
dropout 0.5, 200 full-batch steps; 3 seeds per scheme. Every run reports eval/accuracy on the
test nodes (also eval/val_accuracy and eval/test_accuracy) and, at init, the per-layer
forward/backward variances of the GCN (`initlab.diagnostics.gnn`). Schemes: glorot_normal
(Xavier), he_normal (Kaiming fan_in) and virgo (Li et al., ICML 2023, arXiv 2312.02622, its
default harmonic mean of the forward and backward variances). Arguments:
  smoke: seconds on a CPU (10 steps, 1 seed).
  depth=<L>: message-passing layers (default 2).
  scheme=<name>: one run with that init scheme instead of the comparison.
"""

from initlab import config as config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, depth=2, scheme='')
  config = config_lib.default_config()
  config.name = f'GCN-{arg.depth} on Cora'
  config.data.name = 'cora'
  config.data.train_split = 'train'
  config.data.eval_split = 'test'
  config.model = config_lib.model_config(
    'gcn', num_features=1433, num_classes=7, depth=arg.depth, width=64, dropout=0.5
  )
  config.init.compare = ('glorot_normal', 'he_normal', 'virgo')
  config.seeds.num = 3
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 0.01
  config.optimizer.weight_decay = 5e-4  # adam takes none: added to the loss as L2.
  config.train.steps = 200
  config.train.eval_every = 20
  config.train.log_every = 10
  config.train.checkpoint_every = 100
  config.diagnostics_at_init = True
  if arg.scheme:
    config.init.name = arg.scheme
    config.init.compare = ()
    config.seeds.num = 1
  if arg.smoke:
    config.seeds.num = 1
    config.train.steps = 10
    config.train.eval_every = 5
    config.train.checkpoint_every = 5
    config.train.log_every = 5
    config.train.progress_bar = False
  return config
