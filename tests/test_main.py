"""`python -m initlab.main`: bad input ends with one line `initlab: ...`, exit 1, nothing written.

The processes of each test run concurrently (each pays the jax import once).
"""

import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

from initlab import data

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = '--config=configs/quickstart.py:smoke'
_ABSL_LOG = re.compile(r'^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ')

_BAD_KEY_CONFIG = """
import sys
sys.path.insert(0, {configs!r})
import quickstart

def get_config(arg=None):
  config = quickstart.get_config('smoke')
  with config.unlocked():
    config.train.eval_evry = 5
  return config
"""


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfds'))
  data.prepare('digits', path)
  return path


def _snapshot(path):
  if not path.exists():
    return None
  return sorted(
    (str(p.relative_to(path)), p.stat().st_mtime_ns, p.stat().st_size) for p in path.rglob('*')
  )


def _run_all(cases, workdirs, cwd=REPO, env=None):
  """Starts every case at once; returns {name: (returncode, stdout, stderr)}."""
  procs = {}
  for name, args in cases.items():
    procs[name] = subprocess.Popen(
      [sys.executable, '-m', 'initlab.main', *args, f'--workdir={workdirs[name]}'],
      cwd=cwd,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env={**os.environ, **(env or {})},
    )
  out, deadline = {}, time.monotonic() + 300  # One deadline for all; a hang kills them all.
  try:
    for name, proc in procs.items():
      stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
      out[name] = (proc.returncode, stdout, stderr)
  finally:
    for proc in procs.values():
      if proc.poll() is None:
        proc.kill()
        proc.communicate()
  return out


def _assert_one_line_error(name, result, expected):
  """Exit status 1; besides absl's progress log lines, stderr is one line: the error."""
  code, _, err = result
  lines = [l for l in err.strip().splitlines() if not _ABSL_LOG.match(l)]
  assert code == 1, (name, err[-3000:])
  assert len(lines) == 1 and lines[0].startswith('initlab: '), (name, err[-3000:])
  assert err.strip().splitlines()[-1] == lines[0], (name, err[-3000:])
  for text in expected:
    assert text in lines[0], (name, text, lines[0])


def test_config_errors_exit_nonzero_and_leave_workdir_alone(tmp_path):
  bad_key = tmp_path / 'bad_key.py'
  bad_key.write_text(_BAD_KEY_CONFIG.format(configs=str(REPO / 'configs')))
  cases = {
    'unknown_key': (
      [f'--config={bad_key}'],
      [
        "Unknown config key 'train.eval_evry'",
        "Did you mean 'eval_every'",
        'Valid keys in config.train: batch_size, checkpoint_every',
      ],
    ),
    'optimizer': (
      [SMOKE, '--config.optimizer.name=adamz'],
      ["optimizer.name: expected an optax optimizer, got 'adamz'", 'adamw', 'sgd'],
    ),
    'batch_size': (
      [SMOKE, '--config.train.batch_size=12'],
      [
        "train.batch_size: expected a multiple of the data-parallel mesh axes {'data': 8}",
        'batch_size=12',
      ],
    ),
  }
  workdirs = {}
  for name in cases:
    workdir = workdirs[name] = tmp_path / name
    (workdir / 'checkpoints' / '10').mkdir(parents=True)
    (workdir / 'checkpoints' / '10' / 'keep.txt').write_text('earlier run')
    (workdir / 'metrics.jsonl').write_text('{"step": 10, "split": "train", "loss": 1.0}\n')
  before = {name: _snapshot(w) for name, w in workdirs.items()}
  results = _run_all({n: a for n, (a, _) in cases.items()}, workdirs)
  for name, (_, expected) in cases.items():
    _assert_one_line_error(name, results[name], expected)
    assert _snapshot(workdirs[name]) == before[name], name


@pytest.mark.slow
def test_newcomer_mistakes_get_one_line_and_write_nothing(tmp_path, data_dir):
  """Issue 8.3's list, each as a newcomer would type it."""
  # A checkpoint of a 32-wide MLP, for init_from with a 64-wide one (a tree mismatch).
  source = tmp_path / 'source'
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'initlab.main',
      SMOKE,
      f'--workdir={source}',
      '--config.init.compare=()',
      '--config.seeds.num=1',
      '--config.train.steps=2',
      '--config.diagnostics_at_init=False',
      f'--config.data.data_dir={data_dir}',
      '--config.model.width=32',
      '--config.model.depth=1',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  (tmp_path / 'a_file').write_text('not a directory')
  readonly = _readonly_dir(tmp_path)
  data = f'--config.data.data_dir={data_dir}'
  cases = {
    'override_typo': (
      [SMOKE, '--config.train.stpes=10'],
      [
        "--config.train.stpes=10: Unknown config key 'train.stpes'.",
        "Did you mean 'steps'?",
        'Valid keys in config.train: batch_size',
      ],
    ),
    'missing_config': (
      ['--config=configs/quickstrat.py'],
      [
        "--config=configs/quickstrat.py: no such file 'configs/quickstrat.py'",
        'quickstart.py',
        'resnet_digits.py',
      ],
    ),
    'config_arg': (
      ['--config=configs/quickstart.py:smokee'],
      ["Unknown config argument 'smokee'; valid: smoke."],
    ),
    'workdir_file': ([SMOKE, data], ['workdir', 'a_file', 'is not a directory']),
    'workdir_readonly': ([SMOKE, data], ['workdir', 'not writable']),
    'tree_mismatch': (
      [
        SMOKE,
        data,
        '--config.init.compare=()',
        '--config.seeds.num=1',
        '--config.model.width=64',
        '--config.model.depth=1',
        f'--config.init_from={source}/checkpoints',
      ],
      [
        'config.init_from:',
        "param 'head/kernel' has shape (32, 10) there but (64, 10) in this model",
      ],
    ),
    'dataset_typo': (
      [SMOKE, '--config.data.name=mnistt'],
      ["data.name='mnistt'", "'digits', 'tiny_shakespeare'"],
    ),
    'resnet_depth': (
      ['--config=configs/resnet_digits.py:smoke', data, '--config.model.depth=15'],
      ['config.model', 'depth=15 must be 6n + 2', '20, 32, 44, 56'],
    ),
  }
  workdirs = {name: tmp_path / 'work' / name for name in cases}
  workdirs['workdir_file'] = tmp_path / 'a_file'
  workdirs['workdir_readonly'] = readonly / 'run'
  before = {name: _snapshot(w) for name, w in workdirs.items()}
  results = _run_all({n: a for n, (a, _) in cases.items()}, workdirs)
  for name, (_, expected) in cases.items():
    _assert_one_line_error(name, results[name], expected)
    assert _snapshot(workdirs[name]) == before[name], name
  assert not (tmp_path / 'work').exists()
  assert (tmp_path / 'a_file').read_text() == 'not a directory'

  # The full traceback stays one environment variable away.
  code, _, err = _run_all(
    {'override_typo': cases['override_typo'][0]}, workdirs, env={'INITLAB_TRACEBACK': '1'}
  )['override_typo']
  assert code != 0 and 'Traceback (most recent call last)' in err and 'stpes' in err


def _readonly_dir(tmp_path):
  """A directory this process cannot write into (root ignores permission bits: use /proc)."""
  if os.geteuid() != 0:
    path = tmp_path / 'readonly'
    path.mkdir()
    path.chmod(0o500)
    return path
  if not os.path.isdir('/proc/self'):
    pytest.skip('running as root without /proc: no unwritable directory to test with')
  return pathlib.Path('/proc/self')
