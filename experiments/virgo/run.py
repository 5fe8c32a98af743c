r"""Driver of the Virgo study (issue 11, item 5, first small version). From the repo root:

    python experiments/virgo/run.py                  # Cora + Chung-Lu, GCN depths 2 and 6
    python experiments/virgo/run.py --depths 2,4,6   # add depth 4
    python experiments/virgo/run.py --smoke          # seconds (10 steps, 1 seed)

Each (dataset, depth) is one `initlab.train.run_study` of `configs.py` (Xavier = glorot_normal,
Kaiming = he_normal, Virgo; 5 seeds) in `$VIRGO_WORKDIR/<dataset>_gcn<depth>` (default
/tmp/virgo_runs; a finished run is reused). Then it reads each study's results.json (final
test accuracy, mean ± std over seeds) and the runs' init_diagnostics.json (per-layer forward
and backward variance ratios at init, 'gnn_ratios') and writes `results/tables.md`,
`results/study.json` and `figures/ratios.png` (under --out: this folder; /tmp/virgo_smoke with --smoke).
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
from initlab import train  # pylint: disable=g-import-not-at-top,wrong-import-position

NAMES = {'glorot_normal': 'Xavier', 'he_normal': 'Kaiming', 'virgo': 'Virgo'}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--datasets', default='cora,chung_lu')
  p.add_argument('--depths', default='2,6')
  p.add_argument('--seeds', type=int, default=5)
  p.add_argument('--steps', default='', help='dataset:depth=steps,... overrides (0: 200)')
  p.add_argument('--smoke', action='store_true')
  p.add_argument('--phase', default='all', choices=('all', 'run', 'collect'))
  p.add_argument('--out', default=None, help='default: this folder; /tmp/virgo_smoke if --smoke')
  args = p.parse_args(argv)
  args.out = args.out or ('/tmp/virgo_smoke' if args.smoke else str(HERE))
  return args


def studies(args):
  """[(dataset, depth, config arg)] in run order (all datasets at a depth, shallow first)."""
  steps = dict(kv.split('=') for kv in args.steps.split(',') if kv)
  out = []
  for depth in (int(d) for d in args.depths.split(',')):
    for ds in args.datasets.split(','):
      arg = f'dataset={ds},depth={depth},seeds={args.seeds},steps={steps.get(f"{ds}:{depth}", 0)}'
      out.append((ds, depth, arg + (',smoke' if args.smoke else '')))
  return out


def workdir(ds, depth, smoke):
  root = pathlib.Path(os.environ.get('VIRGO_WORKDIR', '/tmp/virgo_runs'))
  return root / ('smoke' if smoke else 'full') / f'{ds}_gcn{depth}'


def collect(args):
  """One row per (dataset, depth, scheme): test accuracy over seeds (results.json) and the
  per-layer init ratios (init_diagnostics.json 'gnn_ratios'), mean and std over seeds."""
  rows = []
  for ds, depth, _ in studies(args):
    wd = workdir(ds, depth, args.smoke)
    if not (wd / 'results.json').is_file():
      print(f'{ds} GCN-{depth}: no results.json in {wd}, skipped', flush=True)
      continue
    res = json.loads((wd / 'results.json').read_text())
    for scheme, entry in res['schemes'].items():
      acc = entry['aggregate']['eval/test_accuracy']
      ratios = {'forward': [], 'backward': []}
      for path in sorted((wd / 'runs' / scheme).glob('seed_*/init_diagnostics.json')):
        r = json.loads(path.read_text())['gnn_ratios']
        for k, v in ratios.items():
          v.append(r[k])
      row = {'dataset': ds, 'depth': depth, 'scheme': scheme, 'n': acc['n']}
      row.update(acc_mean=acc['mean'], acc_std=acc['std'])
      for k, v in ratios.items():
        v = np.asarray(v, np.float64)  # (seeds, depth)
        row[k] = v.mean(0).tolist()
        row[f'{k}_std'] = v.std(0, ddof=1).tolist() if len(v) > 1 else [float('nan')] * depth
      rows.append(row)
  return rows


def _f(x, std=None):
  x = float(x)
  return f'{x:.3f}' if std is None else f'{x:.3f} ± {float(std):.3f}'


def _hidden_dev(ratios):
  """Mean |log10 ratio| over the hidden layers l = 2..L-1 (nan if L < 3)."""
  h = np.asarray(ratios[1:-1], np.float64)
  return float(np.mean(np.abs(np.log10(h)))) if h.size else float('nan')


def tables(rows):
  out = ['## Final test accuracy (mean ± std over seeds)', '']
  out += ['| dataset | depth | ' + ' | '.join(NAMES.values()) + ' |']
  out += ['|---|---|' + '---|' * len(NAMES)]
  keys = sorted({(r['dataset'], r['depth']) for r in rows}, key=lambda k: (k[0], k[1]))
  by = {(r['dataset'], r['depth'], r['scheme']): r for r in rows}
  for ds, depth in keys:
    cells = []
    for s in NAMES:
      r = by.get((ds, depth, s))
      cells.append(f'{_f(r["acc_mean"], r["acc_std"])} (n={r["n"]})' if r else '–')
    out.append(f'| {ds} | {depth} | ' + ' | '.join(cells) + ' |')
  out += ['', '## Variance ratios at init, per layer l = 1..L (mean over seeds)', '']
  out += ['forward: Var(Z_l)/Var(Z_{l-1}); backward: Var(dL/dZ_{l-1})/Var(dL/dZ_l).', '']
  out += ['| dataset | depth | scheme | forward | backward | hidden mean abs log10 fwd / bwd |']
  out += ['|---|---|---|---|---|---|']
  for ds, depth in keys:
    for s, name in NAMES.items():
      r = by.get((ds, depth, s))
      if r:
        fw = ', '.join(f'{x:.3g}' for x in r['forward'])
        bw = ', '.join(f'{x:.3g}' for x in r['backward'])
        dev = (
          f'{_hidden_dev(r["forward"]):.3f} / {_hidden_dev(r["backward"]):.3f}'
          if depth > 2
          else '–'
        )
        out.append(f'| {ds} | {depth} | {name} | {fw} | {bw} | {dev} |')
  return '\n'.join(out) + '\n'


def plot(rows, path):
  """Ratio vs layer per scheme: one column per (dataset, depth), rows forward / backward."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  keys = sorted({(r['dataset'], r['depth']) for r in rows})
  if not keys:
    return
  fig, axes = plt.subplots(2, len(keys), figsize=(3.2 * len(keys), 5.5), squeeze=False)
  for j, (ds, depth) in enumerate(keys):
    for i, kind in enumerate(('forward', 'backward')):
      ax = axes[i, j]
      for r in rows:
        if (r['dataset'], r['depth']) == (ds, depth):
          layers = np.arange(1, depth + 1)
          ax.errorbar(
            layers,
            r[kind],
            yerr=r[f'{kind}_std'],
            marker='o',
            capsize=2,
            label=NAMES.get(r['scheme'], r['scheme']),
          )
      ax.axhline(1.0, color='gray', lw=0.8, ls='--')
      ax.set_yscale('log')
      ax.set_xticks(np.arange(1, depth + 1))
      ax.set_title(f'{ds} GCN-{depth}: {kind}', fontsize=9)
      ax.set_xlabel('layer l')
      if j == 0:
        ax.set_ylabel('variance ratio at init')
  axes[0, 0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None):
  args = parse_args(argv)
  if args.phase in ('all', 'run'):
    for ds, depth, arg in studies(args):
      t = time.time()
      res = train.run_study(configs.get_config(arg), workdir(ds, depth, args.smoke))
      print(f'{ds} GCN-{depth}: {time.time() - t:.0f} s, failed: {res["failed"]}', flush=True)
  if args.phase in ('all', 'collect'):
    rows = collect(args)
    out = pathlib.Path(args.out)
    (out / 'results').mkdir(parents=True, exist_ok=True)
    (out / 'figures').mkdir(parents=True, exist_ok=True)
    (out / 'results' / 'study.json').write_text(json.dumps(rows, indent=1))
    (out / 'results' / 'tables.md').write_text(tables(rows))
    plot(rows, out / 'figures' / 'ratios.png')
    print(tables(rows))


if __name__ == '__main__':
  main()
