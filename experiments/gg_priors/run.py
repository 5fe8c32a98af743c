r"""Driver of the GG-priors study ([gg] issue, item 6; REFERENCES.md §1.7). From the repo root:

    python experiments/gg_priors/run.py            # the full study, ~15 min on 2 CPU cores
    python experiments/gg_priors/run.py --smoke    # seconds; writes to /tmp/gg_priors_smoke

Parts: (a) GG init β ∈ {0.5, 1, 1.5, 2} at equal variance x seeds, LM + ResNet-20: eval metric at
K steps and steps to a target; (b) per-layer β̂ of the trained weights (+ plot_fits figures);
(c) BackSlash (reference unit step, kernels only) at several rdo vs plain training: near-zero
fraction vs loss; (d) DeepShape before/after/fine-tuned; (e) RF8 vs FP8 E4M3 vs float32.
Writes `results/study.json`, `results/tables.md` and `figures/*.png` (under --out).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import analysis  # pylint: disable=g-import-not-at-top,wrong-import-position
import configs  # pylint: disable=g-import-not-at-top,wrong-import-position
import report  # pylint: disable=g-import-not-at-top,wrong-import-position
import trainer as trainer_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

# (metric, target, better): steps-to-target is the first eval step reaching the target.
TARGETS = {'lm': ('loss', 2.5, 'min'), 'resnet': ('accuracy', 0.95, 'max')}
BACKSLASH_LAMBDAS = (1e-4, 3e-4, 1e-3)   # rdo / N (N = kernel params): per-step shrink ≈ λ·β̂
FT_STEPS, FT_LR_RATIO = 50, 0.1          # DeepShape fine-tune: constant lr = ratio x peak


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--smoke', action='store_true', help='seconds-long version (tiny models)')
  p.add_argument('--out', default=None,
                 help='output dir for results/ and figures/ (default: this folder; '
                 '/tmp/gg_priors_smoke with --smoke)')
  p.add_argument('--models', default='lm,resnet')
  p.add_argument('--betas', default='0.5,1,1.5,2')
  p.add_argument('--seeds', type=int, default=3)
  p.add_argument('--lm_steps', type=int, default=configs.LM_STEPS)
  p.add_argument('--resnet_steps', type=int, default=configs.RESNET_STEPS)
  args = p.parse_args(argv)
  if args.smoke:
    args.betas, args.seeds = '1,2', 1
    args.out = args.out or '/tmp/gg_priors_smoke'
  args.out = pathlib.Path(args.out or HERE)
  args.models = [m for m in args.models.split(',') if m]
  args.betas = [float(b) for b in args.betas.split(',')]
  return args


def make_config(args, model: str, beta: float, seed: int):
  steps = 0 if args.smoke else (args.lm_steps if model == 'lm' else args.resnet_steps)
  arg = f'model={model},beta={beta},steps={steps}' + (',smoke' if args.smoke else '')
  config = configs.get_config(arg)
  for key in ('init', 'data', 'dropout'):
    config.seeds[key] = seed
  return config


def steps_to_target(lines, model: str):
  metric, target, better = TARGETS[model]
  for l in lines:
    if l['split'] == 'eval' and (l[metric] <= target if better == 'min' else l[metric] >= target):
      return l['step']
  return None


def read_lines(path):
  return [json.loads(l) for l in pathlib.Path(path).read_text().splitlines()]


def part_a(args, model, workdir):
  """Trains every (β, seed); returns records and {(β, seed): (trainer, state)}."""
  records, live = [], {}
  for beta in args.betas:
    for seed in range(args.seeds):
      wd = workdir / model / f'beta_{beta}' / f'seed_{seed}'
      tr = trainer_lib.Trainer(make_config(args, model, beta, seed), wd)
      state = tr.init()
      init_betas = analysis.layer_betas(state.params)
      state, summary = tr.train(state)
      lines = read_lines(wd / 'metrics.jsonl')
      rec = dict(model=model, beta=beta, seed=seed, final=summary['final'],
                 wall_s=summary['wall_s'], steps=summary['steps'],
                 steps_to_target=steps_to_target(lines, model),
                 eval_curve=[l for l in lines if l['split'] == 'eval'],
                 init_layer_beta=init_betas, trained_layer_beta=analysis.layer_betas(state.params),
                 trained_pooled=analysis.pooled_fit(state.params))
      print(f'[a] {model} beta={beta} seed={seed}: {summary["final"]} '
            f'to-target={rec["steps_to_target"]} ({summary["wall_s"]:.1f}s)', flush=True)
      records.append(rec)
      live[(beta, seed)] = (tr, state)
  return records, live


def part_e(live, model):
  """RF8 / FP8 / fp32 eval of every trained model (+ sizes)."""
  out = []
  for (beta, seed), (tr, state) in live.items():
    row = dict(model=model, beta=beta, seed=seed)
    for kind in ('fp32', 'rf8', 'fp8'):
      row[kind] = tr.evaluate(state, analysis.quantize(state.params, kind))
    out.append(row)
  print(f'[e] {model}: {[(r["beta"], r["seed"], r["rf8"]["loss"]) for r in out]}', flush=True)
  return out


def part_c(args, model, workdir, live):
  """BackSlash runs from the β = 2 inits (every seed) vs the plain runs of part (a)."""
  out = []
  lambdas = BACKSLASH_LAMBDAS[-1:] if args.smoke else BACKSLASH_LAMBDAS
  for (beta, seed), (tr0, state0) in sorted(live.items()):
    if beta != max(args.betas):
      continue
    n = analysis.num_kernel_params(state0.params)
    rows = [dict(lam=0.0, rdo=0.0, params=state0.params, trainer=tr0, state=state0)]
    for lam in lambdas:
      wd = workdir / f'{model}_backslash' / f'lam_{lam}' / f'seed_{seed}'
      tr = trainer_lib.Trainer(tr0.config, wd, tx_fn=trainer_lib.backslash_tx(lam * n))
      state, _ = tr.train(tr.init())
      rows.append(dict(lam=lam, rdo=lam * n, params=state.params, trainer=tr, state=state))
    for r in rows:
      p, tr = r.pop('params'), r.pop('trainer')
      state = r.pop('state')
      r.update(model=model, seed=seed, num_kernel_params=n,
               near_zero=analysis.near_zero_fraction(p),
               near_zero_1e2=analysis.near_zero_fraction(p, 1e-2),
               pooled=analysis.pooled_fit(p), entropy_bits=analysis.entropy_bits(p),
               dense=tr.evaluate(state), pruned=tr.evaluate(state, analysis.prune(p)),
               rf8=tr.evaluate(state, analysis.quantize(p, 'rf8')))
      print(f'[c] {model} seed={seed} lam={r["lam"]}: near0={r["near_zero"]:.3f} '
            f'dense={r["dense"]} pruned={r["pruned"]}', flush=True)
      out.append(r)
  return out


def part_d(args, model, live):
  """DeepShape of the β = 2 models (every seed): fits, entropy, eval before/after/fine-tuned."""
  out = []
  for (beta, seed), (tr, state) in sorted(live.items()):
    if beta != max(args.betas):
      continue
    new, info = analysis.deepshape(state.params)
    c = tr.config.copy_and_resolve_references()
    c.optimizer.schedule = 'constant'
    c.optimizer.learning_rate = c.optimizer.learning_rate * FT_LR_RATIO
    ft_steps = 3 if args.smoke else FT_STEPS
    c.train.steps, c.train.eval_every = ft_steps, ft_steps
    ft = trainer_lib.Trainer(c, tr.workdir / 'deepshape_ft')
    row = dict(model=model, seed=seed, info=info,
               fit_before=analysis.in_range_fit(state.params, info['half_range']),
               fit_after=analysis.in_range_fit(new, info['half_range']),
               entropy_before=analysis.entropy_bits(state.params),
               entropy_after=analysis.entropy_bits(new),
               eval_before=tr.evaluate(state), eval_after=tr.evaluate(state, new))
    # Control: the same fine-tune from the unshaped weights (is the recovery just more steps?).
    ctrl, _ = ft.train(ft.with_params(state, state.params), log_name='ctrl.jsonl',
                       data_seed=seed + 1000)
    row['eval_ctrl_ft'] = ft.evaluate(ctrl)
    fted, _ = ft.train(ft.with_params(state, new), data_seed=seed + 1000)
    row['eval_ft'] = ft.evaluate(fted)
    row['entropy_ft'] = analysis.entropy_bits(fted.params)
    row['fit_ft'] = analysis.in_range_fit(fted.params, info['half_range'])
    print(f'[d] {model} seed={seed}: {row["eval_before"]} -> {row["eval_after"]} -> '
          f'{row["eval_ft"]}; H {row["entropy_before"]:.2f} -> {row["entropy_after"]:.2f}',
          flush=True)
    out.append(row)
    if seed == 0:
      report.deepshape_figure(state.params, new, fted.params,
                              args.out / 'figures' / f'deepshape_{model}.png')
  return out


def main(argv=None):
  args = parse_args(argv)
  t0 = time.time()
  workdir = pathlib.Path(os.environ.get('GG_STUDY_WORKDIR', '/tmp/gg_priors_runs'))
  workdir = workdir / ('smoke' if args.smoke else 'full')
  (args.out / 'results').mkdir(parents=True, exist_ok=True)
  (args.out / 'figures').mkdir(parents=True, exist_ok=True)
  results = dict(smoke=args.smoke, betas=args.betas, seeds=args.seeds,
                 targets={m: TARGETS[m] for m in args.models}, near_zero=analysis.NEAR_ZERO,
                 grid_bits=analysis.GRID_BITS, backslash_lambdas=BACKSLASH_LAMBDAS,
                 ft_steps=FT_STEPS, runs=[], quant=[], backslash=[], deepshape=[])
  for model in args.models:
    records, live = part_a(args, model, workdir)
    results['runs'] += records
    b_max = max(args.betas)
    _, state = live[(b_max, 0)]
    report.fits_figure(state.params, args.out / 'figures' / f'fits_{model}.png')
    results['quant'] += part_e(live, model)
    if model == 'lm':
      results['backslash'] += part_c(args, model, workdir, live)
    results['deepshape'] += part_d(args, model, live)
  results['wall_s'] = time.time() - t0
  path = args.out / 'results' / 'study.json'
  path.write_text(json.dumps(results, indent=1, default=float) + '\n')
  report.write_tables(results, args.out / 'results' / 'tables.md')
  report.curve_figures(results, args.out / 'figures')
  print(f'Done in {results["wall_s"]:.0f}s: {path}')
  return results


if __name__ == '__main__':
  main()
