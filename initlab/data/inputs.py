"""Config-facing entry points: `metadata(config.data)` and `build(config.data)`.

Fields read from the `config.data` ConfigDict (or a dict); None = default:
  name:        a registered dataset (`initlab.data.dataset_names()`, e.g.
               'digits', 'tiny_shakespeare') or any TFDS catalog name, which is
               read as image classification (`initlab.data.catalog`).
  train_split: split counted in `num_train_examples`, default 'train'.
  classes:     label ids to keep, relabelled to their index (classification only;
               `initlab.data.subset`); () or None = all classes.
  and the fields its dataset reads (its module says which): data_dir (all),
  seq_len ('tiny_shakespeare'), image_key, label_key, image_scale (TFDS catalog).
Batches always use the keys 'image' float32 (B, *input_shape) and 'label'
int32 (B,) for classification, 'inputs' and 'targets' int32 (B, seq_len) for
language modelling.
"""

import dataclasses
from typing import Any

import grain

from initlab.data import pipeline
from initlab.data import registry
from initlab.data import subset


@dataclasses.dataclass(frozen=True)
class Metadata:
  """What the trainer needs to know about a dataset.

  Attributes:
    name: the dataset name from the config.
    task: 'classification', 'lm' or 'node_classification' (`registry.TASKS`).
    input_shape: per-example shape of 'image' (classification) or 'inputs'
      (lm, `(seq_len,)`); may hold None for variable-size TFDS images.
    num_classes: number of labels (classification), else None.
    vocab_size: number of token ids (lm), else None.
    num_train_examples: examples (lm: windows) in the train split; a graph: its train nodes.
    graph_stats: for graph datasets (task 'node_classification'), the facts init schemes
      read (`initlab.data.graphs.graph_stats`), else None.
  """

  name: str
  task: str
  input_shape: tuple[int | None, ...]
  num_classes: int | None
  vocab_size: int | None
  num_train_examples: int
  graph_stats: Any = dataclasses.field(default=None, compare=False, repr=False)


def _open(cfg, split: str) -> tuple[registry.DatasetEntry, registry.Split]:
  """The one place a split is opened: its dataset's opener, then `config.data.classes`."""
  entry = registry.lookup(registry.option(cfg, 'name'), key='data.name')
  classes = subset.classes_option(cfg, entry)
  opened = entry.open_split(cfg, split)
  if classes:
    opened = subset.keep_classes(cfg, split, opened, classes)
  return entry, opened


def metadata(cfg) -> Metadata:
  """Returns the `Metadata` of `config.data` (opens its train split)."""
  entry, split = _open(cfg, registry.option(cfg, 'train_split', 'train'))
  num = len(split.source) if split.num_examples is None else split.num_examples
  return Metadata(
    cfg['name'],
    entry.task,
    tuple(split.input_shape),
    split.num_classes,
    split.vocab_size,
    num,
    split.graph_stats,
  )


def build(
  cfg,
  *,
  split: str,
  batch_size: int,
  seed: int,
  shuffle: bool = True,
  num_epochs: int | None = None,
  drop_remainder: bool = True,
  process_index: int | None = None,
  process_count: int | None = None,
) -> grain.DatasetIterator:
  """Returns `pipeline.make_iterator` over `split` of `config.data`.

  Args:
    cfg: the `config.data` ConfigDict (fields in the module docstring).
    split: TFDS split string, e.g. 'train', 'test', 'validation[:50%]'.
    batch_size: GLOBAL batch size.
    seed: data seed (shuffling).
    shuffle, num_epochs, drop_remainder, process_index, process_count: as in
      `pipeline.make_iterator` (use shuffle=False, num_epochs=1,
      drop_remainder=False for exact evaluation with a 'mask').
  """
  _, opened = _open(cfg, split)
  return pipeline.make_iterator(
    opened.source,
    batch_size=batch_size,
    seed=seed,
    shuffle=shuffle,
    num_epochs=num_epochs,
    drop_remainder=drop_remainder,
    transform=opened.transform,
    process_index=process_index,
    process_count=process_count,
  )
