"""TFDS builder for scikit-learn's bundled 8x8 handwritten digits (offline).

1797 grey-scale images of the digits 0..9 (the UCI optical-recognition test
set), read from the copy shipped with scikit-learn: no download.

Split (fixed, no random numbers involved): within each class, the samples are
taken in scikit-learn's order and every 5th one (positions 4, 9, 14, ... of
that class) goes to `test`, the rest to `train`. This gives a stratified
split of 1442 train / 355 test examples that is the same on every machine.

Features:
  image: uint8 (8, 8, 1), raw pixel counts in 0..16 (not 0..255); the input
    pipeline scales them to float32 [0, 1] by dividing by 16.
  label: ClassLabel(num_classes=10), int64.
Examples keep scikit-learn's order within each split.
"""

import numpy as np
import tensorflow_datasets as tfds

from initlab.data import catalog
from initlab.data import pipeline
from initlab.data import registry
from initlab.data import sources

MAX_PIXEL = 16
TEST_EVERY = 5
# Pixels are counts in 0..MAX_PIXEL: scaled to float32 [0, 1].
digits_transform = pipeline.ImageTransform(scale=1 / MAX_PIXEL)


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
  """Returns sorted int64 index arrays {'train': ..., 'test': ...}.

  Args:
    labels: int (N,) class labels in the dataset's canonical order.
  """
  labels = np.asarray(labels)
  rank_in_class = np.empty(len(labels), np.int64)
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    rank_in_class[members] = np.arange(len(members))
  is_test = rank_in_class % TEST_EVERY == TEST_EVERY - 1
  return {'train': np.flatnonzero(~is_test), 'test': np.flatnonzero(is_test)}


def _load():
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  bunch = datasets.load_digits()
  images = bunch.images.astype(np.uint8)[..., None]
  return images, bunch.target.astype(np.int64)


class Digits(sources.EmbeddedBuilder):
  """scikit-learn's 8x8 digits with a fixed stratified 80/20 split."""

  name = 'initlab_digits'
  FEATURES = {
    'image': tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
    'label': tfds.features.ClassLabel(num_classes=10),
  }
  SUPERVISED_KEYS = ('image', 'label')
  HOMEPAGE = 'https://archive.ics.uci.edu/dataset/80'

  def _split_generators(self, dl_manager):
    del dl_manager
    images, labels = _load()
    return {
      split: self._generate_examples(images, labels, idx)
      for split, idx in split_indices(labels).items()
    }

  def _generate_examples(self, images, labels, indices):
    for i in indices:
      yield int(i), {'image': images[i], 'label': labels[i]}


@registry.register_dataset('digits', task='classification', builder=Digits)
def open_split(cfg, split: str) -> registry.Split:
  """`split` of the prepared builder (prepared on first use), pixels scaled to [0, 1]."""
  source = sources.data_source('digits', split, registry.option(cfg, 'data_dir'))
  return catalog.image_split(source, digits_transform)
