"""Cora and CiteSeer: the literature's statistics, PyG's handling of CiteSeer's missing test
ids, and the raw-file reader (round trip through Planetoid's own format, allow-list refusal)."""

import collections
import os
import pickle

import numpy as np
import pytest
from scipy import sparse

from initlab import data
from initlab.config import ConfigError
from initlab.data import graphs
from initlab.data import planetoid

# (nodes, features, classes, directed edges, train, val, test): PyG's Planetoid('public').
STATS = {
  'cora': (2708, 1433, 7, 10556, 140, 500, 1000),
  'citeseer': (3327, 3703, 6, 9104, 120, 500, 1000),
}


@pytest.mark.parametrize('name', sorted(STATS))
def test_statistics(name):
  nodes, feats, classes, edges, train, val, test = STATS[name]
  g = data.graph({'name': name})
  graphs.check_example(g)  # dtypes, shapes, canonical symmetric edges without self-loops
  assert g['features'].shape == (nodes, feats)
  assert len(np.unique(g['labels'])) == classes
  assert len(g['senders']) == edges and not np.any(g['senders'] == g['receivers'])
  pairs = set(zip(g['senders'].tolist(), g['receivers'].tolist()))
  assert pairs == {(r, s) for s, r in pairs}  # symmetric: edges/2 undirected
  masks = np.stack([g['train_mask'], g['val_mask'], g['test_mask']])
  assert masks.sum(1).tolist() == [train, val, test] and masks.sum(0).max() == 1
  # The public split: 20 labelled nodes per class, nodes 0..train-1, then 500 val.
  assert np.bincount(g['labels'][g['train_mask']]).tolist() == [20] * classes
  assert np.flatnonzero(g['train_mask']).tolist() == list(range(train))
  assert np.flatnonzero(g['val_mask']).tolist() == list(range(train, train + val))
  meta = data.metadata({'name': name})
  assert (meta.task, meta.input_shape, meta.num_classes, meta.num_train_examples) == (
    'node_classification',
    (feats,),
    classes,
    train,
  )
  stats = meta.graph_stats
  assert (stats['num_nodes'], stats['num_edges']) == (nodes, edges)
  np.testing.assert_allclose(
    stats['graph']['feature_mean'], g['features'].astype(np.float64).mean(1)
  )


def test_cora_known_values():
  g = data.graph({'name': 'cora'})
  # Class sizes and the largest degree as PyG reports them for Cora.
  assert np.bincount(g['labels']).tolist() == [351, 217, 418, 818, 426, 298, 180]
  assert graphs.degrees(g).max() == 168
  assert g['features'].sum() == 49216  # binary bag of words: 49216 ones


def test_citeseer_missing_test_ids_as_pyg():
  g = data.graph({'name': 'citeseer'})
  empty = np.flatnonzero(g['features'].sum(1) == 0)
  # The 15 ids in the test range that test.index skips: zero features, label 0, no mask.
  assert len(empty) == 15 and empty.min() >= 2312
  assert np.all(g['labels'][empty] == 0)
  assert not (g['train_mask'] | g['val_mask'] | g['test_mask'])[empty].any()
  assert g['test_mask'][2312:].sum() == 1000 and len(g['labels']) - 2312 == 1015


def test_embedded_files_are_small():
  here = os.path.dirname(planetoid.__file__)
  for name in planetoid.NAMES:
    assert os.path.getsize(os.path.join(here, 'embedded', planetoid.embedded_file(name))) < 1e6


def _write_raw(directory, name, g, shuffle_test=True):
  """Writes `g` in Planetoid's raw format (Python-2-era pickles of scipy CSR / numpy arrays,
  protocol 2) as the original files lay it out."""
  n, classes = len(g['labels']), int(g['labels'].max()) + 1
  onehot = np.eye(classes, dtype=np.int32)[g['labels']]
  has_row = g['features'].sum(1) > 0
  num_all = int(np.flatnonzero(g['test_mask']).min())
  test = np.flatnonzero(g['test_mask'])
  if shuffle_test:
    test = np.random.default_rng(0).permutation(test)
  train = np.flatnonzero(g['train_mask'])
  adjacency = collections.defaultdict(list)
  for s, r in zip(g['senders'].tolist(), g['receivers'].tolist()):
    adjacency[s].append(r)
  parts = {
    'x': sparse.csr_matrix(g['features'][train]),
    'y': onehot[train],
    'tx': sparse.csr_matrix(g['features'][test]),
    'ty': onehot[test],
    'allx': sparse.csr_matrix(g['features'][:num_all]),
    'ally': onehot[:num_all],
    'graph': adjacency,
  }
  assert has_row[test].all()
  for part, obj in parts.items():
    with open(os.path.join(directory, f'ind.{name}.{part}'), 'wb') as f:
      pickle.dump(obj, f, protocol=2)
  np.savetxt(os.path.join(directory, f'ind.{name}.test.index'), test, fmt='%d')


@pytest.mark.parametrize('name', sorted(STATS))
def test_raw_reader_round_trip(tmp_path, name):
  g = data.graph({'name': name})
  _write_raw(tmp_path, name, g)
  back = data.graph({'name': name, 'graph': {'raw_dir': str(tmp_path)}})
  for key in graphs.KEYS:
    np.testing.assert_array_equal(back[key], g[key], err_msg=key)
    assert back[key].dtype == g[key].dtype


class _Evil:
  def __reduce__(self):
    return (os.system, ('touch pwned',))


@pytest.mark.parametrize(
  'payload', [_Evil(), collections.OrderedDict(a=1), sparse.coo_matrix(np.eye(2))]
)
def test_unsafe_pickle_refused(tmp_path, payload, monkeypatch):
  monkeypatch.chdir(tmp_path)
  g = data.graph({'name': 'cora'})
  _write_raw(tmp_path, 'cora', g, shuffle_test=False)
  with open(tmp_path / 'ind.cora.tx', 'wb') as f:
    pickle.dump(payload, f, protocol=2)
  with pytest.raises(
    planetoid.UnsafePickleError,
    match=r'ind\.cora\.tx: refusing to unpickle '
    r'(posix\.system|collections\.OrderedDict|scipy\.sparse\._coo\.coo_matrix)',
  ):
    planetoid.read_raw(str(tmp_path), 'cora')
  assert not (tmp_path / 'pwned').exists()


def test_allowed_types_only_construct_data():
  allowed = planetoid.safe_load(pickle.dumps([np.arange(3), np.dtype('f4')], protocol=2))
  np.testing.assert_array_equal(allowed[0], np.arange(3))
  # An allowed constructor cannot be pointed at another class.
  evil = pickle.dumps([np.arange(3)], protocol=2).replace(b'cnumpy\nndarray', b'c__builtin__\nlist')
  with pytest.raises(planetoid.UnsafePickleError, match='only builds numpy arrays'):
    planetoid.safe_load(evil)
  with pytest.raises(planetoid.UnsafePickleError, match=r'__builtin__\.eval.*holds only'):
    planetoid.safe_load(pickle.dumps(eval, protocol=2))


def test_unknown_option():
  with pytest.raises(
    ConfigError,
    match=r"config\.data\.graph: dataset 'cora' takes no option "
    r"\['num_nodes'\]; valid: \['raw_dir'\]",
  ):
    data.graph({'name': 'cora', 'graph': {'num_nodes': 5}})
  with pytest.raises(ConfigError, match=r"config\.data\.name: 'digits' is a 'classification'"):
    data.graph({'name': 'digits'})


def test_relative_raw_dir_is_resolved_at_the_entry(tmp_path, monkeypatch):
  """config.data.graph.raw_dir is one of the paths made absolute at the entry
  (`config.resolve_paths`, as train.run does): the run reads the same files from any cwd."""
  from initlab import config as config_lib  # pylint: disable=g-import-not-at-top

  g = data.graph({'name': 'cora'})
  (tmp_path / 'raw').mkdir()
  _write_raw(tmp_path / 'raw', 'cora', g)
  config = config_lib.default_config()
  config.data.name = 'cora'
  config.data.graph = {'raw_dir': 'raw'}
  monkeypatch.chdir(tmp_path)
  resolved = config_lib.resolve_paths(config)
  assert resolved.data.graph.raw_dir == str(tmp_path / 'raw')
  assert config.data.graph.raw_dir == 'raw'  # a copy
  monkeypatch.chdir(tmp_path.parent)
  back = data.graph(resolved.data)
  np.testing.assert_array_equal(back['features'], g['features'])
  assert not config_lib.resolve_paths(config_lib.default_config()).data.graph  # none given
