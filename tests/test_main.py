"""`python -m initlab.main`: config errors exit non-zero, name the key, and touch nothing."""
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

_BAD_KEY_CONFIG = '''
import sys
sys.path.insert(0, {configs!r})
import quickstart

def get_config(arg=None):
  config = quickstart.get_config('smoke')
  with config.unlocked():
    config.train.eval_evry = 5
  return config
'''


def _snapshot(path):
  return sorted((str(p.relative_to(path)), p.stat().st_mtime_ns, p.stat().st_size)
                for p in path.rglob('*'))


def test_config_errors_exit_nonzero_and_leave_workdir_alone(tmp_path):
  bad_key = tmp_path / 'bad_key.py'
  bad_key.write_text(_BAD_KEY_CONFIG.format(configs=str(REPO / 'configs')))
  smoke = '--config=configs/quickstart.py:smoke'
  cases = {
      'unknown_key': ([f'--config={bad_key}'],
                      ["Unknown config key 'train.eval_evry'", "Did you mean 'eval_every'",
                       'Valid keys in config.train: batch_size, checkpoint_every']),
      'optimizer': ([smoke, '--config.optimizer.name=adamz'],
                    ["optimizer.name: expected an optax optimizer, got 'adamz'",
                     'adamw', 'sgd']),
      'batch_size': ([smoke, '--config.train.batch_size=12'],
                     ["train.batch_size: expected a multiple of the data-parallel mesh axes "
                      "{'data': 8}", 'batch_size=12']),
      'override_typo': ([smoke, '--config.train.stpes=3'], ['stpes']),
  }
  procs = {}
  for name, (args, _) in cases.items():
    workdir = tmp_path / name
    (workdir / 'checkpoints' / '10').mkdir(parents=True)
    (workdir / 'checkpoints' / '10' / 'keep.txt').write_text('earlier run')
    (workdir / 'metrics.jsonl').write_text('{"step": 10, "split": "train", "loss": 1.0}\n')
    before = _snapshot(workdir)
    procs[name] = (workdir, before, subprocess.Popen(
        [sys.executable, '-m', 'initlab.main', *args, f'--workdir={workdir}'], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  for name, (workdir, before, proc) in procs.items():
    out, err = proc.communicate(timeout=240)
    assert proc.returncode != 0, (name, out, err)
    for text in cases[name][1]:
      assert text in err, (name, text, err[-3000:])
    assert 'Traceback' not in err or name == 'override_typo', err[-3000:]
    assert _snapshot(workdir) == before, name
