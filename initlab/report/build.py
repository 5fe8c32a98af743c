"""`build_report`: a study directory in, report.md + results.json + PNG plots out."""
from __future__ import annotations

import os
import pathlib
from typing import Any, Sequence

from initlab.report import aggregate
from initlab.report import markdown
from initlab.report import plots
from initlab.report.study import load_study
from initlab.train import metrics as metrics_lib

REPORT_NAME = "report.md"
RESULTS_NAME = "results.json"
INIT_VARIANCE_PNG = "init_variance.png"


def build_report(study_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                 target: float | None = None, target_metric: str | None = None,
                 curve_metrics: Sequence[str] = ("loss", "accuracy")) -> dict[str, Any]:
  """Aggregates every run of a study into a report comparing its schemes across seeds.

  Reads `study_dir/runs/<scheme>/seed_<k>/` (see `initlab.report.study`) and writes to `out_dir`
  (default `study_dir`): `report.md` (results table, per-seed finals, plots, notes), `results.json`
  (the returned dict; non-finite floats as "nan"/"inf" strings) and `<metric>.png` for each of
  `curve_metrics` that was logged, plus `init_variance.png` when init diagnostics exist.

  Args:
    study_dir: the study's directory.
    out_dir: where to write; created if needed.
    target: report the steps each seed needed to reach this value of `target_metric`. Default:
      config.json's `report.target`, else no steps-to-target column.
    target_metric: "split/name"; default config.json's `report.target_metric`, else
      "eval/accuracy". Loss-like names (loss, error, perplexity) count as reached at <= target.
    curve_metrics: metric names (without split) to plot vs step.

  Returns:
    {"title", "study_dir", "out_dir", "seeds", "std_ddof", "target", "schemes": {scheme:
    {"n_seeds", "missing_seeds", "seeds": [{"seed", "final", "steps", "wall_s",
    ["steps_to_target"]}], "aggregate": {metric: {"mean", "std", "min", "max", "n",
    "n_nonfinite", "n_missing"}}, "init_diagnostics"}}, "plots": {key: png file name},
    "notes": [str]}.

  Raises:
    FileNotFoundError: naming the runs directory, when the study has no runs at all.
  """
  study = load_study(study_dir)
  out_dir = pathlib.Path(study.study_dir if out_dir is None else out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  config = study.config or {}
  report_config = config.get("report") if isinstance(config.get("report"), dict) else {}
  if target is None:
    target = report_config.get("target")
  target_metric = target_metric or report_config.get("target_metric") or "eval/accuracy"
  notes = list(study.notes)

  results = {
      "title": str(config.get("name") or f"Study report: {study.study_dir.name}"),
      "study_dir": str(study.study_dir),
      "out_dir": str(out_dir),
      "seeds": study.seeds,
      "std_ddof": aggregate.STD_DDOF,
      "target": None,
      "schemes": {},
      "plots": {},
      "notes": notes,
  }
  if target is not None:
    results["target"] = {"metric": target_metric, "value": float(target),
                         "mode": aggregate.target_mode(target_metric)}
  for scheme, by_seed in study.runs.items():
    missing = study.missing_seeds(scheme)
    if missing and by_seed:
      notes.append(f"scheme {scheme!r}: missing seed(s) {missing}")
    results["schemes"][scheme] = _scheme_results(list(by_seed.values()), missing,
                                                 results["target"], notes)

  colors = plots.scheme_colors(list(study.runs))
  for metric in curve_metrics:
    curves = {}
    for scheme, by_seed in study.runs.items():
      by_split = {split: aggregate.curve(by_seed.values(), split, metric)
                  for split in metrics_lib.SPLITS}
      by_split = {k: v for k, v in by_split.items() if v is not None}
      if by_split:
        curves[scheme] = by_split
    if curves:
      filename = f"{_safe_name(metric)}.png"
      plots.plot_curves(curves, metric, out_dir / filename, colors)
      results["plots"][metric] = filename
    else:
      notes.append(f"no run logged {metric!r}: no {metric} plot")
  diagnostics = {s: r["init_diagnostics"] for s, r in results["schemes"].items()
                 if r["init_diagnostics"]}
  if diagnostics and plots.plot_init_variance(diagnostics, out_dir / INIT_VARIANCE_PNG, colors):
    results["plots"]["init_variance"] = INIT_VARIANCE_PNG

  (out_dir / RESULTS_NAME).write_text(metrics_lib.dumps(results, indent=2) + "\n",
                                      encoding="utf-8")
  (out_dir / REPORT_NAME).write_text(markdown.render(results, study.config), encoding="utf-8")
  return results


def _scheme_results(runs: list, missing: list[int], target: dict | None,
                    notes: list[str]) -> dict[str, Any]:
  seeds = []
  for run in runs:
    entry = {"seed": run.seed, "final": aggregate.final_metrics(run),
             "steps": aggregate.run_steps(run), "wall_s": (run.summary or {}).get("wall_s")}
    if target is not None:
      entry["steps_to_target"] = aggregate.steps_to_target(run, target["metric"],
                                                           target["value"], target["mode"])
    seeds.append(entry)
  names = sorted({name for s in seeds for name in s["final"]})
  stats = {name: aggregate.stats([s["final"].get(name) for s in seeds]) for name in names}
  if target is not None and seeds:
    stats["steps_to_target"] = aggregate.stats([s["steps_to_target"] for s in seeds])
  return {"n_seeds": len(seeds), "missing_seeds": missing, "seeds": seeds, "aggregate": stats,
          "init_diagnostics": aggregate.diagnostics(runs, notes)}


def _safe_name(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)

