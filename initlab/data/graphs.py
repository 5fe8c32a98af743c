"""Graph datasets for node classification: the full-batch example, its statistics, generators.

A graph dataset (task 'node_classification') is ONE full-batch example, a dict of numpy arrays:

  features   float32 (N, F)
  labels     int32 (N,)
  senders    int32 (E,)   directed edges senders[i] -> receivers[i]: both directions of every
  receivers  int32 (E,)   undirected edge, no self-loops, no duplicates, sorted by
                          (receiver, sender). Models add self-loops themselves (GCN).
  train_mask, val_mask, test_mask   bool (N,)

`graph(config.data)` returns it (read-only arrays, cached per name and options); the
registered opener of each dataset gives it as a one-example `Split` whose `graph_stats` become
`Metadata.graph_stats` and, in a run, facts of `InitContext.dataset` (`graph_stats`).

Seeded generators, registered as datasets with their options in `config.data.graph`:

  'csbm'      contextual stochastic block model (Deshpande, Montanari, Mossel, Sen, NeurIPS
              2018, arXiv 1807.09596): balanced classes, edge i~j with probability p_in inside
              a class and p_out across, Gaussian features signal * mu_y + noise.
  'chung_lu'  heavy-tailed Chung-Lu graph (Chung & Lu 2002): power-law expected degrees, edge
              i~j with probability 1 - exp(-w_i w_j / S), sparse binary class-dependent features.
              The setup of Li, Song, Song, Wipf (ICML 2023, arXiv 2312.02622), whose Virgo
              graph factor matters on heavy-tailed graphs (`initlab.init.virgo`).
"""

from __future__ import annotations

import functools
import json
from typing import Any, Mapping

import numpy as np

from initlab.errors import ConfigError
from initlab.data import registry
from initlab.data import subset

TASK = 'node_classification'
KEYS = ('features', 'labels', 'senders', 'receivers', 'train_mask', 'val_mask', 'test_mask')


def canonical_edges(senders, receivers, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
  """Both directions of every edge, self-loops and duplicates dropped, sorted by (receiver,
  sender); int32 (E,) each. Raises ValueError for an index outside [0, num_nodes)."""
  s, r = np.asarray(senders, np.int64).ravel(), np.asarray(receivers, np.int64).ravel()
  if s.shape != r.shape:
    raise ValueError(f'senders {s.shape} and receivers {r.shape} differ in length')
  if s.size and (min(s.min(), r.min()) < 0 or max(s.max(), r.max()) >= num_nodes):
    raise ValueError(
      f'edge index outside [0, {num_nodes}): range [{min(s.min(), r.min())}, '
      f'{max(s.max(), r.max())}]'
    )
  keep = s != r
  s, r = np.concatenate([s[keep], r[keep]]), np.concatenate([r[keep], s[keep]])
  # One int64 key per edge, sorted by (receiver, sender), repeats dropped. np.sort, not
  # np.unique: numpy >= 2.3's np.unique hashes int64 first, 300x slower on 2M keys here.
  code = np.sort(r * num_nodes + s)
  code = code[np.concatenate([code[:1] == code[:1], code[1:] != code[:-1]])]
  return (code % num_nodes).astype(np.int32), (code // num_nodes).astype(np.int32)


def degrees(example: Mapping[str, np.ndarray]) -> np.ndarray:
  """In-degree (= out-degree: edges are symmetric) of every node, without self-loops; int64 (N,)."""
  return np.bincount(example['receivers'], minlength=len(example['labels']))


def graph_stats(example: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The facts a graph-aware init scheme reads (`InitContext.dataset`):

  'graph': {'senders', 'receivers' (as in the example), 'feature_mean' float64 (N,) = row
            means of the features (x̄ of Virgo, arXiv 2312.02622), 'num_nodes': N},
  'num_nodes', 'num_edges' (directed, no self-loops), 'mean_degree', 'max_degree'.
  """
  n = len(example['labels'])
  deg = degrees(example)
  feature_mean = np.asarray(example['features'], np.float64).mean(axis=1)
  feature_mean.flags.writeable = False
  graph = {
    'senders': example['senders'],
    'receivers': example['receivers'],
    'feature_mean': feature_mean,
    'num_nodes': n,
  }
  return {
    'graph': graph,
    'num_nodes': n,
    'num_edges': int(len(example['senders'])),
    'mean_degree': float(deg.mean()) if n else 0.0,
    'max_degree': int(deg.max(initial=0)),
  }


def check_example(example: Mapping[str, np.ndarray]) -> None:
  """Raises ValueError if `example` breaks the format in the module docstring."""
  missing = [k for k in KEYS if k not in example]
  if missing:
    raise ValueError(f'graph example lacks {missing}; it needs {list(KEYS)}')
  n = len(example['labels'])
  want = {
    'features': (np.float32, 2),
    'labels': (np.int32, 1),
    'senders': (np.int32, 1),
    'receivers': (np.int32, 1),
    'train_mask': (np.bool_, 1),
    'val_mask': (np.bool_, 1),
    'test_mask': (np.bool_, 1),
  }
  for key, (dtype, ndim) in want.items():
    a = example[key]
    if a.dtype != dtype or a.ndim != ndim:
      raise ValueError(
        f'graph example {key!r}: expected {np.dtype(dtype).name} with {ndim} '
        f'dims, got {a.dtype} {a.shape}'
      )
    if key not in ('senders', 'receivers') and a.shape[0] != n:
      raise ValueError(f'graph example {key!r} has {a.shape[0]} rows, labels {n}')
  s, r = canonical_edges(example['senders'], example['receivers'], n)
  if not (np.array_equal(s, example['senders']) and np.array_equal(r, example['receivers'])):
    raise ValueError(
      'graph example edges are not canonical (both directions, no self-loops, '
      'no duplicates, sorted by receiver): use graphs.canonical_edges'
    )


def _frozen(example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  for a in example.values():
    a.flags.writeable = False
  return example


def split_of(example: dict[str, np.ndarray]) -> registry.Split:
  """The one-example `Split` of a graph (what a registered graph opener returns)."""
  check_example(example)
  example = _frozen(example)
  return registry.Split(
    source=(example,),
    transform=None,
    input_shape=(example['features'].shape[1],),
    num_classes=int(example['labels'].max(initial=0)) + 1,
    num_examples=int(example['train_mask'].sum()),
    graph_stats=graph_stats(example),
  )


def graph(cfg) -> dict[str, np.ndarray]:
  """The full-batch example of graph dataset `cfg['name']` (`config.data` or a dict)."""
  entry = registry.lookup(registry.option(cfg, 'name'), key='data.name')
  if entry.task != TASK:
    raise ConfigError(
      f'config.data.name: {entry.name!r} is a {entry.task!r} dataset, not a '
      f'graph; graph datasets: {list(names())}'
    )
  subset.classes_option(cfg, entry)  # Classification only: an error if set.
  return entry.open_split(cfg, 'train').source[0]


def names() -> tuple[str, ...]:
  """Registered graph datasets."""
  return tuple(n for n in registry.dataset_names() if registry.lookup(n).task == TASK)


def options(cfg, name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
  """`config.data.graph` merged over `defaults`; ConfigError for a key `name` does not take."""
  given = registry.option(cfg, 'graph', {})
  given = given.to_dict() if hasattr(given, 'to_dict') else dict(given)
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ConfigError(
      f'config.data.graph: dataset {name!r} takes no option {unknown}; valid: {sorted(defaults)}'
    )
  out = dict(defaults)
  out.update({k: v for k, v in given.items() if v is not None})
  return out


def _cached(generate):
  """Caches `generate(**options)` per options (generators are deterministic in them)."""
  cache = functools.lru_cache(maxsize=8)(lambda key: generate(**json.loads(key)))
  return lambda **opts: cache(json.dumps(opts, sort_keys=True))


def _positive(name, opts, *keys):
  for k in keys:
    if not opts[k] > 0:
      raise ConfigError(
        f'config.data.graph.{k}: dataset {name!r} needs a value > 0, got {opts[k]!r}'
      )


def _probability(name, opts, *keys):
  for k in keys:
    if not 0 <= opts[k] <= 1:
      raise ConfigError(
        f'config.data.graph.{k}: dataset {name!r} needs a probability in [0, 1], got {opts[k]!r}'
      )


def planetoid_masks(
  rng: np.random.Generator, labels: np.ndarray, train_per_class: int, num_val: int, num_test: int
) -> tuple[np.ndarray, ...]:
  """Planetoid-style random split: `train_per_class` nodes of each class, then `num_val` and
  `num_test` of the rest; bool (N,) train, val, test masks."""
  n, classes = len(labels), int(labels.max(initial=0)) + 1
  train = np.concatenate(
    [rng.permutation(np.flatnonzero(labels == c))[:train_per_class] for c in range(classes)]
  )
  rest = rng.permutation(np.setdiff1d(np.arange(n), train))
  if len(rest) < num_val + num_test:
    raise ConfigError(
      f'config.data.graph: {n} nodes leave {len(rest)} after the train nodes, '
      f'fewer than num_val + num_test = {num_val + num_test}'
    )
  masks = [np.zeros(n, bool) for _ in range(3)]
  for mask, idx in zip(masks, (train, rest[:num_val], rest[num_val : num_val + num_test])):
    mask[idx] = True
  return tuple(masks)


def _pairs_within(rng, count: int, p: float) -> np.ndarray:
  """Indices of the pairs kept among `count` pairs, each independently with probability p."""
  k = rng.binomial(count, p)
  return np.sort(rng.choice(count, size=k, replace=False)) if k else np.zeros(0, np.int64)


def _triangle(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Pair number idx -> (i, j), j < i, enumerating (1,0), (2,0), (2,1), (3,0), ..."""
  i = np.floor((np.sqrt(8.0 * idx + 1) - 1) / 2).astype(np.int64) + 1
  i -= i * (i - 1) // 2 > idx  # Guards the float square root.
  i += (i + 1) * i // 2 <= idx
  return i, idx - i * (i - 1) // 2


# The generators' seed and `planetoid_masks` split options (`split`: the last three).
SPLIT_DEFAULTS = dict(seed=0, train_per_class=20, num_val=500, num_test=1000)


def _with_split(rng, features, labels, senders, receivers, **split) -> dict[str, np.ndarray]:
  """The graph dict (`KEYS`) with the `planetoid_masks(rng, labels, **split)` masks."""
  masks = planetoid_masks(rng, labels, **split)
  return dict(zip(KEYS, (features, labels, senders, receivers, *masks)))


CSBM_DEFAULTS = dict(
  num_nodes=2000,
  num_classes=4,
  p_in=0.01,
  p_out=0.002,
  num_features=128,
  signal=1.0,
  **SPLIT_DEFAULTS,
)


def csbm(
  *,
  num_nodes,
  num_classes,
  p_in,
  p_out,
  num_features,
  signal,
  seed,
  **split,
) -> dict[str, np.ndarray]:
  """Contextual SBM (arXiv 1807.09596, multi-class): the full-batch example.

  Labels: a seeded permutation of `arange(N) % C` (balanced classes). Edges: every unordered
  pair {i, j} independently with probability p_in if y_i = y_j, else p_out (sampled per block
  pair: Binomial(#pairs, p) distinct pairs). Features: class means mu_c ~ N(0, I/F), x_i =
  signal * mu_{y_i} + g_i with g_i ~ N(0, I/F), so signal is the mean-to-noise norm ratio.
  Split: `planetoid_masks` with `split` (train_per_class, num_val, num_test).
  """
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(num_nodes) % num_classes).astype(np.int32)
  members = [np.flatnonzero(labels == c) for c in range(num_classes)]
  senders, receivers = [], []
  for a in range(num_classes):
    for b in range(a, num_classes):
      ma, mb = members[a], members[b]
      if a == b:
        i, j = _triangle(_pairs_within(rng, len(ma) * (len(ma) - 1) // 2, p_in))
        senders.append(ma[i]), receivers.append(ma[j])
      else:
        idx = _pairs_within(rng, len(ma) * len(mb), p_out)
        senders.append(ma[idx // len(mb)]), receivers.append(mb[idx % len(mb)])
  senders, receivers = canonical_edges(
    np.concatenate(senders), np.concatenate(receivers), num_nodes
  )
  means = rng.normal(size=(num_classes, num_features)) / np.sqrt(num_features)
  noise = rng.normal(size=(num_nodes, num_features)) / np.sqrt(num_features)
  features = (signal * means[labels] + noise).astype(np.float32)
  return _with_split(rng, features, labels, senders, receivers, **split)


CHUNG_LU_DEFAULTS = dict(
  num_nodes=3000,
  num_classes=5,
  num_features=500,
  exponent=2.5,
  mean_degree=8.0,
  max_degree=300.0,
  active=16,
  count_exponent=0.0,
  signal=0.7,
  **SPLIT_DEFAULTS,
)
# config.data.graph of the heavier-tailed Chung-Lu graph (issue 11's Virgo check): degree
# exponent 2.2 up to degree 1000 and power-law feature counts (γ = 2.05), where Virgo's
# forward graph factors a_{l-1}/a_l reach 1.8 (l = 2) instead of 1.02 with the defaults.
CHUNG_LU_HEAVY = dict(exponent=2.2, max_degree=1000.0, count_exponent=2.05)


def chung_lu_weights(
  num_nodes: int, exponent: float, mean_degree: float, max_degree: float
) -> np.ndarray:
  """Expected degrees w_i ∝ (i + 1)^(-1/(exponent - 1)) (a power law P(w) ~ w^-exponent),
  capped at `max_degree`, scaled so their mean is `mean_degree`; float64 (N,), descending."""
  w = (np.arange(num_nodes) + 1.0) ** (-1.0 / (exponent - 1.0))
  for _ in range(50):  # Scale, cap, rescale: converges in a few rounds.
    w = np.minimum(w * mean_degree / w.mean(), max_degree)
  return w


def chung_lu(
  *,
  num_nodes,
  num_classes,
  num_features,
  exponent,
  mean_degree,
  max_degree,
  active,
  count_exponent,
  signal,
  seed,
  **split,
) -> dict[str, np.ndarray]:
  """Heavy-tailed Chung-Lu graph with sparse binary features: the full-batch example.

  Edges: M ~ Poisson(S/2) with S = sum_i w_i (`chung_lu_weights`), each with both endpoints
  drawn independently ∝ w; self-loops and repeats dropped. The number of i~j draws is then
  Poisson(w_i w_j / S), so i ~ j with probability 1 - exp(-w_i w_j / S) ≈ w_i w_j / S and
  E[deg_i] ≈ w_i. Labels: a seeded permutation of `arange(N) % C`, independent of the graph.
  Features: `active` draws per node (fewer ones if some coincide), or with `count_exponent`
  γ > 2 a power-law number k_i = min(F, max(1, round(k0 U_i^(-1/(γ-1))))), U_i ~ U(0, 1],
  k0 = active (γ-2)/(γ-1) (P(k) ~ k^-γ, mean ≈ `active`), independent of the degrees: row
  means x̄ that vary over orders of magnitude, which Virgo's a_k = ‖Âᵏ x̄‖² smooth away
  over several hops. Each draw falls with probability `signal` in its class's block of F/C
  consecutive features, else anywhere, uniformly.
  Split: `planetoid_masks` with `split` (train_per_class, num_val, num_test).
  """
  rng = np.random.default_rng(seed)
  w = chung_lu_weights(num_nodes, exponent, mean_degree, max_degree)
  m = rng.poisson(w.sum() / 2)
  ends = rng.choice(num_nodes, size=(2, m), p=w / w.sum())
  senders, receivers = canonical_edges(ends[0], ends[1], num_nodes)
  labels = rng.permutation(np.arange(num_nodes) % num_classes).astype(np.int32)
  block = num_features // num_classes
  if count_exponent:
    k0 = active * (count_exponent - 2) / (count_exponent - 1)
    u = 1.0 - rng.random(num_nodes)  # (0, 1]
    counts = np.clip(np.round(k0 * u ** (-1 / (count_exponent - 1))), 1, num_features)
  else:
    counts = np.full(num_nodes, active)
  rows = np.repeat(np.arange(num_nodes), counts.astype(np.int64))
  in_block = labels[rows] * block + rng.integers(block, size=rows.size)
  anywhere = rng.integers(num_features, size=rows.size)
  cols = np.where(rng.random(rows.size) < signal, in_block, anywhere)
  features = np.zeros((num_nodes, num_features), np.float32)
  features[rows, cols] = 1.0
  return _with_split(rng, features, labels, senders, receivers, **split)


_csbm = _cached(csbm)
_chung_lu = _cached(chung_lu)


@registry.register_dataset('csbm', task=TASK)
def open_csbm(cfg, split: str) -> registry.Split:
  """Contextual SBM with `config.data.graph` options over `CSBM_DEFAULTS`; any split name
  gives the whole graph (the masks select)."""
  del split
  opts = options(cfg, 'csbm', CSBM_DEFAULTS)
  _positive('csbm', opts, 'num_nodes', 'num_classes', 'num_features')
  _probability('csbm', opts, 'p_in', 'p_out')
  return split_of(dict(_csbm(**opts)))


@registry.register_dataset('chung_lu', task=TASK)
def open_chung_lu(cfg, split: str) -> registry.Split:
  """Heavy-tailed Chung-Lu graph with `config.data.graph` options over `CHUNG_LU_DEFAULTS`."""
  del split
  opts = options(cfg, 'chung_lu', CHUNG_LU_DEFAULTS)
  _positive(
    'chung_lu',
    opts,
    'num_nodes',
    'num_classes',
    'num_features',
    'mean_degree',
    'max_degree',
    'active',
  )
  _probability('chung_lu', opts, 'signal')
  if opts['count_exponent'] and not opts['count_exponent'] > 2:
    raise ConfigError(
      f'config.data.graph.count_exponent: chung_lu needs 0 (off) or an exponent > 2 '
      f'(finite mean feature count), got {opts["count_exponent"]!r}'
    )
  if not opts['exponent'] > 2:
    raise ConfigError(
      f'config.data.graph.exponent: chung_lu needs an exponent > 2 (finite '
      f'mean degree), got {opts["exponent"]!r}'
    )
  if opts['num_features'] < opts['num_classes']:
    raise ConfigError(
      f'config.data.graph.num_features: chung_lu needs at least num_classes '
      f'= {opts["num_classes"]} features, got {opts["num_features"]}'
    )
  return split_of(dict(_chung_lu(**opts)))
