r"""Driver of the PreCropping study (issue [precrop], item 4). From the repository root:

    python experiments/precropping/run.py                  # the study (README: measured times)
    python experiments/precropping/run.py --smoke          # a minute: ResNet-8, density 0.1, 1 seed
    python experiments/precropping/run.py --phase collect  # tables and figures from finished runs

Every run is configs/precrop_digits.py (ResNet-20 on the 8x8 digits, SGD + Nesterov,
cosine, `STEPS` steps) through the project's loop, in $PRECROP_WORKDIR (default
/tmp/precrop_runs/full; finished runs are reused, a killed study resumes):

* `dense/`: he_normal, `--seeds` seeds (`train.run_study`).
* per density d in `DENSITIES`:
  `d<d>/masks/`: one vmapped sweep (`initlab.sweep.vmap`: every masked arm has the dense
  net's shapes) of `pai_mask` with SNIP, GraSP, SynFlow (100 rounds), SNIP shuffled within
  each layer, and random, x seeds; `d<d>/precrop/`: `precrop` from the SynFlow mask's layer
  densities; `d<d>/uniform/`: every width scaled by one factor to the same kernel params.

Collect writes under --out (this folder; /tmp/precrop_smoke with --smoke): results/tables.md
(final test accuracy mean ± std per arm and density; kernel params (nonzero for the masked
arms); forward FLOPs per example by XLA's cost analysis of the model (a masked net still
computes its zeros); measured ms per train step of seed 0's Run, median of 5 x 5 steps),
results/study.json and figures/accuracy_vs_density.png.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONFIG = REPO / 'configs' / 'precrop_digits.py'

DENSITIES = (0.1, 0.05, 0.02)
STEPS = 300
MASKS = {  # arm -> (score, shuffle) of its pai_mask.
  'snip': ('snip', False),
  'grasp': ('grasp', False),
  'synflow': ('synflow', False),
  'snip_shuffled': ('snip', True),
  'random': ('random', False),
}
SMOKE_MASKS = ('snip', 'snip_shuffled')  # --smoke: two masked arms (one compiled sweep).
ARMS = ('dense', *MASKS, 'precrop', 'uniform')
NAMES = {
  'dense': 'dense',
  'snip': 'SNIP mask',
  'grasp': 'GraSP mask',
  'synflow': 'SynFlow mask',
  'snip_shuffled': 'SNIP shuffled',
  'random': 'random mask',
  'precrop': 'PreCrop (SynFlow p_l)',
  'uniform': 'uniform width',
}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--seeds', type=int, default=3)
  p.add_argument('--smoke', action='store_true')
  p.add_argument('--phase', default='all', choices=('all', 'train', 'collect'))
  p.add_argument('--out', default=None, help='default: this folder; /tmp/precrop_smoke if --smoke')
  args = p.parse_args(argv)
  args.out = pathlib.Path(args.out or ('/tmp/precrop_smoke' if args.smoke else str(HERE)))
  args.densities = (0.1,) if args.smoke else DENSITIES
  if args.smoke:
    args.seeds = 1
  return args


def root(smoke: bool) -> pathlib.Path:
  base = pathlib.Path(os.environ.get('PRECROP_WORKDIR', '/tmp/precrop_runs'))
  return base / ('smoke' if smoke else 'full')


def config(arm, density, args, score='synflow'):
  from initlab import config as config_lib  # pylint: disable=g-import-not-at-top

  arg = f'arm={arm},score={score},density={density},seeds={args.seeds}'
  c = config_lib.load(CONFIG, arg + (',smoke' if args.smoke else ''))
  if not args.smoke:
    c.train.update(dict(steps=STEPS, eval_every=50, checkpoint_every=STEPS, log_every=50))
    c.optimizer.warmup_steps = 20
  return c


def workdirs(density, smoke):
  base = root(smoke) / f'd{density:g}'
  return {'masks': base / 'masks', 'precrop': base / 'precrop', 'uniform': base / 'uniform'}


def mask_sweep(density, args):
  """(config, sweep) of a density's masked arms: `MASKS` zipped, x seeds."""
  arms = [MASKS[a] for a in (SMOKE_MASKS if args.smoke else MASKS)]
  sweep = {
    'zip': {
      'init.pai_mask.score': [score for score, _ in arms],
      'init.pai_mask.shuffle': [shuffle for _, shuffle in arms],
    },
    'seeds': args.seeds,
  }
  return config('mask', density, args, score='snip'), sweep


def train_all(args) -> None:
  from initlab import train  # pylint: disable=g-import-not-at-top
  from initlab.sweep import runners, vmap  # pylint: disable=g-import-not-at-top

  t = time.time()
  train.run_study(config('dense', 1.0, args), root(args.smoke) / 'dense')
  print(f'dense: {time.time() - t:.0f} s', flush=True)
  for d in args.densities:
    dirs = workdirs(d, args.smoke)
    t = time.time()
    c, sweep = mask_sweep(d, args)
    trials = runners.prepare(c, dirs['masks'], sweep, vmap=True)
    vmap.run_vmap(dirs['masks'], trials)
    runners.report(dirs['masks'], trials)
    print(f'density {d:g} masks: {time.time() - t:.0f} s', flush=True)
    for arm in ('precrop', 'uniform'):
      t = time.time()
      train.run_study(config(arm, d, args), dirs[arm])
      print(f'density {d:g} {arm}: {time.time() - t:.0f} s', flush=True)


# ------------------------------------------------------------------------------------------
# Collect.


def _arm_of_group(group: str) -> str:
  score = group.split('score=')[1].split(',')[0]
  shuffle = 'shuffle=true' in group.lower()
  return next(a for a, (s, sh) in MASKS.items() if s == score and sh == shuffle)


def _study_runs(c, workdir: pathlib.Path, sweep=None) -> dict[str, tuple[list, dict]]:
  """{group: ([SeedRun], seed 0's run config)} of a study or sweep in `workdir`."""
  from initlab.report.runs import load_study  # pylint: disable=g-import-not-at-top
  from initlab.sweep import spec  # pylint: disable=g-import-not-at-top

  study = load_study(workdir)
  first = {t.group: t.run_config() for t in spec.trials(c, sweep) if t.seed == 0}
  return {g: ([by[k] for k in sorted(by)], first[g]) for g, by in study.runs.items()}


def _measure(run_config, run_dir: pathlib.Path, rounds: int = 5) -> dict:
  """Kernel params (nonzero under a mask), XLA forward FLOPs per example and the median ms
  per train step (`rounds` rounds of 5 lean steps) of a finished run's restored state."""
  import jax  # pylint: disable=g-import-not-at-top

  import initlab.init as ii  # pylint: disable=g-import-not-at-top
  from initlab import data as data_lib  # pylint: disable=g-import-not-at-top
  from initlab import train  # pylint: disable=g-import-not-at-top

  run = train.Run(run_config, run_dir)
  try:
    with jax.set_mesh(run.mesh):
      state = run.restore()
      batch = data_lib.to_global(next(iter(run.train_iterator())), run.batch_sharding)
      kernels = sum(
        int(np.count_nonzero(np.asarray(l.value)))
        for l in ii.leaves(state.params)
        if l.path.endswith('kernel')
      )
      model = run.setup.model(state)
      cost = jax.jit(lambda x: model(x, train=False)).lower(batch['image'][:1]).compile()
      cost = cost.cost_analysis()
      cost = cost[0] if isinstance(cost, list) else cost
      for _ in range(2):
        state, _ = run.lean_step(state, batch)
      jax.block_until_ready(state.params)
      times = []
      for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(5):
          state, _ = run.lean_step(state, batch)
        jax.block_until_ready(state.params)
        times.append((time.perf_counter() - t) / 5)
  finally:
    run.checkpointer.close()
  return dict(
    kernels=kernels, flops=float(cost.get('flops', np.nan)), step_ms=1e3 * statistics.median(times)
  )


def _cell(runs, run_config, rounds: int = 5) -> dict:
  acc = [float(r.summary['final']['eval/accuracy']) for r in runs]
  return dict(
    acc=acc,
    mean=float(np.mean(acc)),
    std=float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
    **_measure(run_config, runs[0].path, rounds),
  )


def collect(args) -> dict:
  rounds = 1 if args.smoke else 5
  dense = _study_runs(config('dense', 1.0, args), root(args.smoke) / 'dense')
  depth = config('dense', 1.0, args).model.depth
  out = {'depth': depth, 'dense': _cell(*next(iter(dense.values())), rounds), 'densities': {}}
  for d in args.densities:
    dirs, row = workdirs(d, args.smoke), {}
    if not (dirs['masks'] / 'results.json').is_file():
      print(f'density {d:g}: not trained, skipped', flush=True)
      continue
    c, sweep = mask_sweep(d, args)
    for group, (runs, run_config) in _study_runs(c, dirs['masks'], sweep).items():
      row[_arm_of_group(group)] = _cell(runs, run_config, rounds)
    for arm in ('precrop', 'uniform'):
      row[arm] = _cell(*next(iter(_study_runs(config(arm, d, args), dirs[arm]).values())), rounds)
    out['densities'][f'{d:g}'] = row
  return out


def tables(res: dict) -> str:
  dense = res['dense']
  lines = ['## Final test accuracy, kernel params, FLOPs and step time', '']
  lines += [
    f'ResNet-{res["depth"]} on digits; dense: accuracy {dense["mean"]:.3f} ± {dense["std"]:.3f}, '
    f'{dense["kernels"]:,} kernel params, {dense["flops"] / 1e6:.2f} MFLOP per example, '
    f'{dense["step_ms"]:.1f} ms per train step.',
    '',
    '| density | arm | test accuracy | kernel params (nonzero) | MFLOP / example | ms / step |',
    '|---|---|---|---|---|---|',
  ]
  for d, row in res['densities'].items():
    for arm in ARMS[1:]:
      c = row.get(arm)
      if c:
        lines.append(
          f'| {d} | {NAMES[arm]} | {c["mean"]:.3f} ± {c["std"]:.3f} | {c["kernels"]:,} | '
          f'{c["flops"] / 1e6:.2f} | {c["step_ms"]:.1f} |'
        )
  return '\n'.join(lines) + '\n'


def figure(res: dict, out: pathlib.Path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  out.mkdir(parents=True, exist_ok=True)
  fig, ax = plt.subplots(figsize=(6, 4))
  ds = sorted(res['densities'], key=float)
  for arm in ARMS[1:]:
    pts = [(float(d), res['densities'][d][arm]) for d in ds if arm in res['densities'][d]]
    if pts:
      ax.errorbar(
        [p[0] for p in pts],
        [p[1]['mean'] for p in pts],
        [p[1]['std'] for p in pts],
        label=NAMES[arm],
        marker='o',
        capsize=3,
      )
  ax.axhline(res['dense']['mean'], color='k', ls='--', label='dense')
  ax.set(xscale='log', xlabel='density (kernel params kept)', ylabel='final test accuracy')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out / 'accuracy_vs_density.png', dpi=120)
  plt.close(fig)


def main(argv=None):
  args = parse_args(argv)
  if args.phase in ('all', 'train'):
    train_all(args)
  if args.phase in ('all', 'collect'):
    res = collect(args)
    (args.out / 'results').mkdir(parents=True, exist_ok=True)
    (args.out / 'results' / 'study.json').write_text(json.dumps(res, indent=1) + '\n')
    (args.out / 'results' / 'tables.md').write_text(tables(res))
    figure(res, args.out / 'figures')
    print(tables(res))


if __name__ == '__main__':
  main()
