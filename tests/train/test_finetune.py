"""The loop starting from trained models (issue [finetune]): trainable partitions, masks,
several pretrained sources, init_from through the pipeline, and one-line config errors.

Test schemes (finetune_testlib): test_half_masks (param-stage masks of every kernel),
test_average (uniform mean of {name: source}, model state included).
"""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from initlab import config as config_lib
from initlab import train
import initlab.init as ii
from initlab.train import loop
from initlab.train import sources as sources_lib

import finetune_testlib as lib  # pylint: disable=g-bad-import-order
from train_testlib import REPO  # pylint: disable=g-bad-import-order

pytestmark = pytest.mark.filterwarnings(
  'ignore:Exception ignored in. None:pytest.PytestUnraisableExceptionWarning'
)


@pytest.fixture(autouse=True, scope='module')
def _test_schemes():
  with lib.registered():
    yield


def _flat(tree):
  return {l.path: np.asarray(jax.device_get(l.value)) for l in ii.leaves(tree)}


def _initial(config, workdir, devices=None):
  run = train.Run(config, workdir, devices=devices)
  with jax.set_mesh(run.mesh):
    state, _, _ = run.initial_state()
  return run, state


def test_frozen_params_stay_bit_identical_and_have_no_optimizer_state(data_dir, tmp_path, devices):
  """Freeze everything but the head on the 8-device mesh for 20 steps."""
  config = lib.mlp_config(data_dir, steps=20, checkpoint_every=20)
  config.optimizer.trainable = r'head/.*'
  config.optimizer.weight_decay = 0.1  # Would move frozen kernels if it saw them.
  config.optimizer.grad_clip_norm = 1.0
  _, init = _initial(config, tmp_path / 'init')
  before = _flat(init.params)
  result = train.run(config, tmp_path / 'frozen', devices=devices)
  after = _flat(result.state.params)
  for path, value in before.items():
    if path.startswith('head/'):
      assert not np.array_equal(after[path], value), path
    else:
      np.testing.assert_array_equal(after[path], value, err_msg=path)
  full = lib.mlp_config(data_dir, steps=1)
  _, unfrozen = _initial(full, tmp_path / 'full')
  moments = lambda s: [x for x in jax.tree.leaves(s.opt_state) if x.ndim > 0]
  nbytes = lambda s: sum(x.nbytes for x in moments(s))
  head = sum(v.nbytes for p, v in before.items() if p.startswith('head/'))
  params = sum(v.nbytes for v in before.values())
  per_param = nbytes(unfrozen) / params  # Moments per param of this optimizer (>= 1).
  assert per_param >= 1 and per_param == int(per_param)
  assert nbytes(result.state) == per_param * head  # None for the frozen params.
  assert len(moments(result.state)) == per_param * 2  # head/kernel and head/bias only.


def test_trainable_regex_that_matches_nothing_is_one_line(data_dir, tmp_path):
  config = lib.mlp_config(data_dir)
  config.optimizer.trainable = r'encoder/.*'
  with pytest.raises(config_lib.ConfigError, match=r"optimizer.trainable: 'encoder/\.\*' matches"):
    train.run(config, tmp_path / 'run')
  assert not (tmp_path / 'run').exists() or not any((tmp_path / 'run').iterdir())


def _masked_entries(state):
  params, masks = _flat(state.params), _flat(state.masks)
  assert masks and set(masks) <= set(params)
  return {p: params[p][~m] for p, m in masks.items()}, masks


@pytest.mark.parametrize('model', ['mlp', 'resnet8'])
@pytest.mark.parametrize('num_devices', [1, 8])
def test_masked_entries_stay_exactly_zero(model, num_devices, data_dir, tmp_path, devices):
  make = lib.mlp_config if model == 'mlp' else lib.resnet_config
  config = make(data_dir, steps=100, checkpoint_every=50, log_every=50)
  config.init.name = 'test_half_masks'
  result = train.run(config, tmp_path / 'run', devices=devices[:num_devices])
  zeros, masks = _masked_entries(result.state)
  for path, values in zeros.items():
    assert values.size > 0 and np.all(values == 0), path
    kept = _flat(result.state.params)[path][masks[path]]
    assert np.count_nonzero(kept) > 0.9 * kept.size, path  # The rest trained.
  # The masks are checkpointed: a run restored from step 50 goes on with them.
  r = train.Run(config, tmp_path / 'run', devices=devices[:num_devices])
  restored = r.restore(50)
  for path, m in _flat(restored.masks).items():
    np.testing.assert_array_equal(m, masks[path])
  r.checkpointer.close()


def test_masks_survive_a_kill_and_resume_bit_identically(data_dir, tmp_path):
  """kill -9 mid-run (pipeline_testlib's child pattern), rerun, compare with one run."""
  workdir = tmp_path / 'killed'
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / 'tests' / 'train'), str(REPO)]))
  code = (
    'import sys, time, jax; import finetune_testlib as lib; from initlab import train\n'
    'c = lib.mlp_config(sys.argv[2], steps=100, checkpoint_every=10, log_every=10)\n'
    "c.init.name = 'test_half_masks'\n"
    'with lib.registered():\n'
    '  train.run(c, sys.argv[1], callbacks=[lambda *_: time.sleep(0.3)])\n'
  )
  proc = subprocess.Popen([sys.executable, '-c', code, str(workdir), data_dir], env=env)
  try:
    deadline = time.time() + 240
    while time.time() < deadline:
      steps = [p for p in (workdir / 'checkpoints').glob('[0-9]*') if p.name.isdigit()]
      if any(int(p.name) >= 30 for p in steps):
        break
      assert proc.poll() is None, 'the child ended before it could be killed'
      time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait()
  config = lib.mlp_config(data_dir, steps=100, checkpoint_every=10, log_every=10)
  config.init.name = 'test_half_masks'
  resumed = train.run(config, workdir)
  assert resumed.summary['resumed_from'] is not None and resumed.summary['resumed_from'] < 100
  reference = train.run(config, tmp_path / 'reference')
  got, want = _flat(resumed.state.params), _flat(reference.state.params)
  for path in want:
    np.testing.assert_array_equal(got[path], want[path], err_msg=path)
  zeros, _ = _masked_entries(resumed.state)
  assert all(np.all(v == 0) for v in zeros.values())


def test_several_pretrained_sources_reach_the_scheme_with_batch_statistics(data_dir, tmp_path):
  """Two ResNet-8 runs (other seeds), averaged by a scheme: params and BatchNorm statistics
  equal the numpy mean of the two checkpoints."""
  sources = {}
  for name, seed in (('a', 1), ('b', 2)):
    c = lib.resnet_config(data_dir, steps=4, checkpoint_every=4)
    c.seeds.init = c.seeds.data = seed
    sources[name] = train.run(c, tmp_path / name).state
  config = lib.resnet_config(data_dir, steps=1)
  config.init.name = 'test_average'
  config.init.pretrained = {'a': str(tmp_path / 'a'), 'b': str(tmp_path / 'b')}
  _, state = _initial(config, tmp_path / 'avg')
  for part in ('params', 'model_state'):
    a, b = _flat(getattr(sources['a'], part)), _flat(getattr(sources['b'], part))
    got = _flat(getattr(state, part))
    assert set(got) == set(a) and len(got) > 0
    for path in got:
      np.testing.assert_allclose(got[path], (a[path] + b[path]) / 2, rtol=1e-6, err_msg=path)
  # The same merge streamed in the data stage: one source at a time, none restored up front.
  config.init.name = 'test_stream_average'
  restore_all = sources_lib.Sources.restore
  sources_lib.Sources.restore = lambda self: pytest.fail('restored every source at once')
  try:
    _, streamed = _initial(config, tmp_path / 'streamed')
  finally:
    sources_lib.Sources.restore = restore_all
  for part in ('params', 'model_state'):
    want, got = _flat(getattr(state, part)), _flat(getattr(streamed, part))
    for path in want:
      np.testing.assert_allclose(got[path], want[path], rtol=1e-6, err_msg=path)
  config.init.name = 'test_average'
  mean_key = next(p for p in _flat(state.model_state) if p.endswith('mean'))
  assert np.abs(_flat(state.model_state)[mean_key]).max() > 0  # Not the fresh zeros.
  # A source with another shape is named.
  wide = lib.resnet_config(data_dir, steps=4, checkpoint_every=4)
  wide.model.width = 0.5
  train.run(wide, tmp_path / 'wide')
  config.init.pretrained = {'a': str(tmp_path / 'a'), 'wide': str(tmp_path / 'wide')}
  with pytest.raises(config_lib.ConfigError, match=r"init.pretrained\['wide'\]: its params differ"):
    train.Run(config, tmp_path / 'bad')


def test_init_from_runs_through_the_pipeline_and_keeps_batch_statistics(data_dir, tmp_path):
  """init_from = init.pretrained + a final from_pretrained copy: params and BatchNorm
  statistics equal the source's; with init.pretrained as well it is refused."""
  src = train.run(lib.resnet_config(data_dir, steps=4, checkpoint_every=4), tmp_path / 'src')
  config = lib.resnet_config(data_dir, steps=1)
  config.init.name = 'orthogonal'
  config.init_from = str(tmp_path / 'src')
  _, state = _initial(config, tmp_path / 'from')
  for part in ('params', 'model_state'):
    want, got = _flat(getattr(src.state, part)), _flat(getattr(state, part))
    for path in want:
      np.testing.assert_array_equal(got[path], want[path], err_msg=path)
  config.init.pretrained = str(tmp_path / 'src')
  with pytest.raises(config_lib.ConfigError, match='init_from.*init.pretrained are both set'):
    train.Run(config, tmp_path / 'both')


@pytest.mark.parametrize(
  'change,match',
  [
    (lambda c: c.optimizer.update(dict(trainable='(')), r'config.optimizer.trainable: not a'),
    (lambda c: c.train.update(dict(loss='kl')), r"config.train.loss: expected one of 'ce'"),
    (
      lambda c: c.train.update(dict(loss='distill')),
      r'config.train.distill.teacher: expected the run directory',
    ),
    (
      lambda c: (c.train.update(dict(loss='distill')), c.train.distill.update(dict(teacher='/no'))),
      r'config.train.distill.teacher: no run directory or checkpoint at /no',
    ),
    (
      lambda c: c.init.update(dict(pretrained={})),
      r'config.init.pretrained: expected a path, \{name: path\} of at least one source',
    ),
  ],
  ids=['trainable_regex', 'unknown_loss', 'no_teacher', 'missing_teacher', 'empty_pretrained'],
)
def test_bad_input_is_one_line_naming_the_key_and_writes_nothing(data_dir, tmp_path, change, match):
  config = lib.mlp_config(data_dir)
  change(config)
  with pytest.raises(config_lib.ConfigError, match=match) as e:
    loop.run(config, tmp_path / 'run')
  assert '\n' not in str(e.value)
  assert not (tmp_path / 'run').exists() or not any((tmp_path / 'run').iterdir())
