r"""Driver of the LoRA-init study (issue [lora], item 5). From the repository root:

    python experiments/lora_init/run.py                  # the study (README: measured times)
    python experiments/lora_init/run.py --smoke          # minutes: tiny sizes, 4 schemes, 1 seed
    python experiments/lora_init/run.py --phase collect  # tables and figures from finished runs

Per task ('lm': tiny_shakespeare, first half -> second half; 'vit': digits 0-4 -> 5-9), all
through configs/lora_finetune.py and the project's loop, sweep runner and report, in
$LORA_WORKDIR/<task> (default /tmp/lora_runs/full; finished runs are reused, a killed study
resumes):

1. `base/`: the pretrained model (`train.run`).
2. `r<rank>/`: per rank in `RANKS`, one sweep (`initlab.sweep.vmap`) of every scheme in
   `SCHEMES` x `--seeds` seeds, `init.pretrained = base/`; trials of one adapter kind share
   one compiled program (the vmap runner groups them by state shapes).
3. `full/`: full fine-tuning from `base/` (`init_from`), `--seeds` seeds.

The collect phase reads the runs back (`initlab.report`) and writes, under --out (this folder;
/tmp/lora_smoke with --smoke): `results/tables.md` (per task and rank: final eval loss and
accuracy, eval loss after 25 and 50 steps, the init's seconds; mean ± std over seeds),
`results/study.json` and `figures/curves_<task>.png` (eval loss against steps per scheme).
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
CONFIG = REPO / 'configs' / 'lora_finetune.py'
sys.path.insert(0, str(REPO / 'configs'))

import lora_finetune as lora_config  # pylint: disable=g-import-not-at-top,wrong-import-position

TASKS = ('vit', 'lm')
RANKS = (4, 16)
SCHEMES = (
  'lora_default', 'lora_gaussian', 'lora_orthogonal', 'pissa', 'milora', 'olora', 'loftq',
  'loldu', 'lora_ga', 'lora_ga_peft', 'lora_sb', 'corda', 'eva',
)  # fmt: skip
SMOKE_SCHEMES = ('lora_default', 'pissa', 'lora_ga', 'loldu')
EARLY = (25, 50)  # Eval steps whose loss shows the early convergence the papers claim.


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--seeds', type=int, default=3)
  p.add_argument('--smoke', action='store_true')
  p.add_argument('--tasks', default=','.join(TASKS))
  p.add_argument('--schemes', default='', help='comma-separated subset of SCHEMES')
  p.add_argument('--ranks', default='', help='comma-separated subset of RANKS')
  p.add_argument('--phase', default='all', choices=('all', 'train', 'collect'))
  p.add_argument('--out', default=None, help='default: this folder; /tmp/lora_smoke if --smoke')
  args = p.parse_args(argv)
  args.out = pathlib.Path(args.out or ('/tmp/lora_smoke' if args.smoke else str(HERE)))
  args.tasks = tuple(args.tasks.split(','))
  for t in args.tasks:
    if t not in TASKS:
      p.error(f'--tasks: {t!r}; valid: {", ".join(TASKS)}')
  chosen = tuple(s for s in args.schemes.split(',') if s)
  for s in chosen:
    if s not in SCHEMES:
      p.error(f'--schemes: {s!r}; valid: {", ".join(SCHEMES)}')
  args.schemes = chosen or (SMOKE_SCHEMES if args.smoke else SCHEMES)
  ranks = tuple(int(r) for r in args.ranks.split(',') if r)
  args.ranks = ranks or ((4,) if args.smoke else RANKS)
  if args.smoke:
    args.seeds = 1
  return args


def root(task: str, smoke: bool) -> pathlib.Path:
  base = pathlib.Path(os.environ.get('LORA_WORKDIR', '/tmp/lora_runs'))
  return base / ('smoke' if smoke else 'full') / task


def config(task, role, smoke, **kw):
  from initlab import config as config_lib  # pylint: disable=g-import-not-at-top

  arg = ','.join([f'task={task}', f'role={role}', *(f'{k}={v}' for k, v in kw.items())])
  return config_lib.load(CONFIG, arg + (',smoke' if smoke else ''))


def _sweep(c, sweep, workdir) -> None:
  from initlab.sweep import runners, vmap  # pylint: disable=g-import-not-at-top

  trials = runners.prepare(c, workdir, sweep, vmap=True)
  vmap.run_vmap(workdir, trials)
  runners.report(workdir, trials)


def train_task(task: str, args) -> None:
  from initlab import train  # pylint: disable=g-import-not-at-top

  base = root(task, args.smoke)
  t = time.time()
  train.run(config(task, 'pretrain', args.smoke), base / 'base')
  print(f'{task} pretrain: {time.time() - t:.0f} s', flush=True)
  for rank in args.ranks:
    t = time.time()
    c = config(task, 'finetune', args.smoke, rank=rank)
    c.init.pretrained = str(base / 'base')
    for scheme in lora_config.DATA_STAGE:
      c.init[scheme] = dict(num_batches=2 if args.smoke else 8)
    _sweep(
      c, {'product': {'init.name': list(args.schemes)}, 'seeds': args.seeds}, base / f'r{rank}'
    )
    print(f'{task} rank {rank}: {time.time() - t:.0f} s', flush=True)
  t = time.time()
  c = config(task, 'full', args.smoke)
  c.init_from = str(base / 'base')
  _sweep(c, {'seeds': args.seeds}, base / 'full')
  print(f'{task} full fine-tuning: {time.time() - t:.0f} s', flush=True)


# ------------------------------------------------------------------------------------------
# Collect.


def _by_group(workdir: pathlib.Path) -> dict[str, list]:
  from initlab.report.runs import load_study  # pylint: disable=g-import-not-at-top

  study = load_study(workdir)
  return {g.split(',')[0]: [s[k] for k in sorted(s)] for g, s in study.runs.items()}


def _eval(run, name='loss') -> list[tuple[int, float]]:
  return [(int(r['step']), float(r[name])) for r in run.records if r.get('split') == 'eval']


def _at(run, step) -> float:
  return next((v for s, v in _eval(run) if s == step), float('nan'))


def _cell(runs) -> dict:
  from initlab.report import aggregate  # pylint: disable=g-import-not-at-top

  loss = [_eval(r)[-1][1] for r in runs]
  acc = [_eval(r, 'accuracy')[-1][1] for r in runs]
  curve = aggregate.curve(runs, 'eval', 'loss')
  sd = lambda xs: float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0
  return dict(
    loss=loss,
    loss_mean=float(np.mean(loss)),
    loss_std=sd(loss),
    acc_mean=float(np.mean(acc)),
    acc_std=sd(acc),
    early={s: float(np.mean([_at(r, s) for r in runs])) for s in EARLY},
    init_s=[r.summary.get('init_s') for r in runs],
    curve=dict(steps=curve.steps.tolist(), mean=curve.mean.tolist()),
  )


def collect_task(task: str, args) -> dict:
  base = root(task, args.smoke)
  out = dict(task=task, ranks={}, full=None)
  for rank in args.ranks:
    if not (base / f'r{rank}' / 'results.json').is_file():
      print(f'{task} r{rank}: not trained, skipped', flush=True)
      continue
    out['ranks'][rank] = {g: _cell(runs) for g, runs in _by_group(base / f'r{rank}').items()}
  if (base / 'full' / 'results.json').is_file():
    out['full'] = _cell(next(iter(_by_group(base / 'full').values())))
  out['base'] = json.loads((base / 'base' / 'summary.json').read_text())['final']
  return out


def _ms(mean, std, digits=3) -> str:
  return f'{mean:.{digits}f} ± {std:.{digits}f}'


def _init_s(cell) -> str:
  values = [v for v in cell['init_s'] if v is not None]
  return f'{np.median(values):.1f}' if values else '–'


def tables(results: list[dict]) -> str:
  out = []
  for res in results:
    task = res['task']
    acc = task == 'vit'
    for rank, cells in res['ranks'].items():
      seeds = max(len(c['loss']) for c in cells.values())
      out += [f'## {task.upper()}, rank {rank} (mean ± std over {seeds} seeds, ddof 1)', '']
      head = '| init | final eval loss | ' + ('final eval accuracy | ' if acc else '')
      head += ' | '.join(f'eval loss @ {s}' for s in EARLY) + ' | init s (median) |'
      out += [head, '|---|---|' + ('---|' if acc else '') + '---|' * len(EARLY) + '---|']
      rows = sorted(cells.items(), key=lambda kv: kv[1]['loss_mean'])
      if res['full'] is not None:
        rows.append(('full fine-tuning', res['full']))
      for name, c in rows:
        line = f'| {name} | {_ms(c["loss_mean"], c["loss_std"])} | '
        if acc:
          line += f'{_ms(c["acc_mean"], c["acc_std"])} | '
        line += ' | '.join(f'{c["early"][s]:.3f}' for s in EARLY) + f' | {_init_s(c)} |'
        out.append(line)
      out.append('')
  return '\n'.join(out)


def figures(results: list[dict], out_dir: pathlib.Path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  out_dir.mkdir(parents=True, exist_ok=True)
  for res in results:
    ranks = list(res['ranks'])
    if not ranks:
      continue
    fig, axes = plt.subplots(1, len(ranks), figsize=(6 * len(ranks), 4.5), squeeze=False)
    for ax, rank in zip(axes[0], ranks):
      cells = dict(res['ranks'][rank])
      if res['full'] is not None:
        cells['full fine-tuning'] = res['full']
      for name, c in sorted(cells.items()):
        style = dict(color='black', lw=2) if name == 'full fine-tuning' else {}
        ax.plot(c['curve']['steps'], c['curve']['mean'], label=name, **style)
      ax.set(title=f'{res["task"].upper()}, rank {rank}', xlabel='step', ylabel='eval loss')
      ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out_dir / f'curves_{res["task"]}.png', dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.phase in ('all', 'train'):
    for task in args.tasks:
      train_task(task, args)
  if args.phase in ('all', 'collect'):
    results = [collect_task(task, args) for task in args.tasks]
    (args.out / 'results').mkdir(parents=True, exist_ok=True)
    (args.out / 'results' / 'tables.md').write_text(tables(results))
    (args.out / 'results' / 'study.json').write_text(json.dumps(results, indent=1, default=str))
    figures(results, args.out / 'figures')
    print(tables(results))


if __name__ == '__main__':
  main()
