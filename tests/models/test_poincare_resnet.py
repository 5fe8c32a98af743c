"""Poincaré ResNet in the zoo (arXiv 2303.14027): built by name and preset, its params, logical
axes and init hints, its inits from a config, its stages, and its errors. Training to > 90%
on digits and kill/resume: tests/train/test_poincare_resume.py."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

import initlab.init as ii
import initlab.models as im

from model_zoo_testlib import abstract, materialize  # pylint: disable=g-bad-import-order


def tiny(**overrides):
  config = im.default_config('poincare_resnet8')
  config.update({'widths': (2, 3, 4), 'input_shape': (8, 8, 1), **overrides})
  return config


def conv_params(cin, cout, k=3):
  return k * k * cin * cout + cout


def test_default_config_and_presets():
  config = im.default_config('poincare_resnet20')
  assert config.name == 'poincare_resnet' and config.depth == 20
  assert tuple(config.widths) == (8, 16, 32) and config.c == 0.1  # the paper's ResNet-20
  assert {'poincare_resnet8', 'poincare_resnet20', 'poincare_resnet32'} <= set(im.preset_names())
  model = nnx.eval_shape(lambda: im.build(config, rngs=nnx.Rngs(0)))
  assert len(model.stage1.blocks) == 3 and model.init_hints()['depth'] == 11


def test_params_shapes_names_and_count():
  """Stem 3x3 conv (C -> 8) + BN, 3 stages of 3x3 convs with BN (scalar scale), a 1x1
  shortcut where the width or resolution changes, the MLR head (32, 10)."""
  model = nnx.eval_shape(lambda: im.build(im.default_config('poincare_resnet20'), rngs=nnx.Rngs(0)))
  leaves = {l.path: l for l in ii.leaves(nnx.state(model, nnx.Param))}
  assert leaves['stem/conv/kernel'].shape == (3, 3, 3, 8)
  assert leaves['stage2/blocks/0/conv1/kernel'].shape == (3, 3, 8, 16)
  assert leaves['stage2/blocks/0/shortcut/kernel'].shape == (1, 1, 8, 16)
  assert 'stage1/blocks/0/shortcut/kernel' not in leaves
  assert leaves['head/kernel'].shape == (32, 10) and leaves['head/bias'].shape == (10,)
  assert leaves['stage3/blocks/2/norm2/scale'].shape == ()
  assert leaves['stage3/blocks/2/norm2/bias'].names == ('conv_out',)
  assert leaves['stage1/blocks/1/conv2/kernel'].names == (None, None, 'conv_in', 'conv_out')
  assert leaves['head/kernel'].names == ('embed', 'classes')
  bn = lambda ch: ch + 1
  total = conv_params(3, 8) + bn(8)
  for cin, cout in ((8, 8), (8, 16), (16, 32)):
    total += conv_params(cin, cout) + conv_params(cout, cout) + 2 * bn(cout)  # block 0
    total += conv_params(cin, cout, 1) if cin != cout else 0  # its shortcut
    total += 2 * (2 * conv_params(cout, cout) + 2 * bn(cout))  # blocks 1, 2
  total += 32 * 10 + 10
  assert sum(int(np.prod(l.shape)) for l in leaves.values()) == total
  stats = ii.leaves(nnx.state(model, nnx.BatchStat))
  assert {l.path for l in stats} >= {'stem/norm/mean', 'stem/norm/var'}


def test_init_hints_match_the_params():
  model = abstract(tiny(depth=14))
  hints, paths = model.init_hints(), [l.path for l in ii.leaves(nnx.state(model, nnx.Param))]
  match = lambda key: [p for p in paths if re.fullmatch(hints[key], p)]
  assert hints['depth'] == len(model.stages()) == 3 * 2 + 2
  assert match('classifier') == ['head/kernel']
  assert len(match('residual_branch')) == 2 * hints['num_branches'] == 12
  assert len(match('residual_final')) == hints['num_branches']


@pytest.mark.parametrize('preset', ['fsdp', 'data_parallel'])
def test_params_carry_shardings(preset, devices):
  mesh = jax.make_mesh((4, 2), ('data', 'model'), devices=devices)
  rules = im.logical_axis_rules(preset)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    model = nnx.eval_shape(lambda: im.build(tiny(widths=(4, 8, 8)), rngs=nnx.Rngs(0)))
  specs = {l.path: l.value.sharding.spec for l in ii.leaves(nnx.state(model, nnx.Param))}
  conv = P(None, None, None, 'data') if preset == 'fsdp' else P(None, None, None, None)
  assert specs['stage2/blocks/0/conv1/kernel'] == conv
  assert specs['stage2/blocks/0/norm1/bias'] == (P('data') if preset == 'fsdp' else P(None))
  assert specs['head/kernel'] == (P('data', None) if preset == 'fsdp' else P(None, None))


def test_inits_from_config_names():
  """The registered initializers write every kernel (convs, shortcuts, head) and leave the
  biases and BN params as built."""
  model = materialize(abstract(tiny()))
  params = nnx.state(model, nnx.Param)
  ident = ii.get_scheme('poincare_identity', conv='centre_tap')(jax.random.key(0), params)
  k = np.asarray(ident['stage2']['blocks'][0]['conv1']['kernel'][...])
  np.testing.assert_array_equal(k[1, 1], 0.5 * np.eye(2, 3))
  assert np.count_nonzero(k) == 2
  np.testing.assert_array_equal(ident['head']['kernel'][...], 0.5 * np.eye(4, 10))
  np.testing.assert_array_equal(
    ident['stage2']['blocks'][0]['shortcut']['kernel'][...][0, 0], 0.5 * np.eye(2, 3)
  )
  np.testing.assert_array_equal(
    ident['stem']['norm']['scale'][...], params['stem']['norm']['scale'][...]
  )
  ref = ii.get_scheme('poincare_identity')(jax.random.key(0), params)
  rows = np.nonzero(np.asarray(ref['stem']['conv']['kernel'][...]))
  np.testing.assert_array_equal(rows[3], rows[2] * 9 + rows[0] * 3 + rows[1])  # o = ch·K + p
  std = ii.get_scheme('hnnpp')(jax.random.key(0), params)
  big = np.asarray(std['stage3']['blocks'][0]['conv2']['kernel'][...])
  assert np.all(big != 0) and big.shape == (3, 3, 4, 4)


def test_stages_shapes():
  """stages(): the stem maps (B, 8, 8, 1) images to points (B, 8, 8, w0), the stages halve
  the resolution at stages 2 and 3, the head gives float32 logits (shapes only, no compile;
  the values are exercised by the training test)."""

  def run(x):
    outs = []
    for _, stage in im.build(tiny(), rngs=nnx.Rngs(0)).stages(False):
      x = stage(x)
      outs.append(x)
    return outs

  outs = jax.eval_shape(run, jax.ShapeDtypeStruct((6, 8, 8, 1), jnp.float32))
  shapes = [(o.shape, o.dtype) for o in outs]
  assert [s for s, _ in shapes] == [(6, 8, 8, 2), (6, 8, 8, 2), (6, 4, 4, 3), (6, 2, 2, 4), (6, 10)]
  assert shapes[-1][1] == jnp.float32


@pytest.mark.parametrize(
  'overrides, match',
  [
    ({'depth': 10}, 'depth=10 must be 6n \\+ 2'),
    ({'widths': (8, 16)}, r'widths=\(8, 16\) must be 3 ints'),
    ({'c': 0.0}, 'c=0.0 must be > 0'),
  ],
)
def test_bad_options(overrides, match):
  with pytest.raises(ValueError, match=match):
    abstract(tiny(**overrides))


def test_digits_config_validates():
  """configs/poincare_resnet_digits.py: every argument gives a valid config; a bad conv mode
  is refused with the valid choices."""
  from initlab import config as config_lib  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(__file__).resolve().parents[2] / 'configs' / 'poincare_resnet_digits.py'
  for arg in (None, 'smoke', 'small', 'conv=centre_tap', 'scheme=hnnpp'):
    config = config_lib.load(path, arg)
    config_lib.validate(config, num_devices=8, process_count=1)
    assert config.model.name == 'poincare_resnet'
  assert config_lib.load(path).init.compare == ('poincare_identity', 'hnnpp')
  with pytest.raises(ValueError, match="conv='middle'; valid choices"):
    config_lib.validate(config_lib.load(path, 'conv=middle'), num_devices=8, process_count=1)
