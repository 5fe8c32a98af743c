"""The config schema check: unknown keys, wrong types, bad values are clear errors."""

import itertools

import pytest

from initlab import config as config_lib
import train_testlib  # noqa: F401  (puts configs/ on sys.path)

import quickstart  # pylint: disable=g-bad-import-order


def _config():
  return quickstart.get_config('smoke')


def test_configs_validate():
  import lm_shakespeare  # pylint: disable=g-import-not-at-top
  import precrop_digits  # pylint: disable=g-import-not-at-top
  import resnet_digits  # pylint: disable=g-import-not-at-top

  for module in (quickstart, lm_shakespeare, resnet_digits, precrop_digits):
    for arg in (None, 'smoke'):
      config_lib.validate(module.get_config(arg), num_devices=8, process_count=1)
  config_lib.validate(
    lm_shakespeare.get_config('sharding=fsdp,model=2,bf16'), num_devices=8, process_count=1
  )


def test_learngene_configs_validate_and_the_gene_needs_its_teacher():
  import learngene  # pylint: disable=g-import-not-at-top

  for task, role, gene, smoke in itertools.product(
    learngene.TASKS, learngene.ROLES, learngene.GENES, ('', ',smoke')
  ):
    config = learngene.get_config(f'task={task},role={role},gene={gene}{smoke}')
    if role == 'gene':
      with pytest.raises(config_lib.ConfigError, match='config.train.distill.teacher'):
        config_lib.validate(config, num_devices=8, process_count=1)
      config.train.distill.teacher = 'runs/teacher'
    config_lib.validate(config, num_devices=8, process_count=1)
  with pytest.raises(config_lib.ConfigError, match="<arg task>: 'cnn'; valid: lm, vit"):
    learngene.get_config('task=cnn')


def test_unknown_key_names_it_and_lists_valid_keys():
  config = _config()
  with config.unlocked():
    config.train.stpes = 10
  with pytest.raises(
    config_lib.ConfigError,
    match=r"'train.stpes'.*Did you mean 'steps'.*"
    r'Valid keys in config.train: .*batch_size.*steps',
  ):
    config_lib.validate(config, num_devices=1)


def test_unknown_top_level_and_model_keys():
  config = _config()
  with config.unlocked():
    config.optimiser = 1
  with pytest.raises(config_lib.ConfigError, match="'optimiser'.*Did you mean 'optimizer'"):
    config_lib.validate(config, num_devices=1)
  config = _config()
  config.model.widht = 3
  with pytest.raises(config_lib.ConfigError, match=r"'model.widht'.*config.model \(model 'mlp'\)"):
    config_lib.validate(config, num_devices=1)


def test_mistyped_value():
  config = config_lib.default_config()
  config.model = config_lib.model_config('mlp', input_shape=(8, 8, 1))
  config.train = dict(config.train.to_dict(), steps='100')
  with pytest.raises(
    config_lib.ConfigError, match=r"config.train.steps: expected type int, got '100' \(str\)"
  ):
    config_lib.validate(config, num_devices=1)


def test_bad_optimizer_lists_optax_names():
  config = _config()
  config.optimizer.name = 'adamz'
  with pytest.raises(
    config_lib.ConfigError,
    match=r"optimizer.name: expected an optax optimizer, got 'adamz'; valid: "
    r'.*adam, adamax.*sgd',
  ):
    config_lib.validate(config, num_devices=1)
  config = _config()
  config.optimizer.kwargs.momentun = 0.9
  with pytest.raises(config_lib.ConfigError, match="momentun.*Did you mean 'momentum'"):
    config_lib.validate(config, num_devices=1)


def test_batch_not_divisible_by_data_axis_names_both():
  config = _config()
  config.train.batch_size = 12
  with pytest.raises(
    config_lib.ConfigError,
    match=r'train.batch_size: expected a multiple of the data-parallel mesh '
    r"axes \{'data': 8\}.*batch_size=12",
  ):
    config_lib.validate(config, num_devices=8)
  config_lib.validate(config, num_devices=4)  # 12 % 4 == 0


def test_bad_values():
  cases = [
    ('init.name', 'he_normall', r'init.name: expected an init scheme name.*valid:.*he_normal'),
    ('optimizer.schedule', 'linear', r"optimizer.schedule: expected one of \['constant'"),
    ('dtype.compute_dtype', 'bf16', r'dtype.compute_dtype: expected one of'),
    ('sharding', 'zero3', r'config.sharding: expected a preset.*fsdp'),
    ('mesh', (('data', -1), ('model', 3)), r'config.mesh: expected fixed axis sizes'),
    ('train.steps', 0, r'train.steps: expected a positive int'),
    ('sharding', (('embed', 'fsdp'),), r"mesh axes exist in config.mesh \['data', 'model'\]"),
  ]
  for key, value, match in cases:
    config = _config()
    section, _, name = key.rpartition('.')
    target = config[section] if section else config
    with target.ignore_type():
      target[name] = value
    with pytest.raises(config_lib.ConfigError, match=match):
      config_lib.validate(config, num_devices=8)


def test_init_options():
  config = _config()
  config.init.he_normal = {'scale': 2.0}
  with pytest.raises(config_lib.ConfigError, match=r'config.init.he_normal: bad options'):
    config_lib.validate(config, num_devices=1)
  config = _config()
  config.init.compare = ('he_normal', 'he_norm')
  with pytest.raises(config_lib.ConfigError, match=r'init.compare\[1\].*he_norm'):
    config_lib.validate(config, num_devices=1)


def test_parse_arg():
  arg = config_lib.parse_arg('smoke,model=2,sharding=fsdp', smoke=False, model=1, sharding='')
  assert (arg.smoke, arg.model, arg.sharding) == (True, 2, 'fsdp')
  with pytest.raises(config_lib.ConfigError, match="Unknown config argument 'smok'"):
    config_lib.parse_arg('smok', smoke=False)


def test_precrop_configs_give_every_arm_and_the_uniform_width_meets_the_budget():
  import precrop_digits  # pylint: disable=g-import-not-at-top

  from initlab.init import precrop  # pylint: disable=g-import-not-at-top

  dense = precrop.layout(precrop_digits.get_config('arm=dense').model).kernel_params()
  for arm in precrop_digits.ARMS:
    config = precrop_digits.get_config(f'arm={arm},density=0.1')
    config_lib.validate(config, num_devices=8, process_count=1)
  uniform = precrop_digits.get_config('arm=uniform,density=0.1').model
  assert abs(precrop.layout(uniform).kernel_params() - 0.1 * dense) <= 0.02 * 0.1 * dense
  assert precrop_digits.get_config('arm=shuffled').init.pai_mask.shuffle
  assert precrop_digits.get_config('arm=random').init.pai_mask.score == 'random'
  with pytest.raises(config_lib.ConfigError, match="<arg arm>: 'vgg'; valid: dense, mask"):
    precrop_digits.get_config('arm=vgg')
  with pytest.raises(config_lib.ConfigError, match='<arg density>: 0.0'):
    precrop_digits.get_config('density=0.0')
