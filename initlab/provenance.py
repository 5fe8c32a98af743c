"""Where numbers came from: package versions, git commit, devices.

    environment()  # {"initlab": "0.1.0", "git_commit": "eded27a…" or None, "jax": …,
                   #  "flax": …, "device_kind": "cpu", "device_count": 8, "process_count": 1}

Runs store it in summary.json ("provenance"); the report prints it.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import subprocess
from typing import Any

KEYS = ('initlab', 'git_commit', 'jax', 'flax', 'device_kind', 'device_count', 'process_count')


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def git_commit() -> str | None:
  """HEAD of the git checkout holding initlab's source (with "+dirty" if it has local edits),
  or None outside a checkout or without git."""
  source = pathlib.Path(__file__).resolve().parent
  try:
    run = lambda *args: subprocess.run(
      ['git', *args], cwd=source, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()
    commit = run('rev-parse', 'HEAD')
    dirty = bool(run('status', '--porcelain', '--untracked-files=no'))
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ('+dirty' if dirty else '') if commit else None


def environment() -> dict[str, Any]:
  """The `KEYS` of this process (devices from `jax.devices()`)."""
  import jax  # pylint: disable=g-import-not-at-top

  devices = jax.devices()
  return {
    'initlab': _version('initlab'),
    'git_commit': git_commit(),
    'jax': jax.__version__,
    'flax': _version('flax'),
    'device_kind': devices[0].device_kind if devices else None,
    'device_count': len(devices),
    'process_count': jax.process_count(),
  }
