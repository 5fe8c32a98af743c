"""Reads a study directory as the training loop writes it.

    study_dir/config.json                            the study's config (optional)
    study_dir/runs/<scheme>/seed_<k>/metrics.jsonl   MetricWriter records
    study_dir/runs/<scheme>/seed_<k>/summary.json    {"final": {...}, "steps": N, "wall_s": t}
    study_dir/runs/<scheme>/seed_<k>/init_diagnostics.json
        {"stages": [...], "q": [...], "c": [...], "grad_var": [...], "jac_sv": [...]}

Everything but the run directories is optional; what is missing or unreadable becomes a note.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from typing import Any

from initlab.train import metrics as metrics_lib

RUNS_DIR = "runs"
_SEED_DIR = re.compile(r"^seed_(\d+)$")


@dataclasses.dataclass
class SeedRun:
  """One seed's files, as read."""
  scheme: str
  seed: int
  path: pathlib.Path
  records: list[dict]                     # metrics.jsonl, de-duplicated, sorted by step
  summary: dict[str, Any] | None = None
  diagnostics: dict[str, Any] | None = None


@dataclasses.dataclass
class Study:
  """All readable runs of a study, by scheme then seed, plus what could not be read."""
  study_dir: pathlib.Path
  config: dict[str, Any] | None
  runs: dict[str, dict[int, SeedRun]]     # scheme -> seed -> run; a scheme may have no seeds
  notes: list[str]

  @property
  def seeds(self) -> list[int]:
    """Every seed index that some scheme has."""
    return sorted({seed for by_seed in self.runs.values() for seed in by_seed})

  def missing_seeds(self, scheme: str) -> list[int]:
    return [s for s in self.seeds if s not in self.runs[scheme]]


def load_study(study_dir: str | pathlib.Path) -> Study:
  """Reads every `runs/<scheme>/seed_<k>/` of `study_dir`.

  Raises:
    FileNotFoundError: naming the path, when there is no run directory with a metrics.jsonl or
      summary.json under `study_dir/runs`.
  """
  study_dir = pathlib.Path(study_dir)
  runs_dir = study_dir / RUNS_DIR
  notes = []
  config = _read_json(study_dir / "config.json", notes, missing_ok=True)
  if config is None:
    notes.append(f"no readable config.json in {study_dir}")
  runs = {}
  if runs_dir.is_dir():
    for scheme_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
      runs[scheme_dir.name] = _load_scheme(scheme_dir, notes)
  if not any(runs.values()):
    raise FileNotFoundError(
        f"no runs found under {runs_dir}: expected "
        f"{runs_dir}/<scheme>/seed_<k>/metrics.jsonl (or summary.json)")
  return Study(study_dir=study_dir, config=config, runs=runs, notes=notes)


def _load_scheme(scheme_dir: pathlib.Path, notes: list[str]) -> dict[int, SeedRun]:
  by_seed = {}
  for seed_dir in sorted(p for p in scheme_dir.iterdir() if p.is_dir()):
    match = _SEED_DIR.match(seed_dir.name)
    if match is None:
      continue
    run = _load_seed(scheme_dir.name, int(match.group(1)), seed_dir, notes)
    if run is not None:
      by_seed[run.seed] = run
  if not by_seed:
    notes.append(f"scheme {scheme_dir.name!r}: no readable seed_<k> runs in {scheme_dir}")
  return dict(sorted(by_seed.items()))


def _load_seed(scheme: str, seed: int, path: pathlib.Path, notes: list[str]) -> SeedRun | None:
  """A SeedRun, or None (with a note) when it has neither readable metrics nor a summary."""
  records = []
  metrics_path = path / metrics_lib.JSONL_NAME
  if metrics_path.exists():
    try:
      records = metrics_lib.dedupe_steps(metrics_lib.read_jsonl(metrics_path))
    except (OSError, ValueError) as e:
      notes.append(f"{scheme}/seed_{seed}: unreadable {metrics_lib.JSONL_NAME} ({e})")
  summary = _read_json(path / "summary.json", notes, missing_ok=True)
  diagnostics = _read_json(path / "init_diagnostics.json", notes, missing_ok=True)
  if not records and summary is None:
    notes.append(f"{scheme}/seed_{seed}: no metrics records and no summary.json in {path}; "
                 "left out")
    return None
  return SeedRun(scheme=scheme, seed=seed, path=path, records=records, summary=summary,
                 diagnostics=diagnostics)


def _read_json(path: pathlib.Path, notes: list[str], missing_ok: bool) -> dict | None:
  if not path.exists():
    if not missing_ok:
      notes.append(f"missing {path}")
    return None
  try:
    value = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    notes.append(f"unreadable {path} ({e}); ignored")
    return None
  if not isinstance(value, dict):
    notes.append(f"{path}: expected a JSON object, got {type(value).__name__}; ignored")
    return None
  return value
