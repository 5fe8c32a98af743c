"""The `ray` runner on a local Ray instance (2 CPUs, 2 workers) started by the test: a worker
killed mid-trial is retried by Ray and resumes to the result of an uninterrupted run, every
trial finishes exactly once, a re-run sweep runs nothing, and a trial that raises is recorded
as failed (not retried) and named in the error."""

import json
import os
import sys

import numpy as np
import pytest
import ray

from initlab import rundir
from initlab.sweep import Manifest, ray_runner, runners

pytestmark = pytest.mark.slow  # a local Ray instance and worker processes importing JAX

# The callbacks below are shipped to the Ray workers, which cannot import this test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope='module')
def local_ray():
  ray.init(num_cpus=2, resources={'accel': 2}, include_dashboard=False, log_to_driver=False)
  yield
  ray.shutdown()
  assert not ray.is_initialized()


class KillOnce:
  """A train.run callback: the first worker to reach `step` dies there (os._exit, as a kill
  -9 of the worker would), once per marker file."""

  def __init__(self, marker, step):
    self.marker, self.step = str(marker), step

  def __call__(self, step, state, metrics):
    del state, metrics
    if step == self.step:
      try:
        fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        return
      os.write(fd, str(os.getpid()).encode())
      os.close(fd)
      os._exit(1)


class RecordPidAndRaise:
  """Appends the worker's pid to `path`, then fails the trial at its initial state (step 0,
  before any training step is compiled)."""

  def __init__(self, path):
    self.path = str(path)

  def __call__(self, step, state, metrics):
    with open(self.path, 'a') as f:
      f.write(f'{os.getpid()}\n')
    raise ValueError('boom in the trial')


def _metrics(path):
  return [json.loads(line) for line in (path / rundir.METRICS).read_text().splitlines()]


def test_killed_worker_is_retried_to_the_uninterrupted_result(local_ray, tiny_config, tmp_path):
  # Two copies of one run (they differ only in the cosmetic `name`), one per worker; the first
  # to reach step 8 is killed there, right after starting its (async) step-8 checkpoint, which
  # first waits for the step-4 one: the retry resumes from step 4 or 8, whichever is on disk,
  # and recomputes the rest. The other copy is the uninterrupted run it must equal.
  config = tiny_config(steps=12, eval_every=6, checkpoint_every=4, log_every=1)
  workdir = tmp_path / 'sweep'
  trials = runners.prepare(config, workdir, {'product': {'name': ['a', 'b']}, 'seeds': 1})
  assert len(trials) == 2 and trials[0].hash == trials[1].hash
  marker = tmp_path / 'killed'
  ray_runner.run_ray(workdir, trials, callbacks=[KillOnce(marker, 8)])

  assert marker.exists() and int(marker.read_text()) != os.getpid()
  entries = Manifest(workdir).read()
  assert {k: (e['status'], e['finished']) for k, e in entries.items()} == {
    t.id: ('done', 1) for t in trials
  }
  assert sorted(e['attempts'] for e in entries.values()) == [1, 2], entries
  killed, clean = sorted(trials, key=lambda t: -entries[t.id]['attempts'])
  summary = rundir.read_json(killed.workdir(workdir) / rundir.SUMMARY)
  want = rundir.read_json(clean.workdir(workdir) / rundir.SUMMARY)
  assert summary['steps'] == want['steps'] == 12, (summary, want)
  assert summary['resumed_from'] in (4, 8) and not want.get('resumed_from'), (summary, want)
  assert summary['final'].keys() == want['final'].keys()
  for key, value in want['final'].items():
    np.testing.assert_allclose(summary['final'][key], value, rtol=1e-6, err_msg=key)
  got_rows = {(r['split'], r['step']): r for r in _metrics(killed.workdir(workdir))}
  want_rows = _metrics(clean.workdir(workdir))
  assert len(want_rows) >= 12 and set(got_rows) == {(r['split'], r['step']) for r in want_rows}
  for row in want_rows:
    for key, value in row.items():
      if key not in rundir.RESERVED and isinstance(value, float) and 'time' not in key:
        np.testing.assert_allclose(got_rows[row['split'], row['step']][key], value, rtol=1e-6)

  # Re-running the finished sweep claims nothing and changes nothing.
  before = (workdir / rundir.SWEEP).read_text()
  ray_runner.run_ray(workdir, trials, callbacks=[KillOnce(tmp_path / 'again', 1)])
  assert (workdir / rundir.SWEEP).read_text() == before
  assert not (tmp_path / 'again').exists()


def test_raising_trial_is_failed_once_and_named(local_ray, tiny_config, tmp_path):
  """Not retried by Ray, recorded as failed, named in the error; a trial that reserves a
  custom (accelerator) resource gets a fresh worker process (max_calls=1)."""
  workdir = tmp_path / 'sweep'
  trials = runners.prepare(tiny_config(), workdir, {'seeds': 2})
  pids = tmp_path / 'pids'
  with pytest.raises(RuntimeError, match=r'seed_0.*ValueError: boom in the trial.*seed_1'):
    ray_runner.run_ray(
      workdir, trials, workers=1, resources={'accel': 1}, callbacks=[RecordPidAndRaise(pids)]
    )
  entries = Manifest(workdir).read()
  assert [(e['status'], e['attempts'], e['finished']) for e in entries.values()] == [
    ('failed', 1, 0)
  ] * 2, entries
  first, second = map(int, pids.read_text().split())
  assert first != second and os.getpid() not in (first, second)
