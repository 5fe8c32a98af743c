"""Deprecated alias of `python -m initlab.diagnostics` (kept for one release; same flags)."""

import sys

# pylint: disable=unused-import
from initlab.diagnostics import cli as _cli
from initlab.diagnostics.cli import main, model_config, parse_schemes, random_batch, run

if __name__ == '__main__':
  print(
    'initlab.diagnose: deprecated, use `python -m initlab.diagnostics` (same flags)',
    file=sys.stderr,
  )
  _cli.entry('initlab.diagnose')
