"""Graph neural networks for full-batch node classification: GCN, GraphSAGE (mean), GIN.

    model = GCN(num_features=1433, num_classes=7, depth=2, width=64, activation='relu',
                dropout=0.5, use_bias=True, dtype='float32', param_dtype='float32',
                rngs=nnx.Rngs(0))
    logits = model(graph)                   # (N, num_classes) float32
    logits = model(graph, train=True, rngs=nnx.Rngs(dropout=key))   # with dropout

`graph` is a dict with 'features' (N, F) float, 'senders' and 'receivers' (E,) int: directed
edges j -> i (an undirected graph lists both directions), without self-loops (GCN adds them).
Other keys (labels, masks) are ignored, so a node-classification batch is a valid input.

`depth` = L message-passing layers: h_0 = X, Z_l = conv_l(dropout(h_{l-1})), h_l = act(Z_l)
for l < L, logits = Z_L (layer L maps to num_classes). Dropout (rate `dropout`, inverted)
acts on every layer's input in training, as in Kipf & Welling's GCN. Convolutions, with
messages summed by `jax.ops.segment_sum` over receivers:

  gcn   Z = Â H W + b,  Â = D̃^{-1/2}(A + I)D̃^{-1/2},  D̃_ii = 1 + deg_i
        (Kipf & Welling 2017, arXiv 1609.02907, eq. 2; 'layers/l/kernel', 'layers/l/bias').
  sage  Z_i = W_r h_i + W_n mean_{j->i} h_j + b  (Hamilton et al. 2017, arXiv 1706.02216,
        mean aggregator in the form of PyG's SAGEConv; an isolated node's mean is 0;
        kernels 'layers/l/root/kernel' (no bias) and 'layers/l/neigh/kernel').
  gin   Z_i = MLP(h_i + sum_{j->i} h_j), MLP = Linear(in, width) -> act -> Linear(width, out)
        (GIN-0, Xu et al. 2019, arXiv 1810.00826, eq. 4.1; 'layers/l/mlp/{0,1}/kernel').

Kernels are (in, out) with logical names alternating ('embed', 'mlp'), ('mlp', 'embed'), ...;
the last layer's output axis is 'classes'. `init_hints()['gnn_layers']` lists, in layer
order, one regex per layer full-matching that layer's kernel path(s) (for graph-aware
schemes such as Virgo, arXiv 2312.02622).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from initlab.models import layers
from initlab.models.registry import register_model

Graph = Mapping[str, Any]


def _default_config(name: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      name=name,
      num_features=1433,  # F, the node feature size (set by the dataset).
      num_classes=7,  # Set by the dataset.
      depth=2,  # Message-passing layers L >= 1; the last maps to num_classes.
      width=64,  # Hidden size of layers 1..L-1 (and of GIN's MLPs).
      activation='relu',  # One of layers.ACTIVATIONS.
      dropout=0.5,  # Rate on every layer's input in training; 0 = off.
      use_bias=True,
      dtype='float32',
      param_dtype='float32',
    )
  )


def _data_options(config, meta) -> dict[str, Any]:
  """The dataset fixes the feature size (input_shape (F,)) and the class count."""
  return dict(num_features=meta.input_shape[-1], num_classes=meta.num_classes)


def _edges(graph: Graph) -> tuple[jax.Array, jax.Array]:
  return jnp.asarray(graph['senders'], jnp.int32), jnp.asarray(graph['receivers'], jnp.int32)


def neighbor_sum(h: jax.Array, senders: jax.Array, receivers: jax.Array) -> jax.Array:
  """(A h)_i = sum over edges j -> i of h_j; h (N, d) -> (N, d)."""
  return jax.ops.segment_sum(h[senders], receivers, num_segments=h.shape[0])


def in_degree(receivers: jax.Array, num_nodes: int, dtype=jnp.float32) -> jax.Array:
  """deg_i = number of edges j -> i, (N,)."""
  return jax.ops.segment_sum(jnp.ones(receivers.shape, dtype), receivers, num_segments=num_nodes)


def gcn_propagate(h: jax.Array, senders: jax.Array, receivers: jax.Array) -> jax.Array:
  """Â h with Â = D̃^{-1/2}(A + I)D̃^{-1/2}, D̃_ii = 1 + deg_i (self-loops added); (N, d)."""
  inv_sqrt = jax.lax.rsqrt(1 + in_degree(receivers, h.shape[0], h.dtype))[:, None]
  return inv_sqrt * (neighbor_sum(h * inv_sqrt, senders, receivers) + h * inv_sqrt)


class GCNConv(nnx.Linear):
  """Z = Â H W + b (module docstring): a Linear (kernel W (in, out), bias b) whose call
  propagates, so the module holding the kernel outputs the layer's Z (as data-stage schemes
  such as LSUV, which record kernel modules' outputs, expect)."""

  def __init__(self, din, dout, names, *, dtype, param_dtype, rngs, use_bias):
    super().__init__(
      din,
      dout,
      use_bias=use_bias,
      dtype=dtype,
      param_dtype=param_dtype,
      kernel_init=layers.partitioned(layers.default_kernel_init, *names),
      bias_init=layers.partitioned(layers.zeros_init, names[1]),
      rngs=rngs,
    )

  def __call__(self, h, senders, receivers):  # pylint: disable=arguments-differ
    w = self.kernel.value.astype(h.dtype)
    # Â(HW) == (ÂH)W: aggregate on the narrower side.
    if w.shape[1] < w.shape[0]:
      z = gcn_propagate(h @ w, senders, receivers)
    else:
      z = gcn_propagate(h, senders, receivers) @ w
    return z if self.bias is None else z + self.bias.value.astype(z.dtype)


class SAGEConv(nnx.Module):
  """Z_i = W_r h_i + W_n mean_{j->i} h_j + b; `root` (no bias) and `neigh` (with bias)."""

  def __init__(self, din, dout, names, *, use_bias, **kw):
    self.root = layers.dense(din, dout, names, use_bias=False, **kw)
    self.neigh = layers.dense(din, dout, names, use_bias=use_bias, **kw)

  def __call__(self, h, senders, receivers):
    deg = in_degree(receivers, h.shape[0], h.dtype)
    mean = neighbor_sum(h, senders, receivers) / jnp.maximum(deg, 1)[:, None]
    return self.root(h) + self.neigh(mean)


class GINConv(nnx.Module):
  """Z_i = MLP(h_i + sum_{j->i} h_j); `mlp` = [Linear(in, width), Linear(width, out)]."""

  def __init__(self, din, dout, names, *, width, activation_fn, **kw):
    mid = names[1]
    self.activation_fn = activation_fn
    self.mlp = nnx.List(
      [
        layers.dense(din, width, (names[0], mid), **kw),
        layers.dense(width, dout, (mid, names[2]), **kw),
      ]
    )

  def __call__(self, h, senders, receivers):
    h = h + neighbor_sum(h, senders, receivers)
    return self.mlp[1](self.activation_fn(self.mlp[0](h)))


class GNN(nnx.Module):
  """Common body of the zoo's GNNs: graph dict -> (N, num_classes) logits (module docstring)."""

  kind = ''
  layer_kernels = ''  # Regex of one layer's kernel(s) below 'layers/<l>/'.

  def __init__(
    self,
    *,
    num_features,
    num_classes,
    depth,
    width,
    activation,
    dropout,
    use_bias,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
  ):
    if depth < 1 or width < 1 or num_features < 1 or num_classes < 1:
      raise ValueError(
        f'{self.kind}: depth={depth}, width={width}, num_features={num_features} '
        f'and num_classes={num_classes} must all be >= 1'
      )
    if not 0 <= dropout < 1:
      raise ValueError(f'{self.kind}: dropout={dropout} must be in [0, 1)')
    self.activation_fn = layers.activation(activation)
    self.dropout = float(dropout)
    self.dtype = dtype
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, use_bias=use_bias)
    convs, names, din = [], ('embed', 'mlp'), num_features
    for l in range(depth):
      last = l == depth - 1
      dout = num_classes if last else width
      convs.append(self._conv(din, dout, names, last, width=width, **kw))
      names, din = names[::-1], dout
    self.layers = nnx.List(convs)

  def _conv(self, din, dout, names, last, *, width, **kw):
    raise NotImplementedError

  def _drop(self, h, train: bool, rngs: nnx.Rngs | None):
    if not train or self.dropout == 0:
      return h
    if rngs is None:
      raise ValueError(
        f'{self.kind}: train=True with dropout={self.dropout} needs rngs=nnx.Rngs(dropout=key)'
      )
    keep = jax.random.bernoulli(rngs.dropout(), 1 - self.dropout, h.shape)
    return jnp.where(keep, h / (1 - self.dropout), 0).astype(h.dtype)

  def forward(
    self,
    graph: Graph,
    *,
    train: bool = False,
    rngs: nnx.Rngs | None = None,
    shifts: Sequence[jax.Array] | None = None,
  ) -> tuple[jax.Array, list[jax.Array]]:
    """(logits (N, C) float32, [Z_1, ..., Z_L]): the pre-activations of every layer.

    `shifts`: optional L arrays added to Z_1..Z_L; differentiating at zero shifts gives
    dloss/dZ_l (`initlab.diagnostics.gnn`).
    """
    senders, receivers = _edges(graph)
    h = jnp.asarray(graph['features'], self.dtype)
    zs = []
    for l, conv in enumerate(self.layers):
      if l:
        h = self.activation_fn(zs[-1])
      z = conv(self._drop(h, train, rngs), senders, receivers)
      zs.append(z if shifts is None else z + shifts[l].astype(z.dtype))
    return zs[-1].astype(jnp.float32), zs

  def __call__(self, graph: Graph, train: bool = False, rngs: nnx.Rngs | None = None) -> jax.Array:
    return self.forward(graph, train=train, rngs=rngs)[0]

  def stages(self, train: bool = False, rngs: nnx.Rngs | None = None):
    """[('layers/l', graph -> graph with 'features' = h_l)] for l < L, then ('layers/L-1',
    graph -> logits): composing them equals model(graph, train)."""

    def stage(l):
      def fn(graph):
        senders, receivers = _edges(graph)
        h = jnp.asarray(graph['features'], self.dtype)
        z = self.layers[l](self._drop(h, train, rngs), senders, receivers)
        if l == len(self.layers) - 1:
          return z.astype(jnp.float32)
        return {**graph, 'features': self.activation_fn(z)}

      return fn

    return [(f'layers/{l}', stage(l)) for l in range(len(self.layers))]

  def init_hints(self) -> dict:
    depth = len(self.layers)
    per_layer = [f'layers/{l}/{self.layer_kernels}' for l in range(depth)]
    return dict(
      depth=depth,
      classifier=per_layer[-1],
      residual_final=None,
      residual_branch=None,
      num_branches=0,
      branch_layers=0,
      gnn_layers=per_layer,
      gnn_kind=self.kind,
    )


def _register(name: str, cls):
  return register_model(
    name,
    task='node_classification',
    default_config=lambda: _default_config(name),
    data_options=_data_options,
  )(cls)


class GCN(GNN):
  """Graph convolutional network (Kipf & Welling 2017): Z = Â H W + b per layer."""

  kind, layer_kernels = 'gcn', 'kernel'

  def _conv(self, din, dout, names, last, *, width, **kw):
    return GCNConv(din, dout, (names[0], 'classes' if last else names[1]), **kw)


class GraphSAGE(GNN):
  """GraphSAGE with the mean aggregator (Hamilton et al. 2017)."""

  kind, layer_kernels = 'sage', '(root|neigh)/kernel'

  def _conv(self, din, dout, names, last, *, width, **kw):
    return SAGEConv(din, dout, (names[0], 'classes' if last else names[1]), **kw)


class GIN(GNN):
  """Graph isomorphism network, GIN-0 with 2-layer MLPs (Xu et al. 2019)."""

  kind, layer_kernels = 'gin', 'mlp/(0|1)/kernel'

  def _conv(self, din, dout, names, last, *, width, **kw):
    # MLP kernels (in, mid) and (mid, out): two distinct names per kernel.
    out = 'classes' if last else names[0]
    return GINConv(
      din, dout, (names[0], names[1], out), width=width, activation_fn=self.activation_fn, **kw
    )


GCN = _register('gcn', GCN)
GraphSAGE = _register('sage', GraphSAGE)
GIN = _register('gin', GIN)
NAMES = ('gcn', 'sage', 'gin')  # The graph models: their input is a graph dataset's example.
