"""Every notebook in notebooks/ runs top to bottom (offline, one CPU device) in its smoke setting
(INITLAB_NOTEBOOK_SMOKE=1) and shows what it promises; the committed copies hold no outputs and
install initlab from a checkout, not from a made-up URL."""

import pathlib
import re

import nbclient
import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / 'notebooks'

# Per notebook: strings that must appear in its text/markdown or text/plain outputs, and the
# least number of PNG images it shows. Every notebook in notebooks/ must be listed here.
EXPECT = {
  'quickstart': (['| scheme | seeds | eval accuracy |'], 3),
  'gg_priors': (['| β | Var(w)·fan_in (gain² = 2) | fitted β̂ |', '| scheme | seeds |', 'β̂ '], 3),
  'virgo_gcn': (['| scheme | depth |', '| scheme | seeds | eval accuracy |'], 2),
  'poincare': (['d(0, exp₀(v)) = 2‖v‖', '| init | tangent norm after'], 1),
  'precropping': (
    ['| group | dense width | ratio | cropped width |', '| arm | test accuracy |'],
    1,
  ),
  'lora_init': (['| method | reconstruction error |', '| arm | final eval loss |'], 2),
  'learngene': (
    ["| L' | SWS layer map", '| arm | final eval loss |', '| teacher block tensor |'],
    1,
  ),
}


def _notebooks():
  return sorted(NOTEBOOKS.glob('*.ipynb'))


def test_every_notebook_has_checks():
  assert sorted(p.stem for p in _notebooks()) == sorted(EXPECT)


@pytest.mark.parametrize('path', _notebooks(), ids=lambda p: p.stem)
def test_committed_notebook_is_clean(path):
  """No stored outputs; the first code cell installs from a checkout (`pip install -e`)."""
  notebook = nbformat.read(path, as_version=4)
  nbformat.validate(notebook)
  code = [c for c in notebook.cells if c.cell_type == 'code']
  assert all(not c.outputs and c.execution_count is None for c in code), path.name
  assert "'pip', 'install', '-q', '-e'" in code[0].source and 'INITLAB_REPO' in code[0].source
  text = '\n'.join(c.source for c in notebook.cells)
  assert not re.search(r'github\.com/initlab|raw\.githubusercontent', text), path.name


@pytest.mark.parametrize('repo_env', ['', 'repo'])
def test_install_cell_finds_the_checkout(repo_env, tmp_path, monkeypatch):
  """From a folder outside the checkout: INITLAB_REPO, else where the importable initlab is."""
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv('INITLAB_REPO', str(REPO) if repo_env else '')
  cell = next(
    c for c in nbformat.read(NOTEBOOKS / 'quickstart.ipynb', 4).cells if c.cell_type == 'code'
  )
  namespace = {}
  exec(compile(cell.source, 'install-cell', 'exec'), namespace)  # initlab importable: no pip
  assert namespace['find_repo']() == REPO


def _texts(outputs):
  for o in outputs:
    if o.output_type == 'stream':
      yield o.text
    for kind in ('text/markdown', 'text/plain'):
      if kind in o.get('data', {}):
        yield o['data'][kind]


@pytest.mark.slow
@pytest.mark.parametrize('path', _notebooks(), ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
  monkeypatch.setenv('INITLAB_NOTEBOOK_SMOKE', '1')
  monkeypatch.setenv('INITLAB_NOTEBOOK_WORKDIR', str(tmp_path / 'runs'))
  monkeypatch.setenv('INITLAB_DATA_DIR', str(tmp_path / 'data'))
  monkeypatch.setenv('XLA_FLAGS', '')  # One CPU device, as in a Colab CPU runtime.
  notebook = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(
    notebook, timeout=300, kernel_name='python3', resources={'metadata': {'path': str(NOTEBOOKS)}}
  )
  client.execute()

  outputs = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  text = '\n'.join(_texts(outputs))
  strings, images = EXPECT[path.stem]
  for s in strings:
    assert s in text, (path.name, s)
  assert len([o for o in outputs if 'image/png' in o.get('data', {})]) >= images, path.name
