"""LoRA adapters through the loop (issue [lora]): attached by `config.lora`, base frozen and
bit-identical, initialized by the LoRA-init schemes, output-preserving at step 0 on the
scanned LM (stacked kernels) and the ViT on the 8-device mesh, merged back to a plain model."""

import jax

import numpy as np
import pytest

from initlab import config as config_lib
from initlab import data as data_lib
from initlab import train
import initlab.init as ii

from train_testlib import REPO  # pylint: disable=g-bad-import-order
import finetune_testlib as lib  # pylint: disable=g-bad-import-order

pytestmark = pytest.mark.filterwarnings(
  'ignore:Exception ignored in. None:pytest.PytestUnraisableExceptionWarning'
)


@pytest.fixture(scope='module')
def text_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfds_text'))
  data_lib.prepare('tiny_shakespeare', path)
  return path


def _lm(text_dir, scheme='lora_default', **lora):
  """The smoke LM with 2 stacked blocks, adapters on its attention and MLP kernels."""
  c = config_lib.load(REPO / 'configs' / 'lm_shakespeare.py', 'smoke')
  c.model.depth = 2
  c.data.data_dir = text_dir
  c.train.update(steps=4, eval_every=0, checkpoint_every=4, batch_size=8)
  c.init.name = scheme
  c.lora.update(targets=r'blocks/(attn/(query|value)|mlp/fc1)/kernel', rank=4, alpha=8.0)
  c.lora.update(**lora)
  return c


def _logits(run, state, batch):
  x = batch['inputs'] if 'inputs' in batch else batch['image']
  return np.asarray(run.setup.model(state)(x, train=False), np.float32)


def _flat(tree):
  return {
    ii.tree.path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


@pytest.fixture(scope='module')
def lm_base(text_dir, tmp_path_factory):
  """(run, state at step 0, a batch) of the LM with PEFT's default adapters (B = 0: the base
  model's output), on 8 devices."""
  c = _lm(text_dir)
  run = train.Run(c, tmp_path_factory.mktemp('lm_default'))
  state = run.initial_state()[0]
  return run, state, next(iter(run.train_iterator()))


def test_adapters_are_a_frozen_side_tree_with_the_run_shardings(lm_base):
  run, state, _ = lm_base
  a = state.params['lora']['blocks']['attn']['query']['kernel']['lora_a']
  b = state.params['lora']['blocks']['attn']['query']['kernel']['lora_b']
  kernel = state.params['blocks']['attn']['query']['kernel']  # (layers, embed, heads, head_dim)
  assert a.shape == (2, 32, 4) and b.shape == (2, 4, kernel.shape[2] * kernel.shape[3])
  assert not np.any(np.asarray(b)) and 0 < np.abs(np.asarray(a)).max() <= 1 / np.sqrt(32)
  assert run.setup.trainable == frozenset(
    f'lora/blocks/{p}/kernel/lora_{x}'
    for p in ('attn/query', 'attn/value', 'mlp/fc1')
    for x in 'ab'
  )
  opt_leaves = {
    ii.tree.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
  }
  assert opt_leaves and all('lora' in p for p in opt_leaves if 'kernel' in p)
  assert a.sharding.spec[0] == kernel.sharding.spec[0]  # The layer axis, as the kernel's.


@pytest.mark.parametrize('scheme', ['pissa', 'olora', 'loldu', 'milora'])
def test_weight_schemes_preserve_the_lm_output_at_step_0(lm_base, text_dir, tmp_path, scheme):
  """The base model's logits (default adapters: B = 0) equal those of the residual kernels
  plus the scheme's adapters, on stacked kernels across 8 devices."""
  run0, state0, batch = lm_base
  run = train.Run(_lm(text_dir, scheme), tmp_path / scheme)
  state = run.initial_state()[0]
  want, got = _logits(run0, state0, batch), _logits(run, state, batch)
  np.testing.assert_allclose(got, want, atol=2e-4 * np.abs(want).max())
  kernel0 = np.asarray(state0.params['blocks']['attn']['query']['kernel'])
  kernel = np.asarray(state.params['blocks']['attn']['query']['kernel'])
  assert np.abs(kernel - kernel0).max() > 1e-3  # The residual replaced the base kernel.


def test_gradient_and_activation_schemes_preserve_the_output(lm_base, text_dir, tmp_path):
  run0, state0, batch = lm_base
  want = _logits(run0, state0, batch)
  for scheme in ('lora_ga', 'corda'):
    c = _lm(text_dir, scheme)
    c.init[scheme] = dict(num_batches=2)
    run = train.Run(c, tmp_path / scheme)
    state = run.initial_state()[0]
    np.testing.assert_allclose(_logits(run, state, batch), want, atol=2e-4 * np.abs(want).max())
    fc1 = lambda s: np.asarray(s.params['blocks']['mlp']['fc1']['kernel'])
    assert np.abs(fc1(state) - fc1(state0)).max() > 1e-4, scheme  # The residual was written,
    assert (
      np.abs(np.asarray(state.params['lora']['blocks']['mlp']['fc1']['kernel']['lora_b'])).max() > 0
    )


def test_training_moves_only_the_adapters_and_merge_gives_the_same_logits(text_dir, tmp_path):
  c = _lm(text_dir, 'pissa')
  c.train.steps = 6
  c.optimizer.weight_decay = 0.1  # Would move the frozen base if it saw it.
  result = train.run(c, tmp_path / 'run')
  run = result.run
  init = train.Run(c, tmp_path / 'init').initial_state()[0]
  base0, lora0 = ii.adapters.split(init.params)
  base1, lora1 = ii.adapters.split(result.state.params)
  for path, value in _flat(base0).items():
    np.testing.assert_array_equal(_flat(base1)[path], value, err_msg=path)
  assert any(np.abs(_flat(lora1)[p] - v).max() > 0 for p, v in _flat(lora0).items())
  merged = run.setup.adapters.fold(result.state.params)
  assert 'lora' not in merged
  batch = next(iter(run.train_iterator()))
  plain = ii.adapters.merge_module(run.setup.graphdef.graphdef, merged, result.state.model_state)
  np.testing.assert_allclose(
    np.asarray(plain(batch['inputs'], train=False)), _logits(run, result.state, batch), atol=1e-5
  )
  plain = _lm(text_dir, 'lecun_normal')  # The LoRA run's directory opens as the plain model.
  plain.lora.targets = ''
  plain.init_from = str(tmp_path / 'run')
  opened = train.Run(plain, tmp_path / 'plain')
  state = opened.initial_state()[0]
  assert 'lora' not in state.params
  np.testing.assert_allclose(
    _logits(opened, state, batch), _logits(run, result.state, batch), atol=1e-5
  )
  unmerged = run.setup.adapters.unfold(merged, lora1)
  np.testing.assert_allclose(
    _flat(unmerged)['blocks/mlp/fc1/kernel'], _flat(base1)['blocks/mlp/fc1/kernel'], atol=1e-6
  )


def test_bad_lora_config_is_one_line(data_dir, tmp_path):
  c = lib.mlp_config(data_dir)
  c.lora.targets = r'.*attention.*'
  with pytest.raises(config_lib.ConfigError, match=r"lora.targets: '\.\*attention\.\*' matches no"):
    train.Run(c, tmp_path / 'a')
  c.lora.targets, c.lora.rank = r'head/kernel', 64
  with pytest.raises(config_lib.ConfigError, match=r'lora.rank: 64 exceeds min\(in, out\) = 10'):
    train.Run(c, tmp_path / 'b')
  c.lora.targets, c.lora.rank = r'head/bias', 2
  with pytest.raises(config_lib.ConfigError, match=r"matches 'head/bias', which is not a kernel"):
    train.Run(c, tmp_path / 'c')
  c.lora.targets = ''
  c.init.name = 'pissa'
  with pytest.raises(
    config_lib.ConfigError, match=r'initializes low-rank adapters: set config.lora'
  ):
    train.Run(c, tmp_path / 'd')
  c.lora.targets, c.init.name = r'head/kernel', 'lora_ga'
  c.init.lora_ga = dict(num_batches=0)  # A data-dependent scheme given no data.
  with pytest.raises(config_lib.ConfigError, match=r'lora_ga.num_batches: expected an int >= 1'):
    train.Run(c, tmp_path / 'f')
  c.lora.targets, c.init.name = r'head/kernel', 'corda'
  c.init.corda = dict(mode='both')
  with pytest.raises(config_lib.ConfigError, match=r"corda.mode: 'both'; valid: 'ipm', 'kpm'"):
    train.Run(c, tmp_path / 'e')


def test_pretrained_of_another_architecture_is_named(data_dir, tmp_path):
  src = train.run(lib.mlp_config(data_dir, steps=2, checkpoint_every=2), tmp_path / 'src')
  del src
  c = lib.resnet_config(data_dir, steps=1)
  c.lora.update(targets=r'head/kernel', rank=2)
  c.init.name = 'pissa'
  c.init.pretrained = str(tmp_path / 'src')
  with pytest.raises(config_lib.ConfigError, match=r'init.pretrained'):
    train.Run(c, tmp_path / 'bad')


def test_pissa_from_a_pretrained_run_reproduces_it(data_dir, tmp_path):
  """`init.pretrained` is the base: step 0 of the LoRA run gives the pretrained run's logits."""
  src = train.run(lib.mlp_config(data_dir, steps=6, checkpoint_every=6), tmp_path / 'src')
  c = lib.mlp_config(data_dir, steps=1)
  c.seeds.init = 7  # The base must come from the source, not this seed.
  c.lora.update(targets=r'hidden/.*/kernel', rank=4, train_also=r'head/.*')
  c.init.name = 'pissa'
  c.init.pretrained = str(tmp_path / 'src')
  run = train.Run(c, tmp_path / 'lora')
  assert {'head/kernel', 'head/bias', 'lora/hidden/0/kernel/lora_a'} <= run.setup.trainable
  assert 'hidden/0/kernel' not in run.setup.trainable
  state = run.initial_state()[0]
  batch = next(iter(run.train_iterator()))
  np.testing.assert_allclose(
    _logits(run, state, batch), _logits(src.run, src.state, batch), atol=1e-5
  )


def test_eva_components_are_the_pca_of_the_target_inputs(lm_base, text_dir, tmp_path):
  """EVA's lora_a holds the top-r principal directions of the captured inputs of each target
  slice (exact float64 PCA of the same data-stage batch; over several batches the incremental
  PCA truncates to r after each, see tests/init/test_lora_math.py); B = 0, base unchanged."""
  from initlab.init.families import capture  # pylint: disable=g-import-not-at-top
  from initlab.train import pipeline  # pylint: disable=g-import-not-at-top

  run0, state0, _ = lm_base
  c = _lm(text_dir, 'eva')
  c.init.eva = dict(num_batches=1, rho=1.0)
  run = train.Run(c, tmp_path / 'eva')
  state = run.initial_state()[0]
  for path, value in _flat(ii.adapters.split(state0.params)[0]).items():
    np.testing.assert_array_equal(_flat(ii.adapters.split(state.params)[0])[path], value)
  rows = {0: [], 1: []}
  for batch in pipeline.draw_batches(run, 1):
    model = run0.setup.model(state0)
    _, record = capture.layer_outputs(model, batch['inputs'], what='input')
    for (p, i), x in record:
      if p == 'blocks/mlp/fc1/kernel':
        rows[i].append(np.asarray(x, np.float64).reshape(-1, x.shape[-1]))
  adapter = state.params['lora']['blocks']['mlp']['fc1']['kernel']
  assert not np.any(np.asarray(adapter['lora_b']))
  for i, xs in rows.items():
    x = np.concatenate(xs)
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    a = np.asarray(adapter['lora_a'][i], np.float64)  # (n, r), orthonormal columns
    cos = np.abs(np.sum(a * vt[:4].T, axis=0)) / np.linalg.norm(a, axis=0)
    assert cos.min() > 0.999, (i, cos)


def test_lora_sb_trains_only_r_and_keeps_the_base(lm_base, text_dir, tmp_path):
  run0, state0, _ = lm_base
  c = _lm(text_dir, 'lora_sb')
  c.init.lora_sb = dict(num_batches=2)
  run = train.Run(c, tmp_path / 'sb')
  assert run.setup.trainable == frozenset(
    f'lora/blocks/{p}/kernel/lora_r' for p in ('attn/query', 'attn/value', 'mlp/fc1')
  )
  state = run.initial_state()[0]
  for path, value in _flat(ii.adapters.split(state0.params)[0]).items():
    np.testing.assert_array_equal(_flat(ii.adapters.split(state.params)[0])[path], value)
  adapter = state.params['lora']['blocks']['mlp']['fc1']['kernel']
  r = np.asarray(adapter['lora_r'][0])
  assert np.allclose(r, np.diag(np.diag(r))) and np.all(np.diag(r) > 0)


def test_eva_redistributes_ranks_under_masks(text_dir, tmp_path):
  """rho = 2: adapters are 8 wide (r = 4), each layer keeps k_l columns (the global top R =
  4 x layers of the pooled explained-variance ratios), the rest stays exactly 0 in training;
  the scale is still alpha / 4."""
  c = _lm(text_dir, 'eva', targets=r'blocks/(attn/query|mlp/(fc1|fc2))/kernel')
  c.init.eva = dict(num_batches=1, rho=2.0)
  c.train.steps = 3
  result = train.run(c, tmp_path / 'eva')
  run, state = result.run, result.state
  t = run.setup.adapters.target('blocks/mlp/fc1/kernel')
  assert (t.rank, t.scale_rank, t.scale) == (8, 4, 2.0)
  kept = []
  for t in run.setup.adapters.targets:
    node = state.params['lora']
    mask = state.masks['lora']
    for k in t.path.split('/'):
      node, mask = node[k], mask[k]
    used = np.asarray(mask['lora_a'])[:, 0, :]  # (layers, 8): the kept columns
    assert np.all(np.asarray(node['lora_a'])[~np.asarray(mask['lora_a'])] == 0)
    assert np.all(np.asarray(node['lora_b'])[~np.asarray(mask['lora_b'])] == 0)
    for row in used:  # The kept columns come first.
      k = int(row.sum())
      assert row[:k].all() and not row[k:].any()
      kept.append(k)
  assert sum(kept) == 4 * len(kept) and len(set(kept)) > 1, kept
