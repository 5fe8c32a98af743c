"""initlab: initialization studies in JAX/Flax (see README.md and DESIGN.md)."""

import os
import re

CPU_WORKERS = 128  # XLA:CPU workers: room for 4-8 devices x 16-32 programs in flight.


def size_cpu_worker_pool() -> None:
  """Gives XLA:CPU's worker pool room for every collective participant (sets `PJRT_NPROC`).

  XLA:CPU runs each local device's share of every dispatched program on one pool of
  `PJRT_NPROC` workers (default: sized from the core count, a handful on 2 cores), and a
  collective holds its worker until all participants arrive. With several programs in flight
  (async dispatch, a read-ahead thread, async checkpoints) a small pool fills with participants
  waiting for one queued behind them: across processes (gloo) a silent deadlock at 0% CPU; in
  one process with several CPU devices (`--xla_force_host_platform_device_count`) XLA aborts
  after 40 s ("Termination timeout for all reduce ... only 7 of them arrived"). Read when the
  CPU client is created, so it must run before the first computation; a value set by the user
  is kept.
  """
  if not (os.environ.get('PJRT_NPROC') or os.environ.get('NPROC')):
    os.environ['PJRT_NPROC'] = str(max(os.cpu_count() or 1, CPU_WORKERS))


def _forced_cpu_devices() -> int:
  found = re.findall(
    r'--xla_force_host_platform_device_count=(\d+)', os.environ.get('XLA_FLAGS', '')
  )
  return int(found[-1]) if found else 1


if _forced_cpu_devices() > 1:  # A fake multi-device CPU platform (tests, notebooks).
  size_cpu_worker_pool()
