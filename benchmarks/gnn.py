r"""Full-batch GCN training epoch: initlab vs PyTorch Geometric on CPU; Virgo's init cost.

    pip install -e .[bench]          # torch (CPU) and torch_geometric
    python benchmarks/gnn.py                         # Cora and a 100k-node Chung-Lu graph
    python benchmarks/gnn.py --graphs=cora --repeats=9

One epoch = one optimizer step on the whole graph: forward with dropout, masked mean
cross-entropy over the train nodes, backward, Adam update. Both sides run the model of
configs/gcn_cora.py (Kipf & Welling, arXiv 1609.02907: 2 GCN layers, hidden 64, ReLU,
dropout 0.5 on every layer's input, Adam lr 0.01, L2 5e-4):

  initlab  `initlab.train.Run` built from configs/gcn_cora.py with init 'virgo'; the timed
           function is `run.lean_step`, the jitted step the training loop runs between log
           steps (donated state, device-resident graph, degrees and normalization recomputed
           in every step as in the model).
  PyG      `torch_geometric.nn.GCNConv` x depth (cached=False: it also renormalizes every
           step), `torch.optim.Adam(weight_decay=5e-4)` (L2 on all params; initlab's adds it
           to kernels only), eager CPU torch with `torch.set_num_threads(--threads)`.

Timing: after `--warmup` untimed epochs each, `--repeats` rounds alternate between the two
(so load from other processes hits both alike); a round times `n` epochs and the table shows
the median ms per epoch; ratio = initlab / PyG (goal <= 1). XLA's CPU backend uses all the
process's cores too (its thread pool is not limited by --threads).

Virgo: `initlab.init.virgo.variances` (Li et al., arXiv 2312.02622) on the same graph,
first call (with tracing/compilation) and the median of warm calls, against one initlab epoch.
If torch_geometric is not installed the PyG columns say so and the rest still runs.
"""

import itertools
import os
import statistics
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import gcn_cora

from initlab import config as config_lib
from initlab import data as data_lib
from initlab import init as ii
from initlab import train

_GRAPHS = flags.DEFINE_list('graphs', ['cora', 'synthetic'], 'Graphs: cora, synthetic.')
_NODES = flags.DEFINE_integer('nodes', 100_000, 'Nodes of the synthetic (Chung-Lu) graph.')
_DEGREE = flags.DEFINE_float('degree', 10.0, 'Mean degree of the synthetic graph.')
_FEATURES = flags.DEFINE_integer('features', 128, 'Feature size of the synthetic graph.')
_DEPTH = flags.DEFINE_integer('depth', 2, 'GCN layers.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed epochs per side first.')
_REPEATS = flags.DEFINE_integer('repeats', 7, 'Timed rounds per side (median is shown).')
_MIN_ROUND = flags.DEFINE_float('min_round_s', 0.2, 'Each round runs epochs for at least this.')
_THREADS = flags.DEFINE_integer('threads', 2, 'torch.set_num_threads.')


def _config(name):
  config = gcn_cora.get_config(f'scheme=virgo,depth={_DEPTH.value}')
  config.diagnostics_at_init = False
  config.train.progress_bar = False
  if name == 'synthetic':
    config.name = f'GCN-{_DEPTH.value} on Chung-Lu {_NODES.value}'
    config.data.name = 'chung_lu'
    config.data.graph = {
      'num_nodes': _NODES.value,
      'mean_degree': _DEGREE.value,
      'num_features': _FEATURES.value,
      'num_classes': 5,
    }
    config.model.num_features = _FEATURES.value
    config.model.num_classes = 5
  return config


def _initlab_epoch(run):
  """(epoch function, graph as numpy): `run.lean_step` on the train batch, state in a box."""
  with jax.set_mesh(run.mesh):
    state, _, _ = run.initial_state()
  batch = run.graph.batch(run.config.data.train_split)
  box = [state]

  def epoch():
    with jax.set_mesh(run.mesh):
      box[0], _ = run.lean_step(box[0], batch)
    return box[0].step

  return epoch, data_lib.graph(run.config.data)


def _pyg_epoch(graph, model_cfg, threads):
  """The same GCN and step in PyG, or (None, reason) if it is not installed."""
  try:
    import torch
    from torch_geometric.nn import GCNConv
  except ImportError as e:
    return None, f'PyG not installed ({e}); pip install -e .[bench]'
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  dims = [model_cfg.num_features] + [model_cfg.width] * (model_cfg.depth - 1)
  dims.append(model_cfg.num_classes)

  class GCN(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.convs = torch.nn.ModuleList(GCNConv(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x, edge_index):
      for l, conv in enumerate(self.convs):
        if l:
          x = torch.relu(x)
        x = conv(torch.nn.functional.dropout(x, model_cfg.dropout, self.training), edge_index)
      return x

  model = GCN()
  opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
  x = torch.from_numpy(np.array(graph['features']))
  # Row 0 = source, row 1 = target (PyG's flow 'source_to_target'): senders -> receivers.
  edge_index = torch.from_numpy(np.stack([graph['senders'], graph['receivers']]).astype(np.int64))
  y = torch.from_numpy(np.array(graph['labels'], np.int64))
  mask = torch.from_numpy(np.array(graph['train_mask']))
  model.train()

  def epoch():
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x, edge_index)[mask], y[mask])
    loss.backward()
    opt.step()
    return loss

  return epoch, torch.__version__


def _round(fn, n):
  """Seconds per call over `n` calls, blocking on the last result."""
  start = time.perf_counter()
  for _ in range(n):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / n


def _calls_per_round(fn):
  once = _round(fn, 1)
  return max(1, int(_MIN_ROUND.value / max(once, 1e-6)))


def _virgo_times(graph, model_cfg):
  """(first call s, median warm call s) of `ii.virgo.variances` on `graph`."""

  def call():
    return ii.virgo.variances(
      graph['senders'],
      graph['receivers'],
      graph['features'],
      num_layers=model_cfg.depth,
      hidden=model_cfg.width,
      num_classes=model_cfg.num_classes,
    )

  start = time.perf_counter()
  jax.block_until_ready(call())
  first = time.perf_counter() - start
  return first, statistics.median(_round(call, 1) for _ in range(max(3, _REPEATS.value // 2)))


def bench(name):
  config = _config(name)
  with tempfile.TemporaryDirectory() as workdir:
    run = train.Run(config, workdir)
    ours, graph = _initlab_epoch(run)
    model_cfg = config_lib.full_model_config(config)
    theirs, info = _pyg_epoch(graph, model_cfg, _THREADS.value)
    fns = {'initlab': ours} if theirs is None else {'initlab': ours, 'pyg': theirs}
    for fn in fns.values():
      _round(fn, _WARMUP.value)
    calls = {k: _calls_per_round(fn) for k, fn in fns.items()}
    times = {k: [] for k in fns}
    for _ in range(_REPEATS.value):
      for k, fn in fns.items():
        times[k].append(_round(fn, calls[k]))
    virgo_first, virgo = _virgo_times(graph, model_cfg)
  ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
  n, e = len(graph['labels']), len(graph['senders'])
  return {
    'name': name,
    'nodes': n,
    'edges': e,
    'features': graph['features'].shape[1],
    'ours': ms['initlab'],
    'theirs': ms.get('pyg'),
    'pyg_info': info,
    'virgo_first': 1e3 * virgo_first,
    'virgo': 1e3 * virgo,
  }


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  print(
    f'jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()}, '
    f'{os.cpu_count()} CPUs; GCN depth {_DEPTH.value}, width 64, dropout 0.5, Adam; '
    f'torch threads {_THREADS.value} (XLA uses all cores); median of {_REPEATS.value} rounds'
  )
  rows = [bench(name) for name in _GRAPHS.value]
  note = next((r['pyg_info'] for r in rows if r['theirs'] is None), None)
  if note:
    print(f'PyG column skipped: {note}')
  else:
    print(f'torch {rows[0]["pyg_info"]}')
  head = (
    f'{"graph":<10} {"nodes":>7} {"edges":>9} {"F":>5} {"initlab ms":>11} {"PyG ms":>8} '
    f'{"ratio":>6} {"virgo ms":>9} {"virgo/ep":>9} {"virgo 1st":>10}'
  )
  print(head)
  print('-' * len(head))
  for r in rows:
    theirs = f'{r["theirs"]:8.2f}' if r['theirs'] else f'{"n/a":>8}'
    ratio = f'{r["ours"] / r["theirs"]:6.2f}' if r['theirs'] else f'{"n/a":>6}'
    print(
      f'{r["name"]:<10} {r["nodes"]:>7} {r["edges"]:>9} {r["features"]:>5} '
      f'{r["ours"]:11.2f} {theirs} {ratio} {r["virgo"]:9.2f} {r["virgo"] / r["ours"]:9.2f} '
      f'{r["virgo_first"]:10.1f}'
    )
  print(
    'ratio = initlab / PyG ms per epoch (goal <= 1); virgo ms = warm variances() call, '
    'virgo/ep = that / one initlab epoch, virgo 1st = first call incl. compilation (ms).'
  )


if __name__ == '__main__':
  app.run(main)
