"""A small Poincaré ResNet (configs/poincare_resnet_digits.py:small, identity init) trains on
the digits above 90% test accuracy, and kill -9 in the middle of `python -m initlab.main`
then a rerun ends as if never interrupted, like every other run (tests/train/test_resume.py)."""

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

import poincare_resnet_digits  # pylint: disable=g-bad-import-order

ARG = 'small,scheme=poincare_identity'


def _losses(run_dir):
  records = metrics_lib.dedupe_steps(metrics_lib.read_jsonl(run_dir / 'metrics.jsonl'))
  return {r['step']: r['loss'] for r in records if r['split'] == 'train'}


def _kill_after_first_checkpoint(workdir, data_dir, every):
  cmd = [
    sys.executable,
    '-m',
    'initlab.main',
    f'--config=configs/poincare_resnet_digits.py:{ARG}',
    f'--workdir={workdir}',
    f'--config.data.data_dir={data_dir}',
  ]
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    deadline = time.time() + 600  # Compiling the Poincaré ResNet takes most of it.
    while not (workdir / 'checkpoints' / str(every)).is_dir():
      assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
      assert time.time() < deadline, 'no checkpoint within 600 s'
      time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait()
  assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_small_poincare_resnet_above_90_percent_and_resumes_after_kill(data_dir, tmp_path):
  config = poincare_resnet_digits.get_config(ARG)
  config.data.data_dir = data_dir
  steps, every = config.train.steps, config.train.checkpoint_every
  assert config.model.name == 'poincare_resnet' and config.model.depth == 8
  workdir = tmp_path / 'killed'
  _kill_after_first_checkpoint(workdir, data_dir, every)
  killed_at = max(_losses(workdir))
  assert every <= killed_at < steps, killed_at

  resumed = train.run(config, workdir).summary  # The rerun: auto-resumes.
  assert every <= resumed['resumed_from'] <= killed_at
  reference = train.run(config, tmp_path / 'reference').summary
  assert reference['resumed_from'] is None
  assert reference['final']['eval/accuracy'] > 0.9, reference['final']
  assert resumed['final'] == reference['final']

  losses = _losses(workdir)
  every_log = config.train.log_every
  assert sorted(losses) == list(range(every_log, steps + 1, every_log))
  assert losses == _losses(tmp_path / 'reference')  # Same data order: same per-step losses.
  got = jax.device_get(train.Run(config, workdir).restore())
  want = jax.device_get(train.Run(config, tmp_path / 'reference').restore())
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(a, b)  # Params and the BatchNorm running statistics.
