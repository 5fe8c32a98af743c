"""The run directory before a run starts: is it ours, may this config resume it?

    finished = check_workdir(workdir, config)   # summary of a finished run, or None
    changes = config_changes(saved, current)    # {key: (old, new)} beyond rundir.RESUMABLE

Nothing here writes, except `--force` deleting initlab's own earlier outputs.
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import jax
from jax.experimental import multihost_utils
import ml_collections

from initlab import config as config_lib
from initlab import rundir
from initlab.train import checkpoint as ckpt_lib


def config_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as JSON types (tuples become lists)."""
  return json.loads(config.to_json())


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


def check_resumable(restored: ckpt_lib.Restored, config, directory) -> None:
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
  """`rundir.changed_keys` minus what a run derives from its config ('built_model',
  'adapters'), an
  unset `init.pretrained`, and keys that configs older than the key lack while the current
  config holds the key's default (e.g. `parametrization.*`, `train.loss`)."""
  changes = rundir.changed_keys(saved, current, tuple(ignore) + ('built_model', 'adapters'))
  if not any(changes.get('init.pretrained', ('x',))):
    changes.pop('init.pretrained', None)
  defaults = rundir.flatten(rundir.encode(config_dict(config_lib.default_config())))
  for key, (old, new) in list(changes.items()):
    if old is None and key in defaults and new == defaults[key]:
      del changes[key]
  return changes


def logged_finals(workdir: pathlib.Path, step: int) -> dict[str, float]:
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


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
