"""`run_study(config, workdir)`: every init scheme of `config.init.compare` x `seeds.num` seeds.

    workdir/config.json                       the study's config
    workdir/sweep.json                        the manifest: each run's status (initlab.sweep)
    workdir/runs/<scheme>/seed_<k>/           one `train.run` each (sequential)
    workdir/report.md, results.json, *.png    `initlab.report.build_report(workdir)`

A study is the sequential sweep (`initlab.sweep`) over its implied sweep, init.compare x
seeds: seed k of a study uses `seeds.init + k`, `seeds.data + k` and `seeds.dropout + k`,
the same for every scheme, so schemes are compared on the same data orders. Runs that
finished (done, or stopped on NaN/Inf) are recorded in the manifest and never rerun, so
re-running a killed study resumes it. A run whose loss becomes NaN/Inf is recorded
(summary.json `error`, manifest 'diverged') and the study goes on.

Before anything is written, every scheme's model and init are built (abstractly) and the
workdir is checked (`loop.check_workdir`): its config may differ from the study's only in
`rundir.RESUMABLE` keys and in the study's shape (init.compare, seeds.num: a study may grow or
shrink); each existing run of the study is checked the same way. The report is built from the
runs of the current config only; other run directories are noted as stale.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import ml_collections

from initlab import rundir

RUNS_DIR = rundir.RUNS
run_dir = rundir.run_dir


def run_configs(
  config: ml_collections.ConfigDict,
) -> list[tuple[str, int, ml_collections.ConfigDict]]:
  """`(scheme, seed index, run config)` for every run of the study, in run order."""
  from initlab.sweep import spec  # pylint: disable=g-import-not-at-top

  return [(t.group, t.seed, t.run_config()) for t in spec.trials(config)]


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
  from initlab.sweep import runners  # pylint: disable=g-import-not-at-top

  workdir = rundir.absolute(workdir)
  trials = runners.prepare(config, workdir, devices=devices, force=force)
  runners.run_sequential(workdir, trials, devices=devices)
  if report:
    return runners.report(workdir, trials)
  return dict(failed=runners.report_failed(workdir, trials))
