"""initlab.init.learngene: TLEG (arXiv 2312.05614) and SWS (arXiv 2404.16897) expansion,
the layer map, the linearity measure and the schemes on hand-built learngene trees."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import initlab.init as ii
from initlab.errors import ConfigError
from initlab.init import learngene as lg
from initlab.init.families import learngene as lg_schemes

DIM, HEADS, HIDDEN, VOCAB, SEQ = 8, 2, 16, 11, 6


def _normal(key, shape, dtype=jnp.float32):
  return jax.random.normal(key, shape, dtype)


def _block(key, dim=DIM, hidden=HIDDEN, lead=(), vocab=None):
  """One transformer block's params (TransformerBlock's names), with leading axes `lead`."""
  del vocab  # Outside the blocks.
  hd = dim // HEADS
  shapes = {
    'attn': {
      **{p: {'kernel': (dim, HEADS, hd), 'bias': (HEADS, hd)} for p in ('query', 'key', 'value')},
      'out': {'kernel': (HEADS, hd, dim), 'bias': (dim,)},
    },
    'mlp': {'fc1': {'kernel': (dim, hidden), 'bias': (hidden,)}, 'fc2': {'kernel': (hidden, dim)}},
    'norm1': {'scale': (dim,), 'bias': (dim,)},
    'norm2': {'scale': (dim,), 'bias': (dim,)},
  }
  shapes['mlp']['fc2']['bias'] = (dim,)
  flat, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
  keys = jax.random.split(key, len(flat))
  return jax.tree.unflatten(treedef, [_normal(k, lead + s) for k, s in zip(keys, flat)])


def _outside(key, kind, dim=DIM, vocab=VOCAB, hidden=None):
  """The params outside the blocks: an LM's ('lm') or a ViT's ('vit')."""
  del hidden  # A block's width only.
  k = jax.random.split(key, 6)
  out = {
    'pos_embed': {'embedding': _normal(k[0], (SEQ, dim))},
    'final_norm': {'scale': _normal(k[1], (dim,)), 'bias': _normal(k[2], (dim,))},
    'head': {'kernel': _normal(k[3], (dim, vocab)), 'bias': _normal(k[4], (vocab,))},
  }
  if kind == 'lm':
    out['token_embed'] = {'embedding': _normal(k[5], (vocab, dim))}
  else:
    kp = jax.random.split(k[5], 3)
    out['patch_embed'] = {'kernel': _normal(kp[0], (2, 2, 3, dim)), 'bias': _normal(kp[1], (dim,))}
    out['cls_token'] = {'embedding': _normal(kp[2], (1, 1, dim))}
  return out


def _tleg_gene(seed=0, kind='lm', **kw):
  k = jax.random.split(jax.random.key(seed), 3)
  return {**_outside(k[0], kind, **kw), 'gene_a': _block(k[1], **kw), 'gene_b': _block(k[2], **kw)}


def _sws_gene(seed=0, kind='lm', num_stages=5, **kw):
  k = jax.random.split(jax.random.key(seed), 2)
  return {**_outside(k[0], kind, **kw), 'gene_stages': _block(k[1], lead=(num_stages,), **kw)}


def _lm(depth, seed=100, **kw):
  """A descendant LM: stacked blocks (depth, ...), plus a param no scheme touches."""
  k = jax.random.split(jax.random.key(seed), 3)
  return {
    **_outside(k[0], 'lm', **kw),
    'blocks': _block(k[1], lead=(depth,), **kw),
    'extra': {'w': _normal(k[2], (3,))},
  }


def _vit(depth, seed=200, **kw):
  """A descendant ViT: blocks/<i>/... one subtree per layer (integer keys)."""
  k = jax.random.split(jax.random.key(seed), depth + 1)
  return {
    **_outside(k[0], 'vit', **kw),
    'blocks': {i: _block(k[i + 1], **kw) for i in range(depth)},
  }


def _flat(tree):
  return {l.path: np.asarray(l.value) for l in ii.leaves(tree)}


def _ctx(gene):
  return ii.InitContext(pretrained=gene)


def _run(scheme, params, gene):
  return scheme(jax.random.key(0), params, _ctx(gene))


# ------------------------------------------------------------------------------------------
# Plain functions.


@pytest.mark.parametrize('depth', [1, 2, 3, 5, 12])
def test_tleg_coefficients_both_conventions(depth):
  code = lg.tleg_coefficients(depth)
  np.testing.assert_allclose(code, [l / depth for l in range(depth)], rtol=0, atol=1e-15)
  np.testing.assert_array_equal(lg.tleg_coefficients(depth, coeff='code'), code)
  end = lg.tleg_coefficients(depth, coeff='endpoint')
  want = [0.0] if depth == 1 else [l / (depth - 1) for l in range(depth)]
  np.testing.assert_allclose(end, want, rtol=0, atol=1e-15)
  assert code.shape == end.shape == (depth,)
  assert code[0] == end[0] == 0.0
  if depth > 1:
    assert end[-1] == 1.0 and code[-1] == (depth - 1) / depth


def test_tleg_coefficients_reject_bad_options():
  with pytest.raises(ValueError, match='coeff'):
    lg.tleg_coefficients(4, coeff='paper')
  with pytest.raises(ValueError, match='depth'):
    lg.tleg_coefficients(0)


@pytest.mark.parametrize('coeff', ['code', 'endpoint'])
def test_tleg_expand_layer_l_is_a_plus_c_l_b(coeff):
  a, b = _block(jax.random.key(1)), _block(jax.random.key(2))
  depth = 5
  out = lg.tleg_expand(a, b, depth, coeff=coeff)
  c = lg.tleg_coefficients(depth, coeff=coeff)
  fa, fb, fo = _flat(a), _flat(b), _flat(out)
  assert set(fo) == set(fa)
  for path, x in fo.items():
    assert x.shape == (depth,) + fa[path].shape and x.dtype == jnp.float32
    for l in range(depth):
      want = np.asarray(fa[path]) + np.float32(c[l]) * np.asarray(fb[path])
      np.testing.assert_array_equal(np.asarray(x[l]), want, err_msg=f'{path} layer {l}')
  jitted = jax.jit(lg.tleg_expand, static_argnums=2, static_argnames='coeff')(
    a, b, depth, coeff=coeff
  )
  for path, x in _flat(jitted).items():
    np.testing.assert_allclose(x, fo[path], rtol=1e-6, atol=1e-6)


def test_tleg_expand_keeps_dtype_and_endpoint_reaches_a_plus_b():
  a = {'w': jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3)}
  b = {'w': jnp.full((2, 3), 2, jnp.bfloat16)}
  out = lg.tleg_expand(a, b, 3, coeff='endpoint')['w']
  assert out.dtype == jnp.bfloat16 and out.shape == (3, 2, 3)
  np.testing.assert_array_equal(np.asarray(out[0], np.float32), np.asarray(a['w'], np.float32))
  np.testing.assert_array_equal(np.asarray(out[1] - a['w'], np.float32), np.ones((2, 3)))
  np.testing.assert_array_equal(np.asarray(out[2] - a['w'], np.float32), np.full((2, 3), 2.0))
  code = lg.tleg_expand(a, b, 4)['w']  # Last layer θ_A + 3/4 θ_B, not θ_A + θ_B.
  np.testing.assert_array_equal(np.asarray(code[3] - a['w'], np.float32), np.full((2, 3), 1.5))


def test_tleg_expand_mismatched_trees_name_the_path():
  a = {'x': {'w': jnp.zeros((2, 3))}, 'y': jnp.zeros(4)}
  with pytest.raises(ValueError, match="'y'"):
    lg.tleg_expand(a, {'x': {'w': jnp.zeros((2, 3))}}, 3)
  with pytest.raises(ValueError, match=r"'x/w'.*\(2, 3\).*\(3, 2\)"):
    lg.tleg_expand(a, {'x': {'w': jnp.zeros((3, 2))}, 'y': jnp.zeros(4)}, 3)


@pytest.mark.parametrize('depth', [5, 6, 8, 12, 13, 16, 17, 24, 40])
def test_sws_layer_map_sums_orders_and_covers_every_stage(depth):
  stages = (3, 3, 4, 3, 3)
  m = lg.sws_layer_map(depth, stages)
  assert len(m) == depth and isinstance(m, tuple)
  assert list(m) == sorted(m)
  counts = np.bincount(m, minlength=len(stages))
  assert len(counts) == len(stages) and counts.min() >= 1
  quotas = depth * np.array(stages) / sum(stages)  # Largest remainder: within 1 of the quota.
  assert np.all(np.abs(counts - quotas) < 1)


def test_sws_layer_map_proportional_and_largest_remainder_ties():
  assert lg.sws_layer_map(16) == (0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4)
  assert lg.sws_layer_map(32) == tuple(np.repeat(range(5), (6, 6, 8, 6, 6)))
  # 12 layers: quotas 2.25, 2.25, 3, 2.25, 2.25; one layer left, four tied remainders ->
  # the earliest stage.
  assert lg.sws_layer_map(12) == (0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4)
  # 14 layers: quotas 2.625 x4 and 3.5; three left go to the 0.625 remainders in order,
  # stage 2's 0.5 gets none.
  assert np.bincount(lg.sws_layer_map(14)).tolist() == [3, 3, 3, 3, 2]
  assert lg.sws_layer_map(8, (2, 2, 2, 2)) == (0, 0, 1, 1, 2, 2, 3, 3)
  assert lg.sws_layer_map(5) == (0, 1, 2, 3, 4)


def test_sws_layer_map_gives_a_starved_stage_a_layer_from_the_largest():
  # (1, 10, 1) at depth 4: quotas 1/3, 10/3, 1/3 -> floors (0, 3, 0), the last layer to the
  # earliest tied remainder -> (1, 3, 0); stage 2 takes one from stage 1 -> (1, 2, 1).
  assert lg.sws_layer_map(4, (1, 10, 1)) == (0, 1, 1, 2)
  assert lg.sws_layer_map(3, (1, 10, 1)) == (0, 1, 2)
  assert np.bincount(lg.sws_layer_map(5, (1, 1, 20))).tolist() == [1, 1, 3]


def test_sws_layer_map_rejects_fewer_layers_than_stages():
  with pytest.raises(ValueError, match=r'depth=4.*5 stages.*\(3, 3, 4, 3, 3\)'):
    lg.sws_layer_map(4)
  with pytest.raises(ValueError, match='stages'):
    lg.sws_layer_map(4, (2, 0, 2))


def test_sws_expand_gathers_stages():
  stage_params = _block(jax.random.key(3), lead=(3,))
  layer_map = (0, 2, 2, 1, 0)
  out = lg.sws_expand(stage_params, layer_map)
  fs = _flat(stage_params)
  for path, x in _flat(out).items():
    assert x.shape == (5,) + fs[path].shape[1:]
    for i, k in enumerate(layer_map):
      np.testing.assert_array_equal(x[i], fs[path][k])
  jitted = jax.jit(lg.sws_expand, static_argnums=1)(stage_params, layer_map)
  for path, x in _flat(jitted).items():
    np.testing.assert_array_equal(x, _flat(out)[path])
  with pytest.raises(ValueError, match='stage 3'):
    lg.sws_expand(stage_params, (0, 3))


def test_linearity_r2():
  k1, k2, k3 = jax.random.split(jax.random.key(4), 3)
  a, b = _normal(k1, (4, 5)), _normal(k2, (4, 5))
  linear = a[None] + jnp.arange(8.0)[:, None, None] * b[None]
  noise = _normal(k3, (12, 64))
  r2 = lg.linearity_r2({'lin': linear, 'noise': noise, 'const': jnp.ones((4, 3))})
  assert r2['lin'] == pytest.approx(1.0, abs=1e-6)
  assert r2['noise'] < 0.5
  assert r2['const'] == 1.0
  # Pooled over entries: x = l² (SS_res 4, SS_tot 49) and x = 2l (SS_res 0, SS_tot 20).
  l = np.arange(4.0)
  pooled = lg.linearity_r2({'q': jnp.stack([l**2, 2 * l], axis=1)})['q']
  assert pooled == pytest.approx(1 - 4 / 69, rel=1e-6)
  assert np.isnan(lg.linearity_r2({'short': jnp.ones((2, 3))})['short'])
  # TLEG's own expansion is exactly linear in depth.
  expanded = lg.tleg_expand(_block(k1), _block(k2), 6)
  assert all(v == pytest.approx(1.0, abs=1e-5) for v in lg.linearity_r2(expanded).values())


def test_stacked_blocks_reads_both_layouts_in_layer_order():
  stack = {'mlp': {'kernel': np.arange(24.0).reshape(12, 2)}, 'ln': {'scale': np.ones((12, 2))}}
  # Layers 0..11 as `blocks/<l>/...` subtrees, inserted out of order (10 sorts before 2).
  per_layer = {str(l): {'mlp': {'kernel': stack['mlp']['kernel'][l]}} for l in (10, 2, 0, 1)}
  out = lg.stacked_blocks({'blocks': per_layer, 'head': {'kernel': np.ones(3)}})
  np.testing.assert_array_equal(out['mlp/kernel'], stack['mlp']['kernel'][[0, 1, 2, 10]])
  assert set(lg.stacked_blocks({'blocks': stack, 'embed': np.ones(2)})) == {
    'mlp/kernel',
    'ln/scale',
  }
  with pytest.raises(ValueError, match='no blocks'):
    lg.stacked_blocks({'head': {'kernel': np.ones(3)}})


# ------------------------------------------------------------------------------------------
# Schemes.

COPIED = ('token_embed/embedding', 'pos_embed/embedding', 'final_norm/scale', 'final_norm/bias')
VIT_COPIED = (
  'patch_embed/kernel',
  'patch_embed/bias',
  'cls_token/embedding',
  'pos_embed/embedding',
)


def test_schemes_are_registered():
  assert 'tleg_expand' in ii.scheme_names() and 'sws_expand' in ii.scheme_names()
  assert 'TLEG' in ii.describe('tleg_expand') and 'SWS' in ii.describe('sws_expand')
  assert callable(ii.get_scheme('tleg_expand', coeff='endpoint'))
  assert callable(ii.get_scheme('sws_expand', stages=[2, 2, 2, 2]))
  with pytest.raises(ConfigError, match='coeff'):
    ii.get_scheme('tleg_expand', coeff='paper')
  with pytest.raises(ConfigError, match='stages'):
    ii.get_scheme('sws_expand', stages=(2, 0))


@pytest.mark.parametrize('copy_head', [False, True])
@pytest.mark.parametrize('coeff', ['code', 'endpoint'])
def test_tleg_scheme_on_a_stacked_lm(coeff, copy_head):
  gene, params = _tleg_gene(), _lm(7)
  out = _flat(_run(lg_schemes.tleg_expand_scheme(coeff=coeff, copy_head=copy_head), params, gene))
  want = _flat(lg.tleg_expand(gene['gene_a'], gene['gene_b'], 7, coeff=coeff))
  fg, fp = _flat(gene), _flat(params)
  assert set(out) == set(fp)
  for path, x in want.items():
    np.testing.assert_array_equal(out['blocks/' + path], x, err_msg=path)
  for path in COPIED:
    np.testing.assert_array_equal(out[path], fg[path])
  for path in ('head/kernel', 'head/bias'):
    np.testing.assert_array_equal(out[path], fg[path] if copy_head else fp[path])
  np.testing.assert_array_equal(out['extra/w'], fp['extra/w'])


def test_tleg_scheme_on_a_vit_with_per_layer_blocks():
  gene, params = _tleg_gene(kind='vit'), _vit(3)
  out = _flat(_run(ii.get_scheme('tleg_expand'), params, gene))
  want = _flat(lg.tleg_expand(gene['gene_a'], gene['gene_b'], 3))
  fg, fp = _flat(gene), _flat(params)
  assert set(out) == set(fp)
  for path, x in want.items():
    for i in range(3):
      np.testing.assert_array_equal(out[f'blocks/{i}/{path}'], x[i], err_msg=f'{i}/{path}')
  for path in VIT_COPIED + ('final_norm/scale',):
    np.testing.assert_array_equal(out[path], fg[path])
  np.testing.assert_array_equal(out['head/kernel'], fp['head/kernel'])


def test_sws_scheme_on_a_stacked_lm_and_a_vit():
  gene = _sws_gene()
  out = _flat(_run(lg_schemes.sws_expand_scheme(copy_head=True), _lm(12), gene))
  want = _flat(lg.sws_expand(gene['gene_stages'], lg.sws_layer_map(12)))
  for path, x in want.items():
    np.testing.assert_array_equal(out['blocks/' + path], x, err_msg=path)
  for path in COPIED + ('head/kernel',):
    np.testing.assert_array_equal(out[path], _flat(gene)[path])

  authors = (0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4)
  vit_gene, params = _sws_gene(kind='vit'), _vit(12)
  out = _flat(_run(lg_schemes.sws_expand_scheme(layer_map=authors), params, vit_gene))
  stages = _flat(vit_gene['gene_stages'])
  for path, x in stages.items():
    for i, k in enumerate(authors):
      np.testing.assert_array_equal(out[f'blocks/{i}/{path}'], x[k], err_msg=f'{i}/{path}')
  for path in VIT_COPIED:
    np.testing.assert_array_equal(out[path], _flat(vit_gene)[path])
  np.testing.assert_array_equal(out['head/bias'], _flat(params)['head/bias'])


def test_sws_scheme_checks_stages_and_depth():
  with pytest.raises(ConfigError, match=r'4 stages.*stages=\(3, 3, 4, 3, 3\)'):
    _run(lg_schemes.sws_expand_scheme(), _lm(8), _sws_gene(num_stages=4))
  out = _run(lg_schemes.sws_expand_scheme(stages=(2, 2, 2, 2)), _lm(8), _sws_gene(num_stages=4))
  gs = _flat(_sws_gene(num_stages=4)['gene_stages'])['mlp/fc1/kernel']
  np.testing.assert_array_equal(out['blocks']['mlp']['fc1']['kernel'], gs[np.repeat(range(4), 2)])
  with pytest.raises(ConfigError, match='depth 3'):
    _run(lg_schemes.sws_expand_scheme(), _lm(3), _sws_gene())
  with pytest.raises(ConfigError, match='layer_map'):
    _run(lg_schemes.sws_expand_scheme(layer_map=(0, 1, 2, 3, 4)), _lm(6), _sws_gene())
  with pytest.raises(ConfigError, match=r'layer_map.*needs 4'):
    _run(lg_schemes.sws_expand_scheme(layer_map=(0, 1, 2, 3)), _lm(4), _sws_gene())


@pytest.mark.parametrize('which', ['tleg', 'sws'])
def test_width_mismatch_names_the_param_and_both_shapes(which):
  scheme = lg_schemes.tleg_expand_scheme() if which == 'tleg' else lg_schemes.sws_expand_scheme()
  gene = _tleg_gene() if which == 'tleg' else _sws_gene()
  with pytest.raises(ConfigError, match=r"'blocks/mlp/fc1/bias'.*\(6, 24\).*\(6, 16\)"):
    _run(scheme, _lm(6, hidden=24), gene)
  with pytest.raises(ConfigError, match=r"'blocks/0/attn/.*\(2, 6\).*\(2, 4\)") as e:
    _run(scheme, _vit(5, dim=12), _tleg_gene(kind='vit') if which == 'tleg' else _sws_gene())
  assert '\n' not in str(e.value)
  wide = _lm(6)  # Another vocabulary: only token_embed (copied) differs.
  wide['token_embed']['embedding'] = jnp.zeros((VOCAB + 1, DIM))
  with pytest.raises(ConfigError, match=r"'token_embed/embedding'.*\(11, 8\).*\(12, 8\)"):
    _run(scheme, wide, gene)
  head = _lm(6, vocab=VOCAB + 2)  # Another head: fine unless it is copied.
  head['token_embed']['embedding'] = jnp.zeros((VOCAB, DIM))
  _run(scheme, head, gene)
  copy_head = (lg_schemes.tleg_expand_scheme if which == 'tleg' else lg_schemes.sws_expand_scheme)(
    copy_head=True
  )
  with pytest.raises(ConfigError, match=r"'head/bias'.*\(11,\).*\(13,\)"):
    _run(copy_head, head, gene)


def test_learngene_without_genes_or_pretrained_is_a_config_error():
  with pytest.raises(ConfigError, match=r'TLEG.*gene_a.*gene_stages'):
    _run(lg_schemes.tleg_expand_scheme(), _lm(4), _sws_gene())
  with pytest.raises(ConfigError, match=r'SWS.*gene_stages.*blocks'):
    _run(lg_schemes.sws_expand_scheme(), _lm(4), _lm(5))
  with pytest.raises(ConfigError, match='pretrained'):
    lg_schemes.tleg_expand_scheme()(jax.random.key(0), _lm(4), ii.InitContext())
  gene = _tleg_gene()
  del gene['gene_b']['mlp']['fc2']
  with pytest.raises(ConfigError, match='gene_a/mlp/fc2'):
    _run(lg_schemes.tleg_expand_scheme(), _lm(4), gene)
  extra = _lm(4)
  del extra['blocks']['norm2']  # The learngene's norm2 has nowhere to go.
  with pytest.raises(ConfigError, match='norm2'):
    _run(lg_schemes.tleg_expand_scheme(), extra, _tleg_gene())


@pytest.mark.parametrize('which', ['tleg', 'sws'])
@pytest.mark.parametrize('layout', ['lm', 'vit'])
def test_schemes_trace_under_jit_and_eval_shape(which, layout):
  scheme = lg_schemes.tleg_expand_scheme() if which == 'tleg' else lg_schemes.sws_expand_scheme()
  gene = (_tleg_gene if which == 'tleg' else _sws_gene)(kind=layout)
  params = (_lm if layout == 'lm' else _vit)(6)
  fn = lambda p, g: scheme(jax.random.key(0), p, _ctx(g))
  shapes = jax.eval_shape(fn, params, gene)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), shapes) == jax.tree.map(
    lambda x: (x.shape, x.dtype), params
  )
  jitted, eager = _flat(jax.jit(fn)(params, gene)), _flat(fn(params, gene))
  for path, x in eager.items():
    np.testing.assert_allclose(jitted[path], x, rtol=1e-6, atol=1e-6, err_msg=path)
  assert not np.array_equal(eager['pos_embed/embedding'], _flat(params)['pos_embed/embedding'])


def test_written_params_take_the_descendants_dtype():
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _lm(4))
  out = _run(lg_schemes.tleg_expand_scheme(), params, _tleg_gene())
  assert all(l.value.dtype == jnp.bfloat16 for l in ii.leaves(out))
  want = lg.tleg_expand(_tleg_gene()['gene_a'], _tleg_gene()['gene_b'], 4)
  np.testing.assert_array_equal(
    out['blocks']['attn']['out']['kernel'], want['attn']['out']['kernel'].astype(jnp.bfloat16)
  )
