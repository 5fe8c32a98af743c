"""Trains a config: `python -m initlab.main --config=configs/quickstart.py --workdir=runs/qs`.

A config with `init.compare` (or `seeds.num > 1`) runs a study (schemes x seeds, then
report.md); otherwise one run. Re-running the same command resumes where it stopped.
Config overrides: `--config.train.steps=100`; config arguments: `--config=file.py:smoke`.
"""
import logging as py_logging
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from initlab.train import mesh as mesh_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/quickstart.py'
                                          ' or configs/quickstart.py:smoke.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics, report.')
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(py_logging.Filter):
  """Drops the INFO chatter of Orbax and TFDS (dozens of lines per checkpoint / eval)."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or not any(
        lib in record.pathname for lib in ('/orbax/', '/tensorflow_datasets/'))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  mesh_lib.maybe_initialize_distributed()
  from initlab import config as config_lib  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  try:
    config_lib.validate(config)  # Before the heavier imports: a bad config fails fast.
    from initlab import train  # pylint: disable=g-import-not-at-top
    try:
      if not train.is_study(config):
        print(f'Final: {train.run(config, _WORKDIR.value).summary["final"]}')
        return
      results = train.run_study(config, _WORKDIR.value)
    except train.NonFiniteError as e:
      sys.exit(f'initlab: {e}')
  except config_lib.ConfigError as e:
    sys.exit(f'initlab: config error: {e}')
  if results.get('out_dir'):
    print(f'Report: {results["out_dir"]}/report.md')
  if results['failed']:
    sys.exit(f'initlab: {len(results["failed"])} run(s) stopped on NaN/Inf: '
             + '; '.join(results['failed'].values()))


if __name__ == '__main__':
  app.run(main)
