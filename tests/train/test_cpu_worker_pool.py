"""`import initlab` sizes XLA:CPU's worker pool on a fake multi-device CPU platform.

Without it, programs with an all-reduce over 8 CPU devices dispatched from several threads
(what a read-ahead thread or async checkpoints do beside the train loop) leave a participant
queued behind the waiting ones and XLA aborts the process after its 40 s rendezvous timeout.
"""

import os
import subprocess
import sys

_CONCURRENT_ALL_REDUCES = """
import threading
import initlab  # before the first computation, as any initlab entry point
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

mesh = jax.make_mesh((8,), ('d',))
x = jax.device_put(jnp.ones((8, 128, 128)), NamedSharding(mesh, P('d')))
f = jax.jit(lambda v: (v @ v) / jnp.sum(v @ v))

def work():
  v = x
  for _ in range(100):
    v = f(v)
  jax.block_until_ready(v)

threads = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print('pool', __import__('os').environ['PJRT_NPROC'])
"""


def test_concurrent_all_reduces_on_eight_cpu_devices_finish():
  env = {k: v for k, v in os.environ.items() if k not in ('PJRT_NPROC', 'NPROC')}
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
  env['JAX_PLATFORMS'] = 'cpu'
  proc = subprocess.run(
    [sys.executable, '-c', _CONCURRENT_ALL_REDUCES],
    env=env,
    capture_output=True,
    text=True,
    timeout=170,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == ['pool', '128']


def test_a_user_setting_is_kept():
  env = {**os.environ, 'PJRT_NPROC': '64', 'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  out = subprocess.run(
    [sys.executable, '-c', 'import initlab, os; print(os.environ["PJRT_NPROC"])'],
    env=env,
    capture_output=True,
    text=True,
    timeout=60,
    check=True,
  ).stdout
  assert out.split() == ['64']
