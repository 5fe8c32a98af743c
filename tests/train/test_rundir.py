"""initlab.rundir: the run directory's names and initlab's JSON rule, for writer and reader."""

import json
import math

from initlab import rundir
from initlab.train import metrics as metrics_lib


def test_json_round_trip_of_non_finite_values(tmp_path):
  obj = {
    'final': {'loss': math.nan, 'up': math.inf, 'down': -math.inf, 'ok': 1.5},
    'list': [1, math.nan],
    'name': 'he',
  }
  path = tmp_path / 'sub' / rundir.SUMMARY
  rundir.write_json(path, obj, process_index=0)
  text = path.read_text()
  assert 'NaN' not in text and 'Infinity' not in text
  raw = json.loads(text)  # Plain JSON: any reader can open it.
  assert raw['final'] == {'loss': 'nan', 'up': 'inf', 'down': '-inf', 'ok': 1.5}
  back = rundir.read_json(path)
  assert math.isnan(back['final']['loss']) and back['final']['up'] == math.inf
  assert back['final']['down'] == -math.inf and back['list'][0] == 1
  assert math.isnan(back['list'][1]) and back['name'] == 'he'
  assert not list(tmp_path.glob('**/*.tmp'))


def test_only_process_zero_writes(tmp_path):
  rundir.write_json(tmp_path / 'x.json', {'a': 1}, process_index=1)
  assert not (tmp_path / 'x.json').exists()


def test_run_dir_layout_and_listing(tmp_path):
  assert rundir.run_dir(tmp_path, 'he_normal', 2) == tmp_path / 'runs' / 'he_normal' / 'seed_2'
  for scheme, k in (('zero', 0), ('he_normal', 1), ('he_normal', 0)):
    rundir.run_dir(tmp_path, scheme, k).mkdir(parents=True)
  (tmp_path / 'runs' / 'zero' / 'notes').mkdir()
  assert [(s, k) for s, k, _ in rundir.study_runs(tmp_path)] == [
    ('he_normal', 0),
    ('he_normal', 1),
    ('zero', 0),
  ]


def test_metrics_module_uses_the_same_rule():
  assert metrics_lib.dumps is rundir.dumps and metrics_lib.read_jsonl is rundir.read_jsonl
  assert metrics_lib.JSONL_NAME == rundir.METRICS and metrics_lib.TB_DIR_NAME == rundir.TB
