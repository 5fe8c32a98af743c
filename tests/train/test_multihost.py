"""Two processes x 4 devices (jax.distributed via the environment) = one process x 8 devices."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from initlab import train
from initlab.train import metrics as metrics_lib

from train_testlib import REPO  # pylint: disable=g-bad-import-order


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _losses(run_dir):
  records = metrics_lib.read_jsonl(run_dir / 'metrics.jsonl')
  return [r['loss'] for r in records if r['split'] == 'train']


@pytest.mark.slow
def test_two_processes_match_one(tiny_config, tmp_path, devices):
  config = tiny_config(steps=4, checkpoint_every=2, eval_every=4)
  t = config.train
  args = ['--config=configs/quickstart.py:smoke', '--config.init.compare=()',
          '--config.seeds.num=1', '--config.diagnostics_at_init=False',
          f'--config.data.data_dir={config.data.data_dir}',
          f'--config.model.depth={config.model.depth}',
          f'--config.model.width={config.model.width}',
          f'--config.train.steps={t.steps}', f'--config.train.batch_size={t.batch_size}',
          f'--config.train.log_every={t.log_every}', f'--config.train.eval_every={t.eval_every}',
          f'--config.train.checkpoint_every={t.checkpoint_every}', f'--workdir={tmp_path / "two"}']
  port = _free_port()
  procs = []
  for i in range(2):
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
               JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}', JAX_NUM_PROCESSES='2',
               JAX_PROCESS_ID=str(i))
    procs.append(subprocess.Popen([sys.executable, '-m', 'initlab.main', *args], cwd=REPO,
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True))
  try:
    errors = [p.communicate(timeout=240)[1] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, err in zip(procs, errors):
    assert p.returncode == 0, err[-3000:]

  train.run(config, tmp_path / 'one', devices=devices)
  np.testing.assert_allclose(_losses(tmp_path / 'two'), _losses(tmp_path / 'one'), rtol=1e-5)
  assert sorted(p.name for p in (tmp_path / 'two' / 'checkpoints').iterdir()) == ['2', '4']
