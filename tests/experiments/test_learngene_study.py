"""Smoke run of experiments/learngene (issue [learngene], item 6), LM only: teacher, TLEG and SWS
learngenes and one descendant depth through the project's loop and vmap sweep; every number
in the tables comes from the run directories."""

import json

import numpy as np
import pytest

import study_testlib


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  out = tmp_path_factory.mktemp('learngene_study')
  return study_testlib.run_smoke('learngene', out, 'LEARNGENE_WORKDIR', args=('--tasks=lm',))


def _eval_losses(path):
  lines = [json.loads(l) for l in (path / 'metrics.jsonl').read_text().splitlines()]
  return [r['loss'] for r in lines if r['split'] == 'eval']


def test_smoke_numbers_come_from_the_runs(smoke):
  out, (study,) = smoke
  run = study_testlib.load('learngene', 'run')
  assert study['task'] == 'lm' and list(study['depths']) == [str(d) for d in run.SMOKE_DEPTHS]
  (depth,) = run.SMOKE_DEPTHS
  row = study['depths'][str(depth)]
  root = out / 'runs' / 'smoke' / 'lm'
  sweep = json.loads((root / f'd{depth}' / 'sweep.json').read_text())
  assert {t.split('/')[0].split(',')[0] for t in sweep['trials']} == {
    'tleg_expand',
    'sws_expand',
    'lecun_normal',
  }
  # Each arm's final loss is its run's last eval loss; the long arm trained LONG x the steps.
  for arm, scheme in run.SCHEME.items():
    (trial,) = [t for t in sweep['trials'] if t.startswith(scheme)]
    losses = _eval_losses(root / f'd{depth}' / 'runs' / trial)
    assert row[arm]['final'] == [losses[-1]] and np.isfinite(losses).all()
  long = _eval_losses(root / f'd{depth}_long' / 'runs' / 'lecun_normal' / 'seed_0')
  assert row['scratch_long']['final'] == [long[-1]]
  assert row['scratch_long']['curve']['steps'][-1] == run.LONG * row['steps']
  # Stored params: the TLEG learngene keeps two blocks, so fewer params than the descendant.
  assert 0 < study['params']['tleg'] < row['params']
  assert (
    study['flops']['tleg'] > 0
    and row['flops'] == 6 * row['params'] * study['tokens_per_step'] * row['steps']
  )
  # R² per block tensor of the trained teacher: all in [0, 1] (up to rounding).
  r2 = study['r2']['trained']
  assert 'attn/query/kernel' in r2 and all(-1e-6 <= v <= 1 + 1e-6 for v in r2.values())
  tables = (out / 'results' / 'tables.md').read_text()
  assert f'| {depth} | {row["params"]:,} | {row["steps"]} | ' in tables
  for name in ('loss_vs_depth', 'curves'):
    assert (out / 'figures' / f'{name}.png').stat().st_size > 1000
