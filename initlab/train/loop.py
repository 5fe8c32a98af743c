"""`run(config, workdir)`: one training run, from config to checkpoints, metrics and summary.

    workdir/config.json            the run's config, plus 'built_model': the model config
                                   actually built (after the init's architecture stage),
                                   and 'adapters' (a LoRA run's resolved adapter options)
    workdir/checkpoints/<step>/    Orbax: train state, data-iterator state, config, wall time
    workdir/metrics.jsonl, tb/     train metrics every `log_every` steps, eval metrics
    workdir/init_diagnostics.json  signal propagation at init (`diagnostics_at_init`)
    workdir/summary.json           {"final": {"train/loss", "eval/accuracy", ...}, "steps",
                                    "wall_s", "resumed_from", "eval_examples", "init_s"
                                    (the staged init's seconds), "provenance"}

(names and JSON rule: `initlab.rundir`; the report over them is `initlab.report`, which the
entry point and the study runners build). The run resumes from the newest readable
checkpoint in `workdir` (train state with masks, data order, step), else initializes
through the staged pipeline (`initlab.train.pipeline`: architecture stage with resize and
probes, the sharded param stage with `config.init.pretrained` or `config.init_from`
restored onto this mesh, the data stage on batches drawn with their own seed; a resume skips
it all). Before anything is written, `check_workdir` refuses a workdir that is not
writable, holds a study, or holds a run whose config differs in more than
`rundir.RESUMABLE` (train.steps and cosmetics); `force=True` deletes that run's outputs
instead. A finished run is left as it is: rerunning it trains nothing and rewrites neither
config.json nor summary.json. On resume, metrics.jsonl is cut back to the restored step,
and summary.json's wall_s adds up the time of every process that trained the run. A graph
dataset (task 'node_classification') trains full batch (`initlab.train.node_task`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np
import tqdm

from initlab import config as config_lib
from initlab import data as data_lib
from initlab import provenance
from initlab import rundir
from initlab.train import metrics as metrics_lib
from initlab.train import state as state_lib
from initlab.train.build import CHECKPOINT_DIR, Run, bound_in_flight, from_checkpoint, to_checkpoint
from initlab.train.workdir import check_workdir, config_changes, config_dict, logged_finals

__all__ = [
  'Run', 'RunResult', 'NonFiniteError', 'run', 'check_workdir', 'config_changes',
  'config_dict', 'to_checkpoint', 'from_checkpoint', 'write_json', 'CHECKPOINT_DIR',
]  # fmt: skip

SUMMARY_NAME = rundir.SUMMARY  # File names: see `initlab.rundir`.
DIAGNOSTICS_NAME = rundir.DIAGNOSTICS
CONFIG_NAME = rundir.CONFIG


class NonFiniteError(FloatingPointError):
  """The loss or the gradients became NaN or Inf; carries the step and the last checkpoint."""

  def __init__(self, step: int, last_checkpoint: int | None, directory: str):
    self.step, self.last_checkpoint = step, last_checkpoint
    kept = (
      f'the last good checkpoint (step {last_checkpoint}) in {directory} is kept'
      if last_checkpoint is not None
      else f'no checkpoint was written to {directory}'
    )
    super().__init__(
      f'Training stopped: the loss or the gradients became NaN/Inf at step {step}; {kept} '
      '(the bad state was not saved). Lower optimizer.learning_rate, set '
      'optimizer.grad_clip_norm, or try another init scheme.'
    )


write_json = rundir.write_json


Callback = Callable[[int, state_lib.TrainState, dict[str, float]], None]


@dataclasses.dataclass(frozen=True)
class RunResult:
  """What `run` returns.

  Attributes:
    state: the final `TrainState` (on the run's mesh).
    summary: as written to summary.json: {"final": {...}, "steps", "wall_s", "resumed_from"}.
    run: the `Run`: its `mesh`, `setup` and `evaluate(state)` serve post-training analyses,
      e.g. `result.run.evaluate(result.state.replace(params=quantized))`.
  """

  state: state_lib.TrainState
  summary: dict[str, Any]
  run: Run


def run(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  *,
  devices: Sequence[jax.Device] | None = None,
  start_from: state_lib.TrainState | None = None,
  callbacks: Sequence[Callback] = (),
  force: bool = False,
) -> RunResult:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint).

  Args:
    config: a full config (see `initlab.config.default_config`); validated first. Its paths
      (`config_lib.PATH_KEYS`) are made absolute against the current directory.
    workdir: the run's directory (created; a relative path is resolved now).
    devices: the devices of the mesh; default all.
    start_from: a state whose params and model state (e.g. BatchNorm statistics) the run
      starts from (ignored when resuming): the in-memory form of `config.init_from`, a
      final `from_pretrained` copy after the init scheme, then the data stage (DESIGN.md).
    callbacks: `fn(step, state, metrics)`, called with the initial state (step 0, metrics {};
      not when resuming) and after every eval or checkpoint step (the eval metrics
      {"loss", "accuracy"}, or {}). The state is donated to the next step: copy what you keep.
    force: when `workdir` holds a run with another config (or something else initlab
      wrote), delete those outputs and start over instead of raising `RunDirError`.

  Returns:
    A `RunResult` (final state, summary, the `Run`).

  Raises:
    ConfigError: a bad config, model or init scheme (nothing in `workdir` is touched).
    RunDirError: a workdir this run cannot use (nothing in it is touched).
    TreeMismatchError: `config.init_from` holds another model's params (nothing touched).
    NonFiniteError: the loss or gradients became NaN/Inf (last good checkpoint kept).
  """
  start_time = time.time()
  config = config_lib.resolve_paths(config)
  r = Run(config, rundir.absolute(workdir), devices=devices, start_from=start_from)
  r._wall_start = start_time  # pylint: disable=protected-access
  finished = check_workdir(r.workdir, config, force=force)
  t = config.train
  try:
    with jax.set_mesh(r.mesh):
      state, data_state, resumed = r.initial_state()
      start = int(jax.device_get(state.step))
      if finished is not None and start == t.steps:
        logging.info('%s: already trained %d steps; nothing to do', r.workdir, start)
        summary = finished
      else:
        write_json(r.workdir / CONFIG_NAME, r.recorded_config())
        if config.diagnostics_at_init and not resumed:
          write_json(r.workdir / DIAGNOSTICS_NAME, r.diagnostics(state))
        writer = metrics_lib.MetricWriter(r.workdir, purge_step=start + 1)
        logged = logged_finals(r.workdir, start) if resumed else {}
        for fn in callbacks if not resumed else ():
          fn(start, state, {})
        try:
          state, final = _train(r, state, r.train_iterator(data_state), start, writer, callbacks)
        finally:
          writer.close()
        summary = dict(
          final={**logged, **final},
          steps=t.steps,
          wall_s=r.wall_s(),
          resumed_from=start if resumed else None,
          eval_examples=r.eval_examples,
          init_s=r.init_s,
          provenance=provenance.environment(),
        )
        write_json(r.workdir / SUMMARY_NAME, summary)
  finally:
    r.checkpointer.close()
  return RunResult(state, summary, r)


def _train(
  r: Run, state, it, start: int, writer, callbacks: Sequence[Callback] = ()
) -> tuple[state_lib.TrainState, dict]:
  """The training loop from step `start`; returns the final state and final metrics."""
  t = r.config.train
  total = t.steps
  every = lambda n, s: (n and s % n == 0) or s == total
  last_ckpt = r.checkpointer.latest_step()
  pending = None  # (step, device metrics): fetched one step late, so the device stays busy.
  final = {}

  def flush():
    nonlocal pending
    if pending is None:
      return None
    s, metrics = pending
    pending = None
    metrics = jax.device_get(metrics)
    bad = int(metrics.pop('nonfinite_step'))
    writer.write(s, metrics)
    final.update({f'train/{k}': _host_value(v) for k, v in metrics.items()})
    bar.set_postfix(loss=f'{float(np.mean(metrics["loss"])):.4f}', refresh=False)
    if bad >= 0:
      writer.flush()
      raise NonFiniteError(bad, last_ckpt, str(r.checkpointer.directory))
    return metrics

  bar = tqdm.tqdm(
    total=total,
    initial=start,
    desc=r.workdir.name,
    unit='step',
    disable=not t.progress_bar or jax.process_index() != 0,
    dynamic_ncols=True,
  )
  try:
    for s in range(start + 1, total + 1):
      batch = next(it) if r.node_task else data_lib.to_global(next(it), r.batch_sharding)
      checkpoint, evaluate = every(t.checkpoint_every, s), every(t.eval_every, s)
      log = every(t.log_every, s) or checkpoint or evaluate
      state, metrics = (r.train_step if log else r.lean_step)(state, batch)
      bound_in_flight(state.step)
      bar.update(1)
      flush()
      if log:
        pending = (s, metrics)
      if checkpoint or evaluate:
        flush()  # Also checks for NaN/Inf before anything is saved.
      if evaluate:
        metrics = r.evaluate(state)
        writer.write(s, metrics, split='eval')
        final.update({f'eval/{k}': v for k, v in metrics.items()})
      if checkpoint:
        writer.flush()  # A kill after this save loses no logged step (TensorBoard included).
        r.checkpointer.save(
          s,
          to_checkpoint(state),
          data_state=it.get_state(),
          config=r.recorded_config(),
          meta=dict(wall_s=r.wall_s()),
        )
        last_ckpt = s
      for fn in callbacks if checkpoint or evaluate else ():
        fn(s, state, metrics if evaluate else {})
    flush()
  finally:
    bar.close()
  if start >= total:  # Already complete: report the final evaluation again.
    final.update({f'eval/{k}': v for k, v in r.evaluate(state).items()})
  return state, final


def _host_value(value):
  """A float, or for the stacked trials of `initlab.sweep.vmap` an array (one per trial)."""
  return float(value) if np.ndim(value) == 0 else np.asarray(value)
