r"""Driver of the Virgo study (issue 11, item 5). From the repository root:

    python experiments/virgo/run.py                  # the grids below (README: measured times)
    python experiments/virgo/run.py --smoke          # seconds: tiny grid, 10 steps, 1 seed
    python experiments/virgo/run.py --phase collect  # tables and figures from finished runs

Two parts, both through the project's own code:

* ratios: the per-layer variance ratios at init, Var(Z_l)/Var(Z_{l-1}) forward and
  Var(∂ℓ/∂Z_{l-1})/Var(∂ℓ/∂Z_l) backward (`initlab.diagnostics.gnn.variance_ratios`, ℓ the
  mean cross-entropy over the train nodes, no dropout) for every cell of `RATIO_GRID`
  (dataset x model x depth) and every scheme of `configs.SCHEMES`, `--seeds` seeds each
  (seed s: model and scheme keys from `fold_in(key(0), s)`). No training: cheap.
* train: one `initlab.train.run_study` of `configs.py` per cell of `TRAIN_GRID` (200
  full-batch steps; the cell's schemes x `--seeds` seeds) in `$VIRGO_WORKDIR/<cell>` (default
  /tmp/virgo_runs/full; a finished run is reused). Its test accuracy (final step) is read
  back from the study's results.json.

Writes `results/tables.md`, `results/study.json`, `figures/ratios_vs_depth.png` under --out
(this folder; /tmp/virgo_smoke with --smoke).
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
sys.path.insert(0, str(HERE))

import configs  # pylint: disable=g-import-not-at-top,wrong-import-position

NAMES = {
  'glorot_normal': 'Xavier',
  'he_normal': 'Kaiming in',
  'kaiming_fan_out': 'Kaiming out',
  'virgo': 'Virgo',
  'virgo_forward': 'Virgo fwd',
}
# (dataset, model, depths): the ratio sweep (depth 2 has no hidden layer).
RATIO_GRID = [
  (ds, m, (4, 6, 8))
  for ds in ('cora', 'citeseer', 'csbm', 'chung_lu', 'chung_lu_heavy')
  for m in configs.MODELS
]
BASE3 = ('glorot_normal', 'he_normal', 'virgo')
# (dataset, model, depth, schemes): the trained cells, in run order, chosen for the CPU
# budget (2 shared cores): the GCN cells of BASE3 on cora and chung_lu are the first slice's.
TRAIN_GRID = [
  ('cora', 'gcn', 2, BASE3),
  ('cora', 'gcn', 6, BASE3),
  ('chung_lu', 'gcn', 2, BASE3),
  ('chung_lu', 'gcn', 4, BASE3),
  ('chung_lu', 'gcn', 6, BASE3),
  ('chung_lu_heavy', 'gcn', 6, configs.SCHEMES),
  ('csbm', 'gcn', 8, configs.SCHEMES),
]
SMOKE_RATIO_GRID = [('csbm', 'gcn', (2, 3))]
SMOKE_SCHEMES = ('he_normal', 'virgo')
SMOKE_TRAIN_GRID = [('csbm', 'gcn', 2, SMOKE_SCHEMES)]


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--seeds', type=int, default=5)
  p.add_argument('--smoke', action='store_true')
  p.add_argument('--phase', default='all', choices=('all', 'ratios', 'train', 'collect'))
  p.add_argument('--only', default='', help='comma-separated cell names to train (default all)')
  p.add_argument('--out', default=None, help='default: this folder; /tmp/virgo_smoke if --smoke')
  args = p.parse_args(argv)
  args.out = pathlib.Path(args.out or ('/tmp/virgo_smoke' if args.smoke else str(HERE)))
  if args.smoke:
    args.seeds = 1
  return args


def cell_name(ds, model, depth):
  """Workdir name; the GCN cells keep the first slice's names (`cora_gcn2`), so reused."""
  return f'{ds}_{model}{depth}'


def workdir(ds, model, depth, smoke):
  root = pathlib.Path(os.environ.get('VIRGO_WORKDIR', '/tmp/virgo_runs'))
  return root / ('smoke' if smoke else 'full') / cell_name(ds, model, depth)


def config_arg(ds, model, depth, schemes, args):
  arg = f'dataset={ds},model={model},depth={depth},seeds={args.seeds},schemes={"+".join(schemes)}'
  return arg + (',smoke' if args.smoke else '')


def sweep_ratios(args) -> list[dict]:
  """One row per (dataset, model, depth, scheme): seed-mean and std of each layer's ratios."""
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from initlab import data  # pylint: disable=g-import-not-at-top
  import initlab.init as ii  # pylint: disable=g-import-not-at-top
  import initlab.models as im  # pylint: disable=g-import-not-at-top
  from initlab.diagnostics import gnn  # pylint: disable=g-import-not-at-top

  rows = []
  for ds, model, depths in SMOKE_RATIO_GRID if args.smoke else RATIO_GRID:
    for depth in depths:
      t = time.time()
      config = configs.get_config(config_arg(ds, model, depth, configs.SCHEMES, args))
      graph = data.graph(config.data)
      ctx = ii.InitContext(dataset=ii.stages.dataset_facts(data.metadata(config.data)))
      model_cfg = im.default_config(model)
      model_cfg.update(config.model.to_dict())
      build = lambda rngs, c=model_cfg: im.build(c, rngs=rngs)
      for scheme in SMOKE_SCHEMES if args.smoke else configs.SCHEMES:
        with nnx.use_eager_sharding(False):
          r = gnn.variance_ratios(
            build, ii.get_scheme(scheme), graph, seeds=args.seeds, ctx=ctx, mask=graph['train_mask']
          )
        row = dict(dataset=ds, model=model, depth=depth, scheme=scheme, seeds=args.seeds)
        for k in ('forward', 'backward'):
          row[k] = r[k].mean(0).tolist()
          row[f'{k}_std'] = (r[k].std(0, ddof=1) if args.seeds > 1 else 0 * r[k][0]).tolist()
        rows.append(row)
      print(f'ratios {ds} {model}-{depth}: {time.time() - t:.0f} s', flush=True)
  return rows


def train_cells(args) -> None:
  from initlab import train  # pylint: disable=g-import-not-at-top

  only = set(args.only.split(',')) - {''}
  for ds, model, depth, schemes in SMOKE_TRAIN_GRID if args.smoke else TRAIN_GRID:
    if only and cell_name(ds, model, depth) not in only:
      continue
    t = time.time()
    config = configs.get_config(config_arg(ds, model, depth, schemes, args))
    res = train.run_study(config, workdir(ds, model, depth, args.smoke))
    print(f'train {cell_name(ds, model, depth)}: {time.time() - t:.0f} s, failed: {res["failed"]}')


def collect_accuracy(args) -> list[dict]:
  """One row per trained (cell, scheme): final test accuracy over seeds (results.json)."""
  rows = []
  for ds, model, depth, _ in SMOKE_TRAIN_GRID if args.smoke else TRAIN_GRID:
    path = workdir(ds, model, depth, args.smoke) / 'results.json'
    if not path.is_file():
      print(f'{cell_name(ds, model, depth)}: no {path}, skipped', flush=True)
      continue
    for scheme, entry in json.loads(path.read_text())['schemes'].items():
      acc = entry['aggregate']['eval/test_accuracy']
      rows.append(
        dict(
          dataset=ds,
          model=model,
          depth=depth,
          scheme=scheme,
          n=acc['n'],
          mean=acc['mean'],
          std=acc['std'],
        )
      )
  return rows


def hidden_dev(ratios) -> float:
  """Mean |log10 ratio| over the hidden layers l = 2..L-1 (nan if L < 3): 0 = all exactly 1."""
  h = np.asarray(ratios[1:-1], np.float64)
  return float(np.mean(np.abs(np.log10(h)))) if h.size else float('nan')


def _acc(r):
  return f'{r["mean"]:.3f} ± {r["std"]:.3f}' if r['n'] > 1 else f'{r["mean"]:.3f}'


def tables(acc_rows, ratio_rows) -> str:
  out = ['## Final test accuracy (mean ± std over seeds, ddof 1)', '']
  out += ['| dataset | model | depth | seeds | ' + ' | '.join(NAMES.values()) + ' |']
  out += ['|---|---|---|---|' + '---|' * len(NAMES)]
  by = {(r['dataset'], r['model'], r['depth'], r['scheme']): r for r in acc_rows}
  for ds, model, depth in dict.fromkeys((r['dataset'], r['model'], r['depth']) for r in acc_rows):
    cells = [by.get((ds, model, depth, s)) for s in NAMES]
    n = max(c['n'] for c in cells if c)
    out.append(
      f'| {ds} | {model} | {depth} | {n} | '
      + ' | '.join(_acc(c) if c else '–' for c in cells)
      + ' |'
    )
  out += ['', '## Hidden-layer variance ratios at init: mean |log10 ratio| over l = 2..L-1', '']
  out += ['forward / backward, seed means (0 = every hidden ratio exactly 1; lower is better).', '']
  out += ['| dataset | model | depth | ' + ' | '.join(NAMES.values()) + ' |']
  out += ['|---|---|---|' + '---|' * len(NAMES)]
  by = {(r['dataset'], r['model'], r['depth'], r['scheme']): r for r in ratio_rows}
  for ds, model, depth in dict.fromkeys((r['dataset'], r['model'], r['depth']) for r in ratio_rows):
    if depth < 3:
      continue
    cells = []
    for s in NAMES:
      r = by.get((ds, model, depth, s))
      cells.append(
        f'{hidden_dev(r["forward"]):.3f} / {hidden_dev(r["backward"]):.3f}' if r else '–'
      )
    out.append(f'| {ds} | {model} | {depth} | ' + ' | '.join(cells) + ' |')
  out += ['', '## Per-layer ratios at init (seed means), l = 1..L', '']
  out += ['| dataset | model | depth | scheme | forward | backward |', '|---|---|---|---|---|---|']
  for r in ratio_rows:
    fw = ', '.join(f'{x:.3g}' for x in r['forward'])
    bw = ', '.join(f'{x:.3g}' for x in r['backward'])
    name = NAMES.get(r['scheme'], r['scheme'])
    out.append(f'| {r["dataset"]} | {r["model"]} | {r["depth"]} | {name} | {fw} | {bw} |')
  return '\n'.join(out) + '\n'


def plot(ratio_rows, path) -> None:
  """Hidden-layer mean |log10 ratio| against depth: one row per dataset, one column per
  (model, forward / backward); one line per scheme (0 = every hidden ratio exactly 1)."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  datasets = list(dict.fromkeys(r['dataset'] for r in ratio_rows))
  models = list(dict.fromkeys(r['model'] for r in ratio_rows))
  cols = [(m, k) for m in models for k in ('forward', 'backward')]
  if not datasets:
    return
  fig, axes = plt.subplots(
    len(datasets), len(cols), figsize=(2.3 * len(cols), 1.9 * len(datasets)), squeeze=False
  )
  for i, ds in enumerate(datasets):
    for j, (model, kind) in enumerate(cols):
      ax = axes[i, j]
      for s, name in NAMES.items():
        pts = sorted(
          (r['depth'], hidden_dev(r[kind]))
          for r in ratio_rows
          if (r['dataset'], r['model'], r['scheme']) == (ds, model, s) and r['depth'] > 2
        )
        if pts:
          ax.plot(*zip(*pts), marker='o', ms=3, label=name)
      ax.set_title(f'{ds} {model} {kind}', fontsize=7)
      ax.tick_params(labelsize=6)
      if i == len(datasets) - 1:
        ax.set_xlabel('depth L', fontsize=7)
      if j == 0:
        ax.set_ylabel('hidden mean |log10 r|', fontsize=7)
  axes[0, 0].legend(fontsize=5)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None):
  args = parse_args(argv)
  (args.out / 'results').mkdir(parents=True, exist_ok=True)
  (args.out / 'figures').mkdir(parents=True, exist_ok=True)
  ratios_path = args.out / 'results' / 'ratios.json'
  if args.phase in ('all', 'ratios'):
    ratios_path.write_text(json.dumps(sweep_ratios(args), indent=1))
  if args.phase in ('all', 'train'):
    train_cells(args)
  if args.phase in ('all', 'collect'):
    ratio_rows = json.loads(ratios_path.read_text()) if ratios_path.is_file() else []
    acc_rows = collect_accuracy(args)
    (args.out / 'results' / 'study.json').write_text(
      json.dumps(dict(accuracy=acc_rows, ratios=ratio_rows), indent=1)
    )
    (args.out / 'results' / 'tables.md').write_text(tables(acc_rows, ratio_rows))
    plot(ratio_rows, args.out / 'figures' / 'ratios_vs_depth.png')
    print(tables(acc_rows, ratio_rows))


if __name__ == '__main__':
  main()
