"""`measure`: signal propagation through a model's stages at init; `compare`: across schemes.

A model exposes `model.stages(train) -> [(name, fn), ...]` whose composition is
`model(x, train=train)`; h_0 = x and h_l = fn_l(h_{l-1}) is the output of stage l, shape
(B, ...), batch first, floating point (only h_0 may be integer, e.g. tokens).

Backward signal. The loss is the random linear probe L = Σ_b Σ_i p_bi·y_bi, p ~ N(0, 1) of
the output's shape, so ∂L/∂y = p has unit variance and ∂L/∂h_l = J_{l→L}ᵀ p is a
unit-variance signal pushed back through the transposed stage Jacobians: the backward
variance map of Schoenholz et al. 2017 (§3). Unlike a cross-entropy, it does not depend on
the scale of the logits (a zero or tiny last layer would otherwise rescale every gradient).
The gradients come from one `jax.vjp` of the forward pass with zero perturbations ε_l added
to each stage output (∂L/∂ε_l = ∂L/∂h_l); the model is merged (as a copy) inside the
differentiated function, so train-mode state updates (batch stats, dropout RNG) stay inside it
and never reach the caller's model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

from initlab import rundir
from initlab.diagnostics import jacobian as jac_lib
from initlab.diagnostics import stats
from initlab.init.schemes import InitContext, SchemeResult

_ARRAYS = ('q', 'var', 'c', 'grad_q', 'grad_var')


@dataclasses.dataclass
class Diagnostics:
  """Signal-propagation diagnostics of one initialized model on one batch.

  Per-stage arrays have shape (L,), index l = output of stage l (names[l]):
    q, var, c: forward second moment, per-unit batch variance, mean pair correlation
      (`initlab.diagnostics.stats`; Poole et al. 2016).
    grad_q, grad_var: the same two moments of ∂L/∂h_l for the probe loss (module docstring).
  input_q, input_c: q and c of the input batch (NaN for integer inputs).
  jacobian_sv: (E, k) singular values, descending, of the per-example Jacobian of the
    flattened output w.r.t. the flattened output of `jacobian_from` ('input' = the batch);
    exact (k = min(m, n)) when `jacobian_exact`, else a sketch (`initlab.diagnostics.jacobian`).
  jacobian_shape: (m, n) = (output size, input size) per example.
  train: the mode of the forward/backward statistics (True: BatchNorm normalizes with the
    batch's statistics, as at a training step; False: with its running averages); None if
    unknown (files written before it was recorded). The Jacobian is always eval mode.

  `to_dict`/`from_dict` own the keys of init_diagnostics.json (`initlab.rundir`): a run's
  trainer writes `to_dict()`, the report reads it back with `from_dict`.
  """

  names: tuple[str, ...]
  q: np.ndarray
  var: np.ndarray
  c: np.ndarray
  grad_q: np.ndarray
  grad_var: np.ndarray
  input_q: float
  input_c: float
  jacobian_sv: np.ndarray
  jacobian_exact: bool
  jacobian_from: str
  jacobian_shape: tuple[int, int]
  train: bool | None = None

  @property
  def depth(self) -> int:
    return len(self.names)

  def jacobian_summary(self) -> dict[str, float]:
    return jac_lib.summary(self.jacobian_sv)

  def summary(self) -> dict[str, Any]:
    """Scalars for a table: depth profile end points, log2 slopes per stage, spectrum."""
    return dict(
      depth=self.depth,
      q_first=float(self.q[0]),
      q_last=float(self.q[-1]),
      q_ratio=_ratio(self.q[-1], self.q[0]),
      q_log2_slope=stats.log2_slope(self.q),
      grad_q_first=float(self.grad_q[0]),
      grad_q_last=float(self.grad_q[-1]),
      grad_log2_slope=stats.log2_slope(self.grad_q),
      c_first=float(self.c[0]),
      c_last=float(self.c[-1]),
      **self.jacobian_summary(),
      jacobian_exact=self.jacobian_exact,
    )

  def to_dict(self) -> dict[str, Any]:
    """Plain lists/floats/str, non-finite floats as "nan"/"inf" (`initlab.rundir.encode`)."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    out['summary'] = self.summary()
    return rundir.encode(_plain(out))

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> 'Diagnostics':
    """Inverse of `to_dict` (also reads None as NaN). KeyError names a missing key."""
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in d and f.name != 'train']
    if missing:
      raise KeyError(f'Diagnostics keys {missing} missing (have {sorted(d)})')
    d = rundir.decode(dict(d))
    arr = lambda v: np.array(v, dtype=np.float64)  # None → nan
    return cls(
      names=tuple(d['names']),
      **{k: arr(d[k]) for k in _ARRAYS},
      input_q=float(arr(d['input_q'])),
      input_c=float(arr(d['input_c'])),
      jacobian_sv=arr(d['jacobian_sv']),
      jacobian_exact=bool(d['jacobian_exact']),
      jacobian_from=d['jacobian_from'],
      jacobian_shape=tuple(d['jacobian_shape']),
      train=d.get('train'),
    )


def _ratio(a, b) -> float:
  with np.errstate(divide='ignore', invalid='ignore'):
    return float(np.float64(a) / np.float64(b))


def _plain(x):
  """numpy arrays/scalars and tuples as python lists/scalars."""
  if isinstance(x, dict):
    return {k: _plain(v) for k, v in x.items()}
  if isinstance(x, (np.ndarray, list, tuple)):
    return [_plain(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
  return x.item() if isinstance(x, np.generic) else x


def _stages(model, train: bool):
  fn = getattr(model, 'stages', None)
  if fn is None:
    raise TypeError(
      f'{type(model).__name__} has no `stages(train)` method; initlab.diagnostics '
      "needs the model's per-layer decomposition (see initlab.models)"
    )
  stages = fn(train=train)
  if not stages:
    raise ValueError(f'{type(model).__name__}.stages() returned no stages')
  return stages


def _forward(graphdef, state, train, x, eps=None):
  """Stage outputs [h_1, ..., h_L], with eps[l] added to h_l if given.

  The model is merged with fresh Variables (copy=True), so that stages which update state
  (batch stats in train mode) may do so inside whatever JAX transform calls this.
  """
  model = nnx.merge(graphdef, state, copy=True)
  hs, h = [], x
  for i, (_, fn) in enumerate(model.stages(train=train)):
    h = fn(h)
    if eps is not None:
      h = jax.tree.map(jnp.add, h, eps[i])
    hs.append(h)
  return hs


def _moments(h) -> tuple[jax.Array, jax.Array]:
  m = stats.as_matrix(h)
  return stats.second_moment(m), stats.unit_variance(m)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _propagate(graphdef, state, train, x, key):
  """Stacked (L,) forward and backward statistics (jitted once per model graph)."""
  shapes = jax.eval_shape(lambda: _forward(graphdef, state, train, x))
  eps = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def fwd(e):
    hs = _forward(graphdef, state, train, x, e)
    return hs[-1], hs

  out, vjp, hs = jax.vjp(fwd, eps, has_aux=True)
  leaves, treedef = jax.tree.flatten(out)
  keys = jax.random.split(key, len(leaves))
  probe = treedef.unflatten(
    [jax.random.normal(k, l.shape, jnp.float32).astype(l.dtype) for k, l in zip(keys, leaves)]
  )
  grads = vjp(probe)[0]
  fw = [stats.layer_stats(h) for h in hs]
  bw = [_moments(g) for g in grads]
  inp = stats.layer_stats(x)
  return dict(
    q=jnp.stack([s['q'] for s in fw]),
    var=jnp.stack([s['var'] for s in fw]),
    c=jnp.stack([s['c'] for s in fw]),
    grad_q=jnp.stack([g[0] for g in bw]),
    grad_var=jnp.stack([g[1] for g in bw]),
    input_q=inp['q'],
    input_c=inp['c'],
  )


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _jacobian_sv(graphdef, state, start, max_dim, xs, key):
  """(E, k) singular values of the per-example Jacobian h_start → h_L, in eval mode."""
  h = _forward(graphdef, state, False, xs)[start - 1] if start else xs

  def per_example(h_b, k):
    flat, unravel = ravel_pytree(h_b)

    def f(v):
      model = nnx.merge(graphdef, state, copy=True)
      y = jax.tree.map(lambda a: a[None], unravel(v))
      for _, fn in model.stages(train=False)[start:]:
        y = fn(y)
      return stats.as_matrix(y)[0]

    return jac_lib.singular_values(f, flat, k, max_dim)

  return jax.vmap(per_example)(h, jax.random.split(key, jax.tree.leaves(h)[0].shape[0]))


def _size(tree) -> int:
  return sum(math.prod(l.shape[1:]) for l in jax.tree.leaves(tree))


def _is_float(tree) -> bool:
  return all(jnp.issubdtype(l.dtype, jnp.inexact) for l in jax.tree.leaves(tree))


def measure(
  model: nnx.Module,
  batch,
  *,
  key: jax.Array,
  train: bool = True,
  num_jacobian_examples: int = 4,
  max_jacobian_dim: int = 256,
) -> Diagnostics:
  """Forward q/var/c, backward gradient moments and Jacobian spectrum of `model` on `batch`.

  Args:
    model: an NNX module with `stages(train)` (module docstring); its current params.
    batch: (B, ...) input array, B ≥ 2 for c-values.
    key: draws the backward probe and the Jacobian sketch.
    train: passed to `stages` for the forward/backward statistics. Default True: BatchNorm
      normalizes with the batch's own statistics, which is what the first training step
      computes and differentiates. In eval mode (False) it uses the running averages, which
      at init are mean 0 / variance 1, so BatchNorm is ≈ the identity and the statistics are
      those of the network without normalization (He on ResNet-20: q last/first ≈ 181 in eval
      vs ≈ 9.1 in train mode) — not the network the first step differentiates. Models without
      BatchNorm or dropout give the same numbers in both modes. The Jacobian is always that
      of the inference-mode map of one example (train=False), since in train mode one
      example's output depends on the rest of the batch.
    num_jacobian_examples: E, the first E examples of the batch get a Jacobian; 0 skips the
      Jacobian (its summary is then NaN).
    max_jacobian_dim: exact Jacobians up to min(m, n) = this, sketched beyond it.

  If the input is integer (tokens), the Jacobian starts at the first floating-point stage
  output (e.g. the embeddings) and `jacobian_from` names that stage.
  """
  names = tuple(n for n, _ in _stages(model, train))
  graphdef, state = nnx.split(model)
  batch = jnp.asarray(batch)
  probe_key, jac_key = jax.random.split(key)
  out = jax.device_get(_propagate(graphdef, state, train, batch, probe_key))

  shapes = jax.eval_shape(lambda: _forward(graphdef, state, False, batch[:1]))
  start = (
    0 if _is_float(batch) else next((i + 1 for i, s in enumerate(shapes) if _is_float(s)), None)
  )
  if start is None or start == len(shapes):
    raise ValueError(
      f'no floating-point stage output of {type(model).__name__} to take a '
      f'Jacobian from (stages {names})'
    )
  n = _size(batch) if start == 0 else _size(shapes[start - 1])
  m = _size(shapes[-1])
  exact = jac_lib.is_exact(m, n, max_jacobian_dim)
  if num_jacobian_examples > 0:
    xs = batch[:num_jacobian_examples]
    sv = jax.device_get(_jacobian_sv(graphdef, state, start, max_jacobian_dim, xs, jac_key))
  else:
    sv = np.zeros((0, min(m, n) if exact else max_jacobian_dim))
  return Diagnostics(
    names=names,
    **{k: np.asarray(out[k], np.float64) for k in _ARRAYS},
    input_q=float(out['input_q']),
    input_c=float(out['input_c']),
    jacobian_sv=np.asarray(sv, np.float64),
    jacobian_exact=exact,
    jacobian_from='input' if start == 0 else names[start - 1],
    jacobian_shape=(m, n),
    train=bool(train),
  )


def default_context(model: nnx.Module, batch, model_config=None) -> InitContext:
  """The `InitContext` `compare` gives schemes: the model's `init_hints()`, `model_config`,
  the batch, and `apply_fn(params, x) = model(x, train=False)` with those params."""
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)
  hints = model.init_hints() if hasattr(model, 'init_hints') else {}
  apply_fn = lambda params, x: nnx.merge(graphdef, params, rest)(x, train=False)
  return InitContext(hints=hints, model_config=model_config, batch=batch, apply_fn=apply_fn)


def compare(
  model_fn: Callable[[nnx.Rngs], nnx.Module],
  schemes: Mapping[str, Callable],
  batch,
  key: jax.Array,
  *,
  ctx: InitContext | None = None,
  model_config=None,
  log: Callable[[str], None] | None = None,
  **measure_kwargs,
) -> dict[str, Diagnostics]:
  """Builds `model_fn(nnx.Rngs(k))` once, then for each scheme applies it to the model's
  params (`nnx.state(model, nnx.Param)`, always from the built model's values), writes them
  back with `nnx.update` and `measure`s. All schemes share one init key and one measure key,
  so differences come from the schemes alone.

  Args:
    model_fn: builds the model from an `nnx.Rngs`.
    schemes: {name: scheme}, a scheme being `(key, params, ctx) -> params`.
    batch: the input batch for `measure` (and for data-dependent schemes via `ctx`).
    key: splits into the build, init and measure keys.
    ctx: the schemes' `InitContext`; default `default_context(model, batch, model_config)`.
    model_config: the model's config, for the default context.
    log: called with a progress line per scheme.
    **measure_kwargs: passed to `measure` (train, num_jacobian_examples, max_jacobian_dim).

  Returns:
    {name: Diagnostics} in the order of `schemes`.
  """
  build_key, init_key, measure_key = jax.random.split(key, 3)
  model = model_fn(nnx.Rngs(build_key))
  base = jax.tree.map(lambda x: x, nnx.state(model, nnx.Param))  # a copy: update writes in place
  ctx = ctx or default_context(model, batch, model_config)
  results = {}
  for i, (name, scheme) in enumerate(schemes.items()):
    if log:
      log(f'[{i + 1}/{len(schemes)}] {name}: init + measure')
    params = scheme(init_key, base, ctx)
    if isinstance(params, SchemeResult):
      raise ValueError(
        f'init scheme {name!r} changes the architecture (returns a SchemeResult); '
        'compare() measures schemes on one fixed model'
      )
    nnx.update(model, params)
    results[name] = measure(model, batch, key=measure_key, **measure_kwargs)
  return results
