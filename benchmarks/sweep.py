r"""Sweep runners: 16 seeds of the quickstart model, `vmap` vs `sequential` wall time.

    python benchmarks/sweep.py                         # widths 32, 128 (quickstart), 512
    python benchmarks/sweep.py --widths=128 --seeds=16 --steps=300
    python benchmarks/sweep.py --widths=128 --compilation_cache   # as a user runs it

For each MLP width (depth 4, the quickstart's other settings: SGD+momentum, cosine, batch 64,
300 steps, eval every 50, checkpoints every 100), the same 16-seed sweep (he_normal) runs in
two fresh workdirs on the same machine, in this process: `runners.run_sequential` (one
`train.run` after another) and `vmap.run_vmap` (all seeds stacked in one program). Wall time
includes everything a user waits for after `prepare` (init, compilation, training, eval,
checkpoints, metrics), not the report. JAX's persistent compilation cache is off, so neither
runner reuses the other's programs; `--compilation_cache` turns it on in a fresh directory,
as a user has it by default: sequential trials 2..16 then load their programs from it (vmap
runs first; sequential may also reuse its init program). Prints each wall time and process CPU time (less sensitive to other processes' load on a
shared machine), the speed-ups (sequential / vmap) and
the largest per-seed difference of the final train loss between the runners. Goal: >= 6x at
the quickstart width (128).
"""

import os
import sys
import tempfile
import time

os.environ.setdefault('INITLAB_COMPILATION_CACHE', '0')

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import quickstart
from initlab import data as data_lib
from initlab import rundir
from initlab.sweep import runners
from initlab.sweep import vmap

_WIDTHS = flags.DEFINE_list('widths', ['32', '128', '512'], 'MLP widths (quickstart: 128).')
_SEEDS = flags.DEFINE_integer('seeds', 16, 'Seeds per sweep.')
_STEPS = flags.DEFINE_integer('steps', 300, 'Train steps per trial (quickstart: 300).')
_CACHE = flags.DEFINE_bool(
  'compilation_cache', False, "JAX's persistent compilation cache on, in a fresh directory."
)


def config(width: int):
  c = quickstart.get_config()
  c.init.compare = ()
  c.init.name = 'he_normal'
  c.model.width = width
  c.train.steps = _STEPS.value
  c.train.progress_bar = False
  c.diagnostics_at_init = False
  return c


def timed(width: int, runner: str, root: str) -> tuple[float, float, dict]:
  workdir = os.path.join(root, f'{runner}_{width}')
  trials = runners.prepare(config(width), workdir, {'seeds': _SEEDS.value}, vmap=runner == 'vmap')
  start, cpu = time.perf_counter(), time.process_time()
  if runner == 'vmap':
    vmap.run_vmap(workdir, trials)
  else:
    runners.run_sequential(workdir, trials)
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu
  losses = {
    t.id: rundir.read_json(os.path.join(t.workdir(workdir), rundir.SUMMARY))['final']['train/loss']
    for t in trials
  }
  return wall, cpu, losses


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  data_lib.prepare('digits')
  import tensorboardX  # noqa: F401  (imported once before timing: both runners write events)

  rows = []
  with tempfile.TemporaryDirectory() as root:
    if _CACHE.value:  # Read when the first run is built (initlab.train.runtime).
      os.environ['INITLAB_COMPILATION_CACHE'] = os.path.join(root, 'jax_cache')
    for width in map(int, _WIDTHS.value):
      t_vmap, c_vmap, l_vmap = timed(width, 'vmap', root)
      t_seq, c_seq, l_seq = timed(width, 'sequential', root)
      diff = max(abs(l_vmap[k] - l_seq[k]) for k in l_seq)
      rows.append((width, t_seq, t_vmap, c_seq, c_vmap, diff))
      print(
        f'width {width:5d}: sequential {t_seq:7.1f} s ({c_seq:7.1f} s CPU)  vmap {t_vmap:7.1f} s '
        f'({c_vmap:7.1f} s CPU)  speed-up {t_seq / t_vmap:5.2f}x wall, {c_seq / c_vmap:5.2f}x CPU  '
        f'max |loss diff| {diff:.2e}',
        flush=True,
      )
  cache = 'on (fresh)' if _CACHE.value else 'off'
  print(
    f'\n{_SEEDS.value} seeds x {_STEPS.value} steps, MLP depth 4, batch 64, {os.cpu_count()} CPUs, '
    f'compilation cache {cache}:'
  )
  print(
    '| width | sequential s (CPU s) | vmap s (CPU s) | speed-up wall | speed-up CPU | max abs loss diff |'
  )
  print('|---|---|---|---|---|---|')
  for width, ts, tv, cs, cv, diff in rows:
    print(
      f'| {width} | {ts:.1f} ({cs:.1f}) | {tv:.1f} ({cv:.1f}) | {ts / tv:.2f}x | {cs / cv:.2f}x | {diff:.1e} |'
    )


if __name__ == '__main__':
  app.run(main)
