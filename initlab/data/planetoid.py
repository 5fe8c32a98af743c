"""Cora and CiteSeer (Planetoid splits), shipped in `embedded/` without pickles.

Yang, Cohen, Salakhutdinov, "Revisiting Semi-Supervised Learning with Graph Embeddings"
(ICML 2016, arXiv 1603.08861), files from github.com/kimiyoung/planetoid (MIT, notice in
`embedded/README.md`). Read as PyTorch Geometric's `Planetoid(split='public')` does:

  nodes     allx rows (0..len(allx)-1), then the test nodes; the test.index file's i-th line
            is the node of tx row i. N = len(allx) + (max - min + 1) of the test indices.
  labels    argmax of the one-hot rows.
  split     train = 0..len(x)-1, val = the next 500, test = the test.index nodes.
  edges     the adjacency lists, self-loops and duplicates dropped, both directions
            (`graphs.canonical_edges`).

CiteSeer's test.index skips 15 ids in its range (nodes with no features in the source): like
PyG, they get all-zero feature rows and label 0 (the argmax of a zero row) and are in no mask;
they keep their edges.

Result (the literature's numbers): Cora 2708 nodes, 1433 features, 7 classes, 10556 directed
= 5278 undirected edges, split 140/500/1000; CiteSeer 3327 nodes, 3703 features, 6 classes,
9104 directed edges, split 120/500/1000.

`read_raw(directory, name)` reads a user's own raw files (`ind.<name>.x`, ..., `.graph`,
`.test.index`) through an allow-list unpickler: only the numpy/scipy/builtin types those files
hold are constructed (a scipy CSR matrix becomes a plain holder of its arrays; scipy is not
imported); anything else raises `UnsafePickleError` naming it. `config.data.graph.raw_dir`
makes 'cora' / 'citeseer' read raw files from there instead of the embedded copy.
"""

from __future__ import annotations

import collections
import functools
import importlib.resources
import io
import os
import pickle

import numpy as np

from initlab.data import graphs
from initlab.data import registry

NAMES = ('cora', 'citeseer')
NUM_VAL = 500
_RAW_PARTS = ('x', 'y', 'tx', 'ty', 'allx', 'ally', 'graph')


class UnsafePickleError(pickle.UnpicklingError):
  """A raw Planetoid file asks to build an object outside the allow-list."""


class _CSR:
  """What a pickled `scipy.sparse.csr_matrix` becomes: its state (data, indices, indptr,
  _shape) set as attributes by the pickle's BUILD; `dense()` converts it."""

  def dense(self, dtype=np.float32) -> np.ndarray:
    shape = getattr(self, '_shape', None) or getattr(self, 'shape', None)
    rows, cols = (int(d) for d in shape)
    indptr, indices = np.asarray(self.indptr, np.int64), np.asarray(self.indices, np.int64)
    if indptr.shape != (rows + 1,) or (
      indices.size and not 0 <= indices.min() <= indices.max() < cols
    ):
      raise ValueError(f'malformed CSR matrix: shape {shape}, indptr {indptr.shape}')
    out = np.zeros((rows, cols), dtype)
    out[np.repeat(np.arange(rows), np.diff(indptr)), indices] = self.data
    return out


def _reconstruct(subtype, *args):
  """numpy.core.multiarray._reconstruct, for plain arrays only."""
  if subtype is not np.ndarray:
    raise UnsafePickleError(f'_reconstruct only builds numpy arrays, not {subtype!r}')
  return np.ndarray.__new__(subtype, *args)


def _encode(text: str, encoding: str = 'utf-8') -> bytes:
  """`_codecs.encode` as Python 3's protocol-2 pickles use it for bytes (files re-saved)."""
  if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
    raise UnsafePickleError(f'refusing _codecs.encode of {type(text).__name__}, {encoding!r}')
  return text.encode(encoding)


_ALLOWED = {
  ('_codecs', 'encode'): _encode,
  ('__builtin__', 'list'): list,
  ('builtins', 'list'): list,
  ('collections', 'defaultdict'): collections.defaultdict,
  ('numpy', 'dtype'): np.dtype,
  ('numpy', 'ndarray'): np.ndarray,
  ('numpy.core.multiarray', '_reconstruct'): _reconstruct,
  ('numpy._core.multiarray', '_reconstruct'): _reconstruct,
  ('scipy.sparse.csr', 'csr_matrix'): _CSR,
  ('scipy.sparse._csr', 'csr_matrix'): _CSR,
  ('scipy.sparse', 'csr_matrix'): _CSR,
}


class _AllowListUnpickler(pickle.Unpickler):
  """Builds only the `_ALLOWED` globals (Python-2 names included, latin-1 strings)."""

  def __init__(self, file, where: str):
    super().__init__(file, encoding='latin1')
    self._where = where

  def find_class(self, module, name):
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise UnsafePickleError(
        f'{self._where}: refusing to unpickle {module}.{name}: a raw Planetoid file holds '
        f'only {sorted({f"{m}.{n}" for m, n in _ALLOWED})}'
      ) from None

  def persistent_load(self, pid):
    raise UnsafePickleError(f'{self._where}: refusing a persistent id {pid!r}')


def safe_load(data: bytes, where: str = 'pickle'):
  """Unpickles `data` with the allow-list (see the module docstring)."""
  return _AllowListUnpickler(io.BytesIO(data), where).load()


def _dense(obj, where: str) -> np.ndarray:
  if isinstance(obj, _CSR):
    return obj.dense()
  if isinstance(obj, np.ndarray) and obj.ndim == 2:
    return obj
  raise ValueError(f'{where}: expected a 2-D matrix, got {type(obj).__name__}')


def from_parts(x, y, tx, ty, allx, ally, graph, test_index) -> dict[str, np.ndarray]:
  """The full-batch example (`initlab.data.graphs`) of Planetoid's parts, as PyG builds it.

  Args:
    x, y: the labelled train rows (only their count is used: train = 0..len(x)-1).
    tx, ty: test features and one-hot labels; row i is node test_index[i].
    allx, ally: features and one-hot labels of nodes 0..len(allx)-1.
    graph: {node: [neighbours]}.
    test_index: int (T,), the test.index file.
  """
  test_index = np.asarray(test_index, np.int64)
  num_nodes = len(allx) + int(test_index.max() - test_index.min()) + 1
  features = np.zeros((num_nodes, allx.shape[1]), np.float32)
  onehot = np.zeros((num_nodes, ally.shape[1]), np.float32)
  features[: len(allx)], onehot[: len(allx)] = allx, ally
  features[test_index], onehot[test_index] = tx, ty  # Missing ids keep zero rows: label 0.
  labels = onehot.argmax(axis=1).astype(np.int32)
  pairs = [(int(u), int(v)) for u, vs in graph.items() for v in vs]
  senders, receivers = np.array(pairs, np.int64).reshape(-1, 2).T
  senders, receivers = graphs.canonical_edges(senders, receivers, num_nodes)
  masks = [np.zeros(num_nodes, bool) for _ in range(3)]
  masks[0][: len(y)] = True
  masks[1][len(y) : len(y) + NUM_VAL] = True
  masks[2][test_index] = True
  return dict(zip(graphs.KEYS, (features, labels, senders, receivers, *masks)))


def read_raw(directory: str, name: str) -> dict[str, np.ndarray]:
  """The example of raw Planetoid files `<directory>/ind.<name>.*`, unpickled safely."""
  parts = {}
  for part in _RAW_PARTS:
    path = os.path.join(directory, f'ind.{name}.{part}')
    with open(path, 'rb') as f:
      obj = safe_load(f.read(), path)
    if part == 'graph':
      if not isinstance(obj, dict):
        raise ValueError(f'{path}: expected a dict of adjacency lists, got {type(obj).__name__}')
      parts[part] = obj
    else:
      parts[part] = _dense(obj, path)
  test_index = np.loadtxt(os.path.join(directory, f'ind.{name}.test.index'), np.int64, ndmin=1)
  return from_parts(**parts, test_index=test_index)


def pack(example) -> dict[str, np.ndarray]:
  """Compact arrays of a Planetoid example with binary features (what `embedded/` holds):
  feature CSR (indptr, column indices), labels, undirected edges (i < j), split indices."""
  f = example['features']
  if not np.isin(f, (0.0, 1.0)).all():
    raise ValueError('pack: features are not binary')
  rows, cols = np.nonzero(f)
  upper = example['senders'] < example['receivers']
  return dict(
    num_features=np.int64(f.shape[1]),
    feature_indptr=np.searchsorted(rows, np.arange(f.shape[0] + 1)).astype(np.int32),
    feature_indices=cols.astype(np.int16 if f.shape[1] < 2**15 else np.int32),
    labels=example['labels'].astype(np.int8),
    edges=np.stack([example['senders'][upper], example['receivers'][upper]]).astype(np.int16),
    train=np.flatnonzero(example['train_mask']).astype(np.int32),
    val=np.flatnonzero(example['val_mask']).astype(np.int32),
    test=np.flatnonzero(example['test_mask']).astype(np.int32),
  )


def unpack(arrays) -> dict[str, np.ndarray]:
  """Inverse of `pack`."""
  indptr = arrays['feature_indptr'].astype(np.int64)
  n = len(indptr) - 1
  features = np.zeros((n, int(arrays['num_features'])), np.float32)
  features[np.repeat(np.arange(n), np.diff(indptr)), arrays['feature_indices']] = 1.0
  edges = arrays['edges'].astype(np.int64)
  senders, receivers = graphs.canonical_edges(edges[0], edges[1], n)
  masks = [np.zeros(n, bool) for _ in range(3)]
  for mask, key in zip(masks, ('train', 'val', 'test')):
    mask[arrays[key]] = True
  return dict(
    zip(graphs.KEYS, (features, arrays['labels'].astype(np.int32), senders, receivers, *masks))
  )


def embedded_file(name: str) -> str:
  return f'planetoid_{name}.npz'


@functools.lru_cache(maxsize=len(NAMES))
def read_embedded(name: str) -> dict[str, np.ndarray]:
  """The embedded copy of `name` ('cora' | 'citeseer'), read with allow_pickle=False (cached;
  the arrays are made read-only when opened as a dataset)."""
  if name not in NAMES:
    raise ValueError(f'no embedded Planetoid dataset {name!r}; embedded: {list(NAMES)}')
  path = importlib.resources.files('initlab.data') / 'embedded' / embedded_file(name)
  with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as arrays:
    return unpack(arrays)


def _open(name: str):
  defaults = {'raw_dir': ''}

  def open_split(cfg, split: str) -> registry.Split:
    """Planetoid's public split (module docstring); `config.data.graph.raw_dir`: read raw
    files from there instead of the embedded copy. Any split name gives the whole graph."""
    del split
    raw_dir = graphs.options(cfg, name, defaults)['raw_dir']
    return graphs.split_of(read_raw(raw_dir, name) if raw_dir else read_embedded(name))

  open_split.__qualname__ = f'open_{name}'
  return registry.register_dataset(name, task=graphs.TASK)(open_split)


open_cora = _open('cora')
open_citeseer = _open('citeseer')
