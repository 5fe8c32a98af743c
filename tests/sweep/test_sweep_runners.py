"""Sweep runners on a tiny MLP: kills resume each trial exactly once (sequential, vmap,
processes), vmap equals sequential per seed, a diverging trial is marked while the others
finish, and a single run resumes a vmap trial from its checkpoint."""

import jax
import numpy as np
import pytest

from initlab import rundir
from initlab import train
from initlab.sweep import runners
from initlab.sweep import vmap as vmap_lib
from initlab.sweep.manifest import Manifest

SWEEP = {'product': {'init.name': ['he_normal', 'orthogonal']}, 'seeds': 2}


class Killed(BaseException):
  """Stands for a kill: not an Exception, so the trial is not marked failed."""


def kill_at(step, when=lambda: True):
  def fn(s, state, metrics):
    del state, metrics
    if s == step and when():
      raise Killed

  return fn


def entries(workdir):
  return {
    k: (e['status'], e['attempts'], e['finished']) for k, e in Manifest(workdir).read().items()
  }


def summary(workdir, trial_id):
  return rundir.read_json(workdir / rundir.RUNS / trial_id / rundir.SUMMARY)


def train_steps(workdir, trial_id):
  path = workdir / rundir.RUNS / trial_id / rundir.METRICS
  return [r['step'] for r in rundir.read_jsonl(path) if r['split'] == 'train']


def test_killed_sequential_sweep_resumes_each_trial_once(tiny_config, tmp_path):
  trials = runners.prepare(tiny_config(), tmp_path, SWEEP)
  third = trials[2].id
  with pytest.raises(Killed):  # The third trial dies after its checkpoint at step 4.
    calls = iter(range(100))
    runners.run_sequential(tmp_path, trials, callbacks=[kill_at(4, lambda: next(calls) == 2)])
  got = entries(tmp_path)
  assert got[trials[0].id] == got[trials[1].id] == ('done', 1, 1)
  assert got[third] == ('running', 1, 0) and got[trials[3].id] == ('pending', 0, 0)
  done_before = (tmp_path / rundir.RUNS / trials[0].id / rundir.SUMMARY).read_bytes()
  trials = runners.prepare(tiny_config(), tmp_path, SWEEP)  # The rerun.
  runners.run_sequential(tmp_path, trials)
  got = entries(tmp_path)
  assert got[third] == ('done', 2, 1)
  assert {got[t.id] for t in trials if t.id != third} == {('done', 1, 1)}
  assert (tmp_path / rundir.RUNS / trials[0].id / rundir.SUMMARY).read_bytes() == done_before
  assert summary(tmp_path, third)['resumed_from'] == 4
  assert train_steps(tmp_path, third) == [2, 4, 6, 8]  # No step twice.
  results = runners.report(tmp_path, trials)
  assert set(results['schemes']) == {'he_normal', 'orthogonal'}
  assert set(results['best']) == {'he_normal', 'orthogonal'}
  assert results['best']['he_normal']['id'].startswith('he_normal/seed_')


def test_killed_vmap_sweep_resumes_and_equals_sequential(tiny_config, tmp_path):
  seq, vm = tmp_path / 'seq', tmp_path / 'vmap'
  trials = runners.prepare(tiny_config(), seq, SWEEP)
  runners.run_sequential(seq, trials)
  trials = runners.prepare(tiny_config(), vm, SWEEP, vmap=True)
  with pytest.raises(Killed):  # All four trials in one program; killed after step 4.
    vmap_lib.run_vmap(vm, trials, callbacks=[kill_at(4)])
  assert {s for s, _, _ in entries(vm).values()} == {'running'}
  trials = runners.prepare(tiny_config(), vm, SWEEP, vmap=True)
  out = vmap_lib.run_vmap(vm, trials)
  assert set(out) == {t.id for t in trials}
  assert set(entries(vm).values()) == {('done', 2, 1)}
  assert vmap_lib.run_vmap(vm, trials) == {}  # Finished: nothing is claimed again.
  for t in trials:
    a, b = summary(seq, t.id), summary(vm, t.id)
    assert b['resumed_from'] == 4 and b['vmap_trials'] == 4
    assert train_steps(vm, t.id) == [2, 4, 6, 8]
    for key in ('train/loss', 'train/l2_params', 'train/learning_rate', 'eval/loss'):
      np.testing.assert_allclose(b['final'][key], a['final'][key], rtol=1e-5, err_msg=t.id)
    assert b['final']['eval/accuracy'] == a['final']['eval/accuracy']
  # Per-trial checkpoints are a run's: the params match the sequential run's.
  run_a = train.Run(trials[1].run_config(), seq / rundir.RUNS / trials[1].id)
  run_b = train.Run(trials[1].run_config(), vm / rundir.RUNS / trials[1].id)
  pa, pb = run_a.restore().params, run_b.restore().params
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-6)


def test_sequential_diverging_trial_is_marked_and_the_others_finish(tiny_config, tmp_path):
  sweep = {'product': {'optimizer.learning_rate': [1e30, 0.05]}, 'seeds': 1}
  trials = runners.prepare(tiny_config(), tmp_path, sweep)
  runners.run_sequential(tmp_path, trials)
  assert entries(tmp_path) == {
    'learning_rate=1e+30/seed_0': ('diverged', 1, 1),
    'learning_rate=0.05/seed_0': ('done', 1, 1),
  }
  assert 'NaN/Inf' in summary(tmp_path, 'learning_rate=1e+30/seed_0')['error']
  runners.run_sequential(tmp_path, runners.prepare(tiny_config(), tmp_path, sweep))
  assert entries(tmp_path)['learning_rate=1e+30/seed_0'] == ('diverged', 1, 1)  # Final.


def test_vmap_diverging_trial_is_marked_and_the_others_finish(tiny_config, tmp_path):
  sweep = {'product': {'optimizer.learning_rate': [0.05, 1e30]}, 'seeds': 2}
  trials = runners.prepare(tiny_config(), tmp_path, sweep, vmap=True)
  out = vmap_lib.run_vmap(tmp_path, trials)
  status = {k: v['status'] for k, v in out.items()}
  assert status == {
    'learning_rate=0.05/seed_0': 'done',
    'learning_rate=0.05/seed_1': 'done',
    'learning_rate=1e+30/seed_0': 'diverged',
    'learning_rate=1e+30/seed_1': 'diverged',
  }
  assert {k: v[0] for k, v in entries(tmp_path).items()} == status
  bad = summary(tmp_path, 'learning_rate=1e+30/seed_0')
  assert 'NaN/Inf' in bad['error'] and bad['steps'] <= 4
  assert train_steps(tmp_path, 'learning_rate=0.05/seed_0') == [2, 4, 6, 8]
  assert max(train_steps(tmp_path, 'learning_rate=1e+30/seed_0')) <= 4  # Frozen: no more logs.
  # One program, per-trial learning rates (traced): the logged lr at step 2 is each trial's.
  lr = {
    t.id: next(
      r['learning_rate']
      for r in rundir.read_jsonl(t.workdir(tmp_path) / rundir.METRICS)
      if r['step'] == 2 and r['split'] == 'train'
    )
    for t in trials
  }
  np.testing.assert_allclose(
    lr['learning_rate=1e+30/seed_0'] / lr['learning_rate=0.05/seed_0'], 2e31, rtol=1e-5
  )
  results = runners.report(tmp_path, trials)
  assert sorted(results['failed']) == ['learning_rate=1e+30/seed_0', 'learning_rate=1e+30/seed_1']
  # A single run resumes a vmap trial from its checkpoint, in a run's format.
  longer = trials[0].run_config()
  longer.train.steps = 12
  resumed = train.run(longer, tmp_path / rundir.RUNS / trials[0].id)
  assert resumed.summary['resumed_from'] == 8 and int(resumed.state.step) == 12


def test_processes_runner_runs_each_trial_once(tiny_config, tmp_path):
  config = tiny_config(steps=4, eval_every=0, checkpoint_every=0)
  trials = runners.prepare(config, tmp_path, {'seeds': 3})
  runners.run_processes(tmp_path, trials, workers=2)
  assert set(entries(tmp_path).values()) == {('done', 1, 1)}
  for t in trials:
    assert train_steps(tmp_path, t.id) == [2, 4]


@pytest.mark.parametrize('process_index,process_count', [(0, 1), (1, 2)])
def test_vmap_batch_order_is_the_single_run_pipelines(process_index, process_count):
  """The vmap runner's vectorized data order (all trials, one call per batch) equals each
  trial's own grain stream, over several seeds and epochs, batches spanning two epochs."""
  from initlab.data import pipeline  # pylint: disable=g-import-not-at-top

  n, batch = 37, 8
  seeds, starts = [3, 4, 5, 2**32 - 2], [0, 5, 11, 2]
  order = vmap_lib.BatchOrder(n, batch, process_index=process_index, process_count=process_count)
  runs = [
    pipeline.local_batches(
      range(n),
      batch_size=batch,
      seed=s,
      process_index=process_index,
      process_count=process_count,
    )
    for s in seeds
  ]
  for step in range(30):  # Up to epoch 13 of each seed.
    ks = [k + step for k in starts]
    want = np.stack([np.asarray(r[k]) for r, k in zip(runs, ks)])
    np.testing.assert_array_equal(order.indices(seeds, ks), want)


def test_vmap_seed_sweep_from_one_stacked_init_equals_sequential(tiny_config, tmp_path):
  """Seeds of one init scheme train the stack their shared init program built (no slicing
  and restacking); per seed the same as the sequential runner."""
  config, sweep = tiny_config(steps=4, eval_every=4, checkpoint_every=4), {'seeds': 3}
  seq, vm = tmp_path / 'seq', tmp_path / 'vmap'
  runners.run_sequential(seq, runners.prepare(config, seq, sweep))
  trials = runners.prepare(config, vm, sweep, vmap=True)
  vmap_lib.run_vmap(vm, trials)
  for t in trials:
    a, b = summary(seq, t.id)['final'], summary(vm, t.id)['final']
    np.testing.assert_allclose(b['train/loss'], a['train/loss'], rtol=1e-5, err_msg=t.id)
    np.testing.assert_allclose(b['eval/loss'], a['eval/loss'], rtol=1e-5, err_msg=t.id)
