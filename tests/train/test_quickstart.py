"""The quickstart study, end to end through the command line, in its smoke setting."""

import json
import subprocess
import sys

import pytest

from initlab.train import metrics as metrics_lib

from train_testlib import REPO  # pylint: disable=g-bad-import-order
import quickstart  # pylint: disable=g-bad-import-order


@pytest.mark.slow
def test_quickstart_smoke_study(data_dir, tmp_path):
  config = quickstart.get_config('smoke')
  workdir = tmp_path / 'quickstart'
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'initlab.main',
      '--config=configs/quickstart.py:smoke',
      f'--workdir={workdir}',
      f'--config.data.data_dir={data_dir}',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  assert f'Report: {workdir}/report.md' in proc.stdout

  schemes, seeds = config.init.compare, range(config.seeds.num)
  for scheme in schemes:
    for k in seeds:
      run = workdir / 'runs' / scheme / f'seed_{k}'
      steps = sorted(int(p.name) for p in (run / 'checkpoints').iterdir() if p.name.isdigit())
      assert steps[-1] == config.train.steps and len(steps) <= config.train.keep_checkpoints
      assert list((run / 'tb').glob('events*'))
      records = metrics_lib.read_jsonl(run / 'metrics.jsonl')
      assert {r['split'] for r in records} == {'train', 'eval'}
      assert json.loads((run / 'summary.json').read_text())['steps'] == config.train.steps
      assert 'q' in json.loads((run / 'init_diagnostics.json').read_text())

  report = (workdir / 'report.md').read_text()
  assert '| scheme | seeds | eval accuracy |' in report
  for png in ('loss.png', 'accuracy.png', 'init_variance.png'):
    assert (workdir / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', png
    assert f'({png})' in report
  results = json.loads((workdir / 'results.json').read_text())
  assert sorted(results['schemes']) == sorted(schemes)
  for scheme, result in results['schemes'].items():
    accuracy = result['aggregate']['eval/accuracy']
    assert accuracy['n'] == config.seeds.num and accuracy['mean'] > 0.1, (scheme, accuracy)
    assert result['aggregate']['eval/loss']['mean'] < 2.3, scheme  # below log(10)
