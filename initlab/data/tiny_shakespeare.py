"""TFDS builder for Tiny Shakespeare, read from the copy embedded in initlab.

The corpus (1,115,394 bytes of ASCII text, public domain, from
github.com/karpathy/char-rnn) ships xz-compressed in `embedded/`; no download.

Split by byte position, with n = 1,115,394 and integer division:
  train      = text[0 : n*90//100]           (1,003,854 bytes)
  validation = text[n*90//100 : n*95//100]   (55,770 bytes)
  test       = text[n*95//100 : n]           (55,770 bytes)

Byte level (vocab 256). Each split is stored as consecutive chunks of at most
`CHUNK` bytes, in order:
  bytes:  uint8 (None,), the chunk's bytes;
  offset: int64 (), position of the chunk's first byte in the whole text.
Language-model windows of any length are cut from the concatenated chunks in
the input pipeline (`initlab.data.lm.Windows`), so one prepared copy serves
every `seq_len`.
"""

import hashlib
import importlib.resources
import lzma

import numpy as np
import tensorflow_datasets as tfds

from initlab.data import lm
from initlab.data import registry
from initlab.data import sources

CHUNK = 4096
VOCAB_SIZE = 256
_FILE = 'tiny_shakespeare.txt.xz'
_SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'
_SPLIT_PERCENT = {'train': (0, 90), 'validation': (90, 95), 'test': (95, 100)}


def read_text() -> bytes:
  """Returns the whole embedded corpus, checked against its sha256."""
  path = importlib.resources.files('initlab.data') / 'embedded' / _FILE
  text = lzma.decompress(path.read_bytes())
  if hashlib.sha256(text).hexdigest() != _SHA256:
    raise ValueError(f'Embedded file {path} is corrupt (sha256 mismatch).')
  return text


def split_bounds(n: int) -> dict[str, tuple[int, int]]:
  """Returns {split: (start, stop)} byte ranges of a text of n bytes."""
  return {split: (n * a // 100, n * b // 100) for split, (a, b) in _SPLIT_PERCENT.items()}


class TinyShakespeare(sources.EmbeddedBuilder):
  """Tiny Shakespeare as ordered byte chunks, split 90/5/5 by position."""

  name = 'initlab_tiny_shakespeare'
  FEATURES = {
    'bytes': tfds.features.Tensor(shape=(None,), dtype=np.uint8),
    'offset': tfds.features.Scalar(dtype=np.int64),
  }
  HOMEPAGE = 'https://github.com/karpathy/char-rnn'

  def _split_generators(self, dl_manager):
    del dl_manager
    text = np.frombuffer(read_text(), np.uint8)
    return {
      split: self._generate_examples(text, start, stop)
      for split, (start, stop) in split_bounds(len(text)).items()
    }

  def _generate_examples(self, text, start, stop):
    for offset in range(start, stop, CHUNK):
      chunk = text[offset : min(offset + CHUNK, stop)]
      yield offset, {'bytes': chunk, 'offset': offset}


@registry.register_dataset('tiny_shakespeare', task='lm', builder=TinyShakespeare)
def open_split(cfg, split: str) -> registry.Split:
  """Next-token windows of `config.data.seq_len` bytes over `split` (prepared on first use)."""
  seq_len = lm.seq_len_option(cfg)
  raw = sources.data_source('tiny_shakespeare', split, registry.option(cfg, 'data_dir'))
  return registry.Split(
    lm.Windows(lm.tokens_from_chunks(raw), seq_len), None, (seq_len,), vocab_size=VOCAB_SIZE
  )
