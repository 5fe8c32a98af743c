"""initlab.diagnostics.gnn against a dense float64 numpy forward/backward pass of a GCN."""

from flax import nnx
import initlab.init as ii
import initlab.models as im
import jax
import numpy as np
import pytest

from initlab.diagnostics import gnn

N, F, C, WIDTH, DEPTH = 40, 6, 3, 5, 3


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def _graph(seed=0):
  rng = np.random.default_rng(seed)
  a = np.triu(rng.random((N, N)) < 0.1, 1)
  s, r = np.nonzero(a | a.T)
  return dict(
    features=rng.normal(size=(N, F)),
    senders=s.astype(np.int32),
    receivers=r.astype(np.int32),
    labels=rng.integers(0, C, N).astype(np.int32),
    mask=rng.random(N) < 0.5,
  )


def _gcn(seed=0, **options):
  config = im.default_config('gcn')
  config.update(
    dict(
      num_features=F,
      num_classes=C,
      depth=DEPTH,
      width=WIDTH,
      dtype='float64',
      param_dtype='float64',
      **options,
    )
  )
  with nnx.use_eager_sharding(False):
    model = im.build(config, rngs=nnx.Rngs(seed))
  rng = np.random.default_rng(seed + 1)
  for l in range(DEPTH * bool(options.get('use_bias', True))):  # Nonzero biases.
    bias = model.layers[l].bias
    bias.value = jax.numpy.asarray(0.1 * rng.normal(size=bias.value.shape))
  return model


def _reference(model, graph):
  """Var and mean square of Z_0 = X, Z_1..Z_L and of dloss/dZ_l, loss = mean CE over mask."""
  a = np.zeros((N, N))
  a[graph['receivers'], graph['senders']] = 1
  d = a.sum(1) + 1
  a_hat = (a + np.eye(N)) / np.sqrt(np.outer(d, d))
  ws = [np.asarray(l.kernel.value) for l in model.layers]
  bs = [np.asarray(l.bias.value) for l in model.layers]
  zs = [graph['features']]
  for l, (w, b) in enumerate(zip(ws, bs)):
    h = zs[-1] if l == 0 else np.maximum(zs[-1], 0)
    zs.append(a_hat @ h @ w + b)
  logits, m = zs[-1], graph['mask']
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  g = (p - np.eye(C)[graph['labels']]) * m[:, None] / m.sum()
  grads = [g]
  for l in range(DEPTH, 0, -1):  # dloss/dZ_{l-1} = relu'(Z_{l-1}) * Â^T G_l W_l^T
    back = a_hat.T @ grads[0] @ ws[l - 1].T
    grads.insert(0, back if l == 1 else back * (zs[l - 1] > 0))
  return dict(
    var=[z.var() for z in zs],
    q=[(z**2).mean() for z in zs],
    grad_var=[g.var() for g in grads],
    grad_q=[(g**2).mean() for g in grads],
  )


def test_layer_moments_equal_a_dense_float64_backprop():
  model, graph = _gcn(), _graph()
  got = gnn.layer_moments(model, graph, mask=graph['mask'])
  want = _reference(model, graph)
  for k in ('var', 'q', 'grad_var', 'grad_q'):
    assert got[k].shape == (DEPTH + 1,)
    np.testing.assert_allclose(got[k], want[k], rtol=1e-10, err_msg=k)
  r = gnn.ratios(got)
  np.testing.assert_allclose(r['forward'], np.divide(want['var'][1:], want['var'][:-1]))
  np.testing.assert_allclose(r['backward'], np.divide(want['grad_var'][:-1], want['grad_var'][1:]))


def test_rescaling_two_kernels_moves_the_ratios_between_them():
  """ReLU is positively homogeneous: without biases, kernel 2 times s and kernel 3 over s leave
  the logits (so dloss/dZ_3) as they were and scale Z_2 by s and dloss/dZ_2 by 1/s, so the
  forward and backward ratios of layers 2 and 3 change by s^2 and 1/s^2, the rest not at all."""
  graph = _graph(seed=3)
  model = _gcn(use_bias=False)
  base = gnn.ratios(gnn.layer_moments(model, graph))
  for l, s in ((1, 3.0), (2, 1 / 3.0)):
    kernel = model.layers[l].kernel
    kernel.value = kernel.value * s
  scaled = gnn.ratios(gnn.layer_moments(model, graph))
  np.testing.assert_allclose(scaled['forward'] / base['forward'], [1, 9, 1 / 9], rtol=1e-9)
  np.testing.assert_allclose(scaled['backward'] / base['backward'], [1, 9, 1 / 9], rtol=1e-9)


def test_variance_ratios_average_fresh_inits_over_seeds():
  graph = _graph(seed=4)
  config = im.default_config('gcn')
  config.update(
    dict(
      num_features=F,
      num_classes=C,
      depth=DEPTH,
      width=WIDTH,
      dtype='float64',
      param_dtype='float64',
    )
  )
  fn = lambda rngs: im.build(config, rngs=rngs)
  with nnx.use_eager_sharding(False):
    out = gnn.variance_ratios(fn, ii.get_scheme('he_normal'), graph, seeds=3, key=7)
    again = gnn.variance_ratios(fn, ii.get_scheme('he_normal'), graph, seeds=3, key=7)
    small = gnn.variance_ratios(fn, ii.get_scheme('lecun_normal'), graph, seeds=3, key=7)
  assert out['forward'].shape == out['backward'].shape == (3, DEPTH)
  assert len({tuple(r) for r in out['forward']}) == 3  # three different inits
  np.testing.assert_array_equal(out['forward'], again['forward'])
  np.testing.assert_allclose(out['forward_mean'], out['forward'].mean(0))
  np.testing.assert_allclose(out['backward_mean'], out['backward'].mean(0))
  # He draws kernels with twice LeCun's variance from the same normal samples: hidden-layer
  # forward ratios (Var(Z_l)/Var(Z_l-1), l >= 2) are exactly twice as large, seed by seed.
  np.testing.assert_allclose(out['forward'][:, 1:] / small['forward'][:, 1:], 2, rtol=1e-9)


def test_measure_round_trips_through_init_diagnostics_json():
  """A run's init_diagnostics.json of a GNN (no Jacobian: [] in JSON) reads back for the
  report, its per-layer var being layer_moments' Z_1..Z_L."""
  from initlab.diagnostics import Diagnostics  # pylint: disable=g-import-not-at-top

  model, graph = _gcn(), _graph()
  d = gnn.measure(model, graph, mask=graph['mask'])
  back = Diagnostics.from_dict(d.to_dict())
  assert back.names == ('layers/0', 'layers/1', 'layers/2')
  np.testing.assert_allclose(back.var, _reference(model, graph)['var'][1:], rtol=1e-10)
  assert np.isnan(back.summary()['mean_sq_sv'])
