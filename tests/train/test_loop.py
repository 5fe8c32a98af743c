"""train.run on tiny configs: outputs, 1 vs 8 devices, corrupt checkpoints, NaN, init_from."""

import json

import jax
import numpy as np
import pytest

from initlab import train
from initlab.train import checkpoint as ckpt_lib
from initlab.train import metrics as metrics_lib

# After a failed checkpoint read, tensorstore may call back into a closed asyncio loop.
pytestmark = pytest.mark.filterwarnings(
  'ignore:Exception ignored in. None:pytest.PytestUnraisableExceptionWarning'
)


def train_losses(run_dir):
  records = metrics_lib.dedupe_steps(metrics_lib.read_jsonl(run_dir / 'metrics.jsonl'))
  return {r['step']: r['loss'] for r in records if r['split'] == 'train'}


def params_of(config, run_dir, devices=None, step=None):
  state = train.Run(config, run_dir, devices=devices).restore(step)
  return jax.device_get(state.params)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_run_writes_metrics_checkpoints_summary(tiny_config, tmp_path):
  config = tiny_config(eval_every=6)
  summary = train.run(config, tmp_path).summary
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()) == [4, 8, 12]
  records = metrics_lib.read_jsonl(tmp_path / 'metrics.jsonl')
  train_records = [r for r in records if r['split'] == 'train']
  assert [r['step'] for r in train_records] == list(range(1, 13))
  for key in ('loss', 'accuracy', 'l2_params', 'l2_grads', 'l2_updates', 'learning_rate'):
    assert all(np.isfinite(r[key]) for r in train_records), key
  assert train_records[0]['l2_updates'] > 0 and train_records[0]['l2_grads'] > 0
  assert [r['step'] for r in records if r['split'] == 'eval'] == [6, 12]
  assert list((tmp_path / 'tb').glob('events*'))
  on_disk = json.loads((tmp_path / 'summary.json').read_text())
  assert on_disk['steps'] == 12 and on_disk['final']['eval/accuracy'] > 0.1
  assert summary['final']['eval/loss'] == on_disk['final']['eval/loss']
  assert json.loads((tmp_path / 'config.json').read_text())['train']['steps'] == 12


@pytest.mark.slow
def test_one_and_eight_devices_give_the_same_loss_curve(tiny_config, tmp_path, devices):
  config = tiny_config(steps=8, checkpoint_every=0, batch_size=32)
  config.model.width = 64
  reference = train_losses_of(config, tmp_path / 'one', devices[:1])
  cases = [
    ('data_parallel', (('data', -1), ('model', 1))),
    ('fsdp', (('data', -1), ('model', 1))),
    ('tensor_parallel', (('data', 4), ('model', 2))),
  ]
  for sharding, mesh in cases:
    config.sharding, config.mesh = sharding, mesh
    losses = train_losses_of(config, tmp_path / sharding, devices)
    assert losses.keys() == reference.keys()
    np.testing.assert_allclose(
      [losses[s] for s in sorted(losses)],
      [reference[s] for s in sorted(reference)],
      rtol=1e-5,
      err_msg=sharding,
    )


def train_losses_of(config, run_dir, devices):
  train.run(config, run_dir, devices=devices)
  return train_losses(run_dir)


def test_corrupt_latest_checkpoint_resumes_from_previous(tiny_config, tmp_path, caplog):
  config = tiny_config(steps=8)
  train.run(config, tmp_path / 'ref')
  run_dir = tmp_path / 'run'
  config.train.steps = 8
  train.run(config, run_dir)
  for f in (run_dir / 'checkpoints' / '8').glob('state/**/d/*'):
    f.write_bytes(b'x')
  summary = train.run(config, run_dir).summary  # Already at step 8, but step 8 is unreadable.
  assert summary['resumed_from'] == 4
  assert 'unrestorable' in caplog.text
  assert_trees_equal(params_of(config, run_dir), params_of(config, tmp_path / 'ref'))
  assert train_losses(run_dir) == train_losses(tmp_path / 'ref')


def test_nan_stops_with_step_and_keeps_last_good_checkpoint(tiny_config, tmp_path):
  # Warm-up from lr 0 to 1e30: step 1 changes nothing, step 2 makes the params ~1e29, so the
  # loss of step 3 (a lean step between log steps) is not finite; detected at step 4.
  config = tiny_config(steps=12, checkpoint_every=2, log_every=2)
  config.optimizer.update(dict(learning_rate=1e30, schedule='warmup_cosine', warmup_steps=2))
  with pytest.raises(
    train.NonFiniteError,
    match=r'NaN/Inf at step 3; the last good '
    r'checkpoint \(step 2\) in .* is kept',
  ) as info:
    train.run(config, tmp_path)
  assert (info.value.step, info.value.last_checkpoint) == (3, 2)
  ckpt = ckpt_lib.Checkpointer(tmp_path / 'checkpoints')
  assert ckpt.all_steps() == [2]
  ckpt.close()
  params = params_of(config, tmp_path)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
  assert not (tmp_path / 'summary.json').exists()
  logged = train_losses(tmp_path)
  assert np.isfinite(logged[2]) and not np.isfinite(logged[4])


def test_init_from_loads_params_only(tiny_config, tmp_path):
  source = tiny_config(steps=4)
  train.run(source, tmp_path / 'source')
  config = tiny_config(steps=4)
  config.init_from = str(tmp_path / 'source' / 'checkpoints')
  config.optimizer.name = 'adam'
  config.optimizer.kwargs = {}
  run = train.Run(config, tmp_path / 'target')
  with jax.set_mesh(run.mesh):
    state, data_state, resumed = run.initial_state()
  assert not resumed and data_state is None and int(state.step) == 0
  assert_trees_equal(jax.device_get(state.params), params_of(source, tmp_path / 'source'))
