"""Random-access data sources of TFDS builders: embedded datasets and the TFDS catalog.

A registered dataset with a `builder` (`initlab.data.registry`) is prepared offline into
`data_dir` in the array_record format on first use. Any other TFDS name is looked up in
the TFDS catalog and must already be prepared locally in array_record format (or be
mocked with `tfds.testing.mock_data`); nothing is downloaded implicitly.
"""

import os
import sys

import tensorflow_datasets as tfds

from initlab.data import registry

_FORMAT = 'array_record'


class EmbeddedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of initlab's offline TFDS builders: version 1.0.0, nothing to download.

  A subclass sets `name`, `FEATURES` ({feature name: tfds feature}), `HOMEPAGE`, optionally
  `SUPERVISED_KEYS`, and the generator methods; its module docstring is the description.
  Examples keep their order (no shuffling at preparation).
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # Nothing to download; also skips TFDS's lookup of a checksums file, which
  # needs the undeclared `importlib_resources` package for packaged builders.
  url_infos = None
  FEATURES: dict = {}
  HOMEPAGE = ''
  SUPERVISED_KEYS = None

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=sys.modules[type(self).__module__].__doc__,
      features=tfds.features.FeaturesDict(self.FEATURES),
      supervised_keys=self.SUPERVISED_KEYS,
      homepage=self.HOMEPAGE,
      disable_shuffling=True,
    )


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
