"""Renders `build_report`'s results as report.md."""

from __future__ import annotations

import math
from typing import Any, Mapping

from initlab import rundir
from initlab.diagnostics import tables as diag_tables
from initlab.report.aggregate import ALPHA

# (final metric, column title) shown in the results table when some scheme has it.
TABLE_METRICS = (
  ('eval/accuracy', 'eval accuracy'),
  ('eval/loss', 'eval loss'),
  ('train/loss', 'final train loss'),
)
# (Diagnostics.summary() key, column title) of the report's init diagnostics table.
DIAGNOSTIC_COLUMNS = (
  ('q_first', 'q first'),
  ('q_last', 'q last'),
  ('q_ratio', 'q last/first'),
  ('grad_q_first', 'grad q first'),
  ('grad_q_last', 'grad q last'),
  ('c_last', 'c last'),
  ('mean_sq_sv', 'J mean σ²'),
  ('condition', 'J cond'),
)
_DASH = '—'


def _mean_std(stat: Mapping[str, Any], spec: str) -> str:
  """`mean ± std`, both in format `spec`; "± n/a" for one value."""
  spread = format(stat['std'], spec) if stat['n'] > 1 else 'n/a'
  return f'{format(stat["mean"], spec)} ± {spread}'


def format_stat(stat: Mapping[str, Any] | None, n_seeds: int) -> str:
  """`mean ± std` ("± n/a" for one seed), with the seed count when some seeds lack a value."""
  if stat is None:
    return _DASH
  if stat['n'] == 0:
    return f'nan (0/{n_seeds} finite)'
  text = _mean_std(stat, '.4g')
  if stat['n'] < n_seeds:
    extra = f', {stat["n_nonfinite"]} non-finite' if stat['n_nonfinite'] else ''
    text += f' (n={stat["n"]}{extra})'
  return text


def format_steps(stat: Mapping[str, Any] | None, n_seeds: int) -> str:
  """Steps to target: `mean ± std (k/n reached)`."""
  if stat is None:
    return _DASH
  if stat['n'] == 0:
    return f'not reached (0/{n_seeds})'
  return f'{_mean_std(stat, ".0f")} ({stat["n"]}/{n_seeds} reached)'


def format_ci(lo: float, hi: float) -> str:
  return 'n/a' if not (math.isfinite(lo) and math.isfinite(hi)) else f'[{lo:.4g}, {hi:.4g}]'


def target_title(target: Mapping[str, Any]) -> str:
  op = '≥' if target['mode'] == 'max' else '≤'
  return f'steps to {target["metric"]} {op} {target["value"]:g}'


def verdict(comparison: Mapping[str, Any], alpha: float = ALPHA) -> str:
  """Plain words: is the paired difference larger than the seed spread?"""
  if comparison['n'] < 2:
    return f'cannot tell ({comparison["n"]} paired seed(s); need ≥ 2)'
  if comparison['p'] < alpha:
    return 'larger than the seed spread'
  return 'not distinguishable from the seed spread'


def render(results: Mapping[str, Any], config: Mapping[str, Any] | None) -> str:
  """The whole report.md text."""
  schemes = results['schemes']
  target = results.get('target')
  present = {name for s in schemes.values() for name in s['aggregate']}
  columns = [(m, t) for m, t in TABLE_METRICS if m in present]
  header = ['scheme', 'seeds'] + [t for _, t in columns]
  if target:
    header.insert(2 + sum(m.startswith('eval/') for m, _ in columns), target_title(target))
  where = (
    f'Run: `{results["study_dir"]}` (one run).'
    if results.get('single_run')
    else f'Study: `{results["study_dir"]}` — {len(schemes)} scheme(s), seeds {results["seeds"]}.'
  )
  lines = [
    f'# {results["title"]}',
    '',
    where,
    '',
    '## Results',
    '',
    _row(header),
    _row(['---'] * len(header)),
  ]
  for name, scheme in schemes.items():
    n = scheme['n_seeds']
    seeds = str(n) + (f' (missing {scheme["missing_seeds"]})' if scheme['missing_seeds'] else '')
    cells = [name, seeds] + [format_stat(scheme['aggregate'].get(m), n) for m, _ in columns]
    if target:
      cells.insert(
        2 + sum(m.startswith('eval/') for m, _ in columns),
        format_steps(scheme['aggregate'].get('steps_to_target'), n),
      )
    lines.append(_row(cells))
  lines += [
    '',
    f"Rows in the config's order (`init.compare`). Mean ± sample std "
    f'(ddof={results["std_ddof"]}) over seeds; n/a with one seed. A diverged seed '
    '(non-finite value) is left out of the mean and counted. Every final metric is in '
    '`results.json`.',
    '',
  ]
  lines += [f'- Eval set: {_eval_set(results)}.']
  if target:
    lines += [f'- {_target_resolution(results)}']
  lines += ['']
  lines += _comparison(results)
  lines += _diagnostics(schemes, results['plots'])
  lines += _per_seed_table(schemes, [m for m, _ in columns])
  curve_plots = {
    k: v for k, v in results['plots'].items() if k not in ('init_variance', 'jacobian_spectrum')
  }
  if curve_plots:
    lines += ['## Training curves', '']
    for key, filename in curve_plots.items():
      lines += [f'![{key}]({filename})', '']
  lines += _provenance(results.get('provenance') or {})
  if results['notes']:
    lines += ['## Notes', ''] + [f'- {note}' for note in results['notes']] + ['']
  if config is not None:
    lines += [
      '<details><summary>config.json</summary>',
      '',
      '```json',
      rundir.dumps(config, indent=2, sort_keys=True),
      '```',
      '',
      '</details>',
      '',
    ]
  return '\n'.join(lines)


def _eval_set(results: Mapping[str, Any]) -> str:
  n = results.get('eval_examples')
  return (
    f'{n} examples per evaluation'
    if n is not None
    else 'size not recorded by these runs (summary.json has no `eval_examples`)'
  )


def _target_resolution(results: Mapping[str, Any]) -> str:
  every = results.get('eval_every')
  res = (
    f'evaluations ran every {every} steps, so a value is the first evaluated step at or '
    f'past the target: it is resolved to {every} steps (the target may have been reached '
    f'up to {every - 1} steps earlier)'
    if every
    else 'the evaluation interval is unknown'
  )
  return f'Steps to target come from the eval curve: {res}.'


def _comparison(results: Mapping[str, Any]) -> list[str]:
  primary, comp = results.get('primary'), results.get('comparison')
  lines = ['## Are scheme differences larger than the seed spread?', '']
  if not primary or not comp or not comp['ranking']:
    return lines + ['No final metric to compare.', '']
  metric, better = primary['metric'], ('higher' if primary['mode'] == 'max' else 'lower')
  conf = f'{results["confidence"]:.0%}'
  schemes = results['schemes']
  header = [
    'rank',
    'scheme',
    'seeds',
    f'mean {metric}',
    f'{conf} CI',
    'difference vs best',
    f'{conf} CI of difference',
    'paired t-test p',
    'verdict',
  ]
  lines += [
    f'Final `{metric}` ({better} is better), schemes ranked. CI: Student-t interval '
    'of the mean over seeds. Each scheme is compared with the best one on the seeds '
    'both have (seed k of every scheme shares its init seed offset and data order): '
    'paired t-test on the per-seed differences (scipy.stats.ttest_rel, two-sided, '
    f'α = {ALPHA}).',
    '',
    _row(header),
    _row(['---'] * len(header)),
  ]
  for rank, name in enumerate(comp['ranking'], start=1):
    stat = schemes[name]['aggregate'].get(metric)
    cells = [
      str(rank),
      name,
      str(stat['n'] if stat else 0),
      _number(stat['mean']) if stat else _DASH,
      format_ci(stat['ci_lo'], stat['ci_hi']) if stat else 'n/a',
    ]
    pair = comp['vs_best'].get(name)
    if pair is None:
      cells += ['(best)' if name == comp['best'] else _DASH, _DASH, _DASH, _DASH]
    else:
      cells += [
        _signed(pair['mean_diff']),
        format_ci(pair['ci_lo'], pair['ci_hi']),
        _number(pair['p']) if math.isfinite(pair['p']) else 'n/a',
        verdict(pair),
      ]
    lines.append(_row(cells))
  lines += [''] + _in_words(comp, metric, len(results['seeds'])) + ['']
  return lines


def _in_words(comp: Mapping[str, Any], metric: str, n_seeds: int) -> list[str]:
  if len(comp['ranking']) < 2:
    return [f'Only one scheme: nothing to compare. Seed spread of `{metric}` is in the CI.']
  if comp['best'] is None:
    return ['No scheme has a finite final value: nothing to compare.']
  if n_seeds < 2:
    return [
      f'**With one seed per scheme the seed spread is unknown, so no difference in '
      f'`{metric}` can be called larger than it.** Run with seeds.num ≥ 3.'
    ]
  out = []
  for name, pair in comp['vs_best'].items():
    if pair['n'] < 2:
      out.append(f'- {name} vs {comp["best"]}: {verdict(pair)}.')
      continue
    out.append(
      f'- {name} vs {comp["best"]}: {_signed(pair["mean_diff"])} over {pair["n"]} '
      f'paired seeds, CI {format_ci(pair["ci_lo"], pair["ci_hi"])}, p = '
      f'{pair["p"]:.3g}: **{verdict(pair)}**.'
    )
  return out


def _gnn_ratios(diags: Mapping[str, Any], stages: list[str]) -> list[str]:
  """GNN runs: per-layer forward Var(Z_l)/Var(Z_l-1) and backward gradient ratios at init."""
  ratios = {n: d['gnn_ratios'] for n, d in diags.items() if d.get('gnn_ratios')}
  if not ratios:
    return []
  names = list(ratios)
  header = ['l', 'stage'] + [f'fwd {n}' for n in names] + [f'bwd {n}' for n in names]
  lines = [
    'Per-layer variance ratios at init (mean over seeds): forward Var(Z_l)/Var(Z_l-1), '
    'backward Var(∂ℓ/∂Z_l-1)/Var(∂ℓ/∂Z_l), Z_0 = the node features '
    '(`initlab.diagnostics.gnn`; Virgo, arXiv 2312.02622, aims at 1 in hidden layers).',
    '',
    _row(header),
    _row(['---'] * len(header)),
  ]
  cell = lambda n, k, i: _number(ratios[n][k][i]) if i < len(ratios[n][k]) else _DASH
  for i, stage in enumerate(stages):
    lines.append(
      _row(
        [str(i + 1), stage]
        + [cell(n, 'forward', i) for n in names]
        + [cell(n, 'backward', i) for n in names]
      )
    )
  return lines + ['']


def _diagnostics(schemes: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
  diags = {n: s['init_diagnostics'] for n, s in schemes.items() if s['init_diagnostics']}
  if not diags:
    return []
  modes = {d['train'] for d in diags.values()}
  mode = (
    "train mode (BatchNorm with the batch's statistics, as at the first step)"
    if modes == {True}
    else 'eval mode (BatchNorm with its running averages)'
    if modes == {False}
    else 'mode not recorded'
  )
  header = ['scheme', 'seeds', 'stages'] + [h for _, h in DIAGNOSTIC_COLUMNS]
  lines = [
    '## Init diagnostics',
    '',
    f'Signal propagation at init on one train batch, measured in {mode}; means over seeds.',
    '',
    _row(header),
    _row(['---'] * len(header)),
  ]
  for name, d in diags.items():
    lines.append(
      _row(
        [name, str(d['n_seeds']), str(len(d['stages']))]
        + [_number(d['summary'].get(k)) for k, _ in DIAGNOSTIC_COLUMNS]
      )
    )
  lines += [''] + list(diag_tables.LEGEND) + ['']
  names = list(diags)
  stages = max((d['stages'] for d in diags.values()), key=len)
  header = ['#', 'stage'] + [f'q {n}' for n in names]
  lines += [
    '<details><summary>q = mean h² per stage (mean over seeds)</summary>',
    '',
    _row(header),
    _row(['---'] * len(header)),
  ]
  for i, stage in enumerate(stages):
    lines.append(
      _row(
        [str(i + 1), stage]
        + [
          _number(diags[n]['q']['mean'][i]) if i < len(diags[n]['q']['mean']) else _DASH
          for n in names
        ]
      )
    )
  lines += ['', '</details>', '']
  lines += _gnn_ratios(diags, stages)
  for key in ('init_variance', 'jacobian_spectrum'):
    if key in plots:
      lines += [f'![{key}]({plots[key]})', '']
  return lines


def _provenance(prov: Mapping[str, Any]) -> list[str]:
  if not prov:
    return []
  source = (
    'as recorded by the runs'
    if prov.get('source') == 'runs'
    else 'of the process that built this report (the runs did not record theirs)'
  )
  devices = f'{prov.get("device_count")} × {prov.get("device_kind")}'
  return [
    '## Provenance',
    '',
    f'Environment {source}: initlab {prov.get("initlab")}, git '
    f'commit {prov.get("git_commit") or "unknown"}, jax {prov.get("jax")}, flax '
    f'{prov.get("flax")}, devices {devices}, processes {prov.get("process_count")}.',
    '',
  ]


def _per_seed_table(schemes: Mapping[str, Any], metrics: list[str]) -> list[str]:
  header = ['scheme', 'seed'] + metrics + ['steps', 'wall_s']
  lines = [
    '<details><summary>Per-seed finals</summary>',
    '',
    _row(header),
    _row(['---'] * len(header)),
  ]
  for name, scheme in schemes.items():
    for seed in scheme['seeds']:
      cells = [name, str(seed['seed'])] + [_number(seed['final'].get(m)) for m in metrics]
      cells += [_number(seed['steps']), _number(seed['wall_s'])]
      lines.append(_row(cells))
  return lines + ['', '</details>', '']


def _signed(value: float) -> str:
  return f'{value:+.4g}' if math.isfinite(value) else str(value)


def _number(value: Any) -> str:
  if value is None:
    return _DASH
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return f'{value:.4g}' if isinstance(value, float) else str(value)


def _row(cells: list[str]) -> str:
  return '| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |'
