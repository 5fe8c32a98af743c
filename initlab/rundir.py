"""The run directory's schema, for its writers (train) and its readers (report): one place.

    <run>/config.json              the run's config (`config_dict`), written before training
    <run>/summary.json             {"final": {"train/loss", "eval/accuracy", ...}, "steps",
                                    "wall_s" (all processes that trained it), "resumed_from",
                                    "eval_examples", "init_s" (seconds of the staged init,
                                    compilation included; null if resumed), "provenance",
                                    ["error"]}
    <run>/metrics.jsonl            {"step": int, "split": "train"|"eval", name: value, ...}
    <run>/init_diagnostics.json    `initlab.diagnostics.measure(...).to_dict()`
    <run>/checkpoints/<step>/      Orbax: train state, data-iterator state, config
    <run>/tb/                      TensorBoard scalar events (tag "split/name")
    <run>/report.md, results.json  `initlab.report.build_report(<run>)`, plus PNG plots

A study's workdir holds config.json, report.md and results.json for the whole study and
one run directory per scheme and seed: `run_dir(workdir, scheme, k)` =
`<workdir>/runs/<scheme>/seed_<k>/`.

JSON has no NaN or infinity, so non-finite floats are written as the strings "nan", "inf"
and "-inf" (`dumps`, `write_json`) and read back as floats (`loads`, `read_json`,
`read_jsonl`); in metrics.jsonl a null value also reads as NaN. Only process 0 writes.

Resuming: a workdir's config.json may differ from the config that resumes it only in
RESUMABLE keys (the length of training and cosmetics); `changed_keys` lists the others.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

CONFIG = 'config.json'
SUMMARY = 'summary.json'
METRICS = 'metrics.jsonl'
DIAGNOSTICS = 'init_diagnostics.json'
CHECKPOINTS = 'checkpoints'
TB = 'tb'
RUNS = 'runs'
REPORT = 'report.md'
RESULTS = 'results.json'
SWEEP = 'sweep.json'  # A sweep's (or study's) manifest: each run's status (initlab.sweep).
SEED_DIR = re.compile(r'^seed_(\d+)$')

OUTPUTS = (CONFIG, SUMMARY, METRICS, DIAGNOSTICS, CHECKPOINTS, TB, RUNS, REPORT, RESULTS, SWEEP)
# Keys a resume may change: the length of training (the learning-rate schedule is recomputed
# for the new length from the restored step on) and what does not touch the numbers.
RESUMABLE = ('train.steps', 'train.progress_bar', 'name')

SPLITS = ('train', 'eval')
RESERVED = ('step', 'split')  # metrics.jsonl keys that are not metrics.
_NONFINITE = {'nan': math.nan, 'inf': math.inf, '-inf': -math.inf}


def run_dir(workdir: str | os.PathLike, scheme: str, seed: int) -> pathlib.Path:
  """`<workdir>/runs/<scheme>/seed_<seed>`: one run of a study."""
  return pathlib.Path(workdir) / RUNS / scheme / f'seed_{int(seed)}'


class RunDirError(ValueError):
  """A workdir initlab cannot use as asked (not writable, another run's, another config)."""


def absolute(path: str | os.PathLike) -> str:
  """`path` with '~' expanded, made absolute against the current directory (URLs as given)."""
  path = os.fspath(path)
  return path if '://' in path else os.path.abspath(os.path.expanduser(path))


def check_writable(workdir: str | os.PathLike) -> None:
  """Raises RunDirError unless `workdir` is (or can be made) a writable directory.

  An existing directory is checked with `os.access`; otherwise a temporary directory is
  created and removed in the nearest existing ancestor, so nothing stays behind.
  """
  path = pathlib.Path(workdir)
  if path.exists() and not path.is_dir():
    raise RunDirError(f'workdir {path}: exists and is not a directory.')
  if path.is_dir():
    if not os.access(path, os.W_OK | os.X_OK):
      raise RunDirError(f'workdir {path}: not writable.')
    return
  probe = path
  while not probe.exists():
    probe = probe.parent
  if not probe.is_dir():
    raise RunDirError(f'workdir {path}: cannot be created, {probe} is not a directory.')
  try:
    tempfile.TemporaryDirectory(dir=probe, prefix='.initlab-probe-').cleanup()
  except OSError as e:
    raise RunDirError(
      f'workdir {path}: not writable (cannot create a directory in {probe}: {e.strerror or e}).'
    ) from None


def initlab_entries(workdir: str | os.PathLike) -> tuple[list[str], list[str]]:
  """(initlab outputs, other entries) in `workdir` (hidden entries ignored)."""
  path = pathlib.Path(workdir)
  names = (
    sorted(p.name for p in path.iterdir() if not p.name.startswith('.')) if path.is_dir() else []
  )
  ours = [n for n in names if n in OUTPUTS or n.endswith('.png')]
  return ours, [n for n in names if n not in ours]


def remove_outputs(workdir: str | os.PathLike, names: Iterable[str] = OUTPUTS) -> None:
  """Deletes the initlab outputs `names` from `workdir` (nothing else), on process 0."""
  import jax  # pylint: disable=g-import-not-at-top

  if jax.process_index() != 0:
    return
  for name in names:
    p = pathlib.Path(workdir) / name
    if p.is_dir() and not p.is_symlink():
      shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
      p.unlink()


def flatten(d: Any, prefix: str = '') -> dict[str, Any]:
  """{"a.b": v} from {"a": {"b": v}}; lists and tuples stay values."""
  if not isinstance(d, Mapping) or (not d and prefix):
    return {prefix[:-1]: d}
  return {k: v for kk, vv in d.items() for k, v in flatten(vv, f'{prefix}{kk}.').items()}


def changed_keys(
  saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Iterable[str] = RESUMABLE
) -> dict[str, tuple[Any, Any]]:
  """{key: (saved value, current value)} of the flattened keys that differ, minus `ignore`.

  Both sides go through `encode`, so tuples and lists compare equal and NaN equals NaN.
  """
  a, b = flatten(encode(saved)), flatten(encode(current))
  ignore = tuple(ignore)
  skip = lambda k: any(k == i or k.startswith(i + '.') for i in ignore)
  return {
    k: (a.get(k), b.get(k))
    for k in sorted(a.keys() | b.keys())
    if not skip(k) and a.get(k) != b.get(k)
  }


def describe_changes(changes: Mapping[str, tuple[Any, Any]], limit: int = 6) -> str:
  """'optimizer.learning_rate: 0.05 -> 0.5; ...' (the first `limit` keys, then a count)."""
  items = [f'{k}: {old!r} -> {new!r}' for k, (old, new) in changes.items()]
  more = f'; and {len(items) - limit} more' if len(items) > limit else ''
  return '; '.join(items[:limit]) + more


def study_runs(workdir: str | os.PathLike) -> Iterator[tuple[str, int, pathlib.Path]]:
  """(scheme, seed, path) of every `runs/<scheme>/seed_<k>/` directory, sorted by name."""
  runs = pathlib.Path(workdir) / RUNS
  if not runs.is_dir():
    return
  for scheme_dir in sorted(p for p in runs.iterdir() if p.is_dir()):
    for seed_dir in sorted(p for p in scheme_dir.iterdir() if p.is_dir()):
      m = SEED_DIR.match(seed_dir.name)
      if m:
        yield scheme_dir.name, int(m.group(1)), seed_dir


def encode(value: Any) -> Any:
  """`value` (nested dicts/lists allowed) with non-finite floats as "nan"/"inf"/"-inf"."""
  if isinstance(value, Mapping):
    return {str(k): encode(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [encode(v) for v in value]
  if isinstance(value, np.ndarray):
    return encode(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return 'nan' if math.isnan(value) else ('inf' if value > 0 else '-inf')
  return value


def decode_value(value: Any) -> Any:
  """Inverse of `encode` for one scalar: "nan"/"inf"/"-inf" become floats."""
  if isinstance(value, str) and value in _NONFINITE:
    return _NONFINITE[value]
  return value


def decode(value: Any) -> Any:
  """Inverse of `encode`, recursively (dict keys are left alone)."""
  if isinstance(value, dict):
    return {k: decode(v) for k, v in value.items()}
  if isinstance(value, list):
    return [decode(v) for v in value]
  return decode_value(value)


def dumps(obj: Any, **kwargs) -> str:
  """`json.dumps` with initlab's non-finite rule (never emits bare NaN/Infinity)."""
  return json.dumps(encode(obj), allow_nan=False, **kwargs)


def loads(text: str | bytes) -> Any:
  """`json.loads`, then "nan"/"inf"/"-inf" strings become floats (`decode`)."""
  return decode(json.loads(text))


def write_json(path: str | os.PathLike, obj: Any, *, process_index: int | None = None) -> None:
  """Writes `obj` with `dumps` atomically (tmp file + rename), on process 0 only."""
  if process_index is None:
    import jax  # pylint: disable=g-import-not-at-top

    process_index = jax.process_index()
  if process_index != 0:
    return
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(dumps(obj, indent=1, sort_keys=True) + '\n', encoding='utf-8')
  os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
  """`loads` of the file (raises OSError / ValueError as `open` and `json.loads` do)."""
  return loads(pathlib.Path(path).read_text(encoding='utf-8'))


def parse_record(line: bytes | str) -> dict | None:
  """One metrics.jsonl line as a (raw) dict, or None if it is not a JSON object."""
  try:
    record = json.loads(line)
  except ValueError:
    return None
  return record if isinstance(record, dict) else None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """The records of a metrics JSONL file, with "nan"/"inf"/"-inf" (and null) values as floats.

  A last line that does not parse (a run killed mid-write) is skipped with a warning; a bad
  line anywhere else raises ValueError naming the file and line.
  """
  path = pathlib.Path(path)
  with open(path, 'rb') as f:
    lines = f.read().split(b'\n')
  records = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    record = parse_record(line)
    if record is None:
      if number == len(lines):  # no newline after it: the write was cut short
        logging.warning('%s: skipping a partial last line (%d bytes)', path, len(line))
        continue
      raise ValueError(f'{path}:{number}: not a JSON object: {line[:80]!r}')
    records.append({k: (v if k in RESERVED else _decode_metric(v)) for k, v in record.items()})
  return records


def _decode_metric(value: Any) -> Any:
  return math.nan if value is None else decode_value(value)


def dedupe_steps(records: Iterable[Mapping[str, Any]]) -> list[dict]:
  """Keeps the last record for each (split, step), sorted by step (train before eval).

  Runs since resume truncation never log a step twice; older directories may.
  """
  last = {}
  for record in records:
    last[(record.get('split', 'train'), int(record['step']))] = dict(record)
  order = {s: i for i, s in enumerate(SPLITS)}
  return [last[k] for k in sorted(last, key=lambda k: (k[1], order.get(k[0], len(order)), k[0]))]
