"""Width parametrizations (standard, ntk, μP; Tensor Programs V, arXiv 2203.03466, Table 3).

Expected values are the paper's table written out here, per role, from the fan ratios
r = n/n₀ of the test's widths; variances are measured on drawn params.
"""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from initlab import config as config_lib
from initlab import data
from initlab import models
from initlab import train
import initlab.init as ii
from initlab.init.families import parametrization as P
from initlab.train import loop
from initlab.train import optim
from initlab.train import parametrize

WIDTH, BASE = 256, 64  # r = 4 for the hidden and output kernels of the MLP below.
INPUTS = 8 * 8 * 1


def _mlp(width=WIDTH, depth=3):
  cfg = models.default_config('mlp')
  cfg.update(dict(input_shape=(8, 8, 1), depth=depth, width=width, num_classes=10))
  return cfg


def _roles(path):
  if path.endswith('bias'):
    return 'vector'
  return {'hidden/0/kernel': 'input', 'head/kernel': 'output'}.get(path, 'hidden')


def _table3(name, role, r, r_out, optimizer):
  """(init variance factor, lr factor): TP V Table 3 (μP) and NTK in standard form."""
  if name == 'standard':
    return 1.0, 1.0
  wide = role in ('hidden', 'output')
  if name == 'ntk':
    return 1.0, ((1 / np.sqrt(r)) if optimizer == 'adam' else 1 / r) if wide else 1.0
  var = 1 / r if role == 'output' else 1.0
  if optimizer == 'adam':
    return var, (1 / r) if wide else 1.0
  return var, {'input': r_out, 'vector': r_out, 'hidden': 1.0, 'output': 1 / r}[role]


@pytest.mark.parametrize('optimizer', ['adam', 'sgd'])
@pytest.mark.parametrize('name', ['standard', 'ntk', 'mup'])
def test_factors_follow_table3_per_role(name, optimizer):
  p = parametrize.from_model_config(name, _mlp(), BASE, optimizer=optimizer)
  paths = sorted(models_paths())
  for path in paths:
    e = p.table[path]
    role = _roles(path)
    if name != 'standard':
      assert e.role == role, path
    fan_out = 10 if path.startswith('head') else WIDTH
    r = 1.0 if role in ('input', 'vector') else WIDTH / BASE
    r_out = 1.0 if path.startswith('head') else WIDTH / BASE
    var, lr = _table3(name, role, r, r_out, optimizer)
    assert e.init_scale == pytest.approx(np.sqrt(var), rel=1e-12), path
    assert e.lr == pytest.approx(lr, rel=1e-12), path
    if name != 'standard':
      assert e.fan_out == fan_out and e.fan_out / e.base_fan_out == pytest.approx(r_out)


def models_paths():
  params, _ = parametrize.abstract_params(_mlp())
  return [l.path for l in ii.leaves(params)]


def test_roles_of_embeddings_stacked_layers_and_convs():
  """LM: embeddings input-like, stacked (layers, in, out) kernels hidden, head output;
  ResNet: the stem conv (fan_in 3·3·3 at every width) input, the convs hidden."""
  lm = models.default_config('transformer_lm')
  lm.update(dict(dim=128, depth=2, num_heads=4))
  t = parametrize.from_model_config('mup', lm, 32).table
  assert t['token_embed/embedding'].role == t['pos_embed/embedding'].role == 'input'
  assert t['blocks/mlp/fc2/kernel'].role == 'hidden'
  assert t['blocks/mlp/fc2/kernel'].fan_in == 512 and t['blocks/mlp/fc2/kernel'].lr == 1 / 4
  assert t['blocks/attn/out/kernel'].fan_in == 128  # (heads, head_dim, dim) layout
  assert t['head/kernel'].role == 'output' and t['head/kernel'].init_scale == 0.5
  assert {e.role for k, e in t.items() if 'norm' in k or k.endswith('bias')} == {'vector'}
  rn = models.default_config('resnet')
  rn.update(dict(depth=8, width=2.0))
  t = parametrize.from_model_config('mup', rn, 1.0).table
  assert t['stem/conv/kernel'].role == 'input' and t['stem/conv/kernel'].lr == 1.0
  assert t['stage3/blocks/0/conv2/kernel'].role == 'hidden'
  assert t['stage3/blocks/0/conv2/kernel'].lr == pytest.approx(0.5)


@pytest.mark.parametrize('name', ['standard', 'ntk', 'mup', 'mup_zero'])
def test_init_variances_against_closed_forms(name):
  """he_normal then the parametrization: Var = 2/fan_in for every kernel (standard, ntk;
  μP's input and hidden), 2/(fan_in·r) = 2·n₀/n² for μP's readout, 0 with zero_readout."""
  width, base = 1024, 64
  zero = name == 'mup_zero'
  p = parametrize.from_model_config(
    'mup' if zero else name, _mlp(width, depth=2), base, zero_readout=zero
  )
  params, hints = parametrize.abstract_params(_mlp(width, depth=2))
  concrete = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params)
  out = jax.jit(lambda k, t: p.wrap(ii.get_scheme('he_normal'))(k, t, ii.InitContext(hints)))(
    jax.random.key(0), concrete
  )
  for leaf in ii.leaves(out):
    if not leaf.path.endswith('kernel'):
      continue
    fan_in = leaf.shape[0]
    want = 2 / fan_in
    if leaf.path == 'head/kernel' and name.startswith('mup'):
      want = 0.0 if zero else 2 * base / width**2
    got = float(np.var(np.asarray(leaf.value, np.float64)))
    if want == 0:
      assert got == 0, leaf.path
    else:  # Relative standard error of a sample variance: sqrt(2/N) <= 1.4% here.
      assert got == pytest.approx(want, rel=6 * np.sqrt(2 / leaf.value.size)), leaf.path


@pytest.mark.parametrize('optimizer', ['adam', 'sgd'])
def test_optimizer_scales_each_update_by_its_factor(optimizer):
  """optim.make(..., parametrization=p) (the run's optimizer) vs the same optimizer alone:
  every param's first update is its table factor times the plain one."""
  p = parametrize.from_model_config('mup', _mlp(), BASE, optimizer=optimizer)
  params, _ = parametrize.abstract_params(_mlp())
  params = params.to_pure_dict()
  rng = np.random.default_rng(0)
  grads = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), params)
  zeros = jax.tree.map(jnp.zeros_like, grads)
  opt = config_lib.default_config().optimizer
  opt.name = optimizer
  plain, scaled = optim.make(opt, 10), optim.make(opt, 10, parametrization=p)
  u0, _ = plain.update(grads, plain.init(zeros), zeros)
  u1, _ = scaled.update(grads, scaled.init(zeros), zeros)
  mult = p.lr_multipliers(params)
  for a, b, m in zip(ii.leaves(u0), ii.leaves(u1), ii.leaves(mult)):
    np.testing.assert_allclose(np.asarray(b.value), m.value * np.asarray(a.value), rtol=1e-6)
  assert {m.value for m in ii.leaves(mult)} == (
    {1.0, 0.25} if optimizer == 'adam' else {1.0, 4.0, 0.25}
  )
  # Standard leaves the optimizer as it is (same transform object structure, same updates).
  std = optim.make(opt, 10, parametrization=parametrize.from_model_config('standard', _mlp(), 0))
  assert jax.tree.structure(std.init(zeros)) == jax.tree.structure(plain.init(zeros))


def test_init_factors_on_another_models_params_name_the_param():
  """The factors of one model's table on params it does not describe raise, naming the
  first mismatching param, its shape and what the table expects (not a silent no-op)."""
  p = parametrize.from_model_config('mup', _mlp(), BASE)
  wide, _ = parametrize.abstract_params(_mlp(2 * WIDTH))
  wide = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), wide.to_pure_dict())
  with pytest.raises(
    ValueError,
    match=r"'mup': param 'head/kernel' has shape \(512, 10\) .*expects shape \(256, 10\)",
  ):
    p.init_scheme()(jax.random.key(0), wide)
  extra = {**wide, 'extra': {'kernel': jnp.zeros((3, 3))}}
  with pytest.raises(
    ValueError, match=r"param 'extra/kernel' has shape \(3, 3\) but the table has no"
  ):
    p.wrap(ii.get_scheme('he_normal'))(jax.random.key(0), extra, ii.InitContext())
  std = parametrize.from_model_config('standard', _mlp(), 0)
  assert std.init_scheme()(jax.random.key(0), extra) is extra  # Inactive: nothing to check.
  assert std.wrap(None) is None and p.wrap(None).__qualname__ == 'parametrization_mup'


def test_wrap_applies_factors_to_a_scheme_result_of_this_model_and_passes_another_through():
  """A SchemeResult of a new architecture whose params the table does not match comes back
  untouched (a run's first init, which it discards); one whose params the table matches (the
  run's rebuild with the new model's table) gets the factors and keeps its model config."""
  p = parametrize.from_model_config('mup', _mlp(), BASE)
  params, _ = parametrize.abstract_params(_mlp())
  params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), params.to_pure_dict())
  wide, _ = parametrize.abstract_params(_mlp(2 * WIDTH))
  wide = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), wide.to_pure_dict())
  new_model = _mlp(2 * WIDTH)
  grow = lambda key, tree, ctx=None: ii.SchemeResult(wide, new_model)
  out = p.wrap(grow)(jax.random.key(0), params)
  assert isinstance(out, ii.SchemeResult) and out.params is wide and out.model_config is new_model
  same = lambda key, tree, ctx=None: ii.SchemeResult(params, new_model)
  out = p.wrap(same)(jax.random.key(0), params)
  assert isinstance(out, ii.SchemeResult) and out.model_config is new_model
  np.testing.assert_allclose(out.params['head']['kernel'], 0.5)  # μP readout: 1/sqrt(r), r = 4
  np.testing.assert_allclose(out.params['hidden'][1]['kernel'], 1.0)


def _config(**p):
  c = config_lib.default_config()
  c.model = config_lib.model_config('mlp', input_shape=(8, 8, 1), depth=2, width=128)
  c.parametrization.update(p)
  return c


@pytest.mark.parametrize(
  'p, needle',
  [
    (
      dict(name='mupp'),
      "config.parametrization.name: expected one of standard, ntk, mup; got 'mupp'",
    ),
    (dict(name='mup'), 'config.parametrization.base_width: mup needs the width'),
    (dict(name='ntk', base_width=-1.0), 'config.parametrization.base_width: expected a width >= 0'),
    (dict(name='mup', base_width=32.5), "base_width: 32.5 for the integer model option 'width'"),
    (dict(name='ntk', base_width=32, zero_readout=True), 'config.parametrization.zero_readout'),
    (dict(name='mup', base_width=32, width_key='depthh'), "has no option 'depthh'"),
  ],
)
def test_bad_config_values_are_one_line_errors(p, needle):
  config = _config()
  with config.unlocked():
    for k, v in p.items():
      config.parametrization[k] = v
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(config, num_devices=1, process_count=1)
  assert needle in str(e.value) and '\n' not in str(e.value)


def test_unknown_parametrization_key_names_the_valid_ones():
  config = _config()
  with config.unlocked():
    config.parametrization.base = 64
  with pytest.raises(config_lib.ConfigError, match=r'parametrization\.base.*base_width'):
    config_lib.validate(config, num_devices=1, process_count=1)


def test_good_config_validates():
  config_lib.validate(_config(name='mup', base_width=32), num_devices=1, process_count=1)
  config_lib.validate(_config(name='ntk', base_width=32.0), num_devices=1, process_count=1)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('data'))
  data.prepare('digits', path)
  return path


def _double_width():
  """Param stage returning `SchemeResult`: the MLP at twice the width with one more layer
  (so a path the first model lacks), with the model's own init."""

  def scheme(key, params, ctx=None):
    del params
    cfg = ml_collections.ConfigDict(dict(ctx.model_config))
    cfg.width, cfg.depth = 2 * cfg.width, cfg.depth + 1
    with nnx.use_eager_sharding(False):
      model = models.build(cfg, rngs=nnx.Rngs(key))
    return ii.SchemeResult(nnx.state(model, nnx.Param), cfg)

  return scheme


def test_mup_follows_a_scheme_that_changes_the_width(data_dir, tmp_path):
  """The table is the built model's: width 64 -> 128 and depth 2 -> 3 by the scheme, base
  32, so r = 4 (the factors of the first model are not applied to the new one's params)."""
  config = _config(name='mup', base_width=32)
  config.model.width = 64
  config.init.name = 'test_double_width'
  config.data.data_dir = data_dir
  ii.register_scheme('test_double_width')(_double_width)
  try:  # Registered for this test only (`--list` stays the package's).
    run = loop.Run(config, tmp_path / 'run')
  finally:
    ii.registry._SCHEMES.pop('test_double_width')  # pylint: disable=protected-access
    ii.registry._DESCRIPTIONS.pop('test_double_width')  # pylint: disable=protected-access
  assert run.model_config.width == 128 and run.model_config.depth == 3
  t = run.parametrization.table
  assert t['hidden/1/kernel'].fan_in == 128 and t['hidden/2/kernel'].lr == 0.25
  params = run.setup.init(jax.random.key(0), jax.random.key(1)).params
  # The model's own LeCun init (Var 1/fan_in), then μP's readout factor 1/r.
  head = np.asarray(params['head']['kernel'], np.float64)
  assert np.var(head) == pytest.approx(1 / (128 * 4), rel=0.25)
  assert np.var(np.asarray(params['hidden'][1]['kernel'])) == pytest.approx(1 / 128, rel=0.1)


def test_config_driven_mup_run(data_dir, tmp_path):
  """train.run with parametrization mup: the run's init has μP's readout variance, its
  optimizer carries the lr factors, and it trains (digits, 2 steps)."""
  config = _config(name='mup', base_width=32)
  config.data.data_dir = data_dir
  config.train.update(
    dict(steps=2, batch_size=16, log_every=1, eval_every=0, checkpoint_every=0, progress_bar=False)
  )
  result = train.run(config, tmp_path / 'run')
  run = result.run
  t = run.parametrization.table
  assert t['head/kernel'].role == 'output' and t['head/kernel'].lr == 0.25
  assert t['hidden/0/kernel'].role == 'input' and t['hidden/1/kernel'].lr == 0.25
  params = run.setup.init(jax.random.key(0), jax.random.key(1)).params
  head = np.asarray(params['head']['kernel'], np.float64)
  assert np.var(head) == pytest.approx(2 * 32 / 128**2, rel=0.25)  # 1280 entries: ~4% s.e.
  hidden = np.asarray(params['hidden'][1]['kernel'], np.float64)
  assert np.var(hidden) == pytest.approx(2 / 128, rel=0.1)
  # The lr factors are in the run's optimizer: its first update vs the plain optimizer's.
  grads = jax.tree.map(lambda a: jnp.ones_like(a), params)
  plain = optim.make(config.optimizer, config.train.steps)
  u0, _ = plain.update(grads, plain.init(params), params)
  u1, _ = run.tx.update(grads, run.tx.init(params), params)
  np.testing.assert_allclose(u1['hidden'][1]['kernel'], 0.25 * u0['hidden'][1]['kernel'], rtol=1e-6)
  np.testing.assert_allclose(u1['hidden'][0]['kernel'], u0['hidden'][0]['kernel'], rtol=1e-6)
  assert np.isfinite(result.summary['final']['train/loss'])
  assert result.summary['steps'] == 2


def test_configs_older_than_the_key_still_resume():
  """A run directory's config.json from before `parametrization` existed compares equal to
  today's default config (so old runs resume and finished study runs are skipped); a
  non-default parametrization is a change."""
  current = loop.config_dict(config_lib.default_config())
  saved = {k: v for k, v in current.items() if k != 'parametrization'}
  assert loop.config_changes(saved, current) == {}
  mup = config_lib.default_config()
  mup.parametrization.update(dict(name='mup', base_width=64.0))
  assert set(loop.config_changes(saved, loop.config_dict(mup))) == {
    'parametrization.name',
    'parametrization.base_width',
  }
