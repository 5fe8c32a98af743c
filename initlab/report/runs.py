"""Reads what training wrote: a study's workdir or a single run's (layout: `initlab.rundir`).

    study:   <workdir>/config.json, <workdir>/runs/<scheme>/seed_<k>/{metrics.jsonl, ...}
    one run: <workdir>/{config.json, metrics.jsonl, summary.json, init_diagnostics.json}

init_diagnostics.json is read only through `initlab.diagnostics.Diagnostics.from_dict`, the
class that writes it. Everything but metrics.jsonl or summary.json is optional; what is missing
or unreadable becomes a note.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Sequence

from initlab import rundir
from initlab.diagnostics.propagation import Diagnostics


@dataclasses.dataclass
class SeedRun:
  """One seed's files, as read."""

  scheme: str
  seed: int
  path: pathlib.Path
  records: list[dict]  # metrics.jsonl, de-duplicated, sorted by step
  summary: dict[str, Any] | None = None
  diagnostics: Diagnostics | None = None
  # A GNN run's per-layer variance ratios at init ({'forward', 'backward'}: (L,) lists,
  # init_diagnostics.json 'gnn_ratios', `initlab.diagnostics.gnn.ratios`), else None.
  gnn_ratios: dict[str, list[float]] | None = None


@dataclasses.dataclass
class Study:
  """All readable runs of a workdir, by scheme (config order) then seed, plus notes."""

  study_dir: pathlib.Path
  config: dict[str, Any] | None
  runs: dict[str, dict[int, SeedRun]]  # scheme -> seed -> run; a scheme may have no seeds
  notes: list[str]
  single_run: bool = False  # the workdir is one run, not a study

  @property
  def seeds(self) -> list[int]:
    """Every seed index that some scheme has."""
    return sorted({seed for by_seed in self.runs.values() for seed in by_seed})

  def missing_seeds(self, scheme: str) -> list[int]:
    return [s for s in self.seeds if s not in self.runs[scheme]]


def config_schemes(config: dict[str, Any] | None) -> list[str]:
  """The schemes a config.json runs, in its order: `init.compare`, else `[init.name]`."""
  init = (config or {}).get('init') or {}
  compare = list(init.get('compare') or ())
  return compare or ([init['name']] if init.get('name') else [])


def load_study(
  workdir: str | pathlib.Path, runs: Sequence[str | os.PathLike] | None = None
) -> Study:
  """Reads a study's run directories, or `workdir` itself when it is a single run.

  Args:
    workdir: the study's (or the run's) directory.
    runs: the run directories that belong to the current config (`runs/<scheme>/seed_<k>`),
      in the config's order; every other run directory on disk is left out with a "stale"
      note. None: every `runs/<scheme>/seed_<k>/`, schemes in the order of the config's
      `init.compare` (schemes the config does not name follow, with a note).

  Raises:
    FileNotFoundError: naming the paths looked at, when there is no readable run.
  """
  workdir = pathlib.Path(workdir).resolve()
  notes = []
  config = _read_json(workdir / rundir.CONFIG, notes)
  if config is None:
    notes.append(f'no readable {rundir.CONFIG} in {workdir}')
  runs_dir = workdir / rundir.RUNS
  if runs is None and not runs_dir.is_dir() and _has_run_files(workdir):
    name = (config_schemes(config) or [workdir.name])[0]
    run = _load_seed(name, 0, workdir, notes)
    return Study(
      study_dir=workdir, config=config, runs={name: {0: run}}, notes=notes, single_run=True
    )
  on_disk = {path.resolve(): (scheme, seed) for scheme, seed, path in rundir.study_runs(workdir)}
  if runs is None:
    order = [s for s in config_schemes(config) if s in {v[0] for v in on_disk.values()}]
    extra = sorted({s for s, _ in on_disk.values()} - set(order))
    if config is not None and extra:
      notes.append(f"scheme(s) {extra} have runs but are not in the config's init.compare")
    wanted = sorted(on_disk.items(), key=lambda kv: ((order + extra).index(kv[1][0]), kv[1][1]))
  else:
    wanted = []
    for path in map(lambda p: pathlib.Path(p).resolve(), runs):
      match = rundir.SEED_DIR.match(path.name)
      if match is None:
        raise ValueError(f'runs: {path} is not a <scheme>/seed_<k> run directory')
      wanted.append((path, (path.parent.name, int(match.group(1)))))
    listed = {path for path, _ in wanted}
    for path, (scheme, seed) in on_disk.items():
      if path not in listed:
        notes.append(f'stale: {scheme}/seed_{seed} is not part of this config (left out)')
  found: dict[str, dict[int, SeedRun]] = {}
  for path, (scheme, seed) in wanted:
    by_seed = found.setdefault(scheme, {})
    if _has_run_files(path):
      by_seed[seed] = _load_seed(scheme, seed, path, notes)
    else:
      notes.append(
        f'{scheme}/seed_{seed}: no {rundir.METRICS} and no {rundir.SUMMARY} in {path}; left out'
      )
  for scheme, by_seed in found.items():
    if not by_seed:
      notes.append(f'scheme {scheme!r}: no readable seed_<k> runs')
  if not any(found.values()):
    raise FileNotFoundError(
      f'no runs found under {runs_dir}: expected {runs_dir}/<scheme>/seed_<k>/'
      f"{rundir.METRICS} (or {rundir.SUMMARY}), or a single run's {workdir}/{rundir.METRICS}"
    )
  return Study(
    study_dir=workdir,
    config=config,
    runs={k: dict(sorted(v.items())) for k, v in found.items()},
    notes=notes,
  )


def _has_run_files(path: pathlib.Path) -> bool:
  return (path / rundir.METRICS).exists() or (path / rundir.SUMMARY).exists()


def _load_seed(scheme: str, seed: int, path: pathlib.Path, notes: list[str]) -> SeedRun:
  records = []
  if (path / rundir.METRICS).exists():
    try:
      records = rundir.dedupe_steps(rundir.read_jsonl(path / rundir.METRICS))
    except (OSError, ValueError) as e:
      notes.append(f'{scheme}/seed_{seed}: unreadable {rundir.METRICS} ({e})')
  summary = _read_json(path / rundir.SUMMARY, notes)
  diagnostics = None
  raw = _read_json(path / rundir.DIAGNOSTICS, notes)
  if raw is not None:
    try:
      diagnostics = Diagnostics.from_dict(raw)
    except (KeyError, TypeError, ValueError) as e:
      notes.append(
        f'{scheme}/seed_{seed}: {rundir.DIAGNOSTICS} is not a Diagnostics.to_dict() '
        f'({type(e).__name__}: {e}); ignored'
      )
  ratios = raw.get('gnn_ratios') if diagnostics is not None else None
  return SeedRun(
    scheme=scheme,
    seed=seed,
    path=path,
    records=records,
    summary=summary,
    diagnostics=diagnostics,
    gnn_ratios=ratios if isinstance(ratios, dict) else None,
  )


def _read_json(path: pathlib.Path, notes: list[str]) -> dict | None:
  if not path.exists():
    return None
  try:
    value = rundir.read_json(path)
  except (OSError, ValueError) as e:
    notes.append(f'unreadable {path} ({e}); ignored')
    return None
  if not isinstance(value, dict):
    notes.append(f'{path}: expected a JSON object, got {type(value).__name__}; ignored')
    return None
  return value
