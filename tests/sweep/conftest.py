"""The sweep tests' tiny run: the root conftest's, on the sweep tests' schedule."""

import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO / 'configs') not in sys.path:
  sys.path.insert(0, str(REPO / 'configs'))


@pytest.fixture
def tiny_config(tiny_config):
  """A 2x32 MLP, 8 steps, logging every 2, eval and checkpoints at 4."""

  def make(**train):
    return tiny_config(**{**dict(steps=8, log_every=2, eval_every=4), **train})

  return make
