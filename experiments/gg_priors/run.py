r"""Driver of the GG-priors study ([gg] issue, item 6; arXiv 2506.00486, 2504.16968). From the repo root:

    python experiments/gg_priors/run.py            # the full study, ~15 min on 2 CPU cores
    python experiments/gg_priors/run.py --smoke    # seconds; writes to /tmp/gg_priors_smoke

Parts: (a) GG init β ∈ {0.5, 1, 1.5, 2} at equal variance x seeds, LM + ResNet-20: eval metric at
K steps and steps to a target; (b) per-layer β̂ of the trained weights (+ plot_fits figures);
(c) BackSlash (reference unit step, kernels only) at several rdo vs plain training: near-zero
fraction vs loss; (d) DeepShape before/after/fine-tuned; (e) RF8 vs FP8 E4M3 vs float32.
Writes `results/study.json`, `results/tables.md` and `figures/*.png` (under --out). Every run
is `initlab.train.run` of a `configs.py` config (BackSlash via `optimizer.extra`, the DeepShape
fine-tunes via `start_from`) in `$GG_STUDY_WORKDIR/<smoke|full>/...`; a run directory that holds
a finished run is reused (delete the directory to retrain). The analyses are `analysis.py`'s.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import jax

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import analysis  # pylint: disable=g-import-not-at-top,wrong-import-position
import configs  # pylint: disable=g-import-not-at-top,wrong-import-position
import report  # pylint: disable=g-import-not-at-top,wrong-import-position

from initlab import rundir  # pylint: disable=g-import-not-at-top,wrong-import-position
from initlab import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from initlab.report import aggregate  # pylint: disable=g-import-not-at-top,wrong-import-position
from initlab.report import load_study  # pylint: disable=g-import-not-at-top,wrong-import-position

# (metric, target, better): steps-to-target is the first eval step reaching the target.
TARGETS = {'lm': ('loss', 2.5, 'min'), 'resnet': ('accuracy', 0.95, 'max')}
BACKSLASH_LAMBDAS = (1e-4, 3e-4, 1e-3)  # rdo / N (N = kernel params): per-step shrink ≈ λ·β̂
FT_STEPS = 50  # DeepShape fine-tune (configs.py: finetune=K)
INIT_BETAS = 'init_layer_beta.json'  # per-run β̂ at init, written by a train.run callback


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--smoke', action='store_true', help='seconds-long version (tiny models)')
  p.add_argument(
    '--out',
    default=None,
    help='output dir for results/ and figures/ (default: this folder; '
    '/tmp/gg_priors_smoke with --smoke)',
  )
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


def make_config(args, model: str, beta: float, seed: int, **extra):
  """The `configs.py` config of one run (`extra`: e.g. backslash=λ, finetune=K)."""
  steps = 0 if args.smoke else (args.lm_steps if model == 'lm' else args.resnet_steps)
  arg = f'model={model},beta={beta},seed={seed},steps={steps}'
  arg += ''.join(f',{k}={v}' for k, v in extra.items()) + (',smoke' if args.smoke else '')
  return configs.get_config(arg)


def fit(config, workdir, **kwargs):
  """`train.run` (no per-run report), and the run's files as `initlab.report` reads them."""
  result = train.run(config, workdir, **kwargs)
  (seed_run,) = [r for runs in load_study(workdir).runs.values() for r in runs.values()]
  return result, seed_run


def evaluate(result, params=None) -> dict[str, float]:
  """{'loss', 'accuracy'} of a trained run on its eval split, optionally with `params`."""
  run, state = result.run, result.state
  if params is not None:
    state = state.replace(params=jax.device_put(params, run.setup.shardings.params))
  with jax.set_mesh(run.mesh):
    return run.evaluate(state)


def final_eval(result) -> dict[str, float]:
  """The last evaluation of a run (its summary's "eval/..." entries)."""
  return {k[len('eval/') :]: v for k, v in result.summary['final'].items() if k.startswith('eval/')}


def part_a(args, model, workdir):
  """Trains every (β, seed); returns records and {(β, seed): train.RunResult}."""
  records, live = [], {}
  metric, target, better = TARGETS[model]
  for beta in args.betas:
    for seed in range(args.seeds):
      wd = workdir / model / f'beta_{beta}' / f'seed_{seed}'

      def at_init(step, state, _, wd=wd):
        if step == 0:
          rundir.write_json(wd / INIT_BETAS, analysis.layer_betas(state.params))

      res, seed_run = fit(make_config(args, model, beta, seed), wd, callbacks=[at_init])
      s = res.summary
      rec = dict(
        model=model,
        beta=beta,
        seed=seed,
        final=final_eval(res),
        wall_s=s['wall_s'],
        steps=s['steps'],
        steps_to_target=aggregate.steps_to_target(seed_run, f'eval/{metric}', target, better),
        eval_curve=[l for l in seed_run.records if l['split'] == 'eval'],
        init_layer_beta=rundir.read_json(wd / INIT_BETAS),
        trained_layer_beta=analysis.layer_betas(res.state.params),
        trained_pooled=analysis.pooled_fit(res.state.params),
      )
      print(
        f'[a] {model} beta={beta} seed={seed}: {rec["final"]} '
        f'to-target={rec["steps_to_target"]} ({s["wall_s"]:.1f}s)',
        flush=True,
      )
      records.append(rec)
      live[(beta, seed)] = res
  return records, live


def part_e(live, model):
  """RF8 / FP8 / fp32 eval of every trained model (+ sizes)."""
  out = []
  for (beta, seed), res in live.items():
    row = dict(model=model, beta=beta, seed=seed)
    for kind in ('fp32', 'rf8', 'fp8'):
      row[kind] = evaluate(res, analysis.quantize(res.state.params, kind))
    out.append(row)
  print(f'[e] {model}: {[(r["beta"], r["seed"], r["rf8"]["loss"]) for r in out]}', flush=True)
  return out


def part_c(args, model, workdir, live):
  """BackSlash runs from the β = 2 inits (every seed) vs the plain runs of part (a)."""
  out = []
  lambdas = BACKSLASH_LAMBDAS[-1:] if args.smoke else BACKSLASH_LAMBDAS
  for (beta, seed), res0 in sorted(live.items()):
    if beta != max(args.betas):
      continue
    n = analysis.num_kernel_params(res0.state.params)
    rows = [dict(lam=0.0, rdo=0.0, result=res0)]
    for lam in lambdas:
      wd = workdir / f'{model}_backslash' / f'lam_{lam}' / f'seed_{seed}'
      res, _ = fit(make_config(args, model, beta, seed, backslash=lam), wd)
      rows.append(dict(lam=lam, rdo=lam * n, result=res))
    for r in rows:
      res = r.pop('result')
      p = res.state.params
      r.update(
        model=model,
        seed=seed,
        num_kernel_params=n,
        near_zero=analysis.near_zero_fraction(p),
        near_zero_1e2=analysis.near_zero_fraction(p, 1e-2),
        pooled=analysis.pooled_fit(p),
        entropy_bits=analysis.entropy_bits(p),
        dense=evaluate(res),
        pruned=evaluate(res, analysis.prune(p)),
        rf8=evaluate(res, analysis.quantize(p, 'rf8')),
      )
      print(
        f'[c] {model} seed={seed} lam={r["lam"]}: near0={r["near_zero"]:.3f} '
        f'dense={r["dense"]} pruned={r["pruned"]}',
        flush=True,
      )
      out.append(r)
  return out


def part_d(args, model, workdir, live):
  """DeepShape of the β = 2 models (every seed): fits, entropy, eval before/after/fine-tuned."""
  out = []
  for (beta, seed), res in sorted(live.items()):
    if beta != max(args.betas):
      continue
    state = res.state
    new, info = analysis.deepshape(state.params)
    ft_config = make_config(args, model, beta, seed, finetune=3 if args.smoke else FT_STEPS)
    wd = workdir / model / f'beta_{beta}' / f'seed_{seed}'
    row = dict(
      model=model,
      seed=seed,
      info=info,
      fit_before=analysis.in_range_fit(state.params, info['half_range']),
      fit_after=analysis.in_range_fit(new, info['half_range']),
      entropy_before=analysis.entropy_bits(state.params),
      entropy_after=analysis.entropy_bits(new),
      eval_before=evaluate(res),
      eval_after=evaluate(res, new),
    )
    # Control: the same fine-tune from the unshaped weights (is the recovery just more steps?).
    ctrl, _ = fit(ft_config, wd / 'deepshape_ctrl', start_from=state)
    row['eval_ctrl_ft'] = final_eval(ctrl)
    fted, _ = fit(ft_config, wd / 'deepshape_ft', start_from=state.replace(params=new))
    row['eval_ft'] = final_eval(fted)
    row['entropy_ft'] = analysis.entropy_bits(fted.state.params)
    row['fit_ft'] = analysis.in_range_fit(fted.state.params, info['half_range'])
    print(
      f'[d] {model} seed={seed}: {row["eval_before"]} -> {row["eval_after"]} -> '
      f'{row["eval_ft"]}; H {row["entropy_before"]:.2f} -> {row["entropy_after"]:.2f}',
      flush=True,
    )
    out.append(row)
    if seed == 0:
      report.deepshape_figure(
        state.params, new, fted.state.params, args.out / 'figures' / f'deepshape_{model}.png'
      )
  return out


def main(argv=None):
  args = parse_args(argv)
  t0 = time.time()
  workdir = pathlib.Path(os.environ.get('GG_STUDY_WORKDIR', '/tmp/gg_priors_runs'))
  workdir = workdir / ('smoke' if args.smoke else 'full')
  (args.out / 'results').mkdir(parents=True, exist_ok=True)
  (args.out / 'figures').mkdir(parents=True, exist_ok=True)
  results = dict(
    smoke=args.smoke,
    betas=args.betas,
    seeds=args.seeds,
    targets={m: TARGETS[m] for m in args.models},
    near_zero=analysis.NEAR_ZERO,
    grid_bits=analysis.GRID_BITS,
    backslash_lambdas=BACKSLASH_LAMBDAS,
    ft_steps=FT_STEPS,
    runs=[],
    quant=[],
    backslash=[],
    deepshape=[],
  )
  for model in args.models:
    records, live = part_a(args, model, workdir)
    results['runs'] += records
    report.fits_figure(
      live[(max(args.betas), 0)].state.params, args.out / 'figures' / f'fits_{model}.png'
    )
    results['quant'] += part_e(live, model)
    if model == 'lm':
      results['backslash'] += part_c(args, model, workdir, live)
    results['deepshape'] += part_d(args, model, workdir, live)
  results['wall_s'] = time.time() - t0
  path = args.out / 'results' / 'study.json'
  rundir.write_json(path, results)
  report.write_tables(results, args.out / 'results' / 'tables.md')
  report.curve_figures(results, args.out / 'figures')
  print(f'Done in {results["wall_s"]:.0f}s: {path}')
  return results


if __name__ == '__main__':
  main()
