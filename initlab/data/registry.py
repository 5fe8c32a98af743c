"""The dataset registry: what `config.data.name` may be, and how each dataset is read.

Each dataset registers itself in its own module by decorating the function that opens one
split of it:

    @register_dataset('digits', task='classification', builder=Digits)
    def open_split(cfg, split: str) -> Split: ...

and `initlab.data.__init__` imports every dataset module, so the registry is complete once
`initlab.data` is imported. The name '*' is the fallback entry: it opens any TFDS catalog
name that is not registered (`initlab.data.catalog`, image classification).
"""

import dataclasses
from typing import Any, Callable

import tensorflow_datasets as tfds

# The batch keys of each task: `Split.transform`; 'node_classification': one full-batch graph
# (`initlab.data.graphs`).
TASKS = ('classification', 'lm', 'node_classification')
CATALOG = '*'  # Entry name of the TFDS-catalog fallback.


@dataclasses.dataclass(frozen=True)
class Split:
  """One opened split: what `initlab.data.build` iterates and `metadata` reports.

  Attributes:
    source: random-access records (`len`, `[i]`), e.g. a TFDS data source.
    transform: record -> example dict with the task's keys, float32 'image'
      (*input_shape) and int32 'label' () for classification, int32 'inputs' and
      'targets' (seq_len,) for lm; None if the records are examples already.
    input_shape: per-example shape of 'image' / 'inputs' (None: variable size).
    num_classes: number of labels (classification), else None.
    vocab_size: number of token ids (lm), else None.
    num_examples: the examples `Metadata.num_train_examples` counts (None: `len(source)`;
      a graph: its train nodes).
    graph_stats: a graph's facts for init schemes (`initlab.data.graphs.graph_stats`), else None.
  """

  source: Any
  transform: Callable[[Any], dict[str, Any]] | None
  input_shape: tuple[int | None, ...]
  num_classes: int | None = None
  vocab_size: int | None = None
  num_examples: int | None = None
  graph_stats: Any = None


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  """A registered dataset: `open_split(config.data, split) -> Split`; `builder`, a TFDS
  builder class that `initlab.data.prepare` builds offline, or None (TFDS catalog)."""

  name: str
  task: str
  open_split: Callable[[Any, str], Split]
  builder: type | None = None


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, *, task: str, builder: type | None = None):
  """Function decorator: registers `open_split(cfg, split) -> Split` as dataset `name`.

  Args:
    name: the config name (`config.data.name`); '*' (`CATALOG`) for the fallback that
      opens any other TFDS catalog name.
    task: one of `TASKS`; `Metadata.task`, which picks the model's loss and batch keys.
    builder: a `tfds.core.DatasetBuilder` subclass that prepares the data offline
      (embedded datasets), or None.

  Registering a name again with the same function (or its re-definition, e.g. a notebook
  cell run twice) replaces the entry; with a different function it is an error.
  """

  def decorate(open_split):
    where = f'register_dataset({name!r})'
    if not isinstance(name, str) or not name:
      raise ValueError(f'register_dataset: name must be a non-empty str, got {name!r}')
    if task not in TASKS:
      raise ValueError(f'{where}: task={task!r}; valid tasks: {TASKS}')
    if not callable(open_split):
      raise ValueError(f'{where}: decorates a function (cfg, split) -> Split, got {open_split!r}')
    if builder is not None and not (
      isinstance(builder, type) and issubclass(builder, tfds.core.DatasetBuilder)
    ):
      raise ValueError(
        f'{where}: builder must be a tfds.core.DatasetBuilder subclass, got {builder!r}'
      )
    old = _DATASETS.get(name)
    key = lambda f: (getattr(f, '__module__', None), getattr(f, '__qualname__', None))
    if (
      old is not None
      and old.open_split is not open_split
      and key(old.open_split) != key(open_split)
    ):
      raise ValueError(
        f'{where}: already registered to {".".join(key(old.open_split))}; pick another name'
      )
    _DATASETS[name] = DatasetEntry(name, task, open_split, builder)
    return open_split

  return decorate


def dataset_names() -> tuple[str, ...]:
  """Registered names (the TFDS-catalog fallback '*' not included)."""
  return tuple(sorted(n for n in _DATASETS if n != CATALOG))


def _in_tfds_catalog(name: str) -> bool:
  try:
    dataset_name, _ = tfds.core.naming.parse_builder_name_kwargs(name)
    tfds.builder_cls(str(dataset_name))
  except (tfds.core.registered.DatasetNotFoundError, ValueError):
    return False
  return True


def lookup(name: Any, key: str = 'name') -> DatasetEntry:
  """The entry of dataset `name`: registered, else the fallback for a TFDS catalog name.

  Raises ValueError naming `key` and the registered names if there is none.
  """
  if isinstance(name, str) and name in _DATASETS and name != CATALOG:
    return _DATASETS[name]
  if isinstance(name, str) and name and CATALOG in _DATASETS and _in_tfds_catalog(name):
    return _DATASETS[CATALOG]
  catalog = " or a TFDS catalog name (e.g. 'mnist')" if CATALOG in _DATASETS else ''
  raise ValueError(
    f'Unknown dataset {key}={name!r}: expected one of the registered '
    f'datasets {list(dataset_names())}{catalog}.'
  )


def option(cfg, key: str, default: Any = None) -> Any:
  """`cfg[key]` of a `config.data` ConfigDict or dict; `default` if absent or None."""
  value = cfg.get(key, default)
  return default if value is None else value
