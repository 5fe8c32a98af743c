"""GG initialization (Wu et al., arXiv 2506.00486 v1–v3, the GG-initialization section; the
authors' `gg_init.py::gg_init(model, shape, xi)`). It generalizes He et al.'s Var(w) = 2/n
(arXiv 1502.01852, Eq. 10) from Gaussian to generalized-Gaussian weights:

    w ~ GG(0, α, β),   α = sqrt((gain²/n)·Γ(1/β)/Γ(3/β))   ⇒   Var(w) = gain²/n   for every β,

since a GG(0, α, β) has variance α²Γ(3/β)/Γ(1/β) (see `estimate`). β = 2 is He/LeCun normal
(untruncated); β = 1 Laplace; β → ∞ uniform. n is the fan of `mode`, from the param's
`ParamSpec` (initlab.init.specs), as `jax.nn.initializers.variance_scaling` computes it: every
axis that is not an in-, out- or batch axis is a receptive-field axis and multiplies both fans.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from scipy import special

from initlab.init.gg import sampling
from initlab.init.registry import LayoutInitializer, register_initializer, register_scheme
from initlab.init.rules import Rules
from initlab.init.specs import EMBEDDING_FAN_IN, ParamSpec, normalize_axes

Axes = int | Sequence[int]
MODES = ('fan_in', 'fan_out', 'fan_avg', 'torch_shape0')


def fan_size(
  shape, mode: str = 'fan_in', in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()
) -> float:
  """The n of `mode` for a tensor of `shape` with these fan axes (`ParamSpec.fans`).

  `torch_shape0` is torch's `weight.shape[0]`, the authors' n (out features of Linear/Conv, the
  vocabulary of an Embedding): the product of the out axes without the receptive field; for
  reproducing their code only.
  """
  if mode not in MODES:
    raise ValueError(f'mode={mode!r}; valid choices: {MODES}')
  shape = tuple(int(s) for s in shape)
  if len(shape) < 2:
    raise ValueError(
      f'cannot compute fans of a {len(shape)}-D tensor of shape {shape}; '
      'GG init needs a kernel with at least (in, out) axes'
    )
  ins, outs, batch = (normalize_axes(a, len(shape)) for a in (in_axis, out_axis, batch_axis))
  fan_in, fan_out = ParamSpec('kernel', ins, outs, batch).fans(shape)
  if mode == 'fan_in':
    return fan_in
  if mode == 'fan_out':
    return fan_out
  if mode == 'fan_avg':
    return (fan_in + fan_out) / 2
  return math.prod(shape[a] for a in outs)


def gg_alpha(beta: float, variance: float) -> float:
  """Scale α of GG(0, α, β) with the given variance: α = sqrt(Var·Γ(1/β)/Γ(3/β)) (module doc)."""
  return math.sqrt(variance * math.exp(math.lgamma(1.0 / beta) - math.lgamma(3.0 / beta)))


def truncation_variance_factor(beta: float, truncate: float) -> float:
  """κ = Var(X | |X| ≤ c·σ)/σ² for X ~ GG(0, α, β) with std σ; c = `truncate`.

  With z = (c·σ/α)^β = (c·sqrt(Γ(3/β)/Γ(1/β)))^β and P the regularized lower incomplete gamma,
  κ = P(3/β, z)/P(1/β, z). For β = 2, c = 2: √κ = 0.87962566…, JAX's truncated-normal constant.
  """
  z = (truncate * math.sqrt(math.exp(math.lgamma(3.0 / beta) - math.lgamma(1.0 / beta)))) ** beta
  return float(special.gammainc(3.0 / beta, z) / special.gammainc(1.0 / beta, z))


def _check_options(beta, gain, mode, truncate, sampler):
  if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
    raise ValueError(
      f'generalized_gaussian: beta={beta!r}; expected a finite float > 0 '
      '(0.5 heavy-tailed, 1 Laplace, 2 Gaussian, large → uniform)'
    )
  if not (isinstance(gain, (int, float)) and math.isfinite(gain) and gain > 0):
    raise ValueError(
      f'generalized_gaussian: gain={gain!r}; expected a finite float > 0 '
      '(sqrt(2) for ReLU, 1 for linear/tanh)'
    )
  if mode not in MODES:
    raise ValueError(f'generalized_gaussian: mode={mode!r}; valid choices: {MODES}')
  if truncate is not None and not (math.isfinite(truncate) and truncate > 0):
    raise ValueError(f'generalized_gaussian: truncate={truncate!r}; expected None or a float > 0')
  if sampler not in sampling.SAMPLERS:
    raise ValueError(
      f'generalized_gaussian: sampler={sampler!r}; valid choices: {sampling.SAMPLERS}'
    )


def generalized_gaussian(
  beta: float,
  gain: float = math.sqrt(2.0),
  mode: str = 'fan_in',
  truncate: float | None = None,
  in_axis: Axes = -2,
  out_axis: Axes = -1,
  batch_axis: Axes = (),
  sampler: str = 'auto',
):
  """GG initializer: w ~ GG(0, α, β) with Var(w) = gain²/n (arXiv 2506.00486; module doc).

  Args:
    beta: shape β > 0.
    gain: ξ = gain² is the variance gain: sqrt(2) for ReLU, 1 for linear, sqrt(2/(1+k²)) for
      LeakyReLU(k).
    mode: n = fan_in, fan_out, fan_avg = (fan_in+fan_out)/2, or torch_shape0 (see `fan_size`).
    truncate: None, or c > 0: draws are conditioned on |w| ≤ c·σ₀ (σ₀ the untruncated std, as in
      JAX's truncated normal) and then rescaled by 1/√κ (`truncation_variance_factor`) so that
      Var(w) is still gain²/n; the support becomes ±c·σ/√κ with σ = gain/√n. By inversion
      ("icdf") or rejection (the other samplers).
    in_axis, out_axis, batch_axis: layout, as in `jax.nn.initializers.variance_scaling`;
      `Rules` binds them from each param's spec.
    sampler: "auto" (default: inversion, "icdf", for float32 and 0.3 ≤ β ≤ 8, at about
      `jax.random.normal`'s cost and shardable; else "marsaglia_tsang"), "icdf",
      "marsaglia_tsang" or "jax" (α·`jax.random.generalized_normal`, ~100× slower on CPU).
      Same distribution (`initlab.init.gg.sampling`).

  Returns:
    `init(key, shape, dtype=float32) -> Array`. Draws in float32 (float64 if `dtype` is
    float64), then cast to `dtype`.
  """
  _check_options(beta, gain, mode, truncate, sampler)
  beta, gain = float(beta), float(gain)
  kappa = 1.0 if truncate is None else truncation_variance_factor(beta, truncate)
  bound = (
    None
    if truncate is None
    else truncate * math.sqrt(math.exp(math.lgamma(3.0 / beta) - math.lgamma(1.0 / beta)))
  )

  def init(key, shape, dtype=jnp.float32, out_sharding=None):
    del out_sharding  # placement comes from the enclosing jit's out_shardings
    shape = tuple(int(s) for s in shape)
    n = fan_size(shape, mode, in_axis, out_axis, batch_axis)
    alpha = gg_alpha(beta, gain**2 / n) / math.sqrt(kappa)
    compute = jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32
    x = sampling.standard_gg(key, beta, shape, compute, bound=bound, sampler=sampler)
    return (alpha * x).astype(dtype)

  return init


register_initializer('gg', 'generalized_gaussian')(generalized_gaussian)


@register_scheme('gg_model')
def gg_model(
  beta: float = 2.0,
  gain: float = math.sqrt(2.0),
  mode: str = 'fan_in',
  truncate: float | None = None,
  include_embeddings: bool = False,
  embedding_fan_in: str = 'features',
  sampler: str = 'auto',
):
  """Whole-model GG init (arXiv 2506.00486; initlab's reading of the authors' `gg_init`).

  Kernels get `generalized_gaussian(beta, gain, mode, truncate)` with their own fans; biases and
  norm offsets are 0; norm scales are 1; params whose role is unknown keep their value.
  Embeddings (V, D) are drawn too when `include_embeddings`, with the general fan rule
  (`embedding_fan_in="features"`: fan_in = D, as Flax's `nn.Embed` and PyTorch) unless
  `embedding_fan_in="vocab"` (fan_in = V: the authors' `gg_init` draws every 2-D tensor with
  n = shape[0], which for a torch `Embedding.weight` is the vocabulary). `mode="torch_shape0"`
  is their n = shape[0] for every param, so it also gives embeddings n = V.
  Not copied from their code: it sets every non-2-D "weight" (conv kernels included) to 1.
  """
  _check_options(beta, gain, mode, truncate, sampler)
  if embedding_fan_in not in EMBEDDING_FAN_IN:
    raise ValueError(
      f'gg_model: embedding_fan_in={embedding_fan_in!r}; valid choices: {EMBEDDING_FAN_IN}'
    )
  opts = dict(beta=beta, gain=gain, mode=mode, truncate=truncate, sampler=sampler)
  kernel = LayoutInitializer('gg', generalized_gaussian, (), opts)
  # shape[0] of (V, D) is the out axis of the default embedding spec (fan_in = D, fan_out = V)
  embed_spec = 'features' if mode == 'torch_shape0' else embedding_fan_in
  groups = [
    Rules([('.*', kernel)], roles=('kernel',), strict=False),
    Rules([('.*', jax.nn.initializers.zeros)], roles=('bias', 'norm_offset'), strict=False),
    Rules([('.*', jax.nn.initializers.ones)], roles=('norm_scale',), strict=False),
  ]
  if include_embeddings:
    groups.append(
      Rules([('.*', kernel)], roles=('embedding',), strict=False, embedding_fan_in=embed_spec)
    )

  def scheme(key, params, ctx=None):
    for rules in groups:  # one key for all: leaf keys are path-hashed, so kernels equal "gg"
      params = rules(key, params, ctx)
    return params

  return scheme
