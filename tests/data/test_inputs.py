"""Config-facing `build` / `metadata` and the TFDS-catalog path."""

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from initlab import data


def _cfg(**kw):
  return ml_collections.ConfigDict(kw)


def test_digits(data_dir):
  cfg = _cfg(name='digits', data_dir=data_dir)
  assert data.metadata(cfg) == data.Metadata(
    name='digits',
    task='classification',
    input_shape=(8, 8, 1),
    num_classes=10,
    vocab_size=None,
    num_train_examples=1442,
  )
  batches = list(
    data.build(
      cfg, split='test', batch_size=64, seed=0, shuffle=False, num_epochs=1, drop_remainder=False
    )
  )
  b = batches[0]
  assert b['image'].dtype == np.float32 and b['image'].shape == (64, 8, 8, 1)
  assert b['label'].dtype == np.int32 and b['label'].shape == (64,)
  assert sum(b['mask'].sum() for b in batches) == 355


def test_tiny_shakespeare(data_dir):
  cfg = _cfg(name='tiny_shakespeare', data_dir=data_dir, seq_len=128)
  meta = data.metadata(cfg)
  assert (meta.task, meta.input_shape, meta.vocab_size, meta.num_classes) == (
    'lm',
    (128,),
    256,
    None,
  )
  assert meta.num_train_examples == (1_003_854 - 1) // 128
  b = next(
    data.build(cfg, split='validation', batch_size=4, seed=0, process_index=0, process_count=2)
  )
  assert set(b) == {'inputs', 'targets'}
  assert b['inputs'].shape == (2, 128) and b['inputs'].dtype == np.int32


def test_lm_needs_seq_len(data_dir):
  with pytest.raises(ValueError, match='data.seq_len'):
    data.build(
      _cfg(name='tiny_shakespeare', data_dir=data_dir), split='train', batch_size=4, seed=0
    )


def test_unknown_name_names_the_key(tmp_path):
  with pytest.raises(ValueError, match=r"data.name='no_such_set'.*digits"):
    data.metadata(_cfg(name='no_such_set', data_dir=str(tmp_path)))
  with pytest.raises(ValueError, match='no_such_set'):
    data.data_source('no_such_set', 'train', str(tmp_path))


def test_catalog_name_not_prepared_is_explained(tmp_path):
  with pytest.raises(ValueError, match="'mnist'.*array_record"):
    data.data_source('mnist', 'train', str(tmp_path))


def test_catalog_name_with_mock_data(tmp_path):
  cfg = _cfg(name='mnist', data_dir=str(tmp_path))
  with tfds.testing.mock_data(num_examples=20):
    assert len(data.data_source('mnist', 'test', str(tmp_path))) == 20
    meta = data.metadata(cfg)
    assert (meta.input_shape, meta.num_classes, meta.num_train_examples) == ((28, 28, 1), 10, 20)
    b = next(data.build(cfg, split='train', batch_size=8, seed=0))
  assert b['image'].shape == (8, 28, 28, 1) and b['image'].dtype == np.float32
  assert 0.0 <= b['image'].min() and b['image'].max() <= 1.0
  assert b['label'].dtype == np.int32


def test_catalog_bad_feature_key(tmp_path):
  cfg = _cfg(name='mnist', data_dir=str(tmp_path), image_key='img')
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(ValueError, match="data.image_key='img'"):
      data.metadata(cfg)


def test_default_data_dir(monkeypatch, tmp_path):
  monkeypatch.setenv('INITLAB_DATA_DIR', str(tmp_path))
  assert data.default_data_dir() == str(tmp_path)
  monkeypatch.delenv('INITLAB_DATA_DIR')
  monkeypatch.delenv('TFDS_DATA_DIR', raising=False)
  assert data.default_data_dir().endswith('tensorflow_datasets')
