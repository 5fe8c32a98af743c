"""Model configs: defaults, presets, overrides, and clear errors for bad ones."""
from flax import nnx
import initlab.models as im
import ml_collections
import pytest

# pylint: disable-next=g-bad-import-order
from model_zoo_testlib import tiny_config


def _build(config):
  return nnx.eval_shape(lambda: im.build(config, rngs=nnx.Rngs(0)))


def test_presets_and_overrides():
  config = im.default_config('resnet56')
  assert config.name == 'resnet' and config.depth == 56 and config.norm == 'batch'
  config.width = 2  # An int is fine for the float multiplier.
  assert _build(config).stage3.blocks[0].conv2.kernel.shape == (3, 3, 128, 128)
  assert set(im.preset_names()) >= {'resnet20', 'resnet32', 'resnet56'}


@pytest.mark.parametrize('name,overrides,match', [
    ('mlp', dict(name='cnn'), r"name='cnn' is unknown.*valid names: \('mlp', 'resnet', "
                              r"'transformer_lm', 'vit'\)"),
    ('resnet', dict(name='resnet20'), r"resnet20.*a preset.*default_config\('resnet20'\)"),
    ('mlp', dict(activation='swish'), r"activation='swish'.*valid: \[.*'relu'.*'tanh'"),
    ('vit', dict(activation='swish'), r"activation='swish'"),
    ('resnet', dict(norm='layer'), r"norm='layer'; valid: \('batch', 'none'\)"),
    ('resnet', dict(depth=21), r'depth=21 must be 6n \+ 2'),
    ('vit', dict(patch_size=3), r'patch_size=3 must divide input_shape=\(8, 8, 3\)'),
    ('vit', dict(pool='max'), r"pool='max'; valid: \('cls', 'mean'\)"),
    ('vit', dict(num_heads=3), r'num_heads=3 must be >= 1 and divide dim=16'),
    ('transformer_lm', dict(dtype='float33'), r"dtype='float33' is not a dtype"),
])
def test_bad_values(name, overrides, match):
  config = tiny_config(name)
  config.update(overrides)
  with pytest.raises(ValueError, match=match):
    _build(config)


def test_unknown_and_missing_options():
  config = tiny_config('mlp').to_dict()
  config['widht'] = 32
  with pytest.raises(ValueError, match=r"'mlp' has no option\(s\) \['widht'\]; valid options: "
                                       r"\['activation', 'depth'"):
    im.build(config, rngs=nnx.Rngs(0))
  config = ml_collections.ConfigDict(dict(name='transformer_lm', vocab_size=32))
  with pytest.raises(ValueError, match=r"missing option\(s\) \['activation', 'depth', 'dim'.*"
                                       r"default_config\('transformer_lm'\)"):
    im.build(config, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='no `name`'):
    im.build({}, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"'gnn' is unknown; valid models: .*presets: "):
    im.default_config('gnn')


def test_sequence_too_long_for_lm():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  model = _build(tiny_config('transformer_lm'))
  with pytest.raises(ValueError, match=r'sequence length 9 > max_len=8'):
    nnx.eval_shape(lambda m: m(jnp.zeros((1, 9), jnp.int32)), model)
