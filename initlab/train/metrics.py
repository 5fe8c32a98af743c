"""Metric writers: one JSON line per log call, plus TensorBoard scalar events.

    writer = MetricWriter(run_dir)                 # writes only on process 0
    writer.write(step, {"loss": loss, "l2_grads": g})               # jax/numpy scalars are fine
    writer.write(step, {"accuracy": acc, "loss": l}, split="eval")
    writer.close()

    records = read_jsonl(run_dir / "metrics.jsonl")

`run_dir/metrics.jsonl` holds records `{"step": int, "split": "train"|"eval", name: value, ...}`.
Non-finite values follow `initlab.rundir`'s JSON rule ("nan", "inf", "-inf" strings);
`read_jsonl`, `dumps` & co are re-exported from there. TensorBoard
events go to `run_dir/tb/` under the tag `split/name`, through `tensorboardX` (no TensorFlow).
"""

from __future__ import annotations

import logging
import os
import pathlib
import time
from typing import Any, Mapping

import numpy as np

from initlab import rundir

SPLITS = rundir.SPLITS
JSONL_NAME = rundir.METRICS
TB_DIR_NAME = rundir.TB
_RESERVED = rundir.RESERVED


def to_scalar(value: Any, name: str = 'value') -> int | float:
  """A python int or float from a python, numpy or jax scalar (or any one-element array)."""
  if isinstance(value, bool):
    return int(value)
  if type(value) in (int, float):  # pylint: disable=unidiomatic-typecheck
    return value
  try:
    array = np.asarray(value)
  except Exception as e:  # pylint: disable=broad-except
    raise TypeError(f'metric {name!r}: expected a number, got {type(value).__name__}') from e
  bad = TypeError(
    f'metric {name!r}: expected a real scalar, got {type(value).__name__} '
    f'with shape {array.shape} and dtype {array.dtype}'
  )
  if array.size != 1 or array.dtype.kind in 'USOMmc' or array.dtype.names is not None:
    raise bad
  if array.dtype.kind in 'biu':
    return int(array.reshape(()).item())
  try:  # floats, including ml_dtypes' bfloat16 & co (numpy kind "V")
    return float(array.reshape(()).astype(np.float64))
  except (TypeError, ValueError) as e:
    raise bad from e


encode_json_value = rundir.encode
decode_json_value = rundir.decode_value
dumps = rundir.dumps
loads = rundir.loads
read_jsonl = rundir.read_jsonl
dedupe_steps = rundir.dedupe_steps
_parse_record = rundir.parse_record


class MetricWriter:
  """Appends metrics to `run_dir/metrics.jsonl` and TensorBoard events to `run_dir/tb/`.

  Only the process whose index is 0 writes; on the others every method is a no-op, so the
  training loop can call it unconditionally on every host.

  Args:
    run_dir: the run's directory (created if needed).
    tensorboard: also write TensorBoard scalar events (needs `tensorboardX`).
    process_index: this process's index; None means `jax.process_index()`.
    purge_step: the first step this writer will log when a run restarts (the restored
      checkpoint's step + 1, or 1 without a checkpoint): records at steps >= `purge_step`
      that an interrupted run left in metrics.jsonl are dropped, so no step is logged twice,
      and TensorBoard is told to hide its events at those steps.
  """

  def __init__(
    self,
    run_dir: str | os.PathLike,
    *,
    tensorboard: bool = True,
    process_index: int | None = None,
    purge_step: int | None = None,
  ):
    if process_index is None:
      import jax  # pylint: disable=g-import-not-at-top

      process_index = jax.process_index()
    self.run_dir = pathlib.Path(run_dir)
    self.path = self.run_dir / JSONL_NAME
    self.active = process_index == 0
    self._file = None
    self._tb = None
    if not self.active:
      return
    self.run_dir.mkdir(parents=True, exist_ok=True)
    _repair_partial_tail(self.path)
    if purge_step is not None:
      _truncate_from(self.path, int(purge_step))
    self._file = open(self.path, 'a', encoding='utf-8')  # pylint: disable=consider-using-with
    if tensorboard:
      self._tb = _TensorBoardWriter(self.run_dir / TB_DIR_NAME, purge_step=purge_step)

  def write(self, step: int, metrics: Mapping[str, Any], split: str = 'train') -> None:
    """Logs `metrics` (name -> scalar) at `step` for `split` ("train" or "eval")."""
    if not self.active:
      return
    if self._file is None:
      raise ValueError(f'MetricWriter for {self.run_dir} is closed')
    if split not in SPLITS:
      raise ValueError(f'split={split!r}: expected one of {SPLITS}')
    step = int(to_scalar(step, 'step'))
    values = {}
    for name, value in metrics.items():
      if not isinstance(name, str) or name in _RESERVED:
        raise ValueError(f'metric name {name!r}: expected a str other than {_RESERVED}')
      values[name] = to_scalar(value, name)
    self._file.write(dumps({'step': step, 'split': split, **values}) + '\n')
    self._file.flush()
    if self._tb is not None:
      self._tb.write(step, {f'{split}/{k}': float(v) for k, v in values.items()})

  def flush(self) -> None:
    """Pushes everything written so far to disk."""
    if self._file is not None:
      self._file.flush()
      os.fsync(self._file.fileno())
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    """Flushes and closes the files; later `write` calls raise."""
    if self._file is not None:
      self.flush()
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


class _TensorBoardWriter:
  """Synchronous scalar event writer: what is written is on disk after `flush`."""

  def __init__(self, logdir: pathlib.Path, purge_step: int | None):
    try:
      # pylint: disable=g-import-not-at-top
      from tensorboardX import event_file_writer
      from tensorboardX.proto import event_pb2, summary_pb2
    except ImportError as e:
      raise ImportError(
        'MetricWriter(tensorboard=True) needs the `tensorboardX` package '
        '(pip install tensorboardX), or pass tensorboard=False'
      ) from e
    self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
    logdir.mkdir(parents=True, exist_ok=True)
    # File names hold the time in seconds only: two writers opened within one second (a quick
    # resume) must neither share a file nor sort out of order, as TensorBoard reads them sorted.
    suffix = f'.{time.time_ns():020d}.{os.getpid()}'
    self._writer = event_file_writer.EventsWriter(str(logdir / 'events'), suffix)
    if purge_step is not None:
      self._writer.write_event(
        event_pb2.Event(
          step=int(purge_step), session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        )
      )

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    summary = self._summary_pb2.Summary(
      value=[
        self._summary_pb2.Summary.Value(tag=tag, simple_value=value)
        for tag, value in scalars.items()
      ]
    )
    self._writer.write_event(
      self._event_pb2.Event(step=step, wall_time=time.time(), summary=summary)
    )

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def _truncate_from(path: pathlib.Path, step: int) -> None:
  """Drops the records of `path` at steps >= `step` (atomically; a no-op if there are none)."""
  if not path.exists():
    return
  lines = path.read_bytes().splitlines(keepends=True)
  keep = [l for l in lines if (r := _parse_record(l)) is None or int(r.get('step', 0)) < step]
  if len(keep) == len(lines):
    return
  logging.info(
    '%s: dropping %d records at steps >= %d (logged after the restored checkpoint)',
    path,
    len(lines) - len(keep),
    step,
  )
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_bytes(b''.join(keep))
  os.replace(tmp, path)


def _repair_partial_tail(path: pathlib.Path) -> None:
  """Makes `path` end in a newline, dropping a last record that a kill cut short."""
  if not path.exists() or path.stat().st_size == 0:
    return
  with open(path, 'rb+') as f:
    f.seek(-1, os.SEEK_END)
    if f.read(1) == b'\n':
      return
    f.seek(0)
    data = f.read()
    cut = data.rfind(b'\n') + 1
    if _parse_record(data[cut:]) is not None:
      f.seek(0, os.SEEK_END)
      f.write(b'\n')
    else:
      logging.warning(
        '%s: dropping a partial last line (%d bytes) before appending', path, len(data) - cut
      )
      f.truncate(cut)
