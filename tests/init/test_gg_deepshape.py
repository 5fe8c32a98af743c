"""DeepShape (arXiv 2506.00486 v1–v3; the authors' `GGD_deepshape`): histogram specification
onto a narrower GG."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import optimize, special, stats

import initlab.init as ii
from initlab.init import gg

SCALE = 2.0**13


def _params():
  x = stats.gennorm.rvs(1.2, scale=0.03, size=200_000, random_state=0).astype(np.float32)
  return {
    'a': {'kernel': jnp.asarray(x[:120_000].reshape(300, 400))},
    'b': {'kernel': jnp.asarray(x[120_000:].reshape(400, 200)), 'bias': jnp.zeros((16,))},
  }


def _flat(tree):
  return np.concatenate(
    [
      np.asarray(tree['a']['kernel']).ravel(),
      np.asarray(tree['b']['bias']),
      np.asarray(tree['b']['kernel']).ravel(),
    ]
  )


# The target is GG(β', α') cut to ±T; it re-fits to (β', α') when (T/α')^β' ≫ 1.
@pytest.mark.parametrize(
  'leftover, adj_minnum, std_scale', [('keep', 200, 0.6), ('spread', 2, 0.4)]
)
def test_refits_to_the_target_and_is_monotone(leftover, adj_minnum, std_scale):
  params = _params()
  out, info = gg.deepshape(
    params, std_scale=std_scale, adj_minnum=adj_minnum, leftover=leftover, return_info=True
  )
  before, after = _flat(params), _flat(out)
  inside = np.abs(after) * SCALE <= info.half_range
  refit = gg.fit(after[inside])
  assert float(refit.beta) == pytest.approx(info.beta_target, rel=0.05)
  assert float(refit.alpha) == pytest.approx(info.alpha_target, rel=0.05)
  assert info.beta_target == pytest.approx(0.8 * info.beta)
  assert info.alpha_target == pytest.approx(std_scale * info.alpha)
  order = np.argsort(before, kind='stable')
  assert np.all(np.diff(after[order]) >= 0)  # rank-preserving
  np.testing.assert_array_equal(after * SCALE, np.round(after * SCALE))  # on the 2^-13 grid
  q = np.round(before * SCALE)
  out_of_range = np.abs(q - round(info.mu * SCALE)) > info.half_range
  np.testing.assert_array_equal(after[out_of_range] * SCALE, q[out_of_range])
  assert gg.grid_entropy(out) < gg.grid_entropy(params) - 0.2


def _authors_deepshape(theta, adj_minnum, shape_scale=0.8, std_scale=0.6, bits=13):
  """DeepShape as the authors describe it (arXiv 2506.00486 v1–v3; their `GGD_deepshape`), read
  independently of initlab: float64 numpy, one target bin at a time.

  q = round(θ·2^b) (their quantizer is not published); T = the smallest positive grid value
  present at most adj_minnum times; a moment fit (β by Brent on r(β) = ρ̂) of the θ with
  |θ| ≤ T·2^-b; μ_q = trunc(mean·2^b); the M entries with |q − μ_q| ≤ T, in increasing q, fill
  x = μ_q − T … μ_q + T upward with ⌊M·p(x)⌋ entries each, p ∝ exp(−(|x − μ_q|/α')^β'); the rest
  keep q. Ties in q are ordered by θ (initlab's tie-break; their sort leaves it open).
  Returns (new grid integers, indices of the floor leftovers, the last value given, fit info).
  """
  th, scale = theta.astype(np.float64), 2.0**bits
  q = np.round(th * scale).astype(np.int64)
  values, counts = np.unique(q, return_counts=True)
  half = int(values[(values > 0) & (counts <= adj_minnum)].min())
  cut = th[np.abs(th) <= half / scale]
  rho = cut.size * np.sum(cut**2) / np.sum(np.abs(cut)) ** 2
  log_r = lambda b: special.gammaln(1 / b) + special.gammaln(3 / b) - 2 * special.gammaln(2 / b)
  beta = optimize.brentq(lambda b: log_r(b) - np.log(rho), 0.02, 50, xtol=1e-14)
  alpha = np.sqrt(np.mean(cut**2) * special.gamma(1 / beta) / special.gamma(3 / beta))
  mu = int(np.mean(cut) * scale)
  inside = np.nonzero(np.abs(q - mu) <= half)[0]
  order = inside[np.lexsort((th[inside], q[inside]))]
  xs = np.arange(mu - half, mu + half + 1)
  p = np.exp(-((np.abs(xs - mu) / (std_scale * alpha * scale)) ** (shape_scale * beta)))
  per_bin = np.floor(order.size * p / p.sum()).astype(np.int64)
  new, pos = q.copy(), 0
  for x, c in zip(xs, per_bin):
    new[order[pos : pos + c]] = x
    pos += c
  info = dict(beta=beta, alpha=alpha, mu=mu, half=half, m=order.size)
  return new, order[pos:], xs[np.nonzero(per_bin)[0][-1]], info


@pytest.mark.parametrize('adj_minnum', [10, 200])
def test_keep_matches_the_authors_algorithm(adj_minnum):
  params = _params()
  theta = _flat(params)
  want, leftovers, last, ref = _authors_deepshape(theta, adj_minnum)
  out, info = gg.deepshape(params, adj_minnum=adj_minnum, return_info=True)
  assert (info.half_range, info.num_in_range, info.mu * SCALE) == (ref['half'], ref['m'], ref['mu'])
  assert info.beta == pytest.approx(ref['beta'], rel=1e-5)
  assert info.alpha == pytest.approx(ref['alpha'], rel=1e-5)
  got = np.round(_flat(out) * SCALE).astype(np.int64)
  np.testing.assert_array_equal(_flat(out) * SCALE, got)
  differ = got != want
  assert not np.any(np.delete(differ, leftovers))  # equal everywhere but the leftovers,
  q = np.round(theta.astype(np.float64) * SCALE).astype(np.int64)
  np.testing.assert_array_equal(got[leftovers], np.maximum(q[leftovers], last))  # raised (doc)


def test_spread_gives_every_entry_in_range_a_largest_remainder_count():
  params = _params()
  out, info = gg.deepshape(params, adj_minnum=2, std_scale=0.4, leftover='spread', return_info=True)
  theta, got = _flat(params).astype(np.float64), np.round(_flat(out) * SCALE).astype(np.int64)
  q, mu, half = np.round(theta * SCALE).astype(np.int64), round(info.mu * SCALE), info.half_range
  inside = np.abs(q - mu) <= half
  assert inside.sum() == info.num_in_range
  xs = np.arange(mu - half, mu + half + 1)
  p = np.exp(-((np.abs(xs - mu) / (info.alpha_target * SCALE)) ** info.beta_target))
  share = info.num_in_range * p / p.sum()
  counts = np.array([np.sum(got[inside] == x) for x in xs])
  assert counts.sum() == info.num_in_range  # no leftovers
  assert np.all((counts == np.floor(share)) | (counts == np.floor(share) + 1))
  np.testing.assert_array_equal(got[~inside], q[~inside])


def test_half_range_rule():
  q = np.r_[np.zeros(50), np.ones(30), 2 * np.ones(5), 3 * np.ones(40), -np.ones(9)]
  q = jnp.asarray(np.sort(q).astype(np.int32))
  assert gg.grid_half_range(q, 10) == 2 and gg.grid_half_range(q, 100) == 1
  assert gg.grid_half_range(q, 0) == 4  # first empty positive bin


def test_tensor_primitive_hits_a_given_target():
  # 200_016 values, as `_params()`: the compiled programs are reused
  x = stats.gennorm.rvs(2.0, scale=0.05, size=(12_501, 16), random_state=1).astype(np.float32)
  y = gg.deepshape_tensor(x, 1.0, 0.02, half_range=int(0.3 * SCALE), leftover='spread')
  assert y.shape == x.shape and y.dtype == x.dtype
  f = gg.fit(y)
  assert float(f.beta) == pytest.approx(1.0, rel=0.05)
  assert float(f.alpha) == pytest.approx(0.02, rel=0.05)


def test_keeps_tree_type_dtypes_and_unselected_leaves():
  rng = np.random.default_rng(0)
  state = nnx.state(nnx.eval_shape(lambda: nnx.Linear(64, 32, rngs=nnx.Rngs(0))), nnx.Param)
  state = ii.map_leaves(lambda l: jnp.asarray(0.1 * rng.normal(size=l.shape), jnp.float32), state)
  out = gg.deepshape(state, adj_minnum=5, grid_bits=6, include='.*kernel')
  assert type(out) is type(state)
  np.testing.assert_array_equal(out['bias'][...], state['bias'][...])
  assert out['kernel'][...].dtype == jnp.float32 and out['kernel'][...].shape == (64, 32)


def test_bad_options():
  with pytest.raises(ValueError, match="leftover='drop'"):
    gg.deepshape(_params(), leftover='drop')
  with pytest.raises(ValueError, match='constant'):
    gg.deepshape({'w': jnp.zeros((8, 8))})
  with pytest.raises(ValueError, match='lower grid_bits'):
    gg.deepshape({'w': jnp.linspace(-1, 1, 64).reshape(8, 8)}, adj_minnum=0)
