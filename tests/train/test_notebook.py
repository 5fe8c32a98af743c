"""notebooks/quickstart.ipynb runs top to bottom (offline) and shows the table and plots."""

import nbclient
import nbformat
import pytest

from train_testlib import REPO  # pylint: disable=g-bad-import-order


@pytest.mark.slow
def test_quickstart_notebook_executes(data_dir, tmp_path, monkeypatch):
  monkeypatch.setenv('INITLAB_NOTEBOOK_WORKDIR', str(tmp_path / 'study'))
  monkeypatch.setenv('INITLAB_DATA_DIR', data_dir)
  monkeypatch.setenv('XLA_FLAGS', '')  # One CPU device, as in a Colab CPU runtime.
  notebook = nbformat.read(REPO / 'notebooks' / 'quickstart.ipynb', as_version=4)
  client = nbclient.NotebookClient(
    notebook,
    timeout=300,
    kernel_name='python3',
    resources={'metadata': {'path': str(REPO / 'notebooks')}},
  )
  client.execute()

  outputs = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  markdown = [o['data']['text/markdown'] for o in outputs if 'text/markdown' in o.get('data', {})]
  assert any('| scheme | seeds | eval accuracy |' in m for m in markdown)
  images = [o for o in outputs if 'image/png' in o.get('data', {})]
  assert len(images) >= 3  # loss, accuracy, per-layer variance at init
  assert (tmp_path / 'study' / 'report.md').exists()
