"""Weight decay is masked by param role, also for stacked (scanned) params; schedules take a
traced peak."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from initlab.train import optim


@pytest.mark.parametrize('name', ['constant', 'cosine', 'warmup_cosine'])
def test_schedules_take_a_traced_peak_as_the_vmap_runner_passes_it(name):
  opt = ml_collections.ConfigDict(
    dict(schedule=name, learning_rate=1e-3, warmup_steps=10, end_lr_ratio=0.1)
  )
  steps = jnp.array([0, 5, 10, 50, 100])
  peaks = jnp.array([1e-3, 3e-2])
  mapped = jax.vmap(lambda lr: optim.schedule(opt, 100, lr)(steps))(peaks)
  for peak, row in zip([1e-3, 3e-2], mapped):
    if name == 'constant':
      want = optax.constant_schedule(peak)(steps)
    elif name == 'cosine':
      want = optax.cosine_decay_schedule(peak, 100, alpha=0.1)(steps)
    else:
      want = optax.warmup_cosine_decay_schedule(0.0, peak, 10, 100, end_value=0.1 * peak)(steps)
    np.testing.assert_allclose(row, want, rtol=1e-6)


def test_weight_decay_skips_stacked_biases_and_norms():
  params = {
    'blocks': {
      'mlp': {'kernel': jnp.ones((2, 4, 4)), 'bias': jnp.ones((2, 4))},
      'norm': {'scale': jnp.ones((2, 4)), 'bias': jnp.ones((2, 4))},
    },
    'embed': {'embedding': jnp.ones((8, 4))},
  }
  mask = optim._decay_mask(params)  # pylint: disable=protected-access
  assert mask['blocks']['mlp']['kernel'] and mask['embed']['embedding']
  assert not (
    mask['blocks']['mlp']['bias']
    or mask['blocks']['norm']['scale']
    or mask['blocks']['norm']['bias']
  )
  tx = optax.add_decayed_weights(0.5, mask=optim._decay_mask)  # pylint: disable=protected-access
  updates, _ = tx.update(optax.tree.zeros_like(params), tx.init(params), params)
  np.testing.assert_array_equal(updates['blocks']['mlp']['kernel'], 0.5)
  np.testing.assert_array_equal(updates['blocks']['norm']['scale'], 0.0)


# --- Extra transforms (`config.optimizer.extra`), and train.run's start_from / callbacks. ---

import json  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import ml_collections  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from scipy import optimize, special  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from initlab import config as config_lib  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from initlab import train  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def _ref_beta(x):
  """β̂ with Γ(1/β)Γ(3/β)/Γ(2/β)² = N·Σx²/(Σ|x|)² (moment estimator, arXiv 2506.00486), float64."""
  rho = x.size * np.sum(x**2) / np.sum(np.abs(x)) ** 2
  log_r = lambda b: (
    special.gammaln(1 / b) + special.gammaln(3 / b) - 2 * special.gammaln(2 / b) - np.log(rho)
  )
  return optimize.brentq(log_r, 0.05, 20.0, xtol=1e-14)


def _ref_unit_step(params, lam, masked):
  """BackSlash's unit step θ − λ·β̂·sign(θ)(|θ|+1)^(β̂−1) on the `masked` leaves (rdo = λN,
  arXiv 2504.16968), in float64; β̂ jointly over those leaves."""
  flat = {k: np.asarray(v, np.float64) for k, v in params.items()}
  beta = _ref_beta(np.concatenate([flat[k].ravel() for k in masked]))
  return {
    k: (v - lam * beta * np.sign(v) * (np.abs(v) + 1) ** (beta - 1) if k in masked else v)
    for k, v in flat.items()
  }


def _opt(**extra_fields):
  opt = config_lib.default_config().optimizer
  opt.name, opt.learning_rate = 'sgd', 0.1
  opt.update(extra_fields)
  return opt


def test_backslash_extra_is_the_reference_unit_step_after_the_optimizer():
  rng = np.random.default_rng(0)
  params = {
    'dense': {'kernel': rng.normal(0, 0.3, (6, 5)), 'bias': rng.normal(0, 0.3, (5,))},
    'embed': {'embedding': rng.laplace(0, 0.2, (7, 3))},
  }
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
  lam = 1e-2
  tx = optim.make(_opt(extra=(('backslash', {'rdo_per_param': lam}),)), 10)
  updates, _ = tx.update(grads, tx.init(params), params)
  got = optax.apply_updates(params, updates)
  sgd = jax.tree.map(lambda p, g: np.float64(p) - 0.1 * np.float64(g), params, grads)
  flat = {'k': sgd['dense']['kernel'], 'b': sgd['dense']['bias'], 'e': sgd['embed']['embedding']}
  want = _ref_unit_step(flat, lam, masked=('k', 'e'))
  np.testing.assert_array_equal(got['dense']['bias'], np.float32(want['b']))  # not a weight
  for key, path in (('k', ('dense', 'kernel')), ('e', ('embed', 'embedding'))):
    moved = np.float64(got[path[0]][path[1]]) - flat[key]
    np.testing.assert_allclose(moved, want[key] - flat[key], rtol=2e-4, atol=1e-7)
  # rdo = λ·N with N the masked count (6·5 + 7·3) is the same transform.
  tx_rdo = optim.make(_opt(extra=(('backslash', {'rdo': lam * 51}),)), 10)
  same, _ = tx_rdo.update(grads, tx_rdo.init(params), params)
  for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(same)):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_registered_transform_by_name_and_as_bare_name():
  name = 'test_double_updates'
  if name not in optim.transform_names():

    @optim.register_transform(name)
    def double(factor: float = 2.0):  # pylint: disable=unused-variable
      return optax.scale(factor)

  with pytest.raises(ValueError, match='already registered'):
    optim.register_transform(name)(lambda: optax.identity())
  params = {'w': jnp.ones((3,))}
  grads = {'w': jnp.arange(3.0)}
  plain = optim.make(_opt(), 10)
  for extra, factor in (((name,), 2.0), (((name, {'factor': 3.0}),), 3.0), ((name, name), 4.0)):
    tx = optim.make(_opt(extra=extra), 10)
    got, _ = tx.update(grads, tx.init(params), params)
    want, _ = plain.update(grads, plain.init(params), params)
    np.testing.assert_allclose(got['w'], factor * want['w'], err_msg=str(extra))


@pytest.mark.parametrize(
  'extra, words',
  [
    ((('nope', {}),), ['extra[0]', "'nope'", 'backslash']),
    ((('backslash', {'rdoo': 1.0}),), ['extra[0]', "'rdoo'", 'rdo_per_param', 'mask']),
    ((('backslash', {'mask': 'biases'}),), ["'biases'", "'weights'", "'all'"]),
    ((('backslash', {'rdo': 1.0, 'rdo_per_param': 1e-3}),), ['rdo or rdo_per_param']),
    ((('backslash', {'method': 'fast'}),), ["'fast'", 'exact']),
    (('backslash', ('backslash', 1.0)), ['extra[1]', '(name, {option: value}) pair']),
  ],
)
def test_bad_extra_is_a_config_error_naming_valid_choices(extra, words):
  config = config_lib.default_config()
  config.optimizer.extra = extra
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(config, num_devices=1, process_count=1)
  for word in words:
    assert word in str(e.value), (word, str(e.value))
  with pytest.raises(config_lib.ConfigError, match='tuple of transform names'):
    optim.parse_extra('backslash')  # A config's type check stops this one earlier.


def test_extra_survives_the_config_json_and_validates():
  config = config_lib.default_config()
  config.optimizer.extra = (('backslash', {'rdo_per_param': 1e-3, 'mask': 'all'}),)
  config_lib.validate(config, num_devices=1, process_count=1)
  back = ml_collections.ConfigDict(json.loads(config.to_json()))
  assert back.optimizer.extra == [['backslash', {'rdo_per_param': 1e-3, 'mask': 'all'}]]
  config_lib.validate(back, num_devices=1, process_count=1)
  assert isinstance(optim.make(back.optimizer, 5), optax.GradientTransformation)


def test_run_applies_extra_calls_back_and_starts_from_a_state(tiny_config, tmp_path):
  lam = 1e-3
  config = tiny_config(steps=2, eval_every=1, checkpoint_every=0)
  config.optimizer.learning_rate = 0.0  # Only BackSlash moves the params.
  config.optimizer.extra = (('backslash', {'rdo_per_param': lam}),)
  seen = []

  def record(step, state, metrics):
    seen.append((step, dict(metrics), jax.device_get(state.params)))

  result = train.run(config, tmp_path / 'a', callbacks=[record])
  assert [s for s, _, _ in seen] == [0, 1, 2]
  assert seen[0][1] == {} and set(seen[2][1]) == {'loss', 'accuracy'}
  assert result.summary == json.loads((tmp_path / 'a' / 'summary.json').read_text())
  assert result.summary['final']['eval/loss'] == seen[2][1]['loss']
  # Two unit steps from the init params (float64 reference).
  flat = lambda p: {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(p)}
  want = flat(seen[0][2])
  kernels = [k for k in want if 'kernel' in k]
  for _ in range(2):
    want = _ref_unit_step(want, lam, kernels)
  got, init = flat(jax.device_get(result.state.params)), flat(seen[0][2])
  for k in got:  # The moves (~λ·β̂ per step) to float32 rounding of θ (~3e-8).
    np.testing.assert_allclose(got[k] - init[k], want[k] - init[k], rtol=1e-4, atol=1e-7, err_msg=k)
  assert all(np.median(np.abs(got[k] - init[k])) > 1e-3 for k in kernels)
  # start_from: the params of `result.state` (lr 0, no extra: they stay), fresh optimizer state.
  config.optimizer.extra = ()
  again = train.run(config, tmp_path / 'b', start_from=result.state)
  for a, b in zip(jax.tree.leaves(again.state.params), jax.tree.leaves(result.state.params)):
    np.testing.assert_array_equal(a, b)
  assert int(again.state.step) == 2 and again.summary['resumed_from'] is None
  # The returned Run evaluates other params on the same eval split.
  with jax.set_mesh(again.run.mesh):
    assert again.run.evaluate(again.state) == {
      k[len('eval/') :]: v for k, v in again.summary['final'].items() if k.startswith('eval/')
    }
