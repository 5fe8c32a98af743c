"""Study plots as PNG files, drawn on matplotlib's Agg canvas.

Figures are built with `matplotlib.figure.Figure` directly, never through pyplot, so making a
report changes no global matplotlib state (backend, current figure) in a notebook.
"""

from __future__ import annotations

import pathlib
from typing import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from initlab.report.aggregate import Curve

DPI = 110
_PANEL_SIZE = (5.2, 3.8)
_DIAGNOSTIC_TITLES = {
  'q': "forward: q = mean h² of each stage's output",
  'grad_var': 'backward: Var_batch(∂L/∂h), random probe loss',
}


def scheme_colors(schemes: Sequence[str]) -> dict[str, tuple]:
  """One fixed color per scheme, the same in every plot of a report."""
  cmap = colormaps['tab10' if len(schemes) <= 10 else 'tab20']
  return {name: cmap(i % cmap.N) for i, name in enumerate(schemes)}


def plot_curves(
  curves: Mapping[str, Mapping[str, Curve]],
  metric: str,
  path: pathlib.Path,
  colors: Mapping[str, tuple],
) -> pathlib.Path:
  """Saves `metric` vs step, one panel per split (train, eval), mean line and min–max band.

  Args:
    curves: scheme -> split -> Curve (a split may be absent for some schemes).
    metric: the metric's name without the split, for titles and axis labels.
    path: the PNG to write.
    colors: scheme -> color.
  """
  splits = [s for s in ('train', 'eval') if any(s in by_split for by_split in curves.values())]
  fig, axes = _figure(len(splits))
  for ax, split in zip(axes, splits):
    all_values = []
    for scheme, by_split in curves.items():
      c = by_split.get(split)
      if c is None or c.steps.size == 0:  # e.g. every seed of this scheme diverged
        continue
      color = colors[scheme]
      label = f'{scheme} (n={int(c.n.max())})'
      ax.plot(
        c.steps, c.mean, color=color, lw=1.6, label=label, marker='o' if c.steps.size == 1 else None
      )
      ax.fill_between(c.steps, c.lo, c.hi, color=color, alpha=0.2, lw=0)
      all_values.append(np.concatenate([c.lo, c.hi]))
    _maybe_log_y(ax, all_values)
    ax.set_title(f'{split} {metric}')
    ax.set_xlabel('step')
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize='small')
  fig.suptitle(f'{metric}: mean over seeds, band = min–max', fontsize='medium')
  return _save(fig, path)


def plot_init_variance(
  diagnostics: Mapping[str, Mapping], path: pathlib.Path, colors: Mapping[str, tuple]
) -> pathlib.Path | None:
  """Saves per-stage q (mean square) and gradient variance at init vs depth (log-y).

  Args:
    diagnostics: scheme -> `aggregate.diagnostics(...)` output.
    path: the PNG to write.
    colors: scheme -> color.

  Returns:
    `path`, or None when no scheme has a positive finite "q" or "grad_var" to draw.
  """
  keys = [
    k
    for k in _DIAGNOSTIC_TITLES
    if any(_drawable(d.get(k, {}).get('mean')) for d in diagnostics.values())
  ]
  if not keys:
    return None
  fig, axes = _figure(len(keys))
  for ax, key in zip(axes, keys):
    stages = []
    for scheme, diag in diagnostics.items():
      if key not in diag or not _drawable(diag[key]['mean']):
        continue
      mean, lo, hi = (_positive(diag[key][s]) for s in ('mean', 'min', 'max'))
      depth = np.arange(mean.size)
      ax.plot(
        depth,
        mean,
        color=colors[scheme],
        lw=1.6,
        marker='.',
        label=f'{scheme} (n={diag["n_seeds"]})',
      )
      if diag['n_seeds'] > 1:
        ax.fill_between(depth, lo, hi, color=colors[scheme], alpha=0.2, lw=0)
      if len(diag.get('stages') or []) == mean.size and len(stages) < mean.size:
        stages = list(diag['stages'])
    ax.set_yscale('log')
    if stages and len(stages) <= 16:
      ax.set_xticks(
        np.arange(len(stages)), [str(s) for s in stages], rotation=45, ha='right', fontsize='small'
      )
    ax.set_title(_DIAGNOSTIC_TITLES[key])
    ax.set_xlabel('layer (depth)')
    ax.set_ylabel('q (mean h²)' if key == 'q' else 'gradient variance')
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize='small')
  return _save(fig, path)


def _figure(panels: int):
  panels = max(panels, 1)
  fig = Figure(figsize=(_PANEL_SIZE[0] * panels, _PANEL_SIZE[1]), dpi=DPI, layout='constrained')
  FigureCanvasAgg(fig)
  return fig, list(np.atleast_1d(fig.subplots(1, panels)))


def _save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, format='png')
  return path


def _maybe_log_y(ax, values: list[np.ndarray]) -> None:
  """Log y when every value is positive and they span more than two decades."""
  if not values:
    return
  v = np.concatenate(values)
  v = v[np.isfinite(v)]
  if v.size and v.min() > 0 and v.max() / v.min() > 100:
    ax.set_yscale('log')


def _positive(values) -> np.ndarray:
  """As floats, with values a log axis cannot show (<= 0, non-finite) as NaN gaps."""
  a = np.asarray(values, dtype=np.float64)
  return np.where(np.isfinite(a) & (a > 0), a, np.nan)


def _drawable(values) -> bool:
  return values is not None and bool(np.any(~np.isnan(_positive(values))))
