"""The GNN zoo (gcn, sage, gin) against dense float64 numpy implementations of its formulas."""

import re
import types

from flax import nnx
import initlab.init as ii
import initlab.models as im
import jax
import numpy as np
import pytest

N, F, C, WIDTH = 7, 5, 3, 4
# Undirected edges (both directions listed); node 6 is isolated, node 1 has degree 3.
_UNDIRECTED = [(0, 1), (1, 2), (1, 3), (3, 4), (4, 5), (2, 5)]


@pytest.fixture(autouse=True)
def x64():
  """float64 throughout: the references are float64."""
  with jax.enable_x64(True):
    yield


def _graph(seed=0):
  rng = np.random.default_rng(seed)
  pairs = _UNDIRECTED + [(j, i) for i, j in _UNDIRECTED]
  order = rng.permutation(len(pairs))
  senders = np.array([pairs[k][0] for k in order], np.int32)
  receivers = np.array([pairs[k][1] for k in order], np.int32)
  return dict(
    features=rng.normal(size=(N, F)),
    senders=senders,
    receivers=receivers,
    labels=rng.integers(0, C, N).astype(np.int32),
  )


def _dense_adjacency(graph):
  a = np.zeros((N, N))
  np.add.at(a, (graph['receivers'], graph['senders']), 1.0)  # a[i, j] = #edges j -> i
  return a


def _build(name, depth, **options):
  config = im.default_config(name)
  config.update(
    {
      **dict(
        num_features=F,
        num_classes=C,
        depth=depth,
        width=WIDTH,
        dropout=0.5,
        dtype='float64',
        param_dtype='float64',
      ),
      **options,
    }
  )
  with nnx.use_eager_sharding(False):
    model = im.build(config, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(1)  # Nonzero biases, so where the bias enters is checked too.
  for _, var in nnx.iter_graph(model):
    if isinstance(var, nnx.Param):
      var.value = jax.numpy.asarray(rng.normal(size=var.value.shape))
  return model


def _params(model, path):
  return {
    p: np.asarray(v)
    for p, v in nnx.state(model, nnx.Param).flat_state()
    for p in ['/'.join(map(str, p))]
    if p.startswith(path)
  }


def _reference(name, model, graph):
  """Z_1..Z_L of the model's formulas with dense float64 matrices."""
  a = _dense_adjacency(graph)
  relu = lambda z: np.maximum(z, 0)
  h, zs = graph['features'], []
  for l in range(len(model.layers)):
    p = _params(model, f'layers/{l}/')
    if name == 'gcn':  # D̃^{-1/2}(A + I)D̃^{-1/2} H W + b
      d = (a + np.eye(N)).sum(1)
      a_hat = (a + np.eye(N)) / np.sqrt(np.outer(d, d))
      z = a_hat @ h @ p[f'layers/{l}/kernel'] + p[f'layers/{l}/bias']
    elif name == 'sage':  # W_r h_i + W_n mean_j h_j + b
      mean = a @ h / np.maximum(a.sum(1), 1)[:, None]
      z = (
        h @ p[f'layers/{l}/root/kernel']
        + mean @ p[f'layers/{l}/neigh/kernel']
        + p[f'layers/{l}/neigh/bias']
      )
    else:  # MLP((I + A) H)
      k = lambda i, w: p[f'layers/{l}/mlp/{i}/{w}']
      x = (np.eye(N) + a) @ h
      z = relu(x @ k(0, 'kernel') + k(0, 'bias')) @ k(1, 'kernel') + k(1, 'bias')
    zs.append(z)
    h = relu(z)
  return zs


@pytest.mark.parametrize('name', ['gcn', 'sage', 'gin'])
def test_forward_equals_dense_float64_reference(name):
  model = _build(name, depth=3)
  graph = _graph()
  logits, zs = model.forward(graph)
  want = _reference(name, model, graph)
  assert [z.shape for z in zs] == [(N, WIDTH), (N, WIDTH), (N, C)]
  for got, ref in zip(zs, want):
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-12, atol=1e-12)
  assert logits.dtype == np.float32 and logits.shape == (N, C)
  # (GCN aggregates on the narrower side: layers 5 -> 4 and 4 -> 3 transform first, 4 -> 4
  # aggregates first; all three are checked above.)


@pytest.mark.parametrize('name', ['gcn', 'sage', 'gin'])
def test_stages_compose_to_the_model_and_ignore_extra_keys(name):
  model = _build(name, depth=3)
  graph = _graph(seed=2)
  x = graph
  for _, fn in model.stages():
    x = fn(x)
  np.testing.assert_allclose(np.asarray(x), np.asarray(model(graph)), rtol=1e-6)
  bare = {k: graph[k] for k in ('features', 'senders', 'receivers')}
  np.testing.assert_array_equal(np.asarray(model(bare)), np.asarray(model(graph)))
  assert [n for n, _ in model.stages()] == ['layers/0', 'layers/1', 'layers/2']


def test_dropout_only_in_training_and_needs_a_key():
  model = _build('gcn', depth=2)
  graph = _graph()
  eval_out = np.asarray(model(graph))
  np.testing.assert_array_equal(np.asarray(model(graph, train=False)), eval_out)
  a = np.asarray(model(graph, train=True, rngs=nnx.Rngs(dropout=1)))
  b = np.asarray(model(graph, train=True, rngs=nnx.Rngs(dropout=1)))
  c = np.asarray(model(graph, train=True, rngs=nnx.Rngs(dropout=2)))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, eval_out) and not np.allclose(a, c)
  with pytest.raises(ValueError, match=r'train=True with dropout=0.5 needs rngs'):
    model(graph, train=True)
  no_drop = _build('gcn', depth=2, dropout=0.0)
  np.testing.assert_array_equal(np.asarray(no_drop(graph, train=True)), np.asarray(no_drop(graph)))


@pytest.mark.parametrize(
  'name,per_layer',
  [
    ('gcn', ['kernel']),
    ('sage', ['neigh/kernel', 'root/kernel']),
    ('gin', ['mlp/0/kernel', 'mlp/1/kernel']),
  ],
)
def test_hints_name_each_layers_kernels_in_order(name, per_layer):
  model = nnx.eval_shape(lambda: _build(name, depth=3))
  hints = model.init_hints()
  leaves = ii.leaves(nnx.state(model, nnx.Param))
  paths = [l.path for l in leaves]
  assert hints['depth'] == 3 and hints['gnn_kind'] == name and len(hints['gnn_layers']) == 3
  for l, regex in enumerate(hints['gnn_layers']):
    assert sorted(p for p in paths if re.fullmatch(regex, p)) == [
      f'layers/{l}/{k}' for k in per_layer
    ]
  assert [p for p in paths if re.fullmatch(hints['classifier'], p)] == [
    f'layers/2/{k}' for k in per_layer
  ]
  for leaf in leaves:  # Logical names as in the zoo; kernels (in, out) with fans in, out.
    assert len(leaf.names) == len(leaf.shape) and set(leaf.names) <= set(im.LOGICAL_AXES)
    assert len(set(leaf.names)) == len(leaf.names), leaf
    spec = ii.infer_spec(leaf.path, leaf.shape, leaf.names)
    if leaf.path.endswith('kernel'):
      assert spec.fans(leaf.shape) == leaf.shape, leaf.path
  last = [l for l in leaves if l.path == f'layers/2/{per_layer[-1]}'][0]
  assert last.names[-1] == 'classes' and last.shape[-1] == C


def test_options_and_dataset_fit_are_checked():
  meta = types.SimpleNamespace(
    name='cora', task='node_classification', input_shape=(1433,), num_classes=7
  )
  im.check_fits(im.default_config('gcn'), meta)
  config = im.default_config('sage')
  config.num_features = 10
  with pytest.raises(ValueError, match=r'config.model.num_features=10 does not fit.*1433'):
    im.check_fits(config, meta)
  image = types.SimpleNamespace(
    name='digits', task='classification', input_shape=(8, 8, 1), num_classes=10
  )
  with pytest.raises(ValueError, match=r"'node_classification' model.*'classification'"):
    im.check_fits(im.default_config('gin'), image)
  for bad, match in [
    (dict(depth=0), 'depth=0'),
    (dict(dropout=1.0), r'dropout=1.0 must be'),
    (dict(activation='nope'), "activation='nope'"),
  ]:
    config = im.default_config('gcn')
    config.update(bad)
    with pytest.raises(ValueError, match=match):
      im.build(config, rngs=nnx.Rngs(0))
