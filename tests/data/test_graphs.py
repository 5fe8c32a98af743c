"""Synthetic graphs: seeded, in the graph format, with the statistics their models promise."""

import numpy as np
import pytest

from initlab import data
from initlab.config import ConfigError
from initlab.data import graphs


def test_canonical_edges():
  s, r = graphs.canonical_edges([0, 1, 2, 2, 3], [1, 0, 2, 3, 0], 4)
  # Self-loop (2, 2) and the duplicate 1->0 dropped; both directions; sorted by receiver.
  assert list(zip(r.tolist(), s.tolist())) == [(0, 1), (0, 3), (1, 0), (2, 3), (3, 0), (3, 2)]
  with pytest.raises(ValueError, match=r'outside \[0, 4\)'):
    graphs.canonical_edges([0], [4], 4)


def test_canonical_edges_match_a_set_reference_and_cost_about_a_sort():
  """Random multigraph (repeats, self-loops, one-way edges) against Python sets; on 10^6
  edges it costs a few int64 sorts (numpy 2.4's np.unique took ~200 sorts' time)."""
  rng = np.random.default_rng(0)
  s, r = rng.integers(60, size=900), rng.integers(60, size=900)
  got = graphs.canonical_edges(s, r, 60)
  edges = {(int(a), int(b)) for a, b in zip(s, r) if a != b}
  edges |= {(b, a) for a, b in edges}
  assert list(zip(*(x.tolist() for x in got))) == sorted(edges, key=lambda e: (e[1], e[0]))
  assert got[0].dtype == got[1].dtype == np.int32
  n = 100_000
  s, r = rng.integers(n, size=(2, 500_000))
  keys = np.concatenate([r * n + s, s * n + r])
  best = lambda f: min(_seconds(f) for _ in range(3))
  sort_s = best(lambda: np.sort(keys))
  edges_s = best(lambda: graphs.canonical_edges(s, r, n))
  assert edges_s < 30 * sort_s, (edges_s, sort_s)


def _seconds(fn):
  import time  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


@pytest.mark.parametrize('name', ['csbm', 'chung_lu'])
def test_seeded_and_registered(name):
  cfg = {'name': name, 'graph': {'num_nodes': 600, 'num_val': 100, 'num_test': 200}}
  g = data.graph(cfg)
  graphs.check_example(g)
  fresh = getattr(graphs, name)(
    **{**graphs.options(cfg, name, getattr(graphs, f'{name.upper()}_DEFAULTS'))}
  )  # uncached: same seed, same graph
  other = data.graph({**cfg, 'graph': {**cfg['graph'], 'seed': 1}})
  for key in graphs.KEYS:
    np.testing.assert_array_equal(fresh[key], g[key])
  assert not np.array_equal(other['labels'], g['labels'])
  classes = len(np.unique(g['labels']))
  assert np.bincount(g['labels'][g['train_mask']]).tolist() == [20] * classes
  assert (g['val_mask'].sum(), g['test_mask'].sum()) == (100, 200)
  assert ((g['train_mask'].astype(int) + g['val_mask'] + g['test_mask']) <= 1).all()
  meta = data.metadata(cfg)
  assert (meta.task, meta.num_classes, meta.num_train_examples) == (
    'node_classification',
    classes,
    20 * classes,
  )
  assert meta.graph_stats['num_edges'] == len(g['senders'])


def test_csbm_edge_densities_and_signal():
  opts = {**graphs.CSBM_DEFAULTS, 'p_in': 0.02, 'p_out': 0.004, 'signal': 2.0}
  g = graphs.csbm(**opts)
  y, s, r = g['labels'], g['senders'], g['receivers']
  sizes = np.bincount(y)
  assert sizes.max() - sizes.min() <= 1  # balanced classes
  same = y[s] == y[r]
  pairs_in = (sizes * (sizes - 1)).sum()  # ordered pairs, as edges are
  pairs_out = len(y) * (len(y) - 1) - pairs_in
  for count, pairs, p in ((same.sum(), pairs_in, 0.02), ((~same).sum(), pairs_out, 0.004)):
    std = 2 * np.sqrt(pairs / 2 * p * (1 - p))  # each pair counted twice
    assert abs(count - pairs * p) < 5 * std, (count, pairs * p, std)
  # Class means of the features: norm ≈ signal (mu_c has norm ≈ 1); noise averages out.
  means = np.stack([g['features'][y == c].mean(0) for c in range(opts['num_classes'])])
  np.testing.assert_allclose(np.linalg.norm(means, axis=1), 2.0, rtol=0.2)


def test_chung_lu_degrees_follow_weights_with_heavy_tail():
  opts = graphs.CHUNG_LU_DEFAULTS
  n = opts['num_nodes']
  w = graphs.chung_lu_weights(n, opts['exponent'], opts['mean_degree'], opts['max_degree'])
  np.testing.assert_allclose(w.mean(), opts['mean_degree'])
  assert w.max() <= opts['max_degree'] and np.all(np.diff(w) <= 0)
  # i ~ j with probability 1 - exp(-w_i w_j / S), independently per pair.
  prob = 1 - np.exp(-np.outer(w, w) / w.sum())
  np.fill_diagonal(prob, 0)
  g = graphs.chung_lu(**opts)
  deg = graphs.degrees(g)
  std = 2 * np.sqrt((prob * (1 - prob)).sum() / 2)
  assert abs(deg.sum() - prob.sum()) < 5 * std
  assert np.corrcoef(deg, prob.sum(1))[0, 1] > 0.95
  # Heavy tail: Hill estimate of the degree exponent on the top 5% near `exponent` = 2.5,
  # and hubs far above the mean, unlike the CSBM's near-Poisson degrees.
  top = np.sort(deg)[::-1][: n // 20]
  hill = 1 + len(top) / np.log(top / top[-1]).sum()
  assert 2.0 < hill < 3.2, hill
  assert deg.max() > 20 * deg.mean()
  csbm_deg = graphs.degrees(graphs.csbm(**graphs.CSBM_DEFAULTS))
  assert csbm_deg.max() < 4 * csbm_deg.mean()
  # Features: `active` ones per node at most, most of them in the node's class block.
  f, y = g['features'], g['labels']
  assert f.sum(1).max() <= opts['active'] and set(np.unique(f)) == {0.0, 1.0}
  block = opts['num_features'] // opts['num_classes']
  in_block = f[np.arange(n)[:, None], y[:, None] * block + np.arange(block)].sum() / f.sum()
  assert abs(in_block - (opts['signal'] + (1 - opts['signal']) / opts['num_classes'])) < 0.03


def test_chung_lu_power_law_feature_counts():
  """count_exponent γ: k_i = min(F, max(1, round(k0 U^(-1/(γ-1))))), k0 = active (γ-2)/(γ-1):
  the counts' Pareto tail (Hill estimate of γ on the top 10%) and the row means x̄ spread over
  orders of magnitude; the heavy preset's graph; 0 keeps `active` per node."""
  opts = {**graphs.CHUNG_LU_DEFAULTS, 'num_nodes': 20000, 'num_val': 100, 'num_test': 100}
  opts['num_features'], gamma = 5000, 2.5
  g = graphs.chung_lu(**{**opts, 'count_exponent': gamma})
  ones = g['features'].sum(1)  # ≈ k_i (coinciding draws are rare for k << F)
  assert ones.min() >= 1 and ones.max() <= opts['num_features']
  top = np.sort(ones)[::-1][: len(ones) // 10]
  hill = 1 + len(top) / np.log(top / top[-1]).sum()
  assert abs(hill - gamma) < 0.25, hill
  k0 = opts['active'] * (gamma - 2) / (gamma - 1)
  assert abs(np.median(ones) / (k0 * 2 ** (1 / (gamma - 1))) - 1) < 0.15  # median of Pareto
  plain = graphs.chung_lu(**{**opts, 'num_nodes': 2000, 'count_exponent': 0.0})
  assert plain['features'].sum(1).max() <= opts['active']
  heavy = data.graph({'name': 'chung_lu', 'graph': graphs.CHUNG_LU_HEAVY})
  xbar = heavy['features'].mean(1)
  assert xbar.std() > xbar.mean() and graphs.degrees(heavy).max() > 300
  with pytest.raises(ConfigError, match=r'count_exponent: chung_lu needs 0 \(off\) or'):
    data.graph({'name': 'chung_lu', 'graph': {'count_exponent': 1.5}})


def test_bad_options():
  with pytest.raises(
    ConfigError,
    match=r"config\.data\.graph: dataset 'csbm' takes no option "
    r"\['p'\]; valid: \[.*'p_in'",
  ):
    data.graph({'name': 'csbm', 'graph': {'p': 0.1}})
  with pytest.raises(ConfigError, match=r'config\.data\.graph\.p_out: .* probability'):
    data.graph({'name': 'csbm', 'graph': {'p_out': 2.0}})
  with pytest.raises(ConfigError, match=r'config\.data\.graph\.exponent: .* > 2'):
    data.graph({'name': 'chung_lu', 'graph': {'exponent': 1.5}})
  with pytest.raises(ConfigError, match=r'num_val \+ num_test'):
    data.graph({'name': 'csbm', 'graph': {'num_nodes': 200}})


def test_config_accepts_graph_options():
  from initlab import config as config_lib  # pylint: disable=g-import-not-at-top

  c = config_lib.default_config()
  c.data.name = 'csbm'
  c.data.graph.num_nodes = 1700
  config_lib.validate(c, num_devices=1, process_count=1)
  assert data.metadata(c.data).graph_stats['num_nodes'] == 1700
