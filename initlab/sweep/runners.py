"""Sweep runners over one mechanism: `prepare`, claim trials in the manifest, `run_trial`.

    trials = prepare(config, workdir, sweep)        # checks everything, writes config.json
                                                    # and syncs <workdir>/sweep.json
    run_sequential(workdir, trials)                 # one trial after another, this process
    run_processes(workdir, trials, workers=N)       # N local processes claiming trials
    initlab.sweep.vmap.run_vmap(workdir, trials)    # trials of one shape in one program
    report(workdir, trials)                         # initlab.report over the sweep

A worker (a process, a Ray task) runs `work(workdir, trial_id)`: claim the trial in the
manifest (skipped if it is final or another live worker holds it), `run_trial`, record
'done', 'diverged' (NaN/Inf) or 'failed' (any other exception, re-raised). An interrupted
worker leaves its trial 'running' with its lock released; the next claim resumes it from its
last checkpoint (`train.run` resumes a run directory).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pathlib
from typing import Any, Callable, Sequence

import jax
import ml_collections

from initlab import config as config_lib
from initlab import rundir
from initlab.sweep import spec as spec_lib
from initlab.sweep.manifest import FINAL, Claim, Manifest
from initlab.sweep.spec import Trial
from initlab.train import loop
from initlab.train import workdir as workdir_lib


def prepare(
  config: ml_collections.ConfigDict,
  workdir,
  sweep: dict[str, Any] | None = None,
  *,
  devices: Sequence[jax.Device] | None = None,
  force: bool = False,
  vmap: bool = False,
) -> list[Trial]:
  """Checks the sweep, every point's model and init and the workdir, then writes the sweep's
  config.json and syncs the manifest (failed trials become pending); returns the trials.

  Raises ConfigError / RunDirError before anything is written.
  """
  devices = jax.devices() if devices is None else list(devices)
  config = config_lib.resolve_paths(config)
  config_lib.validate(config, num_devices=len(devices))
  workdir = pathlib.Path(rundir.absolute(workdir))
  trials = spec_lib.trials(config, sweep)
  if vmap:
    spec_lib.check_vmappable(trials)
  seen = set()
  for t in trials:  # Models, init schemes and data sizes, once per point.
    if t.group not in seen:
      c = t.run_config()
      config_lib.validate(c, num_devices=len(devices))
      loop.Run(c, t.workdir(workdir), devices=devices).checkpointer.close()
      seen.add(t.group)
  loop.check_workdir(workdir, config, force=force, study=True)
  for t in trials:
    if t.workdir(workdir).exists():
      loop.check_workdir(t.workdir(workdir), t.run_config(), force=force)
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    loop.write_json(workdir / loop.CONFIG_NAME, loop.config_dict(config))
    manifest = Manifest(workdir)
    manifest.sync(trials)
    manifest.reset_failed()
  return trials


def run_trial(
  trial: Trial,
  workdir,
  *,
  devices: Sequence[jax.Device] | None = None,
  callbacks: Sequence[loop.Callback] = (),
) -> dict[str, Any]:
  """Trains one trial in `trial.workdir(workdir)` (resuming its checkpoint) with `train.run`.

  Returns {'status': 'done' | 'diverged', 'error': str | None}. Does not touch the manifest.
  A NaN/Inf run gets a summary.json with its `error` (as `run_study` always wrote).
  """
  path = trial.workdir(workdir)
  try:
    loop.run(trial.run_config(), path, devices=devices, callbacks=callbacks)
  except loop.NonFiniteError as e:
    logging.error('%s: %s', trial.id, e)
    loop.write_json(
      path / loop.SUMMARY_NAME, dict(final={}, steps=e.step, wall_s=None, error=str(e))
    )
    return dict(status='diverged', error=str(e))
  return dict(status='done', error=None)


def execute(claim: Claim, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
  """Runs `fn()` for a claimed trial and records its outcome ('failed' on an exception)."""
  try:
    out = fn()
  except Exception as e:  # Recorded, then raised: the sweep stops, a rerun retries it.
    claim.finish('failed', error=f'{type(e).__name__}: {e}')
    raise
  except BaseException:  # A kill (KeyboardInterrupt, SystemExit): stays 'running', resumable.
    claim.release()
    raise
  claim.finish(out['status'], error=out.get('error'))
  return out


def work(workdir, trial_id: str | None = None, **run_kwargs) -> dict[str, Any] | None:
  """Claims `trial_id` (default: the next claimable trial), runs and records it.

  Returns {'id', 'status', 'error'}, or None when there was nothing to claim.
  """
  claim = Manifest(workdir).claim(None if trial_id is None else [trial_id])
  if claim is None:
    return None
  out = execute(claim, lambda: run_trial(claim.trial, workdir, **run_kwargs))
  return dict(id=claim.trial.id, **out)


def run_sequential(workdir, trials: Sequence[Trial], **run_kwargs) -> dict[str, dict]:
  """Runs every non-final trial of `trials` in order in this process; {id: outcome}.

  With several JAX processes (one trial spread over the hosts of a pod slice), every process
  runs the same trials in the same order: the statuses are read once after `prepare`, and
  process 0 alone records outcomes (claims would let one process skip a trial that the
  others train, and hang their collectives).
  """
  manifest = Manifest(workdir)
  if jax.process_count() > 1:
    workdir_lib._sync('initlab_sweep_prepared')  # pylint: disable=protected-access
    statuses = manifest.statuses()
    out = {}
    for t in trials:
      if statuses.get(t.id) in FINAL:
        continue
      try:
        out[t.id] = dict(id=t.id, **run_trial(t, workdir, **run_kwargs))
      except Exception as e:
        if jax.process_index() == 0:
          manifest.set_status(t.id, 'failed', error=f'{type(e).__name__}: {e}')
        raise
      if jax.process_index() == 0:
        manifest.set_status(t.id, out[t.id]['status'], error=out[t.id]['error'])
    return out
  out = {}
  for i, t in enumerate(trials):
    status = manifest.statuses().get(t.id)
    if status in FINAL:
      logging.info('[%d/%d] %s: already %s', i + 1, len(trials), t.id, status)
      continue
    logging.info('[%d/%d] %s -> %s', i + 1, len(trials), t.id, t.workdir(workdir))
    result = work(workdir, t.id, **run_kwargs)
    if result is None:
      logging.warning('%s: held by another live worker; skipped', t.id)
      continue
    out[t.id] = result
  return out


def _worker(workdir: str) -> None:
  """A processes-runner worker: claims and runs trials until none is left. Every worker sees
  all local devices; on a GPU it allocates memory as needed (no preallocation), so workers
  can share one."""
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')  # Before JAX's backend.
  while work(workdir) is not None:
    pass


def run_processes(workdir, trials: Sequence[Trial], *, workers: int = 2) -> None:
  """`workers` local processes (spawned; each imports JAX itself) claim trials until none is
  left. Raises RuntimeError naming the trials that failed (their errors are in the manifest).
  """
  del trials  # The workers read them from the manifest.
  ctx = multiprocessing.get_context('spawn')
  procs = [ctx.Process(target=_worker, args=(str(workdir),)) for _ in range(workers)]
  for p in procs:
    p.start()
  for p in procs:
    p.join()
  bad = {k: e['error'] for k, e in Manifest(workdir).read().items() if e['status'] == 'failed'}
  codes = [p.exitcode for p in procs if p.exitcode]
  if bad or codes:
    raise RuntimeError(f'sweep workers failed (exit codes {codes}): {bad}')


def report(workdir, trials: Sequence[Trial]) -> dict[str, Any]:
  """`initlab.report.build_report` over the sweep's trials (groups as the compared 'schemes':
  mean ± std and 95% CI tables, learning curves with bands, results.json), plus 'best':
  {group: the best seed's trial id} by the primary metric, and 'failed': {id: error} of the
  diverged trials. Process 0 builds it; the others get {'failed': ...} only."""
  failed = report_failed(workdir, trials)
  if jax.process_index() != 0:
    return dict(failed=failed)
  from initlab.report import build_report  # pylint: disable=g-import-not-at-top

  results = build_report(workdir, runs=[t.workdir(workdir) for t in trials])
  results['best'] = best_trials(results)
  if results['best']:
    out = pathlib.Path(results['out_dir'])
    (out / rundir.RESULTS).write_text(rundir.dumps(results, indent=2) + '\n', encoding='utf-8')
    metric = results['primary']['metric']
    lines = [
      '',
      '## Best trial per group',
      '',
      f'By final `{metric}` ({results["primary"]["mode"]}); its run directory is `runs/<trial>`.',
      '',
      f'| group | best trial | {metric} |',
      '|---|---|---|',
      *(f'| {g} | {b["id"]} | {b["value"]:.4f} |' for g, b in results['best'].items()),
    ]
    with open(out / rundir.REPORT, 'a', encoding='utf-8') as f:
      f.write('\n'.join(lines) + '\n')
  results['failed'] = failed
  return results


def report_failed(workdir, trials: Sequence[Trial]) -> dict[str, str]:
  """{id: error} of the trials the manifest records as diverged (NaN/Inf)."""
  manifest = Manifest(workdir).read()
  return {
    t.id: manifest[t.id].get('error') or ''
    for t in trials
    if manifest.get(t.id, {}).get('status') == 'diverged'
  }


def best_trials(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
  """{group: {'id', 'value'}}: each group's best seed by the report's primary metric."""
  primary = results.get('primary')
  if not primary:
    return {}
  metric, mode = primary['metric'], primary['mode']
  out = {}
  for group, res in results['schemes'].items():
    vals = [
      (s['final'][metric], s['seed'])
      for s in res['seeds']
      if isinstance(s['final'].get(metric), float) and s['final'][metric] == s['final'][metric]
    ]
    if vals:
      value, seed = (max if mode == 'max' else min)(vals)
      out[group] = dict(id=f'{group}/seed_{seed}', value=value)
  return out
