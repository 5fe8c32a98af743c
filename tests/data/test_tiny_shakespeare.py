"""The embedded Tiny Shakespeare builder and LM windows round-trip the text."""

import numpy as np
import pytest

from initlab import data
from initlab.data import tiny_shakespeare


@pytest.fixture(scope='module')
def text():
  return tiny_shakespeare.read_text()


def test_embedded_copy(text):
  assert len(text) == 1_115_394
  assert text.startswith(b'First Citizen:\n')


@pytest.mark.parametrize('split', ['train', 'validation', 'test'])
def test_split_tokens_equal_text_slice(data_dir, text, split):
  start, stop = tiny_shakespeare.split_bounds(len(text))[split]
  tokens = data.tokens_from_chunks(data.data_source('tiny_shakespeare', split, data_dir))
  assert tokens.dtype == np.uint8
  assert tokens.tobytes() == text[start:stop]


def test_split_sizes_partition_the_text(text):
  bounds = tiny_shakespeare.split_bounds(len(text))
  assert bounds == {
    'train': (0, 1_003_854),
    'validation': (1_003_854, 1_059_624),
    'test': (1_059_624, 1_115_394),
  }


def test_windows_round_trip(data_dir, text):
  seq_len = 100
  start, _ = tiny_shakespeare.split_bounds(len(text))['validation']
  tokens = data.tokens_from_chunks(data.data_source('tiny_shakespeare', 'validation', data_dir))
  windows = data.Windows(tokens, seq_len)
  assert len(windows) == (len(tokens) - 1) // seq_len
  it = data.make_iterator(windows, batch_size=8, seed=0, shuffle=False, num_epochs=1)
  inputs, targets = [], []
  for batch in it:
    assert batch['inputs'].dtype == np.int32
    assert batch['inputs'].shape == (8, seq_len)
    np.testing.assert_array_equal(batch['inputs'][:, 1:], batch['targets'][:, :-1])
    inputs.append(batch['inputs'].ravel())
    targets.append(batch['targets'].ravel())
  inputs, targets = np.concatenate(inputs), np.concatenate(targets)
  n = len(inputs)
  assert n == len(windows) // 8 * 8 * seq_len
  decoded = bytes(np.append(inputs, targets[-1]).astype(np.uint8))
  assert decoded == text[start : start + n + 1]
  assert bytes(targets.astype(np.uint8)) == text[start + 1 : start + n + 1]


def test_windows_bounds():
  w = data.Windows(np.arange(10, dtype=np.uint8), 3)
  assert len(w) == 3
  np.testing.assert_array_equal(w[2]['targets'], [7, 8, 9])
  with pytest.raises(IndexError):
    w[3]
  with pytest.raises(ValueError, match='seq_len'):
    data.Windows(np.arange(10), 0)
