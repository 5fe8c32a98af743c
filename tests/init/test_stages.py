"""initlab.init.stages: a chain split by stage gives what the chain gives; contract helpers."""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
from flax import nnx
import numpy as np
import pytest

import initlab.init as ii
from initlab import config as config_lib
from initlab import models
from initlab.config import ConfigError


def _mlp():
  cfg = models.default_config('mlp')
  cfg.update(dict(depth=2, width=8, num_classes=3, input_shape=(4,)))
  return models.build(cfg, rngs=nnx.Rngs(0))


def _data_ctx(model):
  graphdef, _, model_state = nnx.split(model, nnx.Param, ...)
  batch = dict(
    image=jax.random.normal(jax.random.key(1), (6, 4)), label=jnp.arange(6, dtype=jnp.int32) % 3
  )
  return ii.DataContext(graphdef, model_state.to_pure_dict(), (batch,), 'classification')


def _noisy(scale):
  """A param-stage scheme adding `scale` x N(0, 1) to every kernel (uses its key)."""

  def scheme(key, params, ctx=None):
    return ii.map_leaves(
      lambda l: (
        l.value + scale * jax.random.normal(jax.random.fold_in(key, ii.path_hash(l.path)), l.shape)
        if l.path.endswith('kernel')
        else l.value
      ),
      params,
    )

  return scheme


def _data_scaled():
  """A data-stage scheme: head scaled by 1/std(logits) plus key-dependent noise."""

  def scheme(key, params, ctx=None):
    data = ctx.require('data', 'scaled')
    s = 1 / jnp.std(data.apply(params, data.inputs(data.batches[0])))
    head = dict(
      params['head'],
      kernel=params['head']['kernel'] * s
      + 1e-3 * jax.random.normal(key, params['head']['kernel'].shape),
    )
    return {**params, 'head': head}

  return ii.with_stage(scheme, 'data', num_batches=3)


def test_split_chain_equals_the_chain_called_directly():
  model = _mlp()
  params = nnx.state(model, nnx.Param).to_pure_dict()
  ctx = ii.InitContext(data=_data_ctx(model))
  chained = ii.chain(_noisy(0.1), ii.chain(_noisy(0.2), _data_scaled()), _data_scaled(), warn=False)
  assert chained.stage == 'data' and len(chained.stages) == 3
  key = jax.random.key(3)
  want = chained(key, params, ctx)
  plan = ii.stages.plan(chained)
  assert plan.num_batches == 3 and [path for path, _ in plan.data] == [(1, 1), (2,)]
  got = plan.param(key, params, ii.InitContext())
  assert not np.array_equal(got['hidden'][0]['kernel'], params['hidden'][0]['kernel'])
  replicated = jax.tree.map(lambda x: x.sharding, params)
  got = ii.stages.run_data_stage(plan, key, got, ctx, replicated)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(a, b)


def test_param_stage_after_data_stage_is_an_error_naming_both():
  with pytest.raises(ValueError, match='scheme 1 .*after scheme 0'):
    ii.chain(_data_scaled(), ii.get_scheme('he_normal'))
  with pytest.raises(ValueError, match='param stage but comes after'):
    ii.stages.plan(ii.chain(ii.chain(_noisy(1.0), _data_scaled()), _noisy(1.0)))


def test_plan_of_a_param_only_scheme_is_the_scheme_itself():
  scheme = ii.get_scheme('he_normal')
  plan = ii.stages.plan(scheme)
  assert plan.param is scheme and plan.data == () and plan.num_batches == 0


def test_data_context_apply_and_loss_match_the_module():
  model = _mlp()
  data = _data_ctx(model)
  params = nnx.state(model, nnx.Param).to_pure_dict()
  batch = data.batches[0]
  np.testing.assert_allclose(data.apply(params, batch['image']), model(batch['image']), rtol=1e-6)
  logits = np.asarray(model(batch['image']), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = -np.mean(logp[np.arange(6), np.asarray(batch['label'])])
  np.testing.assert_allclose(float(data.loss(params, batch)), want, rtol=1e-5)


def test_require_names_the_scheme_and_what_it_needs():
  ctx = ii.InitContext(hints={'depth': 3}, dataset={'task': 'classification'})
  assert ctx.require('depth', 's') == 3 and ctx.require('task', 's') == 'classification'
  with pytest.raises(ConfigError, match="'virgo' needs 'degree_stats'.*task") as e:
    ctx.require('degree_stats', 'virgo')
  assert '\n' not in str(e.value)
  with pytest.raises(ConfigError, match="'lsuv' needs the data stage"):
    ctx.require('data', 'lsuv')
  with pytest.raises(ConfigError, match='config.init.pretrained'):
    ctx.require('pretrained', 'learngene')


def test_with_stage_sets_attributes_and_refuses_unknown_stages():
  fn = ii.with_stage(lambda key, params, ctx=None: params, 'data', num_batches=4)
  assert (fn.stage, fn.num_batches, ii.stage_of(fn)) == ('data', 4, 'data')
  assert ii.stage_of(lambda key, params, ctx=None: params) == 'param'
  with pytest.raises(ValueError, match="unknown stage 'batch'; valid: param, data"):
    ii.with_stage(fn, 'batch')


def test_chain_hands_a_scheme_result_on_to_later_parts():
  """A part that changes the architecture (SchemeResult) passes its params to the next part,
  and the chain returns a SchemeResult (it handed a SchemeResult to part 1 before)."""

  def grow(key, params, ctx=None):
    return ii.SchemeResult({**params, 'extra': {'kernel': jnp.ones((2, 2))}}, {'depth': 9})

  params = {'dense': {'kernel': jnp.zeros((2, 2))}}
  out = ii.chain(grow, _noisy(1.0))(jax.random.key(0), params)
  assert isinstance(out, ii.SchemeResult) and out.model_config == {'depth': 9}
  assert sorted(out.params) == ['dense', 'extra']
  want = _noisy(1.0)(
    jax.random.fold_in(jax.random.key(0), 1), {**params, 'extra': {'kernel': jnp.ones((2, 2))}}
  )
  for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(a, b)


def test_split_chain_hands_a_scheme_result_on_like_the_chain():
  """plan(chain(grow, he_normal, lsuv)).param: he_normal gets grow's params (not the
  SchemeResult), and the param stage returns a SchemeResult with grow's model config (so the
  run's architecture stage sees the change), equal to the chain's param parts called directly."""
  grown = {'dense': {'kernel': jnp.zeros((4, 8)), 'bias': jnp.zeros((8,))}}

  def grow(key, params, ctx=None):
    del key, params
    return ii.SchemeResult(grown, {'width': 8})

  he = ii.get_scheme('he_normal')
  plan = ii.stages.plan(ii.chain(grow, he, ii.get_scheme('lsuv')))
  key = jax.random.key(5)
  out = plan.param(key, {'dense': {'kernel': jnp.zeros((4, 4))}}, ii.InitContext())
  assert isinstance(out, ii.SchemeResult) and out.model_config == {'width': 8}
  want = he(jax.random.fold_in(key, 1), grown, ii.InitContext())
  assert float(jnp.std(out.params['dense']['kernel'])) > 0
  for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(a, b)
  want = ii.chain(grow, he)(key, {}, ii.InitContext())
  assert dataclasses.replace(out, params=None) == dataclasses.replace(want, params=None)
  for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(want.params), strict=True):
    np.testing.assert_array_equal(a, b)


def test_data_seed_depends_on_seeds_data_only():
  """The data stage's batch seed: a function of seeds.data alone (the same for every
  seeds.init, so runs compared across init seeds see the same data-stage batches), never
  seeds.data itself (training's order), and different for different seeds.data."""
  assert list(inspect.signature(ii.stages.data_seed).parameters) == ['seed']
  config = config_lib.default_config()
  seeds = []
  for data_seed in range(50):
    got = set()
    for init_seed in (0, 1, 7, 2**31 - 1):
      config.seeds.update(dict(data=data_seed, init=init_seed))
      got.add(ii.stages.data_seed(config.seeds.data))
    assert len(got) == 1, (data_seed, got)
    seeds.append(got.pop())
    assert seeds[-1] != data_seed
  assert len(set(seeds)) == len(seeds)
  assert ii.stages.data_seed(3) == ii.stages.data_seed(3)  # deterministic across calls
