"""Fixtures for the model-zoo tests."""

import pytest

# pylint: disable-next=g-bad-import-order
from model_zoo_testlib import NAMES, abstract, materialize, tiny_config


@pytest.fixture(scope='session')
def zoo():
  """{name: tiny zoo model}, host-filled values (see materialize); shared, read-only."""
  return {n: materialize(abstract(tiny_config(n))) for n in NAMES}
