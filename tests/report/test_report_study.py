"""The report of a REAL `run_study` (MLP on digits, 2 schemes x 2 seeds, 20 steps), checked
against the files the runs wrote, with numpy/scipy computing every number independently."""

import importlib.metadata
import json
import math
import pathlib
import shutil
import subprocess

import jax
import numpy as np
import pytest
from scipy import stats as sp_stats

from initlab import config as config_lib
from initlab import rundir
from initlab.report import build_report
from initlab.train.study import run_study

SCHEMES = ('orthogonal', 'he_normal')  # not alphabetical: rows must keep this order
SEEDS = (0, 1)
EVAL_EVERY = 5
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def tiny_config():
  c = config_lib.default_config()
  c.name = 'tiny report study'
  c.model = config_lib.model_config(
    'mlp', input_shape=(8, 8, 1), depth=2, width=32, activation='relu', num_classes=10
  )
  c.init.compare = SCHEMES
  c.data.name = 'digits'
  c.data.eval_split = 'test'
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 0.05
  c.optimizer.kwargs.momentum = 0.9
  c.train.steps = 20
  c.train.batch_size = 64
  c.train.eval_every = EVAL_EVERY
  c.train.log_every = 5
  c.train.checkpoint_every = 20
  c.train.progress_bar = False
  c.seeds.num = len(SEEDS)
  c.diagnostics_at_init = True
  c.report.target = 0.3
  return c


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('study')
  results = run_study(tiny_config(), workdir, devices=jax.devices()[:1])
  return workdir, results, (workdir / rundir.REPORT).read_text()


def raw_diagnostics(workdir, scheme):
  """init_diagnostics.json of each seed, read as plain JSON (not through initlab)."""
  return [
    json.loads((rundir.run_dir(workdir, scheme, k) / rundir.DIAGNOSTICS).read_text()) for k in SEEDS
  ]


def per_seed_finals(workdir, scheme, metric):
  return np.array(
    [
      json.loads((rundir.run_dir(workdir, scheme, k) / rundir.SUMMARY).read_text())['final'][metric]
      for k in SEEDS
    ],
    np.float64,
  )


def section(report, title):
  """The text of `## title` up to the next `## `."""
  start = report.index(f'## {title}')
  end = report.find('\n## ', start + 3)
  return report[start : end if end >= 0 else None]


def table(text):
  """Rows (lists of cells) of the first markdown table in `text`, header first."""
  lines = [l for l in text.splitlines() if l.startswith('|')]
  rows = [[c.strip() for c in l.strip().strip('|').split('|')] for l in lines]
  return [r for r in rows if set(r) != {'---'}]


def test_report_has_stage_names_and_jacobian_spectrum(study):
  workdir, results, report = study
  for scheme in SCHEMES:
    raw = raw_diagnostics(workdir, scheme)
    diag = results['schemes'][scheme]['init_diagnostics']
    assert diag is not None, f'{scheme}: the report lost the init diagnostics'
    assert diag['stages'] == raw[0]['names'] and diag['n_seeds'] == len(SEEDS)
    for stage in raw[0]['names']:
      assert f'| {stage} |' in report
    q = np.array([d['q'] for d in raw], np.float64)
    np.testing.assert_allclose(diag['q']['mean'], q.mean(0), rtol=1e-12)
    sv = np.concatenate([np.ravel(d['jacobian_sv']) for d in raw]).astype(np.float64)
    assert sv.size > 0
    np.testing.assert_allclose(diag['jacobian_sv'], sv, rtol=1e-12)
    assert diag['train'] is True
  png = workdir / results['plots']['jacobian_spectrum']
  assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
  assert '](jacobian_spectrum.png)' in report and '](init_variance.png)' in report


def test_init_diagnostics_table_and_legend(study):
  workdir, _, report = study
  text = section(report, 'Init diagnostics')
  assert 'train mode' in text
  rows = table(text)
  header, body = rows[0], {r[0]: dict(zip(rows[0], r)) for r in rows[1 : len(SCHEMES) + 1]}
  assert list(body) == list(SCHEMES)
  for scheme in SCHEMES:
    raw = raw_diagnostics(workdir, scheme)
    q = np.array([d['q'] for d in raw], np.float64)
    assert body[scheme]['q first'] == f'{q[:, 0].mean():.4g}'
    assert body[scheme]['q last/first'] == f'{(q[:, -1] / q[:, 0]).mean():.4g}'
    sv = np.array([d['jacobian_sv'] for d in raw], np.float64)  # (seeds, E, k)
    assert body[scheme]['J mean σ²'] == f'{(sv**2).mean():.4g}'
    assert body[scheme]['J cond'] == f'{(sv[..., 0] / sv[..., -1]).mean():.4g}'
  for name in ('**q**', '**c**', '**J**', '**J exact**'):
    assert name in text
  assert 'mean of h²' in text and 'q = mean h² per stage' in text


def test_rows_in_config_order(study):
  _, results, report = study
  assert list(results['schemes']) == list(SCHEMES)
  rows = table(section(report, 'Results'))
  assert [r[0] for r in rows[1:]] == list(SCHEMES)


def test_confidence_intervals_and_paired_test_match_scipy(study):
  workdir, results, report = study
  metric = 'eval/accuracy'
  finals = {s: per_seed_finals(workdir, s, metric) for s in SCHEMES}
  best = max(SCHEMES, key=lambda s: finals[s].mean())
  other = next(s for s in SCHEMES if s != best)
  rows = {r[1]: r for r in table(section(report, 'Are scheme differences larger'))[1:]}
  assert list(rows) == [best, other]  # ranked
  for scheme, values in finals.items():
    lo, hi = sp_stats.t.interval(
      0.95, len(values) - 1, loc=values.mean(), scale=sp_stats.sem(values)
    )
    agg = results['schemes'][scheme]['aggregate'][metric]
    np.testing.assert_allclose([agg['ci_lo'], agg['ci_hi']], [lo, hi], rtol=1e-10)
    assert rows[scheme][4] == f'[{lo:.4g}, {hi:.4g}]'
  diff = finals[other] - finals[best]
  p = sp_stats.ttest_rel(finals[other], finals[best]).pvalue
  pair = results['comparison']['vs_best'][other]
  np.testing.assert_allclose([pair['mean_diff'], pair['p']], [diff.mean(), p], rtol=1e-10)
  lo, hi = sp_stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=sp_stats.sem(diff))
  assert rows[other][5:8] == [f'{diff.mean():+.4g}', f'[{lo:.4g}, {hi:.4g}]', f'{p:.4g}']
  words = 'larger than the seed spread' if p < 0.05 else 'not distinguishable from the seed spread'
  assert rows[other][8] == words
  assert f'{other} vs {best}: {diff.mean():+.4g} over 2 paired seeds' in report
  assert f'p = {p:.3g}: **{words}**' in report


def test_eval_resolution_eval_set_size_and_provenance(study):
  workdir, results, report = study
  assert results['eval_every'] == EVAL_EVERY
  assert f'resolved to {EVAL_EVERY} steps' in report
  summary = json.loads((rundir.run_dir(workdir, SCHEMES[0], 0) / rundir.SUMMARY).read_text())
  n_eval = summary.get('eval_examples')
  if n_eval is None:
    pytest.fail('summary.json has no eval_examples (the trainer must record the eval-set size)')
  assert results['eval_examples'] == n_eval and f'{n_eval} examples per evaluation' in report
  prov = section(report, 'Provenance')
  for package in ('jax', 'flax'):
    assert f'{package} {importlib.metadata.version(package)}' in prov
  assert f'initlab {importlib.metadata.version("initlab")}' in prov
  assert f'devices {len(jax.devices())} × {jax.devices()[0].device_kind}' in prov
  try:
    head = subprocess.run(
      ['git', 'rev-parse', 'HEAD'],
      cwd=pathlib.Path(__file__).parent,
      capture_output=True,
      text=True,
      check=True,
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    head = None
  if head:
    assert f'git commit {head}' in prov


def test_single_run_workdir_gets_the_same_report(study, tmp_path):
  workdir, _, _ = study
  run = tmp_path / 'one_run'
  shutil.copytree(
    rundir.run_dir(workdir, 'he_normal', 1),
    run,
    ignore=shutil.ignore_patterns(rundir.CHECKPOINTS, rundir.TB),
  )
  results = build_report(run)
  report = (run / rundir.REPORT).read_text()
  assert results['single_run'] and list(results['schemes']) == ['he_normal']
  final = per_seed_finals(workdir, 'he_normal', 'eval/accuracy')[1]
  row = table(section(report, 'Results'))[1]
  assert row[:3] == ['he_normal', '1', f'{final:.4g} ± n/a']
  assert '± 0' not in report
  assert 'one run' in report and '## Init diagnostics' in report
  assert 'seed spread is unknown' in report or 'Only one scheme' in report
  assert (run / rundir.RESULTS).exists() and (run / results['plots']['jacobian_spectrum']).exists()


def test_stale_runs_are_left_out_and_flagged(study, tmp_path):
  workdir, _, _ = study
  copy = tmp_path / 'study'
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns(rundir.CHECKPOINTS, rundir.TB))
  current = [rundir.run_dir(copy, s, k) for s in SCHEMES for k in SEEDS]
  shutil.copytree(rundir.run_dir(copy, 'he_normal', 0), rundir.run_dir(copy, 'lecun_normal', 0))
  results = build_report(copy, runs=current)
  assert list(results['schemes']) == list(SCHEMES)
  assert any('stale: lecun_normal/seed_0' in n for n in results['notes'])
  everything = build_report(copy, tmp_path / 'all')
  assert list(everything['schemes']) == [*SCHEMES, 'lecun_normal']  # unknown ones last
  assert any("not in the config's init.compare" in n for n in everything['notes'])


def test_relative_workdir(study, tmp_path, monkeypatch):
  workdir, _, _ = study
  shutil.copytree(workdir, tmp_path / 'rel', ignore=shutil.ignore_patterns(rundir.CHECKPOINTS))
  monkeypatch.chdir(tmp_path)
  results = build_report('rel', 'rel_out')
  assert pathlib.Path(results['out_dir']).is_absolute()
  assert (tmp_path / 'rel_out' / rundir.REPORT).exists()
  assert math.isfinite(results['schemes']['he_normal']['aggregate']['eval/accuracy']['mean'])
  assert '## Provenance' in (tmp_path / 'rel_out' / rundir.REPORT).read_text()
