"""Trains a config: `python -m initlab.main --config=configs/quickstart.py --workdir=runs/qs`.

A config with `init.compare` (or `seeds.num > 1`) runs a study (schemes x seeds); otherwise one
run. Either ends with report.md in the workdir. Re-running the same command resumes where it
stopped; a changed config is refused (only `train.steps` and cosmetics may change, see
`initlab.rundir.RESUMABLE`) unless `--force` (delete the workdir's runs and start over).
Config overrides: `--config.train.steps=100`; config arguments: `--config=file.py:smoke`.

Bad input (flags, config file, overrides, workdir, a checkpoint of another model) ends with
one line `initlab: ...` on stderr, exit status 1, and nothing written; set INITLAB_TRACEBACK=1
for the full traceback.
"""

import importlib.util
import logging as py_logging
import os
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from initlab.train import runtime

TRACEBACK_ENV = 'INITLAB_TRACEBACK'

_CONFIG = config_flags.DEFINE_config_file(
  'config',
  None,
  'Config file, e.g. configs/quickstart.py or configs/quickstart.py:smoke.',
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics, report.')
_FORCE = flags.DEFINE_bool(
  'force',
  False,
  'If the workdir holds runs of another config, delete them (only the files '
  'initlab writes) and start over, instead of refusing.',
)
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(py_logging.Filter):
  """Drops the INFO chatter of Orbax and TFDS (dozens of lines per checkpoint / eval)."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or not any(
      lib in record.pathname for lib in ('/orbax/', '/tensorflow_datasets/')
    )


def _fail(message: str):
  """Exits with status 1 and one line on stderr (the traceback with INITLAB_TRACEBACK=1)."""
  if os.environ.get(TRACEBACK_ENV, '') not in ('', '0'):
    raise  # pylint: disable=misplaced-bare-raise  (called in an except block)
  sys.exit('initlab: ' + ' '.join(str(message).split()))


def _parse_flags(argv):
  """absl's flag parsing, with the config file loaded now and its errors made one line."""
  try:
    rest = flags.FLAGS(argv)
    _ = _CONFIG.value.keys  # ml_collections defers a missing file's error to the first use.
    return rest
  except Exception as e:  # pylint: disable=broad-except  (every error here is the user's input)
    _fail(_explain_flag_error(argv, e))


def _explain_flag_error(argv, error: Exception) -> str:
  """What went wrong with the flags, in one line naming the flag/key and the valid choices."""
  from initlab import config as config_lib  # pylint: disable=g-import-not-at-top

  spec = None
  for i, a in enumerate(argv[1:], start=1):
    if a.startswith('--config='):
      spec = a.split('=', 1)[1]
    elif a == '--config' and i + 1 < len(argv):
      spec = argv[i + 1]
  if spec:
    path, has_arg, arg = spec.partition(':')
    if not os.path.isfile(path):
      here = pathlib.Path(path).parent
      known = sorted(p.name for p in here.glob('*.py')) if here.is_dir() else []
      hint = f'; config files in {here}/: {", ".join(known)}' if known else ''
      return f'--config={spec}: no such file {path!r} (relative to {os.getcwd()}){hint}.'
    try:
      module_spec = importlib.util.spec_from_file_location('_initlab_user_config', path)
      module = importlib.util.module_from_spec(module_spec)
      module_spec.loader.exec_module(module)
      config = module.get_config(arg) if has_arg else module.get_config()
    except config_lib.ConfigError as e:
      return f'--config={spec}: {e}'
    except Exception as e:  # pylint: disable=broad-except
      return f'--config={spec}: loading the config failed: {type(e).__name__}: {e}'
    for a in argv[1:]:
      if a.startswith('--config.'):
        key = a[len('--config.') :].split('=', 1)[0]
        problem = config_lib.override_error(config, key)
        if problem:
          return f'{a}: {problem}'
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  return lines[0] if lines else type(error).__name__


def main(argv):
  if len(argv) > 1:
    sys.exit(
      f'initlab: unexpected arguments {argv[1:]}; flags are --config, --workdir, '
      '--force and --config.<key>=<value> (no spaces around =).'
    )
  logging.get_absl_handler().addFilter(_QuietLibraries())
  runtime.maybe_initialize_distributed()
  # pylint: disable=g-import-not-at-top
  from initlab import config as config_lib
  from initlab import rundir
  from initlab import train
  import jax
  from initlab.train import checkpoint as ckpt_lib

  config = _CONFIG.value
  try:
    config_lib.validate(config)  # Before the heavier work: a bad config fails fast.
    if not train.is_study(config):
      result = train.run(config, _WORKDIR.value, force=_FORCE.value)
      if jax.process_index() == 0:
        from initlab.report import build_report

        build_report(result.run.workdir)
      print(f'Final: {result.summary["final"]}')
      print(f'Report: {result.run.workdir}/{rundir.REPORT}')
      return
    results = train.run_study(config, _WORKDIR.value, force=_FORCE.value)
  except config_lib.ConfigError as e:
    _fail(f'config error: {e}')
  except rundir.RunDirError as e:
    _fail(e)
  except ckpt_lib.TreeMismatchError as e:
    _fail(
      f'{e} (config.init_from and a resumed workdir must hold a checkpoint of the same '
      'model and optimizer)'
    )
  except FileNotFoundError as e:  # config.init_from or data_dir that is not there.
    _fail(e)
  except train.NonFiniteError as e:
    _fail(e)
  if results.get('out_dir'):
    print(f'Report: {results["out_dir"]}/{rundir.REPORT}')
  if results['failed']:
    sys.exit(
      f'initlab: {len(results["failed"])} run(s) stopped on NaN/Inf: '
      + '; '.join(results['failed'].values())
    )


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
