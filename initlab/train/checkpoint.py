"""Orbax checkpoints of a run: train state, data-iterator state and config.

    ckpt = Checkpointer(workdir / "checkpoints", keep=3, save_every=1000)
    restored = ckpt.restore(abstract_state)        # auto-resume
    if restored is not None:                       # None: nothing restorable
      state, it_state = restored.state, restored.data_state
    ...
    ckpt.save(step, state, data_state=it.get_state(), config=config)  # async
    ckpt.close()                                   # waits for the last save

    params = restore_params(other_run_dir, abstract_params)  # config.init_from

A step directory `<directory>/<step>/` holds up to four Orbax items: `state`
(the pytree of arrays, written by `StandardSave`), `data_state`, `config` and
`meta` (JSON; the loop keeps the run's elapsed wall time there). Nothing is
written before the first `save` (the directory is created then).
Only Orbax reads and writes them; there is no pickle.

The state is any pytree of `jax.Array`s: a plain dict, optax states, an NNX
`State`. Typed PRNG keys (`jax.random.key`) need no conversion: Orbax stores
their `jax.random.key_data` and restores a typed key where the abstract leaf
has a key dtype; raw `uint32` keys round-trip as they are.

Restores go onto the shardings of `abstract_state` (a pytree of
`jax.ShapeDtypeStruct` with `.sharding`, or of concrete arrays), so a state
saved on one mesh restores onto another mesh shape or a single device.

Auto-resume: `restore()` tries the newest finalized step first. A step that
cannot be read (missing or garbled array, metadata or JSON files) is skipped
with a warning naming it, and the next older one is tried; unfinished Orbax
tmp directories are never considered. A state tree that does not match the
saved one (a different model) is a `TreeMismatchError` (a `ValueError`), not a
fallback. Files are only
ever deleted by the keep-N policy: the first `save()` after skipping bad steps
renames them to `<step>.unrestorable-<time>` so the new run can reuse the step
numbers and Orbax's ordering stays sane.

The data state is a JSON-serializable dict or `bytes` (grain's `get_state()`),
one per process: on several processes the states are gathered at save time and
each process gets its own back at restore.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from typing import Any, Mapping, NamedTuple, Sequence

from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from initlab.init.tree import path_str

_STATE, _DATA, _CONFIG, _META = 'state', 'data_state', 'config', 'meta'
_TMP_RE = re.compile(r'^(\d+)\.orbax-checkpoint-tmp')


class Restored(NamedTuple):
  """What `Checkpointer.restore` returns."""

  step: int
  state: Any
  data_state: dict[str, Any] | bytes | None
  config: dict[str, Any] | None
  meta: dict[str, Any] | None = None


class TreeMismatchError(ValueError):
  """The state tree asked for does not fit the one in a checkpoint (another model)."""


class _Unrestorable(OSError):
  """A checkpoint step whose files cannot be read."""


def _manager(directory: epath.Path, **options) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
    directory,
    options=ocp.CheckpointManagerOptions(**options),
    item_handlers={
      _STATE: ocp.StandardCheckpointHandler(),
      _DATA: ocp.JsonCheckpointHandler(),
      _CONFIG: ocp.JsonCheckpointHandler(),
      _META: ocp.JsonCheckpointHandler(),
    },
  )


def _abstract(tree: Any) -> Any:
  """Concrete arrays become `ShapeDtypeStruct`s with their sharding."""
  return jax.tree.map(
    lambda x: (
      jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding) if isinstance(x, jax.Array) else x
    ),
    tree,
  )


def _strip_value(name: str) -> str:
  """NNX variables are saved with a trailing 'value' key; `path_str` drops it too."""
  return name[: -len('/value')] if name.endswith('/value') else name


def _check_tree(saved: Any, abstract: Any, where: str, partial: bool) -> None:
  """Raises ValueError naming `where` if `abstract` does not fit `saved`."""
  # Keys compared as '/'-joined names (Orbax's own serialize_tree trips over some optax
  # states with empty tuples, e.g. the scanned LM's).
  flat_saved = {
    _strip_value('/'.join(map(str, k))): v for k, v in ocp.tree.to_flat_dict(saved).items()
  }
  flat_abs = {path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  name = str
  problems = [f'missing {name(k)}' for k in flat_abs if k not in flat_saved]
  if not partial:
    problems += [f'not in abstract_state: {name(k)}' for k in flat_saved if k not in flat_abs]
  for k, leaf in flat_abs.items():
    if k not in flat_saved or jax.dtypes.issubdtype(
      getattr(leaf, 'dtype', None), jax.dtypes.prng_key
    ):
      continue  # keys are saved as their key data, of another shape
    have, want = (tuple(getattr(x, 'shape', ())) for x in (flat_saved[k], leaf))
    if have != want:
      problems.append(f'{name(k)} has shape {have} saved but {want} asked')
  if problems:
    more = f'; and {len(problems) - 3} more' if len(problems) > 3 else ''
    raise TreeMismatchError(
      f'{where}: the state tree does not match the checkpoint: ' + '; '.join(problems[:3]) + more
    )


def _encode_data(data_state: Any) -> Any:
  if isinstance(data_state, bytes):
    return {'bytes_b64': base64.b64encode(data_state).decode('ascii')}
  if isinstance(data_state, Mapping):
    return {'json': dict(data_state)}
  raise TypeError(
    f'data_state must be a JSON-serializable dict or bytes, got {type(data_state).__name__}'
  )


def _decode_data(enc: Mapping[str, Any]) -> Any:
  if 'bytes_b64' in enc:
    return base64.b64decode(enc['bytes_b64'])
  return enc['json']


def _gather_json(obj: Any) -> list[Any]:
  """Every process's `obj` (a collective on several processes)."""
  if jax.process_count() == 1:
    return [obj]
  raw = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.array([raw.size], np.int32))
  padded = np.zeros(int(np.max(sizes)), np.uint8)
  padded[: raw.size] = raw
  rows = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(r[:n])) for r, n in zip(rows, np.ravel(sizes))]


def _to_json(name: str, value: Any) -> dict[str, Any]:
  if hasattr(value, 'to_dict'):  # ml_collections.ConfigDict
    value = value.to_dict()
  try:
    return json.loads(json.dumps(value))
  except (TypeError, ValueError) as e:
    raise TypeError(f'{name} must be JSON-serializable: {e}') from e


class Checkpointer:
  """Async Orbax checkpoints of one run with keep-N and auto-resume."""

  def __init__(
    self,
    directory: str | epath.PathLike,
    *,
    keep: int | None = 3,
    save_every: int | None = None,
    async_save: bool = True,
  ):
    """Opens (and creates) `directory`.

    Args:
      directory: where the step directories live (local path or gs://...).
      keep: how many newest steps to keep; None keeps all.
      save_every: `save` only writes steps that are a multiple of it (unless
        forced); None writes every step it is given.
      async_save: write arrays in the background; `wait`, `restore` and
        `close` wait for it.
    """
    if keep is not None and keep < 1:
      raise ValueError(f'keep must be >= 1 or None, got {keep}')
    if save_every is not None and save_every < 1:
      raise ValueError(f'save_every must be >= 1 or None, got {save_every}')
    self.directory = epath.Path(directory)
    self._mngr = _manager(
      self.directory,
      max_to_keep=keep,
      save_interval_steps=save_every or 1,
      enable_async_checkpointing=async_save,
      create=False,
    )
    self._bad: list[int] = []

  def latest_step(self) -> int | None:
    """The newest finalized step (not yet checked to be readable), or None."""
    self._mngr.reload()
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    """The finalized steps, oldest first."""
    self._mngr.reload()
    return sorted(self._mngr.all_steps())

  def save(
    self,
    step: int,
    state: Any,
    *,
    data_state: Any = None,
    config: Any = None,
    meta: Any = None,
    force: bool = False,
  ) -> bool:
    """Starts saving `step`; True if it is written (per `save_every`/`force`).

    All processes must call it with the same step. `state` may be donated
    after it returns: the arrays are copied off the device first.
    """
    self._quarantine_bad_steps()
    if not force and not self._mngr.should_save(step):
      return False
    self.directory.mkdir(parents=True, exist_ok=True)
    items = {_STATE: ocp.args.StandardSave(state)}
    if data_state is not None:
      items[_DATA] = ocp.args.JsonSave({'states': _gather_json(_encode_data(data_state))})
    if config is not None:
      items[_CONFIG] = ocp.args.JsonSave(_to_json('config', config))
    if meta is not None:
      items[_META] = ocp.args.JsonSave(_to_json('meta', meta))
    return self._mngr.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, abstract_state: Any, *, step: int | None = None) -> Restored | None:
    """Restores `step`, or the newest readable step; None if there is none.

    Args:
      abstract_state: the state's tree of `jax.ShapeDtypeStruct` (with the
        target `.sharding`) or of arrays to take shapes and shardings from.
      step: a given step raises if it is missing or unreadable; None falls
        back from unreadable steps to older ones with a warning.
    """
    self.wait()
    self._mngr.reload()
    abstract_state = _abstract(abstract_state)
    if step is not None:
      if step not in self._mngr.all_steps():
        raise FileNotFoundError(
          f'no checkpoint step {step} in {self.directory}: {self.all_steps()}'
        )
      return self._read(step, abstract_state)
    steps = sorted(self._mngr.all_steps(), reverse=True)
    self._warn_unfinished(steps[0] if steps else -1)
    for s in steps:
      try:
        return self._read(s, abstract_state)
      except _Unrestorable as e:
        logging.warning(
          'checkpoint step %d in %s is unrestorable, trying an older one: %s', s, self.directory, e
        )
        self._bad.append(s)
    logging.warning(
      'no restorable checkpoint in %s (bad steps: %s)', self.directory, self._bad or 'none'
    )
    return None

  def wait(self) -> None:
    """Blocks until the pending async save is on disk."""
    self._mngr.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self.wait()
    self._mngr.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _read(self, step: int, abstract_state: Any) -> Restored:
    where = str(self.directory / str(step))
    try:
      meta = self._mngr.item_metadata(step).get(_STATE)
    except Exception as e:  # pylint: disable=broad-except
      raise _Unrestorable(f'{where}: unreadable metadata ({e!r})') from e
    if meta is None:
      raise _Unrestorable(f"{where}: no readable '{_STATE}' item")
    _check_tree(meta.tree, abstract_state, where, partial=False)
    items = {_STATE: ocp.args.StandardRestore(abstract_state)}
    for name in (_DATA, _CONFIG, _META):
      if (self.directory / str(step) / name).exists():
        items[name] = ocp.args.JsonRestore()
    try:
      out = self._mngr.restore(step, args=ocp.args.Composite(**items))
    except TypeError:  # a tree that does not fit: the caller's error
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise _Unrestorable(f'{where}: {type(e).__name__}: {e}') from e
    data = out.get(_DATA)
    if data is not None:
      states = data['states']
      if len(states) != jax.process_count():
        logging.warning(
          '%s: data state saved by %d processes, restoring on %d; dropping it',
          where,
          len(states),
          jax.process_count(),
        )
        data = None
      else:
        data = _decode_data(states[jax.process_index()])
    return Restored(step, out[_STATE], data, out.get(_CONFIG), out.get(_META))

  def _warn_unfinished(self, latest: int) -> None:
    if not self.directory.exists():
      return
    for p in self.directory.iterdir():
      m = _TMP_RE.match(p.name)
      if m and int(m.group(1)) > latest:
        logging.warning('ignoring unfinished checkpoint step %s at %s', m.group(1), p)

  def _quarantine_bad_steps(self) -> None:
    """Renames steps `restore` skipped, so that `save` can reuse them."""
    if not self._bad:
      return
    self.wait()
    if jax.process_index() == 0:
      for s in self._bad:
        src = self.directory / str(s)
        dst = self.directory / f'{s}.unrestorable-{int(time.time())}'
        if src.exists():
          logging.warning('moving unrestorable checkpoint %s to %s', src, dst)
          src.rename(dst)
    ocp.multihost.sync_global_processes('initlab_checkpoint_quarantine')
    self._bad = []
    self._mngr.reload()


def restore_params(
  path_or_dir: str | epath.PathLike,
  abstract_params: Any,
  *,
  subtree: str | Sequence[str] = 'params',
) -> Any:
  """Only the `subtree` of the state saved in another run's checkpoint.

  Args:
    path_or_dir: a step directory (`<dir>/<step>`) or a `Checkpointer`
      directory, whose newest readable step is used (unreadable ones are
      skipped with a warning).
    abstract_params: the subtree's structure with target shardings (as the
      `abstract_state` of `Checkpointer.restore`).
    subtree: the dict keys leading to the params inside the saved state,
      e.g. "params" or ("model", "params").

  Returns:
    The params, placed on the shardings of `abstract_params`.

  Raises:
    FileNotFoundError: nothing restorable at `path_or_dir`.
    ValueError: the subtree or some of its leaves are not in the checkpoint.
  """
  path = epath.Path(path_or_dir)
  keys = (subtree,) if isinstance(subtree, str) else tuple(subtree)
  item = _abstract(abstract_params)
  for k in reversed(keys):
    item = {k: item}
  if (path / _STATE).exists():
    candidates = [path]
  elif path.is_dir():
    with _manager(path, create=False) as mngr:
      steps = sorted(mngr.all_steps(), reverse=True)
    candidates = [path / str(s) for s in steps]
  else:
    raise FileNotFoundError(f'init_from checkpoint not found: {path}')
  errors = []
  for step_dir in candidates:
    try:
      tree = ocp.PyTreeCheckpointHandler().metadata(step_dir / _STATE).tree
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f'{step_dir}: unreadable metadata ({e!r})')
      continue
    if tree is None:
      errors.append(f'{step_dir}: no readable metadata')
      continue
    _check_tree(tree, item, f'{step_dir} (subtree {"/".join(keys)})', partial=True)
    try:
      with ocp.PyTreeCheckpointer() as reader:
        out = reader.restore(
          step_dir / _STATE,
          args=ocp.args.PyTreeRestore(
            item=item,
            partial_restore=True,
            restore_args=ocp.checkpoint_utils.construct_restore_args(item),
          ),
        )
    except TypeError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f'{step_dir}: {type(e).__name__}: {e}')
      continue
    for e in errors:
      logging.warning('skipped unrestorable checkpoint %s', e)
    for k in keys:
      out = out[k]
    return out
  raise FileNotFoundError(
    f'no restorable checkpoint at {path}: ' + ('; '.join(errors) or 'no steps')
  )


def pretrained_source(path: str | epath.PathLike) -> tuple[epath.Path, dict[str, Any] | None]:
  """(checkpoint path for `restore_params`, the saved run config or None) of `path`.

  `path` is a run directory (holding `checkpoints/` and maybe `config.json`), a
  `Checkpointer` directory or one step directory. The config is the run's config.json, else
  the `config` item of the newest step that has one; None if neither exists.
  """
  path = epath.Path(path)
  if (path / 'checkpoints').is_dir():
    run_config = path / 'config.json'
    if run_config.exists():
      return path / 'checkpoints', json.loads(run_config.read_text())
    path = path / 'checkpoints'
  if not path.is_dir():
    raise FileNotFoundError(f'no run directory or checkpoint at {path}')
  steps = (
    [path]
    if (path / _STATE).exists()
    else sorted((p for p in path.iterdir() if p.name.isdigit()), key=lambda p: -int(p.name))
  )
  for step_dir in steps:
    saved = step_dir / _CONFIG / 'metadata'
    if saved.exists():
      try:
        return path, json.loads(saved.read_text())
      except ValueError:
        continue
  return path, None
