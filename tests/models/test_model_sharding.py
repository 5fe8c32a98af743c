"""Zoo models built with eager sharding off, and born sharded on a ('data', 'model') mesh."""

from flax import nnx
import initlab.init as ii
import initlab.models as im
import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

# pylint: disable-next=g-bad-import-order
from model_zoo_testlib import NAMES, forward, tiny_config, tiny_input

# Hand-written expectations for a few kernels of the tiny models.
EXPECTED = {
  'data_parallel': {
    ('transformer_lm', 'blocks/mlp/fc1/kernel'): P(None, None, None),
    ('resnet', 'stage2/blocks/0/conv1/kernel'): P(None, None, None, None),
  },
  'fsdp': {
    ('transformer_lm', 'blocks/mlp/fc1/kernel'): P(None, 'data', None),
    ('transformer_lm', 'blocks/attn/out/kernel'): P(None, None, None, 'data'),
    ('transformer_lm', 'token_embed/embedding'): P(None, 'data'),
    ('resnet', 'stage2/blocks/0/conv1/kernel'): P(None, None, None, 'data'),
    ('mlp', 'hidden/1/kernel'): P(None, 'data'),
  },
  'tensor_parallel': {
    ('transformer_lm', 'blocks/mlp/fc1/kernel'): P(None, None, 'model'),
    ('transformer_lm', 'blocks/mlp/fc2/kernel'): P(None, 'model', None),
    ('transformer_lm', 'blocks/attn/query/kernel'): P(None, None, 'model', None),
    ('transformer_lm', 'blocks/attn/out/kernel'): P(None, 'model', None, None),
    ('transformer_lm', 'head/kernel'): P(None, 'model'),
    ('vit', 'blocks/1/mlp/fc1/kernel'): P(None, 'model'),
    ('resnet', 'stage2/blocks/0/conv1/kernel'): P(None, None, None, None),
  },
}


def test_rules_cover_every_logical_name():
  for preset in im.SHARDING_PRESETS:
    rules = dict(im.logical_axis_rules(preset))
    assert set(rules) == set(im.LOGICAL_AXES)
    assert set(rules.values()) <= {None, 'data', 'model'}
  assert all(v is None for k, v in im.logical_axis_rules('data_parallel') if k != 'batch')
  with pytest.raises(ValueError, match=r"'zero3'.*valid: \('data_parallel', 'fsdp'"):
    im.logical_axis_rules('zero3')


def test_build_without_mesh_turns_eager_sharding_off():
  with nnx.use_eager_sharding(True):
    model = nnx.eval_shape(lambda: im.build(tiny_config('mlp'), rngs=nnx.Rngs(0)))
    assert nnx.using_eager_sharding()
  assert model.head.kernel.get_metadata()['eager_sharding'] is False


def _mesh(devices):
  return jax.make_mesh((4, 2), ('data', 'model'), devices=devices)


def _check(preset, models, real):
  rules, seen = dict(im.logical_axis_rules(preset)), set()
  for name, model in models.items():
    for leaf in ii.leaves(nnx.state(model, nnx.Param)):
      sharding = leaf.value.sharding
      assert isinstance(sharding, NamedSharding) and sharding.mesh.shape == {'data': 4, 'model': 2}
      if real:
        assert len(sharding.device_set) == 8
      # Every param follows the rules ...
      assert sharding.spec == P(*(rules[n] if n else None for n in leaf.names)), leaf.path
      # ... and a few hand-checked ones.
      if (name, leaf.path) in EXPECTED[preset]:
        assert sharding.spec == EXPECTED[preset][name, leaf.path], (name, leaf.path)
        seen.add((name, leaf.path))
  return seen


@pytest.mark.parametrize('preset', im.SHARDING_PRESETS)
def test_abstract_params_carry_shardings(preset, devices):
  """Every zoo model under every preset (abstractly: cheap)."""
  with jax.set_mesh(_mesh(devices)), nnx.logical_axis_rules(im.logical_axis_rules(preset)):
    models = {
      n: nnx.eval_shape(lambda n=n: im.build(tiny_config(n), rngs=nnx.Rngs(0))) for n in NAMES
    }
  assert _check(preset, models, real=False) == set(EXPECTED[preset])


@pytest.mark.parametrize('preset', ['fsdp', 'tensor_parallel'])
def test_lm_params_are_born_sharded(preset, devices):
  """Real construction with eager sharding: stacked (vmapped) params land sharded."""
  with (
    jax.set_mesh(_mesh(devices)),
    nnx.logical_axis_rules(im.logical_axis_rules(preset)),
    nnx.use_eager_sharding(True),
  ):
    model = im.build(tiny_config('transformer_lm'), rngs=nnx.Rngs(0))
  seen = _check(preset, {'transformer_lm': model}, real=True)
  assert seen == {k for k in EXPECTED[preset] if k[0] == 'transformer_lm'}


def test_sharded_forward_matches_single_device(zoo, devices):
  """Params placed by the TP rules on an Auto-axes mesh give the unsharded model's logits.

  (With Explicit mesh axes, jax's default in make_mesh, a forward pass over sharded
  contraction axes needs per-op out_sharding, which the v1 zoo does not give.)
  """
  model, x = zoo['transformer_lm'], tiny_input('transformer_lm', seed=8)
  mesh = jax.make_mesh(
    (4, 2), ('data', 'model'), devices=devices, axis_types=(AxisType.Auto, AxisType.Auto)
  )
  graphdef, state = nnx.split(model)
  with nnx.logical_axis_rules(im.logical_axis_rules('tensor_parallel')):
    specs = nnx.get_partition_spec(state)
  shardings = jax.tree.map(
    lambda p: NamedSharding(mesh, p), specs, is_leaf=lambda v: isinstance(v, P)
  )
  sharded = nnx.merge(graphdef, jax.device_put(state, shardings))
  with jax.set_mesh(mesh):
    y = forward(sharded, jax.device_put(x, NamedSharding(mesh, P('data'))))
  assert len(y.sharding.device_set) == 8
  np.testing.assert_allclose(y, forward(model, x), rtol=1e-5, atol=1e-5)
