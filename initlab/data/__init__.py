"""Offline datasets (TFDS builders) and grain input pipelines.

Typical use in a trainer:

  meta = data.metadata(config.data)
  it = data.build(config.data, split='train', batch_size=128, seed=0)
  batch = data.to_global(next(it), NamedSharding(mesh, P('data')))
  state = it.get_state()  # JSON-able; it.set_state(state) resumes exactly.
"""
from initlab.data.inputs import build
from initlab.data.inputs import Metadata
from initlab.data.inputs import metadata
from initlab.data.lm import tokens_from_chunks
from initlab.data.lm import Windows
from initlab.data.pipeline import digits_transform
from initlab.data.pipeline import ImageTransform
from initlab.data.pipeline import make_iterator
from initlab.data.pipeline import to_global
from initlab.data.sources import data_source
from initlab.data.sources import default_data_dir
from initlab.data.sources import EMBEDDED
from initlab.data.sources import prepare
