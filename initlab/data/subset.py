"""`config.data.classes`: keep some classes of a classification dataset, relabelled.

With `classes=(5, 6, 7, 8, 9)` every split opened for a run (`initlab.data.build`,
`metadata`) holds only the examples whose label is one of them, labelled by their position
in `classes` (5 -> 0, ..., 9 -> 4), and `num_classes` is 5. `()` keeps every class.
The labels of a split are read once per process and options (`_LABELS`), so opening it
again (eval, data stages, another subset) reads no record.
"""

import dataclasses
import numbers
from typing import Any, Callable

import numpy as np

from initlab.data import pipeline
from initlab.data import registry
from initlab.data import sources
from initlab.errors import ConfigError

KEY = 'config.data.classes'
# (dataset, split, data_dir, other options, number of records) -> int64 labels of the split.
_LABELS: dict[tuple, np.ndarray] = {}


def classes_option(cfg, entry: registry.DatasetEntry) -> tuple[int, ...]:
  """`config.data.classes` as a tuple of ints, checked (not yet against the labels)."""
  classes = registry.option(cfg, 'classes', ())
  if isinstance(classes, (str, bytes)) or not isinstance(classes, (tuple, list)):
    raise ConfigError(f'{KEY}: expected a tuple of int label ids (() = all), got {classes!r}.')
  if not classes:
    return ()
  bad = [k for k in classes if isinstance(k, bool) or not isinstance(k, numbers.Integral)]
  if bad:
    raise ConfigError(f'{KEY}={tuple(classes)!r}: label ids must be ints, got {bad[0]!r}.')
  classes = tuple(int(k) for k in classes)
  twice = sorted({k for k in classes if classes.count(k) > 1})
  if twice:
    raise ConfigError(f'{KEY}={classes!r}: duplicate label ids {twice}; give each class once.')
  if entry.task != 'classification':
    raise ConfigError(
      f'{KEY}={classes!r} is for classification datasets; data.name='
      f'{registry.option(cfg, "name")!r} is a {entry.task!r} dataset (set classes=()).'
    )
  return classes


class Subset:
  """Records `indices` of `source`, in that order: a random-access source for grain."""

  def __init__(self, source, indices):
    self.source = source
    self.indices = np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int):
    return self.source[int(self.indices[index])]

  def __repr__(self) -> str:
    return f'Subset({len(self)} of {len(self.source)} records of {self.source!r})'


@dataclasses.dataclass(frozen=True)
class Relabel:
  """`transform`, then 'label' -> its position in `classes` (int32). Picklable."""

  transform: Callable[[Any], dict[str, Any]] | None
  classes: tuple[int, ...]

  def __call__(self, record) -> dict[str, Any]:
    ex = dict(self.transform(record) if self.transform is not None else record)
    ex['label'] = np.int32(self.classes.index(int(ex['label'])))
    return ex


def keep_classes(cfg, split_name: str, split: registry.Split, classes) -> registry.Split:
  """`split` restricted to `classes` (`classes_option`), relabelled 0..len(classes)-1."""
  name = registry.option(cfg, 'name')
  n = split.num_classes
  if n is not None:
    outside = [k for k in classes if not 0 <= k < n]
    if outside:
      raise ConfigError(
        f'{KEY}={classes!r}: label {outside[0]} is not a class of data.name={name!r} '
        f'(valid labels: 0..{n - 1}).'
      )
  labels = _labels(cfg, split_name, split)
  kept = np.flatnonzero(np.isin(labels, classes))
  if not len(kept):
    raise ConfigError(
      f'{KEY}={classes!r}: split {split_name!r} of data.name={name!r} has no example of '
      'these classes.'
    )
  return dataclasses.replace(
    split,
    source=Subset(split.source, kept),
    transform=Relabel(split.transform, classes),
    num_classes=len(classes),
    num_examples=len(kept),
  )


def _labels(cfg, split_name: str, split: registry.Split) -> np.ndarray:
  """int64 (len(split.source),) labels of the split's records, cached (`_LABELS`)."""
  source = split.source
  key = _cache_key(cfg, split_name, len(source))
  if key not in _LABELS:
    label_of = _label_reader(split.transform)
    labels = [label_of(source[i]) for i in range(len(source))]
    _LABELS[key] = np.asarray(labels, np.int64).reshape(len(source))
  return _LABELS[key]


def _label_reader(transform) -> Callable[[Any], int]:
  """record -> label: the record's label key when the transform names one (no decoding of
  the image), else the transformed example's 'label'."""
  if isinstance(transform, pipeline.ImageTransform):
    label_key = transform.label_key
    return lambda record: int(record[label_key])
  if transform is None:
    return lambda record: int(record['label'])
  return lambda record: int(transform(record)['label'])


def _cache_key(cfg, split_name: str, num_records: int) -> tuple:
  """The split's identity: dataset, split, data_dir and the dataset's other options."""
  options = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
  skip = ('classes', 'train_split', 'eval_split', 'data_dir')
  rest = tuple(sorted((k, repr(v)) for k, v in options.items() if k not in skip))
  data_dir = registry.option(cfg, 'data_dir') or sources.default_data_dir()
  return (registry.option(cfg, 'name'), split_name, data_dir, rest, num_records)
