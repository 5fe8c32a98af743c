"""The HNN++ Poincaré fully-connected layer as a function, and its two inits.

Shimizu, Mukuta & Harada, "Hyperbolic Neural Networks++" (arXiv 2006.08210), §3.2 (the
Poincaré FC layer, built on the unidirectional MLR of §3.1), with the (z, r) parametrization:
z ∈ ℝ^{n×m} (column k: orientation of hyperplane k; this is the Flax (in, out) kernel layout)
and r ∈ ℝ^m (hyperplane offsets). For x ∈ 𝔹ⁿ_c, λ_x = 2/(1 − c‖x‖²):

  v_k = (2‖z_k‖/√c) asinh(√c λ_x ⟨x, z_k/‖z_k‖⟩ cosh(2√c r_k) − (λ_x − 1) sinh(2√c r_k))
  w_k = sinh(√c v_k)/√c,      y = project(w / (1 + √(1 + c‖w‖²)))

Inits (Poincaré ResNet, van Spengler et al., arXiv 2303.14027, §4 "identity initialization";
HNN++ for the standard one):
  identity  z = ½·I_{n×m}, r = 0. For n = m the layer is exactly x ↦ x: v_k =
            asinh(√c λ_x x_k)/√c, so w = λ_x x, and 1 + c λ_x²‖x‖² = ((1 + c‖x‖²)/(1 − c‖x‖²))²
            makes the denominator λ_x. For n ≠ m, ½·eye(n, m): n < m copies x into the first n
            coordinates (the other hyperplanes have z_k = 0, so w_k = 0 up to the 1e-15 norm clamp): y = (x, 0), still an
            isometric embedding; n > m keeps the first m coordinates of w = λ_x x:
            y = λ_x x_{:m}/(1 + √(1 + c λ_x²‖x_{:m}‖²)), which is x_{:m} when the dropped
            coordinates are 0 and otherwise not the truncation (λ_x also sees them).
  standard  z ~ N(0, 1/(2nm)), r = 0 (HNN++).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from initlab.hyperbolic.core import (
  MIN_NORM,
  as_curvature,
  custom_op,
  dispatch,
  float_dtype,
  project,
  sqnorm,
)


def _lim(dtype):
  """Clip for the arguments of sinh/cosh: exp(lim)² stays far below the dtype's max."""
  return float(np.log(np.finfo(dtype).max) / 4)


def _core_terms(x, z, r, c):
  sc = jnp.sqrt(c)
  q = 1 - c * sqnorm(x)
  lam = 2 / jnp.maximum(q, np.finfo(x.dtype).eps)  # (..., 1)
  zsq = jnp.sum(z * z, axis=0)
  zn = jnp.sqrt(jnp.maximum(zsq, MIN_NORM**2))  # (m,)
  two = jnp.clip(2 * sc * r, -_lim(x.dtype), _lim(x.dtype))
  ch, sh = jnp.cosh(two), jnp.sinh(two)
  p = x @ z  # (..., m)
  a = sc * lam * (p / zn) * ch - (lam - 1) * sh
  s = 2 * zn * jnp.arcsinh(a)  # √c v_k
  w = jnp.sinh(jnp.clip(s, -_lim(x.dtype), _lim(x.dtype))) / sc
  d = 1 + jnp.sqrt(1 + c * sqnorm(w))
  return sc, q, lam, zsq, zn, ch, sh, p, a, s, w, d


def _core_value(x, z, r, c):
  *_, w, d = _core_terms(x, z, r, c)
  return w / d


def _core_bwd(res, u):
  # Reverse pass through y = w/D, w = sinh(s)/√c, s = 2‖z_k‖ asinh(A), A = √c λ ch P/‖z_k‖ −
  # (λ − 1) sh with P = x z, ch/sh = cosh/sinh(2√c r), λ = 2/(1 − c‖x‖²), D = 1 + √(1 + c‖w‖²).
  x, z, r, c = res
  sc, q, lam, zsq, zn, ch, sh, p, a, s, w, d = _core_terms(x, z, r, c)
  lim = _lim(x.dtype)
  uw = jnp.sum(u * w, -1, keepdims=True)
  w2 = sqnorm(w)
  gw = u / d - (uw / d**2) * c * w / (d - 1)
  gc = -jnp.sum(uw / d**2 * w2 / (2 * (d - 1)))  # D's own c
  gc -= jnp.sum(gw * w) / (2 * c)  # w = sinh(s)/√c
  gs = jnp.where(jnp.abs(s) < lim, gw * jnp.cosh(s) / sc, 0)
  ga = gs * 2 * zn / jnp.sqrt(1 + a * a)
  gzn = jnp.sum(gs * 2 * jnp.arcsinh(a), axis=tuple(range(s.ndim - 1)))
  gp = ga * sc * lam * ch / zn
  gzn -= jnp.sum(ga * sc * lam * ch * p / zn**2, axis=tuple(range(s.ndim - 1)))
  glam = jnp.sum(ga * (sc * ch * p / zn - sh), -1, keepdims=True)
  inner = jnp.abs(2 * sc * r) < lim
  gch, gsh = ga * sc * lam * p / zn, -ga * (lam - 1)
  gtwo = jnp.sum(gch * sh + gsh * ch, axis=tuple(range(s.ndim - 1)))
  gtwo = jnp.where(inner, gtwo, 0)
  gsc = jnp.sum(ga * lam * ch * p / zn) + jnp.sum(gtwo * 2 * r)
  lam_free = q > np.finfo(x.dtype).eps
  glam = jnp.where(lam_free, glam, 0)
  gx = gp @ z.T + glam * lam**2 * c * x
  gc += jnp.sum(glam * lam**2 * sqnorm(x) / 2) + gsc / (2 * sc)
  xf, gpf = x.reshape(-1, x.shape[-1]), gp.reshape(-1, gp.shape[-1])
  gz = xf.T @ gpf + jnp.where(zsq > MIN_NORM**2, gzn / zn, 0) * z
  gr = gtwo * 2 * sc
  return gx, gz, gr, gc.astype(c.dtype)


_core_custom = custom_op(_core_value, _core_bwd)


def poincare_fc(x, z, r, c):
  """HNN++ Poincaré FC: x (..., n) in the ball, z (n, m), r (m,) -> y (..., m) in the ball.

  The core (everything before `project`) has a hand-written VJP (`use_custom_vjp`). sinh/cosh
  arguments are clipped at log(dtype max)/4: a point that far out is on the boundary anyway.
  """
  dt = float_dtype(x, z, r)
  x, z, r, c = jnp.asarray(x, dt), jnp.asarray(z, dt), jnp.asarray(r, dt), as_curvature(c, dt)
  if z.ndim != 2 or x.shape[-1] != z.shape[0] or r.shape != z.shape[1:]:
    raise ValueError(
      f'poincare_fc: x (..., n), z (n, m), r (m,) expected; got x {x.shape}, '
      f'z {z.shape}, r {r.shape}'
    )
  return project(dispatch(_core_custom, _core_value, x, z, r, c), c)


def identity_kernel(n: int, m: int) -> np.ndarray:
  """z = ½·eye(n, m) (float64): the identity init's kernel (module docstring for n ≠ m)."""
  return 0.5 * np.eye(n, m)


def standard_std(n: int, m: int) -> float:
  """HNN++'s standard init: z ~ N(0, std²) with std = (2nm)^{-1/2}."""
  return float((2 * n * m) ** -0.5)
