"""The offline `digits` builder: fixed stratified split, features."""

import numpy as np
from sklearn import datasets

from initlab import data
from initlab.data import digits


def _all(source):
  return [source[i] for i in range(len(source))]


def test_split_rule_is_fixed_stratified_and_disjoint():
  labels = datasets.load_digits().target
  idx = digits.split_indices(labels)
  train, test = set(idx['train']), set(idx['test'])
  assert not train & test
  assert train | test == set(range(len(labels)))
  assert (len(train), len(test)) == (1442, 355)
  for c in range(10):  # Every 5th sample of each class, in sklearn's order.
    members = np.flatnonzero(labels == c)
    np.testing.assert_array_equal(np.intersect1d(members, idx['test']), members[4::5])


def test_prepared_splits(data_dir):
  images, labels = digits._load()
  expected = digits.split_indices(labels)
  for split, size in (('train', 1442), ('test', 355)):
    examples = _all(data.data_source('digits', split, data_dir))
    assert len(examples) == size
    got = np.stack([e['image'] for e in examples])
    assert got.dtype == np.uint8 and got.shape == (size, 8, 8, 1)
    assert got.max() == 16
    # Stored in sklearn order: the exact images and labels of the split rule.
    np.testing.assert_array_equal(got, images[expected[split]])
    got_labels = np.array([e['label'] for e in examples])
    np.testing.assert_array_equal(got_labels, labels[expected[split]])
    assert set(got_labels) == set(range(10))


def test_transform_scales_to_unit_interval(data_dir):
  ex = data.digits_transform(data.data_source('digits', 'train', data_dir)[0])
  assert ex['image'].dtype == np.float32 and ex['image'].shape == (8, 8, 1)
  assert 0.0 <= ex['image'].min() and ex['image'].max() <= 1.0
  assert ex['label'].dtype == np.int32
