"""PreCropping's channel rule (initlab.init.precrop): exact densities on a chain, consistent
channel groups on a ResNet (the cropped model's kernels have the layout's shapes), the kernel
budget within 1%, and clear errors."""

import math

import numpy as np
import pytest
from flax import nnx

import initlab.init as ii
import initlab.models as im
from initlab.errors import ConfigError
from initlab.init import precrop as pc


def _config(name, **kw):
  c = im.default_config(name)
  c.update(dict(input_shape=(8, 8, 1), num_classes=10, **kw))
  return c


def _kernel_shapes(model_config):
  model = nnx.eval_shape(lambda: im.build(model_config, rngs=nnx.Rngs(0)))
  return {
    l.path: l.shape for l in ii.leaves(nnx.state(model, nnx.Param)) if l.path.endswith('kernel')
  }


def test_chain_reproduces_consistent_densities_exactly():
  lay = pc.layout(_config('mlp', width=64, depth=3))
  # Consistent on a chain (input and logits fixed): p = r1, r1 r2, r2 r3, r3.
  r = (0.5, 0.25, 0.75)
  densities = {
    'hidden/0/kernel': r[0],
    'hidden/1/kernel': r[0] * r[1],
    'hidden/2/kernel': r[1] * r[2],
    'head/kernel': r[2],
  }
  ratios = pc.solve(lay, densities)
  np.testing.assert_allclose([ratios[g] for g in lay.free], r, rtol=1e-6)
  widths = pc.crop(lay, ratios, pc.budget(lay, densities))
  assert widths == {'hidden0': 32, 'hidden1': 16, 'hidden2': 48}  # r · 64
  # The chain's closed form u_l = log p_l - u_{l-1} gives the same ratios.
  u, closed = 0.0, []
  for path in ('hidden/0/kernel', 'hidden/1/kernel', 'hidden/2/kernel'):
    u = min(0.0, math.log(densities[path]) - u)
    closed.append(math.exp(u))
  np.testing.assert_allclose(closed, r, rtol=1e-9)


def test_conv_chain_reproduces_consistent_densities_and_builds():
  cfg = _config('vgg', widths=(16, 32, 64), pool_after=(0, 1))
  lay = pc.layout(cfg)
  r = (0.5, 0.25, 0.75)  # conv0, conv1, conv2 output ratios; input and logits fixed.
  paths = [l.path for l in lay.layers]
  assert paths == [
    'convs/0/conv/kernel',
    'convs/1/conv/kernel',
    'convs/2/conv/kernel',
    'head/kernel',
  ]
  densities = dict(zip(paths, (r[0], r[0] * r[1], r[1] * r[2], r[2])))
  ratios = pc.solve(lay, densities)
  np.testing.assert_allclose([ratios[g] for g in lay.free], r, rtol=1e-6)
  widths = pc.crop(lay, ratios, pc.budget(lay, densities))
  assert widths == {'conv0': 8, 'conv1': 8, 'conv2': 48}
  shapes = _kernel_shapes(lay.apply(widths))
  assert shapes['convs/1/conv/kernel'] == (3, 3, 8, 8) and shapes['head/kernel'] == (48, 10)
  kept = {p: math.prod(shapes[p]) / math.prod(_kernel_shapes(cfg)[p]) for p in paths}
  np.testing.assert_allclose([kept[p] for p in paths], [densities[p] for p in paths], rtol=1e-9)


@pytest.mark.parametrize('multiple', [1, 8])
def test_resnet20_groups_stay_consistent_and_the_budget_is_met(multiple):
  cfg = _config('resnet', depth=20)
  lay = pc.layout(cfg)
  assert lay.kernel_params() == sum(math.prod(s) for s in _kernel_shapes(cfg).values())
  rng = np.random.default_rng(0)
  densities = {l.path: float(rng.uniform(0.05, 0.4)) for l in lay.layers}
  target = pc.budget(lay, densities)
  widths = pc.crop(lay, pc.solve(lay, densities), target, multiple=multiple)
  cropped = lay.apply(widths)
  shapes = _kernel_shapes(cropped)  # Builds: every group's width agrees across its layers.
  full = {**lay.widths, **widths}
  for l in lay.layers:
    assert shapes[l.path][-2:] == (full[l.group_in], full[l.group_out]), l.path
  built = sum(math.prod(s) for s in shapes.values())
  assert built == lay.kernel_params(widths)
  assert abs(built - target) <= 0.01 * target
  streams = [widths[f'stream{s}'] for s in (1, 2, 3)]
  assert streams == sorted(streams)  # The option-A shortcut's constraint.
  if multiple == 8:
    assert all(w % 8 == 0 for w in widths.values())


def test_ratios_stay_at_most_one_unless_reconfigured():
  lay = pc.layout(_config('mlp', width=16, depth=2))
  # The head keeps everything but the first layer little: cropping cannot widen.
  densities = {'hidden/0/kernel': 0.05, 'hidden/1/kernel': 1.0, 'head/kernel': 1.0}
  assert max(pc.solve(lay, densities).values()) <= 1 + 1e-9
  assert max(pc.solve(lay, densities, reconfigure=True).values()) > 1


def test_errors_name_the_problem():
  with pytest.raises(
    ValueError, match="model 'vit' has no channel layout; supported: mlp, resnet, vgg"
  ):
    pc.layout(im.default_config('vit'))
  lay = pc.layout(_config('mlp', width=8, depth=1))
  with pytest.raises(KeyError, match="no density for layer 'head/kernel'"):
    pc.solve(lay, {'hidden/0/kernel': 0.5})
  with pytest.raises(ValueError, match='cannot be met: the narrowest model'):
    pc.crop(lay, {'hidden0': 0.1}, budget=10)
  for bad, words in [
    (dict(density=0.0), 'config.init.precrop.density: 0.0; expected a number in \\(0, 1\\]'),
    (dict(density=1.5), 'config.init.precrop.density: 1.5'),
    (dict(score='l1'), "config.init.precrop.score: 'l1'; valid choices: snip, grasp, synflow"),
    (dict(multiple=0), 'config.init.precrop.multiple: 0'),
    (dict(base='nope'), 'config.init.precrop.base'),
  ]:
    with pytest.raises(ConfigError, match=words):
      ii.get_scheme('precrop', **bad)
  with pytest.raises(ConfigError, match='config.init.pai_mask.density: -0.1'):
    ii.get_scheme('pai_mask', density=-0.1)
