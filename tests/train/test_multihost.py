"""Two processes x 4 devices (jax.distributed via the environment) = one process x 8 devices."""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from initlab import train
from initlab.train import metrics as metrics_lib

from train_testlib import REPO  # pylint: disable=g-bad-import-order

TIMEOUT_S = 180  # Both processes together; a hang is killed and reported, never waited out.

# Pinned to <= 2 cores (the machine the deadlock was seen on): XLA:CPU sizes its worker pool
# from the cores it may use, unless `maybe_initialize_distributed` sets PJRT_NPROC.
_IN_FLIGHT = """
import os, sys
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
from initlab.train import runtime
runtime.maybe_initialize_distributed()
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
mesh = jax.make_mesh((jax.device_count(),), ('data',))
x = jax.make_array_from_process_local_data(NamedSharding(mesh, P('data')),
                                           np.ones((4, 8), np.float32))
f = jax.jit(lambda x: jnp.sum(x * x), out_shardings=NamedSharding(mesh, P()))
total = f(x)
for _ in range(int(sys.argv[1]) - 1):  # No wait between dispatches, as in `Run.evaluate`.
  total = total + f(x)
print('total', float(total))
"""


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run_processes(argv, workdir, num=2, devices=4, timeout=TIMEOUT_S):
  """Runs `argv` as `num` jax.distributed processes; returns their stdouts, fails with their tails.

  Output goes to files (no pipe can fill while another process is awaited). On a timeout every
  process is SIGKILLed (JAX catches SIGTERM) and the failure shows each one's output tails.
  """
  env = {k: v for k, v in os.environ.items() if k not in ('PJRT_NPROC', 'NPROC')}
  env.update(
    XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
    JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{_free_port()}',
    JAX_NUM_PROCESSES=str(num),
  )
  procs, files = [], []
  try:
    for i in range(num):
      # pylint: disable-next=consider-using-with
      files += [open(workdir / f'{name}.{i}', 'w') for name in ('stdout', 'stderr')]
      procs.append(
        subprocess.Popen(
          argv, cwd=REPO, env=dict(env, JAX_PROCESS_ID=str(i)), stdout=files[-2], stderr=files[-1]
        )
      )
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
    for f in files:
      f.close()
  read = lambda name, i: (workdir / f'{name}.{i}').read_text()
  failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
  if failed:
    hung = any(rc == -9 for _, rc in failed)
    tails = '\n'.join(
      f'--- process {i} (exit {rc}) {name} tail:\n{read(name, i)[-1500:]}'
      for i, rc in failed
      for name in ('stdout', 'stderr')
    )
    pytest.fail(
      f'{len(failed)} of {num} processes failed'
      + (f' (killed after {timeout} s: hung)' if hung else '')
      + f'\n{tails}'
    )
  return [read('stdout', i) for i in range(num)]


@pytest.mark.slow
def test_many_programs_in_flight_do_not_deadlock(tmp_path):
  """200 all-reduce programs dispatched without waiting finish on a 2-core pool.

  Before `maybe_initialize_distributed` widened XLA:CPU's worker pool, this hung in 3 of 3
  runs (workers blocked in gloo::allreduce, one participant queued behind them).
  """
  n = 200
  outs = _run_processes([sys.executable, '-c', _IN_FLIGHT, str(n)], tmp_path, timeout=120)
  for out in outs:  # Each call: sum of x**2 over the global 8 x 8 ones.
    assert out.split()[-2:] == ['total', str(float(n * 8 * 8))], out[-500:]


@pytest.mark.slow
def test_two_processes_match_one(tiny_config, tmp_path, devices):
  config = tiny_config(steps=4, checkpoint_every=2, eval_every=4)
  t = config.train
  args = [
    '--config=configs/quickstart.py:smoke',
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
    f'--workdir={tmp_path / "two"}',
  ]
  _run_processes([sys.executable, '-m', 'initlab.main', *args], tmp_path)

  train.run(config, tmp_path / 'one', devices=devices)
  np.testing.assert_allclose(_losses(tmp_path / 'two'), _losses(tmp_path / 'one'), rtol=1e-5)
  assert sorted(p.name for p in (tmp_path / 'two' / 'checkpoints').iterdir()) == ['2', '4']


def _losses(run_dir):
  records = metrics_lib.read_jsonl(run_dir / 'metrics.jsonl')
  return [r['loss'] for r in records if r['split'] == 'train']
