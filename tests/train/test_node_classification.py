"""Full-batch node classification as a task of `train` (initlab.train.node_task)."""

import json

import jax
import numpy as np
import pytest

from initlab import config as config_lib
from initlab import data
from initlab import train

import train_testlib  # noqa: F401  (puts configs/ on sys.path)
import gcn_cora  # pylint: disable=g-bad-import-order

CSBM = dict(
  num_nodes=120,
  num_classes=3,
  num_features=16,
  p_in=0.08,
  p_out=0.01,
  signal=2.0,
  train_per_class=10,
  num_val=30,
  num_test=50,
)


def _csbm_config(steps=6, **train_opts):
  """A 2-layer GCN with dropout on a small contextual SBM; logs every step, evaluates every 2."""
  config = gcn_cora.get_config('scheme=glorot_normal')
  config.data.name = 'csbm'
  config.data.graph = CSBM
  config.model.update(num_features=16, num_classes=3, width=8)
  config.diagnostics_at_init = False
  config.train.update(
    dict(
      steps=steps,
      log_every=1,
      eval_every=2,
      checkpoint_every=3,
      keep_checkpoints=5,
      progress_bar=False,
      **train_opts,
    )
  )
  return config


def _records(workdir):
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  return [json.loads(l) for l in lines]


def test_loss_is_the_masked_mean_and_eval_reports_val_and_test(tmp_path, devices):
  """Step 1's loss is the mean cross-entropy over the train nodes of the initial model's
  logits (numpy; dropout off), and every evaluation reports val and test metrics."""
  config = _csbm_config(steps=2)
  config.model.dropout = 0.0
  config.optimizer.weight_decay = 0.0
  run = train.Run(config, tmp_path, devices=devices[:1])
  with jax.set_mesh(run.mesh):
    state, _, _ = run.initial_state()
    logits = np.asarray(run.setup.model(state)(data.graph(config.data)), np.float64)
  graph = data.graph(config.data)
  result = train.run(config, tmp_path, devices=devices[:1])
  m = graph['train_mask']
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  want = -logp[m, graph['labels'][m]].mean()
  first = [r for r in _records(tmp_path) if r['split'] == 'train' and r['step'] == 1][0]
  np.testing.assert_allclose(first['loss'], want, rtol=1e-5)
  assert first['accuracy'] == pytest.approx((logits[m].argmax(1) == graph['labels'][m]).mean())
  final = result.summary['final']
  assert {'eval/val_accuracy', 'eval/test_accuracy', 'eval/val_loss', 'eval/test_loss'} <= set(
    final
  )
  assert final['eval/accuracy'] == final['eval/test_accuracy']  # eval_split = 'test'
  assert result.summary['eval_examples'] == graph['test_mask'].sum() == 50
  # Evaluating on another split: the primary metrics follow config.data.eval_split.
  with jax.set_mesh(result.run.mesh):
    result.run.config.data.eval_split = 'val'
    metrics = result.run.evaluate(result.state)
  assert metrics['accuracy'] == metrics['val_accuracy'] and result.run.eval_examples == 30


def test_gcn_reaches_75_percent_on_cora(tmp_path, devices):
  """Kipf & Welling's 2-layer GCN (hidden 16) on Cora's public split: >= 75% test accuracy
  in 100 full-batch Adam steps (they report 81.5% after 200)."""
  config = gcn_cora.get_config('scheme=glorot_normal')
  config.model.width = 16
  config.diagnostics_at_init = False
  config.train.update(
    dict(steps=100, eval_every=0, log_every=50, checkpoint_every=0, progress_bar=False)
  )
  summary = train.run(config, tmp_path, devices=devices[:1]).summary
  assert summary['final']['eval/test_accuracy'] >= 0.75, summary['final']


def test_eight_devices_match_one(tmp_path, devices):
  """The graph is replicated: 8 devices (params FSDP-sharded) give 1 device's losses."""
  config = _csbm_config(steps=4)
  one = train.run(config, tmp_path / 'one', devices=devices[:1])
  config.sharding = 'fsdp'
  eight = train.run(config, tmp_path / 'eight', devices=devices)
  assert len(eight.run.mesh.devices.flat) == 8
  a = [r['loss'] for r in _records(tmp_path / 'one') if r['split'] == 'train']
  b = [r['loss'] for r in _records(tmp_path / 'eight') if r['split'] == 'train']
  np.testing.assert_allclose(b, a, rtol=1e-5)
  for x, y in zip(
    jax.tree.leaves(jax.device_get(one.state.params)),
    jax.tree.leaves(jax.device_get(eight.state.params)),
    strict=True,
  ):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


class _Stop(Exception):
  pass


def test_interrupted_run_resumes_exactly(tmp_path, devices):
  """Stopped after the step-3 checkpoint (dropout on), the rerun resumes there and ends with
  the uninterrupted run's per-step losses and params."""
  config = _csbm_config(steps=6)

  def stop(step, state, metrics):
    if step == 3:
      raise _Stop

  with pytest.raises(_Stop):
    train.run(config, tmp_path / 'cut', devices=devices[:1], callbacks=[stop])
  resumed = train.run(config, tmp_path / 'cut', devices=devices[:1])
  whole = train.run(config, tmp_path / 'whole', devices=devices[:1])
  assert resumed.summary['resumed_from'] == 3
  losses = lambda w: {r['step']: r['loss'] for r in _records(w) if r['split'] == 'train'}
  assert losses(tmp_path / 'cut') == losses(tmp_path / 'whole')
  assert sorted(losses(tmp_path / 'whole')) == list(range(1, 7))
  for x, y in zip(
    jax.tree.leaves(jax.device_get(resumed.state.params)),
    jax.tree.leaves(jax.device_get(whole.state.params)),
    strict=True,
  ):
    np.testing.assert_array_equal(x, y)


def test_bad_split_is_a_config_error(tmp_path, devices):
  config = _csbm_config()
  config.data.eval_split = 'test[:50%]'
  with pytest.raises(
    config_lib.ConfigError,
    match=r"config.data.eval_split: 'test\[:50%\]'.*"
    r"valid: \['test', 'train', 'val', 'validation'\]",
  ):
    train.Run(config, tmp_path, devices=devices[:1])
  assert not list(tmp_path.iterdir())


def test_init_diagnostics_are_the_gnn_layer_variances(tmp_path, devices):
  """init_diagnostics.json holds the GNN per-layer moments (initlab.diagnostics.gnn) of the
  initial params, the loss over the train nodes."""
  from initlab.diagnostics import gnn  # pylint: disable=g-import-not-at-top

  config = _csbm_config(steps=1)
  config.diagnostics_at_init = True
  train.run(config, tmp_path / 'run', devices=devices[:1])
  saved = json.loads((tmp_path / 'run' / 'init_diagnostics.json').read_text())
  assert saved['names'] == ['layers/0', 'layers/1']
  graph = data.graph(config.data)
  fresh = train.Run(config, tmp_path / 'fresh', devices=devices[:1])  # Same seeds, same init.
  with jax.set_mesh(fresh.mesh):
    state, _, _ = fresh.initial_state()
    m = gnn.layer_moments(fresh.setup.model(state), graph, mask=graph['train_mask'])
  np.testing.assert_allclose(saved['var'], m['var'][1:], rtol=1e-5)
  np.testing.assert_allclose(saved['grad_var'], m['grad_var'][1:], rtol=1e-5)
  np.testing.assert_allclose(
    saved['gnn_ratios']['forward'], m['var'][1:] / m['var'][:-1], rtol=1e-5
  )
  np.testing.assert_allclose(
    saved['gnn_ratios']['backward'], m['grad_var'][:-1] / m['grad_var'][1:], rtol=1e-5
  )
  assert saved['input_q'] == pytest.approx(np.mean(graph['features'].astype(np.float64) ** 2))


def test_study_report_lists_gnn_variance_ratios(tmp_path, devices):
  """A graph study's report.md has the per-layer forward/backward variance ratios at init,
  the seed means of the runs' init_diagnostics.json 'gnn_ratios' (also in results.json)."""
  config = _csbm_config(steps=1)
  config.diagnostics_at_init = True
  config.init.compare = ('glorot_normal', 'he_normal')
  config.seeds.num = 2
  results = train.run_study(config, tmp_path, devices=devices[:1])
  report = (tmp_path / 'report.md').read_text()
  assert 'Per-layer variance ratios at init' in report
  table = report.split('Per-layer variance ratios at init')[1]
  rows = [l for l in table.splitlines() if l.startswith('| 1 | layers/0 |')]
  assert len(rows) == 1 and rows[0].count('|') == 7, rows  # l, stage, 2 fwd, 2 bwd
  for i, scheme in enumerate(config.init.compare):
    saved = [
      json.loads((tmp_path / 'runs' / scheme / f'seed_{k}' / 'init_diagnostics.json').read_text())
      for k in range(2)
    ]
    for kind in ('forward', 'backward'):
      want = np.mean([s['gnn_ratios'][kind] for s in saved], axis=0)
      got = results['schemes'][scheme]['init_diagnostics']['gnn_ratios'][kind]
      np.testing.assert_allclose(got, want, rtol=1e-12)
    cells = rows[0].strip('|').split('|')  # l, stage, fwd per scheme, bwd per scheme
    for j, kind in ((2, 'forward'), (4, 'backward')):  # layer 1, printed to 4 digits
      want = np.mean([s['gnn_ratios'][kind][0] for s in saved])
      assert float(cells[j + i]) == pytest.approx(want, rel=1e-3), (kind, cells, want)


def test_gcn_cora_config_compares_xavier_kaiming_virgo():
  for arg in (None, 'smoke', 'depth=4', 'scheme=virgo'):
    config = gcn_cora.get_config(arg)
    config_lib.validate(config, num_devices=8, process_count=1)
  config = gcn_cora.get_config()
  assert config.init.compare == ('glorot_normal', 'he_normal', 'virgo')
  assert config.seeds.num >= 3 and config.model.name == 'gcn' and config.data.name == 'cora'
  assert gcn_cora.get_config('smoke').train.steps <= 10


def test_data_stage_schemes_see_the_graph(tmp_path, devices):
  """The data stage gets the graph as its batch: after LSUV every GCN layer's output Z_l has
  variance 1 (within LSUV's tol 0.1) on the graph; MetaInit's synthetic batches keep the
  graph's edges and draw features and labels."""
  from initlab.diagnostics import gnn  # pylint: disable=g-import-not-at-top

  graph = data.graph(_csbm_config().data)
  for name, options in (('lsuv', {}), ('metainit', dict(steps=3))):
    config = _csbm_config()
    config.init.name = name
    config.init[name] = options
    run = train.Run(config, tmp_path / name, devices=devices[:1])
    with jax.set_mesh(run.mesh):
      state, _, _ = run.initial_state()
      var = gnn.layer_moments(run.setup.model(state), graph)['var'][1:]
    assert np.all(np.isfinite(var)), (name, var)
    if name == 'lsuv':
      assert np.all(np.abs(var - 1) < 0.1), var
