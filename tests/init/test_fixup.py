"""Fixup on the zoo (arXiv 1901.09321, Sec. 3): only layers inside residual branches are scaled."""

from flax import nnx
import jax
import numpy as np
import pytest

import initlab.init as ii
import initlab.models as im


def _fixup(config):
  model = nnx.eval_shape(lambda: im.build(config, rngs=nnx.Rngs(0)))
  hints = model.init_hints()
  params = ii.get_scheme('fixup')(
    jax.random.key(0), nnx.state(model, nnx.Param), ii.InitContext(hints=hints)
  )
  return hints, {
    l.path: (np.asarray(l.value, np.float64), l)
    for l in ii.leaves(params)
    if ii.infer_spec(l.path, l.shape, l.names).role == 'kernel'
  }


def _he_ratio(entry):
  """Var(w)·fan_in/2: 1 for plain He."""
  w, leaf = entry
  return w.var() * ii.infer_spec(leaf.path, leaf.shape, leaf.names).fans(leaf.shape)[0] / 2


def test_resnet_fixup_scales_only_the_branches():
  config = im.default_config('resnet')
  config.update(depth=8, width=4.0, input_shape=(8, 8, 3))  # widths 64/128/256, L = 3, m = 2
  hints, kernels = _fixup(config)
  scale = hints['num_branches'] ** (-1.0 / (2 * hints['branch_layers'] - 2))  # 3^-1
  assert abs(_he_ratio(kernels['stem/conv/kernel']) - 1) < 0.15  # 1728 draws; buggy: 0.33
  for stage in (1, 2, 3):
    assert abs(_he_ratio(kernels[f'stage{stage}/blocks/0/conv1/kernel']) / scale**2 - 1) < 0.05
    assert np.all(kernels[f'stage{stage}/blocks/0/conv2/kernel'][0] == 0)
  assert np.all(kernels['head/kernel'][0] == 0)
  assert set(kernels) == {'stem/conv/kernel', 'head/kernel'} | {
    f'stage{s}/blocks/0/conv{c}/kernel' for s in (1, 2, 3) for c in (1, 2)
  }


def test_vit_fixup_keeps_the_patch_embedding_plain_he():
  config = im.default_config('vit')
  config.update(input_shape=(16, 16, 3), patch_size=8, dim=64, depth=2, num_heads=2)  # L = 4
  hints, kernels = _fixup(config)
  scale = hints['num_branches'] ** (-1.0 / (2 * hints['branch_layers'] - 2))
  assert abs(_he_ratio(kernels['patch_embed/kernel']) - 1) < 0.15  # 12288 draws; buggy: 0.25
  assert abs(_he_ratio(kernels['blocks/0/mlp/fc1/kernel']) / scale**2 - 1) < 0.1
  assert abs(_he_ratio(kernels['blocks/1/attn/query/kernel']) / scale**2 - 1) < 0.15
  for path in ('blocks/0/attn/out/kernel', 'blocks/1/mlp/fc2/kernel', 'head/kernel'):
    assert np.all(kernels[path][0] == 0), path


def test_fixup_refuses_a_model_without_residual_branches():
  config = im.default_config('mlp')
  config.update(input_shape=(8, 8, 1), depth=2, width=16)
  with pytest.raises(ValueError, match="fixup' needs a residual model.*residual_branch=None"):
    _fixup(config)
