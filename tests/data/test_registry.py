"""Datasets of one's own: registered from a test file only, read by metadata/build."""

import numpy as np
import pytest

from initlab import data
from initlab.data import registry


def _open_toy(cfg, split):
  """Classification records x = (i, -i), label i % 3; 10 train, 4 test examples."""
  n = {'train': 10, 'test': 4}[split]
  records = [{'x': np.array([i, -i], np.float32), 'y': i % 3} for i in range(n)]
  scale = np.float32(cfg.get('image_scale') or 1)
  transform = lambda r: {'image': r['x'] * scale, 'label': np.int32(r['y'])}
  return data.Split(records, transform, (2,), num_classes=3)


@pytest.fixture
def toy():
  yield data.register_dataset('toy', task='classification')(_open_toy)
  registry._DATASETS.pop('toy', None)  # pylint: disable=protected-access


def test_registered_dataset_is_read_by_metadata_and_build(toy):
  del toy
  cfg = dict(name='toy', image_scale=0.5)
  assert 'toy' in data.dataset_names()
  assert data.metadata(cfg) == data.Metadata(
    name='toy',
    task='classification',
    input_shape=(2,),
    num_classes=3,
    vocab_size=None,
    num_train_examples=10,
  )
  batches = list(
    data.build(
      cfg, split='test', batch_size=3, seed=0, shuffle=False, num_epochs=1, drop_remainder=False
    )
  )
  np.testing.assert_array_equal(batches[0]['image'], [[0, 0], [0.5, -0.5], [1, -1]])
  np.testing.assert_array_equal(batches[1]['label'], [0, 0, 0])  # Padding.
  np.testing.assert_array_equal(batches[1]['mask'], [True, False, False])
  assert 'toy' not in data.embedded_names()
  with pytest.raises(ValueError, match=r"'toy' is not a TFDS dataset"):
    data.prepare('toy')


def test_unknown_name_lists_the_registered_ones(toy, tmp_path):
  del toy
  with pytest.raises(
    ValueError,
    match=r"data.name='no_such_set': expected one of the "
    r"registered datasets \['chung_lu', 'citeseer', 'cora', 'csbm', 'digits', "
    r"'tiny_shakespeare', 'toy'\] or a "
    r'TFDS catalog name',
  ):
    data.metadata(dict(name='no_such_set', data_dir=str(tmp_path)))
  with pytest.raises(ValueError, match=r'data.name=None'):
    data.metadata(dict(data_dir=str(tmp_path)))


def test_registration_again_and_bad_registrations(toy):
  assert data.register_dataset('toy', task='classification')(_open_toy) is toy
  with pytest.raises(
    ValueError,
    match=r"register_dataset\('toy'\): already registered "
    r'to .*test_registry._open_toy; pick another name',
  ):
    data.register_dataset('toy', task='classification')(lambda cfg, split: None)
  with pytest.raises(
    ValueError,
    match=r"task='regression'; valid tasks: "
    r"\('classification', 'lm', 'node_classification'\)",
  ):
    data.register_dataset('toy2', task='regression')(_open_toy)
  with pytest.raises(ValueError, match=r'builder must be a tfds.core.DatasetBuilder'):
    data.register_dataset('toy2', task='lm', builder=dict)(_open_toy)
  assert 'toy2' not in data.dataset_names()
  assert registry.lookup('toy').open_split is _open_toy
