"""Tables of `Diagnostics`: markdown (printed by the CLI), CSV and JSON."""

from __future__ import annotations

import csv
import os
from typing import Mapping

from initlab import rundir
from initlab.diagnostics.propagation import Diagnostics

# (summary key, column header)
SUMMARY_COLUMNS = (
  ('depth', 'stages'),
  ('q_first', 'q first'),
  ('q_last', 'q last'),
  ('q_ratio', 'q last/first'),
  ('q_log2_slope', 'log2 q /stage'),
  ('grad_q_first', 'grad q first'),
  ('grad_q_last', 'grad q last'),
  ('grad_log2_slope', 'log2 grad q /stage'),
  ('c_first', 'c first'),
  ('c_last', 'c last'),
  ('mean_sq_sv', 'J mean σ²'),
  ('max_sv', 'J σ max'),
  ('min_sv', 'J σ min'),
  ('condition', 'J cond'),
  ('jacobian_exact', 'J exact'),
)
STAGE_FIELDS = ('q', 'var', 'c', 'grad_q', 'grad_var')

LEGEND = (
  "- **q**: mean of h² over the batch and the units of a stage's output h (the signal's "
  'second moment, Poole et al. 2016 arXiv:1606.05340 eq. 3, measured on stage outputs). '
  '*q last/first* near 1 means the forward signal neither explodes nor vanishes; '
  '*log2 q /stage* is the fitted doubling per stage.',
  '- **grad q**: the same mean of (∂L/∂h)² for a random linear probe loss L = Σ p·y, '
  'p ~ N(0, 1): the backward signal (Schoenholz et al. 2017 arXiv:1611.01232 §3).',
  "- **c**: mean cosine similarity of two different inputs' representations after a stage "
  '(Poole et al. 2016 eq. 4); c → 1 with depth means inputs become indistinguishable.',
  '- **J**: singular values σ of the input–output Jacobian of one example (Pennington et '
  'al. 2017 arXiv:1711.04735): *J mean σ²* its mean square, *J cond* the mean over examples '
  'of σ_max/σ_min (1 = dynamical isometry, inf = some direction is lost).',
  '- **J exact**: *yes* when the whole spectrum was computed; *no (sketch)* when a random '
  'sketch of `max_jacobian_dim` directions gave it (σ max and cond are then lower bounds).',
)


def mode_line(results: Mapping[str, Diagnostics]) -> str:
  """A sentence stating in which mode (train/eval) the statistics were measured."""
  modes = {d.train for d in results.values()}
  if modes == {True}:
    return (
      "Mode: **train** — BatchNorm normalizes with the batch's own statistics, as in the "
      'first training step (the Jacobian is taken in eval mode, per example).'
    )
  if modes == {False}:
    return (
      'Mode: **eval** — BatchNorm uses its running averages (at init: mean 0, variance '
      '1, so it barely rescales): the network evaluation runs, not the one the first '
      'training step differentiates.'
    )
  return 'Mode: not recorded (or mixed) for these measurements.'


def _fmt(v) -> str:
  if isinstance(v, bool):
    return 'yes' if v else 'no (sketch)'
  if isinstance(v, int):
    return str(v)
  return f'{v:.4g}'


def _markdown(header, rows) -> list[str]:
  return ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)] + [
    '| ' + ' | '.join(r) + ' |' for r in rows
  ]


def summary_markdown(results: Mapping[str, Diagnostics]) -> str:
  """One row per scheme with `Diagnostics.summary()` (see SUMMARY_COLUMNS)."""
  rows = []
  for name, d in results.items():
    s = d.summary()
    rows.append([name] + [_fmt(s[k]) for k, _ in SUMMARY_COLUMNS])
  return '\n'.join(_markdown(['scheme'] + [h for _, h in SUMMARY_COLUMNS], rows))


def stage_markdown(results: Mapping[str, Diagnostics], field: str) -> str:
  """One row per stage, one column per scheme, values of `field` (e.g. 'q')."""
  first = next(iter(results.values()))
  rows = []
  for l, stage in enumerate(first.names):
    vals = [getattr(d, field)[l] if l < d.depth else float('nan') for d in results.values()]
    rows.append([f'{l + 1}', stage] + [_fmt(float(v)) for v in vals])
  return '\n'.join(_markdown(['#', 'stage'] + list(results), rows))


def write_table(results: Mapping[str, Diagnostics], out_dir: str) -> str:
  """Writes into `out_dir` and returns the markdown text.

  diagnostics.md: the mode (train/eval), the summary table with a legend, per-stage tables
  of q, grad q and c.
  summary.csv: the summary, one row per scheme. stages.csv: one row per (scheme, stage)
  with q, var, c, grad_q, grad_var. diagnostics.json: {scheme: Diagnostics.to_dict()}.
  """
  os.makedirs(out_dir, exist_ok=True)
  parts = [
    '## Signal propagation at init',
    '',
    mode_line(results),
    '',
    summary_markdown(results),
    '',
    *LEGEND,
  ]
  for field, title in (
    ('q', 'forward q = mean h²'),
    ('grad_q', 'backward mean (∂L/∂h)²'),
    ('c', 'correlation c'),
  ):
    parts += ['', f'### {title} per stage', '', stage_markdown(results, field)]
  text = '\n'.join(parts) + '\n'
  with open(os.path.join(out_dir, 'diagnostics.md'), 'w') as f:
    f.write(text)
  with open(os.path.join(out_dir, 'summary.csv'), 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['scheme'] + [k for k, _ in SUMMARY_COLUMNS])
    for name, d in results.items():
      s = d.summary()
      w.writerow([name] + [s[k] for k, _ in SUMMARY_COLUMNS])
  with open(os.path.join(out_dir, 'stages.csv'), 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['scheme', 'index', 'stage', *STAGE_FIELDS])
    for name, d in results.items():
      for l, stage in enumerate(d.names):
        w.writerow([name, l + 1, stage] + [repr(float(getattr(d, k)[l])) for k in STAGE_FIELDS])
  with open(os.path.join(out_dir, 'diagnostics.json'), 'w') as f:  # schemes in given order
    f.write(rundir.dumps({name: d.to_dict() for name, d in results.items()}, indent=1) + '\n')
  return text
