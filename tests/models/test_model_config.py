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


@pytest.mark.parametrize(
  'name,overrides,match',
  [
    (
      'mlp',
      dict(name='cnn'),
      r"name='cnn' is unknown.*valid names: \(.*'mlp', .*'resnet', "
      r".*'transformer_lm', 'vgg', 'vit'\)",
    ),
    ('resnet', dict(name='resnet20'), r"resnet20.*a preset.*default_config\('resnet20'\)"),
    ('mlp', dict(activation='swish'), r"activation='swish'.*valid: \[.*'relu'.*'tanh'"),
    ('vit', dict(activation='swish'), r"activation='swish'"),
    ('resnet', dict(norm='layer'), r"norm='layer'; valid: \('batch', 'none'\)"),
    ('resnet', dict(depth=21), r'depth=21 must be 6n \+ 2'),
    ('vit', dict(patch_size=3), r'patch_size=3 must divide input_shape=\(8, 8, 3\)'),
    ('vit', dict(pool='max'), r"pool='max'; valid: \('cls', 'mean'\)"),
    ('vit', dict(num_heads=3), r'num_heads=3 must be >= 1 and divide dim=16'),
    ('transformer_lm', dict(dtype='float33'), r"dtype='float33' is not a dtype"),
  ],
)
def test_bad_values(name, overrides, match):
  config = tiny_config(name)
  config.update(overrides)
  with pytest.raises(ValueError, match=match):
    _build(config)


def test_unknown_and_missing_options():
  config = tiny_config('mlp').to_dict()
  config['widht'] = 32
  with pytest.raises(
    ValueError,
    match=r"'mlp' has no option\(s\) \['widht'\]; valid options: "
    r"\['activation', 'depth'",
  ):
    im.build(config, rngs=nnx.Rngs(0))
  config = ml_collections.ConfigDict(dict(name='transformer_lm', vocab_size=32))
  with pytest.raises(
    ValueError,
    match=r"missing option\(s\) \['activation', 'depth', 'dim'.*"
    r"default_config\('transformer_lm'\)",
  ):
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


# A model of one's own: registered from this file only, removed after each test.
def _toy_config():
  return ml_collections.ConfigDict(dict(name='toy', input_shape=(2, 3), num_classes=4))


def _register_toy():
  import math  # pylint: disable=g-import-not-at-top

  @im.register_model(
    'toy',
    task='classification',
    default_config=_toy_config,
    input_spec=lambda c: im.InputSpec((math.prod(c['input_shape']),)),
  )
  class Toy(nnx.Module):
    def __init__(self, *, input_shape, num_classes, rngs):
      self.head = nnx.Linear(math.prod(input_shape), num_classes, rngs=rngs)

    def __call__(self, x, train=False):
      return self.head(x.reshape(x.shape[0], -1))

  return Toy


@pytest.fixture
def toy():
  from initlab.models import registry  # pylint: disable=g-import-not-at-top

  yield _register_toy()
  registry._MODELS.pop('toy', None)  # pylint: disable=protected-access


def test_registered_model_is_built_validated_and_specified_by_name(toy):
  from initlab import config as config_lib  # pylint: disable=g-import-not-at-top

  assert 'toy' in im.model_names()
  config = im.default_config('toy')
  config.input_shape = (3, 5)
  model = im.build(config, rngs=nnx.Rngs(0))
  assert isinstance(model, toy) and model.head.kernel.shape == (15, 4)
  assert im.input_spec(config) == im.InputSpec((15,))
  run = config_lib.default_config()
  run.model = ml_collections.ConfigDict(dict(name='toy', num_classes=10))
  config_lib.validate(run, num_devices=1, process_count=1)
  run.model.num_clases = 10
  with pytest.raises(
    config_lib.ConfigError, match=r"model.num_clases'. Did you mean 'num_classes'"
  ):
    config_lib.validate(run, num_devices=1, process_count=1)


def test_registration_again_and_bad_registrations(toy):
  assert _register_toy() is not toy  # A notebook cell run again: same name, same class.
  assert isinstance(im.build(_toy_config(), rngs=nnx.Rngs(0)), nnx.Module)

  class Other(toy):
    pass

  register = lambda name='toy', **kw: im.register_model(
    name, **{'task': 'classification', 'default_config': _toy_config, **kw}
  )
  with pytest.raises(
    ValueError,
    match=r"register_model\('toy'\): already registered to "
    r'.*_register_toy.<locals>.Toy; pick another name',
  ):
    register()(Other)
  with pytest.raises(ValueError, match=r"must return name='toy2', got name='toy'"):
    register('toy2')(Other)

  class NoClasses(nnx.Module):
    def __init__(self, *, input_shape, rngs):
      del input_shape, rngs

  with pytest.raises(
    ValueError,
    match=r'NoClasses\(...\) takes no keyword\(s\) '
    r"\['num_classes'\] that default_config\(\) has",
  ):
    register(
      'toy2',
      default_config=lambda: ml_collections.ConfigDict(
        dict(name='toy2', input_shape=(2,), num_classes=3)
      ),
    )(NoClasses)
  with pytest.raises(ValueError, match=r'a preset'):
    register('resnet20')(Other)
  with pytest.raises(
    ValueError,
    match=r"preset 'resnet20' is already a model or a preset of "
    r"'resnet'",
  ):
    register(presets={'resnet20': {}})(toy)
  with pytest.raises(ValueError, match=r'task must name the task'):
    register(task='')(toy)
  assert 'toy2' not in im.model_names() and im.default_config('resnet20').depth == 20


def _meta(task='classification', input_shape=(8, 8, 1), num_classes=10, vocab_size=None):
  from initlab import data  # pylint: disable=g-import-not-at-top

  return data.Metadata('set', task, input_shape, num_classes, vocab_size, 100)


@pytest.mark.parametrize(
  'name,overrides,meta,match',
  [
    # Fully convolutional: any image size fits, the channels must be the dataset's.
    ('resnet', dict(input_shape=(32, 32, 1)), _meta(), None),
    (
      'resnet',
      dict(input_shape=(32, 32, 3)),
      _meta(),
      r"input_shape=\(32, 32, 3\) does not fit dataset 'set'; set config.model.input_shape="
      r'\(32, 32, 1\)',
    ),
    ('resnet', dict(input_shape=(8, 8, 1), num_classes=5), _meta(), r'num_classes=10'),
    ('mlp', dict(input_shape=(8, 8, 1)), _meta(), None),
    ('mlp', dict(input_shape=(16, 4, 1)), _meta(), r'input_shape=\(8, 8, 1\)'),
    ('vit', dict(input_shape=[8, 8, 1]), _meta(), None),  # A list from the command line.
    ('transformer_lm', dict(vocab_size=256, max_len=128), _meta('lm', (128,), None, 256), None),
    (
      'transformer_lm',
      dict(vocab_size=256, max_len=64),
      _meta('lm', (128,), None, 256),
      r'max_len=64 does not fit.*set config.model.max_len=128',
    ),
    ('transformer_lm', dict(vocab_size=32), _meta('lm', (128,), None, 256), r'vocab_size=256'),
    (
      'mlp',
      {},
      _meta('lm', (128,), None, 256),
      r"'mlp' is a 'classification' model but dataset 'set' is 'lm'; 'lm' models: "
      r"\['transformer_lm'\]",
    ),
  ],
)
def test_check_fits(name, overrides, meta, match):
  config = im.default_config(name)
  config.update(overrides)
  if match is None:
    im.check_fits(config, meta)
  else:
    with pytest.raises(ValueError, match=match):
      im.check_fits(config, meta)


def test_registered_model_default_fit_and_the_training_loop_asks_the_registry(toy):
  del toy
  from initlab import config as config_lib  # pylint: disable=g-import-not-at-top
  from initlab.train import build  # pylint: disable=g-import-not-at-top

  meta = _meta(input_shape=(2, 3), num_classes=4)
  build.check_model_fits_data(_toy_config(), meta)
  with pytest.raises(config_lib.ConfigError, match=r'config.model.num_classes=4 does not fit'):
    build.check_model_fits_data(_toy_config(), _meta(input_shape=(2, 3)))
  resnet = im.default_config('resnet20')
  resnet.input_shape = (32, 32, 1)  # The resnet's rule (channels only) comes from its entry.
  build.check_model_fits_data(resnet, _meta())
