"""Virgo (Li, Song, Song, Wipf, ICML 2023, arXiv 2312.02622): the variances against a dense
float64 numpy transcription of the paper's formulas, the scheme on GNN-shaped params, and its
errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initlab import data
from initlab.config import ConfigError
import initlab.init as ii


def _random_graph(rng, n=40, e=90, f=12):
  """Directed pairs with repeats, self-loops and one-way edges (variances symmetrizes)."""
  s, r = rng.integers(n, size=e), rng.integers(n, size=e)
  s[:3], r[:3] = [0, 1, 1], [0, 2, 2]  # a self-loop and a duplicate
  features = (rng.random((n, f)) < 0.3) * rng.random((n, f))
  return s, r, features


def _dense_reference(s, r, x, num_layers, hidden, num_classes):
  """The paper's definitions with a dense Â, numpy float64, one layer at a time."""
  n, m0 = x.shape
  adj = np.zeros((n, n))
  adj[s, r] = adj[r, s] = 1.0  # symmetric, 0/1
  np.fill_diagonal(adj, 1.0)  # A + I (old self-loops collapse)
  d = adj.sum(1)
  a_hat = adj / np.sqrt(np.outer(d, d))  # D̃^{-1/2}(A + I)D̃^{-1/2}
  x_bar, ones = x.mean(1), np.ones(n)
  a = {
    k: np.linalg.norm(np.linalg.matrix_power(a_hat, k) @ x_bar) ** 2
    for k in range(1, num_layers + 1)
  }
  b = {
    k: np.linalg.norm(np.linalg.matrix_power(a_hat, k) @ ones) ** 2
    for k in range(1, num_layers + 1)
  }
  L, m, C = num_layers, hidden, num_classes
  fwd = [2 / m0 if l == 1 else 2 / m * a[l - 1] / a[l] for l in range(1, L + 1)]
  bwd = [
    n / ((C - 1) * b[1]) if l == L else 2 / m * b[L - l] / b[L - l + 1] for l in range(1, L + 1)
  ]
  return np.array(fwd), np.array(bwd)


@pytest.mark.parametrize('num_layers', [1, 2, 5])
def test_variances_match_dense_float64_reference(num_layers):
  s, r, x = _random_graph(np.random.default_rng(num_layers))
  fwd_ref, bwd_ref = _dense_reference(s, r, x, num_layers, hidden=16, num_classes=4)
  with jax.enable_x64(True):
    for mean, ref in (
      ('harmonic', 2 / (1 / fwd_ref + 1 / bwd_ref)),
      ('arithmetic', (fwd_ref + bwd_ref) / 2),
    ):
      fwd, bwd, var = ii.virgo.variances(
        s, r, x, num_layers=num_layers, hidden=16, num_classes=4, mean=mean
      )
      assert fwd.dtype == jnp.float64 and fwd.shape == (num_layers,)
      np.testing.assert_allclose(fwd, fwd_ref, rtol=1e-12)
      np.testing.assert_allclose(bwd, bwd_ref, rtol=1e-12)
      np.testing.assert_allclose(var, ref, rtol=1e-12)
  fwd32, _, _ = ii.virgo.variances(s, r, x, num_layers=num_layers, hidden=16, num_classes=4)
  np.testing.assert_allclose(fwd32, fwd_ref, rtol=1e-5)


def _gcn_params(widths, bias=True):
  """Abstract params shaped like a GCN: layers/l/linear/{kernel,bias}."""
  params = {'layers': {}}
  for l, (fi, fo) in enumerate(zip(widths[:-1], widths[1:])):
    params['layers'][str(l)] = {'linear': {'kernel': jax.ShapeDtypeStruct((fi, fo), jnp.float32)}}
    if bias:
      params['layers'][str(l)]['linear']['bias'] = jnp.zeros((fo,))
  return params


def _ctx(cfg, depth, pattern='layers/{l}/linear/kernel'):
  meta = data.metadata(cfg)
  return ii.InitContext(
    hints={'gnn_layers': [pattern.format(l=l) for l in range(depth)]},
    dataset=ii.stages.dataset_facts(meta),
  )


def test_scheme_draws_each_layer_with_its_variance():
  cfg = {'name': 'cora'}
  g = data.graph(cfg)
  widths = (1433, 64, 64, 7)
  ctx = _ctx(cfg, 3)
  want = {}
  for mean in ('harmonic', 'arithmetic'):
    want['forward'], want['backward'], want[mean] = ii.virgo.variances(
      g['senders'], g['receivers'], g['features'], num_layers=3, hidden=64, num_classes=7, mean=mean
    )
  for mode in ii.virgo.MODES:  # widths read from the kernels
    np.testing.assert_allclose(
      ii.virgo.model_variances(_gcn_params(widths), ctx, mode), want[mode], rtol=1e-6
    )
  params = jax.jit(lambda k: ii.get_scheme('virgo', mode='backward')(k, _gcn_params(widths), ctx))(
    jax.random.key(0)
  )
  for l in range(3):  # under jit, as the sharded init
    w = np.asarray(params['layers'][str(l)]['linear']['kernel'], np.float64)
    bound = np.sqrt(3 * want['backward'][l])
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound  # U(-a, a)
    rel = 3 * np.sqrt(0.8 / w.size)  # 3 std of a uniform's sample variance
    assert abs(w.var() / want['backward'][l] - 1) < rel, (l, w.var(), want['backward'][l])
    assert np.all(params['layers'][str(l)]['linear']['bias'] == 0)
  again = ii.get_scheme('virgo', mode='backward')(jax.random.key(0), _gcn_params(widths), ctx)
  np.testing.assert_array_equal(
    again['layers']['1']['linear']['kernel'], params['layers']['1']['linear']['kernel']
  )


def test_model_variances_read_widths_from_kernels():
  cfg = {'name': 'csbm'}
  g = data.graph(cfg)
  # GIN-like layers: two kernels per layer, all of a layer's kernels share its variance.
  params = {
    'layers': {
      str(l): {'mlp': {str(i): {'kernel': jnp.zeros(shape)} for i, shape in enumerate(shapes)}}
      for l, shapes in enumerate([((128, 32), (32, 32)), ((32, 32), (32, 4))])
    }
  }
  ctx = _ctx(cfg, 2, 'layers/{l}/mlp/(0|1)/kernel')
  with jax.enable_x64(True):
    got = ii.virgo.model_variances(params, ctx, 'harmonic')
    _, _, want = ii.virgo.variances(
      g['senders'], g['receivers'], g['features'], num_layers=2, hidden=32, num_classes=4
    )
  np.testing.assert_allclose(got, want, rtol=1e-12)
  out = ii.get_scheme('virgo')(jax.random.key(1), params, ctx)
  for l in range(2):
    for i in range(2):
      w = np.asarray(out['layers'][str(l)]['mlp'][str(i)]['kernel'])
      assert 0.9 * np.sqrt(3 * got[l]) < np.abs(w).max() <= np.sqrt(3 * got[l])


def test_errors():
  with pytest.raises(
    ValueError,
    match=r"mode='fwd'; valid: forward, backward, harmonic, "
    r'arithmetic',
  ):
    ii.get_scheme('virgo', mode='fwd')
  params = _gcn_params((8, 4, 3))
  hints = {'gnn_layers': ['layers/0/linear/kernel', 'layers/1/linear/kernel']}
  with pytest.raises(
    ConfigError,
    match=r"scheme 'virgo' needs 'graph', which this model and "
    r'dataset do not give',
  ):
    ii.get_scheme('virgo')(
      jax.random.key(0), params, ii.InitContext(hints=hints, dataset={'num_classes': 3})
    )
  ctx = _ctx({'name': 'cora'}, 2)
  with pytest.raises(ConfigError, match=r"needs 'gnn_layers'"):
    ii.get_scheme('virgo')(jax.random.key(0), params, ii.InitContext(dataset=ctx.dataset))
  bad = ii.InitContext(
    hints={'gnn_layers': ['layers/0/linear/kernel', 'conv/kernel']}, dataset=ctx.dataset
  )
  with pytest.raises(ValueError, match=r"gnn_layers\[1\] = 'conv/kernel' matches no kernel"):
    ii.get_scheme('virgo')(jax.random.key(0), params, bad)
  with pytest.raises(ValueError, match=r"mean='geometric'; valid: harmonic, arithmetic"):
    ii.virgo.variances(
      [0], [1], np.ones((2, 3)), num_layers=2, hidden=4, num_classes=2, mean='geometric'
    )
  with pytest.raises(ValueError, match='num_classes must be >= 2'):
    ii.virgo.variances([0], [1], np.ones((2, 3)), num_layers=2, hidden=4, num_classes=1)


def test_kaiming_fan_out_baseline():
  w = np.asarray(ii.get_initializer('kaiming_fan_out')(jax.random.key(0), (256, 64)))
  bound = np.sqrt(6 / 64)
  assert np.abs(w).max() <= bound and abs(w.var() / (2 / 64) - 1) < 0.05
  assert ii.describe('kaiming_fan_out').startswith('Kaiming fan_out')


@jax.jit
def _gcn_ratios(g, ws):
  """Per-layer Var(Z_l)/Var(Z_{l-1}) forward and Var(dL/dZ_{l-1})/Var(dL/dZ_l) backward of a
  plain ReLU GCN Z_l = Â H_{l-1} W_l at init (mean softmax cross-entropy on the train
  nodes), for l = 2..L."""
  n = g['features'].shape[0]
  prop = lambda h: ii.virgo.propagate(h, g['senders'], g['receivers'], n)

  def forward(shifts):  # dL/dshift_l = dL/dZ_l
    zs, h = [], g['features']
    for w, shift in zip(ws, shifts):
      zs.append(prop(h @ w) + shift)
      h = jax.nn.relu(zs[-1])
    return zs

  def loss(shifts):
    logp = jax.nn.log_softmax(forward(shifts)[-1])
    ce = -jnp.take_along_axis(logp, g['labels'][:, None], 1)[:, 0]
    return jnp.sum(ce * g['train_mask']) / g['train_mask'].sum()

  shifts = [jnp.zeros((n, w.shape[1])) for w in ws]
  vz = jnp.stack([jnp.var(z) for z in forward(shifts)])
  vg = jnp.stack([jnp.var(d) for d in jax.grad(loss)(shifts)])
  return vz[1:] / vz[:-1], vg[:-1] / vg[1:]


def test_heavy_tailed_graph_variance_ratios():
  """Issue 11's check on the heavy-tailed Chung-Lu graph (N = 3000, 500 sparse features),
  6-layer ReLU GCN, hidden 64, 5 seeds (the same uniform draws rescaled for every init):
  mean |log ratio| over the hidden layers (l = 2..L-1). Virgo is far closer to 1 than Xavier;
  its graph factors a_{l-1}/a_l and b_{L-l}/b_{L-l+1} are within 1-2% of 1 here, so it is
  only marginally closer than Kaiming fan_in, and level with Kaiming fan_out backward."""
  cfg = {'name': 'chung_lu'}
  g = data.graph(cfg)
  ctx = _ctx(cfg, 6)
  widths = [g['features'].shape[1]] + [64] * 5 + [int(g['labels'].max()) + 1]
  virgo = lambda mode: ii.virgo.model_variances(_gcn_params(widths, bias=False), ctx, mode)
  inits = {
    'xavier': [2 / (a + b) for a, b in zip(widths[:-1], widths[1:])],
    'kaiming_fan_in': [2 / a for a in widths[:-1]],
    'kaiming_fan_out': [2 / b for b in widths[1:]],
    'virgo_forward': virgo('forward'),
    'virgo_backward': virgo('backward'),
  }
  factors = np.asarray(inits['virgo_forward'][1:]) * 64 / 2
  assert np.all((factors >= 1) & (factors < 1.05)), factors
  graph = {k: jnp.asarray(v) for k, v in g.items()}
  dev = {}
  for name, variances in inits.items():
    ratios = []
    for seed in range(5):
      keys = jax.random.split(jax.random.key(seed), len(variances))
      ws = [
        jax.random.uniform(k, (fi, fo), minval=-1.0) * np.sqrt(3 * v)
        for k, fi, fo, v in zip(keys, widths[:-1], widths[1:], variances)
      ]
      ratios.append(_gcn_ratios(graph, ws))
    fw, bw = (np.mean([r[i] for r in ratios], 0)[:-1] for i in (0, 1))
    dev[name] = (np.abs(np.log(fw)).mean(), np.abs(np.log(bw)).mean())
  fwd, bwd = dev['virgo_forward'][0], dev['virgo_backward'][1]
  assert fwd < dev['xavier'][0] / 3 and fwd < dev['kaiming_fan_in'][0], dev
  assert bwd < dev['xavier'][1] / 2 and bwd < dev['kaiming_fan_in'][1], dev
  assert abs(bwd - dev['kaiming_fan_out'][1]) < 0.02, dev
