"""Language-model windows over a token stream (random access, grain-ready)."""

from collections.abc import Sequence

import numpy as np


def tokens_from_chunks(source: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
  """Concatenates `{'bytes', 'offset'}` chunk records in offset order.

  Args:
    source: random-access records such as a TFDS data source of
      `initlab_tiny_shakespeare`.

  Returns:
    uint8 (num_tokens,) byte tokens of the whole split.
  """
  chunks = [source[i] for i in range(len(source))]
  chunks.sort(key=lambda c: int(c['offset']))
  if not chunks:
    return np.zeros((0,), np.uint8)
  return np.concatenate([np.asarray(c['bytes'], np.uint8) for c in chunks])


def seq_len_option(cfg) -> int:
  """`config.data.seq_len`, the window length, checked to be a positive int."""
  seq_len = cfg.get('seq_len')
  if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
    raise ValueError(
      f'data.seq_len must be a positive int for data.name={cfg["name"]!r}, got {seq_len!r}.'
    )
  return seq_len


class Windows:
  """Non-overlapping next-token windows: a grain `RandomAccessDataSource`.

  Window i covers tokens[i*seq_len : i*seq_len + seq_len + 1] and yields
  `{'inputs': int32 (seq_len,), 'targets': int32 (seq_len,)}` with targets
  shifted by one; consecutive windows share one boundary token, so the targets
  of all windows tile the stream. A trailing partial window is dropped.
  """

  def __init__(self, tokens: np.ndarray, seq_len: int):
    if seq_len < 1:
      raise ValueError(f'seq_len must be >= 1, got {seq_len}.')
    self.tokens = np.asarray(tokens)
    self.seq_len = seq_len

  def __len__(self) -> int:
    return max(len(self.tokens) - 1, 0) // self.seq_len

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < len(self):
      raise IndexError(f'window {index} out of range [0, {len(self)}).')
    start = index * self.seq_len
    w = self.tokens[start : start + self.seq_len + 1].astype(np.int32)
    return {'inputs': w[:-1], 'targets': w[1:]}

  def __repr__(self) -> str:
    return f'Windows(num_tokens={len(self.tokens)}, seq_len={self.seq_len})'
