"""Plots and tables from hand-made `Diagnostics` (no model needed)."""

import csv
import json
import os

import numpy as np
import pytest

import initlab.diagnostics as dg


def _diag(q, grad_q, c, sv):
  q, grad_q, c = (np.asarray(v, np.float64) for v in (q, grad_q, c))
  return dg.Diagnostics(
    names=tuple(f'layer_{i}' for i in range(q.size)),
    q=q,
    var=q / 2,
    c=c,
    grad_q=grad_q,
    grad_var=grad_q,
    input_q=1.0,
    input_c=0.0,
    jacobian_sv=np.asarray(sv, np.float64),
    jacobian_exact=True,
    jacobian_from='input',
    jacobian_shape=(3, 3),
  )


@pytest.fixture
def results():
  depth = np.arange(6)
  return {
    'he': _diag(np.ones(6), np.ones(6), 1 - 0.5 ** (depth + 1), [[1.5, 1.0, 0.5]] * 2),
    'lecun': _diag(0.5**depth, 2.0**depth, 1 - 0.5 ** (depth + 1), [[0.1, 0.01, 0.001]] * 2),
    'zero': _diag(np.zeros(6), np.zeros(6), np.full(6, np.nan), np.zeros((2, 3))),
  }


def test_summary_numbers(results):
  s = results['lecun'].summary()
  assert s['depth'] == 6 and np.isclose(s['q_log2_slope'], -1) and np.isclose(s['q_ratio'], 1 / 32)
  assert np.isclose(s['grad_log2_slope'], 1) and np.isclose(s['mean_sq_sv'], 0.010101 / 3)
  assert np.isclose(s['condition'], 100)


def test_plot_depth_profiles_writes_pngs(results, tmp_path):
  with np.errstate(all='raise'):  # NaN/zero profiles must not warn or fail
    paths = dg.plot_depth_profiles(results, str(tmp_path))
  names = sorted(os.path.basename(p) for p in paths)
  assert names == [
    'correlation.png',
    'forward_variance.png',
    'gradient_variance.png',
    'jacobian_spectrum.png',
  ]
  for p in paths:
    with open(p, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n' and os.path.getsize(p) > 5000


def test_write_table_markdown_csv_json(results, tmp_path):
  text = dg.write_table(results, str(tmp_path))
  assert text == (tmp_path / 'diagnostics.md').read_text()
  header = next(l for l in text.splitlines() if l.startswith('| scheme |'))
  assert header.startswith('| scheme | stages | q first')
  rows = {line.split(' | ')[0][2:]: line for line in text.splitlines() if line.startswith('| ')}
  assert {'he', 'lecun', 'zero'} <= set(rows) and 'layer_5' in text
  assert '| -1 |' in rows['lecun'] and 'nan' in rows['zero']
  with open(tmp_path / 'stages.csv') as f:
    stages = list(csv.DictReader(f))
  assert len(stages) == 18 and float(stages[6 + 3]['q']) == 0.125  # lecun, layer_3
  with open(tmp_path / 'summary.csv') as f:
    assert [r['scheme'] for r in csv.DictReader(f)] == ['he', 'lecun', 'zero']
  loaded = json.loads((tmp_path / 'diagnostics.json').read_text())
  back = dg.Diagnostics.from_dict(loaded['lecun'])
  np.testing.assert_array_equal(back.q, results['lecun'].q)
  assert loaded['zero']['summary']['condition'] == 'nan'


def test_diagnostics_md_states_the_mode_and_has_a_legend(results, tmp_path):
  text = dg.write_table(results, str(tmp_path))
  assert 'Mode: not recorded' in text  # hand-made: train=None
  for d in results.values():
    d.train = True
  text = dg.write_table(results, str(tmp_path))
  assert 'Mode: **train**' in text and "batch's own statistics" in text
  for d in results.values():
    d.train = False
  assert 'Mode: **eval**' in dg.write_table(results, str(tmp_path))
  for term in (
    '**q**',
    '**grad q**',
    '**c**',
    '**J**',
    '**J exact**',
    'J cond',
    'mean of h²',
    'σ_max/σ_min',
    'sketch',
  ):
    assert term in text, term
