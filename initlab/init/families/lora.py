"""LoRA-init schemes: the adapters of `config.lora` initialized from the base (and data).

    config.lora.targets = r'.*(query|value)/kernel'; config.lora.rank = 16
    config.init.name = 'pissa'; config.init.pretrained = 'runs/base'

Every scheme is a chain of two parts:
  1. param stage: the base is `ctx.pretrained` when the run has one (`init.pretrained`; the
     `from_pretrained` copy), else the model's own init (or `init_from`'s copy);
  2. data stage: for every target kernel (`ctx.adapters`, matrix view (*batch, n, m)), the
     factors of `initlab.init.lora` and, for the weight-mutating schemes, the residual kernel
     (computed in float32 from the cast factors: step 0 reproduces the base model where the
     scheme promises it). Targets of one matrix shape are decomposed in one jitted, vmapped
     call (stacked layers and same-shaped targets together), each slice with its own key
     (`fold_in(leaf_key(key, path), slice)`).

Names: 'lora_default', 'lora_gaussian', 'lora_orthogonal' (PEFT's `init_lora_weights=True`,
'gaussian', 'orthogonal'; prefixed since 'orthogonal' is the classic kernel init), 'pissa',
'milora', 'olora', 'loftq', 'loldu' (weight only); 'lora_ga', 'lora_ga_peft', 'lora_sb'
(gradients of the run's loss over `num_batches` training batches); 'corda' (covariance of
each target's inputs). The base params are bit-identical afterwards for lora_default,
lora_gaussian, lora_orthogonal and lora_sb; the others write the residual kernel (PiSSA,
MiLoRA, OLoRA, CorDA, LoRA-GA, LoLDU: W − s·BA, output-preserving; LoftQ: Q(W), which is not).
"""

from __future__ import annotations

import collections
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from initlab.errors import ConfigError
from initlab.init import adapters as adapters_lib
from initlab.init import lora
from initlab.init.families import capture
from initlab.init.registry import get_scheme, register_scheme
from initlab.init.rules import leaf_key
from initlab.init.schemes import SchemeResult, chain, with_stage

WEIGHT_ONLY = {
  'lora_default': 'default',
  'lora_gaussian': 'gaussian',
  'lora_orthogonal': 'orthogonal',
  'pissa': 'pissa',
  'milora': 'milora',
  'olora': 'olora',
  'loftq': 'loftq',
}


def _base():
  """Param stage: `from_pretrained` when the run has `init.pretrained`, else nothing."""
  copy = get_scheme('from_pretrained')

  def base(key, params, ctx=None):
    if ctx is None or ctx.pretrained is None:
      return params
    return copy(key, params, ctx)

  return base


def _adapters(ctx, name: str, kind: str) -> adapters_lib.Adapters:
  if ctx is None or ctx.adapters is None:
    raise ConfigError(
      f'config.init: scheme {name!r} initializes low-rank adapters; set config.lora.targets'
    )
  if ctx.adapters.kind != kind:
    raise ValueError(f'scheme {name!r} needs adapters of kind {kind!r}, not {ctx.adapters.kind!r}')
  return ctx.adapters


def _scheme(name: str, factorize: Callable, *, kind='lora', num_batches=0, extras=None):
  """The two-part scheme: `factorize(matrix (n, m), key, extra, target) -> {param name:
  value}` ('residual' = the new matrix view of the kernel, else adapter params), vmapped
  over the slices of each shape group; `extras(params, ctx, adapters) -> {path: (*batch,
  ...)}` gives each target's data (gradient, covariance), or None."""

  def part(key, params, ctx=None):
    adapters = _adapters(ctx, name, kind)
    if num_batches and ctx.data is None:
      raise ConfigError(f'config.init: scheme {name!r} needs training batches (the data stage)')
    extra = extras(params, ctx, adapters) if extras is not None else {}
    base, tree = adapters_lib.split(params)
    groups = collections.defaultdict(list)
    for t in adapters.targets:
      groups[(t.n, t.m, jnp.dtype(t.dtype).name)].append(t)
    for targets in groups.values():
      t0 = targets[0]
      mats, keys, data, sizes = [], [], [], []
      for t in targets:
        matrix = t.to_matrix(adapters_lib.get_at(base, t.path.split('/')))
        count = math.prod(t.batch_shape)
        mats.append(matrix.reshape(count, t.n, t.m))
        keys.append(jax.random.split(leaf_key(key, t.path), count))
        if extra:
          flat = lambda x, t=t, count=count: x.reshape((count,) + x.shape[len(t.batch_shape) :])
          data.append(jax.tree.map(flat, extra[t.path]))
        sizes.append(count)
      fn = jax.jit(jax.vmap(lambda m, k, x, t0=t0: factorize(m, k, x, t0)))
      out = fn(
        jnp.concatenate(mats),
        jnp.concatenate(keys),
        jax.tree.map(lambda *xs: jnp.concatenate(xs), *data) if data else jnp.zeros(sum(sizes)),
      )
      start = 0
      for t, count in zip(targets, sizes):
        piece = {k: v[start : start + count] for k, v in out.items()}
        start += count
        for k, v in piece.items():
          v = v.reshape(t.batch_shape + v.shape[1:]).astype(t.dtype)
          if k == 'residual':
            base = adapters_lib.set_at(base, t.path.split('/'), t.from_matrix(v))
          else:
            tree = adapters_lib.set_at(tree, t.path.split('/') + [k], v)
    return {**base, adapters_lib.ROOT: tree}

  part = with_stage(part, 'data', num_batches=num_batches, adapter_kind=kind)
  scheme = chain(_base(), part, warn=False)
  scheme.adapter_kind = kind
  return scheme


def _weight_only(method: str, options: dict):
  def factorize(matrix, key, _, t):
    res, a, b = lora.decompose(
      matrix, t.rank, method, alpha=t.alpha, rslora=t.rslora, key=key, dtype=t.dtype, **options
    )
    return {'residual': res, 'lora_a': a, 'lora_b': b}

  return factorize


def _make_weight_only(name: str, method: str):
  def factory(**options):
    unknown = sorted(set(options) - set(lora.OPTIONS[method]))
    if unknown:
      valid = ', '.join(lora.OPTIONS[method]) or 'none'
      raise ConfigError(f'config.init.{name}.{unknown[0]}: unknown option; valid: {valid}')
    return _scheme(name, _weight_only(method, options))

  return factory


for _name, _method in WEIGHT_ONLY.items():
  register_scheme(
    _name,
    description={
      'lora_default': "LoRA adapters, PEFT's default: A ~ U(±1/√in), B = 0 (base unchanged)",
      'lora_gaussian': "LoRA adapters, PEFT 'gaussian': A ~ N(0, 1/r²), B = 0",
      'lora_orthogonal': "LoRA adapters, PEFT 'orthogonal': BA = 0, A, B ≠ 0",
      'pissa': 'PiSSA: adapters = top-r SVD part, residual base (arXiv 2404.02948); niter=',
      'milora': 'MiLoRA: adapters = bottom-r SVD part, residual base (arXiv 2406.09044)',
      'olora': 'OLoRA: adapters from the QR of W, residual base (arXiv 2406.01775)',
      'loftq': 'LoftQ: quantized base Q(W) + SVD of W − Q (arXiv 2310.08659); num_bits=',
    }[_name],
  )(_make_weight_only(_name, _method))


@register_scheme('loldu', description='LoLDU: W = PLDU, train z (= D_r) and σ (arXiv 2410.13618)')
def loldu():
  def factorize(matrix, key, _, t):
    f = lora.loldu_factors(matrix, t.rank, alpha=t.alpha)
    a = f.upper.T.astype(t.dtype).astype(jnp.float32)  # U_rᵀ (n, r)
    b = f.permuted_lower().T.astype(t.dtype).astype(jnp.float32)  # (P L_r)ᵀ (r, m)
    z = f.z.astype(t.dtype).astype(jnp.float32)
    sigma = f.sigma.astype(t.dtype).astype(jnp.float32)
    residual = matrix.astype(jnp.float32) - sigma * ((a * z) @ b)
    return {'residual': residual, 'lora_a': a, 'lora_b': b, 'lora_z': z, 'lora_sigma': sigma}

  return _scheme('loldu', factorize, kind='loldu')


def _gradients(num_batches: int, name: str):
  """{target path: mean gradient of the run's loss w.r.t. the kernel} over the batches."""

  def extras(params, ctx, adapters):
    data = ctx.data
    grad = jax.jit(jax.grad(lambda p, b: data.loss(p, b, train=True)))
    total = None
    for batch in data.batches[:num_batches]:
      g = grad(params, batch)
      total = g if total is None else jax.tree.map(jnp.add, total, g)
    count = len(data.batches[:num_batches])
    return {
      t.path: t.to_matrix(adapters_lib.get_at(total, t.path.split('/'))) / count
      for t in adapters.targets
    }

  return extras


@register_scheme(
  'lora_ga', description='LoRA-GA (reference): A, B from the SVD of the gradient (arXiv 2407.05000)'
)
def lora_ga(num_batches: int = 8, niter: int = 4, direction='ArB2r', scale='stable', gamma=16.0):
  return _lora_ga('lora_ga', 'reference', num_batches, niter, direction, scale, gamma)


@register_scheme('lora_ga_peft', description='LoRA-GA as PEFT implements it (S folded into B)')
def lora_ga_peft(
  num_batches: int = 8, niter: int = 4, direction='ArB2r', scale='stable', gamma=16.0
):
  return _lora_ga('lora_ga_peft', 'peft', num_batches, niter, direction, scale, gamma)


def _lora_ga(name, variant, num_batches, niter, direction, scale, gamma):
  def factorize(matrix, key, grad, t):
    res, a, b = lora.lora_ga(
      matrix, grad, t.rank, alpha=t.alpha, rslora=t.rslora, key=key, niter=niter,
      variant=variant, direction=direction, scale=scale, gamma=gamma, dtype=t.dtype,
    )  # fmt: skip
    return {'residual': res, 'lora_a': a, 'lora_b': b}

  _check_batches(name, num_batches)
  return _scheme(name, factorize, num_batches=num_batches, extras=_gradients(num_batches, name))


@register_scheme(
  'lora_sb', description='LoRA-SB: frozen A, B from the sign-gradient SVD, train r×r R (2411.19557)'
)
def lora_sb(num_batches: int = 8, lr_eff: float = 1e-3, niter: int = 10):
  def factorize(matrix, key, grad, t):
    a, r, b = lora.lora_sb(grad, t.rank, lr_eff=lr_eff, key=key, niter=niter)
    return {'lora_a': a, 'lora_r': r, 'lora_b': b}

  _check_batches('lora_sb', num_batches)
  gradients = _gradients(num_batches, 'lora_sb')

  def summed(params, ctx, adapters):  # The reference sums per-batch mean gradients.
    n = len(ctx.data.batches[:num_batches])
    return {p: g * n for p, g in gradients(params, ctx, adapters).items()}

  return _scheme('lora_sb', factorize, kind='lora_sb', num_batches=num_batches, extras=summed)


def _covariances(num_batches: int, normalize: str, name: str):
  """{target path: (*batch, n, n) covariance of the target's inputs} (PEFT's CorDA
  calibration: per-sample max-normalized, averaged over samples)."""

  def extras(params, ctx, adapters):
    data = ctx.data
    units = {}

    def sums(p, x):
      _, record = capture.layer_outputs(data.model(p), x, what='input')
      out = {}
      targets = {t.path: t for t in adapters.targets}
      for (path, index), inputs in record:
        if path not in targets:
          continue
        rows = _input_rows(targets[path], inputs, name)
        out[(path, index)] = lora.corda_covariance(rows, normalize=normalize) * rows.shape[0]
      return out

    fn = jax.jit(sums)
    count = 0
    for batch in data.batches[:num_batches]:
      x = data.inputs(batch)
      for unit, c in fn(params, x).items():
        units[unit] = units[unit] + c if unit in units else c
      count += x.shape[0]
    out = {}
    for t in adapters.targets:
      slices = sorted((i, c) for (p, i), c in units.items() if p == t.path)
      if not slices:
        raise ValueError(f'{name}: the model never ran the module of {t.path!r}')
      covs = [c / count for _, c in slices]
      out[t.path] = covs[0] if slices[0][0] is None else jnp.stack(covs)
    return out

  return extras


def _input_rows(t, inputs, name: str) -> jax.Array:
  """A dense target's inputs as (samples, tokens, n); a conv's inputs are not its matrix
  view's rows (they would need im2col), so they are refused, as PEFT's CorDA/EVA do."""
  rows = tuple(t.shape[a] for a in t.row_axes)
  if tuple(inputs.shape[-len(rows) :]) != rows:
    raise ConfigError(
      f'config.init: {name} reads the inputs of dense kernels; {t.path!r} (shape {t.shape}) '
      f'gets inputs of shape {tuple(inputs.shape)}: leave it out of config.lora.targets'
    )
  return inputs.reshape(inputs.shape[0], -1, t.n)


@register_scheme(
  'corda', description='CorDA: SVD of W·C (input covariance), IPM top / KPM bottom (2406.05223)'
)
def corda(num_batches: int = 8, mode: str = 'ipm', normalize: str = 'peft', damping: float = 0.01):
  if mode not in ('ipm', 'kpm'):
    raise ConfigError(f"config.init.corda.mode: {mode!r}; valid: 'ipm', 'kpm'")
  if normalize not in ('peft', 'absmax', 'none'):
    raise ConfigError(
      f"config.init.corda.normalize: {normalize!r}; valid: 'peft' (x / |max x| per sample, "
      "as PEFT's hook), 'absmax' (x / max|x|), 'none'"
    )

  def factorize(matrix, key, cov, t):
    res, a, b = lora.corda(
      matrix, cov, t.rank, mode=mode, alpha=t.alpha, rslora=t.rslora, damping=damping,
      dtype=t.dtype,
    )  # fmt: skip
    return {'residual': res, 'lora_a': a, 'lora_b': b}

  _check_batches('corda', num_batches)
  return _scheme(
    'corda',
    factorize,
    num_batches=num_batches,
    extras=_covariances(num_batches, normalize, 'corda'),
  )


def _input_pca(num_batches: int, name: str):
  """{target path: IncrementalPCA per slice ({index: state}; None for an unstacked kernel)}:
  the mean-centred incremental PCA (`lora.ipca_update`) of each target's input rows (every
  token of every sample) over the batches, with as many components as the adapter's rank."""

  def extras(params, ctx, adapters):
    data = ctx.data
    targets = {t.path: t for t in adapters.targets}

    def rows(p, x):
      _, record = capture.layer_outputs(data.model(p), x, what='input')
      out = {}
      for (path, index), inputs in record:
        if path in targets:
          r = _input_rows(targets[path], inputs, name)
          out[(path, index)] = r.reshape(-1, r.shape[-1]).astype(jnp.float32)
      return out

    fn = jax.jit(rows)
    states = collections.defaultdict(dict)
    for batch in data.batches[:num_batches]:
      for (path, index), x in fn(params, data.inputs(batch)).items():
        k = targets[path].rank
        if x.shape[0] < k:
          raise ValueError(f'{name}: {x.shape[0]} input rows of {path!r} < rank {k}')
        state = states[path].get(index) or lora.ipca_init(x.shape[1], k)
        states[path][index] = lora.ipca_update(state, x)
    missing = [t.path for t in adapters.targets if t.path not in states]
    if missing:
      raise ValueError(f'{name}: the model never ran the module of {missing[0]!r}')
    return states

  return extras


@register_scheme(
  'eva', description='EVA: A = top PCA directions of each target input, ranks redistributed, B = 0'
)
def eva(num_batches: int = 8, rho: float = 2.0, whiten: bool = False):
  """EVA (arXiv 2410.07170, §3): per adapted layer (each slice of a stacked kernel), the
  incremental PCA of its inputs; the explained-variance ratios of every layer's first
  round(ρ·r) components are pooled and the global top R = Σ r kept (`lora.eva_ranks`), so
  layer ℓ gets k_ℓ components. Adapters are allocated round(ρ·r) wide (capped at min(n, m))
  and masked to k_ℓ columns of lora_a and rows of lora_b (the run keeps masked entries at 0);
  the scale stays α/r (PEFT's adjust_scaling_factors). lora_a = the top-k_ℓ components
  (÷ √S with `whiten`), lora_b = 0: the base model's output at step 0. ρ = 1 keeps every r."""
  if not rho >= 1:
    raise ConfigError(f'config.init.eva.rho: {rho!r}; expected a float >= 1 (1: no redistribution)')
  _check_batches('eva', num_batches)

  def part(key, params, ctx=None):
    del key
    adapters = _adapters(ctx, 'eva', 'lora')
    states = _input_pca(num_batches, 'eva')(params, ctx, adapters)
    units = [(t, i) for t in adapters.targets for i in sorted(states[t.path], key=_index)]
    evrs = {(t.path, i): states[t.path][i].explained_variance_ratio for t, i in units}
    ranks = lora.eva_ranks(
      {f'{p}@{i}': v for (p, i), v in evrs.items()},
      {f'{t.path}@{i}': t.scale_rank or t.rank for t, i in units},
      rho=rho,
    )
    base, tree = adapters_lib.split(params)
    masks: dict = {}
    for t in adapters.targets:  # On the host: small arrays, no per-shape eager compiles.
      a_slices, keep = [], []
      for i in sorted(states[t.path], key=_index):
        state, k = jax.device_get(states[t.path][i]), ranks[f'{t.path}@{i}']
        a = np.asarray(state.components, np.float32).T  # (n, rank)
        if whiten:
          a = a / np.sqrt(np.maximum(np.asarray(state.singular_values), 1e-12))[None, :]
        used = np.arange(t.rank) < k
        a_slices.append(np.where(used[None, :], a, 0.0))
        keep.append(used)
      a = np.stack(a_slices).reshape(t.batch_shape + (t.n, t.rank))
      used = np.stack(keep).reshape(t.batch_shape + (t.rank,))
      keys = t.path.split('/')
      tree = adapters_lib.set_at(tree, keys + ['lora_a'], jnp.asarray(a, t.dtype))
      b = np.zeros(t.batch_shape + (t.rank, t.m))
      tree = adapters_lib.set_at(tree, keys + ['lora_b'], jnp.asarray(b, t.dtype))
      if rho > 1:
        node = masks
        for k in [adapters_lib.ROOT] + keys:
          node = node.setdefault(k, {})
        node['lora_a'] = np.broadcast_to(used[..., None, :], t.batch_shape + (t.n, t.rank))
        node['lora_b'] = np.broadcast_to(used[..., :, None], t.batch_shape + (t.rank, t.m))
    out = {**base, adapters_lib.ROOT: tree}
    return SchemeResult(out, masks=masks) if masks else out

  attrs = dict(num_batches=num_batches, adapter_kind='lora')
  if rho > 1:
    attrs.update(masks=rf'{adapters_lib.ROOT}/.*/lora_(a|b)', adapter_rank_factor=float(rho))
  scheme = chain(_base(), with_stage(part, 'data', **attrs), warn=False)
  scheme.adapter_kind = 'lora'
  return scheme


def _index(i):
  return -1 if i is None else i


def _check_batches(name: str, num_batches: int) -> None:
  if not isinstance(num_batches, int) or num_batches < 1:
    raise ConfigError(f'config.init.{name}.num_batches: expected an int >= 1, got {num_batches!r}')
