"""MetricWriter JSONL + TensorBoard events, tolerant reading, de-duplication after a resume."""

import json
import math
import pathlib
import struct

import jax.numpy as jnp
import numpy as np
import pytest

from initlab.train import metrics as metrics_lib
from initlab.train.metrics import MetricWriter, dedupe_steps, read_jsonl


def _crc32c(data: bytes) -> int:
  """Bitwise CRC-32C (Castagnoli), written here so the test does not trust the writer's."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
  return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecords(path: pathlib.Path) -> list[bytes]:
  """Payloads of a TFRecord file, checking both CRCs of every record."""
  data, offset, out = path.read_bytes(), 0, []
  while offset < len(data):
    header = data[offset : offset + 8]
    (length,) = struct.unpack('<Q', header)
    (header_crc,) = struct.unpack('<I', data[offset + 8 : offset + 12])
    assert header_crc == _masked(_crc32c(header))
    payload = data[offset + 12 : offset + 12 + length]
    (payload_crc,) = struct.unpack('<I', data[offset + 12 + length : offset + 16 + length])
    assert payload_crc == _masked(_crc32c(payload))
    out.append(payload)
    offset += 16 + length
  assert offset == len(data)
  return out


def read_scalars(tb_dir: pathlib.Path) -> tuple[dict, list]:
  """{tag: [(step, value)]} over every event file, and the raw events."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top

  scalars, events = {}, []
  for path in sorted(tb_dir.glob('events.out.tfevents.*')):
    for payload in read_tfrecords(path):
      event = event_pb2.Event.FromString(payload)
      events.append(event)
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars, events


def test_crc32c_reference_value():
  assert _crc32c(b'123456789') == 0xE3069283


def test_write_converts_jax_and_numpy_scalars(tmp_path):
  with MetricWriter(tmp_path, tensorboard=False) as writer:
    writer.write(
      jnp.int32(3),
      {
        'loss': jnp.float32(1.5),
        'n': np.int64(7),
        'ok': True,
        'lr': 0.1,
        'one': jnp.ones((1,)),
        'bf': jnp.bfloat16(1.25),
      },
    )
    writer.write(4, {'accuracy': np.float64(0.25)}, split='eval')
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(line) for line in lines] == [
    {'step': 3, 'split': 'train', 'loss': 1.5, 'n': 7, 'ok': 1, 'lr': 0.1, 'one': 1.0, 'bf': 1.25},
    {'step': 4, 'split': 'eval', 'accuracy': 0.25},
  ]
  assert read_jsonl(tmp_path / 'metrics.jsonl')[0]['loss'] == 1.5


@pytest.mark.parametrize(
  'split, metrics, error',
  [
    ('test', {'loss': 1.0}, ValueError),
    ('train', {'step': 1.0}, ValueError),
    ('train', {'w': jnp.ones((2, 2))}, TypeError),
    ('train', {'name': 'text'}, TypeError),
  ],
)
def test_write_rejects_bad_input(tmp_path, split, metrics, error):
  with MetricWriter(tmp_path, tensorboard=False) as writer:
    with pytest.raises(error):
      writer.write(0, metrics, split=split)


def test_non_finite_values_round_trip(tmp_path):
  with MetricWriter(tmp_path, tensorboard=False) as writer:
    writer.write(1, {'a': math.nan, 'b': jnp.float32(jnp.inf), 'c': -math.inf, 'd': 2.0})
  line = (tmp_path / 'metrics.jsonl').read_text()
  assert json.loads(line, parse_constant=lambda c: pytest.fail(f'bare {c} in JSON')) == {
    'step': 1,
    'split': 'train',
    'a': 'nan',
    'b': 'inf',
    'c': '-inf',
    'd': 2.0,
  }
  (record,) = read_jsonl(tmp_path / 'metrics.jsonl')
  assert math.isnan(record['a']) and record['b'] == math.inf and record['c'] == -math.inf
  assert metrics_lib.dumps({'x': [np.float32(np.nan)], 'y': np.array([1.0, np.inf])}) == (
    '{"x": ["nan"], "y": [1.0, "inf"]}'
  )


def test_read_jsonl_skips_truncated_last_line(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  with MetricWriter(tmp_path, tensorboard=False) as writer:
    for step in range(3):
      writer.write(step, {'loss': 1.0 / (step + 1)})
  with open(path, 'a') as f:
    f.write('{"step": 3, "split": "train", "lo')  # killed mid-write
  assert [r['step'] for r in read_jsonl(path)] == [0, 1, 2]


def test_read_jsonl_raises_on_corrupt_middle_line(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 0, "split": "train"}\n{"step": 1, "sp\n{"step": 2, "split": "train"}\n')
  with pytest.raises(ValueError, match=r'metrics.jsonl:2'):
    read_jsonl(path)


def test_reopening_repairs_a_partial_tail(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 0, "split": "train", "loss": 1.0}\n{"step": 1, "split": "tr')
  with MetricWriter(tmp_path, tensorboard=False) as writer:
    writer.write(1, {'loss': 0.5})
  assert read_jsonl(path) == [
    {'step': 0, 'split': 'train', 'loss': 1.0},
    {'step': 1, 'split': 'train', 'loss': 0.5},
  ]
  # A complete last record that only lacks its newline is kept.
  path.write_text('{"step": 0, "split": "train", "loss": 1.0}')
  with MetricWriter(tmp_path, tensorboard=False) as writer:
    writer.write(1, {'loss': 0.5})
  assert [r['step'] for r in read_jsonl(path)] == [0, 1]


def test_dedupe_keeps_last_record_per_split_and_step(tmp_path):
  with MetricWriter(tmp_path, tensorboard=False) as writer:  # first attempt, killed after step 5
    for step in range(6):
      writer.write(step, {'loss': 10.0 + step})
      if step % 2 == 0:
        writer.write(step, {'accuracy': 0.1}, split='eval')
  with MetricWriter(tmp_path, tensorboard=False) as writer:  # resumed from the step-3 checkpoint
    for step in range(3, 8):
      writer.write(step, {'loss': 20.0 + step})
      if step % 2 == 0:
        writer.write(step, {'accuracy': 0.2}, split='eval')
  records = dedupe_steps(read_jsonl(tmp_path / 'metrics.jsonl'))
  train = [(r['step'], r['loss']) for r in records if r['split'] == 'train']
  evals = [(r['step'], r['accuracy']) for r in records if r['split'] == 'eval']
  assert train == [
    (0, 10.0),
    (1, 11.0),
    (2, 12.0),
    (3, 23.0),
    (4, 24.0),
    (5, 25.0),
    (6, 26.0),
    (7, 27.0),
  ]
  assert evals == [(0, 0.1), (2, 0.1), (4, 0.2), (6, 0.2)]
  steps = [r['step'] for r in records]
  assert steps == sorted(steps)


def test_only_process_zero_writes(tmp_path):
  writer = MetricWriter(tmp_path / 'run', process_index=1)
  writer.write(0, {'loss': 1.0})
  writer.flush()
  writer.close()
  assert not (tmp_path / 'run').exists()


def test_tensorboard_events_read_back(tmp_path):
  with MetricWriter(tmp_path, process_index=0) as writer:
    for step in range(0, 50, 10):
      writer.write(step, {'loss': 1.0 / (step + 1), 'l2_grads': float(step)})
    writer.write(40, {'accuracy': 0.75, 'loss': math.nan}, split='eval')
  with MetricWriter(tmp_path, purge_step=30) as writer:  # a resume: second file, same dir
    writer.write(30, {'loss': 0.125})
  files = sorted((tmp_path / 'tb').glob('events.out.tfevents.*'))
  assert len(files) == 2 and all(f.stat().st_size > 0 for f in files)
  scalars, events = read_scalars(tmp_path / 'tb')
  assert set(scalars) == {'train/loss', 'train/l2_grads', 'eval/accuracy', 'eval/loss'}
  assert [s for s, _ in scalars['train/loss']] == [0, 10, 20, 30, 40, 30]
  np.testing.assert_allclose(
    [v for _, v in scalars['train/loss']], [1.0, 1 / 11, 1 / 21, 1 / 31, 1 / 41, 0.125], rtol=1e-6
  )
  assert scalars['eval/accuracy'] == [(40, 0.75)]
  assert math.isnan(scalars['eval/loss'][0][1])
  assert sum(e.file_version == 'brain.Event:2' for e in events) == 2
  assert any(e.step == 30 and e.HasField('session_log') for e in events)


def test_write_after_close_raises(tmp_path):
  writer = MetricWriter(tmp_path, tensorboard=False)
  writer.close()
  writer.close()  # idempotent
  with pytest.raises(ValueError, match='closed'):
    writer.write(0, {'loss': 1.0})
