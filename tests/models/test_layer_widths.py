"""Static per-layer widths of the zoo (mlp `widths`, resnet `stage_widths` / `block_widths`,
vit `mlp_dims`): param shapes follow them, the forward pass works, the defaults build the same
model as before the options existed, and bad values fail naming the option."""

import json

from flax import nnx
from initlab import config as config_lib
import initlab.init as ii
import initlab.models as im
from initlab.models import resnet as resnet_lib
import jax.numpy as jnp
import numpy as np
import pytest

# pylint: disable-next=g-bad-import-order
from model_zoo_testlib import abstract, forward, materialize, tiny_config, tiny_input

NEW_OPTIONS = {
  'mlp': ('widths',),
  'resnet': ('stage_widths', 'block_widths'),
  'vit': ('mlp_dims',),
}


def _tree(model):
  """{param path: (shape, logical names)} of `model`."""
  return {l.path: (tuple(l.value.shape), l.names) for l in ii.leaves(nnx.state(model, nnx.Param))}


def _shapes(model):
  return {path: shape for path, (shape, _) in _tree(model).items()}


def _without(config, keys):
  """`config` as a plain dict without `keys`: a model config recorded before they existed
  (through JSON, as a checkpoint's 'built_model', so tuples are lists)."""
  return json.loads(json.dumps({k: v for k, v in config.to_dict().items() if k not in keys}))


def _logits(config):
  name = config.name
  y = forward(materialize(abstract(config)), tiny_input(name, batch=2))
  assert y.shape == (2, config.num_classes) and y.dtype == jnp.float32
  assert np.isfinite(np.asarray(y)).all()


def test_defaults_are_in_default_config_and_typed():
  assert im.default_config('mlp').widths == ()
  assert im.default_config('resnet20').stage_widths == ()
  assert im.default_config('resnet20').block_widths == ()
  assert im.default_config('vit').mlp_dims == ()
  cfg = config_lib.model_config('mlp', widths=(64, 32))
  assert cfg.widths == (64, 32)
  config_lib.model_config('resnet', stage_widths=[8, 16, 32], block_widths=(4, 8, 12))
  with pytest.raises(config_lib.ConfigError, match=r'model.widths.*type tuple, got 64'):
    config_lib.model_config('mlp', widths=64)


@pytest.mark.parametrize('name', sorted(NEW_OPTIONS))
def test_defaults_build_the_same_param_tree(name):
  config = tiny_config(name)
  tree = _tree(abstract(config))
  # A config without the new options (recorded before them) builds, the same model.
  assert _tree(abstract(_without(config, NEW_OPTIONS[name]))) == tree
  # So does the class called without them.
  cls = {'mlp': im.MLP, 'resnet': im.ResNet, 'vit': im.ViT}[name]
  options = {k: v for k, v in config.items() if k not in ('name', *NEW_OPTIONS[name])}
  options.update(dtype=jnp.float32, param_dtype=jnp.float32)
  with nnx.use_eager_sharding(False):  # As `im.build` does without a mesh.
    assert _tree(nnx.eval_shape(lambda: cls(**options, rngs=nnx.Rngs(0)))) == tree


def test_default_equal_widths_give_bit_identical_params():
  """Widths equal to the defaults, given explicitly: the same params, value for value."""
  for config, same in [
    (tiny_config('mlp'), tiny_config('mlp', widths=(16, 16))),
    (
      tiny_config('resnet'),
      tiny_config('resnet', stage_widths=(8, 16, 32), block_widths=(8, 16, 32)),
    ),
  ]:
    a = nnx.state(im.build(config, rngs=nnx.Rngs(3)))
    b = nnx.state(im.build(same, rngs=nnx.Rngs(3)))
    flat_a, flat_b = dict(nnx.to_flat_state(a)), dict(nnx.to_flat_state(b))
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_a.items():
      np.testing.assert_array_equal(np.asarray(value[...]), np.asarray(flat_b[key][...]))


def test_mlp_widths():
  config = tiny_config('mlp', depth=3, widths=(12, np.int64(5), 7))  # numpy ints are fine.
  model = abstract(config)
  assert _shapes(model) == {
    'hidden/0/kernel': (64, 12),
    'hidden/0/bias': (12,),
    'hidden/1/kernel': (12, 5),
    'hidden/1/bias': (5,),
    'hidden/2/kernel': (5, 7),
    'hidden/2/bias': (7,),
    'head/kernel': (7, 10),
    'head/bias': (10,),
  }
  # Logical names still alternate.
  tree = _tree(model)
  assert tree['hidden/1/kernel'][1] == ('mlp', 'embed')
  assert tree['head/kernel'][1] == ('mlp', 'classes')
  assert model.init_hints()['depth'] == 4
  _logits(config)


def test_resnet_stage_and_block_widths():
  # ResNet-8 (1 block per stage).
  config = tiny_config('resnet', block_widths=(4, 8, 12), stage_widths=(8, 16, 32))
  model = abstract(config)
  shapes = _shapes(model)
  assert shapes['stem/conv/kernel'] == (3, 3, 3, 8) and shapes['stem/norm/scale'] == (8,)
  cin = 8
  for s, (inner, stream) in enumerate(zip((4, 8, 12), (8, 16, 32)), start=1):
    block = f'stage{s}/blocks/0'
    assert shapes[f'{block}/conv1/kernel'] == (3, 3, cin, inner)
    assert shapes[f'{block}/norm1/scale'] == shapes[f'{block}/norm1/bias'] == (inner,)
    assert shapes[f'{block}/conv2/kernel'] == (3, 3, inner, stream)
    assert shapes[f'{block}/norm2/scale'] == shapes[f'{block}/norm2/bias'] == (stream,)
    cin = stream
  assert shapes['head/kernel'] == (32, 10)
  count = sum(int(np.prod(s)) for s in shapes.values())
  assert count == im.resnet_param_count(
    8, in_channels=3, stage_widths=(8, 16, 32), block_widths=(4, 8, 12)
  )
  assert model.init_hints() == abstract(tiny_config('resnet')).init_hints()
  _logits(config)


def test_resnet_widths_over_several_blocks_and_equal_stages():
  # ResNet-14 (2 blocks per stage); stage 2 keeps the stream width (stride 2, no padding).
  config = tiny_config(
    'resnet', depth=14, stage_widths=(6, 6, 10), block_widths=(1, 2, 3, 4, 5, 6), norm='none'
  )
  shapes = _shapes(abstract(config))
  expected = {
    'stage1/blocks/0': (6, 1, 6),
    'stage1/blocks/1': (6, 2, 6),
    'stage2/blocks/0': (6, 3, 6),
    'stage2/blocks/1': (6, 4, 6),
    'stage3/blocks/0': (6, 5, 10),
    'stage3/blocks/1': (10, 6, 10),
  }
  for block, (cin, inner, stream) in expected.items():
    assert shapes[f'{block}/conv1/kernel'] == (3, 3, cin, inner)
    assert shapes[f'{block}/conv1/bias'] == (inner,)
    assert shapes[f'{block}/conv2/kernel'] == (3, 3, inner, stream)
  count = sum(int(np.prod(s)) for s in shapes.values())
  assert count == im.resnet_param_count(
    14, norm='none', stage_widths=(6, 6, 10), block_widths=(1, 2, 3, 4, 5, 6)
  )
  # Only stage_widths: every block's inner width is its stage's.
  streams, inner = resnet_lib.layout(14, stage_widths=(6, 6, 10))
  assert streams == (6, 6, 10) and inner == ((6, 6), (6, 6), (10, 10))
  _logits(config)


def test_vit_mlp_dims():
  config = tiny_config('vit', mlp_dims=(8, 24))
  model = abstract(config)
  shapes = _shapes(model)
  assert shapes['blocks/0/mlp/fc1/kernel'] == (16, 8) and shapes['blocks/0/mlp/fc2/kernel'] == (
    8,
    16,
  )
  assert shapes['blocks/1/mlp/fc1/kernel'] == (16, 24) and shapes['blocks/1/mlp/fc1/bias'] == (24,)
  assert shapes['blocks/1/mlp/fc2/kernel'] == (24, 16)
  # Everything else is as in the default model.
  default = _shapes(abstract(tiny_config('vit')))
  assert {k: v for k, v in shapes.items() if '/mlp/' not in k} == {
    k: v for k, v in default.items() if '/mlp/' not in k
  }
  _logits(config)


def test_transformer_lm_has_no_per_layer_mlp_widths():
  """Its blocks are scanned (params stacked on a 'layers' axis): documented, not an option."""
  from initlab.models import transformer_lm  # pylint: disable=g-import-not-at-top

  assert 'not available, the blocks are scanned' in ' '.join(transformer_lm.__doc__.split())
  assert 'mlp_dims' not in im.default_config('transformer_lm')
  config = tiny_config('transformer_lm').to_dict()
  config['mlp_dims'] = (8, 8, 8)
  with pytest.raises(ValueError, match=r"has no option\(s\) \['mlp_dims'\]"):
    abstract(config)


@pytest.mark.parametrize(
  'name,overrides,match',
  [
    ('mlp', dict(widths=(8,)), r'mlp: widths=\(8,\) has 1 entries; need 2 \(one per hidden layer'),
    ('mlp', dict(depth=0, widths=(8,)), r'widths=\(8,\) has 1 entries; need 0'),
    ('mlp', dict(widths=(8, 0)), r'widths=\(8, 0\) must hold ints >= 1; entry 1 is 0'),
    ('mlp', dict(widths=(8, 4.5)), r'widths=\(8, 4.5\) must hold ints >= 1; entry 1 is 4.5'),
    ('resnet', dict(stage_widths=(8, 16)), r'resnet: stage_widths=\(8, 16\) has 2 entries; need 3'),
    ('resnet', dict(stage_widths=(8, -1, 16)), r'stage_widths=\(8, -1, 16\) must hold ints >= 1'),
    (
      'resnet',
      dict(stage_widths=(16, 8, 32)),
      r'stage_widths=\(16, 8, 32\) must be non-decreasing',
    ),
    (
      'resnet',
      dict(block_widths=(4, 8)),
      r'resnet: block_widths=\(4, 8\) has 2 entries; need 3 \(one per residual block.*depth=8',
    ),
    ('resnet', dict(depth=14, block_widths=(4, 8, 12)), r'block_widths=\(4, 8, 12\).*need 6'),
    ('resnet', dict(block_widths=(4, 0, 12)), r'block_widths=\(4, 0, 12\) must hold ints >= 1'),
    ('vit', dict(mlp_dims=(8, 8, 8)), r'vit: mlp_dims=\(8, 8, 8\) has 3 entries; need 2'),
    ('vit', dict(mlp_dims=(8, True)), r'mlp_dims=\(8, True\) must hold ints >= 1; entry 1'),
  ],
)
def test_bad_widths(name, overrides, match):
  with pytest.raises(ValueError, match=match):
    abstract(tiny_config(name, **overrides))


def test_optional_must_name_options():
  import ml_collections  # pylint: disable=g-import-not-at-top

  class Toy(nnx.Module):
    def __init__(self, *, size, rngs):
      del size, rngs

  config = lambda: ml_collections.ConfigDict(dict(name='toy_widths', size=2))
  with pytest.raises(ValueError, match=r"optional names unknown option\(s\) \['sizes'\]"):
    im.register_model(
      'toy_widths', task='classification', default_config=config, optional=('sizes',)
    )(Toy)
  assert 'toy_widths' not in im.model_names()
