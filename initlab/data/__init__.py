"""Offline datasets (TFDS builders) and grain input pipelines.

Typical use in a trainer:

  meta = data.metadata(config.data)
  it = data.build(config.data, split='train', batch_size=128, seed=0)
  batch = data.to_global(next(it), NamedSharding(mesh, P('data')))
  state = it.get_state()  # JSON-able; it.set_state(state) resumes exactly.

Graph datasets (task 'node_classification': 'cora', 'citeseer', 'csbm', 'chung_lu') are one
full-batch example, `g = data.graph(config.data)` (`initlab.data.graphs`); their `Metadata`
carries `graph_stats` for graph-aware init schemes (Virgo).

Adding a dataset: write its module (and its test) with a function decorated
`@register_dataset(name, task=...)` that opens one split as a `Split` (see
`initlab.data.registry`), and import the module at the bottom of this file.
Datasets of your own register the same way from your code.
"""

from initlab.data.inputs import build
from initlab.data.inputs import Metadata
from initlab.data.inputs import metadata
from initlab.data.lm import tokens_from_chunks
from initlab.data.lm import Windows
from initlab.data.pipeline import ImageTransform
from initlab.data.pipeline import make_iterator
from initlab.data.pipeline import to_global
from initlab.data.registry import dataset_names
from initlab.data.registry import register_dataset
from initlab.data.registry import Split
from initlab.data.registry import TASKS
from initlab.data.sources import data_source
from initlab.data.sources import default_data_dir
from initlab.data.sources import embedded_names
from initlab.data.sources import prepare

# The datasets: each module registers itself (`@register_dataset`) when imported.
from initlab.data import catalog  # pylint: disable=g-bad-import-order
from initlab.data import digits
from initlab.data import graphs
from initlab.data import planetoid
from initlab.data import tiny_shakespeare
from initlab.data.graphs import graph
from initlab.data.digits import digits_transform
