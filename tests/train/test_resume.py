"""kill -9 in the middle of `python -m initlab.main`, rerun: ends as if never interrupted."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from initlab import train
from initlab.train import metrics as metrics_lib

from train_testlib import REPO  # pylint: disable=g-bad-import-order

STEPS, EVERY = 200, 20


def _cli_args(config):
  """The command line equivalent of `tiny_config` changes to the quickstart smoke config."""
  t = config.train
  return [
    '--config.init.compare=()',
    '--config.seeds.num=1',
    '--config.diagnostics_at_init=False',
    f'--config.data.data_dir={config.data.data_dir}',
    f'--config.model.depth={config.model.depth}',
    f'--config.model.width={config.model.width}',
    f'--config.train.steps={t.steps}',
    f'--config.train.batch_size={t.batch_size}',
    f'--config.train.log_every={t.log_every}',
    f'--config.train.eval_every={t.eval_every}',
    f'--config.train.checkpoint_every={t.checkpoint_every}',
    f'--config.train.keep_checkpoints={t.keep_checkpoints}',
  ]


def _losses(run_dir):
  records = metrics_lib.dedupe_steps(metrics_lib.read_jsonl(run_dir / 'metrics.jsonl'))
  return {r['step']: r['loss'] for r in records if r['split'] == 'train'}


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(tiny_config, tmp_path):
  config = tiny_config(steps=STEPS, checkpoint_every=EVERY, keep_checkpoints=2)
  workdir = tmp_path / 'killed'
  cmd = [
    sys.executable,
    '-m',
    'initlab.main',
    '--config=configs/quickstart.py:smoke',
    f'--workdir={workdir}',
    *_cli_args(config),
  ]
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    deadline = time.time() + 120
    while not (workdir / 'checkpoints' / str(EVERY)).is_dir():
      assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
      assert time.time() < deadline, 'no checkpoint within 120 s'
      time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  killed_at = max(_losses(workdir))
  assert EVERY <= killed_at < STEPS, killed_at

  summary = train.run(config, workdir).summary  # The rerun: auto-resumes.
  assert EVERY <= summary['resumed_from'] <= killed_at
  train.run(config, tmp_path / 'reference')

  resumed, reference = _losses(workdir), _losses(tmp_path / 'reference')
  assert sorted(resumed) == list(range(1, STEPS + 1))
  assert resumed == reference  # Same data order after the resume: same per-step losses.
  got = jax.device_get(train.Run(config, workdir).restore().params)
  want = jax.device_get(train.Run(config, tmp_path / 'reference').restore().params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(a, b)
