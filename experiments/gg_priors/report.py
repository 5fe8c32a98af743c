"""Tables (markdown) and figures (PNG) of the GG-priors study, from the results dict."""

from __future__ import annotations

import collections
import pathlib

import numpy as np

import initlab.init as ii


def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def _ms(values, fmt='{:.3f}'):
  """'mean ± std (min–max)' over seeds, or the single value."""
  v = [x for x in values if x is not None]
  if not v:
    return 'n/a'
  if len(v) == 1:
    return fmt.format(v[0])
  return (
    f'{fmt.format(np.mean(v))} ± {fmt.format(np.std(v, ddof=1))} '
    f'({fmt.format(min(v))}–{fmt.format(max(v))})'
  )


def fits_figure(params, path):
  """Histograms of the trained kernels with their GG fits (`plot_fits`)."""
  import analysis  # pylint: disable=g-import-not-at-top

  ii.gg.plot_fits(analysis.weight_layers(params), str(path), max_layers=16)


def deepshape_figure(before, after, tuned, path):
  """Pooled kernel histograms before / after DeepShape / after the fine-tune, with GG fits."""
  import analysis  # pylint: disable=g-import-not-at-top

  flat = lambda p: np.concatenate(
    [np.asarray(x).ravel() for x in analysis.weight_layers(p).values()]
  )[:, None]
  ii.gg.plot_fits(
    {'1_trained': flat(before), '2_deepshaped': flat(after), '3_finetuned': flat(tuned)},
    str(path),
    bins=160,
  )


def _by(rows, *keys):
  out = collections.defaultdict(list)
  for r in rows:
    out[tuple(r[k] for k in keys)].append(r)
  return out


def write_tables(res, path):
  """All the study's tables as one markdown file."""
  lines = []
  add = lines.append
  for model in dict.fromkeys(r['model'] for r in res['runs']):
    metric, target, _ = res['targets'][model]
    runs = [r for r in res['runs'] if r['model'] == model]
    add(
      f'### (a) {model}: GG init β at equal variance ({len(runs)} runs, '
      f'{runs[0]["steps"]} steps; mean ± std over seeds (min–max))\n'
    )
    add(
      f'| init β | eval loss @K | eval accuracy @K | steps to {metric} '
      f'{"≤" if metric == "loss" else "≥"} {target} | pooled trained β̂ | median layer β̂ |'
    )
    add('|---|---|---|---|---|---|')
    for (beta,), rs in sorted(_by(runs, 'beta').items()):
      med = [float(np.median(list(r['trained_layer_beta'].values()))) for r in rs]
      add(
        f'| {beta} | {_ms([r["final"]["loss"] for r in rs])} | '
        f'{_ms([r["final"]["accuracy"] for r in rs])} | '
        f'{_ms([r["steps_to_target"] for r in rs], "{:.0f}")} '
        f'[{sum(r["steps_to_target"] is not None for r in rs)}/{len(rs)} reached] | '
        f'{_ms([r["trained_pooled"]["beta"] for r in rs], "{:.2f}")} | '
        f'{_ms(med, "{:.2f}")} |'
      )
    add('')
    add(f'### (b) {model}: per-layer β̂ after training (init β̂ → trained β̂, mean over seeds)\n')
    betas = sorted({r['beta'] for r in runs})
    add('| layer | ' + ' | '.join(f'β={b}' for b in betas) + ' |')
    add('|---|' + '---|' * len(betas))
    layers = list(runs[0]['trained_layer_beta'])
    groups = _by(runs, 'beta')
    for layer in layers:
      cells = []
      for b in betas:
        rs = groups[(b,)]
        i = np.mean([r['init_layer_beta'][layer] for r in rs])
        t = np.mean([r['trained_layer_beta'][layer] for r in rs])
        cells.append(f'{i:.2f} → {t:.2f}')
      add(f'| {layer} | ' + ' | '.join(cells) + ' |')
    add('')
    q = [r for r in res['quant'] if r['model'] == model]
    add(f'### (e) {model}: post-training fake quantization of all params (eval loss / accuracy)\n')
    add('| init β | float32 loss | RF8 loss | FP8 E4M3 loss | float32 acc | RF8 acc | FP8 acc |')
    add('|---|---|---|---|---|---|---|')
    for (beta,), rs in sorted(_by(q, 'beta').items()):
      add(
        f'| {beta} | '
        + ' | '.join(_ms([r[k]['loss'] for r in rs], '{:.4f}') for k in ('fp32', 'rf8', 'fp8'))
        + ' | '
        + ' | '.join(_ms([r[k]['accuracy'] for r in rs], '{:.4f}') for k in ('fp32', 'rf8', 'fp8'))
        + ' |'
      )
    d_rf8 = [r['rf8']['loss'] - r['fp32']['loss'] for r in q]
    d_fp8 = [r['fp8']['loss'] - r['fp32']['loss'] for r in q]
    add(
      f'\nLoss increase over float32, all {len(q)} models: RF8 {_ms(d_rf8, "{:+.4f}")}, '
      f'FP8 {_ms(d_fp8, "{:+.4f}")}; RF8 better than FP8 on '
      f'{sum(a < b for a, b in zip(d_rf8, d_fp8))}/{len(q)}.\n'
    )
  if res['backslash']:
    add(f'### (c) BackSlash (LM, β=2 init; near zero: |θ| < {res["near_zero"]} on kernels)\n')
    add(
      '| λ = rdo/N | rdo | near-zero frac | frac \\|θ\\|<1e-2 | pooled β̂ | entropy bits | '
      'eval loss (dense) | eval loss (near-zero → 0) | eval loss (RF8) |'
    )
    add('|---|---|---|---|---|---|---|---|---|')
    for (lam,), rs in sorted(_by(res['backslash'], 'lam').items()):
      add(
        f'| {lam:g} | {_ms([r["rdo"] for r in rs], "{:.0f}")} | '
        f'{_ms([r["near_zero"] for r in rs])} | {_ms([r["near_zero_1e2"] for r in rs])} | '
        f'{_ms([r["pooled"]["beta"] for r in rs], "{:.2f}")} | '
        f'{_ms([r["entropy_bits"] for r in rs], "{:.2f}")} | '
        f'{_ms([r["dense"]["loss"] for r in rs])} | {_ms([r["pruned"]["loss"] for r in rs])} | '
        f'{_ms([r["rf8"]["loss"] for r in rs])} |'
      )
    add('')
  if res['deepshape']:
    add(f'### (d) DeepShape (β=2 models; kernels pooled; grid 2^-{res["grid_bits"]})\n')
    add(
      '| model | β̂ before → after → fine-tuned | α̂ before → after | entropy bits before → '
      'after → fine-tuned | eval loss before → after → fine-tuned (control: same fine-tune '
      'without DeepShape) | eval acc before → after → fine-tuned (control) |'
    )
    add('|---|---|---|---|---|---|')
    for (model,), rs in _by(res['deepshape'], 'model').items():
      f = lambda key: _ms(key, '{:.3f}')
      add(
        f'| {model} | {f([r["fit_before"]["beta"] for r in rs])} → '
        f'{f([r["fit_after"]["beta"] for r in rs])} → {f([r["fit_ft"]["beta"] for r in rs])} | '
        f'{_ms([r["fit_before"]["alpha"] for r in rs], "{:.4f}")} → '
        f'{_ms([r["fit_after"]["alpha"] for r in rs], "{:.4f}")} | '
        f'{f([r["entropy_before"] for r in rs])} → {f([r["entropy_after"] for r in rs])} → '
        f'{f([r["entropy_ft"] for r in rs])} | '
        f'{f([r["eval_before"]["loss"] for r in rs])} → {f([r["eval_after"]["loss"] for r in rs])}'
        f' → {f([r["eval_ft"]["loss"] for r in rs])} ({f([r["eval_ctrl_ft"]["loss"] for r in rs])})'
        f' | {f([r["eval_before"]["accuracy"] for r in rs])} → '
        f'{f([r["eval_after"]["accuracy"] for r in rs])} → '
        f'{f([r["eval_ft"]["accuracy"] for r in rs])} '
        f'({f([r["eval_ctrl_ft"]["accuracy"] for r in rs])}) |'
      )
    add('')
  pathlib.Path(path).write_text('\n'.join(lines) + '\n')


def curve_figures(res, out_dir):
  """curves_<model>.png (eval metric vs step per β), beta_hat.png, backslash.png."""
  plt = _plt()
  out_dir = pathlib.Path(out_dir)
  models = list(dict.fromkeys(r['model'] for r in res['runs']))
  for model in models:
    metric = res['targets'][model][0]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, ((beta,), rs) in enumerate(
      sorted(_by([r for r in res['runs'] if r['model'] == model], 'beta').items())
    ):
      steps = [l['step'] for l in rs[0]['eval_curve']]
      ys = np.array([[l[metric] for l in r['eval_curve']] for r in rs])
      ax.plot(steps, ys.mean(0), f'C{i}', label=f'β={beta}')
      ax.fill_between(steps, ys.min(0), ys.max(0), color=f'C{i}', alpha=0.2)
    ax.axhline(res['targets'][model][1], color='k', lw=0.5, ls=':')
    if metric == 'loss':
      ax.set_ylim(top=min(ax.get_ylim()[1], 3.5))
    else:
      ax.set_ylim(bottom=max(ax.get_ylim()[0], 0.5))
    ax.set(
      xlabel='step',
      ylabel=f'eval {metric}',
      title=f'{model}: mean and min–max over {res["seeds"]} seeds',
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / f'curves_{model}.png', dpi=100)
    plt.close(fig)
  fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.5), squeeze=False)
  for ax, model in zip(axes[0], models):
    for i, ((beta,), rs) in enumerate(
      sorted(_by([r for r in res['runs'] if r['model'] == model], 'beta').items())
    ):
      layers = list(rs[0]['trained_layer_beta'])
      t = np.array([[r['trained_layer_beta'][l] for l in layers] for r in rs])
      ax.plot(t.mean(0), f'C{i}o-', ms=3, label=f'init β={beta}')
      ax.axhline(beta, color=f'C{i}', lw=0.5, ls=':')
    ax.set(xlabel='layer (path order)', ylabel='trained β̂', title=model)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out_dir / 'beta_hat.png', dpi=100)
  plt.close(fig)
  if res['backslash']:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in res['backslash']:
      ax.plot(r['near_zero'], r['dense']['loss'], 'C0o')
      ax.plot(r['near_zero'], r['pruned']['loss'], 'C3x')
      ax.annotate(f'λ={r["lam"]:g}', (r['near_zero'], r['dense']['loss']), fontsize=7)
    ax.plot([], [], 'C0o', label='dense')
    ax.plot([], [], 'C3x', label=f'|θ|<{res["near_zero"]} set to 0')
    ax.set(
      xlabel=f'fraction of kernel entries with |θ| < {res["near_zero"]}',
      ylabel='eval loss',
      title='BackSlash on the LM',
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / 'backslash.png', dpi=100)
    plt.close(fig)
