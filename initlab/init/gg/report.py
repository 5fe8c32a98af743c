"""Per-layer GG fits drawn over weight histograms (`estimate.fit_tree`): the per-layer β̂ of
trained weights, which arXiv 2506.00486 and 2504.16968 report to lie below 2 (heavier-tailed than
Gaussian)."""

from __future__ import annotations

import math

import numpy as np

from initlab.init.gg import estimate as est

_MAX_POINTS = 1_000_000  # per-layer histogram sample (a fixed stride, deterministic)


def plot_fits(
  params,
  path_png: str,
  max_layers: int = 16,
  *,
  method: str = 'exact',
  include: str | None = None,
  bins: int = 120,
) -> dict[str, est.GGFit]:
  """Fits every selected layer (`fit_tree`) and saves histograms with the fitted GG density and
  the Gaussian of the same variance (dashed), one panel per layer, to `path_png`.

  Args:
    params: NNX state, Linen dict or plain dict.
    path_png: output file (PNG).
    max_layers: at most this many panels (the first in path order); all layers are fitted.
    method, include: as in `fit_tree` (default: float leaves with ndim ≥ 2).
    bins: histogram bins per panel.

  Returns:
    {path: GGFit} for every selected layer.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  if max_layers < 1:
    raise ValueError(f'plot_fits: max_layers={max_layers!r}; expected ≥ 1')
  fits = est.fit_tree(params, method=method, include=include)
  values = {l.path: l.value for l in est.select_leaves(params, include)}
  shown = sorted(fits)[:max_layers]
  cols = min(4, len(shown))
  rows = math.ceil(len(shown) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
  for ax, path in zip(axes.flat, shown):
    x = np.asarray(values[path], np.float64).ravel()
    x = x[:: max(1, x.size // _MAX_POINTS)]
    beta, alpha, mu = (float(v) for v in fits[path])
    sigma = float(np.std(x))
    lim = max(float(np.quantile(np.abs(x - mu), 0.999)), 1e-12)
    grid = np.linspace(mu - lim, mu + lim, 400)
    ax.hist(x, bins=bins, range=(mu - lim, mu + lim), density=True, color='0.75')
    gg = np.exp(np.asarray(est.gg_logpdf(grid, fits[path]), np.float64))
    ax.plot(grid, gg, 'C0', label=f'GG β̂={beta:.2f}')
    if sigma > 0:
      ax.plot(
        grid,
        np.exp(-0.5 * ((grid - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi)),
        'C1--',
        label='normal',
      )
    ax.set_title(path if len(path) <= 40 else '…' + path[-39:], fontsize=8)
    ax.legend(fontsize=7)
  for ax in list(axes.flat)[len(shown) :]:
    ax.axis('off')
  fig.tight_layout()
  fig.savefig(path_png, dpi=100)
  plt.close(fig)
  return fits
