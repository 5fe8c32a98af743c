"""Loads an experiment's modules (`experiments/<study>/<name>.py`) for its tests.

Every study has a `configs.py` (and `run.py`) that its driver imports by plain name, so under
xdist one worker would otherwise reuse the first study's `configs` for the next study. Each
module is loaded under a unique name, with the study's own plain-named siblings imported fresh
and then dropped from `sys.modules` again.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
_SIBLINGS = ('configs', 'run', 'analysis', 'report')


def load(study: str, name: str):
  """`experiments/<study>/<name>.py` as module `<study>_study_<name>`."""
  here = REPO / 'experiments' / study
  spec = importlib.util.spec_from_file_location(f'{study}_study_{name}', here / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  saved = {s: sys.modules.pop(s) for s in _SIBLINGS if s in sys.modules}
  sys.path.insert(0, str(here))
  try:
    spec.loader.exec_module(module)
  finally:
    sys.path.remove(str(here))
    for s in _SIBLINGS:
      sys.modules.pop(s, None)
    sys.modules.update(saved)
  return module


def run_smoke(
  study: str, out: pathlib.Path, workdir_env: str, timeout: int = 600, args: tuple[str, ...] = ()
):
  """Runs `experiments/<study>/run.py --smoke --out=<out> *args` as a user would (one CPU
  device, runs under `out/runs` via `workdir_env`); returns `(out, results/study.json)`."""
  env = dict(os.environ, **{workdir_env: str(out / 'runs')}, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  proc = subprocess.run(
    [sys.executable, f'experiments/{study}/run.py', '--smoke', f'--out={out}', *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  return out, json.loads((out / 'results' / 'study.json').read_text())
