"""What a workdir may hold when a run or study starts again (issue 8, items 1, 2, 4, 5).

A resume may change only the length of training (rundir.RESUMABLE); anything else is refused
before a byte is written, unless force=True. Finished runs are never rewritten; metrics.jsonl
never holds a step twice; summaries add up the wall time of every process.
"""

import json
import shutil
import struct
import time

import pytest

from initlab import config as config_lib
from initlab import rundir
from initlab import train
from initlab.train import checkpoint as ckpt_lib
from initlab.train import loop

import quickstart  # pylint: disable=g-bad-import-order
import resnet_digits  # pylint: disable=g-bad-import-order

pytestmark = pytest.mark.filterwarnings(
  'ignore:Exception ignored in. None:pytest.PytestUnraisableExceptionWarning'
)


def snapshot(path):
  return sorted(
    (str(p.relative_to(path)), p.stat().st_mtime_ns, p.stat().st_size) for p in path.rglob('*')
  )


def train_steps(run_dir):
  """Steps of the train records in metrics.jsonl as written (not de-duplicated)."""
  return [r['step'] for r in rundir.read_jsonl(run_dir / rundir.METRICS) if r['split'] == 'train']


@pytest.fixture
def tiny_study(tiny_config):
  def make(**train_opts):
    config = tiny_config(steps=4, log_every=2, checkpoint_every=4, **train_opts)
    config.init.compare = ('he_normal', 'orthogonal')
    return config

  return make


def test_changed_study_config_is_refused_before_writing(tiny_study, tmp_path):
  config = tiny_study()
  train.run_study(config, tmp_path)
  before = snapshot(tmp_path)
  changed = tiny_study()
  changed.optimizer.learning_rate = 0.5  # The rerun: lr changed, study shrunk.
  changed.init.compare = ('he_normal',)
  with pytest.raises(
    rundir.RunDirError,
    match=r'another config \(optimizer.learning_rate: '
    r'0.05 -> 0.5\).*only change train.steps.*--force',
  ):
    train.run_study(changed, tmp_path)
  other = resnet_digits.get_config('smoke')  # Another study's config into this workdir.
  other.data.data_dir = config.data.data_dir
  with pytest.raises(rundir.RunDirError, match=r'model.name: .mlp. -> .resnet.'):
    train.run_study(other, tmp_path)
  assert snapshot(tmp_path) == before

  # Shrinking the study is not a change of config: the finished run is reused as it is and
  # the report is built from the current runs only, flagging the others.
  shrunk = tiny_study()
  shrunk.init.compare = ('he_normal',)
  he = rundir.run_dir(tmp_path, 'he_normal', 0)
  kept = {name: (he / name).read_bytes() for name in (rundir.CONFIG, rundir.SUMMARY)}
  results = train.run_study(shrunk, tmp_path)
  assert {name: (he / name).read_bytes() for name in kept} == kept
  assert list(results['schemes']) == ['he_normal']
  assert any('orthogonal/seed_0' in note and 'stale' in note for note in results['notes'])

  # --force: starts over with the new config.
  train.run_study(changed, tmp_path, force=True)
  saved = rundir.read_json(he / rundir.CONFIG)
  assert saved['optimizer']['learning_rate'] == 0.5
  assert rundir.read_json(tmp_path / rundir.CONFIG)['init']['compare'] == ['he_normal']
  assert train_steps(he) == [2, 4]


def test_study_validates_every_scheme_before_writing(tiny_study, tmp_path):
  config = tiny_study()
  config.init.compare = ('he_normal', 'fixup')  # Fixup needs a residual model, not an MLP.
  with pytest.raises(config_lib.ConfigError, match=r"init 'fixup'.*needs a residual model"):
    train.run_study(config, tmp_path / 'study')
  assert not (tmp_path / 'study').exists()


def test_changed_run_config_is_refused_and_finished_run_kept(tiny_config, tmp_path):
  config = tiny_config(steps=8)
  first = train.run(config, tmp_path).summary
  assert not (tmp_path / rundir.REPORT).exists()  # train/ writes results; main the report.
  files = {n: (tmp_path / n).read_bytes() for n in (rundir.CONFIG, rundir.SUMMARY)}
  changed = tiny_config(steps=8)
  changed.model.width = 64
  with pytest.raises(rundir.RunDirError, match=r'model.width: 32 -> 64'):
    train.run(changed, tmp_path)
  cosmetic = tiny_config(steps=8, progress_bar=False)
  again = train.run(cosmetic, tmp_path).summary  # Finished: nothing trained, nothing rewritten.
  assert again == first and 'train/loss' in again['final']
  assert {n: (tmp_path / n).read_bytes() for n in files} == files
  assert train_steps(tmp_path) == list(range(1, 9))


def test_longer_run_resumes_and_accumulates_wall_time(tiny_config, tmp_path):
  first = train.run(tiny_config(steps=8), tmp_path).summary
  ckpt = ckpt_lib.Checkpointer(tmp_path / rundir.CHECKPOINTS)
  run = train.Run(tiny_config(steps=8), tmp_path)
  wall_at_8 = ckpt.restore(loop.to_checkpoint(run.setup.abstract), step=8).meta['wall_s']
  ckpt.close()
  assert 0 < wall_at_8 <= first['wall_s']
  t0 = time.time()
  longer = train.run(tiny_config(steps=12), tmp_path).summary
  elapsed = time.time() - t0
  assert longer['resumed_from'] == 8 and longer['steps'] == 12
  assert 0 < longer['wall_s'] - wall_at_8 <= elapsed  # Earlier processes' time is counted.
  assert rundir.read_json(tmp_path / rundir.CONFIG)['train']['steps'] == 12
  assert train_steps(tmp_path) == list(range(1, 13))
  assert {'train/loss', 'eval/accuracy'} <= set(longer['final'])
  with pytest.raises(
    rundir.RunDirError,
    match=r'run of 12 steps, longer than '
    r'config.train.steps=8',
  ):
    train.run(tiny_config(steps=8), tmp_path)


def test_crash_and_rerun_logs_each_step_once(tiny_config, tmp_path):
  config = tiny_config(steps=12, eval_every=4)
  train.run(config, tmp_path)
  # As if killed after logging step 12 but before its checkpoint and the summary were
  # written, with checkpoint 8 lost too: the rerun resumes at 4 and relogs 5..12.
  for step in (8, 12):
    shutil.rmtree(tmp_path / rundir.CHECKPOINTS / str(step))
  (tmp_path / rundir.SUMMARY).unlink()
  summary = train.run(config, tmp_path).summary
  assert summary['resumed_from'] == 4
  assert train_steps(tmp_path) == list(range(1, 13))
  evals = [r['step'] for r in rundir.read_jsonl(tmp_path / rundir.METRICS) if r['split'] == 'eval']
  assert evals == [4, 8, 12]


def test_finished_run_without_summary_keeps_train_finals(tiny_config, tmp_path):
  config = tiny_config(steps=4)
  first = train.run(config, tmp_path).summary
  (tmp_path / rundir.SUMMARY).unlink()  # Killed after the last checkpoint.
  again = train.run(config, tmp_path).summary
  assert again['resumed_from'] == 4
  for key, value in first['final'].items():
    assert again['final'][key] == pytest.approx(value, rel=1e-6), key


def _tb_steps(tb_dir):
  """(tag, step) of every scalar in the TensorBoard event files, as now on disk."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top

  out = []
  for path in sorted(tb_dir.glob('events*')):
    data = path.read_bytes()
    i = 0
    while i + 12 <= len(data):
      (length,) = struct.unpack('<Q', data[i : i + 8])
      if i + 12 + length + 4 > len(data):
        break  # A record not (yet) complete on disk.
      event = event_pb2.Event.FromString(data[i + 12 : i + 12 + length])
      out += [(v.tag, event.step) for v in event.summary.value]
      i += 12 + length + 4
  return out


def test_tensorboard_is_on_disk_at_each_checkpoint(tiny_config, tmp_path, monkeypatch):
  seen = {}
  save = ckpt_lib.Checkpointer.save

  def spy(self, step, *args, **kwargs):
    seen[step] = {s for tag, s in _tb_steps(tmp_path / rundir.TB) if tag == 'train/loss'}
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(ckpt_lib.Checkpointer, 'save', spy)
  train.run(tiny_config(steps=8, log_every=1, checkpoint_every=4), tmp_path)
  assert seen == {4: {1, 2, 3, 4}, 8: set(range(1, 9))}


def test_relative_paths_are_resolved_once(tiny_config, tmp_path, monkeypatch):
  source = tiny_config(steps=2)
  train.run(source, tmp_path / 'source')
  monkeypatch.chdir(tmp_path)
  config = tiny_config(steps=2)
  config.init_from = 'source/checkpoints'
  result = train.run(config, 'rel')  # Orbax refuses relative paths.
  assert result.run.workdir == tmp_path / 'rel'
  saved = json.loads((tmp_path / 'rel' / rundir.CONFIG).read_text())
  assert saved['init_from'] == str(tmp_path / 'source' / 'checkpoints')
  assert (tmp_path / 'rel' / rundir.CHECKPOINTS / '2').is_dir()
