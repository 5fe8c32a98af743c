"""The staged init in `train` (issue 10.1): data stage, architecture stage, init.pretrained.

Test schemes (registered by pipeline_testlib): test_unit_logits (data stage), test_widen
(resize), test_deepen (SchemeResult), test_needs_graph (a dataset fact digits lacks).
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initlab import config as config_lib
from initlab import data as data_lib
from initlab import train
import initlab.init as ii
from initlab.train import metrics as metrics_lib

import pipeline_testlib as lib  # pylint: disable=g-bad-import-order
from train_testlib import REPO  # pylint: disable=g-bad-import-order

pytestmark = pytest.mark.filterwarnings(
  'ignore:Exception ignored in. None:pytest.PytestUnraisableExceptionWarning'
)


@pytest.fixture(autouse=True, scope='module')
def _test_schemes():
  with lib.registered():
    yield


def _losses(run_dir):
  records = metrics_lib.dedupe_steps(metrics_lib.read_jsonl(run_dir / 'metrics.jsonl'))
  return {r['step']: r['loss'] for r in records if r['split'] == 'train'}


def _initial(config, workdir, devices=None):
  run = train.Run(config, workdir, devices=devices)
  with jax.set_mesh(run.mesh):
    state, _, resumed = run.initial_state()
  assert not resumed
  return run, state


def _assert_trees_equal(a, b):
  a, b = jax.device_get((a, b))
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_data_stage_sees_its_own_batches_and_sets_unit_logit_variance(data_dir, tmp_path):
  """The data-stage scheme ran on the run's mesh: the logits on the 2 batches drawn with the
  data stage's seed (not training's) have std 1, and training's first batch is untouched."""
  config = lib.config(data_dir)
  run, state = _initial(config, tmp_path)
  it = data_lib.build(
    config.data, split='train', batch_size=16, seed=ii.stages.data_seed(config.seeds.data)
  )
  images = np.concatenate([next(it)['image'] for _ in range(2)])
  logits = run.setup.model(state)(jnp.asarray(images))
  np.testing.assert_allclose(float(jnp.std(logits)), 1.0, rtol=1e-4)
  # The plain he_normal init's logits are not at unit scale on these batches.
  config.init.name = 'he_normal'
  plain = _initial(config, tmp_path)[1]
  assert abs(float(jnp.std(run.setup.model(plain)(jnp.asarray(images)))) - 1) > 0.1
  # Training's data order does not depend on the data stage.
  first = next(iter(run.train_iterator()))['image']
  train_first = next(
    data_lib.build(config.data, split='train', batch_size=16, seed=config.seeds.data)
  )['image']
  np.testing.assert_array_equal(first, train_first)
  assert not np.array_equal(first, images[:16])


@pytest.mark.slow
def test_data_stage_run_resumes_after_kill_bit_identically(data_dir, tmp_path):
  steps, every = 16, 4
  workdir = tmp_path / 'killed'
  cmd = [sys.executable, 'pipeline_testlib.py', str(workdir), data_dir, str(steps), str(every)]
  proc = subprocess.Popen(
    cmd, cwd=REPO / 'tests' / 'train', stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
  )
  try:
    deadline = time.time() + 120
    while not (workdir / 'checkpoints' / str(every)).is_dir():
      assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
      assert time.time() < deadline, 'no checkpoint within 120 s'
      time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  killed_at = max(_losses(workdir))
  assert every <= killed_at < steps, killed_at

  config = lib.config(data_dir, steps=steps, checkpoint_every=every)
  summary = train.run(config, workdir).summary  # Resumes; no data stage.
  assert every <= summary['resumed_from'] <= killed_at
  train.run(config, tmp_path / 'reference')
  resumed, reference = _losses(workdir), _losses(tmp_path / 'reference')
  assert sorted(resumed) == list(range(1, steps + 1))
  assert resumed == reference
  _assert_trees_equal(
    train.Run(config, workdir).restore().params,
    train.Run(config, tmp_path / 'reference').restore().params,
  )


@pytest.mark.slow
def test_data_stage_one_and_eight_devices_give_the_same_loss_curve(data_dir, tmp_path, devices):
  config = lib.config(data_dir, steps=6, checkpoint_every=0, batch_size=32)
  train.run(config, tmp_path / 'one', devices=devices[:1])
  reference = _losses(tmp_path / 'one')
  config.sharding, config.mesh = 'fsdp', (('data', -1), ('model', 1))
  train.run(config, tmp_path / 'eight', devices=devices)
  losses = _losses(tmp_path / 'eight')
  assert losses.keys() == reference.keys() == set(range(1, 7))
  np.testing.assert_allclose(
    [losses[s] for s in sorted(losses)], [reference[s] for s in sorted(reference)], rtol=1e-5
  )


def test_resized_model_trains_records_its_config_and_restores(data_dir, tmp_path):
  config = lib.config(data_dir, scheme='test_widen', steps=4, checkpoint_every=2)
  result = train.run(config, tmp_path)
  assert np.isfinite(result.summary['final']['train/loss'])
  from initlab.report import build_report  # The entry point builds it after train.run.

  build_report(tmp_path)
  assert '"built_model": {' in (tmp_path / 'report.md').read_text()
  recorded = json.loads((tmp_path / 'config.json').read_text())
  assert recorded['model']['width'] == 32 and recorded['model']['depth'] == 2  # As asked.
  assert recorded['built_model']['width'] == 64 and recorded['built_model']['depth'] == 3
  params = jax.device_get(train.Run(config, tmp_path).restore().params)
  assert sorted(params['hidden']) == [0, 1, 2]
  assert params['hidden'][2]['kernel'].shape == (64, 64)
  _assert_trees_equal(params, result.state.params)
  assert train.run(config, tmp_path).summary['steps'] == 4  # Finished: kept.


def test_finished_study_run_is_recognized_despite_its_recorded_built_model(data_dir, tmp_path):
  """config.json holds 'built_model', derived from the config: a study's rerun still skips
  its finished runs (it once compared raw configs and retrained every run)."""
  from initlab.train import study  # pylint: disable=g-import-not-at-top

  config = lib.config(data_dir, scheme='he_normal', steps=2, checkpoint_every=2)
  study.run_study(config, tmp_path, report=False)
  run = study.run_dir(tmp_path, 'he_normal', 0)
  assert 'built_model' in json.loads((run / 'config.json').read_text())
  first = (run / 'summary.json').read_text()
  study.run_study(config, tmp_path, report=False)
  assert (run / 'summary.json').read_text() == first  # wall_s would differ on a rerun
  (entry,) = json.loads((tmp_path / 'sweep.json').read_text())['trials'].values()
  assert (entry['status'], entry['attempts'], entry['finished']) == ('done', 1, 1)


def test_scheme_result_builds_the_new_model_from_the_schemes_params(data_dir, tmp_path):
  """test_deepen appends an identity layer: the built model (depth 3) computes what the model
  the scheme read (he_normal's depth-2 MLP, same key) computes."""
  config = lib.config(data_dir, scheme='test_deepen', steps=2, checkpoint_every=2)
  run, state = _initial(config, tmp_path / 'deep')
  assert run.model_config.depth == 3 and sorted(state.params['hidden']) == [0, 1, 2]
  np.testing.assert_array_equal(state.params['hidden'][2]['kernel'], np.eye(32))
  config.init.name = 'test_widen'
  config.init.test_widen = dict(factor=1, extra_layers=0)  # Same model, params as built.
  base_run, base = _initial(config, tmp_path / 'base')
  x = jnp.asarray(np.random.default_rng(0).random((5, 8, 8, 1), np.float32))
  np.testing.assert_allclose(
    run.setup.model(state)(x), base_run.setup.model(base)(x), rtol=1e-6, atol=1e-6
  )
  config.init.name = 'test_deepen'
  del config.init['test_widen']
  train.run(config, tmp_path / 'deep')
  assert json.loads((tmp_path / 'deep' / 'config.json').read_text())['built_model']['depth'] == 3
  restored = train.Run(config, tmp_path / 'deep').restore().params
  assert restored['hidden'][2]['kernel'].shape == (32, 32)


@pytest.mark.slow
def test_pretrained_run_on_eight_devices_restores_on_one_and_four(data_dir, tmp_path, devices):
  source = lib.config(data_dir, scheme='he_normal', steps=3, checkpoint_every=3)
  source.sharding, source.mesh = 'tensor_parallel', (('data', 4), ('model', 2))
  train.run(source, tmp_path / 'source', devices=devices)
  want = train.Run(source, tmp_path / 'source', devices=devices).restore().params
  config = lib.config(data_dir, scheme='from_pretrained')
  for n, path in ((1, tmp_path / 'source'), (4, tmp_path / 'source' / 'checkpoints')):
    config.init.pretrained = str(path)
    config.sharding = 'fsdp'
    run, state = _initial(config, tmp_path / f'target{n}', devices[:n])
    assert run.mesh.size == n
    _assert_trees_equal(state.params, want)
    kernel = state.params['hidden'][0]['kernel']
    assert kernel.sharding == run.setup.shardings.params['hidden'][0]['kernel']


def test_from_pretrained_include_copies_only_matching_params(data_dir, tmp_path):
  source = lib.config(data_dir, scheme='he_normal', steps=2, checkpoint_every=2)
  train.run(source, tmp_path / 'source')
  want = jax.device_get(train.Run(source, tmp_path / 'source').restore().params)
  config = lib.config(data_dir, scheme='from_pretrained')
  config.init.pretrained = str(tmp_path / 'source')
  config.init.from_pretrained = dict(include='hidden/.*')
  config.seeds.init = 7
  _, state = _initial(config, tmp_path / 'target')
  got = jax.device_get(state.params)
  _assert_trees_equal(got['hidden'], want['hidden'])
  assert not np.array_equal(got['head']['kernel'], want['head']['kernel'])


def _assert_one_line_error_and_nothing_written(config, workdir, *needles):
  with pytest.raises(config_lib.ConfigError) as e:
    train.run(config, workdir)
  message = str(e.value)
  assert '\n' not in message, message
  for needle in needles:
    assert needle in message, (needle, message)
  assert not workdir.exists() or not any(workdir.iterdir()), list(workdir.iterdir())


def test_bad_inputs_are_one_line_errors_and_write_nothing(data_dir, tmp_path):
  config = lib.config(data_dir)
  config.init.test_unit_logits = dict(num_batchez=2)
  _assert_one_line_error_and_nothing_written(
    config, tmp_path / 'a', 'config.init.test_unit_logits', 'num_batchez'
  )
  config = lib.config(data_dir, scheme='test_needs_graph')
  _assert_one_line_error_and_nothing_written(
    config, tmp_path / 'b', 'test_needs_graph', "'degree_stats'"
  )
  config.init.test_needs_graph = dict(stage='data')  # Fails after the init, still nothing.
  _assert_one_line_error_and_nothing_written(
    config, tmp_path / 'b2', 'test_needs_graph', "'degree_stats'"
  )
  config = lib.config(data_dir, scheme='from_pretrained')
  _assert_one_line_error_and_nothing_written(
    config, tmp_path / 'c', 'from_pretrained', 'config.init.pretrained'
  )
  config.init.pretrained = str(tmp_path / 'missing')
  _assert_one_line_error_and_nothing_written(
    config, tmp_path / 'd', 'config.init.pretrained', 'missing'
  )


def test_pretrained_tree_mismatch_names_the_param(data_dir, tmp_path):
  source = lib.config(data_dir, scheme='he_normal', steps=2, checkpoint_every=2)
  train.run(source, tmp_path / 'source')
  config = lib.config(data_dir, scheme='from_pretrained')
  config.init.pretrained = str(tmp_path / 'source')
  config.model.width = 16
  _assert_one_line_error_and_nothing_written(
    config, tmp_path / 'wide', 'config.init.pretrained', "'head/kernel'", '(32, 10)', '(16, 10)'
  )
  # A bare Orbax checkpoint (no config) of another tree: the restore names the param.
  from initlab.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top

  with ckpt_lib.Checkpointer(tmp_path / 'bare', async_save=False) as ckpt:
    ckpt.save(1, {'params': {'head': {'kernel': jnp.ones((32, 10))}}})
  config.model.width = 32
  config.init.pretrained = str(tmp_path / 'bare')
  _assert_one_line_error_and_nothing_written(
    config, tmp_path / 'bare_target', 'config.init.pretrained', 'hidden/0/kernel'
  )
