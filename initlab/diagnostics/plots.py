"""Depth profiles and Jacobian spectra of `Diagnostics`, one line per scheme, as PNGs.

Uses `matplotlib.figure.Figure` directly (no pyplot), so it touches no global backend state.
Non-positive values are left out of log axes (a zero-init signal shows as a missing line).
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

from initlab.diagnostics.propagation import Diagnostics

_MAX_NAMED_TICKS = 24


def _positive(v) -> np.ndarray:
  v = np.asarray(v, np.float64)
  return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def _profile(ax, results, field, ylabel, log=True):
  for name, d in results.items():
    v = getattr(d, field)
    ax.plot(np.arange(1, d.depth + 1), _positive(v) if log else v, marker='.', label=name)
  if log:
    ax.set_yscale('log')
  ax.set_ylabel(ylabel)
  ax.set_xlabel('stage (depth)')
  first = next(iter(results.values()))
  if first.depth <= _MAX_NAMED_TICKS:
    ax.set_xticks(np.arange(1, first.depth + 1), first.names, rotation=60, fontsize=7)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=8)


def _save(fig, out_dir, name) -> str:
  path = os.path.join(out_dir, name)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return path


def _spectrum(ax_hist, ax_cdf, sv: Mapping[str, np.ndarray]):
  sv = {n: np.asarray(v, np.float64).ravel() for n, v in sv.items()}
  pos = np.concatenate([v[v > 0] for v in sv.values()] + [np.ones(1)])  # 1: for all-empty
  lo, hi = np.log10(pos.min()), np.log10(pos.max())
  bins = np.linspace(lo - 0.05, hi + 0.05, 41)
  for name, v in sv.items():
    zeros = int(np.sum(v <= 0))
    label = name + (f' ({zeros} zero)' if zeros else '')
    s = np.sort(v[v > 0])
    if not s.size:  # all zero (e.g. a zero-init model)
      ax_hist.plot([], [], label=label)
      ax_cdf.plot([], [], label=label)
      continue
    ax_hist.hist(np.log10(s), bins=bins, histtype='step', density=True, label=label)
    ax_cdf.step(s, (np.arange(s.size) + 1 + zeros) / v.size, where='post', label=label)
  ax_hist.set_xlabel('log10 singular value')
  ax_hist.set_ylabel('density')
  ax_cdf.set_xscale('log')
  ax_cdf.set_xlabel('singular value')
  ax_cdf.set_ylabel('CDF')
  for ax in (ax_hist, ax_cdf):
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def plot_depth_profiles(results: Mapping[str, Diagnostics], out_dir: str) -> list[str]:
  """Writes four PNGs into `out_dir` and returns their paths.

  forward_variance.png: q_l (mean square) and var_l vs depth, log y.
  gradient_variance.png: second moment and variance of ∂L/∂h_l vs depth, log y.
  correlation.png: c_l vs depth.
  jacobian_spectrum.png: histogram of log10 σ and CDF of σ (input–output Jacobian).
  """
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for name, fields, title in [
    (
      'forward_variance.png',
      [('q', 'q = mean h² of stage outputs'), ('var', 'Var_batch(h)')],
      'forward',
    ),
    (
      'gradient_variance.png',
      [('grad_q', 'mean (∂L/∂h)²'), ('grad_var', 'Var_batch(∂L/∂h)')],
      'backward (probe loss)',
    ),
  ]:
    fig = Figure(figsize=(11, 4))
    for i, (field, label) in enumerate(fields):
      ax = fig.add_subplot(1, 2, i + 1)
      _profile(ax, results, field, label)
      ax.set_title(f'{title}: {label}')
    paths.append(_save(fig, out_dir, name))
  fig = Figure(figsize=(6, 4))
  ax = fig.add_subplot(1, 1, 1)
  _profile(ax, results, 'c', 'c = mean cos(h_a, h_b)', log=False)
  ax.set_title('input correlation vs depth')
  paths.append(_save(fig, out_dir, 'correlation.png'))
  paths.append(
    plot_jacobian_spectrum(
      {n: d.jacobian_sv for n, d in results.items()}, os.path.join(out_dir, 'jacobian_spectrum.png')
    )
  )
  return paths


def plot_jacobian_spectrum(sv: Mapping[str, np.ndarray], path: str, title: str = '') -> str:
  """Histogram of log10 σ and CDF of σ, one line per name; `sv[name]` any shape (pooled).

  Writes the PNG at `path` and returns it.
  """
  fig = Figure(figsize=(11, 4))
  _spectrum(fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2), sv)
  fig.suptitle(title or 'input–output Jacobian singular values')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return path
