"""One sharding rule and one state form: sharded_init, Setup.create and a config-driven run
agree on every variable's sharding; the state stays plain dicts through the step."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from initlab import config as config_lib
from initlab import models
from initlab import sharding
from initlab import train
import initlab.init as ii
from initlab.train import state as state_lib
from initlab.train import step as step_lib

import resnet_digits  # pylint: disable=g-bad-import-order  (configs/, see train_testlib)


def _specs(*trees):
  return {l.path: l.value.spec for tree in trees for l in ii.leaves(tree)}


@pytest.mark.parametrize('preset', sharding.PRESETS)
def test_sharded_init_setup_and_run_agree(preset, data_dir, tmp_path, devices):
  """A ResNet's BatchNorm statistics name no logical axis: the FSDP default decides them.
  (Before, sharded_init sharded them over 'data', Setup.create replicated them, and runs
  decided by the preset's name.)"""
  config = resnet_digits.get_config('smoke,scheme=he_normal')
  config.model.width = 0.5  # Channels 8, 16, 32.
  config.data.data_dir = data_dir
  config.sharding = preset
  run = train.Run(config, tmp_path)
  model_cfg = config_lib.full_model_config(config)
  model_fn = lambda rngs: models.build(model_cfg, rngs=rngs)
  mesh, rules = ii.make_mesh(config.mesh), models.logical_axis_rules(preset)
  _, _, variables = ii.sharded_init(model_fn, mesh=mesh, axis_rules=rules)
  setup = train.Setup.create(model_fn, optax.sgd(0.1), mesh=mesh, axis_rules=rules)
  from_run = _specs(run.setup.shardings.params, run.setup.shardings.model_state)
  assert _specs(variables) == from_run
  assert _specs(setup.shardings.params, setup.shardings.model_state) == from_run
  stats = {l.path: l.shape for l in ii.leaves(run.setup.abstract.model_state)}
  assert len(stats) == 14
  for path, (size,) in stats.items():  # FSDP: over 'data' when >= 2 elements per device.
    fsdp = preset != 'data_parallel' and size >= 16
    assert from_run[path] == (jax.P('data') if fsdp else jax.P()), (path, size)


class Net(nnx.Module):
  def __init__(self, rngs):
    self.dense = nnx.Linear(64, 16, rngs=rngs)
    self.norm = nnx.BatchNorm(16, rngs=rngs)
    self.head = nnx.Linear(16, 10, rngs=rngs)

  def __call__(self, x, train=False):
    x = self.dense(x.reshape(x.shape[0], -1))
    return self.head(jax.nn.relu(self.norm(x, use_running_average=not train)))


def _plain(tree) -> bool:
  """Nested plain dicts of arrays (no nnx.State, no Variable)."""
  if isinstance(tree, dict):
    return type(tree) is dict and all(_plain(v) for v in tree.values())
  return isinstance(tree, jax.Array)


def test_model_built_once_and_state_stays_plain_dicts(devices):
  calls = []

  def model_fn(rngs):
    calls.append(1)
    return Net(rngs)

  mesh = sharding.make_mesh((('data', -1),))
  setup = train.Setup.create(model_fn, optax.adam(1e-2), mesh=mesh, axis_rules=())
  # One abstract build (graphdef, shardings) and one abstract trace of the init program
  # (params, optimizer state, checks the scheme); the abstract model was built twice.
  assert len(calls) == 2
  state = setup.init(jax.random.key(0), jax.random.key(1))
  assert _plain(state.params) and _plain(state.model_state)
  # Dicts -> module -> dicts is lossless and copies nothing.
  params, model_state = state_lib.pure_variables(setup.model(state))
  assert jax.tree.structure(params) == jax.tree.structure(state.params)
  assert all(
    a is b
    for a, b in zip(
      jax.tree.leaves((params, model_state)), jax.tree.leaves((state.params, state.model_state))
    )
  )
  step = step_lib.make_train_step(
    setup, task='classification', batch_sharding=sharding.batch_sharding(mesh)
  )
  x = jax.random.normal(jax.random.key(2), (16, 8, 8, 1))
  batch = {'image': x, 'label': jnp.arange(16) % 10}
  mean = np.asarray(
    x.reshape(16, 64) @ state.params['dense']['kernel'] + state.params['dense']['bias']
  ).mean(0)
  before = jax.tree.map(np.asarray, state.model_state)
  with jax.set_mesh(mesh):
    new, metrics = step(state, batch)
  assert _plain(new.params) and _plain(new.model_state) and int(new.step) == 1
  assert np.isfinite(float(metrics['loss']))
  # BatchNorm's running mean moved towards the batch mean (momentum 0.99): the new model
  # state came back out of the step.
  np.testing.assert_allclose(
    new.model_state['norm']['mean'],
    0.99 * before['norm']['mean'] + 0.01 * mean,
    rtol=1e-4,
    atol=1e-6,
  )
