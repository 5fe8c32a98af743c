"""The vmap runner: trials of one shape stacked on a leading axis, trained in one program.

    run_vmap(workdir, trials)      # after `runners.prepare(..., vmap=True)`

Trials may differ only in `spec.VMAP_KEYS` (seeds, init scheme and options, learning rate).
They are grouped by shape (the train state's tree, shapes and dtypes, and the rest of the
config), so e.g. an init scheme that resizes the model lands in its own group. Per group:

- each trial is a `loop.Run` (its own run directory, checkpointer, metrics, data order) and
  starts from `Run.initial_state` (its init, or its newest checkpoint); trials that resume
  from different steps are run as separate stacks of the same program;
- the states are stacked on a leading trial axis; one jitted step maps the loop's own step
  body (`step.train_step_fn`) over it with `jax.vmap`. The learning rate is a traced
  per-trial value: the optimizer is built inside the mapped function from the trial's peak
  (`optim.make(..., learning_rate=lr)`), so its state has the structure of a run's;
- the loop itself is `loop._train`, fed a stacked view of the runs (`_Stack`): per-trial
  metrics go to each trial's metrics.jsonl, per-trial checkpoints are written in a run's
  format (state slice on the run's shardings, its data-iterator state and config), so
  `train.run` resumes any single trial;
- NaN/Inf is per trial: a trial whose loss or gradients become non-finite is frozen (its
  state stops changing inside the program), marked 'diverged' in the manifest with a
  summary.json `error`, and gets no more metrics or checkpoints; the others finish.

Mesh: the trial axis is NOT sharded; trials are replicated over the mesh and each trial's
state and batch keep a single run's layout (params by the sharding rules, batch on the data
axis). Why: per-trial arrays then have exactly a run's shardings (checkpoints restore into a
run unchanged, per-trial reductions match a run's, so results equal the sequential runner's),
and any number of trials fits any mesh. Putting trials on the data axis would save the
gradient all-reduce for small models on many devices, but needs the trial count to divide
the axis and changes each trial's layout; for that many-small-trials case, split the
devices between processes (`--runner=processes`) or hosts (`--runner=ray`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from typing import Any, Sequence

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np

from initlab import provenance as provenance_lib
from initlab import rundir
from initlab import sharding as sharding_lib
from initlab.errors import ConfigError
from initlab.sweep import spec as spec_lib
from initlab.sweep.manifest import Claim, Manifest
from initlab.sweep.spec import Trial
from initlab.train import loop
from initlab.train import metrics as metrics_lib
from initlab.train import optim
from initlab.train import state as state_lib
from initlab.train import step as step_lib
from initlab.train import workdir as workdir_lib

TRIAL_NONFINITE = 'trial_nonfinite_step'
SHARED_DATA_BYTES = 512 << 20  # Decoded train splits up to this size are shared by the trials.


def run_vmap(
  workdir,
  trials: Sequence[Trial],
  *,
  devices: Sequence[jax.Device] | None = None,
  callbacks: Sequence[loop.Callback] = (),
) -> dict[str, dict]:
  """Claims every non-final trial, groups them by shape and trains each group stacked.

  Returns {id: {'status', 'error'}} of the trials run. `callbacks` as `train.run`'s, called
  with the stacked state. A trial another live worker holds is skipped.
  """
  spec_lib.check_vmappable(trials)
  manifest = Manifest(workdir)
  claims = manifest.claim_all([t.id for t in trials])
  out = {}
  try:
    runs = [
      loop.Run(c.trial.run_config(), c.trial.workdir(workdir), devices=devices) for c in claims
    ]
    groups: dict[Any, list[int]] = {}
    for i, r in enumerate(runs):
      groups.setdefault(_shape_key(r), []).append(i)
    for idx in groups.values():
      out.update(_run_group([claims[i] for i in idx], [runs[i] for i in idx], callbacks))
  except Exception as e:
    for c in claims:
      if c._fd is not None:  # pylint: disable=protected-access
        c.finish('failed', error=f'{type(e).__name__}: {e}')
    raise
  finally:
    for c in claims:
      c.release()  # A kill (BaseException): the unfinished trials stay 'running', resumable.
    for r in locals().get('runs', ()):
      r.checkpointer.close()
  return out


def _shape_key(r: loop.Run):
  """Trials with equal keys run in one program: same state shapes and non-vmap config."""
  abstract = r.setup.abstract
  leaves = tuple((x.shape, str(x.dtype)) for x in jax.tree.leaves(abstract))
  flat = rundir.flatten(loop.config_dict(r.config))
  rest = {
    k: v
    for k, v in flat.items()
    if not any(k == p or (p.endswith('.') and k.startswith(p)) for p in spec_lib.VMAP_KEYS)
  }
  return str(jax.tree.structure(abstract)), leaves, json.dumps(rundir.encode(rest), sort_keys=True)


def _run_group(claims: list[Claim], runs: list[loop.Run], callbacks) -> dict[str, dict]:
  if runs[0].node_task:
    raise ConfigError('the vmap runner does not stack graph (node_classification) trials yet')
  out = {}
  start_time = time.time()
  pending = []  # (claim, run, state, data_state, resumed, start)
  program = _Program(runs[0])
  with jax.set_mesh(runs[0].mesh):
    fresh = _fresh_states(program, runs)
    for c, r in zip(claims, runs):
      r._wall_start = start_time  # pylint: disable=protected-access
      finished = loop.check_workdir(r.workdir, r.config)
      if id(r) in fresh:
        state, data_state, resumed, start = fresh[id(r)], None, False, 0
      else:
        state, data_state, resumed = r.initial_state()
        start = int(jax.device_get(state.step))
      if finished is not None and start == r.config.train.steps:
        c.finish('done')
        out[c.trial.id] = dict(status='done', error=None)
        continue
      loop.write_json(r.workdir / loop.CONFIG_NAME, r.recorded_config())
      if r.config.diagnostics_at_init and not resumed:
        loop.write_json(r.workdir / loop.DIAGNOSTICS_NAME, r.diagnostics(program.get(state)))
      pending.append((c, r, state, data_state, resumed, start))
    by_start: dict[int, list] = {}
    for item in pending:
      by_start.setdefault(item[-1], []).append(item)
    for start, items in sorted(by_start.items()):
      out.update(_train_stack(program, items, start, callbacks))
  return out


def _fresh_states(program: _Program, runs: list[loop.Run]) -> dict[int, _Slice]:
  """{id(run): its initial state, a `_Slice` of a stacked state} of the runs that start from
  their param-stage init alone (no checkpoint, init_from, pretrained params or data stage):
  per init scheme and options, one run's compiled `setup.init` (what `Run.initial_state`
  calls) over the trials' seeds, instead of one compile per trial (a vmapped init compiles
  about twice as long as a run's on CPU), stacked once."""
  by_init: dict[str, list[loop.Run]] = {}
  for r in runs:
    simple = not (r.checkpointer.all_steps() or r.config.init_from or r.plan.data)
    if simple and r.sources is None:
      by_init.setdefault(
        json.dumps(r.config.init.to_dict(), sort_keys=True, default=str), []
      ).append(r)
  out = {}
  for group in by_init.values():
    init = group[0].setup.init  # One compiled init (a run's) for the group's seeds.
    states = [
      # One program at a time: with several in flight (the init's collectives, then the
      # stack), XLA's CPU client was seen to deadlock on the fake 8-device platform.
      jax.block_until_ready(
        init(jax.random.key(r.config.seeds.init), jax.random.key(r.config.seeds.dropout))
      )
      for r in group
    ]
    stacked = jax.block_until_ready(program.stack(*states))
    for k, r in enumerate(group):
      out[id(r)] = _Slice(stacked, k)
  return out


@dataclasses.dataclass(frozen=True)
class _Slice:
  """Trial k of a stacked state, taken only if needed (a stack of all of `stacked`'s trials
  in order trains `stacked` itself)."""

  stacked: Any
  k: int


class _Program:
  """The jitted stacked programs of one shape group (shared by its stacks)."""

  def __init__(self, r: loop.Run):
    setup, config = r.setup, r.config
    self.setup = setup
    stack = lambda sh: NamedSharding(sh.mesh, P(None, *sh.spec))
    self.state_sh = jax.tree.map(stack, setup.shardings)
    self.batch_sh = stack(r.batch_sharding)
    self.replicated = sharding_lib.replicated(r.mesh)
    steps, opt, task = config.train.steps, config.optimizer, r.meta.task

    teacher = r.teacher  # Shared by the trials: a non-donated, unstacked argument.

    def one(state, batch, lr, metrics, teacher_vars):
      tx = optim.make(opt, steps, r.parametrization, learning_rate=lr)
      fn = step_lib.train_step_fn(
        dataclasses.replace(setup, tx=tx),
        task=task,
        metrics=metrics,
        learning_rate=optim.schedule(opt, steps, lr) if metrics else None,
        loss=r.loss,
      )
      new, m = fn(state, batch, None if teacher is None else (teacher, teacher_vars))
      frozen = state.nonfinite_step >= 0  # Diverged before this step: keep it as it was.
      new = jax.tree.map(lambda a, b: jnp.where(frozen, a, b), state, new)
      return new, m

    def stacked(metrics):
      def fn(state, batch, lrs, teacher_vars):
        new, m = jax.vmap(lambda s, b, lr: one(s, b, lr, metrics, teacher_vars))(state, batch, lrs)
        if metrics:
          nf = m['nonfinite_step']
          m = {
            **m,
            TRIAL_NONFINITE: nf,
            'nonfinite_step': jnp.where(jnp.all(nf >= 0), nf.max(), -1),
          }
        return new, m

      return jax.jit(
        fn,
        in_shardings=(self.state_sh, self.batch_sh, self.replicated, teacher_sh),
        out_shardings=(self.state_sh, self.replicated),
        donate_argnums=(0,),
      )

    teacher_sh = None if teacher is None else teacher.shardings
    self.teacher_vars = None if teacher is None else teacher.variables
    self.train_step, self.lean_step = stacked(True), stacked(False)
    self.eval_step = jax.jit(
      jax.vmap(step_lib.eval_step_fn(setup, task=task), in_axes=(0, None)),
      in_shardings=(self.state_sh, r.batch_sharding),
      out_shardings=self.replicated,
    )
    self.stack = jax.jit(
      lambda *states: jax.tree.map(lambda *x: jnp.stack(x), *states), out_shardings=self.state_sh
    )
    self.take = jax.jit(lambda s, k: jax.tree.map(lambda x: x[k], s), out_shardings=setup.shardings)

  def get(self, state):
    """A trial's state (a `_Slice` is taken out of its stack)."""
    if isinstance(state, _Slice):  # One program at a time: see _fresh_states.
      return jax.block_until_ready(self.take(state.stacked, state.k))
    return state

  def stacked(self, states):
    """The states stacked on a leading trial axis."""
    first = states[0]
    whole = isinstance(first, _Slice) and [getattr(s, 'k', None) for s in states] == list(
      range(len(jax.tree.leaves(first.stacked)[0]))
    )
    if whole and all(isinstance(s, _Slice) and s.stacked is first.stacked for s in states):
      return first.stacked
    return self.stack(*[self.get(s) for s in states])


def _train_stack(program: _Program, items, start: int, callbacks) -> dict[str, dict]:
  claims = [it[0] for it in items]
  runs = [it[1] for it in items]
  view = _Stack(program, claims, runs)
  state = program.stacked([it[2] for it in items])
  lrs = jnp.asarray([r.config.optimizer.learning_rate for r in runs], jnp.float32)
  view.train_step = lambda s, b: program.train_step(s, b, lrs, program.teacher_vars)
  view.lean_step = lambda s, b: program.lean_step(s, b, lrs, program.teacher_vars)
  data_states = [i[3] for i in items]
  it = _StackedIterator(
    _shared_iterators(runs, data_states)
    or _Zip([r.train_iterator(d) for r, d in zip(runs, data_states)])
  )
  writer = _Writers(view, [metrics_lib.MetricWriter(r.workdir, purge_step=start + 1) for r in runs])
  logged = [
    workdir_lib.logged_finals(r.workdir, start) if i[4] else {} for r, i in zip(runs, items)
  ]
  for fn in callbacks if not any(i[4] for i in items) else ():
    fn(start, state, {})
  try:
    try:
      _, final = loop._train(view, state, it, start, writer, callbacks)  # pylint: disable=protected-access
    except loop.NonFiniteError:  # Every trial diverged: each is already recorded.
      final = {}
  finally:
    writer.close()
    it.close()
  out, provenance = {}, provenance_lib.environment()
  for k, (c, r) in enumerate(zip(claims, runs)):
    if k in view.diverged:
      out[c.trial.id] = dict(status='diverged', error=view.diverged[k])
      continue
    mine = {
      name: float(v[k]) if np.ndim(v) else float(v)
      for name, v in final.items()
      if not name.endswith(TRIAL_NONFINITE)
    }
    summary = dict(
      final={**logged[k], **mine},
      steps=r.config.train.steps,
      wall_s=r.wall_s(),
      resumed_from=start if items[k][4] else None,
      eval_examples=view.eval_examples,
      init_s=r.init_s,
      provenance=provenance,
      vmap_trials=len(runs),
    )
    loop.write_json(r.workdir / loop.SUMMARY_NAME, summary)
    c.finish('done')
    out[c.trial.id] = dict(status='done', error=None)
  return out


class _Stack:
  """What `loop._train` reads of a `Run`, for a stack of trials (per-trial values: lists)."""

  node_task = False

  def __init__(self, program: _Program, claims: list[Claim], runs: list[loop.Run]):
    self.program, self.claims, self.runs = program, claims, runs
    self.config = runs[0].config
    self.workdir = runs[0].workdir.parent
    self.batch_sharding = program.batch_sh
    self.checkpointer = _Checkpointers(self)
    self.diverged: dict[int, str] = {}  # trial index -> error
    self.eval_examples = None

  def recorded_config(self) -> list[dict]:
    return [r.recorded_config() for r in self.runs]

  def wall_s(self) -> list[float]:
    return [r.wall_s() for r in self.runs]

  def evaluate(self, state) -> dict[str, np.ndarray]:
    r = self.runs[0]
    batches = r._eval_batches if r._eval_batches is not None else r._read_eval()  # pylint: disable=protected-access
    total = None
    for batch in batches:
      o = self.program.eval_step(state, batch)
      total = o if total is None else jax.tree.map(lambda a, b: a + b, total, o)
    total = jax.device_get(total)
    self.eval_examples = int(total['count'][0])
    count = np.maximum(total['count'].astype(np.float64), 1.0)
    return dict(loss=total['loss_sum'] / count, accuracy=total['correct_sum'] / count)

  def diverge(self, k: int, step: int) -> None:
    """Records trial k as diverged at `step` (summary.json error, manifest 'diverged')."""
    r, c = self.runs[k], self.claims[k]
    e = loop.NonFiniteError(step, r.checkpointer.latest_step(), str(r.checkpointer.directory))
    logging.error('%s: %s', c.trial.id, e)
    self.diverged[k] = str(e)
    loop.write_json(
      r.workdir / loop.SUMMARY_NAME, dict(final={}, steps=step, wall_s=None, error=str(e))
    )
    c.finish('diverged', error=str(e))


class _Writers:
  """Splits stacked metrics into each live trial's MetricWriter; notices divergence."""

  def __init__(self, view: _Stack, writers):
    self.view, self.writers = view, writers

  def write(self, step, metrics, split='train'):
    bad = metrics.get(TRIAL_NONFINITE)
    for k, w in enumerate(self.writers):
      if k in self.view.diverged:
        continue
      w.write(step, {n: v[k] for n, v in metrics.items() if n != TRIAL_NONFINITE}, split=split)
      if bad is not None and bad[k] >= 0:
        w.flush()
        self.view.diverge(k, int(bad[k]))

  def flush(self):
    for w in self.writers:
      w.flush()

  def close(self):
    for w in self.writers:
      w.close()


class _Checkpointers:
  """Saves each live trial's slice of the stacked state in a run's checkpoint format."""

  def __init__(self, view: _Stack):
    self.view = view
    self.directory = view.workdir

  def latest_step(self):
    return self.view.runs[0].checkpointer.latest_step()

  def save(self, step, tree, *, data_state, config, meta):
    state = loop.from_checkpoint(tree)
    for k, r in enumerate(self.view.runs):
      if k in self.view.diverged:
        continue
      one = jax.block_until_ready(self.view.program.take(state, k))  # See _fresh_states.
      r.checkpointer.save(
        step,
        loop.to_checkpoint(one),
        data_state=data_state[k],
        config=config[k],
        meta=dict(wall_s=meta['wall_s'][k]),
      )


def _shared_iterators(runs: list[loop.Run], data_states) -> _SharedBatches | None:
  """The trials' train batches from the split decoded once for all trials, or None.

  Each trial gets the example order of its run's grain stream (`BatchOrder`), so its
  batches and `get_state()` are a run's (checkpoints stay resumable by `train.run`); the
  stacked batch is one fancy-index of the decoded split. Only for classification splits of
  at most SHARED_DATA_BYTES (decoded); else None (each trial decodes its own batches, as a
  run does).
  """
  from initlab.data import inputs  # pylint: disable=g-import-not-at-top

  r = runs[0]
  if r.meta.task != 'classification' or len(runs) < 2:
    return None
  _, split = inputs._open(r.config.data, r.config.data.train_split)  # pylint: disable=protected-access
  n, source = len(split.source), split.source
  decode = split.transform or (lambda ex: ex)
  first = decode(source[0])
  if sum(np.asarray(v).nbytes for v in first.values()) * n > SHARED_DATA_BYTES:
    return None
  records = [first] + [decode(source[i]) for i in range(1, n)]
  table = {k: np.stack([np.asarray(rec[k]) for rec in records]) for k in first}
  order = BatchOrder(n, r.config.train.batch_size)
  seeds = [run.config.seeds.data for run in runs]
  starts = [int((state or {}).get('next_index', 0)) for state in data_states]
  return _SharedBatches(order, seeds, starts, table)


class BatchOrder:
  """The example indices of `data.pipeline.local_batches(range(n), batch_size=.., seed=..)`
  (shuffled, repeated forever, remainder dropped), batch by batch, for many seeds at once.

  grain's `MapDataset.shuffle(seed)` permutes epoch e of a repeated stream with the seed
  `(seed + e) mod 2**32` (`ShuffleMapDataset._shuffled_index`), so epoch e of seed s is
  epoch 0 of seed s + e: the permutations are computed once per distinct epoch seed and
  shared by trials with consecutive seeds (a sweep's `seeds.data + k`). The tests check the
  order against the real pipeline's.
  """

  def __init__(self, n: int, batch_size: int, *, process_index=None, process_count=None):
    self.n, self.batch_size = int(n), int(batch_size)
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    self.local = self.batch_size // self.process_count
    self._perms: dict[int, np.ndarray] = {}

  def _perm(self, seed: int) -> np.ndarray:
    if seed not in self._perms:
      self._perms[seed] = _epoch_permutation(self.n, seed)
    return self._perms[seed]

  def indices(self, seeds: Sequence[int], ks: Sequence[int]) -> np.ndarray:
    """[trials, local batch] example indices of local batch ks[t] of seed seeds[t]."""
    out = np.empty((len(seeds), self.local), np.int64)
    rows = np.arange(self.local)
    for t, (seed, k) in enumerate(zip(seeds, ks)):
      flat = (k * self.process_count + self.process_index) * self.local + rows
      epoch, within = np.divmod(flat, self.n)
      for e in np.unique(epoch):  # A batch spans at most two epochs.
        sel = epoch == e
        out[t, sel] = self._perm((seed + int(e)) % 2**32)[within[sel]]
    return out


def _epoch_permutation(n: int, seed: int) -> np.ndarray:
  """Epoch 0 of `grain.MapDataset.range(n).shuffle(seed=seed)` as an index array."""
  try:  # grain's own permutation (what `shuffle` calls per index), without the per-item path.
    from grain._src.python.experimental.index_shuffle.python import index_shuffle_module as m  # pylint: disable=g-import-not-at-top

    return np.fromiter(
      (m.index_shuffle(i, max_index=n - 1, seed=seed, rounds=4) for i in range(n)), np.int64, n
    )
  except ImportError:  # Another grain layout: its public (slower) path.
    import grain  # pylint: disable=g-import-not-at-top

    return np.fromiter(grain.MapDataset.range(n).shuffle(seed=seed), np.int64, n)


class _SharedBatches:
  """Stacked batches [trials, local batch, ...] gathered from the decoded split `table` at
  the trials' `BatchOrder` indices; `get_state()`: each trial's `make_iterator` state."""

  def __init__(self, order: BatchOrder, seeds, starts, table):
    self.order, self.seeds, self.ks, self.table = order, list(seeds), list(starts), table

  def __next__(self):
    idx = self.order.indices(self.seeds, self.ks)
    self.ks = [k + 1 for k in self.ks]
    return {name: v[idx] for name, v in self.table.items()}

  def get_state(self):
    return [{'next_index': k} for k in self.ks]


class _Zip:
  """Per-trial iterators -> stacked batches [trials, ...]; `get_state()`: one per trial."""

  def __init__(self, iterators):
    self.iterators = iterators

  def __next__(self):
    return jax.tree.map(lambda *x: np.stack(x), *[next(it) for it in self.iterators])

  def get_state(self):
    return [it.get_state() for it in self.iterators]


class _StackedIterator:
  """Stacked batches of `source` (`_SharedBatches` or `_Zip`), read ahead in a thread (the
  input work overlaps the device's); `get_state()`: the trials' states after the last batch
  handed out."""

  def __init__(self, source, prefetch: int = 4):
    self.source = source
    self._states = source.get_state()
    self._queue = queue.Queue(maxsize=prefetch)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._produce, daemon=True)
    self._thread.start()

  def _produce(self):
    try:
      while not self._stop.is_set():
        batch = next(self.source)
        item = (batch, self.source.get_state())
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
    except BaseException as e:  # pylint: disable=broad-except  (re-raised by the reader)
      self._queue.put(e)

  def __next__(self):
    item = self._queue.get()
    if isinstance(item, BaseException):
      raise item
    batch, self._states = item
    return batch

  def get_state(self):
    return self._states

  def close(self):
    self._stop.set()
    self._thread.join()


def stacked_trial_state(state: state_lib.TrainState, k: int) -> state_lib.TrainState:
  """Trial k's slice of a stacked state (for callbacks and tests)."""
  return jax.tree.map(lambda x: x[k], state)
