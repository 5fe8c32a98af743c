"""BackSlash rate term (arXiv 2504.16968) against a float64 numpy reference and jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import optimize, special, stats

from initlab.init import gg


def _params(dtype=np.float64):
  x = stats.gennorm.rvs(0.8, scale=0.05, size=3000, random_state=0).astype(dtype)
  return {
    'dense': {'kernel': x[:2400].reshape(40, 60), 'bias': x[2400:2460]},
    'out': {'kernel': x[2460:].reshape(60, 9)},
  }


def _np_beta(values):
  """Moment-matching β̂ in float64: root of r(β) = ρ̂ by Brent's method."""
  x = np.concatenate([np.ravel(v) for v in values]).astype(np.float64)
  rho = x.size * np.sum(x * x) / np.sum(np.abs(x)) ** 2
  log_r = lambda b: special.gammaln(1 / b) + special.gammaln(3 / b) - 2 * special.gammaln(2 / b)
  return optimize.brentq(lambda b: log_r(b) - np.log(rho), 0.05, 20, xtol=1e-14)


def _np_step(values, beta, rdo=2e3, clip=1.0):
  n = sum(v.size for v in values)
  return [v - rdo * beta / n * np.sign(v) * (np.abs(v) + clip) ** (beta - 1) for v in values]


def test_step_matches_float64_numpy_reference():
  with jax.enable_x64(True):
    params = jax.tree_util.tree_map(jnp.asarray, _params())
    leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(params)]
    beta = _np_beta(leaves)
    assert float(gg.estimate_beta(params)) == pytest.approx(beta, rel=1e-10)
    out = jax.tree_util.tree_leaves(gg.backslash_step(params))
    for got, want in zip(out, _np_step(leaves, beta)):
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_rate_grad_is_jax_grad_of_the_rate():
  with jax.enable_x64(True):
    params = jax.tree_util.tree_map(jnp.asarray, _params())
    beta = gg.estimate_beta(params)
    auto = jax.grad(lambda p: gg.rate(p, beta, 2e3, 1.0))(params)
    manual = gg.rate_grad(params, beta, 2e3, 1.0)
    for a, m in zip(jax.tree_util.tree_leaves(auto), jax.tree_util.tree_leaves(manual)):
      np.testing.assert_allclose(a, m, rtol=1e-12)
  # at θ = 0 the subgradient sign(0) = 0 is used
  assert float(gg.rate_grad({'w': jnp.zeros(4)}, 0.7)['w'][0]) == 0.0


def test_chained_before_sgd_is_sgd_on_loss_plus_rate():
  params = jax.tree_util.tree_map(jnp.asarray, _params(np.float32))
  grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.01), params)
  lr = 0.1
  tx = optax.chain(gg.backslash(rdo=50.0, clip=0.5), optax.sgd(lr))
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  rg = gg.rate_grad(params, gg.estimate_beta(params), 50.0, 0.5)
  for u, g, r in zip(*(jax.tree_util.tree_leaves(t) for t in (updates, grads, rg))):
    np.testing.assert_allclose(u, -lr * (g + r), rtol=1e-6, atol=1e-9)
  assert int(state[0].count) == 1


def test_unit_step_placed_last_reproduces_the_reference():
  params = jax.tree_util.tree_map(jnp.asarray, _params(np.float32))
  grads = jax.tree_util.tree_map(lambda p: 0.3 * p + 0.01, params)
  tx = optax.chain(optax.sgd(0.1), gg.backslash(unit_step=True))
  updates, _ = tx.update(grads, tx.init(params), params)
  got = optax.apply_updates(params, updates)
  stepped = optax.apply_updates(
    params, optax.sgd(0.1).update(grads, optax.sgd(0.1).init(params))[0]
  )
  want = gg.backslash_step(stepped)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_reestimate_schedule_keeps_beta_in_state():
  laplace = {'w': jnp.asarray(stats.laplace.rvs(size=4000, random_state=1), jnp.float32)}
  normal = {'w': jnp.asarray(stats.norm.rvs(size=4000, random_state=2), jnp.float32)}
  tx = gg.backslash(rdo=1.0, reestimate_every=3)
  state, update, betas = tx.init(laplace), jax.jit(tx.update), []
  for params in (laplace, laplace, laplace, normal, laplace, laplace, laplace):
    _, state = update(jax.tree_util.tree_map(jnp.zeros_like, params), state, params)
    betas.append(float(state.beta_hat))
  assert betas[0] == betas[1] == betas[2] == pytest.approx(1.0, rel=0.05)  # estimated at 0
  assert betas[3] == betas[4] == betas[5] == pytest.approx(2.0, rel=0.05)  # at 3, then held
  assert betas[6] == betas[0]


def test_mask_limits_the_rate_to_the_selected_params():
  params = jax.tree_util.tree_map(jnp.asarray, _params(np.float32))
  mask = {'dense': {'kernel': True, 'bias': False}, 'out': {'kernel': True}}
  tx = gg.backslash(mask=mask)
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_array_equal(updates['dense']['bias'], 0)
  selected = {'a': params['dense']['kernel'], 'b': params['out']['kernel']}
  want = gg.rate_grad(selected, gg.estimate_beta(selected))
  np.testing.assert_allclose(updates['dense']['kernel'], want['a'], rtol=1e-6)
  np.testing.assert_allclose(updates['out']['kernel'], want['b'], rtol=1e-6)


def test_grid_method_and_errors():
  params = {'w': jnp.asarray(stats.gennorm.rvs(0.05 + 1.0, size=5000, random_state=2), jnp.float32)}
  b = float(gg.estimate_beta(params, 'grid'))
  assert round(b, 2) == pytest.approx(b, abs=1e-6) and 0.10 <= b <= 2.99
  with pytest.raises(ValueError, match='reestimate_every=0'):
    gg.backslash(reestimate_every=0)
  with pytest.raises(ValueError, match="method='mle'"):
    gg.backslash(method='mle')
  tx = gg.backslash()
  with pytest.raises(ValueError, match='needs the params'):
    tx.update(params, tx.init(params))
