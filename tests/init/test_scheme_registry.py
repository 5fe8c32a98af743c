"""Registries: one-line descriptions, the --list CLI, re-registering (notebook cells), clashes."""

import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import initlab.init as ii
from initlab.init import registry


@pytest.fixture
def scratch_names():
  """Names a test registers; removed afterwards so other tests see the stock registry."""
  names = []
  yield names
  for n in names:
    registry._SCHEMES.pop(n, None)
    registry._INITIALIZERS.pop(n, None)
    registry._DESCRIPTIONS.pop(n, None)


def test_every_name_has_a_one_line_description():
  table = ii.describe()
  assert set(table) == set(ii.scheme_names())
  for name, line in table.items():
    assert line and '\n' not in line, name
  assert 'L^{-1/(2m-2)}' in ii.describe('fixup') and 'ZerO' in ii.describe('zero_hadamard')
  assert ii.describe('zeros') != ii.describe('zero_hadamard')
  with pytest.raises(KeyError, match="unknown init name 'nope'.*he_normal"):
    ii.describe('nope')
  rows = ii.scheme_table().splitlines()
  assert [r.split()[0] for r in rows] == ii.scheme_names()
  assert any(r.split()[:2] == ['fixup', 'scheme'] for r in rows)


def test_cli_lists_every_name_with_its_line():
  out = subprocess.run(
    [sys.executable, '-m', 'initlab.init', '--list'],
    capture_output=True,
    text=True,
    check=True,
    timeout=120,
  ).stdout
  lines = {l.split()[0]: l for l in out.splitlines()}
  # A fresh process lists what initlab registers on import (this process may hold schemes
  # that other tests registered): every built-in name, each with its one line.
  fresh = subprocess.run(
    [sys.executable, '-c', "import initlab.init as ii; print('\\n'.join(ii.scheme_names()))"],
    capture_output=True,
    text=True,
    check=True,
    timeout=120,
  ).stdout.split()
  assert set(lines) == set(fresh) and {'zero_full', 'he_normal', 'fixup'} <= set(lines)
  for name in fresh:
    assert ii.describe(name) in lines[name], name
  assert ii.describe('zero_full') in lines['zero_full']


def test_reregistering_a_scheme_replaces_it(scratch_names):
  scratch_names.append('mine')
  for value in (1.0, 2.0):  # the same notebook cell run twice

    @ii.register_scheme('mine')
    def mine(v=value):
      """My scheme: all kernels = v."""
      return ii.Rules([('.*', ii.constant(v))], roles=('kernel',))

  with warnings.catch_warnings():
    warnings.simplefilter('error')  # same origin: silently replaced

    @ii.register_scheme('mine')
    def mine(v=3.0):  # noqa: F811
      """My scheme: all kernels = v."""
      return ii.Rules([('.*', ii.constant(v))], roles=('kernel',))

  out = ii.get_scheme('mine')(jax.random.key(0), {'d': {'kernel': jnp.zeros((2, 2))}})
  np.testing.assert_array_equal(out['d']['kernel'], 3.0)
  assert ii.describe('mine') == 'My scheme: all kernels = v.'
  with pytest.warns(UserWarning, match="scheme 'mine' was already registered by .*mine; replacing"):
    ii.register_scheme('mine', description='elsewhere')(lambda: None)
  assert ii.describe('mine') == 'elsewhere'


def test_initializer_and_scheme_names_cannot_clash(scratch_names):
  scratch_names.append('mine_init')
  with pytest.raises(
    ValueError, match="cannot register scheme 'he_normal'.*already a registered initializer"
  ):
    ii.register_scheme('he_normal')(lambda: None)
  with pytest.raises(
    ValueError, match="cannot register initializer 'fixup'.*already a registered scheme"
  ):
    ii.register_initializer('fixup')(lambda **k: None)
  make = ii.register_initializer('mine_init', description='twice')(
    lambda v=1.0, in_axis=-2, out_axis=-1, batch_axis=(): jax.nn.initializers.constant(v)
  )
  make = ii.register_initializer('mine_init', description='twice')(
    lambda v=2.0, in_axis=-2, out_axis=-1, batch_axis=(): jax.nn.initializers.constant(v)
  )
  np.testing.assert_array_equal(make()(jax.random.key(0), (2,)), 2.0)
  np.testing.assert_array_equal(ii.get_initializer('mine_init')(jax.random.key(0), (2,)), 2.0)
