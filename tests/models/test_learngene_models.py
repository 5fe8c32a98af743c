"""Learngene variants of the transformer LM and the ViT (option `learngene`: 'tleg', 'sws').

Param layout (gene_a / gene_b: one block's params; gene_stages: a leading stage axis tagged
'layers'), TLEG's init, the forward pass equal to an ordinary model whose blocks hold the
expansion (coefficients computed here, both conventions), the defaults unchanged, errors,
hints and sharding.
"""

import json
import re

from flax import nnx
from initlab import config as config_lib
from initlab import sharding as sharding_lib
import initlab.init as ii
import initlab.models as im
import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import pytest

# pylint: disable-next=g-bad-import-order
from model_zoo_testlib import abstract, forward, forward_by_stages, materialize

MODELS = ('transformer_lm', 'vit')
NEW_OPTIONS = ('learngene', 'learngene_coeff', 'learngene_stages')
TINY = {
  'transformer_lm': dict(vocab_size=32, dim=16, depth=3, num_heads=2, max_len=8),
  'vit': dict(input_shape=(8, 8, 1), patch_size=4, dim=16, depth=3, num_heads=2),
}
SWS_STAGES = (1, 2)  # depth 3: layer 0 uses stage 0, layers 1 and 2 stage 1.
VARIANTS = [
  dict(learngene='tleg'),
  dict(learngene='tleg', learngene_coeff='endpoint'),
  dict(learngene='sws', learngene_stages=SWS_STAGES),
]
VARIANT_IDS = ['tleg', 'tleg-endpoint', 'sws']
BLOCK_PATHS = {  # One TransformerBlock's params.
  f'{m}/{p}'
  for m, ps in [
    ('norm1', ('scale', 'bias')),
    ('norm2', ('scale', 'bias')),
    ('attn/query', ('kernel', 'bias')),
    ('attn/key', ('kernel', 'bias')),
    ('attn/value', ('kernel', 'bias')),
    ('attn/out', ('kernel', 'bias')),
    ('mlp/fc1', ('kernel', 'bias')),
    ('mlp/fc2', ('kernel', 'bias')),
  ]
  for p in ps
}


def config(name, **overrides):
  c = im.default_config(name)
  c.update(TINY[name])
  c.update(overrides)
  return c


def _input(name, seed=0, batch=2):
  key, c = jax.random.key(seed), config(name)
  if name == 'transformer_lm':
    return jax.random.randint(key, (batch, c.max_len), 0, c.vocab_size)
  return jax.random.normal(key, (batch, *c.input_shape), jnp.float32)


def _leaves(model):
  return {l.path: l for l in ii.leaves(nnx.state(model, nnx.Param))}


def _tree(model):
  """{param path: (shape, logical names)}."""
  return {p: (tuple(l.value.shape), l.names) for p, l in _leaves(model).items()}


def _values(model):
  return {p: np.asarray(l.value) for p, l in _leaves(model).items()}


def _real(c):
  with nnx.use_eager_sharding(False):  # As `im.build` does without a mesh.
    return im.build(c, rngs=nnx.Rngs(0))


def _block_tree(name):
  """{block path: (shape, names)} of one block of the ordinary tiny model."""
  tree = _tree(abstract(config(name)))
  if name == 'transformer_lm':  # Stacked: drop the layer axis.
    return {p[len('blocks/') :]: (s[1:], n[1:]) for p, (s, n) in tree.items() if 'blocks/' in p}
  return {p[len('blocks/0/') :]: v for p, v in tree.items() if p.startswith('blocks/0/')}


# --- Param layout. ------------------------------------------------------------------------


@pytest.mark.parametrize('name', MODELS)
def test_tleg_params_are_two_blocks(name):
  tree, plain, block = (
    _tree(abstract(config(name, learngene='tleg'))),
    _tree(abstract(config(name))),
    _block_tree(name),
  )
  assert set(block) == BLOCK_PATHS
  for gene in ('gene_a', 'gene_b'):
    assert {p[len(gene) + 1 :]: v for p, v in tree.items() if p.startswith(gene + '/')} == block
  assert tree['gene_a/attn/query/kernel'] == ((16, 2, 8), ('embed', 'heads', 'kv'))
  assert tree['gene_b/mlp/fc1/kernel'] == ((16, 64), ('embed', 'mlp'))
  # Everything outside the blocks is the ordinary model's; no path starts with 'blocks'.
  outside = {p: v for p, v in plain.items() if not p.startswith('blocks/')}
  assert {p: v for p, v in tree.items() if not p.startswith('gene_')} == outside
  assert not any(p.startswith('blocks') for p in tree)


@pytest.mark.parametrize('name', MODELS)
def test_sws_params_have_a_stage_axis(name):
  stages = (2, 1, 1, 3)
  tree = _tree(abstract(config(name, depth=7, learngene='sws', learngene_stages=stages)))
  genes = {p[len('gene_stages/') :]: v for p, v in tree.items() if p.startswith('gene_stages/')}
  assert genes == {p: ((4, *s), ('layers', *n)) for p, (s, n) in _block_tree(name).items()}
  assert set(tree) - {f'gene_stages/{p}' for p in genes} == {
    p for p in _tree(abstract(config(name))) if not p.startswith('blocks/')
  }


@pytest.mark.parametrize('name', MODELS)
def test_gene_fans_are_the_blocks_fans(name):
  """Fans read from the logical names: the SWS stage axis is a stacked ('layers') axis."""
  d = 16
  for c, prefix in [
    (config(name, learngene='tleg'), 'gene_b'),
    (config(name, learngene='sws', learngene_stages=SWS_STAGES), 'gene_stages'),
  ]:
    leaves = _leaves(abstract(c))
    for path, fans in [
      ('mlp/fc1/kernel', (d, 4 * d)),
      ('mlp/fc2/kernel', (4 * d, d)),
      ('attn/query/kernel', (d, d)),
      ('attn/out/kernel', (d, d)),
    ]:
      leaf = leaves[f'{prefix}/{path}']
      spec = ii.infer_spec(leaf.path, leaf.shape, leaf.names)
      assert spec.role == 'kernel' and spec.fans(leaf.shape) == fans, leaf.path


# --- Init. ---------------------------------------------------------------------------------


@pytest.mark.parametrize('name', MODELS)
def test_tleg_init(name):
  """θ_A, θ_B: kernels truncated normal with std 0.02, biases 0, γ_A = 1, β_A = γ_B = β_B = 0."""
  model = _real(config(name, learngene='tleg', dim=32))
  values, kernels = _values(model), {'gene_a': [], 'gene_b': []}
  for path, v in values.items():
    gene, _, rest = path.partition('/')
    if gene not in kernels:
      continue
    if rest.endswith('kernel'):
      kernels[gene].append(v.ravel())
    elif rest.endswith('scale'):
      np.testing.assert_array_equal(v, 1.0 if gene == 'gene_a' else 0.0, err_msg=path)
    else:
      np.testing.assert_array_equal(v, 0.0, err_msg=path)  # Biases, LayerNorm β.
  for gene, ks in kernels.items():
    k = np.concatenate(ks).astype(np.float64)
    assert len(ks) == 6 and abs(k.mean()) < 0.002, gene
    assert abs(k.std() / 0.02 - 1) < 6 / np.sqrt(2 * k.size), (gene, k.std())  # 6 sigma
    assert np.abs(k).max() <= 2.0
  assert not np.allclose(values['gene_a/mlp/fc1/kernel'], values['gene_b/mlp/fc1/kernel'])
  # Outside the blocks: the ordinary init (LM: the same values, it draws them the same way).
  if name == 'transformer_lm':
    plain = _values(_real(config(name, dim=32)))
    for path in ('token_embed/embedding', 'pos_embed/embedding', 'head/kernel'):
      np.testing.assert_array_equal(values[path], plain[path])


def test_sws_init_is_the_ordinary_blocks_per_stage():
  values = _values(_real(config('transformer_lm', learngene='sws', learngene_stages=SWS_STAGES)))
  fc1 = values['gene_stages/mlp/fc1/kernel']
  assert fc1.shape == (2, 16, 64) and not np.allclose(fc1[0], fc1[1])  # Independent stages.
  for k in (fc1[0], fc1[1]):  # lecun_normal, as the ordinary blocks: std 1/sqrt(fan_in).
    assert abs(k.std() * np.sqrt(16) - 1) < 6 / np.sqrt(2 * k.size)
  np.testing.assert_array_equal(values['gene_stages/norm1/scale'], 1.0)
  np.testing.assert_array_equal(values['gene_stages/mlp/fc1/bias'], 0.0)


# --- The forward pass is the ordinary model's on the expansion. --------------------------


def _coefficients(depth, coeff):
  """TLEG's c_l, computed directly: l/L ('code') or l/(L-1) ('endpoint', c_0 = 0 for L = 1)."""
  if coeff == 'code':
    return [l / depth for l in range(depth)]
  return [l / (depth - 1) if depth > 1 else 0.0 for l in range(depth)]


def _expansion(values, variant, depth):
  """{block path: [layer l's value for l < depth]} of the learngene's `values`, by hand."""
  if variant['learngene'] == 'tleg':
    c = _coefficients(depth, variant.get('learngene_coeff', 'code'))
    return {
      p: [values[f'gene_a/{p}'] + np.float32(c[l]) * values[f'gene_b/{p}'] for l in range(depth)]
      for p in BLOCK_PATHS
    }
  stage_of = [k for k, n in enumerate(variant['learngene_stages']) for _ in range(n)]
  assert len(stage_of) == depth
  return {p: [values[f'gene_stages/{p}'][stage_of[l]] for l in range(depth)] for p in BLOCK_PATHS}


def _descendant(name, learngene_model, variant, depth):
  """An ordinary model of `depth` layers: the learngene's params outside the blocks, and its
  expansion in the blocks (stacked `blocks/...` for the LM, `blocks/l/...` for the ViT)."""
  values = _values(learngene_model)
  layers = _expansion(values, variant, depth)
  if name == 'transformer_lm':
    values.update({f'blocks/{p}': np.stack(v) for p, v in layers.items()})
  else:
    values.update({f'blocks/{l}/{p}': v[l] for p, v in layers.items() for l in range(depth)})
  model = abstract(config(name, depth=depth))
  assert set(_leaves(model)) <= set(values)
  nnx.update(model, ii.map_leaves(lambda l: jnp.asarray(values[l.path]), nnx.state(model)))
  return model


@pytest.mark.parametrize('variant', VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize('name', MODELS)
def test_forward_equals_the_ordinary_model_on_the_expansion(name, variant):
  model = materialize(abstract(config(name, **variant)), seed=3)  # γ_B, biases nonzero too.
  x = _input(name, seed=1)
  y = forward(model, x)
  expected = forward(_descendant(name, model, variant, 3), x)
  assert y.shape == expected.shape and y.dtype == jnp.float32
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  # Not trivially (the layers differ), and the stages compose to the model.
  fc1 = _expansion(_values(model), variant, 3)['mlp/fc1/kernel']
  assert not np.allclose(fc1[0], fc1[2])
  np.testing.assert_allclose(forward_by_stages(model, x), y, rtol=1e-5, atol=1e-5)
  stages = [s for s, _ in model.stages()]
  assert stages == ['embed', 'layers/0', 'layers/1', 'layers/2', 'head']
  assert model.init_hints()['depth'] == len(stages)


@pytest.mark.parametrize('name', MODELS)
def test_tleg_depth_one_endpoint(name):
  """L = 1 with 'endpoint': c_0 = 0, the one layer is θ_A."""
  variant = dict(learngene='tleg', learngene_coeff='endpoint')
  model = materialize(abstract(config(name, depth=1, **variant)), seed=4)
  x = _input(name, seed=2)
  np.testing.assert_allclose(
    forward(model, x), forward(_descendant(name, model, variant, 1), x), rtol=1e-5, atol=1e-5
  )


def test_lm_learngene_remat_and_gradients():
  variant = VARIANTS[0]
  plain = materialize(abstract(config('transformer_lm', **variant)), seed=5)
  remat = abstract(config('transformer_lm', remat=True, **variant))
  nnx.update(remat, nnx.state(plain))
  tokens = _input('transformer_lm', seed=6)
  np.testing.assert_allclose(forward(remat, tokens), forward(plain, tokens), rtol=1e-6)
  # Gradients reach both genes (θ_B through c_l > 0) and every SWS stage.
  for c, paths in [
    (config('transformer_lm', **variant), ('gene_a', 'gene_b')),
    (config('transformer_lm', learngene='sws', learngene_stages=SWS_STAGES), ('gene_stages',)),
  ]:
    model = materialize(abstract(c), seed=7)
    grads = nnx.grad(lambda m: forward(m, tokens).std())(model)
    g = {l.path: np.asarray(l.value) for l in ii.leaves(nnx.state(grads))}
    for p in paths:
      kernel = g[f'{p}/mlp/fc1/kernel']
      assert np.abs(kernel).sum() > 0, p
      if p == 'gene_stages':
        assert all(np.abs(kernel[k]).sum() > 0 for k in range(len(SWS_STAGES)))


# --- Defaults and options. -----------------------------------------------------------------


def _without(c, keys):
  """`c` as a plain dict without `keys`: a config recorded before they existed (via JSON)."""
  return json.loads(json.dumps({k: v for k, v in c.to_dict().items() if k not in keys}))


@pytest.mark.parametrize('name', MODELS)
def test_defaults_build_the_same_model(name):
  default = im.default_config(name)
  assert (default.learngene, default.learngene_coeff) == ('', 'code')
  assert default.learngene_stages == (3, 3, 4, 3, 3)
  c = config(name)
  tree = _tree(abstract(c))
  assert any(p.startswith('blocks/') for p in tree) and not any('gene' in p for p in tree)
  # A config recorded before the options builds the same model ...
  assert _tree(abstract(_without(c, NEW_OPTIONS))) == tree
  # ... so does the class called without them ...
  cls = {'transformer_lm': im.TransformerLM, 'vit': im.ViT}[name]
  options = {k: v for k, v in c.items() if k not in ('name', *NEW_OPTIONS)}
  options.update(dtype=jnp.float32, param_dtype=jnp.float32)
  with nnx.use_eager_sharding(False):
    assert _tree(nnx.eval_shape(lambda: cls(**options, rngs=nnx.Rngs(0)))) == tree
  # ... with the same values, bit for bit; the other options do nothing without a learngene.
  values = _values(_real(c))
  for other in (_without(c, NEW_OPTIONS), config(name, learngene_coeff='endpoint')):
    same = _values(_real(other))
    assert same.keys() == values.keys()
    for p, v in values.items():
      assert same[p].dtype == v.dtype and np.array_equal(same[p], v), p
  assert model_hints(c) == model_hints(_without(c, NEW_OPTIONS))


def model_hints(c):
  return abstract(c).init_hints()


def test_options_through_the_config_api():
  cfg = config_lib.model_config('transformer_lm', learngene='sws', learngene_stages=[2, 2])
  assert tuple(cfg.learngene_stages) == (2, 2)
  c = config('transformer_lm')
  c.update(depth=4, learngene='sws', learngene_stages=[2, 2])  # A list, as from a command line.
  assert _tree(abstract(c))['gene_stages/norm1/scale'][0] == (2, 16)


@pytest.mark.parametrize('name', MODELS)
@pytest.mark.parametrize(
  'overrides,match',
  [
    (dict(learngene='tlge'), r"learngene='tlge'; valid: \('', 'tleg', 'sws'\)"),
    (dict(learngene_coeff='mid'), r"learngene_coeff='mid'; valid: \('code', 'endpoint'\)"),
    (dict(learngene='sws', learngene_stages=()), r'learngene_stages=\(\) must be a non-empty'),
    (dict(learngene='sws', learngene_stages=(2, 0, 1)), r'learngene_stages=\(2, 0, 1\) must hold'),
    (dict(learngene='sws', learngene_stages=(1, 1.5, 1)), r'learngene_stages=.* must hold ints'),
    (
      dict(learngene='sws'),
      r"learngene='sws' needs depth == sum\(learngene_stages\); got depth=3, "
      r'learngene_stages=\(3, 3, 4, 3, 3\) \(sum 16\)',
    ),
  ],
)
def test_bad_options(name, overrides, match):
  with pytest.raises(ValueError, match=f'{name}: {match}'):
    abstract(config(name, **overrides))


def test_vit_learngene_needs_one_mlp_width():
  tree = _tree(abstract(config('vit', learngene='tleg', mlp_dims=(24, 24, 24))))
  assert tree['gene_a/mlp/fc1/kernel'][0] == (16, 24)
  with pytest.raises(ValueError, match=r'vit: .*mlp_dims=\(8, 24, 8\) must be \(\) or one width'):
    abstract(config('vit', learngene='tleg', mlp_dims=(8, 24, 8)))
  with pytest.raises(ValueError, match=r"vit: learngene='tleg' needs depth >= 1; got depth=0"):
    abstract(config('vit', learngene='tleg', depth=0))


# --- Hints. --------------------------------------------------------------------------------


@pytest.mark.parametrize('name', MODELS)
def test_init_hints(name):
  final_kernels = ('attn/out/kernel', 'mlp/fc2/kernel')
  branch_kernels = {f'{m}/kernel' for m in ('attn/query', 'attn/key', 'attn/value')}
  branch_kernels |= {'attn/out/kernel', 'mlp/fc1/kernel', 'mlp/fc2/kernel'}
  for variant, final, branch in [
    (VARIANTS[0], {f'gene_{g}/{k}' for g in 'ab' for k in final_kernels}, None),
    (
      VARIANTS[2],
      {f'gene_stages/{k}' for k in final_kernels},
      {f'gene_stages/{k}' for k in branch_kernels},
    ),
  ]:
    model = abstract(config(name, **variant))
    hints, paths = model.init_hints(), set(_leaves(model))
    match = lambda regex: {p for p in paths if re.fullmatch(regex, p)}
    assert match(hints['classifier']) == {'head/kernel'}
    assert match(hints['residual_final']) == final
    assert (None if hints['residual_branch'] is None else match(hints['residual_branch'])) == branch
    assert hints['num_branches'] == 6 and hints['branch_layers'] == 2 and hints['depth'] == 5


def test_fixup_refuses_tleg_and_scales_sws():
  """TLEG has no residual_branch hint (module docstring): Fixup refuses it by name."""
  fixup = ii.get_scheme('fixup')
  model = abstract(config('transformer_lm', **VARIANTS[0]))
  params = nnx.state(model, nnx.Param)
  ctx = ii.InitContext(hints=model.init_hints())
  with pytest.raises(ValueError, match=r"'fixup' needs a residual model.*residual_branch=None"):
    jax.eval_shape(lambda p: fixup(jax.random.key(0), p, ctx), params)
  model = materialize(abstract(config('transformer_lm', learngene='sws', learngene_stages=(3,))))
  ctx = ii.InitContext(hints=model.init_hints())
  out = jax.jit(lambda p: fixup(jax.random.key(0), p, ctx))(nnx.state(model, nnx.Param))
  (fc2,) = [np.asarray(l.value) for l in ii.leaves(out) if l.path == 'gene_stages/mlp/fc2/kernel']
  np.testing.assert_array_equal(fc2, 0.0)


# --- Sharding. -----------------------------------------------------------------------------

EXPECTED = {
  'fsdp': {
    'gene_a/mlp/fc1/kernel': P('data', None),
    'gene_b/attn/out/kernel': P(None, None, 'data'),
    'gene_stages/mlp/fc1/kernel': P(None, 'data', None),
    'gene_stages/attn/out/kernel': P(None, None, None, 'data'),
  },
  'tensor_parallel': {
    'gene_a/mlp/fc1/kernel': P(None, 'model'),
    'gene_b/attn/query/kernel': P(None, 'model', None),
    'gene_stages/mlp/fc1/kernel': P(None, None, 'model'),
    'gene_stages/mlp/fc2/kernel': P(None, 'model', None),
    'gene_stages/attn/out/kernel': P(None, 'model', None, None),
  },
  'data_parallel': {
    'gene_a/mlp/fc1/kernel': P(None, None),
    'gene_stages/mlp/fc1/kernel': P(None, None, None),
  },
}
SHARDED_VARIANTS = [VARIANTS[0], VARIANTS[2]]


def _mesh(devices, auto=False):
  types = dict(axis_types=(AxisType.Auto, AxisType.Auto)) if auto else {}
  return jax.make_mesh((4, 2), ('data', 'model'), devices=devices, **types)


@pytest.mark.parametrize('preset', im.SHARDING_PRESETS)
def test_params_carry_shardings(preset, devices):
  mesh, rules = _mesh(devices), im.logical_axis_rules(preset)
  seen = set()
  for name in MODELS:
    for variant in SHARDED_VARIANTS:
      c = config(name, **variant)
      with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        model = abstract(c)
      # The shardings initlab computes for an unsharded abstract state (the run's path) ...
      shardings = {
        l.path: l.value
        for l in ii.leaves(sharding_lib.state_shardings(nnx.state(abstract(c)), mesh, rules))
      }
      for path, leaf in _leaves(model).items():
        expected = P(*(dict(rules)[n] if n else None for n in leaf.names))
        # ... and those of params born under the mesh follow the rules.
        assert leaf.value.sharding.spec == expected and shardings[path].spec == expected, path
        if path in EXPECTED[preset]:
          assert expected == EXPECTED[preset][path], path
          seen.add(path)
  assert seen == set(EXPECTED[preset])


@pytest.mark.parametrize('variant', SHARDED_VARIANTS, ids=lambda v: v['learngene'])
def test_lm_genes_are_born_sharded_and_forward_matches(variant, devices):
  """Real eager-sharded construction, then the sharded forward equals the unsharded one."""
  rules = im.logical_axis_rules('tensor_parallel')
  c = config('transformer_lm', **variant)
  with jax.set_mesh(_mesh(devices)), nnx.logical_axis_rules(rules), nnx.use_eager_sharding(True):
    model = im.build(c, rngs=nnx.Rngs(0))
  for path, leaf in _leaves(model).items():
    assert len(leaf.value.sharding.device_set) == 8, path
    if path in EXPECTED['tensor_parallel']:
      assert leaf.value.sharding.spec == EXPECTED['tensor_parallel'][path], path
  plain = materialize(abstract(c), seed=9)
  x = _input('transformer_lm', seed=8, batch=4)
  mesh = _mesh(devices, auto=True)
  graphdef, state = nnx.split(plain)
  with nnx.logical_axis_rules(rules):
    specs = nnx.get_partition_spec(state)
  shardings = jax.tree.map(
    lambda p: NamedSharding(mesh, p), specs, is_leaf=lambda v: isinstance(v, P)
  )
  sharded = nnx.merge(graphdef, jax.device_put(state, shardings))
  with jax.set_mesh(mesh):
    y = forward(sharded, jax.device_put(x, NamedSharding(mesh, P('data'))))
  assert len(y.sharding.device_set) == 8
  np.testing.assert_allclose(y, forward(plain, x), rtol=1e-5, atol=1e-5)
