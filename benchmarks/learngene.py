r"""Learngene vs scratch on the LM: time to a descendant at 5 depths, steps to scratch's loss,
stored params.

    python benchmarks/learngene.py                        # configs/learngene.py sizes, ~15 min
    python benchmarks/learngene.py --smoke                # a minute: smoke sizes, 2 depths
    python benchmarks/learngene.py --workdir=runs/lg_bench   # keep (and reuse) the runs

One teacher and one TLEG learngene distilled from it (configs/learngene.py:task=lm, its
steps), trained by `initlab.train.run` into --workdir (finished runs are reused). Then per
descendant depth L' in --depths, two runs of the descendant's steps, same seed and data order:
`descendant` (tleg_expand from the learngene) and `scratch` (lecun_normal). Printed per depth:

  init ms     wall time of `Run.initial_state()` for the descendant (restore the learngene,
              expand under jit on the descendant's shardings), median of --repeats calls
              after a first (compiling) one.
  loss@0      the descendant's eval loss at step 0 (`Run.evaluate`), and the steps scratch
              needed to reach it (eval every 25 steps) with their wall time (scratch's
              measured s/step x steps): the ratio init / scratch-to-the-same-loss.
  steps ratio steps the descendant needed to reach scratch's final loss / scratch's steps.
              Goal (issue [learngene]): <= 0.5 at L' >= 6.

and the stored params: the learngene vs the --depths descendants kept as separate models.

Measured: see experiments/learngene/README.md (the study's numbers, 3 seeds) and the
closing note of issue [learngene] for this script's output.
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import jax

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / 'configs'))
sys.path.insert(0, str(HERE.parent / 'experiments' / 'learngene'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import run as study  # experiments/learngene/run.py: configs and param counts.

from initlab import train
from initlab.report import aggregate
from initlab.report.runs import load_study


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workdir', default=None, help='default: a temp dir, removed at exit')
  p.add_argument('--depths', default='2,4,6,8,12')
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--smoke', action='store_true')
  args = p.parse_args(argv)
  args.depths = tuple(int(d) for d in args.depths.split(','))
  if args.smoke:
    args.depths, args.repeats = study.SMOKE_DEPTHS, 2
  return args


def _eval_curve(path):
  run = next(iter(load_study(path).runs.values()))[0]
  return run, [(int(r['step']), float(r['loss'])) for r in run.records if r.get('split') == 'eval']


def bench_depth(root: pathlib.Path, depth: int, args) -> dict:
  desc = study.config('lm', 'descendant', args.smoke, gene='tleg', depth=depth)
  desc.init.pretrained = str(root / 'tleg')
  run = train.Run(desc, root / f'd{depth}_timing')
  try:
    with jax.set_mesh(run.mesh):
      jax.block_until_ready(run.initial_state()[0])  # Compiles.
      times = []
      for _ in range(args.repeats):
        t = time.perf_counter()
        state = jax.block_until_ready(run.initial_state()[0])
        times.append(time.perf_counter() - t)
      loss0 = float(run.evaluate(state)['loss'])
  finally:
    run.checkpointer.close()
  train.run(desc, root / f'd{depth}_descendant')
  scratch = study.config('lm', 'scratch', args.smoke, depth=depth)
  train.run(scratch, root / f'd{depth}_scratch')
  s_run, s_curve = _eval_curve(root / f'd{depth}_scratch')
  d_run, _ = _eval_curve(root / f'd{depth}_descendant')
  steps = scratch.train.steps
  s_per_step = float(s_run.summary['wall_s']) / steps
  to_loss0 = aggregate.steps_to_target(s_run, 'eval/loss', loss0, 'min')
  to_final = aggregate.steps_to_target(d_run, 'eval/loss', s_curve[-1][1], 'min')
  return dict(
    depth=depth,
    init_s=statistics.median(times),
    loss0=loss0,
    scratch_to_loss0=to_loss0,
    scratch_s_per_step=s_per_step,
    steps=steps,
    to_final=to_final,
    params=study._param_count(desc.model),  # pylint: disable=protected-access
  )


def main(argv=None):
  args = parse_args(argv)
  tmp = None
  if args.workdir is None:
    tmp = tempfile.TemporaryDirectory(prefix='lg_bench_')
    args.workdir = tmp.name
  root = pathlib.Path(args.workdir).resolve()
  t0 = time.time()
  train.run(study.config('lm', 'teacher', args.smoke), root / 'teacher')
  gene = study.config('lm', 'gene', args.smoke, gene='tleg')
  gene.train.distill.teacher = str(root / 'teacher')
  train.run(gene, root / 'tleg')
  print(f'teacher and learngene: {time.time() - t0:.0f} s', flush=True)
  rows = [bench_depth(root, d, args) for d in args.depths]
  print(
    "\n  L' | init ms | loss@0 | scratch steps (s) to loss@0 | init / scratch | "
    'steps to scratch final / steps'
  )
  for r in rows:
    reach = r['scratch_to_loss0']
    scratch_s = None if reach is None else reach * r['scratch_s_per_step']
    ratio = 'never reached' if reach is None else f'{r["init_s"] / scratch_s:.4f}x'
    to_final = (
      f'not in {r["steps"]}' if r['to_final'] is None else f'{r["to_final"] / r["steps"]:.2f}x'
    )
    scratch_txt = f'not in {r["steps"]}' if reach is None else f'{reach} ({scratch_s:.1f} s)'
    print(
      f'  {r["depth"]:>3} | {1e3 * r["init_s"]:7.1f} | {r["loss0"]:6.3f} | '
      f'{scratch_txt:>27} | {ratio:>14} | {to_final}'
    )
  gene_params = study._param_count(gene.model)  # pylint: disable=protected-access
  total = sum(r['params'] for r in rows)
  print(
    f'\nstored params: learngene {gene_params:,} vs {len(rows)} separate descendants '
    f'{total:,}: {total / gene_params:.1f}x fewer'
  )
  deep = [r for r in rows if r['depth'] >= 6]
  if deep:
    ok = all(r['to_final'] is not None and r['to_final'] <= 0.5 * r['steps'] for r in deep)
    print(f"goal (steps ratio <= 0.5 at L' >= 6): {'met' if ok else 'missed'}")
  print(f'total: {time.time() - t0:.0f} s')
  if tmp is not None:
    tmp.cleanup()


if __name__ == '__main__':
  main()
