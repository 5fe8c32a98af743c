"""Runs a sweep: `python -m initlab.sweep --config=configs/quickstart.py --workdir=runs/qs
--runner=vmap`.

The config module's `get_sweep(arg)` (if any) declares the sweep (`initlab.sweep.spec`); else
its init.compare x seeds.num. Flags as `initlab.main` (--config, --workdir, --force,
--config.<key>=<value>) plus --runner (sequential | vmap | processes | ray) and --workers
(processes, ray). Re-running the command resumes the sweep: finished trials are never rerun.
Ends with report.md over the sweep; bad input ends with one line `initlab: ...` on stderr.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from initlab import main as main_lib

_RUNNER = flags.DEFINE_enum(
  'runner', 'sequential', ['sequential', 'vmap', 'processes', 'ray'], 'How trials are run.'
)
_WORKERS = flags.DEFINE_integer('workers', 2, 'Worker processes (processes) or Ray tasks (ray).')


def _config_spec(argv) -> tuple[str, str | None]:
  for i, a in enumerate(argv[1:], start=1):
    value = a.split('=', 1)[1] if a.startswith('--config=') else None
    if a == '--config' and i + 1 < len(argv):
      value = argv[i + 1]
    if value:
      path, has_arg, arg = value.partition(':')
      return path, arg if has_arg else None
  return '', None


def main(argv):
  if len(argv) > 1:
    sys.exit(f'initlab: unexpected arguments {argv[1:]}')
  logging.get_absl_handler().addFilter(main_lib._QuietLibraries())  # pylint: disable=protected-access
  # pylint: disable=g-import-not-at-top
  from initlab import config as config_lib
  from initlab import rundir
  from initlab.sweep import runners
  from initlab.sweep import spec

  config = main_lib._CONFIG.value  # pylint: disable=protected-access
  workdir = rundir.absolute(main_lib._WORKDIR.value)  # pylint: disable=protected-access
  runner = _RUNNER.value
  try:
    sweep = spec.load_sweep(*_config_spec(sys.argv))
    trials = runners.prepare(
      config,
      workdir,
      sweep,
      force=main_lib._FORCE.value,
      vmap=runner == 'vmap',  # pylint: disable=protected-access
    )
    print(f'Sweep: {len(trials)} trials in {workdir} ({runner})')
    if runner == 'sequential':
      runners.run_sequential(workdir, trials)
    elif runner == 'vmap':
      from initlab.sweep import vmap

      vmap.run_vmap(workdir, trials)
    elif runner == 'processes':
      runners.run_processes(workdir, trials, workers=_WORKERS.value)
    else:
      try:
        from initlab.sweep import ray_runner
      except ImportError as e:
        raise config_lib.ConfigError(
          f'--runner=ray needs Ray: pip install "initlab[ray]" ({e})'
        ) from None
      # --workers caps the trials in flight only when given; else Ray's resources decide.
      ray_runner.run_ray(workdir, trials, workers=_WORKERS.value if _WORKERS.present else None)
    results = runners.report(workdir, trials)
  except config_lib.ConfigError as e:
    main_lib._fail(f'config error: {e}')  # pylint: disable=protected-access
  except (rundir.RunDirError, FileNotFoundError, RuntimeError) as e:
    main_lib._fail(e)  # pylint: disable=protected-access
  if results.get('out_dir'):
    print(f'Report: {results["out_dir"]}/{rundir.REPORT}')
  if results['failed']:
    print(f'{len(results["failed"])} trial(s) diverged (NaN/Inf): {", ".join(results["failed"])}')


if __name__ == '__main__':
  app.run(main, flags_parser=main_lib._parse_flags)  # pylint: disable=protected-access
