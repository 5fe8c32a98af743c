r"""Driver of the learngene study (issue [learngene], item 6). From the repository root:

    python experiments/learngene/run.py                  # the study (README: measured times)
    python experiments/learngene/run.py --smoke          # minutes: tiny sizes, L' = 4, 1 seed
    python experiments/learngene/run.py --phase collect  # tables and figures from finished runs

Per task ('lm': tiny_shakespeare, 'vit': digits), all through configs/learngene.py and the
project's loop, sweep runner and report, in $LEARNGENE_WORKDIR/<task> (default
/tmp/learngene_runs/full; finished runs are reused, a killed study resumes):

1. `teacher/`: the wide teacher, trained on the labels (`train.run`).
2. `tleg/`, `sws/`: the TLEG and SWS learngenes, distilled from the teacher (α = 1).
3. `d<L'>/`: per descendant depth L' in `DEPTHS`, one vmapped sweep (`initlab.sweep.vmap`)
   of three arms x `--seeds` seeds, `STEPS` steps each on the same data orders:
   tleg_expand from `tleg/`, sws_expand from `sws/` (L' >= 4: its 4 stages need a layer
   each) and lecun_normal (scratch). `d<L'>_long/`: scratch for `LONG` x `STEPS` steps.

The collect phase reads the runs back (`initlab.report`) and writes, under --out (this folder;
/tmp/learngene_smoke with --smoke): `results/tables.md` (final eval loss per arm and depth;
steps each descendant needs to reach scratch's final loss; stored params; wall-clock compute
with the learngene's training included; TLEG's linearity R² of the trained teachers'
block tensors, `initlab.init.learngene.linearity_r2`), `results/study.json` and
`figures/loss_vs_depth.png`, `figures/curves.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONFIG = REPO / 'configs' / 'learngene.py'
sys.path.insert(0, str(REPO / 'configs'))

import learngene as lg_config  # pylint: disable=g-import-not-at-top,wrong-import-position

TASKS = ('lm', 'vit')
DEPTHS = (2, 4, 6, 8, 12)
GENES = ('tleg', 'sws')
ARMS = ('tleg', 'sws', 'scratch', 'scratch_long')
SCHEME = {'tleg': 'tleg_expand', 'sws': 'sws_expand', 'scratch': 'lecun_normal'}
LONG = 2  # The long scratch arm trains LONG x the descendants' steps.
SMOKE_DEPTHS = (4,)  # Every arm (SWS needs L' >= 4), one compiled sweep.


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--seeds', type=int, default=3)
  p.add_argument('--smoke', action='store_true')
  p.add_argument('--tasks', default=','.join(TASKS))
  p.add_argument('--phase', default='all', choices=('all', 'train', 'collect'))
  p.add_argument(
    '--out', default=None, help='default: this folder; /tmp/learngene_smoke if --smoke'
  )
  args = p.parse_args(argv)
  args.out = pathlib.Path(args.out or ('/tmp/learngene_smoke' if args.smoke else str(HERE)))
  args.tasks = tuple(args.tasks.split(','))
  for t in args.tasks:
    if t not in TASKS:
      p.error(f'--tasks: {t!r}; valid: {", ".join(TASKS)}')
  args.depths = SMOKE_DEPTHS if args.smoke else DEPTHS
  if args.smoke:
    args.seeds = 1
  return args


def root(task: str, smoke: bool) -> pathlib.Path:
  base = pathlib.Path(os.environ.get('LEARNGENE_WORKDIR', '/tmp/learngene_runs'))
  return base / ('smoke' if smoke else 'full') / task


def config(task, role, smoke, **kw):
  from initlab import config as config_lib  # pylint: disable=g-import-not-at-top

  arg = ','.join([f'task={task}', f'role={role}', *(f'{k}={v}' for k, v in kw.items())])
  return config_lib.load(CONFIG, arg + (',smoke' if smoke else ''))


def arms_at(depth: int) -> tuple[str, ...]:
  stages = len(lg_config.SWS_STAGES)
  return tuple(a for a in ('tleg', 'sws', 'scratch') if a != 'sws' or depth >= stages)


def _sweep(c, sweep, workdir) -> None:
  from initlab.sweep import runners, vmap  # pylint: disable=g-import-not-at-top

  trials = runners.prepare(c, workdir, sweep, vmap=True)
  vmap.run_vmap(workdir, trials)
  runners.report(workdir, trials)


def train_task(task: str, args) -> None:
  from initlab import train  # pylint: disable=g-import-not-at-top

  base = root(task, args.smoke)
  t = time.time()
  train.run(config(task, 'teacher', args.smoke), base / 'teacher')
  print(f'{task} teacher: {time.time() - t:.0f} s', flush=True)
  for gene in GENES:
    t = time.time()
    c = config(task, 'gene', args.smoke, gene=gene)
    c.train.distill.teacher = str(base / 'teacher')
    train.run(c, base / gene)
    print(f'{task} {gene} learngene: {time.time() - t:.0f} s', flush=True)
  for depth in args.depths:
    t = time.time()
    c = config(task, 'scratch', args.smoke, depth=depth)
    c.init.sws_expand = dict(stages=lg_config.SWS_STAGES)
    arms = arms_at(depth)
    sweep = {
      'zip': {
        'init.name': [SCHEME[a] for a in arms],
        'init.pretrained': [str(base / a) if a in GENES else '' for a in arms],
      },
      'seeds': args.seeds,
    }
    _sweep(c, sweep, base / f'd{depth}')
    long = config(task, 'scratch', args.smoke, depth=depth, steps=LONG * c.train.steps)
    _sweep(long, {'seeds': args.seeds}, base / f'd{depth}_long')
    print(f'{task} depth {depth}: {time.time() - t:.0f} s', flush=True)


# ------------------------------------------------------------------------------------------
# Collect.


def _runs_by_arm(workdir: pathlib.Path) -> dict[str, list]:
  """{arm: [SeedRun]} of a depth's sweep (groups named by their init scheme)."""
  from initlab.report.runs import load_study  # pylint: disable=g-import-not-at-top

  study = load_study(workdir)
  out = {}
  for group, by_seed in study.runs.items():
    arm = next(a for a, s in SCHEME.items() if group.split(',')[0] == s)
    out[arm] = [by_seed[k] for k in sorted(by_seed)]
  return out


def _eval_loss(run) -> list[tuple[int, float]]:
  return [(int(r['step']), float(r['loss'])) for r in run.records if r.get('split') == 'eval']


def _param_count(model_config) -> int:
  """Params of the zoo model `model_config` (its defaults filled in), from shapes alone."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  import initlab.models as im  # pylint: disable=g-import-not-at-top

  full = im.default_config(model_config.name)
  full.update(model_config.to_dict())
  model = nnx.eval_shape(lambda: im.build(full, rngs=nnx.Rngs(0)))
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def _tokens(c) -> int:
  """Tokens a train step processes: batch x sequence (LM) or x (patches + class token) (ViT)."""
  if c.model.name == 'vit':
    h, w, _ = c.model.input_shape
    return c.train.batch_size * ((h // c.model.patch_size) * (w // c.model.patch_size) + 1)
  return c.train.batch_size * c.data.seq_len


def _wall(path: pathlib.Path) -> float:
  return float(json.loads((path / 'summary.json').read_text())['wall_s'])


def collect_task(task: str, args) -> dict:
  """Per depth and arm: final eval losses, curves, steps to scratch's final loss; params,
  wall-clock compute and the teachers' linearity R²."""
  from initlab.report import aggregate  # pylint: disable=g-import-not-at-top

  base = root(task, args.smoke)
  out = dict(task=task, depths={}, params={}, wall={}, r2={})
  for role in ('teacher', *GENES):
    out['wall'][role] = _wall(base / role)
  teacher = config(task, 'teacher', args.smoke)
  tokens = _tokens(teacher)
  n_teacher = _param_count(teacher.model)
  n_gene_forward = _param_count(
    config(task, 'scratch', args.smoke, depth=lg_config.GENE_DEPTH).model
  )
  out['tokens_per_step'] = tokens
  out['flops'] = dict(teacher=6 * n_teacher * tokens * teacher.train.steps)
  for gene in GENES:
    c = config(task, 'gene', args.smoke, gene=gene)
    out['params'][gene] = _param_count(c.model)
    # Distillation: the learngene's forward and backward pass at its 8 layers, the teacher's forward.
    out['flops'][gene] = (6 * n_gene_forward + 2 * n_teacher) * tokens * c.train.steps
  for depth in args.depths:
    if not (base / f'd{depth}' / 'results.json').is_file():
      print(f'{task} d{depth}: not trained, skipped', flush=True)
      continue
    runs = _runs_by_arm(base / f'd{depth}')
    runs['scratch_long'] = _runs_by_arm(base / f'd{depth}_long')['scratch']
    steps = config(task, 'scratch', args.smoke, depth=depth).train.steps
    params = _param_count(config(task, 'scratch', args.smoke, depth=depth).model)
    row = dict(steps=steps, params=params, flops=6 * params * out['tokens_per_step'] * steps)
    target = float(np.mean([_eval_loss(r)[-1][1] for r in runs['scratch']]))
    target_long = float(np.mean([_eval_loss(r)[-1][1] for r in runs['scratch_long']]))
    for arm, arm_runs in runs.items():
      finals = [_eval_loss(r)[-1][1] for r in arm_runs]
      curve = aggregate.curve(arm_runs, 'eval', 'loss')
      row[arm] = dict(
        final=finals,
        mean=float(np.mean(finals)),
        std=float(np.std(finals, ddof=1)) if len(finals) > 1 else 0.0,
        wall_s=[float(r.summary.get('wall_s', np.nan)) for r in arm_runs],
        curve=dict(steps=curve.steps.tolist(), mean=curve.mean.tolist()),
        to_scratch=[aggregate.steps_to_target(r, 'eval/loss', target, 'min') for r in arm_runs],
        to_long=[aggregate.steps_to_target(r, 'eval/loss', target_long, 'min') for r in arm_runs],
      )
    out['depths'][depth] = row
  out['r2'] = teacher_r2(task, args)
  return out


def teacher_r2(task: str, args) -> dict[str, dict[str, float]]:
  """{'trained' | 'init' | 'update': {tensor: R²}}: linearity in depth of the teacher's block
  tensors, trained, at init (its seed's init, recomputed) and of the update trained − init."""
  import jax  # pylint: disable=g-import-not-at-top

  from initlab import train  # pylint: disable=g-import-not-at-top
  from initlab.init import learngene  # pylint: disable=g-import-not-at-top

  c = config(task, 'teacher', args.smoke)
  run = train.Run(c, root(task, args.smoke) / 'teacher')
  try:
    with jax.set_mesh(run.mesh):
      trained, _, resumed = run.initial_state()
      assert resumed, 'the teacher has no checkpoint'
      fresh = run.setup.init(jax.random.key(c.seeds.init), jax.random.key(c.seeds.dropout))
  finally:
    run.checkpointer.close()
  trees = {'trained': trained.params, 'init': fresh.params}
  trees['update'] = jax.tree.map(lambda a, b: a - b, trained.params, fresh.params)
  return {
    name: learngene.linearity_r2(learngene.stacked_blocks(jax.device_get(tree)))
    for name, tree in trees.items()
  }


# ------------------------------------------------------------------------------------------
# Tables and figures.

NAMES = {'tleg': 'TLEG', 'sws': 'SWS', 'scratch': 'scratch', 'scratch_long': f'scratch {LONG}x'}


def _ms(cell) -> str:
  return f'{cell["mean"]:.3f} ± {cell["std"]:.3f}' if cell else '–'


def _reach(cell, steps) -> str:
  if not cell:
    return '–'
  hit = [s for s in cell['to_scratch'] if s is not None]
  if not hit:
    return f'not in {steps} (0/{len(cell["to_scratch"])})'
  return f'{np.mean(hit):.0f} = {np.mean(hit) / steps:.2f}x ({len(hit)}/{len(cell["to_scratch"])})'


def tables(results: list[dict]) -> str:
  out = []
  for res in results:
    task = res['task']
    seeds = max((len(r['scratch']['final']) for r in res['depths'].values()), default=0)
    out += [f'## {task.upper()}: final eval loss (mean ± std over {seeds} seeds, ddof 1)', '']
    out += ["| L' | params | steps | " + ' | '.join(NAMES.values()) + ' |']
    out += ['|---|---|---|' + '---|' * len(NAMES)]
    for depth, r in res['depths'].items():
      out.append(
        f'| {depth} | {r["params"]:,} | {r["steps"]} | '
        + ' | '.join(_ms(r.get(a)) for a in NAMES)
        + ' |'
      )
    out += ['', f"## {task.upper()}: steps a descendant needs to reach scratch's final loss", '']
    out += ['Mean over the seeds that reached it (eval every 25 steps), and as a fraction of the']
    out += ["scratch arm's steps (scratch's final loss is its seed mean). The last two columns:"]
    out += [f"seeds whose descendant reached the {LONG}x-longer scratch arm's final loss.", '']
    out += ["| L' | TLEG | SWS | TLEG ≤ scratch 2x? | SWS ≤ scratch 2x? |", '|---|---|---|---|---|']
    for depth, r in res['depths'].items():
      beats = []
      for a in GENES:
        cell = r.get(a)
        beats.append(
          '–'
          if not cell
          else f'{sum(s is not None for s in cell["to_long"])}/{len(cell["to_long"])} seeds'
        )
      out.append(
        f'| {depth} | {_reach(r.get("tleg"), r["steps"])} | {_reach(r.get("sws"), r["steps"])} | '
        + ' | '.join(beats)
        + ' |'
      )
    out += ['', f'## {task.upper()}: stored params and training compute', '']
    out += ["Compute is the 6·N·D estimate (N params, D tokens; distillation adds the teacher's"]
    out += ['forward, 2·N·D), in TFLOP; wall seconds are measured (2 shared CPU cores).', '']
    depths = res['depths']
    total = sum(r['params'] for r in depths.values())
    per_seed = sum(r['flops'] for r in depths.values())
    out += ['| what | stored params | TFLOP | wall s |', '|---|---|---|---|']
    out.append(
      f'| teacher | – | {res["flops"]["teacher"] / 1e12:.2f} | {res["wall"]["teacher"]:.0f} |'
    )
    for gene in GENES:
      out.append(
        f'| {NAMES[gene]} learngene | {res["params"][gene]:,} ({total / res["params"][gene]:.1f}x '
        f'fewer than the {len(depths)} descendants) | {res["flops"][gene] / 1e12:.2f} | '
        f'{res["wall"][gene]:.0f} |'
      )
    out.append(
      f'| {len(depths)} descendants, {next(iter(depths.values()))["steps"]} steps each, one seed | {total:,} | {per_seed / 1e12:.2f} | – |'
    )
    out.append(
      f'| {len(depths)} scratch models, {LONG}x the steps, one seed | {total:,} | '
      f'{LONG * per_seed / 1e12:.2f} | – |'
    )
    out += ['', f"## {task.upper()}: linearity of the teacher's block tensors in depth (R²)", '']
    out += ['| tensor | trained | at init | update (trained − init) |', '|---|---|---|---|']
    for name, value in res['r2']['trained'].items():
      r2 = res['r2']
      out.append(f'| {name} | {value:.3f} | {r2["init"][name]:.3f} | {r2["update"][name]:.3f} |')
    out.append('')
  return '\n'.join(out)


def figures(results: list[dict], out: pathlib.Path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  out.mkdir(parents=True, exist_ok=True)
  fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
  for ax, res in zip(axes[0], results):
    for arm, name in NAMES.items():
      pts = [(d, r[arm]) for d, r in res['depths'].items() if r.get(arm)]
      if pts:
        d = [p[0] for p in pts]
        ax.errorbar(
          d,
          [p[1]['mean'] for p in pts],
          [p[1]['std'] for p in pts],
          label=name,
          marker='o',
          capsize=3,
        )
    ax.set(title=f'{res["task"].upper()}', xlabel="descendant depth L'", ylabel='final eval loss')
    ax.legend()
  fig.tight_layout()
  fig.savefig(out / 'loss_vs_depth.png', dpi=120)
  plt.close(fig)
  fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
  for ax, res in zip(axes[0], results):
    depth = max(res['depths'], key=lambda d: (d <= 6, d))
    for arm, name in NAMES.items():
      cell = res['depths'][depth].get(arm)
      if cell:
        ax.plot(cell['curve']['steps'], cell['curve']['mean'], label=name)
    ax.set(
      title=f"{res['task'].upper()}, L' = {depth}", xlabel='step', ylabel='eval loss (seed mean)'
    )
    ax.legend()
  fig.tight_layout()
  fig.savefig(out / 'curves.png', dpi=120)
  plt.close(fig)


def main(argv=None):
  args = parse_args(argv)
  if args.phase in ('all', 'train'):
    for task in args.tasks:
      train_task(task, args)
  if args.phase in ('all', 'collect'):
    results = [collect_task(task, args) for task in args.tasks]
    (args.out / 'results').mkdir(parents=True, exist_ok=True)
    (args.out / 'results' / 'study.json').write_text(json.dumps(results, indent=1) + '\n')
    (args.out / 'results' / 'tables.md').write_text(tables(results))
    figures(results, args.out / 'figures')
    print(tables(results))


if __name__ == '__main__':
  main()
