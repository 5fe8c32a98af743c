"""Smoke run of experiments/precropping (issue [precrop], item 4): dense, two masked arms in one
vmapped sweep, PreCrop and uniform width through the project's loop; every number in the
table comes from the run directories and the restored states."""

import json

import numpy as np
import pytest

import study_testlib


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  out = tmp_path_factory.mktemp('precrop_study')
  return study_testlib.run_smoke('precropping', out, 'PRECROP_WORKDIR')


def _summary(path):
  return json.loads((path / 'summary.json').read_text())


def test_smoke_numbers_come_from_the_runs(smoke):
  out, study = smoke
  run = study_testlib.load('precropping', 'run')
  (row,) = study['densities'].values()
  assert set(row) == {*run.SMOKE_MASKS, 'precrop', 'uniform'}
  root = out / 'runs' / 'smoke' / 'd0.1'
  sweep = json.loads((root / 'masks' / 'sweep.json').read_text())
  finals = {
    t: _summary(root / 'masks' / 'runs' / t)['final']['eval/accuracy'] for t in sweep['trials']
  }
  assert sorted(row[a]['acc'][0] for a in run.SMOKE_MASKS) == sorted(finals.values())
  precrop = _summary(root / 'precrop' / 'runs' / 'precrop' / 'seed_0')
  assert row['precrop']['acc'] == [precrop['final']['eval/accuracy']]
  dense = study['dense']
  # Masked arms keep 10% of the kernels (global top-k) and still compute the dense FLOPs; the
  # cropped and the uniform nets are at the same kernel budget within 2% and compute less.
  for arm in run.SMOKE_MASKS:
    assert row[arm]['kernels'] <= round(0.1 * dense['kernels'])
    assert row[arm]['flops'] == pytest.approx(dense['flops'], rel=1e-6)
  for arm in ('precrop', 'uniform'):
    assert abs(row[arm]['kernels'] - 0.1 * dense['kernels']) <= 0.02 * 0.1 * dense['kernels']
    assert row[arm]['flops'] < 0.5 * dense['flops']
  assert all(np.isfinite(c['step_ms']) and c['step_ms'] > 0 for c in row.values())
  assert '| 0.1 | PreCrop (SynFlow p_l) |' in (out / 'results' / 'tables.md').read_text()
  assert (out / 'figures' / 'accuracy_vs_density.png').stat().st_size > 1000
