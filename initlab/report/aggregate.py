"""Numbers of a study: per-seed finals, mean ± std over seeds, steps to target, curves.

Statistics skip non-finite values (a diverged seed) and count them instead; std is the sample
standard deviation (ddof=1), 0 for a single seed.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from initlab.report.study import SeedRun
from initlab.train import metrics as metrics_lib

STD_DDOF = 1
DIAGNOSTIC_KEYS = ("q", "c", "grad_var", "jac_sv")
_LOWER_IS_BETTER = ("loss", "error", "perplexity", "ppl", "nll")


def final_metrics(run: SeedRun) -> dict[str, float]:
  """`split/name` -> last logged value, overridden by summary.json's "final" entries."""
  finals = {}
  for record in run.records:
    for name, value in record.items():
      if name not in ("step", "split"):
        finals[f"{record['split']}/{name}"] = _as_float(value)
  summary_finals = (run.summary or {}).get("final") or {}
  if isinstance(summary_finals, Mapping):
    finals.update({k: _as_float(metrics_lib.decode_json_value(v))
                   for k, v in summary_finals.items()})
  return finals


def run_steps(run: SeedRun) -> int | None:
  """Training steps of the run: summary.json's "steps", else the last logged step."""
  steps = (run.summary or {}).get("steps")
  if steps is not None:
    return int(steps)
  return max((int(r["step"]) for r in run.records), default=None)


def stats(values: Sequence[float | None]) -> dict[str, Any]:
  """mean/std/min/max over the finite values; n, n_nonfinite and n_missing (None) counted."""
  present = [v for v in values if v is not None]
  finite = np.asarray([v for v in present if math.isfinite(v)], dtype=np.float64)
  n = int(finite.size)
  return {
      "mean": float(finite.mean()) if n else math.nan,
      "std": float(finite.std(ddof=STD_DDOF)) if n > 1 else (0.0 if n else math.nan),
      "min": float(finite.min()) if n else math.nan,
      "max": float(finite.max()) if n else math.nan,
      "n": n,
      "n_nonfinite": len(present) - n,
      "n_missing": len(values) - len(present),
  }


def target_mode(metric: str) -> str:
  """"min" for loss-like metric names (lower is better), else "max"."""
  return "min" if any(word in metric.lower() for word in _LOWER_IS_BETTER) else "max"


def steps_to_target(run: SeedRun, metric: str, target: float, mode: str) -> int | None:
  """The first logged step whose `metric` ("split/name") reaches `target`, or None."""
  split, name = _split_metric(metric)
  for record in run.records:
    value = record.get(name) if record.get("split") == split else None
    if value is None or not math.isfinite(value):
      continue
    if (value >= target) if mode == "max" else (value <= target):
      return int(record["step"])
  return None


@dataclasses.dataclass
class Curve:
  """A metric vs step across seeds: mean and min–max band over the seeds logged at each step."""
  steps: np.ndarray
  mean: np.ndarray
  lo: np.ndarray
  hi: np.ndarray
  n: np.ndarray          # seeds contributing a finite value at each step


def curve(runs: Iterable[SeedRun], split: str, name: str) -> Curve | None:
  """The across-seed curve of `name` in `split`, or None when no seed logged it."""
  per_seed = []
  for run in runs:
    points = {int(r["step"]): _as_float(r[name]) for r in run.records
              if r.get("split") == split and r.get(name) is not None}
    if points:
      per_seed.append(points)
  if not per_seed:
    return None
  steps = np.asarray(sorted(set().union(*per_seed)), dtype=np.int64)
  table = np.full((len(per_seed), steps.size), np.nan)
  for i, points in enumerate(per_seed):
    for j, step in enumerate(steps):
      table[i, j] = points.get(int(step), np.nan)
  table[~np.isfinite(table)] = np.nan
  n = np.sum(np.isfinite(table), axis=0)
  keep = n > 0
  table, steps, n = table[:, keep], steps[keep], n[keep]
  return Curve(steps=steps, mean=np.nanmean(table, axis=0), lo=np.nanmin(table, axis=0),
               hi=np.nanmax(table, axis=0), n=n)


def metric_names(runs: Iterable[SeedRun], split: str) -> list[str]:
  """Metric names logged in `split` by any of `runs`, in first-seen order."""
  names = {}
  for run in runs:
    for record in run.records:
      if record.get("split") == split:
        names.update({k: None for k in record if k not in ("step", "split")})
  return list(names)


def diagnostics(runs: Iterable[SeedRun], notes: list[str]) -> dict[str, Any] | None:
  """Across-seed mean/min/max of each per-stage init diagnostic, or None without any."""
  found = [(run, run.diagnostics) for run in runs if run.diagnostics]
  if not found:
    return None
  stages = list(found[0][1].get("stages") or [])
  out = {"stages": stages, "n_seeds": len(found)}
  for key in DIAGNOSTIC_KEYS:
    arrays = []
    for run, diag in found:
      if key not in diag:
        continue
      try:
        array = np.asarray([_as_float(metrics_lib.decode_json_value(v)) for v in diag[key]])
      except (TypeError, ValueError):
        notes.append(f"{run.scheme}/seed_{run.seed}: init_diagnostics {key!r} is not a list "
                     "of numbers; ignored")
        continue
      arrays.append(array)
    if not arrays:
      continue
    if len({a.size for a in arrays}) != 1:
      notes.append(f"{found[0][0].scheme}: init_diagnostics {key!r} has different lengths "
                   "across seeds; ignored")
      continue
    table = np.stack(arrays)
    table[~np.isfinite(table)] = np.nan
    out[key] = {"mean": _nan_reduce(np.nanmean, table), "min": _nan_reduce(np.nanmin, table),
                "max": _nan_reduce(np.nanmax, table)}
  return out


def _nan_reduce(fn, table: np.ndarray) -> list[float]:
  """`fn` over seeds (axis 0); all-NaN columns give NaN without a warning."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return [float(v) for v in fn(table, axis=0)]


def _split_metric(metric: str) -> tuple[str, str]:
  split, sep, name = metric.partition("/")
  if not sep or split not in metrics_lib.SPLITS:
    raise ValueError(f"target_metric={metric!r}: expected 'split/name' with split in "
                     f"{metrics_lib.SPLITS}, e.g. 'eval/accuracy'")
  return split, name


def _as_float(value: Any) -> float:
  return math.nan if value is None else float(value)
