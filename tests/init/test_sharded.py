"""Sharded init: intended shardings, no full copy anywhere, identical numbers on 1 and 8 devices."""

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

import initlab.init as ii

RULES = [('embed', 'data'), ('mlp', 'model'), ('vocab', 'model')]


class Net(nnx.Module):
  def __init__(self, rngs, width=256):
    part = nnx.with_partitioning
    self.embed = nnx.Embed(
      512, 64, rngs=rngs, embedding_init=part(nnx.initializers.normal(1.0), ('vocab', 'embed'))
    )
    self.up = nnx.Linear(
      64, width, rngs=rngs, kernel_init=part(nnx.initializers.lecun_normal(), ('embed', 'mlp'))
    )
    self.down = nnx.Linear(width, 64, rngs=rngs)  # names no axes: FSDP default

  def __call__(self, x):
    return self.down(jax.nn.relu(self.up(self.embed(x))))


def _mesh(n):
  return ii.make_mesh((('data', -1), ('model', 2 if n > 1 else 1)), devices=jax.devices()[:n])


def test_params_get_intended_named_sharding(devices):
  mesh = _mesh(8)
  model = ii.create_sharded(
    Net, mesh=mesh, axis_rules=RULES, key=jax.random.key(0), scheme=ii.get_scheme('orthogonal')
  )
  expected = {
    'embed/embedding': P('model', 'data'),
    'up/kernel': P('data', 'model'),
    'down/kernel': P('data', None),
    'up/bias': P('data'),
    'down/bias': P('data'),
  }
  for leaf in ii.leaves(nnx.state(model, nnx.Param)):
    sharding = leaf.value.sharding
    assert isinstance(sharding, NamedSharding) and sharding.mesh.shape == mesh.shape, leaf.path
    assert sharding.spec == expected[leaf.path], (leaf.path, sharding.spec)


def test_bitwise_identical_on_1_and_8_devices(devices):
  scheme = ii.Rules([(r'up/kernel', ii.orthogonal()), (r'.*kernel', ii.he_normal())])
  one = ii.create_sharded(
    Net, mesh=_mesh(1), axis_rules=RULES, key=jax.random.key(5), scheme=scheme
  )
  eight = ii.create_sharded(
    Net, mesh=_mesh(8), axis_rules=RULES, key=jax.random.key(5), scheme=scheme
  )
  a = {l.path: np.asarray(l.value) for l in ii.leaves(nnx.state(one, nnx.Param))}
  b = {l.path: np.asarray(l.value) for l in ii.leaves(nnx.state(eight, nnx.Param))}
  assert a.keys() == b.keys()
  for path in a:
    np.testing.assert_array_equal(a[path], b[path], err_msg=path)


def test_no_full_copy_is_materialized(devices):
  mesh = ii.make_mesh((('data', 8), ('model', 1)))
  width = 2048
  graphdef, init, shardings = ii.sharded_init(
    lambda rngs: Net(rngs, width), mesh=mesh, axis_rules=RULES, scheme=ii.get_scheme('he_normal')
  )
  del graphdef
  _, abstract = ii.abstract_model(lambda rngs: Net(rngs, width))
  total = sum(l.value.size * l.value.dtype.itemsize for l in ii.leaves(abstract))
  mem = init.lower(jax.random.key(0)).compile().memory_analysis()
  # Each device outputs one shard and holds at most ~2 shards of temporaries (random bits).
  assert mem.output_size_in_bytes <= total / 8 * 1.05
  assert mem.temp_size_in_bytes <= 2.5 * total / 8
  key = jax.device_put(jax.random.key(0), NamedSharding(mesh, P()))
  init(key)  # compile; the traced program's constants are transferred once here
  with jax.transfer_guard('disallow'):  # a run moves nothing between host and devices
    state = init(key)
  for leaf in ii.leaves(state):
    per_device = max(s.data.nbytes for s in leaf.value.addressable_shards)
    assert per_device <= leaf.value.nbytes / 8 or leaf.value.nbytes < 8 * 64


def test_abstract_model_allocates_nothing():
  graphdef, state = ii.abstract_model(lambda rngs: Net(rngs, 4096))
  del graphdef
  assert all(isinstance(l.value, jax.ShapeDtypeStruct) for l in ii.leaves(state))


def test_make_mesh_errors_name_the_axes(devices):
  assert ii.make_mesh((('data', -1), ('model', 2))).shape == {'data': 4, 'model': 2}
  import pytest  # pylint: disable=g-import-not-at-top

  with pytest.raises(ValueError, match='does not fit 8 devices'):
    ii.make_mesh((('data', -1), ('model', 3)))


def test_one_home_for_every_sharding_function(devices):
  """Meshes, rules and shardings are defined once, in initlab.sharding (they were in four
  places, with two make_mesh); the old names are the same objects."""
  import ast  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  import initlab  # pylint: disable=g-import-not-at-top
  from initlab import models, sharding  # pylint: disable=g-import-not-at-top

  root = pathlib.Path(initlab.__file__).parent
  defined = {}
  for path in sorted(root.rglob('*.py')):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.FunctionDef):
        defined.setdefault(node.name, []).append(str(path.relative_to(root)))
  for name in (
    'make_mesh',
    'as_auto_mesh',
    'logical_axis_rules',
    'axis_rules',
    'logical_to_mesh_spec',
    'fsdp_spec',
    'fsdp_axis',
    'default_fsdp_axis',
    'state_shardings',
    'batch_axes',
    'batch_sharding',
    'replicated',
  ):
    assert defined.get(name, ['sharding.py']) == ['sharding.py'], (name, defined[name])
  assert ii.make_mesh is sharding.make_mesh and ii.state_shardings is sharding.state_shardings
  assert models.logical_axis_rules is sharding.logical_axis_rules
  assert models.SHARDING_PRESETS == sharding.PRESETS
  # One make_mesh for pairs and for a config (config.mesh).
  import ml_collections  # pylint: disable=g-import-not-at-top

  config = ml_collections.ConfigDict({'mesh': (('data', 2), ('model', -1))})
  assert ii.make_mesh(config).shape == ii.make_mesh(config.mesh).shape == {'data': 2, 'model': 4}


def test_fsdp_default_follows_the_rules(devices):
  """Unnamed variables are FSDP-sharded over the first batch axis unless the rules shard no
  param (data parallel: everything replicated); sharded_init used 'data' regardless."""
  from initlab import sharding  # pylint: disable=g-import-not-at-top

  mesh = _mesh(8)
  assert sharding.default_fsdp_axis(mesh, RULES) == 'data'
  assert sharding.default_fsdp_axis(mesh, sharding.logical_axis_rules('data_parallel')) is None
  assert sharding.default_fsdp_axis(mesh, sharding.logical_axis_rules('tensor_parallel')) == 'data'
  assert sharding.default_fsdp_axis({'model': 8}, RULES) is None  # No batch axis.
  data_parallel = sharding.logical_axis_rules('data_parallel')
  _, _, shardings = ii.sharded_init(Net, mesh=mesh, axis_rules=data_parallel)
  assert all(set(l.value.spec) <= {None} for l in ii.leaves(shardings))  # Replicated.
  _, _, shardings = ii.sharded_init(Net, mesh=mesh, axis_rules=data_parallel, fsdp_axis='data')
  assert {l.path: l.value.spec for l in ii.leaves(shardings)}['down/kernel'] == P('data', None)
