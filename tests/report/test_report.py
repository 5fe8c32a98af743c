"""build_report on synthetic studies whose finals and curves are known in closed form.

The init diagnostics, the scheme comparison and everything a real study writes are tested on
the output of a real `run_study` in test_report_study.py."""

import json
import math
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from initlab.report import build_report, load_study
from initlab.train.metrics import MetricWriter

SCHEMES = {'glorot': 0.02, 'he': 0.05}  # scheme -> convergence rate of its synthetic curves
SEEDS = (0, 1, 2)
STEPS, EVERY, EVAL_EVERY = 100, 5, 20
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def train_loss(rate, seed, step):
  return 2.0 * math.exp(-rate * step) + 0.1 + 0.03 * seed


def eval_accuracy(rate, seed, step):
  return 0.95 - 0.85 * math.exp(-rate * step) - 0.02 * seed


def eval_loss(rate, seed, step):
  return 2.2 * math.exp(-rate * step) + 0.2 + 0.05 * seed


def write_run(run_dir, rate, seed, *, summary=True):
  with MetricWriter(run_dir, tensorboard=False) as writer:
    for step in range(0, STEPS + 1, EVERY):
      writer.write(step, {'loss': train_loss(rate, seed, step), 'l2_params': 1.0})
      if step % EVAL_EVERY == 0:
        writer.write(
          step,
          {'loss': eval_loss(rate, seed, step), 'accuracy': eval_accuracy(rate, seed, step)},
          split='eval',
        )
  if summary:
    final = {
      'eval/accuracy': eval_accuracy(rate, seed, STEPS),
      'eval/loss': eval_loss(rate, seed, STEPS),
      'train/loss': train_loss(rate, seed, STEPS),
    }
    (run_dir / 'summary.json').write_text(
      json.dumps({'final': final, 'steps': STEPS, 'wall_s': 1.5 + seed})
    )


def make_study(root, schemes=SCHEMES, seeds=SEEDS, config=None, **kwargs):
  root = pathlib.Path(root)
  for scheme, rate in schemes.items():
    for seed in seeds:
      write_run(root / 'runs' / scheme / f'seed_{seed}', rate, seed, **kwargs)
  if config is not None:
    (root / 'config.json').write_text(json.dumps(config))
  return root


def table_rows(report_md):
  """{scheme: {column title: cell}} from the first markdown table of the report."""
  lines = [l for l in report_md.splitlines() if l.startswith('|')]
  header = [c.strip() for c in lines[0].strip('|').split('|')]
  rows = {}
  for line in lines[2:]:
    cells = [c.strip() for c in line.strip('|').split('|')]
    if len(cells) != len(header) or cells[0] == 'scheme':
      break
    rows[cells[0]] = dict(zip(header, cells))
  return rows


def expected_finals(rate, seeds=SEEDS):
  return {
    'eval/accuracy': np.array([eval_accuracy(rate, s, STEPS) for s in seeds]),
    'eval/loss': np.array([eval_loss(rate, s, STEPS) for s in seeds]),
    'train/loss': np.array([train_loss(rate, s, STEPS) for s in seeds]),
  }


def first_step_reaching(rate, seed, target):
  return next(
    step for step in range(0, STEPS + 1, EVAL_EVERY) if eval_accuracy(rate, seed, step) >= target
  )


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  root = make_study(tmp_path_factory.mktemp('study'), config={'name': 'synthetic study'})
  return root, build_report(root, target=0.5)


def test_table_equals_numpy_mean_and_std(study):
  root, _ = study
  rows = table_rows((root / 'report.md').read_text())
  assert set(rows) == set(SCHEMES)
  for scheme, rate in SCHEMES.items():
    finals = expected_finals(rate)
    assert rows[scheme]['seeds'] == '3'
    for metric, column in [
      ('eval/accuracy', 'eval accuracy'),
      ('eval/loss', 'eval loss'),
      ('train/loss', 'final train loss'),
    ]:
      values = finals[metric]
      assert rows[scheme][column] == f'{np.mean(values):.4g} ± {np.std(values, ddof=1):.4g}'
    steps = [first_step_reaching(rate, s, 0.5) for s in SEEDS]
    assert rows[scheme]['steps to eval/accuracy ≥ 0.5'] == (
      f'{np.mean(steps):.0f} ± {np.std(steps, ddof=1):.0f} (3/3 reached)'
    )


def test_results_json_structure_and_values(study):
  root, returned = study
  results = json.loads((root / 'results.json').read_text())
  assert results['title'] == 'synthetic study'
  assert results['seeds'] == list(SEEDS) and results['std_ddof'] == 1
  assert results['target'] == {'metric': 'eval/accuracy', 'value': 0.5, 'mode': 'max'}
  assert set(results['schemes']) == set(SCHEMES)
  assert set(results['plots']) == {'loss', 'accuracy'}
  for scheme, rate in SCHEMES.items():
    entry = results['schemes'][scheme]
    assert entry['n_seeds'] == 3 and entry['missing_seeds'] == []
    assert [s['seed'] for s in entry['seeds']] == list(SEEDS)
    finals = expected_finals(rate)
    for i, seed_entry in enumerate(entry['seeds']):
      assert seed_entry['steps'] == STEPS and seed_entry['wall_s'] == 1.5 + i
      assert seed_entry['steps_to_target'] == first_step_reaching(rate, i, 0.5)
      for metric, values in finals.items():
        assert seed_entry['final'][metric] == pytest.approx(values[i], rel=1e-12)
      assert seed_entry['final']['train/l2_params'] == 1.0  # from metrics.jsonl
    for metric, values in finals.items():
      agg = entry['aggregate'][metric]
      np.testing.assert_allclose(agg['mean'], np.mean(values), rtol=1e-12)
      np.testing.assert_allclose(agg['std'], np.std(values, ddof=1), rtol=1e-12)
      assert (agg['min'], agg['max']) == (min(values), max(values))
      assert (agg['n'], agg['n_nonfinite'], agg['n_missing']) == (3, 0, 0)
    assert entry['init_diagnostics'] is None
  assert returned['schemes']['he']['aggregate']['eval/accuracy']['mean'] == pytest.approx(
    results['schemes']['he']['aggregate']['eval/accuracy']['mean']
  )


def test_pngs_are_valid_and_linked(study):
  root, results = study
  report = (root / 'report.md').read_text()
  for filename in results['plots'].values():
    path = root / filename
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000, filename
    with Image.open(path) as image:
      image.verify()
    with Image.open(path) as image:
      assert image.width > 300 and image.height > 200
      pixels = np.asarray(image.convert('L'))
    assert pixels.std() > 5, f'{filename} looks blank'
    assert f']({filename})' in report


def test_curves_show_mean_of_seeds(tmp_path):
  root = make_study(tmp_path, schemes={'he': 0.05})
  study = load_study(root)
  from initlab.report import aggregate  # pylint: disable=g-import-not-at-top

  c = aggregate.curve(study.runs['he'].values(), 'eval', 'accuracy')
  np.testing.assert_array_equal(c.steps, np.arange(0, STEPS + 1, EVAL_EVERY))
  expected = np.array([[eval_accuracy(0.05, s, t) for t in c.steps] for s in SEEDS])
  np.testing.assert_allclose(c.mean, expected.mean(0), rtol=1e-12)
  np.testing.assert_allclose(c.lo, expected.min(0), rtol=1e-12)
  np.testing.assert_allclose(c.hi, expected.max(0), rtol=1e-12)


def test_out_dir_and_missing_seed_and_empty_scheme(tmp_path):
  root = make_study(tmp_path / 'study')
  shutil.rmtree(root / 'runs' / 'he' / 'seed_2')
  (root / 'runs' / 'lsuv' / 'seed_0').mkdir(parents=True)  # created, never wrote anything
  out = tmp_path / 'out'
  results = build_report(root, out)
  assert (out / 'report.md').exists() and not (root / 'report.md').exists()
  assert results['schemes']['he']['missing_seeds'] == [2]
  assert results['schemes']['lsuv']['n_seeds'] == 0
  notes = '\n'.join(results['notes'])
  assert "'he': missing seed(s) [2]" in notes and 'lsuv' in notes
  assert 'no readable config.json' in notes
  rows = table_rows((out / 'report.md').read_text())
  assert rows['he']['seeds'] == '2 (missing [2])'
  values = expected_finals(SCHEMES['he'], seeds=(0, 1))['eval/accuracy']
  assert rows['he']['eval accuracy'] == f'{values.mean():.4g} ± {values.std(ddof=1):.4g}'
  assert rows['lsuv']['eval accuracy'] == '—'
  assert '## Notes' in (out / 'report.md').read_text()


def test_no_runs_raises_naming_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / 'runs')):
    build_report(tmp_path)
  (tmp_path / 'runs' / 'he' / 'seed_0').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match='no runs found'):
    build_report(tmp_path)


def test_diverged_seed_is_counted_not_averaged(tmp_path):
  root = make_study(tmp_path, schemes={'he': 0.05})
  summary_path = root / 'runs' / 'he' / 'seed_1' / 'summary.json'
  summary = json.loads(summary_path.read_text())
  summary['final']['eval/loss'] = 'nan'
  summary_path.write_text(json.dumps(summary))
  with MetricWriter(root / 'runs' / 'he' / 'seed_1', tensorboard=False) as writer:
    writer.write(STEPS + 5, {'loss': math.inf})
  results = build_report(root)
  agg = results['schemes']['he']['aggregate']
  losses = expected_finals(0.05)['eval/loss'][[0, 2]]
  assert agg['eval/loss']['n'] == 2 and agg['eval/loss']['n_nonfinite'] == 1
  assert agg['eval/loss']['mean'] == pytest.approx(losses.mean(), rel=1e-12)
  text = (root / 'results.json').read_text()
  json.loads(text, parse_constant=lambda c: pytest.fail(f'bare {c} in results.json'))
  assert '"nan"' in text
  rows = table_rows((root / 'report.md').read_text())
  assert rows['he']['eval loss'].endswith('(n=2, 1 non-finite)')


def test_without_summary_finals_come_from_metrics(tmp_path):
  root = make_study(
    tmp_path, summary=False, config={'report': {'target': 1.0, 'target_metric': 'eval/loss'}}
  )
  results = build_report(root)
  assert 'init_variance' not in results['plots']
  assert results['target']['mode'] == 'min'
  for scheme, rate in SCHEMES.items():
    entry = results['schemes'][scheme]
    np.testing.assert_allclose(
      entry['aggregate']['eval/accuracy']['mean'],
      expected_finals(rate)['eval/accuracy'].mean(),
      rtol=1e-12,
    )
    assert [s['steps'] for s in entry['seeds']] == [STEPS] * 3
    for seed_entry in entry['seeds']:
      expected = next(
        t for t in range(0, STEPS + 1, EVAL_EVERY) if eval_loss(rate, seed_entry['seed'], t) <= 1.0
      )
      assert seed_entry['steps_to_target'] == expected
  assert 'steps to eval/loss ≤ 1' in (root / 'report.md').read_text()


def test_killed_and_resumed_run_is_read_once(tmp_path):
  run_dir = tmp_path / 'runs' / 'he' / 'seed_0'
  with MetricWriter(run_dir, tensorboard=False) as writer:  # killed at step 30
    for step in range(0, 40, 10):
      writer.write(step, {'loss': 5.0})
  with open(run_dir / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 40, "split": "tr')
  with MetricWriter(run_dir, tensorboard=False) as writer:  # resumed from step 20
    for step in range(20, 60, 10):
      writer.write(step, {'loss': 1.0})
  results = build_report(tmp_path)
  assert results['schemes']['he']['seeds'][0]['final']['train/loss'] == 1.0
  study = load_study(tmp_path)
  steps = [r['step'] for r in study.runs['he'][0].records]
  assert steps == [0, 10, 20, 30, 40, 50]
  assert [r['loss'] for r in study.runs['he'][0].records] == [5.0, 5.0, 1.0, 1.0, 1.0, 1.0]


def test_scheme_with_no_finite_point_still_gets_a_report(tmp_path):
  root = make_study(tmp_path, schemes={'he': 0.05}, seeds=(0,))
  run_dir = root / 'runs' / 'blowup' / 'seed_0'
  with MetricWriter(run_dir, tensorboard=False) as writer:  # diverged from its first log
    for step in (0, 10):
      writer.write(step, {'loss': math.nan, 'accuracy': math.nan})
      writer.write(step, {'loss': math.inf, 'accuracy': math.nan}, split='eval')
  results = build_report(root)
  assert set(results['schemes']) == {'he', 'blowup'}
  assert (root / 'loss.png').stat().st_size > 10_000
