"""`run(config, workdir)`: one training run, from config to checkpoints, metrics and summary.

    workdir/config.json            the run's config, plus 'built_model': the model config
                                   actually built (after the init's architecture stage)
    workdir/checkpoints/<step>/    Orbax: train state, data-iterator state, config, wall time
    workdir/metrics.jsonl, tb/     train metrics every `log_every` steps, eval metrics
    workdir/init_diagnostics.json  signal propagation at init (`diagnostics_at_init`)
    workdir/summary.json           {"final": {"train/loss", "eval/accuracy", ...}, "steps",
                                    "wall_s", "resumed_from", "eval_examples", "provenance"}
    workdir/report.md, ...         `initlab.report.build_report(workdir)`

(names and JSON rule: `initlab.rundir`). The run resumes from the newest readable checkpoint
in `workdir` (train state, data order, step), else starts from `config.init_from` (params
only), else from the staged init (`initlab.init.stages`: architecture stage, the sharded
param stage with `config.init.pretrained` restored onto this mesh, the data stage on batches
drawn with their own seed; a resume skips it all). Before anything is written,
`check_workdir` refuses a workdir that is not writable, holds a study, or holds a run whose
config differs in more than `rundir.RESUMABLE` (train.steps and cosmetics); `force=True`
deletes that run's outputs instead. A finished run is left as it is: rerunning it trains
nothing and rewrites neither config.json nor summary.json. On resume, metrics.jsonl is cut
back to the restored step, and summary.json's wall_s adds up the time of every process that
trained the run. A graph dataset (task 'node_classification') trains full batch: the whole
graph, replicated on the mesh, is every step's batch (`initlab.train.node_task`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import pathlib
import time
from typing import Any, Callable, Sequence

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tqdm

from initlab import config as config_lib
from initlab import data as data_lib
from initlab import models
from initlab import rundir
from initlab import sharding as sharding_lib
import initlab.init as ii
from initlab.init.families import parametrization as parametrization_lib
from initlab.train import checkpoint as ckpt_lib
from initlab.train import metrics as metrics_lib
from initlab.train import node_task
from initlab.train import optim
from initlab.train import runtime
from initlab.train import state as state_lib
from initlab.train import step as step_lib

CHECKPOINT_DIR = rundir.CHECKPOINTS  # File names: see `initlab.rundir`.
SUMMARY_NAME = rundir.SUMMARY
DIAGNOSTICS_NAME = rundir.DIAGNOSTICS
CONFIG_NAME = rundir.CONFIG
EVAL_CACHE_BYTES = 64 << 20  # Global eval sets up to this size stay on the devices.


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


def config_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as JSON types (tuples become lists)."""
  return json.loads(config.to_json())


class Run:
  """Everything one run builds from its config, before the loop (importable for notebooks).

  Attributes: config, mesh, meta (dataset `Metadata`), setup (`state.Setup`), tx,
  batch_sharding, train_step (with metrics), lean_step (without), eval_step, checkpointer.
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    devices: Sequence[jax.Device] | None = None,
  ):
    devices = jax.devices() if devices is None else list(devices)
    config_lib.validate(config, num_devices=len(devices))
    runtime.enable_compilation_cache()
    self.config = config
    self.workdir = pathlib.Path(workdir)
    self.mesh = sharding_lib.make_mesh(config.mesh, devices)
    try:
      self.meta = data_lib.metadata(config.data)
    except ValueError as e:  # An unknown dataset name or split; names the key.
      raise config_lib.ConfigError(str(e)) from e
    model_cfg = config_lib.full_model_config(config)
    _check_model_fits_data(model_cfg, self.meta)
    self.node_task = self.meta.task == node_task.TASK  # The whole graph is one batch.
    if self.node_task:
      node_task.check_splits(config.data)
    self.schedule = optim.schedule(config.optimizer, config.train.steps)
    self.tx = optim.make(config.optimizer, config.train.steps)
    name = config.init.name
    scheme = ii.get_scheme(name, **config_lib.scheme_options(config, name))
    try:
      self._build_model(model_cfg, scheme)
    except config_lib.ConfigError:
      raise
    except (ValueError, TypeError, KeyError) as e:
      raise config_lib.ConfigError(
        f'config.model / config.init: cannot build model {config.model.name!r} with init '
        f'{name!r}: {e}'
      ) from e
    self.batch_sharding = (
      sharding_lib.replicated(self.mesh)
      if self.node_task
      else sharding_lib.batch_sharding(self.mesh)
    )
    self.graph = (
      node_task.GraphBatches(config.data, self.batch_sharding) if self.node_task else None
    )
    self.train_step = step_lib.make_train_step(
      self.setup,
      task=self.meta.task,
      batch_sharding=self.batch_sharding,
      learning_rate=self.schedule,
    )
    self.lean_step = step_lib.make_train_step(  # Between log steps; compiled when first used.
      self.setup, task=self.meta.task, batch_sharding=self.batch_sharding, metrics=False
    )
    self.eval_step = step_lib.make_eval_step(
      self.setup, task=self.meta.task, batch_sharding=self.batch_sharding
    )
    self.checkpointer = ckpt_lib.Checkpointer(
      self.workdir / CHECKPOINT_DIR, keep=config.train.keep_checkpoints
    )
    self._eval_batches = None
    self.eval_examples = None  # Examples (tokens for an LM) of the last evaluation.
    self._wall_start, self._wall_before = time.time(), 0.0

  def _build_model(self, model_cfg, scheme) -> None:
    """Architecture and param stage (`initlab.init.stages`): sets plan, model_config, setup.

    Traced abstractly: outside `jax.set_mesh`, logical names stay metadata. This builds the
    model and runs the param-stage scheme, so bad model options (ResNet depth 15), missing
    model hints or dataset facts and a pretrained tree that does not fit fail here, cheaply.
    """
    self.plan = ii.stages.plan(scheme)
    self.init_ctx = ii.InitContext(dataset=ii.stages.dataset_facts(self.meta))
    rules = sharding_lib.axis_rules(self.config.sharding)
    build = lambda cfg: lambda rngs: models.build(cfg, rngs=rngs)
    model_cfg = ii.stages.resize(self.plan, model_cfg, self.init_ctx)
    self._pretrained = self._pretrained_source(model_cfg, rules)
    abstract = None if self._pretrained is None else self._pretrained[1]
    source = None
    while True:
      # Width parametrization (config.parametrization) of the model built: init factors after
      # the param stage, per-param learning-rate factors in the optimizer; 'standard' neither.
      self.parametrization = parametrization_lib.from_config(self.config, model_cfg)
      self.tx = optim.make(self.config.optimizer, self.config.train.steps, self.parametrization)
      try:
        self.setup = state_lib.Setup.create(
          build(model_cfg),
          self.tx,
          mesh=self.mesh,
          axis_rules=rules,
          scheme=self.parametrization.wrap(self.plan.param),
          ctx=dataclasses.replace(
            self.init_ctx, model_config=model_cfg if source is None else source
          ),
          source_fn=None if source is None else build(source),
          pretrained=abstract,
        )
        break
      except ii.ArchitectureChange as e:  # The scheme returned SchemeResult: build that model.
        source, model_cfg = model_cfg, e.model_config
    if source is not None or self.plan.resizes:
      _check_model_fits_data(model_cfg, self.meta)
    self.model_config = model_cfg

  def _pretrained_source(self, model_cfg, rules):
    """(checkpoint path, abstract params on this mesh) of `config.init.pretrained`, or None.

    The params' tree is that of the model the pretrained run built (its config.json or the
    checkpoint's config; else this run's model), sharded by this run's rules on this mesh.
    """
    path = self.config.init.get('pretrained')
    if not path:
      return None
    try:
      where, saved = ckpt_lib.pretrained_source(path)
    except FileNotFoundError as e:
      raise config_lib.ConfigError(f'config.init.pretrained: {e}') from None
    if saved is not None:
      model_cfg = saved.get('built_model') or config_lib.full_model_config(
        ml_collections.ConfigDict({k: saved[k] for k in ('model', 'dtype')})
      )
    _, abstract_state = ii.abstract_model(lambda rngs: models.build(model_cfg, rngs=rngs))
    shardings = sharding_lib.state_shardings(
      abstract_state, sharding_lib.as_auto_mesh(self.mesh), rules
    )
    params, _ = state_lib.pure_variables(abstract_state)
    param_sh, _ = state_lib.pure_variables(shardings)
    return where, jax.tree.map(
      lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), params, param_sh
    )

  def recorded_config(self) -> dict[str, Any]:
    """The config as config.json and checkpoints record it: `config_dict(config)` plus
    'built_model', the model config actually built (after the architecture stage)."""
    built = self.model_config
    built = built.to_dict() if hasattr(built, 'to_dict') else dict(built)
    return {**config_dict(self.config), 'built_model': json.loads(json.dumps(built))}

  def wall_s(self) -> float:
    """Seconds spent on this run: by earlier processes (up to the restored checkpoint) + now."""
    return self._wall_before + time.time() - self._wall_start

  def initial_state(
    self, start_from: state_lib.TrainState | None = None
  ) -> tuple[state_lib.TrainState, Any, bool]:
    """(state, data-iterator state or None, resumed?): checkpoint, else `start_from`'s params
    and model state (copied; fresh optimizer state, step 0), else init_from, else the init:
    pretrained params restored, the param stage (`setup.init`), the data stage."""
    restored = None
    if self.checkpointer.all_steps():
      restored = self.checkpointer.restore(to_checkpoint(self.setup.abstract))
    if restored is not None:
      logging.info('Resuming %s from step %d', self.workdir, restored.step)
      _check_resumable(restored, self.config, self.checkpointer.directory)
      self._wall_before = float((restored.meta or {}).get('wall_s') or 0.0)
      return from_checkpoint(restored.state), restored.data_state, True
    keys = jax.random.key(self.config.seeds.init), jax.random.key(self.config.seeds.dropout)
    if start_from is not None:
      sh = self.setup.shardings
      state = self.setup.from_params(jax.device_put(start_from.params, sh.params), *keys)
      copy = jax.tree.map(jax.numpy.copy, start_from.model_state)  # The run donates its state.
      return state.replace(model_state=jax.device_put(copy, sh.model_state)), None, False
    if self.config.init_from:
      logging.info('Initializing params from %s', self.config.init_from)
      params = ckpt_lib.restore_params(self.config.init_from, self.setup.abstract.params)
      return self.setup.from_params(params, *keys), None, False
    pretrained = None
    if self._pretrained is not None:
      logging.info('Restoring pretrained params from %s', self._pretrained[0])
      try:
        pretrained = ckpt_lib.restore_params(*self._pretrained)
      except ckpt_lib.TreeMismatchError as e:
        raise config_lib.ConfigError(f'config.init.pretrained: {e}') from None
    state = self.setup.init(*keys, pretrained)
    if self.plan.data:
      state = self._data_stage(state, keys, pretrained)
    return state, None, False

  def _data_stage(self, state, keys, pretrained) -> state_lib.TrainState:
    """The data stage: `plan.num_batches` training batches drawn with their own seed
    (`stages.data_seed`; training's data order is unchanged), then every data-stage scheme;
    the state is rebuilt from the params (fresh optimizer state)."""
    if self.node_task:
      batches = (self.graph.batch(self.config.data.train_split),) * self.plan.num_batches
    else:
      it = self.train_iterator(seed=ii.stages.data_seed(self.config.seeds.data))
      batches = tuple(
        data_lib.to_global(next(it), self.batch_sharding) for _ in range(self.plan.num_batches)
      )
    model = self.setup.model(state)
    ctx = dataclasses.replace(
      self.init_ctx,
      model_config=self.model_config,
      pretrained=pretrained,
      hints=model.init_hints() if hasattr(model, 'init_hints') else {},
      data=ii.DataContext(self.setup.graphdef, state.model_state, batches, self.meta.task),
    )
    params = ii.stages.run_data_stage(
      self.plan, jax.random.fold_in(keys[0], 1), state.params, ctx, self.setup.shardings.params
    )
    return self.setup.from_params(params, *keys)

  def restore(self, step: int | None = None) -> state_lib.TrainState | None:
    """The checkpointed state at `step` (default: the newest readable), or None."""
    with jax.set_mesh(self.mesh):
      restored = self.checkpointer.restore(to_checkpoint(self.setup.abstract), step=step)
    return None if restored is None else from_checkpoint(restored.state)

  def train_iterator(self, data_state=None, *, seed: int | None = None):
    """The train split's iterator (seed: `seeds.data`, or `seed`), at `data_state` if given."""
    if self.node_task:  # Yields the graph, already on the mesh.
      it = node_task.FullBatch(self.graph.batch(self.config.data.train_split))
      if data_state is not None:
        it.set_state(data_state)
      return it
    it = data_lib.build(
      self.config.data,
      split=self.config.data.train_split,
      batch_size=self.config.train.batch_size,
      seed=self.config.seeds.data if seed is None else seed,
    )
    if data_state is not None:
      it.set_state(data_state)
    return it

  def evaluate(self, state: state_lib.TrainState) -> dict[str, float]:
    """Loss and accuracy over `data.eval_split` (at most `train.eval_steps` batches).

    The eval batches are kept on the devices after the first pass when they take at most
    EVAL_CACHE_BYTES, so later evaluations skip the input pipeline. A graph: its eval_split
    nodes, plus eval/val_* and eval/test_* (`node_task.evaluate`).
    """
    if self.node_task:
      metrics, self.eval_examples = node_task.evaluate(self, state)
      return metrics
    batches = self._eval_batches if self._eval_batches is not None else self._read_eval()
    total = None
    for batch in batches:
      out = self.eval_step(state, batch)
      total = out if total is None else jax.tree.map(lambda a, b: a + b, total, out)
      _bound_in_flight(total)
    total = jax.device_get(total)
    self.eval_examples = int(total['count'])
    return step_lib.summarize_eval(total)

  def _read_eval(self):
    """Yields the global eval batches, caching them if they are small."""
    t = self.config.train
    it = data_lib.build(
      self.config.data,
      split=self.config.data.eval_split,
      batch_size=t.eval_batch_size or t.batch_size,
      seed=0,
      shuffle=False,
      num_epochs=1,
      drop_remainder=False,
    )
    cache, size = [], 0
    for i, batch in enumerate(it):
      if t.eval_steps and i >= t.eval_steps:
        break
      batch = data_lib.to_global(batch, self.batch_sharding)
      size += sum(x.nbytes for x in jax.tree.leaves(batch))
      cache = cache if cache is not None and size <= EVAL_CACHE_BYTES else None
      if cache is not None:
        cache.append(batch)
      yield batch
    self._eval_batches = cache

  def diagnostics(self, state: state_lib.TrainState) -> dict[str, Any]:
    """`initlab.diagnostics.measure` of the model at `state` on one train batch."""
    if self.node_task:  # Per-layer variances of a GNN (initlab.diagnostics.gnn).
      return node_task.diagnostics(self, state)
    from initlab import diagnostics  # pylint: disable=g-import-not-at-top

    batch = next(iter(self.train_iterator()))
    x = batch[step_lib.INPUT_KEY[self.meta.task]]
    if jax.process_count() > 1:  # The same (global) batch on every process.
      x = multihost_utils.process_allgather(x, tiled=True)
    key = jax.random.fold_in(jax.random.key(self.config.seeds.init), 2)
    model = self.setup.model(state)
    return diagnostics.measure(model, x, key=key).to_dict()


def to_checkpoint(state: state_lib.TrainState) -> dict[str, Any]:
  """The state as the plain dict that checkpoints hold ('params' is a top-level key)."""
  return {f: getattr(state, f) for f in state.__dataclass_fields__}


def from_checkpoint(tree: dict[str, Any]) -> state_lib.TrainState:
  return state_lib.TrainState(**tree)


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
  report: bool = True,
) -> RunResult:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint), then writes a report.

  Args:
    config: a full config (see `initlab.config.default_config`); validated first. Its paths
      (`config_lib.PATH_KEYS`) are made absolute against the current directory.
    workdir: the run's directory (created; a relative path is resolved now).
    devices: the devices of the mesh; default all.
    start_from: a state whose params and model state (e.g. BatchNorm statistics) the run
      starts from, with a fresh optimizer state at step 0, instead of `config.init_from` or
      the init scheme (ignored when resuming); the in-memory form of `config.init_from`.
    callbacks: `fn(step, state, metrics)`, called with the initial state (step 0, metrics {};
      not when resuming) and after every eval or checkpoint step (the eval metrics
      {"loss", "accuracy"}, or {}). The state is donated to the next step: copy what you keep.
    force: when `workdir` holds a run with another config (or something else initlab
      wrote), delete those outputs and start over instead of raising `RunDirError`.
    report: end with `initlab.report.build_report(workdir)` (report.md, results.json, plots).

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
  r = Run(config, rundir.absolute(workdir), devices=devices)
  r._wall_start = start_time  # pylint: disable=protected-access
  finished = check_workdir(r.workdir, config, force=force)
  t = config.train
  try:
    with jax.set_mesh(r.mesh):
      state, data_state, resumed = r.initial_state(start_from)
      start = int(jax.device_get(state.step))
      if finished is not None and start == t.steps:
        logging.info('%s: already trained %d steps; nothing to do', r.workdir, start)
        summary = finished
      else:
        write_json(r.workdir / CONFIG_NAME, r.recorded_config())
        if config.diagnostics_at_init and not resumed:
          write_json(r.workdir / DIAGNOSTICS_NAME, r.diagnostics(state))
        writer = metrics_lib.MetricWriter(r.workdir, purge_step=start + 1)
        logged = _logged_finals(r.workdir, start) if resumed else {}
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
          provenance=_provenance(),
        )
        write_json(r.workdir / SUMMARY_NAME, summary)
  finally:
    r.checkpointer.close()
  if report and jax.process_index() == 0:
    from initlab.report import build_report  # pylint: disable=g-import-not-at-top

    build_report(r.workdir)
  return RunResult(state, summary, r)


def check_workdir(
  workdir: pathlib.Path,
  config: ml_collections.ConfigDict,
  *,
  force: bool = False,
  study: bool = False,
) -> dict[str, Any] | None:
  """Checks `workdir` for a run (or a study) of `config` before anything is written there.

  Returns the summary of a finished single run with this config and length (None otherwise).
  Raises `rundir.RunDirError` if `workdir` is not a writable directory, is not empty but holds
  nothing initlab wrote, holds the other layout (a study's runs/ vs a run's checkpoints/), or
  holds a config that differs in more than `rundir.RESUMABLE` (for a study also in its shape:
  init.compare, init.name, seeds.num), or a run longer than `train.steps`. With `force`,
  those initlab outputs are deleted instead (nothing else is).
  """
  rundir.check_writable(workdir)
  ours, others = rundir.initlab_entries(workdir)
  if not ours:
    if others:
      raise rundir.RunDirError(
        f'workdir {workdir}: not empty ({", ".join(others[:4])}'
        f'{", ..." if len(others) > 4 else ""}) and holds no initlab run; choose a new or '
        'empty directory.'
      )
    return None
  kind = 'study' if study else 'run'
  saved = None
  if (rundir.CHECKPOINTS in ours or rundir.METRICS in ours) if study else rundir.RUNS in ours:
    problem = f'holds a {"single run" if study else "study"}, not a {kind}'
  else:
    problem = None
    try:
      saved = rundir.read_json(workdir / rundir.CONFIG)
    except FileNotFoundError:
      pass  # Only the checkpoint's config can tell (checked when it is restored).
    except (OSError, ValueError) as e:
      problem = f'has an unreadable {rundir.CONFIG} ({e})'
    shape = ('init.compare', 'init.name', 'seeds.num') if study else ()
    changes = (
      {} if saved is None else config_changes(saved, config_dict(config), rundir.RESUMABLE + shape)
    )
    if changes:
      problem = (
        f'holds a {kind} with another config ({rundir.describe_changes(changes)}); '
        f'a resume may only change {", ".join(rundir.RESUMABLE)}'
      )
  if problem is not None:
    if not force:
      raise rundir.RunDirError(
        f'workdir {workdir}: {problem}. Use a new --workdir, or --force to delete its '
        f'{kind} and start over.'
      )
    logging.warning('--force: deleting %s in %s (%s)', ', '.join(ours), workdir, problem)
    rundir.remove_outputs(workdir, ours)
    _sync('initlab_force_delete')
    return None
  if study:
    return None
  try:
    summary = rundir.read_json(workdir / rundir.SUMMARY)
  except (OSError, ValueError):
    return None
  done = summary.get('steps') if isinstance(summary, dict) and not summary.get('error') else None
  if isinstance(done, int) and done > config.train.steps:
    raise rundir.RunDirError(
      f'workdir {workdir}: holds a run of {done} steps, longer than '
      f'config.train.steps={config.train.steps}. Use a new --workdir, or --force.'
    )
  return summary if done == config.train.steps and saved is not None else None


def _check_resumable(restored: ckpt_lib.Restored, config, directory) -> None:
  """The checkpoint's config and step fit `config` (the workdir check missed no config.json)."""
  changes = {} if restored.config is None else config_changes(restored.config, config_dict(config))
  if changes:
    raise rundir.RunDirError(
      f'checkpoint {directory}/{restored.step}: saved with another config '
      f'({rundir.describe_changes(changes)}). Use a new --workdir, or --force.'
    )
  if restored.step > config.train.steps:
    raise rundir.RunDirError(
      f'checkpoint {directory}/{restored.step}: past config.train.steps='
      f'{config.train.steps}. Use a new --workdir, or --force.'
    )


def config_changes(saved, current, ignore=rundir.RESUMABLE) -> dict[str, tuple[Any, Any]]:
  """`rundir.changed_keys` minus what a run derives from its config ('built_model') and an
  unset `init.pretrained` and default `parametrization.*` that configs older than the keys
  lack."""
  changes = rundir.changed_keys(saved, current, tuple(ignore) + ('built_model',))
  if not any(changes.get('init.pretrained', ('x',))):
    changes.pop('init.pretrained', None)
  defaults = rundir.flatten(
    rundir.encode({'parametrization': config_lib.default_config().parametrization.to_dict()})
  )
  for key, (old, new) in list(changes.items()):
    if old is None and key in defaults and new == defaults[key]:
      del changes[key]
  return changes


def _logged_finals(workdir: pathlib.Path, step: int) -> dict[str, float]:
  """{"split/name": value} of the last metrics.jsonl records up to `step` (process 0 reads)."""
  try:
    records = rundir.read_jsonl(workdir / rundir.METRICS)
  except (OSError, ValueError):
    return {}
  out = {}
  for record in records:
    if record['step'] <= step:
      out.update(
        {f'{record["split"]}/{k}': v for k, v in record.items() if k not in rundir.RESERVED}
      )
  return out


def _provenance() -> dict[str, Any] | None:
  from initlab.report import provenance  # pylint: disable=g-import-not-at-top

  return provenance.environment()


def _bound_in_flight(value) -> None:
  """Waits for `value` on multi-process CPU runs, so one program is in flight at a time.

  XLA's CPU client runs every local device's share of a program on one worker pool; a
  cross-process (gloo) all-reduce holds its worker until all participants arrive. With many
  programs dispatched ahead, the pool can fill with participants whose partners are queued
  behind them, and both processes hang (seen in the two-process test). On accelerators, or
  with one process, dispatch stays asynchronous.
  """
  if _multiprocess_cpu():
    jax.block_until_ready(value)


@functools.cache
def _multiprocess_cpu() -> bool:
  """Fixed once JAX is initialized; cached, as `_bound_in_flight` runs every step."""
  return jax.process_count() > 1 and jax.default_backend() == 'cpu'


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


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
      _bound_in_flight(state.step)
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


def _check_model_fits_data(model_cfg, meta: data_lib.Metadata) -> None:
  """The model's task and data-fixed options (its registry entry's `data_options`) agree
  with the dataset's."""
  try:
    models.check_fits(model_cfg, meta)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
