"""Config-facing entry points: `metadata(config.data)` and `build(config.data)`.

Fields read from the `config.data` ConfigDict (or a dict); None = default:
  name:        'digits' | 'tiny_shakespeare' | any TFDS catalog name, which is
               treated as image classification.
  data_dir:    optional root directory (default `sources.default_data_dir()`).
  seq_len:     window length, required for 'tiny_shakespeare'.
  image_key:   TFDS catalog only, default 'image'.
  label_key:   TFDS catalog only, default 'label'.
  image_scale: TFDS catalog only, pixel multiplier, default 1/255.
  train_split: split counted in `num_train_examples`, default 'train'.
Batches always use the keys 'image' float32 (B, *input_shape) and 'label'
int32 (B,) for classification, 'inputs' and 'targets' int32 (B, seq_len) for
language modelling.
"""
import dataclasses
from typing import Any

import grain

from initlab.data import lm
from initlab.data import pipeline
from initlab.data import sources
from initlab.data import tiny_shakespeare

LM_NAMES = ('tiny_shakespeare',)


@dataclasses.dataclass(frozen=True)
class Metadata:
  """What the trainer needs to know about a dataset.

  Attributes:
    name: the dataset name from the config.
    task: 'classification' or 'lm'.
    input_shape: per-example shape of 'image' (classification) or 'inputs'
      (lm, `(seq_len,)`); may hold None for variable-size TFDS images.
    num_classes: number of labels (classification), else None.
    vocab_size: number of token ids (lm), else None.
    num_train_examples: examples (lm: windows) in the train split.
  """
  name: str
  task: str
  input_shape: tuple[int | None, ...]
  num_classes: int | None
  vocab_size: int | None
  num_train_examples: int


def _get(cfg, key: str, default: Any = None) -> Any:
  value = cfg.get(key, default)
  return default if value is None else value


def _name(cfg) -> str:
  name = _get(cfg, 'name')
  sources.check_name(name, key='data.name')
  return name


def _seq_len(cfg) -> int:
  seq_len = _get(cfg, 'seq_len')
  if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
    raise ValueError(f'data.seq_len must be a positive int for data.name='
                     f'{cfg["name"]!r}, got {seq_len!r}.')
  return seq_len


def _source(cfg, name: str, split: str):
  """Returns (random-access source, per-example transform or None)."""
  seq_len = _seq_len(cfg) if name in LM_NAMES else None
  raw = sources.data_source(name, split, _get(cfg, 'data_dir'))
  if seq_len is not None:
    return lm.Windows(lm.tokens_from_chunks(raw), seq_len), None
  if name == 'digits':
    return raw, pipeline.digits_transform
  return raw, pipeline.ImageTransform(
      image_key=_get(cfg, 'image_key', 'image'),
      label_key=_get(cfg, 'label_key', 'label'),
      scale=_get(cfg, 'image_scale', 1 / 255))


def metadata(cfg) -> Metadata:
  """Returns the `Metadata` of `config.data` (opens its train split)."""
  name = _name(cfg)
  source, transform = _source(cfg, name, _get(cfg, 'train_split', 'train'))
  if name in LM_NAMES:
    return Metadata(name, 'lm', (_seq_len(cfg),), None,
                    tiny_shakespeare.VOCAB_SIZE, len(source))
  features = source.dataset_info.features
  for field, key in (('image_key', transform.image_key),
                     ('label_key', transform.label_key)):
    if key not in features:
      raise ValueError(f'data.{field}={key!r} is not a feature of '
                       f'data.name={name!r}; features: {list(features)}.')
  return Metadata(name, 'classification',
                  tuple(features[transform.image_key].shape),
                  features[transform.label_key].num_classes, None, len(source))


def build(
    cfg,
    *,
    split: str,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.DatasetIterator:
  """Returns `pipeline.make_iterator` over `split` of `config.data`.

  Args:
    cfg: the `config.data` ConfigDict (fields in the module docstring).
    split: TFDS split string, e.g. 'train', 'test', 'validation[:50%]'.
    batch_size: GLOBAL batch size.
    seed: data seed (shuffling).
    shuffle, num_epochs, drop_remainder, process_index, process_count: as in
      `pipeline.make_iterator` (use shuffle=False, num_epochs=1,
      drop_remainder=False for exact evaluation with a 'mask').
  """
  source, transform = _source(cfg, _name(cfg), split)
  return pipeline.make_iterator(
      source, batch_size=batch_size, seed=seed, shuffle=shuffle,
      num_epochs=num_epochs, drop_remainder=drop_remainder,
      transform=transform, process_index=process_index,
      process_count=process_count)
