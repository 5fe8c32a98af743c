"""Tests for initlab.train.checkpoint on the fake 8-device CPU platform."""

import logging
import os
import shutil
import socket
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from initlab.train import checkpoint as ckpt_lib

P = jax.sharding.PartitionSpec

# After a failed read, tensorstore may still call back into Orbax's closed
# asyncio loop; Python reports it as an unraisable "Event loop is closed".
pytestmark = pytest.mark.filterwarnings(
  'ignore:Exception ignored in. None:pytest.PytestUnraisableExceptionWarning'
)


def _abstract(tree, sharding_fn=lambda x: x.sharding):
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding_fn(x)), tree
  )


def _bits(x):
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  return np.asarray(x)


def _assert_bitwise_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(_bits(x), _bits(y))


@pytest.fixture(scope='module')
def state(devices):
  """Params sharded over ('data', 8), adam state after one step, two keys."""
  mesh = jax.make_mesh((8,), ('data',))
  shard = jax.sharding.NamedSharding(mesh, P('data'))
  repl = jax.sharding.NamedSharding(mesh, P())
  kernel = jax.random.normal(jax.random.key(0), (16, 4))
  bias = jnp.arange(4, dtype=jnp.bfloat16)
  params = {'dense': {'kernel': jax.device_put(kernel, shard), 'bias': jax.device_put(bias, repl)}}
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  return {
    'params': params,
    'opt_state': opt_state,
    'step': jnp.int32(1),
    'rng': jax.device_put(jax.random.key(7), repl),  # typed key
    'legacy_rng': jax.random.PRNGKey(3),
  }  # raw uint32 key


def _saved_run(path, state, steps=(1, 2), **kwargs):
  with ckpt_lib.Checkpointer(path, **kwargs) as ckpt:
    for s in steps:
      ckpt.save(
        s, jax.tree.map(lambda x: x, state), data_state={'next_index': s}, config={'step_seen': s}
      )
  return path


def test_roundtrip_bitwise_with_data_state_and_config(tmp_path, state):
  config = ml_collections.ConfigDict({'model': {'width': 4}, 'lr': 0.5})
  with ckpt_lib.Checkpointer(tmp_path) as ckpt:
    assert ckpt.restore(_abstract(state)) is None
    assert ckpt.save(5, state, data_state={'next_index': 12}, config=config)
    out = ckpt.restore(_abstract(state))  # waits for the async save
  assert out.step == 5
  _assert_bitwise_equal(out.state, state)
  assert out.state['rng'].dtype == state['rng'].dtype  # typed key restored
  assert out.state['params']['dense']['kernel'].sharding == (
    state['params']['dense']['kernel'].sharding
  )
  assert out.data_state == {'next_index': 12}
  assert out.config == config.to_dict()


def test_chained_optimizer_state_with_empty_states(tmp_path, state):
  """optax.chain(clip, adam) holds EmptyState tuples (the LM config's optimizer)."""
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2, weight_decay=0.1))
  full = dict(state, opt_state=tx.init(state['params']))
  with ckpt_lib.Checkpointer(tmp_path / 'ckpt', async_save=False) as ckpt:
    ckpt.save(1, full)
    restored = ckpt.restore(_abstract(full))
  assert restored.step == 1
  _assert_bitwise_equal(restored.state, full)


def test_bytes_data_state_and_nnx_state(tmp_path, devices):
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  state = nnx.state(model)
  blob = b'{"last_seen_indices": {"0": 4}}\x00\xff'
  ckpt = ckpt_lib.Checkpointer(tmp_path, async_save=False)
  ckpt.save(3, state, data_state=blob)
  out = ckpt.restore(state)  # concrete arrays work as the abstract state
  ckpt.close()
  assert out.data_state == blob and out.config is None
  assert isinstance(out.state, nnx.State)
  _assert_bitwise_equal(out.state, state)


def test_keep_n_and_save_every(tmp_path, state):
  with ckpt_lib.Checkpointer(tmp_path, keep=2, save_every=2) as ckpt:
    saved = [ckpt.save(s, state) for s in range(7)]
    assert saved == [True, False, True, False, True, False, True]
    assert ckpt.save(7, state, force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [6, 7] and ckpt.latest_step() == 7


def _data_files(step_dir):
  return [p for p in step_dir.glob('state/**/d/*') if p.is_file()]


_CORRUPTIONS = {
  'deleted_arrays': lambda d: [p.unlink() for p in _data_files(d)],
  'garbled_arrays': lambda d: [p.write_bytes(b'x') for p in _data_files(d)],
  'deleted_metadata': lambda d: (d / 'state' / '_METADATA').unlink(),
  'garbled_metadata': lambda d: (d / 'state' / '_METADATA').write_text('{'),
  'garbled_config': lambda d: (d / 'config' / 'metadata').write_text('{x'),
  'empty_step_dir': lambda d: [shutil.rmtree(d), d.mkdir()],
}


@pytest.mark.parametrize('corruption', sorted(_CORRUPTIONS))
def test_corrupt_latest_falls_back_with_warning(tmp_path, state, caplog, corruption):
  _saved_run(tmp_path, state)
  _CORRUPTIONS[corruption](tmp_path / '2')
  ckpt = ckpt_lib.Checkpointer(tmp_path)
  assert ckpt.latest_step() == 2
  with caplog.at_level(logging.WARNING):
    out = ckpt.restore(_abstract(state))
  assert out.step == 1 and out.data_state == {'next_index': 1}
  _assert_bitwise_equal(out.state, state)
  assert any('step 2' in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records), (
    caplog.text
  )
  assert (tmp_path / '2').exists()  # the user's files stay
  # Resuming saves step 2 again; the bad one is renamed, never deleted.
  assert ckpt.save(2, state, data_state={'next_index': 22})
  assert ckpt.restore(_abstract(state)).data_state == {'next_index': 22}
  assert len(list(tmp_path.glob('2.unrestorable-*'))) == 1
  ckpt.close()


def test_unfinished_tmp_dir_is_ignored_with_warning(tmp_path, state, caplog):
  _saved_run(tmp_path, state)
  shutil.copytree(tmp_path / '2', tmp_path / '3.orbax-checkpoint-tmp-1234')
  with caplog.at_level(logging.WARNING):
    out = ckpt_lib.Checkpointer(tmp_path).restore(_abstract(state))
  assert out.step == 2
  assert 'unfinished checkpoint step 3' in caplog.text


def test_nothing_restorable_returns_none(tmp_path, state, caplog):
  _saved_run(tmp_path, state)
  for s in (1, 2):
    _CORRUPTIONS['deleted_arrays'](tmp_path / str(s))
  with caplog.at_level(logging.WARNING):
    assert ckpt_lib.Checkpointer(tmp_path).restore(_abstract(state)) is None
  assert 'no restorable checkpoint' in caplog.text
  assert ckpt_lib.Checkpointer(tmp_path / 'missing').restore(state) is None


def test_mismatched_state_tree_raises_instead_of_falling_back(tmp_path, state):
  _saved_run(tmp_path, state, steps=(1,))
  wrong = dict(state, extra=jnp.zeros(2))
  with pytest.raises(ValueError, match='not match.*missing extra'):
    ckpt_lib.Checkpointer(tmp_path).restore(_abstract(wrong))
  with pytest.raises(FileNotFoundError, match='no checkpoint step 9'):
    ckpt_lib.Checkpointer(tmp_path).restore(_abstract(state), step=9)


def test_restore_onto_other_mesh_and_single_device(tmp_path, state):
  _saved_run(tmp_path, state, steps=(4,))
  mesh = jax.make_mesh((2, 4), ('data', 'model'))

  def two_d(x):
    spec = P('data', 'model') if x.ndim == 2 else P()
    return jax.sharding.NamedSharding(mesh, spec)

  one = jax.sharding.SingleDeviceSharding(jax.devices()[3])
  for fn in (two_d, lambda x: one):
    out = ckpt_lib.Checkpointer(tmp_path).restore(_abstract(state, fn))
    _assert_bitwise_equal(out.state, state)
    for x, a in zip(jax.tree.leaves(out.state), jax.tree.leaves(_abstract(state, fn))):
      assert x.sharding == a.sharding


def test_restore_params_subtree(tmp_path, state, caplog):
  _saved_run(tmp_path, state, steps=(1, 2))
  mesh = jax.make_mesh((2, 4), ('data', 'model'))
  abstract = _abstract(
    state['params'],
    lambda x: jax.sharding.NamedSharding(mesh, P(None, 'model') if x.ndim == 2 else P()),
  )
  for path in (tmp_path, tmp_path / '1'):
    params = ckpt_lib.restore_params(path, abstract)
    _assert_bitwise_equal(params, state['params'])
    assert params['dense']['kernel'].sharding == (abstract['dense']['kernel'].sharding)
  _CORRUPTIONS['deleted_metadata'](tmp_path / '2')
  with pytest.raises(FileNotFoundError, match=str(tmp_path / '2')):
    ckpt_lib.restore_params(tmp_path / '2', abstract)
  dense = ckpt_lib.restore_params(tmp_path, abstract['dense'], subtree=('params', 'dense'))
  _assert_bitwise_equal(dense, state['params']['dense'])
  assert 'skipped unrestorable checkpoint ' + str(tmp_path / '2') in caplog.text
  before = sorted(tmp_path.rglob('*'))
  ckpt_lib.restore_params(tmp_path, abstract)
  assert sorted(tmp_path.rglob('*')) == before  # reading writes nothing


def test_restore_params_errors_name_the_path(tmp_path, state):
  missing = tmp_path / 'no_such_run'
  with pytest.raises(FileNotFoundError, match=str(missing)):
    ckpt_lib.restore_params(missing, _abstract(state['params']))
  _saved_run(tmp_path / 'run', state, steps=(1,))
  with pytest.raises(ValueError, match=r'run/1 \(subtree model\).*missing'):
    ckpt_lib.restore_params(tmp_path / 'run', _abstract(state['params']), subtree='model')


def _multihost_worker(process_id, port, directory):
  """One of two processes with 4 CPU devices each (run as a script)."""
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
    coordinator_address=f'127.0.0.1:{port}', num_processes=2, process_id=process_id
  )
  mesh = jax.make_mesh((8,), ('data',))
  rows = np.arange(16, dtype=np.float32).reshape(8, 2)
  w = jax.make_array_from_process_local_data(
    jax.sharding.NamedSharding(mesh, P('data')), rows[4 * process_id : 4 * process_id + 4]
  )
  key = jax.jit(lambda: jax.random.key(0), out_shardings=jax.sharding.NamedSharding(mesh, P()))()
  state = {'params': {'w': w}, 'rng': key}
  mine = {'shard': process_id} if process_id == 0 else b'\x01bytes'
  with ckpt_lib.Checkpointer(directory) as ckpt:
    ckpt.save(1, state, data_state=mine)
    out = ckpt.restore(_abstract(state))
  assert out.data_state == mine, out.data_state
  gather = jax.experimental.multihost_utils.process_allgather
  np.testing.assert_array_equal(gather(out.state['params']['w'], tiled=True), rows)
  other = jax.make_mesh((2, 4), ('data', 'model'))
  params = ckpt_lib.restore_params(
    directory,
    {
      'w': jax.ShapeDtypeStruct(
        (8, 2), jnp.float32, sharding=jax.sharding.NamedSharding(other, P('model'))
      )
    },
  )
  np.testing.assert_array_equal(gather(params['w'], tiled=True), rows)
  print('worker ok', process_id)


@pytest.mark.slow
def test_two_processes_keep_their_own_data_state(tmp_path):
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=4')
  procs = [
    subprocess.Popen(
      [sys.executable, __file__, str(i), str(port), str(tmp_path / 'run')],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  try:
    for i, proc in enumerate(procs):
      out, _ = proc.communicate(timeout=120)
      assert proc.returncode == 0 and f'worker ok {i}' in out, out[-3000:]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()


if __name__ == '__main__':
  _multihost_worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
