"""A data_dir with both embedded datasets prepared once per test session."""

import pytest

from initlab import data


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfds'))
  for name in data.embedded_names():
    data.prepare(name, path)
  return path
