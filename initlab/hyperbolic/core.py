"""The four ops that dominate a Poincaré network's graph, with hand-written backward passes.

Möbius addition, projection, exp₀ and log₀ on the Poincaré ball 𝔹ⁿ_c = {c‖x‖² < 1}
(curvature −c, c > 0) of Ganea, Bécigneul & Hofmann 2018 (arXiv 1805.09112, eqs. 3 and 13),
as used by HNN++ (Shimizu et al., arXiv 2006.08210) and Poincaré ResNet (van Spengler,
Berkhout & Mettes, arXiv 2303.14027, whose fix (iii) is these closed-form backward passes).

Each op is a `jax.custom_vjp` whose backward pass returns the cotangents of the inputs AND of
the curvature c (so c may be learnable). `use_custom_vjp(False)` switches to plain autodiff of
the same forward formula, for comparison; the switch is read when a function is traced, so a
function jitted under one setting keeps it (jax caches traces by function object: set the switch
inside the traced function, or trace a new one).

Shapes: points and tangent vectors are (..., d), batched over leading axes (broadcast like
numpy); c is a scalar (Python number or 0-d array). float32 and float64.

Numerics: norms are clamped to ≥ 1e-15 before dividing (exact zeros give finite values and
gradients), the artanh argument √c‖y‖ is clamped to ≤ 1 − machine ε (points on or outside the
boundary give finite values), and `project` pulls points to ‖x‖ ≤ (1 − ε)/√c with a dtype-aware
ε = 4e-3 (float32) or 1e-5 (float64). Möbius addition is evaluated in the algebraically equal,
cancellation-free form
  x ⊕ y = [(1 − c‖x‖²)(x + y) + c‖x + y‖² x] / [(1 − c‖x‖²)(1 − c‖y‖²) + c‖x + y‖²],
(use 1 + 2c⟨x,y⟩ + c‖y‖² = (1 − c‖x‖²) + c‖x + y‖²), so (−x) ⊕ x is exactly 0 even at the
boundary, where the textbook form loses every digit.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

MIN_NORM = 1e-15
_PROJ_EPS = {np.dtype('float32'): 4e-3, np.dtype('float64'): 1e-5}
_CUSTOM = [True]


def custom_vjp_enabled() -> bool:
  return _CUSTOM[0]


@contextlib.contextmanager
def use_custom_vjp(enabled: bool = True):
  """Within the block, the core ops trace with (True) or without (False) their custom VJPs."""
  old = _CUSTOM[0]
  _CUSTOM[0] = bool(enabled)
  try:
    yield
  finally:
    _CUSTOM[0] = old


def float_dtype(*xs):
  """The common dtype of `xs`; float32 or float64, anything else is an error."""
  dt = np.dtype(jnp.result_type(*xs))
  if dt not in _PROJ_EPS:
    raise ValueError(
      f'Poincaré-ball ops take float32 or float64 arrays, got dtype {dt}; '
      'valid dtypes: float32, float64'
    )
  return dt


def proj_eps(dtype) -> float:
  """Boundary margin of `project`: 4e-3 for float32, 1e-5 for float64."""
  return _PROJ_EPS[float_dtype(jnp.zeros((), dtype))]


def artanh_max(dtype) -> float:
  """Largest artanh argument used: 1 − machine ε of `dtype`."""
  return 1.0 - float(np.finfo(dtype).eps)


def as_curvature(c, dtype):
  """c as a 0-d array of `dtype`; c must be a scalar, and positive where it is concrete."""
  if isinstance(c, (int, float, np.number)) and not c > 0:
    raise ValueError(f'curvature c must be > 0 (the ball has curvature -c), got c={c}')
  c = jnp.asarray(c, dtype)
  if c.ndim != 0:
    raise ValueError(f'curvature c must be a scalar, got shape {c.shape}')
  return c


def softplus_curvature(raw):
  """A learnable curvature, positive by construction: c = softplus(raw) = log(1 + eʳᵃʷ)."""
  return jax.nn.softplus(raw)


def softplus_inverse(c):
  """raw with softplus(raw) = c (c > 0): log(eᶜ − 1)."""
  return jnp.log(jnp.expm1(c))


def sqnorm(x):
  return jnp.sum(x * x, axis=-1, keepdims=True)


def norm(x):
  """‖x‖ over the last axis (keepdims), clamped to ≥ MIN_NORM (zero gradient below it)."""
  return jnp.sqrt(jnp.maximum(sqnorm(x), MIN_NORM**2))


def _dot(a, b):
  return jnp.sum(a * b, axis=-1, keepdims=True)


def _sum_to(g, shape):
  """Sum a broadcast cotangent `g` back to `shape` (numpy broadcasting rules)."""
  lead = g.ndim - len(shape)
  g = jnp.sum(g, axis=tuple(range(lead))) if lead else g
  axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
  return jnp.sum(g, axis=axes, keepdims=True) if axes else g


def _after(res, u):
  """The residuals, made to depend on the cotangent u (through k = min(|u₀|, 0), which is 0
  for any non-NaN u₀ and which XLA does not fold away).

  Why: the backward passes recompute their intermediates from the inputs. Without a data
  dependency on u, XLA's CPU scheduler (concurrency-optimized by default) starts that
  recomputation during the forward pass, and keeps every layer's intermediates alive until its
  backward runs, which costs as much memory as autodiff's saved values (0.93x of them for 30
  exp0-FC-log0 layers; `optimization_barrier` does not help, the CPU pipeline removes it before
  scheduling). With it, only the inputs live across the forward pass (0.18x). A NaN first
  cotangent entry makes every cotangent of the op NaN (it makes the parameter cotangents NaN
  anyway)."""
  if u.size == 0:
    return res
  k = jnp.minimum(jnp.abs(u.ravel()[0]), 0)
  return tuple(a + k.astype(a.dtype) for a in res)


def custom_op(value, bwd):
  """`value` as a `jax.custom_vjp` whose residuals are its inputs and whose backward is `bwd`
  (run on the residuals made to wait for the cotangent, see `_after`)."""
  op = jax.custom_vjp(value)
  op.defvjp(lambda *args: (value(*args), args), lambda res, u: bwd(_after(res, u), u))
  return op


def dispatch(custom, value, *args):
  """`custom(*args)`, or plain autodiff of `value(*args)` under `use_custom_vjp(False)`."""
  return (custom if custom_vjp_enabled() else value)(*args)


def _on_ball(custom, value, x, c):
  """A one-point op: x (..., d) and c cast to their common float dtype, then dispatched."""
  dt = float_dtype(x)
  return dispatch(custom, value, jnp.asarray(x, dt), as_curvature(c, dt))


def _radial_op(scales):
  """`(value, custom)` of y = g(z) v with z = √c‖v‖, from `scales(v, c) -> (g, zg)`, both
  (..., 1), where zg = z g'(z). Its backward:
    v̄ = g u + zg ⟨u,v̂⟩v̂,   c̄ = ⟨u,v⟩ zg/(2c) (the radial term is 0 at v = 0)."""

  def value(v, c):
    return scales(v, c)[0] * v

  def bwd(res, u):
    v, c = res
    g, zg = scales(v, c)
    vh = v / norm(v)
    radial = jnp.where(sqnorm(v) < MIN_NORM**2, 0, zg * _dot(u, vh))
    gc = _dot(u, v) * zg / (2 * c)
    return g * u + radial * vh, jnp.sum(gc).astype(c.dtype)

  return value, custom_op(value, bwd)


# ---- Möbius addition -------------------------------------------------------------------------


def _add_terms(x, y, c):
  s = x + y
  q = c * sqnorm(s)
  bx = 1 - c * sqnorm(x)
  by = 1 - c * sqnorm(y)
  return s, q, bx, by


def _add_fwd_value(x, y, c):
  s, q, bx, by = _add_terms(x, y, c)
  return (bx * s + q * x) / (bx * by + q)


def _add_bwd(res, u):
  # x ⊕ y = (a x + b y)/D, a = 1 + 2c⟨x,y⟩ + c‖y‖², b = 1 − c‖x‖², D = 1 + 2c⟨x,y⟩ + c²‖x‖²‖y‖².
  # θ = ⟨u, a x + b y⟩, t = θ/D, k = 2c/D:
  #   x̄ = (a/D)u − k(c‖y‖² t + ⟨u,y⟩)x + k(⟨u,x⟩ − t)y
  #   ȳ = (b/D)u + k(⟨u,x⟩ − t)x + k(⟨u,x⟩ − c‖x‖² t)y
  #   c̄ = Σ [⟨u,x⟩(2⟨x,y⟩ + ‖y‖²) − ⟨u,y⟩‖x‖² − t(2⟨x,y⟩ + 2c‖x‖²‖y‖²)] / D
  x, y, c = res
  _, q, bx, by = _add_terms(x, y, c)
  a, b, d = bx + q, bx, bx * by + q
  x2, y2, xy = sqnorm(x), sqnorm(y), _dot(x, y)
  ux, uy = _dot(u, x), _dot(u, y)
  t = (a * ux + b * uy) / d
  k = 2 * c / d
  gx = (a / d) * u - k * (c * y2 * t + uy) * x + k * (ux - t) * y
  gy = (b / d) * u + k * (ux - t) * x + k * (ux - c * x2 * t) * y
  gc = (ux * (2 * xy + y2) - uy * x2 - t * (2 * xy + 2 * c * x2 * y2)) / d
  return _sum_to(gx, x.shape), _sum_to(gy, y.shape), jnp.sum(gc).astype(c.dtype)


_add_custom = custom_op(_add_fwd_value, _add_bwd)


def mobius_add(x, y, c):
  """Möbius addition x ⊕ y on 𝔹ⁿ_c (Ganea et al. 2018, eq. 3). x, y: (..., d), broadcast."""
  dt = float_dtype(x, y)
  x, y, c = jnp.asarray(x, dt), jnp.asarray(y, dt), as_curvature(c, dt)
  return dispatch(_add_custom, _add_fwd_value, x, y, c)


# ---- projection ------------------------------------------------------------------------------


def _radius(c, dtype):
  return (1 - proj_eps(dtype)) / jnp.sqrt(c)


def _project_value(x, c):
  n, r = norm(x), _radius(c, x.dtype)
  return jnp.where(n > r, x * (r / n), x)


def _project_bwd(res, u):
  # Inside: identity. Outside, y = R x/‖x‖ with R = (1 − ε)/√c:
  #   x̄ = (R/‖x‖)(u − ⟨u,x̂⟩x̂),   c̄ = −⟨u,x̂⟩ R/(2c).
  x, c = res
  n, r = norm(x), _radius(c, x.dtype)
  out = n > r
  ux = _dot(u, x) / n
  gx = jnp.where(out, (r / n) * (u - ux * x / n), u)
  gc = jnp.where(out, -ux * r / (2 * c), 0)
  return gx, jnp.sum(gc).astype(c.dtype)


_project_custom = custom_op(_project_value, _project_bwd)


def project(x, c):
  """Pull x into the closed ball ‖x‖ ≤ (1 − ε)/√c (ε from `proj_eps`); inside points unchanged."""
  return _on_ball(_project_custom, _project_value, x, c)


# ---- exp₀ and log₀ ---------------------------------------------------------------------------


def _expmap0_scales(v, c):
  # exp₀(v) = g(z) v, g(z) = tanh(z)/z, z = √c‖v‖; z g'(z) = sech²z − g(z) (no cancellation
  # problem: it multiplies a unit-direction term, so its absolute error stays at machine ε).
  z = jnp.sqrt(c) * norm(v)
  th = jnp.tanh(z)
  g = th / z
  return g, (1 - th * th) - g


_expmap0_value, _expmap0_custom = _radial_op(_expmap0_scales)


def expmap0(v, c):
  """exp₀(v) = tanh(√c‖v‖) v/(√c‖v‖) (Ganea et al. 2018, eq. 13 at x = 0). v: (..., d)."""
  return _on_ball(_expmap0_custom, _expmap0_value, v, c)


def _logmap0_scales(y, c):
  # log₀(y) = h(z) y, h = artanh(z)/z, z = √c‖y‖; z h'(z) = A − h with A = 1/(1 − z²), or 0
  # where z is clamped at the top.
  zr = jnp.sqrt(c) * norm(y)
  z = jnp.minimum(zr, artanh_max(y.dtype))
  h = jnp.arctanh(z) / zr
  a = jnp.where(zr > artanh_max(y.dtype), 0, 1 / (1 - z * z))
  return h, a - h


_logmap0_value, _logmap0_custom = _radial_op(_logmap0_scales)


def logmap0(y, c):
  """log₀(y) = artanh(√c‖y‖) y/(√c‖y‖) (Ganea et al. 2018, eq. 13 at x = 0). y: (..., d)."""
  return _on_ball(_logmap0_custom, _logmap0_value, y, c)
