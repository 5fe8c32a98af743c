"""Shared fixtures of the sweep tests: a prepared data_dir and a tiny quickstart config."""

import pathlib
import sys

import pytest

from initlab import data

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO / 'configs') not in sys.path:
  sys.path.insert(0, str(REPO / 'configs'))

import quickstart  # noqa: E402  pylint: disable=g-bad-import-order,wrong-import-position


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfds'))
  data.prepare('digits', path)
  return path


@pytest.fixture
def tiny_config(data_dir):
  """One quickstart run (he_normal), a 2x32 MLP, 8 steps, logging every 2, checkpoints at 4."""

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
        steps=8, batch_size=16, log_every=2, eval_every=4, checkpoint_every=4, keep_checkpoints=5
      )
    )
    config.train.update(train)
    return config

  return make
