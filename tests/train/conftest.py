"""Shared fixtures of the training tests: a prepared data_dir and tiny configs."""

import pytest

from initlab import data
import train_testlib  # noqa: F401  (puts configs/ on sys.path)

import quickstart  # pylint: disable=g-bad-import-order


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfds'))
  data.prepare('digits', path)
  return path


@pytest.fixture
def tiny_config(data_dir):
  """One quickstart run (he_normal, 1 seed), 12 steps, logging every step."""

  def make(**train):
    config = quickstart.get_config('smoke')
    config.init.compare = ()
    config.init.name = 'he_normal'
    config.seeds.num = 1
    config.data.data_dir = data_dir
    config.diagnostics_at_init = False
    config.model.depth = 2
    config.model.width = 32
    config.train.update(
      dict(
        steps=12, batch_size=16, log_every=1, eval_every=0, checkpoint_every=4, keep_checkpoints=5
      )
    )
    config.train.update(train)
    return config

  return make
