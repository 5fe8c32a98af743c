"""`Run`: everything one run builds from its config before the loop (importable for notebooks).

    r = Run(config, workdir)            # mesh, data, loss, teacher, sources, staged model
    state, data_state, resumed = r.initial_state()
    metrics = r.evaluate(state)

The init pipeline it runs (architecture, param, data stage) is `initlab.train.pipeline`;
the pretrained sources and the teacher come from `initlab.train.sources`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pathlib
import time
from typing import Any, Sequence

import jax
from jax.experimental import multihost_utils
import ml_collections

from initlab import config as config_lib
from initlab import data as data_lib
from initlab import models
from initlab import rundir
from initlab import sharding as sharding_lib
import initlab.init as ii
from initlab.train import checkpoint as ckpt_lib
from initlab.train import node_task
from initlab.train import optim
from initlab.train import pipeline
from initlab.train import runtime
from initlab.train import sources as sources_lib
from initlab.train import state as state_lib
from initlab.train import step as step_lib
from initlab.train import workdir as workdir_lib

CHECKPOINT_DIR = rundir.CHECKPOINTS  # File names: see `initlab.rundir`.
EVAL_CACHE_BYTES = 64 << 20  # Global eval sets up to this size stay on the devices.


class Run:
  """Everything one run builds from its config, before the loop.

  Attributes: config, workdir, mesh, meta (dataset `Metadata`), loss (`initlab.losses.Loss`),
  teacher (`step.Teacher` or None), sources (`sources.Sources` of `init.pretrained` /
  `init_from` / `start_from`, or None), plan (`ii.stages.Plan`), model_config (the model
  built), probed (the architecture stage ran a probe now), setup (`state.Setup`), tx,
  parametrization, batch_sharding, train_step (with metrics), lean_step (without),
  eval_step, checkpointer.
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    devices: Sequence[jax.Device] | None = None,
    start_from: state_lib.TrainState | None = None,
  ):
    """`start_from`: a state whose params and model state the run starts from (see
    `train.run`): the in-memory form of `config.init_from`."""
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
    self.check_fits(model_cfg)
    self.node_task = self.meta.task == node_task.TASK  # The whole graph is one batch.
    if self.node_task:
      node_task.check_splits(config.data)
    self.batch_sharding = (
      sharding_lib.replicated(self.mesh)
      if self.node_task
      else sharding_lib.batch_sharding(self.mesh)
    )
    self.graph = (
      node_task.GraphBatches(config.data, self.batch_sharding) if self.node_task else None
    )
    self.schedule = optim.schedule(config.optimizer, config.train.steps)
    self.loss = config_lib.loss_of(config)
    rules = sharding_lib.axis_rules(config.sharding)
    self.teacher = None
    if self.loss.needs_teacher:
      self.teacher = sources_lib.load_teacher(
        config.train.distill.teacher, mesh=self.mesh, rules=rules, meta=self.meta,
        model_config=model_cfg,
      )  # fmt: skip
    self._start_from = start_from
    self.copy_pretrained = bool(config.init_from) or start_from is not None
    name = config.init.name
    scheme = ii.get_scheme(name, **config_lib.scheme_options(config, name))
    try:
      pipeline.build_model(self, model_cfg, scheme)
    except config_lib.ConfigError as e:
      if self.copy_pretrained and str(e).startswith('config.init.pretrained'):
        key = 'config.init_from' if config.init_from else 'train.run(start_from=)'
        raise config_lib.ConfigError(key + str(e)[len('config.init.pretrained') :]) from None
      raise
    except (ValueError, TypeError, KeyError) as e:
      raise config_lib.ConfigError(
        f'config.model / config.init: cannot build model {config.model.name!r} with init '
        f'{name!r}: {e}'
      ) from e
    make_step = functools.partial(
      step_lib.make_train_step,
      self.setup,
      task=self.meta.task,
      batch_sharding=self.batch_sharding,
      loss=self.loss,
      teacher=self.teacher,
    )
    self.train_step = make_step(learning_rate=self.schedule)
    self.lean_step = make_step(metrics=False)  # Between log steps; compiled when first used.
    self.eval_step = step_lib.make_eval_step(
      self.setup, task=self.meta.task, batch_sharding=self.batch_sharding
    )
    self.checkpointer = ckpt_lib.Checkpointer(
      self.workdir / CHECKPOINT_DIR, keep=config.train.keep_checkpoints
    )
    self._eval_batches = None
    self.init_s = None  # Seconds of the staged init (compilation included); None if resumed.
    self.eval_examples = None  # Examples (tokens for an LM) of the last evaluation.
    self._wall_start, self._wall_before = time.time(), 0.0

  def check_fits(self, model_cfg) -> None:
    check_model_fits_data(model_cfg, self.meta)

  def open_sources(self, model_cfg, rules) -> sources_lib.Sources | None:
    """The pretrained sources: `config.init.pretrained`, or `init_from` / `start_from` (one
    source; refused together with `init.pretrained`)."""
    pretrained, init_from = self.config.init.get('pretrained'), self.config.init_from
    if (init_from or self._start_from is not None) and pretrained:
      raise config_lib.ConfigError(
        'config.init_from (or train.run(start_from=)) and config.init.pretrained are both '
        'set; init_from is init.pretrained plus a final from_pretrained copy: set one of them'
      )
    if self._start_from is not None:
      variables = (self._start_from.params, self._start_from.model_state)
      return sources_lib.Sources.from_config(
        '', mesh=self.mesh, rules=rules, model_config=model_cfg, extra=variables
      )
    return sources_lib.Sources.from_config(
      init_from or pretrained, mesh=self.mesh, rules=rules, model_config=model_cfg
    )

  def recorded_config(self) -> dict[str, Any]:
    """The config as config.json and checkpoints record it: `config_dict(config)` plus
    'built_model', the model config actually built (after the architecture stage)."""
    built = self.model_config
    built = built.to_dict() if hasattr(built, 'to_dict') else dict(built)
    out = {**workdir_lib.config_dict(self.config), 'built_model': json.loads(json.dumps(built))}
    if self.setup.adapters is not None:  # A source of later runs opens as the merged model.
      out['adapters'] = self.lora_options
    return out

  def wall_s(self) -> float:
    """Seconds spent on this run: by earlier processes (up to the restored checkpoint) + now."""
    return self._wall_before + time.time() - self._wall_start

  def initial_state(self) -> tuple[state_lib.TrainState, Any, bool]:
    """(state, data-iterator state or None, resumed?): the newest checkpoint, else the staged
    init (`pipeline.initial_state`: pretrained sources, param stage, data stage)."""
    restored = None
    if self.checkpointer.all_steps():
      restored = self.checkpointer.restore(to_checkpoint(self.setup.abstract))
    if restored is not None:
      logging.info('Resuming %s from step %d', self.workdir, restored.step)
      workdir_lib.check_resumable(restored, self.config, self.checkpointer.directory)
      self._wall_before = float((restored.meta or {}).get('wall_s') or 0.0)
      return from_checkpoint(restored.state), restored.data_state, True
    start = time.time()
    state = jax.block_until_ready(pipeline.initial_state(self))
    self.init_s = time.time() - start
    return state, None, False

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
      bound_in_flight(total)
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


def check_model_fits_data(model_cfg, meta: data_lib.Metadata) -> None:
  """The model's task and data-fixed options (its registry entry's `data_options`) agree
  with the dataset's; else a one-line ConfigError."""
  try:
    models.check_fits(model_cfg, meta)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None


def to_checkpoint(state: state_lib.TrainState) -> dict[str, Any]:
  """The state as the plain dict that checkpoints hold ('params' is a top-level key; 'masks'
  only when the run has masks, so checkpoints of runs without them keep their tree)."""
  out = {f: getattr(state, f) for f in state.__dataclass_fields__}
  if not out['masks']:
    del out['masks']
  return out


def from_checkpoint(tree: dict[str, Any]) -> state_lib.TrainState:
  return state_lib.TrainState(**tree)


def bound_in_flight(value) -> None:
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
  """Fixed once JAX is initialized; cached, as `bound_in_flight` runs every step."""
  return jax.process_count() > 1 and jax.default_backend() == 'cpu'
