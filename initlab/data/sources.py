"""Random-access data sources of TFDS builders: embedded datasets and the TFDS catalog.

A registered dataset with a `builder` (`initlab.data.registry`) is prepared offline into
`data_dir` in the array_record format on first use. Any other TFDS name is looked up in
the TFDS catalog and must already be prepared locally in array_record format (or be
mocked with `tfds.testing.mock_data`); nothing is downloaded implicitly.
"""

import os

import tensorflow_datasets as tfds

from initlab.data import registry

_FORMAT = 'array_record'


def default_data_dir() -> str:
  """`$INITLAB_DATA_DIR`, else `$TFDS_DATA_DIR`, else ~/tensorflow_datasets."""
  path = (
    os.environ.get('INITLAB_DATA_DIR') or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets'
  )
  return os.path.expanduser(path)


def embedded_names() -> tuple[str, ...]:
  """Registered datasets that `prepare` builds offline (they have a TFDS builder)."""
  return tuple(n for n in registry.dataset_names() if registry.lookup(n).builder)


def _builder_cls(name: str):
  """The TFDS builder class of registered `name`, None for a TFDS catalog name."""
  entry = registry.lookup(name)
  if entry.builder is None and entry.name != registry.CATALOG:
    raise ValueError(
      f'dataset {name!r} is not a TFDS dataset (its registration has no '
      'builder): read it with initlab.data.build / metadata.'
    )
  return entry.builder


def prepare(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Prepares `name` in array_record format; returns its builder.

  Embedded names are built offline (seconds). A TFDS catalog name is
  downloaded and prepared the usual TFDS way, which needs network access
  unless it is already prepared.

  Args:
    name: an `embedded_names()` one or a TFDS name such as 'mnist' or 'mnist:3.0.1'.
    data_dir: root directory; defaults to `default_data_dir()`.
  """
  builder_cls = _builder_cls(name)
  data_dir = data_dir or default_data_dir()
  if builder_cls is not None:
    builder = builder_cls(data_dir=data_dir, file_format=_FORMAT)
  else:
    builder = tfds.builder(name, data_dir=data_dir, file_format=_FORMAT)
  try:
    builder.download_and_prepare()
  except ModuleNotFoundError as e:
    if e.name != 'importlib_resources':
      raise
    raise ModuleNotFoundError(
      f'Preparing TFDS dataset {name!r} needs `pip install '
      'importlib_resources` (used but not declared by tensorflow-datasets).',
      name=e.name,
    ) from e
  return builder


def data_source(name: str, split: str, data_dir: str | None = None):
  """Returns a random-access source of decoded numpy example dicts.

  Args:
    name: an `embedded_names()` one or a TFDS catalog name.
    split: a TFDS split string, e.g. 'train', 'test[:10%]'.
    data_dir: root directory; defaults to `default_data_dir()`.

  Returns:
    A sequence-like TFDS data source (`len`, `[i]`) usable by grain.
  """
  builder_cls = _builder_cls(name)
  data_dir = data_dir or default_data_dir()
  if builder_cls is not None:
    return prepare(name, data_dir).as_data_source(split=split)
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
      f'Cannot open TFDS dataset {name!r} split {split!r} from data_dir '
      f'{data_dir!r}. It must be prepared there in array_record format, e.g. '
      f'`initlab.data.prepare({name!r}, {data_dir!r})` with network access '
      f'or `tfds build {name} --data_dir={data_dir} '
      f'--file_format=array_record`. TFDS said: {e}'
    ) from e
