"""Singular values of the input–output Jacobian, per example (Pennington et al. 2017).

Pennington, Schoenholz & Ganguli 2017 ("Resurrecting the sigmoid in deep learning through
dynamical isometry") study the spectrum of J = ∂y/∂x of a deep network at init: dynamical
isometry means all singular values of J concentrate near 1. Here J is the Jacobian of one
example's flattened output (m values) with respect to its flattened input (n values).

Exact when min(m, n) ≤ `max_dim`: J is built with `jax.jacrev` (m ≤ n, m VJPs) or
`jax.jacfwd` (n < m, n JVPs) and its min(m, n) singular values are returned.

Otherwise a random sketch (documented estimate): with k = `max_dim` and a Haar-random
row-orthonormal P (k × m) — or column-orthonormal Q (n × k) when the input is the smaller
side — the k singular values of P J (or J Q) are returned. Since E‖P J‖²_F = (k/m)‖J‖²_F,
their mean square is an unbiased estimate of J's mean squared singular value; by Cauchy
interlacing their max is a lower bound on σ_max(J) and their max/min a lower bound on the
condition number of J.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def _haar_columns(key, rows: int, cols: int) -> jax.Array:
  """(rows, cols) with orthonormal columns, Haar-distributed (QR of a Gaussian, signs fixed)."""
  q, r = jnp.linalg.qr(jax.random.normal(key, (rows, cols)))
  return q * jnp.sign(jnp.diag(r))


def singular_values(
  f: Callable[[jax.Array], jax.Array], x: jax.Array, key: jax.Array, max_dim: int = 256
) -> jax.Array:
  """Singular values (descending) of the Jacobian of `f` at `x`.

  Args:
    f: maps a flat (n,) input to a flat (m,) output.
    x: (n,) point at which the Jacobian is taken.
    key: used only for the sketch (min(m, n) > max_dim).
    max_dim: largest min(m, n) computed exactly; also the sketch size k.

  Returns:
    (min(m, n),) exact singular values, or (max_dim,) sketched ones (see module docstring).
  """
  n = x.shape[0]
  m = jax.eval_shape(f, x).shape[0]
  if min(m, n) <= max_dim:
    jac = (jax.jacrev if m <= n else jax.jacfwd)(f)(x)  # (m, n)
    return jnp.linalg.svd(jac, compute_uv=False)
  if m <= n:  # P J via k VJPs
    p = _haar_columns(key, m, max_dim).T  # (k, m)
    _, vjp = jax.vjp(f, x)
    sketch = jax.vmap(lambda v: vjp(v)[0])(p)  # (k, n)
  else:  # J Q via k JVPs
    q = _haar_columns(key, n, max_dim)  # (n, k)
    sketch = jax.vmap(lambda v: jax.jvp(f, (x,), (v,))[1], out_axes=1)(q.T)  # (m, k)
  return jnp.linalg.svd(sketch, compute_uv=False)


def is_exact(m: int, n: int, max_dim: int) -> bool:
  return min(m, n) <= max_dim


def summary(sv) -> dict[str, float]:
  """Spectrum summary of singular values `sv` of shape (E, k) (E examples, pooled).

  mean_sq_sv: mean of σ² (Pennington et al.'s ⟨σ²⟩, = ‖J‖²_F / min(m, n) when exact);
  max_sv, min_sv: over all examples; condition: mean over examples of σ_max/σ_min (inf if
  some σ_min is 0, NaN if some J is 0). All NaN for no examples (E = 0).
  """
  sv = np.asarray(sv, np.float64)
  if not sv.size:  # Also [] read back from JSON (a (0, k) array loses its k there).
    return dict(mean_sq_sv=np.nan, max_sv=np.nan, min_sv=np.nan, condition=np.nan)
  sv = sv.reshape(-1, sv.shape[-1])
  with np.errstate(divide='ignore', invalid='ignore'):
    cond = np.where(sv[:, -1] > 0, sv[:, 0] / sv[:, -1], np.where(sv[:, 0] > 0, np.inf, np.nan))
  return dict(
    mean_sq_sv=float(np.mean(sv**2)),
    max_sv=float(sv.max()),
    min_sv=float(sv.min()),
    condition=float(np.mean(cond)),
  )
