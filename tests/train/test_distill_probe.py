"""Distillation in the loop and architectures chosen from data (issue [finetune]).

Test schemes (finetune_testlib): test_narrow (a probe that narrows each ResNet block's inner
width from gradient scores).
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from initlab import config as config_lib
from initlab import data as data_lib
from initlab import losses
from initlab import train
import initlab.init as ii
from initlab.train import pipeline
from initlab.sweep import runners as sweep_runners
from initlab.sweep import vmap as sweep_vmap

import finetune_testlib as lib  # pylint: disable=g-bad-import-order
import pipeline_testlib  # pylint: disable=g-bad-import-order
from train_testlib import REPO  # pylint: disable=g-bad-import-order

pytestmark = pytest.mark.filterwarnings(
  'ignore:Exception ignored in. None:pytest.PytestUnraisableExceptionWarning'
)


@pytest.fixture(autouse=True, scope='module')
def _test_schemes():
  with lib.registered(), pipeline_testlib.registered():
    yield


@pytest.fixture(scope='module')
def teacher(data_dir, tmp_path_factory):
  """A trained digits MLP run directory (width 64)."""
  path = tmp_path_factory.mktemp('teacher')
  c = lib.mlp_config(data_dir, steps=30, checkpoint_every=30)
  c.model.width = 64
  train.run(c, path)
  return path


def _distill(data_dir, teacher, **train_opts):
  c = lib.mlp_config(data_dir, **train_opts)
  c.train.loss = 'distill'
  c.train.distill.teacher = str(teacher)
  return c


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_student_started_from_its_teacher_has_zero_kl(data_dir, teacher, tmp_path):
  c = _distill(data_dir, teacher, steps=2, log_every=1)
  c.model.width = 64
  c.train.distill.alpha = 1.0
  c.train.distill.temperature = 2.0
  c.init_from = str(teacher)
  result = train.run(c, tmp_path / 'self')
  first = [json.loads(l) for l in (tmp_path / 'self' / 'metrics.jsonl').read_text().splitlines()]
  step1 = next(r for r in first if r['step'] == 1 and r['split'] == 'train')
  assert abs(step1['loss']) < 1e-6  # Measured on the step-0 params: the teacher's own.
  assert result.summary['final']['train/loss'] < 1e-6  # No gradient: it stays the teacher.
  c.init_from = ''  # A fresh student of the same architecture is far from the teacher.
  fresh = train.run(c, tmp_path / 'fresh')
  assert fresh.summary['final']['train/loss'] > 0.01


def test_step_loss_equals_numpy_distillation_on_a_batch(data_dir, teacher, tmp_path):
  """Another student architecture (width 32) against the width-64 teacher: the jitted step's
  loss on one batch is (1 − α)·CE + α·T²·KL computed in float64 numpy from both models."""
  c = _distill(data_dir, teacher, steps=1)
  c.train.distill.update(dict(alpha=0.3, temperature=3.0))
  run = train.Run(c, tmp_path / 'student')
  with jax.set_mesh(run.mesh):
    state, _, _ = run.initial_state()
    batch = data_lib.to_global(next(run.train_iterator()), run.batch_sharding)
    s = np.asarray(run.setup.model(state)(batch['image'], train=False), np.float64)
    t = np.asarray(run.teacher.logits(run.teacher.variables, batch['image']), np.float64)
    _, metrics = run.train_step(state, batch)
  y = np.asarray(batch['label'])
  ce = -np.take_along_axis(_log_softmax(s), y[:, None], -1)[:, 0]
  lt, ls = _log_softmax(t / 3.0), _log_softmax(s / 3.0)
  want = np.mean(0.7 * ce + 0.3 * 9.0 * (np.exp(lt) * (lt - ls)).sum(-1))
  np.testing.assert_allclose(float(metrics['loss']), want, rtol=1e-5)
  run.checkpointer.close()


def test_data_stage_loss_is_the_runs_distillation_loss(data_dir, teacher, tmp_path):
  """`ctx.data.loss` (LSUV, MetaInit, GradInit) uses the run's loss and teacher: on a batch it
  equals the train step's loss (checked against numpy above; the MLP has no dropout or BN)."""
  c = _distill(data_dir, teacher, steps=1)
  c.train.distill.update(dict(alpha=0.3, temperature=3.0))
  run = train.Run(c, tmp_path / 'student')
  with jax.set_mesh(run.mesh):
    state, _, _ = run.initial_state()
    batch = data_lib.to_global(next(run.train_iterator()), run.batch_sharding)
    data = pipeline.data_context(run, run.setup.graphdef, state.model_state, (batch,))
    got = float(data.loss(state.params, batch))
    student = run.setup.model(state)(batch['image'], train=False)
    _, metrics = run.train_step(state, batch)
  np.testing.assert_allclose(got, float(metrics['loss']), rtol=1e-6)
  ce = float(losses.mean_loss(losses.CE, student, batch, 'classification'))
  assert got != pytest.approx(ce)  # Not plain cross-entropy.
  run.checkpointer.close()


def test_teacher_of_another_output_space_is_refused_in_one_line(data_dir, tmp_path):
  # A real run of a transformer LM on text: a vocabulary, not digits' 10 classes.
  text_dir = str(tmp_path / 'tfds')
  data_lib.prepare('tiny_shakespeare', text_dir)
  lm = config_lib.load(REPO / 'configs' / 'lm_shakespeare.py', 'smoke')
  lm.data.data_dir = text_dir
  lm.seeds.num, lm.init.compare = 1, ()
  lm.train.update(dict(steps=1, checkpoint_every=1, eval_every=0, progress_bar=False))
  train.run(lm, tmp_path / 'lm')
  c = _distill(data_dir, tmp_path / 'lm')
  with pytest.raises(config_lib.ConfigError, match=r'distill.teacher: the teacher at .* does not '):
    train.run(c, tmp_path / 'student')
  assert not (tmp_path / 'student').exists() or not any((tmp_path / 'student').iterdir())


def test_distillation_runs_under_the_vmap_runner_as_sequentially(data_dir, teacher, tmp_path):
  c = _distill(data_dir, teacher, steps=6, checkpoint_every=6)
  sweep = {'seeds': 2}
  got = {}
  for runner in ('vmap', 'sequential'):
    workdir = tmp_path / runner
    trials = sweep_runners.prepare(c, workdir, sweep, vmap=runner == 'vmap')
    if runner == 'vmap':
      sweep_vmap.run_vmap(workdir, trials)
    else:
      sweep_runners.run_sequential(workdir, trials)
    got[runner] = [
      json.loads((t.workdir(workdir) / 'summary.json').read_text())['final']['train/loss']
      for t in trials
    ]
  np.testing.assert_allclose(got['vmap'], got['sequential'], rtol=1e-4)


def test_arch_change_chain_with_lsuv_runs(data_dir, tmp_path):
  """chain(<a part returning SchemeResult with a new model>, he_normal, lsuv) in a run."""
  name = 'test_deepen_he_lsuv'
  ii.register_scheme(name)(
    lambda: ii.chain(
      pipeline_testlib.deepen(), ii.get_scheme('he_normal'), ii.get_scheme('lsuv'), warn=False
    )
  )
  try:
    c = lib.mlp_config(data_dir, steps=2, checkpoint_every=2)
    c.init.name = name
    result = train.run(c, tmp_path / 'run')
  finally:
    ii.registry._SCHEMES.pop(name, None)  # pylint: disable=protected-access
    ii.registry._DESCRIPTIONS.pop(name, None)  # pylint: disable=protected-access
  assert result.run.model_config.depth == 3
  assert np.isfinite(result.summary['final']['train/loss'])


def test_probe_narrows_the_resnet_and_a_rerun_after_kill_does_not_probe_again(
  data_dir, tmp_path, devices
):
  workdir, marker = tmp_path / 'run', tmp_path / 'probe_calls'
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / 'tests' / 'train'), str(REPO)]))
  cmd = [sys.executable, 'finetune_testlib.py', str(workdir), data_dir, '8', str(marker)]
  proc = subprocess.Popen(
    cmd, cwd=REPO / 'tests' / 'train', env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
  )
  try:
    deadline = time.time() + 240
    while not (workdir / 'checkpoints' / '8').is_dir():
      assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
      assert time.time() < deadline, 'no checkpoint within 240 s'
      time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait()
  assert not (workdir / 'child_done').exists()
  assert marker.read_text().count('probe') == 1
  built = json.loads((workdir / 'config.json').read_text())['built_model']
  widths = tuple(built['block_widths'])
  assert widths == (2, 4, 8)  # Half of ResNet-8 (width 0.25)'s 4/8/16 inner channels.
  c = lib.resnet_config(data_dir, steps=40, checkpoint_every=4)
  c.init.name = 'test_narrow'
  os.environ[lib.MARKER_ENV] = str(marker)
  try:
    result = train.run(c, workdir)
  finally:
    del os.environ[lib.MARKER_ENV]
  assert marker.read_text().count('probe') == 1  # Reused, not probed again.
  assert result.summary['resumed_from'] >= 8 and not result.run.probed
  conv1 = result.state.params['stage2']['blocks'][0]['conv1']['kernel']
  assert conv1.shape[-1] == 4
  one = train.Run(c, tmp_path / 'one_device', devices=devices[:1])
  assert one.probed and tuple(one.model_config.block_widths) == widths
  one.checkpointer.close()
