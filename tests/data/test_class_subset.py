"""`config.data.classes`: a class subset of a classification dataset, relabelled."""

import collections
import pickle

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from initlab import config as config_lib
from initlab import data
from initlab.data import inputs
from initlab.errors import ConfigError

HIGH = (5, 6, 7, 8, 9)
LOW = (0, 1, 2, 3, 4)


def _cfg(**kw):
  return ml_collections.ConfigDict(kw)


def _records(data_dir, split):
  source = data.data_source('digits', split, data_dir)
  return [source[i] for i in range(len(source))]


def _eval(cfg, split='test', batch_size=64):
  """Every example of `split` in order (unshuffled, one epoch, padding dropped)."""
  batches = list(
    data.build(
      cfg,
      split=split,
      batch_size=batch_size,
      seed=0,
      shuffle=False,
      num_epochs=1,
      drop_remainder=False,
    )
  )
  keep = np.concatenate([b['mask'] for b in batches])
  image = np.concatenate([b['image'] for b in batches])[keep]
  label = np.concatenate([b['label'] for b in batches])[keep]
  return image, label


def test_high_digits_are_exactly_those_examples_relabelled(data_dir):
  cfg = _cfg(name='digits', data_dir=data_dir, classes=HIGH)
  meta = data.metadata(cfg)
  train = [r for r in _records(data_dir, 'train') if r['label'] in HIGH]
  assert (meta.num_classes, meta.num_train_examples, meta.input_shape) == (5, len(train), (8, 8, 1))
  expected = [r for r in _records(data_dir, 'test') if r['label'] in HIGH]
  image, label = _eval(cfg)
  assert len(label) == len(expected) == 177
  np.testing.assert_array_equal(label, [r['label'] - 5 for r in expected])
  np.testing.assert_array_equal(image, np.stack([r['image'] / 16 for r in expected]))
  assert image.dtype == np.float32 and label.dtype == np.int32


def test_shuffled_train_batches(data_dir):
  cfg = _cfg(name='digits', data_dir=data_dir, classes=HIGH)
  batches = list(data.build(cfg, split='train', batch_size=32, seed=3, num_epochs=1))
  for b in batches:
    assert b['label'].min() >= 0 and b['label'].max() <= 4
  expected = [r for r in _records(data_dir, 'train') if r['label'] in HIGH]
  assert len(batches) == len(expected) // 32
  # One epoch of the subset, less the dropped remainder: a sub-multiset of its examples.
  got = collections.Counter(
    (float(im.sum()), int(y)) for b in batches for im, y in zip(b['image'], b['label'])
  )
  want = collections.Counter((float(r['image'].sum() / 16), int(r['label']) - 5) for r in expected)
  assert sum(got.values()) == 32 * len(batches)
  assert not got - want


def test_low_and_high_partition_the_split(data_dir):
  full_image, full_label = _eval(_cfg(name='digits', data_dir=data_dir))
  low_image, low_label = _eval(_cfg(name='digits', data_dir=data_dir, classes=LOW))
  high_image, high_label = _eval(_cfg(name='digits', data_dir=data_dir, classes=HIGH))
  assert len(low_label) + len(high_label) == len(full_label) == 355
  is_low = full_label < 5
  np.testing.assert_array_equal(low_image, full_image[is_low])
  np.testing.assert_array_equal(high_image, full_image[~is_low])
  np.testing.assert_array_equal(low_label, full_label[is_low])
  np.testing.assert_array_equal(high_label, full_label[~is_low] - 5)


def test_label_is_the_index_in_classes(data_dir):
  full_image, full_label = _eval(_cfg(name='digits', data_dir=data_dir))
  image, label = _eval(_cfg(name='digits', data_dir=data_dir, classes=[7, 2]))
  keep = (full_label == 7) | (full_label == 2)
  np.testing.assert_array_equal(image, full_image[keep])
  np.testing.assert_array_equal(label, np.where(full_label[keep] == 7, 0, 1))


def test_opened_split_pickles(data_dir):
  _, split = inputs._open(_cfg(name='digits', data_dir=data_dir, classes=HIGH), 'test')  # pylint: disable=protected-access
  source, transform = pickle.loads(pickle.dumps((split.source, split.transform)))
  assert len(source) == len(split.source) == split.num_examples == 177
  ex = transform(source[0])
  np.testing.assert_array_equal(ex['image'], split.transform(split.source[0])['image'])
  assert 0 <= ex['label'] < 5


def test_catalog_dataset(tmp_path):
  cfg = _cfg(name='mnist', data_dir=str(tmp_path), classes=(1, 3))
  with tfds.testing.mock_data(num_examples=60):
    source = data.data_source('mnist', 'train', str(tmp_path))
    labels = np.array([source[i]['label'] for i in range(len(source))])
    expected = np.flatnonzero(np.isin(labels, (1, 3)))
    meta = data.metadata(cfg)
    assert (meta.num_classes, meta.num_train_examples) == (2, len(expected)) and len(expected)
    image, label = _eval(cfg, split='train', batch_size=8)
    np.testing.assert_array_equal(label, np.where(labels[expected] == 1, 0, 1))
    images = [data.ImageTransform()(source[int(i)])['image'] for i in expected]
    np.testing.assert_array_equal(image, np.stack(images))


@pytest.mark.parametrize(
  'classes, match',
  [
    (
      (10,),
      r"classes=\(10,\): label 10 is not a class of data.name='digits' \(valid labels: 0..9\)",
    ),
    ((-1, 2), r'label -1 is not a class.*0..9'),
    ((5, 6, 5), r'config.data.classes=\(5, 6, 5\): duplicate label ids \[5\]'),
    (('a',), r'config.data.classes.*must be ints'),
    (5, r'config.data.classes: expected a tuple'),
  ],
)
def test_bad_classes(data_dir, classes, match):
  with pytest.raises(ConfigError, match=match):
    data.metadata(_cfg(name='digits', data_dir=data_dir, classes=classes))


def test_not_classification(data_dir):
  cfg = _cfg(name='tiny_shakespeare', data_dir=data_dir, seq_len=16, classes=(1,))
  match = r"config.data.classes=\(1,\) is for classification datasets.*'tiny_shakespeare'.*'lm'"
  with pytest.raises(ConfigError, match=match):
    data.build(cfg, split='train', batch_size=4, seed=0)
  graph = _cfg(name='csbm', classes=(0,))
  for read in (data.metadata, data.graph):
    with pytest.raises(ConfigError, match="classification datasets.*'node_classification'"):
      read(graph)


def test_split_without_the_classes(data_dir):
  first = int(_records(data_dir, 'test')[0]['label'])
  other = (first + 1) % 10
  cfg = _cfg(name='digits', data_dir=data_dir, classes=(other,))
  match = rf"config.data.classes=\({other},\): split 'test\[:1\]' .* has no example"
  with pytest.raises(ConfigError, match=match):
    data.build(cfg, split='test[:1]', batch_size=1, seed=0)


def test_default_keeps_all_and_validate_checks():
  config = config_lib.default_config()
  assert config.data.classes == ()
  config_lib.validate(config, num_devices=1, process_count=1)
  for bad in ((5, 5), (-1,)):
    config.data.classes = bad
    with pytest.raises(ConfigError, match='config.data.classes'):
      config_lib.validate(config, num_devices=1, process_count=1)
