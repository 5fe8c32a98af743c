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

from initlab.hyperbolic.core import MIN_NORM, as_curvature, float_dtype, project, sqnorm


def poincare_fc(x, z, r, c):
  """HNN++ Poincaré FC: x (..., n) in the ball, z (n, m), r (m,) -> y (..., m) in the ball."""
  dt = float_dtype(x, z, r)
  x, z, r, c = jnp.asarray(x, dt), jnp.asarray(z, dt), jnp.asarray(r, dt), as_curvature(c, dt)
  sc = jnp.sqrt(c)
  lam = 2 / jnp.maximum(1 - c * sqnorm(x), np.finfo(dt).eps)  # (..., 1)
  zn = jnp.sqrt(jnp.maximum(jnp.sum(z * z, axis=0), MIN_NORM**2))  # (m,)
  two = 2 * sc * r
  arg = sc * lam * (x @ z / zn) * jnp.cosh(two) - (lam - 1) * jnp.sinh(two)
  # sinh(√c v) overflows for large hyperplane distances; the point is on the boundary anyway
  lim = np.log(np.finfo(dt).max) / 4
  w = jnp.sinh(jnp.clip(2 * zn * jnp.arcsinh(arg), -lim, lim)) / sc
  return project(w / (1 + jnp.sqrt(1 + c * sqnorm(w))), c)


def identity_kernel(n: int, m: int) -> np.ndarray:
  """z = ½·eye(n, m) (float64): the identity init's kernel (module docstring for n ≠ m)."""
  return 0.5 * np.eye(n, m)


def standard_std(n: int, m: int) -> float:
  """HNN++'s standard init: z ~ N(0, std²) with std = (2nm)^{-1/2}."""
  return float((2 * n * m) ** -0.5)
