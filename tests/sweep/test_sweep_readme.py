"""The README's sweep command, run as written from a fresh directory (`:smoke` appended to the
config, as tests/test_readme.py does for the main command), then rerun: nothing is rerun."""

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
README = (REPO / 'README.md').read_text()


def sweep_line():
  blocks = re.findall(r'^```bash\n(.*?)^```', README, flags=re.S | re.M)
  lines = [l.strip() for b in blocks for l in b.splitlines()]
  return next(l for l in lines if l.startswith('python -m initlab.sweep') and 'vmap' in l)


@pytest.mark.slow
def test_readme_sweep_command_runs_and_resumes(tmp_path):
  shutil.copytree(REPO / 'configs', tmp_path / 'configs')
  args = shlex.split(sweep_line())
  assert args[:3] == ['python', '-m', 'initlab.sweep'], args
  args = [sys.executable, *args[1:]]
  args = [a + ':smoke' if a.startswith('--config=') else a for a in args]
  env = {**os.environ, 'INITLAB_DATA_DIR': str(tmp_path / 'data')}
  for _ in range(2):
    proc = subprocess.run(
      args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
  workdir = tmp_path / 'runs' / 'qs'
  assert f'Report: {workdir}/report.md' in proc.stdout
  assert 'Best trial per group' in (workdir / 'report.md').read_text()
  trials = json.loads((workdir / 'sweep.json').read_text())['trials']
  assert sorted(trials) == [f'{s}/seed_{k}' for s in ('he_normal', 'orthogonal') for k in (0, 1)]
  assert {(e['status'], e['attempts'], e['finished']) for e in trials.values()} == {('done', 1, 1)}
  results = json.loads((workdir / 'results.json').read_text())
  assert set(results['best']) == {'he_normal', 'orthogonal'}


def test_bad_sweep_key_is_one_line_on_stderr(tmp_path):
  config = tmp_path / 'c.py'
  config.write_text(
    'import sys\n'
    f'sys.path.insert(0, {str(REPO / "configs")!r})\n'
    'import quickstart\n'
    'def get_config(arg=None):\n  return quickstart.get_config("smoke")\n'
    'def get_sweep(arg=None):\n  return {"product": {"model.widht": [8, 16]}}\n'
  )
  proc = subprocess.run(
    [sys.executable, '-m', 'initlab.sweep', f'--config={config}', f'--workdir={tmp_path / "w"}'],
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('initlab: config error: sweep.product') and "'model.widht'" in last, last
  assert "Did you mean 'width'" in last
  assert not (tmp_path / 'w').exists()
