"""Renders `build_report`'s results as report.md."""
from __future__ import annotations

import math
from typing import Any, Mapping

from initlab.train import metrics as metrics_lib

# (final metric, column title) shown in the results table when some scheme has it.
TABLE_METRICS = (("eval/accuracy", "eval accuracy"), ("eval/loss", "eval loss"),
                 ("train/loss", "final train loss"))
_DASH = "—"


def format_stat(stat: Mapping[str, Any] | None, n_seeds: int) -> str:
  """`mean ± std`, with the seed count when some seeds lack a finite value."""
  if stat is None:
    return _DASH
  if stat["n"] == 0:
    return f"nan (0/{n_seeds} finite)"
  text = f"{stat['mean']:.4g} ± {stat['std']:.4g}"
  if stat["n"] < n_seeds:
    extra = f", {stat['n_nonfinite']} non-finite" if stat["n_nonfinite"] else ""
    text += f" (n={stat['n']}{extra})"
  return text


def format_steps(stat: Mapping[str, Any] | None, n_seeds: int) -> str:
  """Steps to target: `mean ± std (k/n reached)`."""
  if stat is None:
    return _DASH
  if stat["n"] == 0:
    return f"not reached (0/{n_seeds})"
  return f"{stat['mean']:.0f} ± {stat['std']:.0f} ({stat['n']}/{n_seeds} reached)"


def target_title(target: Mapping[str, Any]) -> str:
  op = "≥" if target["mode"] == "max" else "≤"
  return f"steps to {target['metric']} {op} {target['value']:g}"


def render(results: Mapping[str, Any], config: Mapping[str, Any] | None) -> str:
  """The whole report.md text."""
  schemes = results["schemes"]
  target = results.get("target")
  present = {name for s in schemes.values() for name in s["aggregate"]}
  columns = [(m, t) for m, t in TABLE_METRICS if m in present]
  header = ["scheme", "seeds"] + [t for _, t in columns]
  if target:
    header.insert(2 + sum(m.startswith("eval/") for m, _ in columns), target_title(target))
  lines = [f"# {results['title']}", "",
           f"Study: `{results['study_dir']}` — {len(schemes)} scheme(s), "
           f"seeds {results['seeds']}.", "", "## Results", "", _row(header),
           _row(["---"] * len(header))]
  for name, scheme in schemes.items():
    n = scheme["n_seeds"]
    seeds = str(n) + (f" (missing {scheme['missing_seeds']})" if scheme["missing_seeds"] else "")
    cells = [name, seeds] + [format_stat(scheme["aggregate"].get(m), n) for m, _ in columns]
    if target:
      cells.insert(2 + sum(m.startswith("eval/") for m, _ in columns),
                   format_steps(scheme["aggregate"].get("steps_to_target"), n))
    lines.append(_row(cells))
  lines += ["", f"Mean ± sample std (ddof={results['std_ddof']}) over seeds; a diverged seed "
            "(non-finite value) is left out of the mean and counted. Every final metric is in "
            "`results.json`.", ""]
  lines += _per_seed_table(schemes, [m for m, _ in columns])
  if results["plots"]:
    lines += ["## Plots", ""]
    for key, filename in results["plots"].items():
      lines += [f"![{key}]({filename})", ""]
  if results["notes"]:
    lines += ["## Notes", ""] + [f"- {note}" for note in results["notes"]] + [""]
  if config is not None:
    lines += ["<details><summary>config.json</summary>", "", "```json",
              metrics_lib.dumps(config, indent=2, sort_keys=True), "```", "", "</details>", ""]
  return "\n".join(lines)


def _per_seed_table(schemes: Mapping[str, Any], metrics: list[str]) -> list[str]:
  header = ["scheme", "seed"] + metrics + ["steps", "wall_s"]
  lines = ["<details><summary>Per-seed finals</summary>", "", _row(header),
           _row(["---"] * len(header))]
  for name, scheme in schemes.items():
    for seed in scheme["seeds"]:
      cells = [name, str(seed["seed"])] + [_number(seed["final"].get(m)) for m in metrics]
      cells += [_number(seed["steps"]), _number(seed["wall_s"])]
      lines.append(_row(cells))
  return lines + ["", "</details>", ""]


def _number(value: Any) -> str:
  if value is None:
    return _DASH
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def _row(cells: list[str]) -> str:
  return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
