"""The `ray` sweep runner: every trial is one Ray task (Ray's scheduler, retries and resources).

    trials = runners.prepare(config, workdir, sweep)
    run_ray(workdir, trials)                          # local Ray, or the cluster at RAY_ADDRESS
    run_ray(workdir, trials, address='auto', num_gpus=1)

A task calls `runners.work(workdir, trial_id)`: it claims the trial in the manifest
(`<workdir>/sweep.json`, skipped if it is final or held by another live worker), trains it with
`train.run` (resuming the trial's newest checkpoint) and records done / diverged / failed. Ray
places each task where its resources are free (`num_cpus`, `num_gpus`, custom `resources` such
as {'TPU': 4}) and, when the worker process dies (a killed worker, a lost node), runs it again
up to `max_retries` times; the retry claims the trial again (the dead worker's lock died with
it) and resumes from its last checkpoint, so the trial ends with the result of an uninterrupted
run and is recorded as finished once. A Python exception in the trial is not retried (it would
fail again): it is recorded as 'failed', and the next invocation of the sweep retries it.

Workers must see `workdir` at the same path (a shared filesystem with flock, e.g. NFS v4,
Filestore, a local disk for one host), and have initlab and its dependencies installed (same
versions as the driver; `runtime_env` in `options` can ship them).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import ray

from initlab.sweep import manifest as manifest_lib
from initlab.sweep import runners
from initlab.sweep.spec import Trial


def _trial_task(workdir: str, trial_id: str, callbacks: Sequence[Any]) -> dict[str, Any] | None:
  """The body of a Ray task: `runners.work` on one trial (None: nothing to claim)."""
  return runners.work(workdir, trial_id, callbacks=callbacks)


def trial_resources(num_gpus: float | None = None, resources: Mapping[str, float] | None = None):
  """(num_gpus, resources) of one trial; None = automatic from the cluster's resources:
  one GPU per trial on a cluster with GPUs, else one host's TPU chips (all of a TPU VM's chips
  are one trial's JAX devices), else CPU only."""
  if num_gpus is not None or resources is not None:
    return num_gpus or 0, dict(resources or {})
  if ray.cluster_resources().get('GPU', 0) >= 1:
    return 1, {}
  chips = [n['Resources'].get('TPU', 0) for n in ray.nodes() if n.get('Alive')]
  chips = [c for c in chips if c >= 1]
  return (0, {'TPU': min(chips)}) if chips else (0, {})


def run_ray(
  workdir,
  trials: Sequence[Trial],
  *,
  workers: int | None = None,
  num_cpus: float = 1,
  num_gpus: float | None = None,
  resources: Mapping[str, float] | None = None,
  max_retries: int = 3,
  address: str | None = None,
  options: Mapping[str, Any] | None = None,
  callbacks: Sequence[Any] = (),
) -> None:
  """Runs the non-final trials of `trials` as Ray tasks; returns when all have ended.

  Args:
    workdir: the sweep's directory, prepared by `runners.prepare` (visible to every worker).
    trials: the sweep's trials; those the manifest records as done or diverged are skipped.
    workers: at most this many trials in flight at once (None: all are submitted and Ray's
      resource accounting decides how many run at a time).
    num_cpus, num_gpus, resources: what each trial's task reserves (`ray.remote` options);
      num_gpus = resources = None: `trial_resources` picks them from the cluster.
    max_retries: how often Ray reruns a trial whose worker process died.
    address: the Ray cluster when Ray is not initialized yet ('auto', 'ray://host:10001');
      None: $RAY_ADDRESS, else a new local instance. An instance started here is shut down
      at the end; one initialized by the caller is left running.
    options: more `.options(...)` of the task (e.g. runtime_env, scheduling_strategy,
      accelerator_type).
    callbacks: `train.run` callbacks of every trial (must pickle; run in the workers).

  Raises:
    RuntimeError: naming the trials that failed (their errors are also in the manifest) or
      whose task died more than `max_retries` times (they stay 'running', resumable).
  """
  statuses = manifest_lib.Manifest(workdir).statuses()
  queue = [t.id for t in trials if statuses.get(t.id) not in manifest_lib.FINAL]
  if not queue:
    logging.info('ray: all %d trials are final; nothing to run', len(trials))
    return
  started = not ray.is_initialized()
  if started:
    ray.init(address=address)
  try:
    gpus, res = trial_resources(num_gpus, resources)
    # A worker process that held an accelerator exits after its trial (max_calls=1): JAX keeps
    # the devices it started with, and the next task may be given other ones.
    task = ray.remote(
      num_cpus=num_cpus,
      num_gpus=gpus,
      resources=res,
      max_retries=max_retries,
      retry_exceptions=False,
      max_calls=1 if gpus or res else 0,
      **dict(options or {}),
    )(_trial_task)
    logging.info(
      'ray: %d/%d trials to run; each %s CPU %s GPU %s',
      len(queue),
      len(trials),
      num_cpus,
      gpus,
      res,
    )
    in_flight, errors = {}, {}
    while queue or in_flight:
      while queue and (workers is None or len(in_flight) < workers):
        trial_id = queue.pop(0)
        ref = task.options(name=f'initlab-trial:{trial_id}').remote(
          str(workdir), trial_id, callbacks
        )
        in_flight[ref] = trial_id
      (ref,), _ = ray.wait(list(in_flight), num_returns=1)
      trial_id = in_flight.pop(ref)
      try:
        out = ray.get(ref)
      except ray.exceptions.RayError as e:  # the trial raised, or its worker died too often
        errors[trial_id] = f'{type(e).__name__}: {str(e).splitlines()[0]}'
        continue
      if out is None:
        logging.warning('ray: %s was final or held by another live worker; skipped', trial_id)
      else:
        logging.info('ray: %s %s', trial_id, out['status'])
  finally:
    if started:
      ray.shutdown()
  manifest = manifest_lib.Manifest(workdir).read()
  failed = {k: e['error'] for k, e in manifest.items() if e['status'] == 'failed'}
  failed.update({k: v for k, v in errors.items() if k not in failed})
  if failed:
    raise RuntimeError(f'sweep trials failed on Ray: {failed}')
