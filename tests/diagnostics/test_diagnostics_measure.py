"""`measure` / `compare` / `Diagnostics` on tiny models (tests/diagnostics/conftest.py)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import initlab.diagnostics as dg
import initlab.init as ii


def test_measure_shapes_and_forward_stats(toys, gaussian):
  model = toys.MLP(act=jnp.tanh, rngs=nnx.Rngs(0))
  x = gaussian((8, 8))
  d = dg.measure(model, x, key=jax.random.key(0), num_jacobian_examples=3)
  assert d.names == ('layer_0', 'layer_1', 'out') and d.depth == 3
  for field in ('q', 'var', 'c', 'grad_q', 'grad_var'):
    assert getattr(d, field).shape == (3,)
  h = x
  for l, (_, fn) in enumerate(model.stages()):
    h = fn(h)
    assert np.isclose(d.q[l], np.mean(np.square(h)), rtol=1e-5)
    assert np.isclose(d.var[l], np.mean(np.var(np.asarray(h), axis=0)), rtol=1e-5)
    assert np.isclose(d.c[l], dg.correlation(h), atol=1e-6)
  assert np.isclose(d.input_q, np.mean(np.square(x)), rtol=1e-5)
  assert d.jacobian_sv.shape == (3, 4) and d.jacobian_shape == (4, 8) and d.jacobian_exact
  # The exact Jacobian of example 0, by hand.
  f = lambda v: model(v[None])[0]
  sv0 = np.linalg.svd(np.asarray(jax.jacrev(f)(x[0])), compute_uv=False)
  np.testing.assert_allclose(d.jacobian_sv[0], sv0, rtol=1e-5, atol=1e-6)


def test_gradients_are_the_probe_pulled_back(toys, gaussian):
  d = dg.measure(toys.Scale(3.0, rngs=nnx.Rngs(0)), gaussian((64, 6)), key=jax.random.key(0))
  assert np.isclose(d.grad_q[0], 9 * d.grad_q[1], rtol=1e-5)  # ∂L/∂h_1 = 3 ∂L/∂h_2
  assert np.isclose(d.grad_var[0], 9 * d.grad_var[1], rtol=1e-5)
  assert abs(d.grad_q[1] - 1) < 0.15  # the unit-variance probe


def test_train_mode_uses_batch_statistics_and_is_the_default(toys, gaussian):
  model = toys.BN(rngs=nnx.Rngs(0))
  x = 5.0 + 3.0 * gaussian((64, 8))
  d = dg.measure(model, x, key=jax.random.key(0))
  assert d.train is True
  # relu of a batch-normalized unit has mean square 1/2 (as at the first training step).
  assert abs(d.q[1] - 0.5) < 0.05 and d.q[0] > 5
  # Eval mode: running stats at init (mean 0, var 1) keep the raw scale, q = mean relu(xW)²
  # / (1 + eps), computed here in float64 from the same kernel.
  e = dg.measure(model, x, key=jax.random.key(0), train=False)
  z = np.asarray(x, np.float64) @ np.asarray(model.dense.kernel[...], np.float64)
  assert e.train is False
  np.testing.assert_allclose(e.q[1], np.mean(np.maximum(z, 0) ** 2) / (1 + 1e-5), rtol=1e-4)
  assert e.q[1] > 20 * d.q[1]
  assert np.all(np.isfinite(d.grad_q)) and np.all(d.grad_q > 0)
  assert np.all(np.isfinite(d.jacobian_sv))  # eval-mode Jacobian
  assert float(model.norm.mean[...].sum()) == 0.0  # model state untouched


def test_integer_inputs_start_the_jacobian_at_the_embedding(toys):
  tokens = jax.random.randint(jax.random.key(0), (6, 4), 0, 11)
  d = dg.measure(toys.Tokens(rngs=nnx.Rngs(0)), tokens, key=jax.random.key(0))
  assert d.jacobian_from == 'embed' and d.jacobian_shape == (4 * 5, 4 * 8)
  assert np.isnan(d.input_q) and np.all(np.isfinite(d.q))
  assert d.jacobian_sv.shape == (4, 20)


def test_sketched_and_skipped_jacobians(toys, gaussian):
  model = toys.MLP(act=jnp.tanh, rngs=nnx.Rngs(0))
  x = gaussian((8, 8))
  exact = dg.measure(model, x, key=jax.random.key(0), num_jacobian_examples=8)
  sketch = dg.measure(model, x, key=jax.random.key(0), num_jacobian_examples=8, max_jacobian_dim=2)
  assert exact.jacobian_exact and not sketch.jacobian_exact
  assert sketch.jacobian_sv.shape == (8, 2)
  # Cauchy interlacing, per example: σ_i(P J) ≤ σ_i(J) and σ_2(P J) ≥ σ_4(J).
  assert np.all(sketch.jacobian_sv <= exact.jacobian_sv[:, :2] * (1 + 1e-5))
  assert np.all(sketch.jacobian_sv[:, 1] >= exact.jacobian_sv[:, 3] * (1 - 1e-5))
  np.testing.assert_array_equal(sketch.q, exact.q)
  skipped = dg.measure(model, x, key=jax.random.key(0), num_jacobian_examples=0)
  assert skipped.jacobian_sv.shape == (0, 4) and np.isnan(skipped.summary()['max_sv'])
  np.testing.assert_array_equal(skipped.grad_q, exact.grad_q)


def test_to_dict_is_json_and_round_trips(toys, gaussian):
  results = dg.compare(
    lambda rngs: toys.MLP(act=jnp.tanh, rngs=rngs),
    {'gauss': toys.scheme(), 'zeros': ii.get_scheme('zeros')},
    gaussian((8, 8)),
    jax.random.key(0),
    num_jacobian_examples=3,
  )
  for d in results.values():
    back = dg.Diagnostics.from_dict(json.loads(json.dumps(d.to_dict(), allow_nan=False)))
    for field in ('q', 'c', 'grad_q', 'jacobian_sv'):
      np.testing.assert_array_equal(getattr(back, field), getattr(d, field))
    assert back.names == d.names and back.jacobian_shape == d.jacobian_shape
    assert back.train is d.train is True
  zeros = results['zeros'].to_dict()
  # initlab.rundir's non-finite rule, the same as every other JSON file of a run.
  assert zeros['c'] == ['nan'] * 3 and zeros['summary']['q_ratio'] == 'nan'
  assert np.all(np.isnan(dg.Diagnostics.from_dict(zeros).c))
  old = dict(zeros, c=[None] * 3)  # files written before the rule
  del old['train']
  back = dg.Diagnostics.from_dict(old)
  assert np.all(np.isnan(back.c)) and back.train is None
  with pytest.raises(KeyError, match='jacobian_sv'):
    dg.Diagnostics.from_dict({k: v for k, v in zeros.items() if k != 'jacobian_sv'})


def test_compare_is_independent_of_scheme_order(toys, gaussian):
  make = lambda rngs: toys.MLP(act=jnp.tanh, rngs=rngs)
  x = gaussian((8, 8))
  small, big = toys.scheme(0.5), toys.scheme(2.0)
  kw = dict(num_jacobian_examples=3)
  a = dg.compare(make, {'small': small, 'big': big}, x, jax.random.key(3), **kw)
  b = dg.compare(make, {'big': big, 'small': small}, x, jax.random.key(3), **kw)
  assert list(b) == ['big', 'small']
  for name in a:
    np.testing.assert_array_equal(a[name].q, b[name].q)
    np.testing.assert_array_equal(a[name].jacobian_sv, b[name].jacobian_sv)
  assert np.all(a['big'].q > a['small'].q)


def test_compare_passes_context_and_rejects_architecture_changes(toys, gaussian):
  seen = {}

  def spy(key, params, ctx):
    seen['batch'], seen['out'] = ctx.batch.shape, ctx.apply_fn(params, ctx.batch).shape
    return params

  dg.compare(
    lambda rngs: toys.MLP(act=jnp.tanh, rngs=rngs),
    {'spy': spy},
    gaussian((8, 8)),
    jax.random.key(0),
    num_jacobian_examples=3,
  )
  assert seen == {'batch': (8, 8), 'out': (8, 4)}
  resize = lambda key, params, ctx: ii.SchemeResult(params, None)
  with pytest.raises(ValueError, match='changes the architecture'):
    dg.compare(
      lambda rngs: toys.MLP(rngs=rngs), {'resize': resize}, gaussian((8, 8)), jax.random.key(0)
    )


def test_model_without_stages_is_a_clear_error(gaussian):
  with pytest.raises(TypeError, match='stages'):
    dg.measure(nnx.Dropout(0.5), gaussian((4, 8)), key=jax.random.key(0))
