"""`run_study(config, workdir)`: every init scheme of `config.init.compare` x `seeds.num` seeds.

    workdir/config.json                       the study's config
    workdir/runs/<scheme>/seed_<k>/           one `train.run` each (sequential)
    workdir/report.md, results.json, *.png    `initlab.report.build_report(workdir)`

Seed k of a study uses `seeds.init + k`, `seeds.data + k` and `seeds.dropout + k`, the same
for every scheme, so schemes are compared on the same data orders. Runs that finished
(their summary.json matches the config) are skipped, so re-running a killed study resumes it.
A run whose loss becomes NaN/Inf is recorded (summary.json `error`) and the study goes on.

Before anything is written, every scheme's model and init are built (abstractly) and the
workdir is checked (`loop.check_workdir`): its config may differ from the study's only in
`rundir.RESUMABLE` keys and in the study's shape (init.compare, seeds.num: a study may grow or
shrink); each existing run of the study is checked the same way. The report is built from the
runs of the current config only; other run directories are noted as stale.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any, Sequence

import jax
import ml_collections

from initlab import config as config_lib
from initlab import rundir
from initlab.train import loop

RUNS_DIR = rundir.RUNS


def run_configs(
  config: ml_collections.ConfigDict,
) -> list[tuple[str, int, ml_collections.ConfigDict]]:
  """`(scheme, seed index, run config)` for every run of the study, in run order."""
  out = []
  for scheme in config_lib.schemes_of(config):
    for k in range(config.seeds.num):
      c = ml_collections.ConfigDict(config.to_dict())
      c.init.name = scheme
      c.init.compare = ()
      for key in ('init', 'data', 'dropout'):
        c.seeds[key] = config.seeds[key] + k
      c.seeds.num = 1
      c.name = f'{config.name or "run"} / {scheme} / seed {k}'
      out.append((scheme, k, c))
  return out


run_dir = rundir.run_dir


def _finished(path: pathlib.Path, config: ml_collections.ConfigDict) -> bool:
  try:
    summary = rundir.read_json(path / rundir.SUMMARY)
    saved = rundir.read_json(path / rundir.CONFIG)
  except (OSError, ValueError):
    return False
  return (
    not summary.get('error')
    and summary.get('steps') == config.train.steps
    and not loop.config_changes(saved, loop.config_dict(config))
  )


def run_study(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  *,
  devices: Sequence[jax.Device] | None = None,
  report: bool = True,
  force: bool = False,
) -> dict[str, Any]:
  """Runs the study sequentially, then writes the report; returns `build_report`'s dict.

  `workdir` (relative: to the current directory) and the config's paths are resolved first.
  With `force`, a workdir or run directory that holds another config is deleted and started
  over instead of raising `rundir.RunDirError`. The returned dict also has 'failed':
  {"<scheme>/seed_<k>": error message} for runs that stopped on NaN/Inf (empty if none).
  """
  devices = jax.devices() if devices is None else list(devices)
  config = config_lib.resolve_paths(config)
  config_lib.validate(config, num_devices=len(devices))
  workdir = pathlib.Path(rundir.absolute(workdir))
  runs = run_configs(config)
  _preflight(workdir, config, runs, devices, force)
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
  loop.write_json(workdir / loop.CONFIG_NAME, loop.config_dict(config))
  failed = {}
  for i, (scheme, k, c) in enumerate(runs):
    path = run_dir(workdir, scheme, k)
    if _finished(path, c):
      logging.info('[%d/%d] %s seed %d: already finished', i + 1, len(runs), scheme, k)
      continue
    logging.info('[%d/%d] %s seed %d -> %s', i + 1, len(runs), scheme, k, path)
    try:
      loop.run(c, path, devices=devices, report=False)
    except loop.NonFiniteError as e:
      logging.error('%s seed %d: %s', scheme, k, e)
      failed[f'{scheme}/seed_{k}'] = str(e)
      loop.write_json(
        path / loop.SUMMARY_NAME, dict(final={}, steps=e.step, wall_s=None, error=str(e))
      )
  results = {}
  if report:
    from initlab.report import build_report  # pylint: disable=g-import-not-at-top

    paths = [run_dir(workdir, scheme, k) for scheme, k, _ in runs]
    results = build_report(workdir, runs=paths) if jax.process_index() == 0 else {}
  results['failed'] = failed
  return results


def _preflight(
  workdir: pathlib.Path, config: ml_collections.ConfigDict, runs, devices, force: bool
) -> None:
  """Raises (ConfigError, RunDirError) before the study writes anything."""
  built = set()
  for scheme, k, c in runs:  # Models, init schemes and data sizes, once per scheme.
    if scheme not in built:
      loop.Run(c, run_dir(workdir, scheme, k), devices=devices).checkpointer.close()
      built.add(scheme)
  loop.check_workdir(workdir, config, force=force, study=True)
  for scheme, k, c in runs:
    path = run_dir(workdir, scheme, k)
    if path.exists():
      loop.check_workdir(path, c, force=force)
