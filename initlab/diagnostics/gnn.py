"""GNN signal propagation at init: per-layer variance ratios, forward and backward.

For a zoo GNN (`initlab.models.gnn`: `model.forward(graph, shifts=...)` returns the
pre-activations Z_1..Z_L, Z_L = logits) on a labelled graph, with Z_0 = X the node features:

  forward[l]  = Var(Z_l) / Var(Z_{l-1})                       l = 1..L
  backward[l] = Var(∂ℓ/∂Z_{l-1}) / Var(∂ℓ/∂Z_l)               l = 1..L

Var is the variance of all N·d entries of the (N, d) matrix; ℓ is the mean softmax
cross-entropy over the nodes of `mask` (default: every node). These are the ratios that Virgo
(Li, Song, Song, Wipf, ICML 2023, arXiv 2312.02622, Sec. 3) keeps near 1 in hidden layers;
l = 1 involves the raw features and l = L the softmax, so "hidden" ratios are l = 2..L-1.
Gradients come from one `jax.vjp` with zero shifts added to every Z_l, so ∂ℓ/∂shift_l =
∂ℓ/∂Z_l. The model runs in inference mode (no dropout).

`variance_ratios` averages over seeds (each seed: a fresh build and init); `measure` gives a
run's `init_diagnostics.json` as an `initlab.diagnostics.Diagnostics` (per layer: q, var,
grad_q, grad_var of Z_l, with var over all entries as above); `compare` is the
`python -m initlab.diagnostics --model=gcn --graph=cora` path (one graph dataset, every scheme
on one build, loss over its train nodes), `ratios_markdown` its table of ratios.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from initlab.diagnostics import stats
from initlab.diagnostics.propagation import Diagnostics
from initlab.init.schemes import InitContext, SchemeResult

GRAPH_KEYS = ('features', 'senders', 'receivers')
C_NODES = 512  # c (mean cosine between node rows) uses the first C_NODES nodes (cost N^2).


def _arrays(graph: Mapping[str, Any], mask) -> tuple[dict, jax.Array, jax.Array]:
  g = {k: jnp.asarray(graph[k]) for k in GRAPH_KEYS}
  labels = jnp.asarray(graph['labels'], jnp.int32)
  mask = jnp.ones(labels.shape, bool) if mask is None else jnp.asarray(mask, bool)
  return g, labels, mask


@functools.partial(jax.jit, static_argnums=0)
def _propagate(graphdef, state, graph, labels, mask):
  """Stacked (L+1,) q and Var of Z_0..Z_L and of their gradients."""

  def loss(x, shifts):
    model = nnx.merge(graphdef, state)
    _, zs = model.forward({**graph, 'features': x}, shifts=shifts)
    logits = zs[-1].astype(jnp.promote_types(zs[-1].dtype, jnp.float32))  # float64 if on
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    w = mask.astype(ce.dtype)
    return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1), zs

  x = jnp.asarray(graph['features'])
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  model = nnx.merge(graphdef, state)
  shapes = jax.eval_shape(lambda: model.forward(graph)[1])
  shifts = [jnp.zeros(s.shape, s.dtype) for s in shapes]
  (_, zs), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, shifts)
  fwd = [x, *zs]
  bwd = [grads[0], *grads[1]]
  wide = lambda h: h.astype(jnp.promote_types(h.dtype, jnp.float32))
  var = lambda hs: jnp.stack([jnp.var(wide(h)) for h in hs])
  q = lambda hs: jnp.stack([jnp.mean(jnp.square(wide(h))) for h in hs])
  return dict(
    q=q(fwd),
    var=var(fwd),
    grad_q=q(bwd),
    grad_var=var(bwd),
    c=jnp.stack([stats.correlation(wide(h[:C_NODES])) for h in fwd]),
  )


def layer_moments(model: nnx.Module, graph: Mapping[str, Any], *, mask=None) -> dict:
  """{'q', 'var', 'grad_q', 'grad_var', 'c'}: float64 (L+1,) arrays over Z_0 = X, Z_1..Z_L
  (module docstring); c: mean cosine between the rows of the first `C_NODES` nodes
  (`stats.correlation`).

  `graph`: 'features', 'senders', 'receivers', 'labels'; `mask`: bool (N,) nodes of the loss.
  """
  graphdef, state = nnx.split(model)
  g, labels, mask = _arrays(graph, mask)
  return {
    k: np.asarray(v, np.float64)
    for k, v in jax.device_get(_propagate(graphdef, state, g, labels, mask)).items()
  }


def ratios(moments: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """{'forward', 'backward'}: (L,) ratios of `layer_moments` (module docstring)."""
  var, grad = np.asarray(moments['var']), np.asarray(moments['grad_var'])
  with np.errstate(divide='ignore', invalid='ignore'):
    return dict(forward=var[1:] / var[:-1], backward=grad[:-1] / grad[1:])


def variance_ratios(
  model_fn: Callable[[nnx.Rngs], nnx.Module],
  scheme: Callable | None,
  graph: Mapping[str, Any],
  *,
  seeds: int = 5,
  key: int | jax.Array = 0,
  ctx: InitContext | None = None,
  mask=None,
) -> dict[str, np.ndarray]:
  """Seed-averaged ratios of `scheme` on `model_fn`'s GNN.

  Seed s builds `model_fn(nnx.Rngs(k_s))` and applies `scheme(k_s', params, ctx)` (None: the
  model's own init), with ctx's hints defaulting to the model's `init_hints()`.

  Returns {'forward', 'backward'}: (seeds, L) per-seed ratios, and their seed means
  'forward_mean', 'backward_mean' (L,).
  """
  key = jax.random.key(key) if isinstance(key, int) else key
  out = {'forward': [], 'backward': []}
  for s in range(seeds):
    build_key, init_key = jax.random.split(jax.random.fold_in(key, s))
    model = model_fn(nnx.Rngs(build_key))
    if scheme is not None:
      context = ctx or InitContext()
      if not context.hints:
        context = dataclasses.replace(context, hints=model.init_hints())
      params = scheme(init_key, nnx.state(model, nnx.Param), context)
      if isinstance(params, SchemeResult):
        raise ValueError(
          'variance_ratios measures one fixed model; the scheme changes the '
          'architecture (returns a SchemeResult)'
        )
      nnx.update(model, params)
    for k, v in ratios(layer_moments(model, graph, mask=mask)).items():
      out[k].append(v)
  out = {k: np.stack(v) for k, v in out.items()}
  return {**out, 'forward_mean': out['forward'].mean(0), 'backward_mean': out['backward'].mean(0)}


def measure(model: nnx.Module, graph: Mapping[str, Any], *, mask=None) -> Diagnostics:
  """`Diagnostics` of a GNN at its current params (a run's init_diagnostics.json): stages
  'layers/l' with q, var, c of Z_{l+1} and grad_q, grad_var of ∂ℓ/∂Z_{l+1}; input_q/c of X.
  No Jacobian spectrum (a graph's Jacobian couples all nodes): its summary is NaN."""
  m = layer_moments(model, graph, mask=mask)
  names = tuple(n for n, _ in model.stages())
  return Diagnostics(
    names=names,
    q=m['q'][1:],
    var=m['var'][1:],
    c=m['c'][1:],
    grad_q=m['grad_q'][1:],
    grad_var=m['grad_var'][1:],
    input_q=float(m['q'][0]),
    input_c=float(m['c'][0]),
    jacobian_sv=np.zeros((0, 1)),
    jacobian_exact=False,
    jacobian_from='input',
    jacobian_shape=(0, 0),
    train=False,
  )


def compare(
  model_config: Mapping[str, Any],
  schemes: Mapping[str, Callable],
  graph_cfg: Mapping[str, Any],
  key: jax.Array,
  *,
  log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Diagnostics], dict[str, dict[str, np.ndarray]]]:
  """Each scheme on one build of a zoo GNN, measured on graph dataset `graph_cfg`.

  `model_config`: a full zoo config (`initlab.models.default_config('gcn')` + options); its
  num_features / num_classes are set from the graph. All schemes share the build and init
  keys (from `key`); graph-aware schemes (Virgo) read the graph from the context, as in a run.
  Returns ({scheme: `measure`}, {scheme: `ratios`}) with the loss over the train nodes.
  """
  from initlab import data  # pylint: disable=g-import-not-at-top
  from initlab import models  # pylint: disable=g-import-not-at-top
  from initlab.init import stages  # pylint: disable=g-import-not-at-top

  meta = data.metadata(graph_cfg)
  if meta.task != 'node_classification':
    raise ValueError(
      f'graph {graph_cfg["name"]!r} is a {meta.task!r} dataset; graph datasets: '
      f'{list(data.graphs.names())}'
    )
  graph = data.graph(graph_cfg)
  config = dict(model_config.to_dict() if hasattr(model_config, 'to_dict') else model_config)
  config.update(num_features=meta.input_shape[-1], num_classes=meta.num_classes)
  build_key, init_key = jax.random.split(key)
  model = models.build(config, rngs=nnx.Rngs(build_key))
  base = jax.tree.map(lambda x: x, nnx.state(model, nnx.Param))  # update writes in place
  ctx = InitContext(hints=model.init_hints(), dataset=stages.dataset_facts(meta))
  diags, out = {}, {}
  for i, (name, scheme) in enumerate(schemes.items()):
    if log:
      log(f'[{i + 1}/{len(schemes)}] {name}: init + measure on {graph_cfg["name"]}')
    params = scheme(init_key, base, ctx)
    if isinstance(params, SchemeResult):
      raise ValueError(f'init scheme {name!r} changes the architecture (returns a SchemeResult)')
    nnx.update(model, params)
    diags[name] = measure(model, graph, mask=graph['train_mask'])
    out[name] = ratios(layer_moments(model, graph, mask=graph['train_mask']))
  return diags, out


def ratios_markdown(results: Mapping[str, Mapping[str, np.ndarray]]) -> str:
  """Per-layer forward / backward ratios (module docstring), one column per scheme."""
  names = list(results)
  depth = max(len(r['forward']) for r in results.values())
  header = ['l'] + [f'fwd {n}' for n in names] + [f'bwd {n}' for n in names]
  row = lambda cells: '| ' + ' | '.join(cells) + ' |'
  cell = lambda n, k, l: f'{results[n][k][l]:.4g}' if l < len(results[n][k]) else '–'
  lines = [
    '### Variance ratios per layer (forward Var(Z_l)/Var(Z_l-1), backward '
    'Var(∂ℓ/∂Z_l-1)/Var(∂ℓ/∂Z_l); Z_0 = the node features)',
    '',
    row(header),
    row(['---'] * len(header)),
  ]
  for l in range(depth):
    lines.append(
      row([str(l + 1)] + [cell(n, k, l) for k in ('forward', 'backward') for n in names])
    )
  return '\n'.join(lines) + '\n'
