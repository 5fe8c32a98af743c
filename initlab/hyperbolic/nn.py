"""Layer-level Poincaré-ball functions: β-concatenation and conv patches, the HNN++ conv,
midpoint batch norm, tangent-space ReLU, midpoint pooling and the hyperbolic MLR logits.

Sources: HNN++ (Shimizu, Mukuta & Harada, arXiv 2006.08210): §3.1 unidirectional MLR, §3.3
β-splitting/concatenation and the convolution built on it; Poincaré ResNet (van Spengler,
Berkhout & Mettes, arXiv 2303.14027) §3–4: midpoint batch norm (the Riemannian batch norm of
Lou et al., arXiv 2003.00335, with the gyromidpoint in place of the Fréchet mean), activations
and pooling in the tangent space at the origin.

Points are (..., d) arrays on 𝔹_c = {c‖x‖² < 1}; c > 0 is a scalar. Pure functions: the
modules that hold parameters and running statistics are in `initlab.models.poincare`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from initlab.hyperbolic.ball import (
  expmap,
  frechet_variance,
  gyration,
  lambda_x,
  logmap,
  midpoint,
  mobius_scalar,
)
from initlab.hyperbolic.core import (
  MIN_NORM,
  expmap0,
  logmap0,
  mobius_add,
  project,
)
from initlab.hyperbolic.fc import poincare_fc


def beta_ratio(n_i: int, n: int) -> float:
  """B(n/2, ½)/B(n_i/2, ½) (B the Beta function; HNN++ §3.3), ≈ √(n_i/n)."""
  if not 1 <= n_i <= n:
    raise ValueError(f'beta_ratio: need 1 <= n_i <= n, got n_i={n_i}, n={n}')
  log_b = lambda a: math.lgamma(a) - math.lgamma(a + 0.5)  # log B(a, ½) − log Γ(½)
  return math.exp(log_b(n / 2) - log_b(n_i / 2))


def beta_concat(xs: Sequence[jax.Array], c) -> jax.Array:
  """β-concatenation (HNN++ §3.3) of points xs[i] (..., n_i) -> (..., n), n = Σ n_i:
  exp₀(concat_i(B(n/2, ½)/B(n_i/2, ½) · log₀(xs[i])))."""
  n = sum(x.shape[-1] for x in xs)
  parts = [beta_ratio(x.shape[-1], n) * logmap0(x, c) for x in xs]
  return expmap0(jnp.concatenate(parts, axis=-1), c)


def _pair(v, name):
  v = (v, v) if isinstance(v, int) else tuple(v)
  if len(v) != 2 or min(v) < 0:
    raise ValueError(f'{name}={v!r} must be an int or a pair of ints >= 0')
  return v


def conv_patches(x, window, c, stride=1, padding=0) -> jax.Array:
  """The β-concatenated receptive fields of a Poincaré conv (HNN++ §3.3).

  x: (B, H, W, C) points (one per pixel); window (kh, kw); stride, padding: ints or pairs
  (zero padding in the tangent space: padded pixels are the origin). Returns (B, H', W', C·K)
  points, K = kh·kw, H' = (H + 2·pad − kh) // stride + 1, each the β-concatenation of its
  window's K pixels, in channel-major order (index c·K + p, p = i·kw + j row-major over the
  window: the order of torch `unfold` and `jax.lax.conv_general_dilated_patches`).
  """
  (kh, kw), (sh, sw), (ph, pw) = (
    _pair(window, 'window'),
    _pair(stride, 'stride'),
    _pair(padding, 'padding'),
  )
  b, h, w, ch = x.shape
  k = kh * kw
  t = beta_ratio(ch, ch * k) * logmap0(x, c)
  t = jnp.pad(t, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
  if ho < 1 or wo < 1:
    raise ValueError(
      f'conv_patches: window {(kh, kw)} does not fit a {(h, w)} image with padding {(ph, pw)}'
    )
  taps = [
    t[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
    for i in range(kh)
    for j in range(kw)
  ]
  v = jnp.stack(taps, axis=-1).reshape(b, ho, wo, ch * k)  # (.., C, K) -> index c·K + p
  return expmap0(v, c)


def conv_matrix(kernel: jax.Array) -> jax.Array:
  """The (C_in·K, C_out) HNN++ matrix z of a (kh, kw, C_in, C_out) kernel: row c·K + i·kw + j
  is kernel[i, j, c] (channel-major, as `conv_patches`)."""
  kh, kw, cin, cout = kernel.shape
  return jnp.transpose(kernel, (2, 0, 1, 3)).reshape(cin * kh * kw, cout)


def poincare_conv2d(x, kernel, bias, c, stride=1, padding=0) -> jax.Array:
  """HNN++ Poincaré convolution: x (B, H, W, C_in) points, kernel (kh, kw, C_in, C_out),
  bias r (C_out,) -> (B, H', W', C_out) points: the HNN++ FC layer (`poincare_fc`, z =
  `conv_matrix(kernel)`) applied to every β-concatenated receptive field (`conv_patches`)."""
  patches = conv_patches(x, kernel.shape[:2], c, stride, padding)
  return poincare_fc(patches, conv_matrix(kernel), bias, c)


def tangent_relu(x, c) -> jax.Array:
  """ReLU in the tangent space at the origin: exp₀(relu(log₀(x)))."""
  return expmap0(jax.nn.relu(logmap0(x, c)), c)


def midpoint_pool(x, c) -> jax.Array:
  """Global pooling by the gyromidpoint over the spatial axes: (B, H, W, C) -> (B, C)."""
  b, *_, ch = x.shape
  return midpoint(x.reshape(b, -1, ch), c, axis=1)


def batch_stats(x, c) -> tuple[jax.Array, jax.Array]:
  """(μ, σ²) of the points x (N, C): μ their gyromidpoint (C,), σ² = (1/N) Σᵢ d(xᵢ, μ)² ()."""
  mu = midpoint(x, c, axis=0)
  return mu, frechet_variance(x, c, mu=mu, axis=0)


def _normalize(w, mean, var, bias, scale, c, eps):
  """batch_norm from w = (−mean) ⊕ x (its closed form below)."""
  beta = expmap0(bias, c)
  f = scale / jnp.sqrt(var + eps)
  return project(mobius_add(beta, gyration(beta, -mean, mobius_scalar(f, w, c), c), c), c)


def batch_norm(x, mean, var, bias, scale, c, eps: float = 1e-6) -> jax.Array:
  """Riemannian batch norm given statistics (Lou et al. 2020, Alg. 2; Poincaré ResNet §4):
    y = project(exp_β(f · PT_{mean→β}(log_mean(x)))),  β = exp₀(bias),  f = scale/√(var + eps),
  x (..., C) points, mean (C,) a point, var and scale scalars, bias (C,) a tangent vector at 0.
  Evaluated in the equal closed form y = β ⊕ gyr[β, −mean](f ⊗ ((−mean) ⊕ x)) (λ_β‖PT v‖ =
  λ_mean‖v‖ and gyrations are isometries that commute with ⊗), which XLA compiles to 30%
  fewer ops. (The reference multiplies by √(s/(var + eps)) with a learnable s: scale = √s here,
  without the square root of a parameter that may turn negative.)"""
  return _normalize(mobius_add(-mean, x, c), mean, var, bias, scale, c, eps)


def geodesic(x, y, t, c) -> jax.Array:
  """The point a fraction t of the way along the geodesic from x to y: exp_x(t·log_x(y))."""
  return expmap(x, t * logmap(x, y, c), c)


def running_stats(mean, var, batch_mean, batch_var, momentum, c) -> tuple[jax.Array, jax.Array]:
  """Running statistics after one batch (the weighted Fréchet mean of the two points, i.e. the
  geodesic interpolation, for the mean; the convex combination for the variance):
    mean ← project(exp_mean((1 − m)·log_mean(batch_mean))),  var ← m·var + (1 − m)·batch_var."""
  new_mean = project(geodesic(mean, batch_mean, 1 - momentum, c), c)
  return new_mean, momentum * var + (1 - momentum) * batch_var


def mlr_logits(x, z, r, c) -> jax.Array:
  """HNN++ unidirectional hyperbolic MLR (§3.1, eq. 6): x (..., n) points, z (n, K), r (K,)
  -> (..., K) logits, the scaled signed distances to the K hyperplanes
    v_k(x) = (2‖z_k‖/√c) asinh(√c λ_x ⟨x, z_k/‖z_k‖⟩ cosh(2√c r_k) − (λ_x − 1) sinh(2√c r_k)),
  λ_x = 2/(1 − c‖x‖²) (the conformal factor: a division, not the reference code's product)."""
  sc = jnp.sqrt(jnp.asarray(c, x.dtype))
  lam = lambda_x(x, c, keepdims=True)
  zn = jnp.sqrt(jnp.maximum(jnp.sum(z * z, axis=0), MIN_NORM**2))
  two = 2 * sc * r
  arg = sc * lam * (x @ z) / zn * jnp.cosh(two) - (lam - 1) * jnp.sinh(two)
  return 2 * zn / sc * jnp.arcsinh(arg)
