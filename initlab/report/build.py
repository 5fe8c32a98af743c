"""`build_report`: a study's (or one run's) workdir in, report.md + results.json + PNGs out."""

from __future__ import annotations

import math
import os
import pathlib
from typing import Any, Sequence

from initlab import rundir
from initlab.diagnostics import plots as diag_plots
from initlab.report import aggregate
from initlab.report import markdown
from initlab.report import plots
from initlab import provenance as provenance_lib
from initlab.report.runs import Study, load_study

INIT_VARIANCE_PNG = 'init_variance.png'
JACOBIAN_PNG = 'jacobian_spectrum.png'
_PRIMARY_FALLBACK = ('eval/accuracy', 'eval/loss', 'train/loss')


def build_report(
  workdir: str | os.PathLike,
  out_dir: str | os.PathLike | None = None,
  *,
  target: float | None = None,
  target_metric: str | None = None,
  curve_metrics: Sequence[str] = ('loss', 'accuracy'),
  runs: Sequence[str | os.PathLike] | None = None,
) -> dict[str, Any]:
  """Aggregates a study's runs (or one run) into a report comparing schemes across seeds.

  Reads `workdir/runs/<scheme>/seed_<k>/` of a study, or `workdir` itself when it is a single
  run (`initlab.report.runs`), and writes to `out_dir` (default `workdir`): `report.md`,
  `results.json` (the returned dict; non-finite floats as "nan"/"inf" strings), `<metric>.png`
  for each of `curve_metrics` that was logged, and with init diagnostics `init_variance.png`
  and `jacobian_spectrum.png`.

  Args:
    workdir: the study's or the run's directory (a relative path is resolved now).
    out_dir: where to write; created if needed.
    target: report the steps each seed needed to reach this value of `target_metric`. Default:
      config.json's `report.target`, else no steps-to-target column.
    target_metric: "split/name"; default config.json's `report.target_metric`, else
      "eval/accuracy". Loss-like names (loss, error, perplexity) count as reached at <= target.
      Its final value also ranks the schemes (else eval/accuracy, eval/loss, train/loss).
    curve_metrics: metric names (without split) to plot vs step.
    runs: the run directories of the current config, in its order (`run_study` passes them);
      other run directories on disk are left out and noted as stale. None: all of them.

  Returns:
    {"title", "study_dir", "out_dir", "single_run", "seeds", "std_ddof", "confidence",
    "target", "eval_every", "eval_examples", "primary": {"metric", "mode"}, "comparison":
    `aggregate.compare_schemes` of the primary metric, "schemes": {scheme: {"n_seeds",
    "missing_seeds", "seeds": [{"seed", "final", "steps", "wall_s", ["steps_to_target"]}],
    "aggregate": {metric: `aggregate.stats`}, "init_diagnostics"}}, "provenance", "plots":
    {key: png file name}, "notes": [str]}.

  Raises:
    FileNotFoundError: naming the paths, when `workdir` holds no run at all.
  """
  study = load_study(pathlib.Path(workdir).resolve(), runs)
  out_dir = pathlib.Path(study.study_dir if out_dir is None else out_dir).resolve()
  out_dir.mkdir(parents=True, exist_ok=True)
  config = study.config or {}
  report_config = config.get('report') if isinstance(config.get('report'), dict) else {}
  if target is None:
    target = report_config.get('target')
  target_metric = target_metric or report_config.get('target_metric') or 'eval/accuracy'
  notes = list(study.notes)
  all_runs = [run for by_seed in study.runs.values() for run in by_seed.values()]

  results = {
    'title': str(config.get('name') or f'Report: {study.study_dir.name}'),
    'study_dir': str(study.study_dir),
    'out_dir': str(out_dir),
    'single_run': study.single_run,
    'seeds': study.seeds,
    'std_ddof': aggregate.STD_DDOF,
    'confidence': aggregate.CONFIDENCE,
    'target': None,
    'eval_every': aggregate.eval_every(all_runs, config),
    'eval_examples': _eval_examples(all_runs, notes),
    'schemes': {},
    'provenance': _provenance(all_runs, notes),
    'plots': {},
    'notes': notes,
  }
  if target is not None:
    results['target'] = {
      'metric': target_metric,
      'value': float(target),
      'mode': aggregate.target_mode(target_metric),
    }
  for scheme, by_seed in study.runs.items():
    missing = study.missing_seeds(scheme)
    if missing and by_seed:
      notes.append(f'scheme {scheme!r}: missing seed(s) {missing}')
    results['schemes'][scheme] = _scheme_results(
      list(by_seed.values()), missing, results['target'], notes
    )
  present = {m for s in results['schemes'].values() for m in s['aggregate']}
  primary = next((m for m in (target_metric, *_PRIMARY_FALLBACK) if m in present), None)
  results['primary'] = primary and {'metric': primary, 'mode': aggregate.target_mode(primary)}
  results['comparison'] = primary and aggregate.compare_schemes(
    {
      name: {s['seed']: s['final'].get(primary, math.nan) for s in scheme['seeds']}
      for name, scheme in results['schemes'].items()
      if scheme['seeds']
    },
    results['primary']['mode'],
  )

  _plot(study, results, out_dir, curve_metrics)
  (out_dir / rundir.RESULTS).write_text(rundir.dumps(results, indent=2) + '\n', encoding='utf-8')
  (out_dir / rundir.REPORT).write_text(markdown.render(results, study.config), encoding='utf-8')
  return results


def _plot(study: Study, results: dict, out_dir: pathlib.Path, curve_metrics) -> None:
  colors = plots.scheme_colors(list(study.runs))
  for metric in curve_metrics:
    curves = {}
    for scheme, by_seed in study.runs.items():
      by_split = {
        split: aggregate.curve(by_seed.values(), split, metric) for split in rundir.SPLITS
      }
      by_split = {k: v for k, v in by_split.items() if v is not None}
      if by_split:
        curves[scheme] = by_split
    if curves:
      filename = f'{_safe_name(metric)}.png'
      plots.plot_curves(curves, metric, out_dir / filename, colors)
      results['plots'][metric] = filename
    else:
      results['notes'].append(f'no run logged {metric!r}: no {metric} plot')
  diagnostics = {
    s: r['init_diagnostics'] for s, r in results['schemes'].items() if r['init_diagnostics']
  }
  if diagnostics and plots.plot_init_variance(diagnostics, out_dir / INIT_VARIANCE_PNG, colors):
    results['plots']['init_variance'] = INIT_VARIANCE_PNG
  spectra = {s: d['jacobian_sv'] for s, d in diagnostics.items() if d['jacobian_sv']}
  if spectra:
    diag_plots.plot_jacobian_spectrum(
      spectra,
      str(out_dir / JACOBIAN_PNG),
      'input–output Jacobian singular values at init (all seeds pooled)',
    )
    results['plots']['jacobian_spectrum'] = JACOBIAN_PNG


def _scheme_results(
  runs: list, missing: list[int], target: dict | None, notes: list[str]
) -> dict[str, Any]:
  seeds = []
  for run in runs:
    entry = {
      'seed': run.seed,
      'final': aggregate.final_metrics(run),
      'steps': aggregate.run_steps(run),
      'wall_s': (run.summary or {}).get('wall_s'),
    }
    if target is not None:
      entry['steps_to_target'] = aggregate.steps_to_target(
        run, target['metric'], target['value'], target['mode']
      )
    seeds.append(entry)
  names = sorted({name for s in seeds for name in s['final']})
  stats = {name: aggregate.stats([s['final'].get(name) for s in seeds]) for name in names}
  if target is not None and seeds:
    stats['steps_to_target'] = aggregate.stats([s['steps_to_target'] for s in seeds])
  return {
    'n_seeds': len(seeds),
    'missing_seeds': missing,
    'seeds': seeds,
    'aggregate': stats,
    'init_diagnostics': aggregate.diagnostics(runs, notes),
  }


def _eval_examples(runs: list, notes: list[str]) -> int | None:
  """summary.json's "eval_examples" (the same for every run, else a note); None if absent."""
  found = {
    int(r.summary['eval_examples'])
    for r in runs
    if (r.summary or {}).get('eval_examples') is not None
  }
  if len(found) > 1:
    notes.append(f'runs were evaluated on different numbers of examples: {sorted(found)}')
  return min(found) if found else None


def _provenance(runs: list, notes: list[str]) -> dict[str, Any]:
  """The runs' summary.json "provenance" (notes where they differ), else this process's."""
  recorded = [
    r.summary['provenance'] for r in runs if isinstance((r.summary or {}).get('provenance'), dict)
  ]
  if not recorded:
    return {'source': 'report', **provenance_lib.environment()}
  for key in provenance_lib.KEYS:
    values = sorted({str(p.get(key)) for p in recorded})
    if len(values) > 1:
      notes.append(f'runs differ in provenance {key!r}: {values}')
  return {'source': 'runs', **recorded[0]}


def _safe_name(name: str) -> str:
  return ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)
