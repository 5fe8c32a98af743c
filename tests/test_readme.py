"""The README's commands and API tour, run as written (issue 7, item 1).

The main command runs from a fresh directory holding only a copy of configs/, with the
README's relative --config and --workdir; `:smoke` is appended to the config (the full study
takes minutes) and INITLAB_DATA_DIR points the dataset cache into the temp directory.
"""

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
README = (REPO / 'README.md').read_text()
MAIN = 'python -m initlab.main --config=configs/quickstart.py --workdir=runs/quickstart'


def fenced(language):
  return re.findall(rf'^```{language}\n(.*?)^```', README, flags=re.S | re.M)


def test_readme_shows_the_two_commands():
  commands = [line.strip() for block in fenced('bash') for line in block.splitlines()]
  assert f'pip install -e . && {MAIN}' in commands, commands
  assert any(
    re.fullmatch(r'pip install -e "\.\[test\]" && python3? -m pytest .*', c) for c in commands
  ), commands


def test_every_path_the_readme_names_exists():
  named = re.findall(
    r'`((?:configs|experiments|benchmarks|notebooks|initlab|tools)/[\w./-]*)', README
  )
  assert len(named) > 10, named
  missing = sorted({p for p in named if not (REPO / p).exists()})
  assert not missing, missing


@pytest.mark.slow
def test_main_command_as_written_from_a_fresh_directory(tmp_path):
  shutil.copytree(REPO / 'configs', tmp_path / 'configs')
  line = next(l.strip() for b in fenced('bash') for l in b.splitlines() if MAIN in l)
  args = shlex.split(line.split('&&', 1)[1])
  assert args[:3] == ['python', '-m', 'initlab.main'], args
  args = [sys.executable, *args[1:]]
  args = [a + ':smoke' if a.startswith('--config=') else a for a in args]
  env = {**os.environ, 'INITLAB_DATA_DIR': str(tmp_path / 'data')}
  proc = subprocess.run(
    args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  workdir = tmp_path / 'runs' / 'quickstart'
  assert f'Report: {workdir}/report.md' in proc.stdout
  assert (workdir / 'report.md').is_file()
  steps = sorted(
    int(p.name) for p in (workdir / 'runs' / 'he_normal' / 'seed_0' / 'checkpoints').iterdir()
  )
  assert steps[-1] == 30, steps  # The smoke length; checkpoints need absolute paths.


@pytest.mark.slow
def test_python_blocks_run_verbatim():
  """Every ```python block, in order, in one namespace (the scheme recipe, then the tour)."""
  blocks = fenced('python')
  assert len(blocks) >= 2, 'README.md should hold the scheme recipe and the API tour'
  namespace = {}
  for block in blocks:
    first_line = README[: README.index(block)].count('\n')  # Tracebacks cite README lines.
    code = compile('\n' * first_line + block, str(REPO / 'README.md'), 'exec')
    exec(code, namespace)  # pylint: disable=exec-used
  assert 'params' in namespace and 'fit' in namespace
  import initlab.init as ii  # pylint: disable=g-import-not-at-top

  assert 'he_zero_head' in ii.scheme_names()  # The recipe registered a usable scheme.
