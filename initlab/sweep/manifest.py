"""The sweep manifest `<workdir>/sweep.json`: every trial's config and status, shared by workers.

    {"trials": {"<id>": {"trial": Trial.to_json(), "status": "pending" | "running" | "done"
                         | "failed" | "diverged", "attempts": int, "finished": int,
                         "owner": "host:pid" | null, "error": str | null}}}

Every change is a read-modify-write under an exclusive `fcntl.flock` on
`<workdir>/.sweep.json.lock`, written to a temp file and `os.replace`d, so readers never see a
torn file and concurrent workers (processes, Ray tasks on hosts sharing the filesystem) never
lose an update. A worker that claims a trial also holds `<workdir>/.sweep_locks/<id>.lock`
(flock, non-blocking) until it finishes the trial: the OS drops that lock when the worker
dies, so a trial left 'running' whose lock is free was interrupted and may be claimed again,
and a trial whose lock is held is never claimed twice. 'done' and 'diverged' are final (a
resumed sweep never reruns them); 'failed' trials are retried by the next sweep invocation
(`reset_failed`). `sync` adds new trials and resets a trial whose config hash changed (e.g. a
longer `train.steps`) to pending. flock needs a filesystem that supports it (local disks; NFS
v4 with locking).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import pathlib
import socket
from typing import Any, Iterator, Sequence

from initlab import rundir
from initlab.sweep.spec import Trial

NAME = rundir.SWEEP
LOCKS = '.sweep_locks'
STATUSES = ('pending', 'running', 'done', 'failed', 'diverged')
FINAL = ('done', 'diverged')


def owner() -> str:
  return f'{socket.gethostname()}:{os.getpid()}'


@dataclasses.dataclass
class Claim:
  """A trial this process holds (its lock file is open and flock'ed until `finish`)."""

  manifest: Manifest
  trial: Trial
  _fd: int | None

  def finish(self, status: str, error: str | None = None) -> None:
    """Records the trial's outcome and releases its lock."""
    try:
      self.manifest.set_status(self.trial.id, status, error=error)
    finally:
      self.release()

  def release(self) -> None:
    """Drops the lock without recording anything (an interrupted trial stays 'running')."""
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None


class Manifest:
  """`<workdir>/sweep.json` (see the module docstring)."""

  def __init__(self, workdir):
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / NAME

  @contextlib.contextmanager
  def _locked(self) -> Iterator[dict]:
    """Yields the manifest dict under the exclusive lock; writes it back (atomically) after."""
    self.workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(self.workdir / f'.{NAME}.lock', os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
      data = self._read()
      before = rundir.dumps(data, sort_keys=True)
      yield data
      if rundir.dumps(data, sort_keys=True) != before:
        tmp = self.path.with_name(f'.{NAME}.{os.getpid()}.tmp')
        tmp.write_text(rundir.dumps(data, indent=1, sort_keys=True) + '\n', encoding='utf-8')
        os.replace(tmp, self.path)
    finally:
      os.close(fd)  # Closing releases the flock.

  def _read(self) -> dict[str, Any]:
    try:
      return rundir.read_json(self.path)
    except FileNotFoundError:
      return {'trials': {}}

  def read(self) -> dict[str, dict[str, Any]]:
    """{id: entry} as on disk (a snapshot; no lock held afterwards)."""
    with self._locked() as data:
      return data['trials']

  def statuses(self) -> dict[str, str]:
    return {k: v['status'] for k, v in self.read().items()}

  def trials(self) -> list[Trial]:
    return [Trial.from_json(e['trial']) for e in self.read().values()]

  def sync(self, trials: Sequence[Trial], *, drop_others: bool = True) -> None:
    """Adds `trials` as pending; a trial whose config hash changed becomes pending again."""
    with self._locked() as data:
      old = data['trials']
      new = {} if drop_others else dict(old)
      for t in trials:
        e = old.get(t.id)
        if e is None or e['trial']['hash'] != t.hash:
          e = dict(status='pending', attempts=0, finished=0, owner=None, error=None)
        new[t.id] = {**e, 'trial': t.to_json()}
      data['trials'] = new

  def reset_failed(self) -> None:
    with self._locked() as data:
      for e in data['trials'].values():
        if e['status'] == 'failed':
          e['status'] = 'pending'

  def claim(self, ids: Sequence[str] | None = None) -> Claim | None:
    """Claims the first claimable trial among `ids` (default: all, in manifest order).

    Claimable: pending, or running with a free lock (its worker died). Returns None if none.
    """
    with self._locked() as data:
      entries = data['trials']
      for trial_id in entries if ids is None else ids:
        e = entries.get(trial_id)
        if e is None or e['status'] not in ('pending', 'running'):
          continue
        fd = self._try_lock(trial_id)
        if fd is None:
          continue  # Another live worker runs it.
        e.update(status='running', owner=owner(), attempts=e['attempts'] + 1, error=None)
        return Claim(self, Trial.from_json(e['trial']), fd)
    return None

  def claim_all(self, ids: Sequence[str]) -> list[Claim]:
    """Claims every claimable trial of `ids` (one lock pass); the others are skipped."""
    out = []
    for trial_id in ids:
      c = self.claim([trial_id])
      if c is not None:
        out.append(c)
    return out

  def set_status(self, trial_id: str, status: str, *, error: str | None = None) -> None:
    if status not in STATUSES:
      raise ValueError(f'status {status!r}; valid: {", ".join(STATUSES)}')
    with self._locked() as data:
      e = data['trials'][trial_id]
      e.update(status=status, error=error)
      if status in FINAL:
        e['finished'] = e.get('finished', 0) + 1

  def _try_lock(self, trial_id: str) -> int | None:
    path = self.workdir / LOCKS / (trial_id.replace('/', '__') + '.lock')
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      return None
    return fd
