"""BackSlash rate term (Wu et al., arXiv 2504.16968; the authors' `backslash.py::backslash(model)`
on the project page of arXiv 2506.00486, huggingface.co/spaces/shifeng3711/gg_prior).

    R(θ) = (rdo/N)·Σᵢ (|θᵢ| + clip)^β̂          (a negative log-GG prior, shifted by clip)
    ∇R(θ) = (rdo·β̂/N)·sign(θ)·(|θ| + clip)^(β̂−1)

N is the number of selected params and β̂ their joint shape estimate (`estimate`), treated as a
constant (no gradient through β̂). At θ = 0 we use sign(0) = 0 (the reference's `sign`), where
`jax.grad` of |θ| would give +1.

Two ways to apply it:
  * `backslash(...)` placed *before* the optimizer, like `optax.add_decayed_weights`: it adds
    +∇R to the gradients, so `optax.chain(backslash(), optax.sgd(lr))` is SGD on loss + R and
    the rate step is scaled by −lr (and preconditioned by adaptive optimizers).
  * the reference form: a unit step θ ← θ − ∇R(θ) after every optimizer step, with β̂ estimated
    on the stepped params. `backslash_step(params)` is that pure function, and
    `backslash(unit_step=True)` placed *last* in a chain adds −∇R(θ + u) to the updates u, so
    `optax.apply_updates` gives exactly `backslash_step(apply_updates(θ, u))`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from initlab.init.gg import estimate as est


def _num_params(params) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


def estimate_beta(params, method: str = 'exact'):
  """Joint shape estimate β̂ over all leaves of `params` (`estimate`, about 0); jittable.

  `method` is "exact" or "grid" (the reference's clamped 0.10…2.99 table). NaN when all params
  are zero.
  """
  if method not in ('exact', 'grid'):
    raise ValueError(f"estimate_beta: method={method!r}; valid choices: ('exact', 'grid')")
  return _estimate_beta(params, method)


@functools.partial(jax.jit, static_argnums=1)
def _estimate_beta(params, method):
  leaves = [x.astype(jnp.result_type(x, jnp.float32)) for x in jax.tree_util.tree_leaves(params)]
  n = sum(x.size for x in leaves)
  s1 = sum(jnp.sum(jnp.abs(x)) for x in leaves)
  s2 = sum(jnp.sum(jnp.square(x)) for x in leaves)
  rho = n * s2 / jnp.where(s1 > 0, s1, 1.0) ** 2
  return jnp.where(s1 > 0, est.beta_from_ratio(rho, method), jnp.nan)


def rate(params, beta_hat, rdo: float = 2e3, clip: float = 1.0):
  """R(θ) = (rdo/N)·Σ(|θ| + clip)^β̂ over all leaves (scalar)."""
  n = _num_params(params)
  total = sum(jnp.sum((jnp.abs(x) + clip) ** beta_hat) for x in jax.tree_util.tree_leaves(params))
  return rdo / n * total


@jax.jit
def rate_grad(params, beta_hat, rdo: float = 2e3, clip: float = 1.0):
  """∇R(θ) = (rdo·β̂/N)·sign(θ)·(|θ| + clip)^(β̂−1), a tree like `params` (same dtypes)."""
  n = _num_params(params)

  def grad(x):
    x32 = x.astype(jnp.result_type(x, jnp.float32))
    b = jnp.asarray(beta_hat, x32.dtype)
    return (rdo * b / n * jnp.sign(x32) * (jnp.abs(x32) + clip) ** (b - 1.0)).astype(x.dtype)

  return jax.tree_util.tree_map(grad, params)


def backslash_step(
  params, beta_hat=None, rdo: float = 2e3, clip: float = 1.0, method: str = 'exact'
):
  """The authors' unit step θ ← θ − ∇R(θ) (module doc); β̂ = `estimate_beta(params)` if None."""
  if beta_hat is None:
    beta_hat = estimate_beta(params, method)
  return jax.tree_util.tree_map(lambda p, g: p - g, params, rate_grad(params, beta_hat, rdo, clip))


class BackslashState(NamedTuple):
  """count: updates seen; beta_hat: the current joint shape estimate."""

  count: jax.Array
  beta_hat: jax.Array


def _backslash(rdo, clip, reestimate_every, method, unit_step):
  def init_fn(params):
    beta = estimate_beta(params, method)
    return BackslashState(jnp.zeros((), jnp.int32), jnp.where(jnp.isnan(beta), 2.0, beta))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('backslash needs the params: call update(grads, state, params)')
    target = optax.apply_updates(params, updates) if unit_step else params
    beta = jax.lax.cond(
      state.count % reestimate_every == 0,
      lambda: estimate_beta(target, method),
      lambda: state.beta_hat,
    )
    beta = jnp.where(jnp.isnan(beta), state.beta_hat, beta).astype(state.beta_hat.dtype)
    g = rate_grad(target, beta, rdo, clip)
    sign = -1.0 if unit_step else 1.0
    updates = jax.tree_util.tree_map(lambda u, gi: (u + sign * gi).astype(u.dtype), updates, g)
    return updates, BackslashState(optax.safe_increment(state.count), beta)

  return optax.GradientTransformation(init_fn, update_fn)


def backslash(
  rdo: float = 2e3,
  clip: float = 1.0,
  reestimate_every: int = 1,
  mask: Any | Callable | None = None,
  method: str = 'exact',
  unit_step: bool = False,
) -> optax.GradientTransformation:
  """BackSlash as an optax transform (sign conventions in the module doc).

  Args:
    rdo: rate–distortion weight (the reference's 2e3).
    clip: shift of |θ| inside the rate term (keeps β̂ < 1 finite at 0).
    reestimate_every: β̂ is re-estimated jointly over the selected params every this many
      updates (from the first); in between the state's β̂ is reused.
    mask: optax-style mask (tree of bools or `params -> tree`) of the params the rate term acts
      on; N and β̂ are over those only. Others pass through unchanged.
    method: "exact" or "grid" shape estimate (`estimate_beta`).
    unit_step: the reference's unit step: place last in the chain (see module doc).

  Returns:
    A GradientTransformation whose update needs `params`; state `BackslashState`.
  """
  if not (isinstance(reestimate_every, int) and reestimate_every >= 1):
    raise ValueError(f'backslash: reestimate_every={reestimate_every!r}; expected an int ≥ 1')
  if method not in ('exact', 'grid'):
    raise ValueError(f"backslash: method={method!r}; valid choices: ('exact', 'grid')")
  if not clip >= 0:
    raise ValueError(f'backslash: clip={clip!r}; expected ≥ 0')
  tx = _backslash(rdo, clip, reestimate_every, method, unit_step)
  return tx if mask is None else optax.masked(tx, mask)
