"""Full-batch node classification in `train` (datasets of task 'node_classification').

The whole graph (`initlab.data.graph(config.data)`) is ONE batch, the same at every step:
{'features', 'senders', 'receivers', 'labels', 'mask'}, where 'mask' (N,) selects the nodes
of one split: `config.data.train_split` for the loss (the masked mean cross-entropy,
`step.masked_mean`), `config.data.eval_split` for eval/loss and eval/accuracy, and 'val' and
'test' for eval/val_* and eval/test_* (every evaluation reports both). Split names: `SPLITS`.

Placement: the graph is replicated on every device of the mesh (Cora's 2708 x 1433 float32
features take 16 MB per device); message passing reads every node's neighbours, and the
graphs here are small. Params follow `config.sharding` as for any model. With replicated
data every device computes the whole step, so a run on 8 devices equals one on 1 device.
`config.train.batch_size` is not used.

The train iterator (`FullBatch`) yields the placed batch; its state {'draws': n} is the data
state checkpoints store, so resume works as for other datasets.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from initlab import config as config_lib
from initlab import data as data_lib
from initlab.train import step as step_lib

TASK = 'node_classification'
SPLITS = {'train': 'train_mask', 'val': 'val_mask', 'validation': 'val_mask', 'test': 'test_mask'}
REPORTED = ('val', 'test')  # Splits every evaluation reports as eval/<split>_{loss,accuracy}.
_GRAPH_KEYS = ('features', 'senders', 'receivers', 'labels')


def check_splits(data_cfg) -> None:
  """ConfigError naming config.data.train_split / eval_split if it is not a node split."""
  for key in ('train_split', 'eval_split'):
    if data_cfg[key] not in SPLITS:
      raise config_lib.ConfigError(
        f'config.data.{key}: {data_cfg[key]!r} is not a split of graph dataset '
        f'{data_cfg.name!r}; valid: {sorted(SPLITS)}.'
      )


class GraphBatches:
  """The graph of `config.data` placed once with `sharding`; `batch(split)` adds that split's
  mask (each mask is placed on first use)."""

  def __init__(self, data_cfg, sharding):
    self._cfg, self._sharding = data_cfg, sharding
    self._base, self._masks = None, {}

  def batch(self, split: str) -> dict[str, jax.Array]:
    key = SPLITS[split]
    if self._base is None:
      graph = data_lib.graph(self._cfg)
      self._host_masks = {k: np.asarray(graph[k]) for k in set(SPLITS.values())}
      self._base = data_lib.to_global(
        {k: np.asarray(graph[k]) for k in _GRAPH_KEYS}, self._sharding
      )
    if key not in self._masks:
      self._masks[key] = data_lib.to_global(self._host_masks[key], self._sharding)
    return {**self._base, step_lib.MASK_KEY: self._masks[key]}


class FullBatch:
  """An endless iterator of one batch, with a data iterator's `get_state`/`set_state`."""

  def __init__(self, batch):
    self.batch, self.draws = batch, 0

  def __iter__(self):
    return self

  def __next__(self):
    self.draws += 1
    return self.batch

  def get_state(self) -> dict[str, int]:
    return {'draws': self.draws}

  def set_state(self, state) -> None:
    self.draws = int(state['draws'])


def evaluate(run, state) -> tuple[dict[str, float], int]:
  """({'loss', 'accuracy'} on config.data.eval_split plus '<s>_loss', '<s>_accuracy' for s in
  REPORTED, number of eval_split nodes)."""
  eval_split = run.config.data.eval_split
  canonical = lambda s: 'val' if s == 'validation' else s
  out, count = {}, 0
  for split in dict.fromkeys((canonical(eval_split), *REPORTED)):
    sums = jax.device_get(run.eval_step(state, run.graph.batch(split)))
    metrics = step_lib.summarize_eval(sums)
    if split == canonical(eval_split):
      out.update(metrics)
      count = int(sums['count'])
    if split in REPORTED:
      out.update({f'{split}_{k}': v for k, v in metrics.items()})
  return out, count


def diagnostics(run, state) -> dict[str, Any]:
  """`initlab.diagnostics.gnn.measure(...).to_dict()` at `state` (the loss over the train
  nodes), plus 'gnn_ratios': {'forward', 'backward'} (L,) variance ratios (`gnn.ratios`)."""
  from initlab.diagnostics import gnn  # pylint: disable=g-import-not-at-top

  batch = run.graph.batch(run.config.data.train_split)
  model, mask = run.setup.model(state), batch[step_lib.MASK_KEY]
  ratios = gnn.ratios(gnn.layer_moments(model, batch, mask=mask))
  return {
    **gnn.measure(model, batch, mask=mask).to_dict(),
    'gnn_ratios': {k: [float(x) for x in v] for k, v in ratios.items()},
  }
