"""Forward shapes, the stages/init_hints hooks, param layouts and counts of the zoo."""

import inspect
import re

from flax import nnx
import initlab.init as ii
import initlab.models as im
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# pylint: disable-next=g-bad-import-order
from model_zoo_testlib import NAMES, abstract, forward, forward_by_stages, tiny_config, tiny_input


def _params(model):
  return ii.leaves(nnx.state(model, nnx.Param))


@pytest.mark.parametrize('name', NAMES)
def test_forward_shape_and_stages(zoo, name):
  model, config, x = zoo[name], tiny_config(name), tiny_input(name, seed=1)
  y = forward(model, x)
  expected = (
    (4, config.max_len, config.vocab_size) if name == 'transformer_lm' else (4, config.num_classes)
  )
  assert y.shape == expected and y.dtype == jnp.float32
  assert np.isfinite(np.asarray(y)).all()
  # Composing the stages gives the model.
  np.testing.assert_allclose(forward_by_stages(model, x), y, rtol=1e-5, atol=1e-5)
  stages = model.stages()
  names = [s for s, _ in stages]
  assert names[-1] == 'head' and len(set(names)) == len(names)
  assert model.init_hints()['depth'] == len(stages)


def test_stage_names(zoo):
  names = {n: [s for s, _ in zoo[n].stages()] for n in NAMES}
  assert names['mlp'] == ['hidden/0', 'hidden/1', 'head']
  assert names['resnet'] == [
    'stem',
    'stage1/blocks/0',
    'stage2/blocks/0',
    'stage3/blocks/0',
    'head',
  ]
  assert names['vit'] == ['embed', 'blocks/0', 'blocks/1', 'head']
  assert names['transformer_lm'] == ['embed', 'blocks/0', 'blocks/1', 'blocks/2', 'head']


def test_resnet_stages_in_train_mode(zoo):
  x = tiny_input('resnet', seed=3)
  a, b = nnx.clone(zoo['resnet']), nnx.clone(zoo['resnet'])
  np.testing.assert_allclose(
    forward_by_stages(a, x, train=True), forward(b, x, train=True), rtol=1e-5, atol=1e-5
  )
  # Both updated their BatchNorm statistics, the same way.
  np.testing.assert_allclose(a.stem.norm.mean[...], b.stem.norm.mean[...], rtol=1e-6)
  assert not np.allclose(a.stem.norm.mean[...], zoo['resnet'].stem.norm.mean[...])


def test_default_configs_list_every_constructor_option():
  classes = {
    'mlp': im.MLP,
    'resnet': im.ResNet,
    'vit': im.ViT,
    'transformer_lm': im.TransformerLM,
    'gcn': im.GCN,
    'sage': im.GraphSAGE,
    'gin': im.GIN,
    'poincare_resnet': im.PoincareResNet,
    'vgg': im.VGG,
  }
  assert set(im.model_names()) == set(classes)
  for name, cls in classes.items():
    config = im.default_config(name)
    options = set(inspect.signature(cls.__init__).parameters) - {'self', 'rngs'}
    assert options == set(config) - {'name'} and config.name == name


@pytest.mark.parametrize('depth,expected', [(20, 269_722), (32, 464_154), (56, 853_018)])
def test_resnet_param_counts(depth, expected):
  model = abstract(im.default_config(f'resnet{depth}'))
  count = sum(int(np.prod(l.shape)) for l in _params(model))
  assert count == im.resnet_param_count(depth) == expected  # Option-A (parameter-free) shortcut.
  assert model.init_hints()['depth'] == (depth - 2) // 2 + 2  # stem, 3n blocks, head


def test_resnet_param_count_formula_other_options():
  model = abstract(tiny_config('resnet', width=1.5, norm='none', num_classes=7))
  count = sum(int(np.prod(l.shape)) for l in _params(model))
  assert count == im.resnet_param_count(8, 1.5, 7, 3, 'none')
  assert model.stage2.blocks[0].norm1 is None and model.stem.conv.bias is not None


def test_lm_is_causal(zoo):
  tokens, t = tiny_input('transformer_lm', seed=4), 5
  changed = tokens.at[:, t].set((tokens[:, t] + 1) % tiny_config('transformer_lm').vocab_size)
  a, b = forward(zoo['transformer_lm'], tokens), forward(zoo['transformer_lm'], changed)
  np.testing.assert_allclose(a[:, :t], b[:, :t], rtol=1e-6, atol=1e-6)
  assert not np.allclose(a[:, t:], b[:, t:])


def test_lm_blocks_are_stacked_with_layers_axis(zoo):
  depth = tiny_config('transformer_lm').depth
  block_params = [l for l in _params(zoo['transformer_lm']) if l.path.startswith('blocks/')]
  assert len(block_params) == 16  # norm1/norm2 x (scale, bias) + query/key/value/out/fc1/fc2 x 2
  for leaf in block_params:
    assert leaf.names[0] == 'layers' and leaf.shape[0] == depth, leaf


def _grad_jaxpr(model, tokens):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(p):
    return nnx.merge(graphdef, p, rest)(tokens).mean()

  return str(jax.make_jaxpr(jax.grad(loss))(params))


def test_lm_remat(zoo):
  tokens, plain = tiny_input('transformer_lm', seed=5), zoo['transformer_lm']
  remat = abstract(tiny_config('transformer_lm', remat=True))
  nnx.update(remat, nnx.state(plain))
  np.testing.assert_allclose(forward(remat, tokens), forward(plain, tokens), rtol=1e-6)
  # The backward pass of the scanned blocks is rematerialized (traced only: compiling is slow).
  assert 'remat' in _grad_jaxpr(remat, tokens)
  assert 'remat' not in _grad_jaxpr(plain, tokens)


@pytest.mark.parametrize('name', NAMES)
def test_every_param_is_annotated_and_has_a_spec(zoo, name):
  for leaf in _params(zoo[name]):
    spec = ii.infer_spec(leaf.path, leaf.shape, leaf.names)
    assert leaf.names is not None and len(leaf.names) == len(leaf.shape), leaf.path
    assert set(leaf.names) <= set(im.LOGICAL_AXES) | {None}, leaf
    if spec.role == 'kernel':
      fan_in, fan_out = spec.fans(leaf.shape)
      assert fan_in > 1 and fan_out > 1, leaf.path


def _fans(leaves, path):
  (leaf,) = [l for l in leaves if l.path == path]
  return leaf.shape, ii.infer_spec(leaf.path, leaf.shape, leaf.names).fans(leaf.shape)


def test_fans_of_typical_params():
  resnet = _params(abstract(im.default_config('resnet20')))
  assert _fans(resnet, 'stage2/blocks/0/conv1/kernel') == ((3, 3, 16, 32), (144, 288))
  assert _fans(resnet, 'stage2/blocks/1/conv2/kernel') == ((3, 3, 32, 32), (288, 288))
  assert _fans(resnet, 'head/kernel') == ((64, 10), (64, 10))

  config = tiny_config('transformer_lm')
  d, h, layers = config.dim, config.num_heads, config.depth
  lm = _params(abstract(config))
  assert _fans(lm, 'blocks/mlp/fc1/kernel') == ((layers, d, 4 * d), (d, 4 * d))
  assert _fans(lm, 'blocks/mlp/fc2/kernel') == ((layers, 4 * d, d), (4 * d, d))
  assert _fans(lm, 'blocks/attn/query/kernel') == ((layers, d, h, d // h), (d, h * (d // h)))
  assert _fans(lm, 'blocks/attn/out/kernel') == ((layers, h, d // h, d), (h * (d // h), d))
  # Embeddings (V, D): fan_in = D as Flax's nn.Embed default and PyTorch, fan_out = V.
  assert _fans(lm, 'token_embed/embedding') == ((config.vocab_size, d), (d, config.vocab_size))
  vit = _params(abstract(tiny_config('vit')))
  assert _fans(vit, 'cls_token/embedding') == ((1, 16), (16, 1))
  assert _fans(vit, 'pos_embed/embedding') == ((5, 16), (16, 5))


EXPECTED_RESIDUAL_FINAL = {
  'mlp': set(),
  'vgg': set(),
  'resnet': {
    'stage1/blocks/0/conv2/kernel',
    'stage2/blocks/0/conv2/kernel',
    'stage3/blocks/0/conv2/kernel',
  },
  'vit': {
    'blocks/0/attn/out/kernel',
    'blocks/0/mlp/fc2/kernel',
    'blocks/1/attn/out/kernel',
    'blocks/1/mlp/fc2/kernel',
  },
  'transformer_lm': {'blocks/attn/out/kernel', 'blocks/mlp/fc2/kernel'},
}
_ATTN_MLP = {'attn/query', 'attn/key', 'attn/value', 'attn/out', 'mlp/fc1', 'mlp/fc2'}
EXPECTED_RESIDUAL_BRANCH = {  # every kernel inside a branch; not the stem/patch embedding/head
  'mlp': set(),
  'vgg': set(),
  'resnet': {f'stage{s}/blocks/0/conv{c}/kernel' for s in (1, 2, 3) for c in (1, 2)},
  'vit': {f'blocks/{i}/{m}/kernel' for i in (0, 1) for m in _ATTN_MLP},
  'transformer_lm': {f'blocks/{m}/kernel' for m in _ATTN_MLP},
}


@pytest.mark.parametrize('name', NAMES)
def test_init_hints_regexes(zoo, name):
  hints, leaves = zoo[name].init_hints(), _params(zoo[name])
  assert set(hints) == {
    'depth',
    'classifier',
    'residual_final',
    'residual_branch',
    'num_branches',
    'branch_layers',
  }
  paths = {l.path for l in leaves}
  assert {p for p in paths if re.fullmatch(hints['classifier'], p)} == {'head/kernel'}
  final = (
    {p for p in paths if re.fullmatch(hints['residual_final'], p)}
    if hints['residual_final']
    else set()
  )
  assert final == EXPECTED_RESIDUAL_FINAL[name]
  branch = (
    {p for p in paths if re.fullmatch(hints['residual_branch'], p)}
    if hints['residual_branch']
    else set()
  )
  assert branch == EXPECTED_RESIDUAL_BRANCH[name] and final <= branch
  # One matched kernel per branch (a stacked kernel holds one per layer).
  branches = sum(l.shape[0] if l.names[0] == 'layers' else 1 for l in leaves if l.path in final)
  assert branches == hints['num_branches']


def test_resnet_hints_on_a_deeper_net():
  model = abstract(im.default_config('resnet32'))
  hints, paths = model.init_hints(), [l.path for l in _params(model)]
  final = [p for p in paths if re.fullmatch(hints['residual_final'], p)]
  assert len(final) == hints['num_branches'] == 15 and hints['branch_layers'] == 2
  assert 'stage3/blocks/4/conv2/kernel' in final and 'stage3/blocks/4/conv1/kernel' not in final


def test_dtypes(zoo):
  model = abstract(tiny_config('mlp', dtype='bfloat16', param_dtype='float32'))
  nnx.update(model, nnx.state(zoo['mlp']))
  x = tiny_input('mlp', seed=6)
  assert model.head.kernel.dtype == jnp.float32
  assert model.stages()[0][1](x).dtype == jnp.bfloat16
  np.testing.assert_allclose(forward(model, x), forward(zoo['mlp'], x), rtol=0.05, atol=0.05)


def test_real_init_without_mesh():
  """A real (eager, unsharded) build: ViT with mean pooling has no class token."""
  with nnx.use_eager_sharding(False):
    model = im.build(tiny_config('vit', pool='mean'), rngs=nnx.Rngs(0))
  assert model.cls_token is None and model.pos_embed.embedding.shape == (4, 16)
  kernel = model.blocks[0].mlp.fc1.kernel
  assert kernel.get_metadata()['out_sharding'] == ('embed', 'mlp')
  assert kernel.get_metadata()['eager_sharding'] is False
  assert len(kernel[...].sharding.device_set) == 1
  y = nnx.eval_shape(lambda m, x: m(x), model, tiny_input('vit', seed=7))
  assert y.shape == (4, 10)


def test_real_init_matches_the_spec_fans():
  """Flax's own defaults (lecun_normal kernels, nn.Embed's variance_scaling(1, fan_in)) have
  std = 1/sqrt(fan_in) with fan_in from initlab's specs, to within sampling error: a spec
  that got a fan wrong (e.g. an embedding's fan_in = V) breaks it."""
  config = tiny_config('transformer_lm', vocab_size=256, dim=32)
  with nnx.use_eager_sharding(False):
    model = im.build(config, rngs=nnx.Rngs(0))
  checked = []
  for leaf in _params(model):
    spec = ii.infer_spec(leaf.path, leaf.shape, leaf.names)
    if spec.role not in ('kernel', 'embedding') or leaf.path == 'pos_embed/embedding':
      continue  # pos_embed: normal(0.02), not fan-scaled
    w = np.asarray(leaf.value, np.float64)
    ratio = w.std() * np.sqrt(spec.fans(leaf.shape)[0])
    assert abs(ratio - 1) < 6 / np.sqrt(2 * w.size), (leaf.path, ratio)  # 6 sigma of std
    checked.append(leaf.path)
  assert 'token_embed/embedding' in checked and 'blocks/attn/query/kernel' in checked
