"""Numbers of a study: per-seed finals, mean ± std and 95% CI over seeds, paired comparisons
of schemes across seeds, steps to target, curves, init diagnostics.

Statistics skip non-finite values (a diverged seed) and count them instead; std is the sample
standard deviation (ddof=1), NaN ("n/a") for a single seed. Confidence intervals are Student-t
intervals of the mean; schemes are compared with a paired t-test on the per-seed differences
(seed k of every scheme shares its data order), `scipy.stats.ttest_rel`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats as sp_stats

from initlab import rundir
from initlab.report.runs import SeedRun

STD_DDOF = 1
CONFIDENCE = 0.95
ALPHA = 0.05
DIAGNOSTIC_KEYS = ('q', 'c', 'grad_q', 'grad_var')
_LOWER_IS_BETTER = ('loss', 'error', 'perplexity', 'ppl', 'nll')


def final_metrics(run: SeedRun) -> dict[str, float]:
  """`split/name` -> last logged value, overridden by summary.json's "final" entries."""
  finals = {}
  for record in run.records:
    for name, value in record.items():
      if name not in ('step', 'split'):
        finals[f'{record["split"]}/{name}'] = _as_float(value)
  summary_finals = (run.summary or {}).get('final') or {}
  if isinstance(summary_finals, Mapping):
    finals.update({k: _as_float(rundir.decode_value(v)) for k, v in summary_finals.items()})
  return finals


def run_steps(run: SeedRun) -> int | None:
  """Training steps of the run: summary.json's "steps", else the last logged step."""
  steps = (run.summary or {}).get('steps')
  if steps is not None:
    return int(steps)
  return max((int(r['step']) for r in run.records), default=None)


def stats(values: Sequence[float | None]) -> dict[str, Any]:
  """mean/std/min/max and the 95% CI of the mean over the finite values; n, n_nonfinite and
  n_missing (None) counted. std and the CI are NaN for fewer than two finite values."""
  present = [v for v in values if v is not None]
  finite = np.asarray([v for v in present if math.isfinite(v)], dtype=np.float64)
  n = int(finite.size)
  mean = float(finite.mean()) if n else math.nan
  std = float(finite.std(ddof=STD_DDOF)) if n > 1 else math.nan
  half = t_half_width(std, n)
  return {
    'mean': mean,
    'std': std,
    'ci_lo': mean - half,
    'ci_hi': mean + half,
    'min': float(finite.min()) if n else math.nan,
    'max': float(finite.max()) if n else math.nan,
    'n': n,
    'n_nonfinite': len(present) - n,
    'n_missing': len(values) - len(present),
  }


def t_half_width(std: float, n: int, confidence: float = CONFIDENCE) -> float:
  """Half width t_{(1+confidence)/2, n-1} · std / √n of the Student-t CI; NaN for n < 2."""
  if n < 2 or not math.isfinite(std):
    return math.nan
  return float(sp_stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))


def paired_comparison(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any]:
  """Scheme b minus scheme a over the seeds where both are finite (pairs by seed index).

  Returns {"n", "mean_diff", "ci_lo", "ci_hi", "p"}: the mean per-seed difference, its 95%
  Student-t CI and the two-sided paired t-test p-value (`scipy.stats.ttest_rel`). With equal
  differences on every seed (zero spread) p is 0 if they are non-zero, else 1; with fewer than
  two pairs the CI and p are NaN.
  """
  seeds = sorted(s for s in a.keys() & b.keys() if math.isfinite(a[s]) and math.isfinite(b[s]))
  x = np.asarray([a[s] for s in seeds], np.float64)
  y = np.asarray([b[s] for s in seeds], np.float64)
  d = y - x
  n = int(d.size)
  out = {
    'n': n,
    'seeds': seeds,
    'mean_diff': float(d.mean()) if n else math.nan,
    'ci_lo': math.nan,
    'ci_hi': math.nan,
    'p': math.nan,
  }
  if n < 2:
    return out
  sd = float(d.std(ddof=1))
  half = t_half_width(sd, n)
  out.update(ci_lo=out['mean_diff'] - half, ci_hi=out['mean_diff'] + half)
  if sd <= 1e-12 * abs(out['mean_diff']) or sd == 0:  # no spread (up to rounding)
    out['p'] = 0.0 if out['mean_diff'] != 0 else 1.0
  else:
    out['p'] = float(sp_stats.ttest_rel(y, x).pvalue)
  return out


def compare_schemes(per_seed: Mapping[str, Mapping[int, float]], mode: str) -> dict[str, Any]:
  """Ranks schemes by their mean (best first; `mode` "max" or "min") and compares each with
  the best one by `paired_comparison` (difference = scheme − best).

  Args:
    per_seed: scheme -> {seed: final value} (non-finite values allowed, left out).
    mode: "max" if higher is better, else "min".

  Returns:
    {"ranking": [scheme, ...], "best": scheme or None, "vs_best": {scheme: comparison}}.
  """
  means = {s: stats(list(v.values()))['mean'] for s, v in per_seed.items()}
  ranked = sorted(
    (s for s in means if math.isfinite(means[s])),
    key=lambda s: -means[s] if mode == 'max' else means[s],
  )
  ranked += [s for s in means if s not in ranked]
  best = ranked[0] if ranked and math.isfinite(means[ranked[0]]) else None
  vs_best = (
    {s: paired_comparison(per_seed[best], per_seed[s]) for s in ranked[1:]}
    if best is not None
    else {}
  )
  return {'ranking': ranked, 'best': best, 'vs_best': vs_best}


def target_mode(metric: str) -> str:
  """ "min" for loss-like metric names (lower is better), else "max"."""
  return 'min' if any(word in metric.lower() for word in _LOWER_IS_BETTER) else 'max'


def steps_to_target(run: SeedRun, metric: str, target: float, mode: str) -> int | None:
  """The first logged step whose `metric` ("split/name") reaches `target`, or None."""
  split, name = _split_metric(metric)
  for record in run.records:
    value = record.get(name) if record.get('split') == split else None
    if value is None or not math.isfinite(value):
      continue
    if (value >= target) if mode == 'max' else (value <= target):
      return int(record['step'])
  return None


@dataclasses.dataclass
class Curve:
  """A metric vs step across seeds: mean and min–max band over the seeds logged at each step."""

  steps: np.ndarray
  mean: np.ndarray
  lo: np.ndarray
  hi: np.ndarray
  n: np.ndarray  # seeds contributing a finite value at each step


def curve(runs: Iterable[SeedRun], split: str, name: str) -> Curve | None:
  """The across-seed curve of `name` in `split`, or None when no seed logged it."""
  per_seed = []
  for run in runs:
    points = {
      int(r['step']): _as_float(r[name])
      for r in run.records
      if r.get('split') == split and r.get(name) is not None
    }
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
  return Curve(
    steps=steps,
    mean=np.nanmean(table, axis=0),
    lo=np.nanmin(table, axis=0),
    hi=np.nanmax(table, axis=0),
    n=n,
  )


def metric_names(runs: Iterable[SeedRun], split: str) -> list[str]:
  """Metric names logged in `split` by any of `runs`, in first-seen order."""
  names = {}
  for run in runs:
    for record in run.records:
      if record.get('split') == split:
        names.update({k: None for k in record if k not in ('step', 'split')})
  return list(names)


def eval_every(runs: Iterable[SeedRun], config: Mapping[str, Any] | None) -> int | None:
  """Steps between evaluations: config.json's train.eval_every, else the smallest gap
  between logged eval steps; None if unknown."""
  every = ((config or {}).get('train') or {}).get('eval_every')
  if every:
    return int(every)
  steps = [
    int(r['step'])
    for run in runs
    for r in run.records
    if r.get('split') == 'eval' and int(r['step']) > 0
  ]
  return min(steps) if steps else None  # the first evaluation happens at step eval_every


def diagnostics(runs: Iterable[SeedRun], notes: list[str]) -> dict[str, Any] | None:
  """Across-seed summary of the runs' init diagnostics (`Diagnostics`), or None without any.

  Returns {"stages", "n_seeds", "train" (mode, None if unknown or mixed), "jacobian_exact",
  key: {"mean", "min", "max"} over seeds per stage for each of DIAGNOSTIC_KEYS, "summary":
  {name: mean over seeds of `Diagnostics.summary()[name]`}, "jacobian_sv": every seed's
  singular values, pooled (a flat list)}; GNN runs add "gnn_ratios": {"forward", "backward"}:
  per-layer variance ratios at init (`SeedRun.gnn_ratios`), mean over seeds.
  """
  found = [(run, run.diagnostics) for run in runs if run.diagnostics is not None]
  if not found:
    return None
  first = found[0][1]
  same = [d for _, d in found if d.names == first.names]
  if len(same) < len(found):
    notes.append(
      f'{found[0][0].scheme}: init diagnostics with other stages than '
      f'{list(first.names)} ignored ({len(found) - len(same)} seed(s))'
    )
  modes = {d.train for d in same}
  out = {
    'stages': list(first.names),
    'n_seeds': len(same),
    'train': modes.pop() if len(modes) == 1 else None,
    'jacobian_exact': all(d.jacobian_exact for d in same),
  }
  for key in DIAGNOSTIC_KEYS:
    table = np.stack([np.asarray(getattr(d, key), np.float64) for d in same])
    table[~np.isfinite(table)] = np.nan
    out[key] = {
      'mean': _nan_reduce(np.nanmean, table),
      'min': _nan_reduce(np.nanmin, table),
      'max': _nan_reduce(np.nanmax, table),
    }
  summaries = [d.summary() for d in same]
  out['summary'] = {
    k: _nan_reduce(np.nanmean, np.asarray([[float(s[k])] for s in summaries]))[0]
    for k in summaries[0]
    if k != 'jacobian_exact'
  }
  sv = [np.asarray(d.jacobian_sv, np.float64).ravel() for d in same]
  out['jacobian_sv'] = [float(v) for v in np.concatenate(sv)]
  ratios = [run.gnn_ratios for run, d in found if d.names == first.names and run.gnn_ratios]
  if ratios and len(ratios) == len(same):
    out['gnn_ratios'] = {
      k: _nan_reduce(np.nanmean, np.asarray([r[k] for r in ratios], np.float64))
      for k in ('forward', 'backward')
    }
  return out


def _nan_reduce(fn, table: np.ndarray) -> list[float]:
  """`fn` over seeds (axis 0); all-NaN columns give NaN without a warning."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    return [float(v) for v in fn(table, axis=0)]


def _split_metric(metric: str) -> tuple[str, str]:
  split, sep, name = metric.partition('/')
  if not sep or split not in rundir.SPLITS:
    raise ValueError(
      f"target_metric={metric!r}: expected 'split/name' with split in "
      f"{rundir.SPLITS}, e.g. 'eval/accuracy'"
    )
  return split, name


def _as_float(value: Any) -> float:
  return math.nan if value is None else float(value)
