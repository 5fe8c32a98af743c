r"""Driver of the Poincaré ResNet study (issue 12, item 5). From the repository root:

    python experiments/poincare_resnet/run.py                  # everything (README, "Compute")
    python experiments/poincare_resnet/run.py --smoke          # ~4 min: tiny models, 10 steps
    python experiments/poincare_resnet/run.py --phase collect  # tables and figures from results

Parts, all through the project's own code:

* norms (a): the mean tangent norm ‖log₀(x)‖ of the activations at init, identity
  (`poincare_identity`) vs HNN++ standard (`hnnpp`) init, (i) after each of 30 stacked
  exp₀ → `PoincareLinear` → log₀ layers (64-d, batch 256, unit tangent inputs; c = 1 and 0.1)
  and (ii) after every stage of the zoo's Poincaré ResNet-20/32 (c = 0.1, widths 8-16-32) on
  a batch of 256 digits, in train mode (batch statistics in the BN) and in eval mode (the
  BN's initial running statistics, i.e. no normalization), per pixel.
* train (b, c): one `initlab.train.run_study` per cell of `CELLS` (configs.py: Poincaré ResNet-20
  with midpoint BN, the same with Fréchet-mean BN, Euclidean ResNet-20; `--seeds` seeds, 300
  steps) in `$POINCARE_STUDY_WORKDIR/<cell>` (default /tmp/poincare_study; finished runs are
  reused), each cell in a process of its own. Final test accuracy and wall time per run are
  read back from the study's results.json. --smoke trains only the Fréchet and Euclidean cells.
* vjp (b, d): `benchmarks/poincare.py::measure_vjp`: step time and compiled temporary memory
  of the ResNet-20 training step (16x16 inputs, batch 64, the benchmark's default; and of 30
  PoincareLinear layers) with and without the custom VJPs; and (`--phase bn`, one process per
  mean) the step time of the ResNet-20 with midpoint vs Fréchet-mean batch norm (`bn_time`).

Writes `results/study.json`, `results/tables.md` and `figures/*.png` under --out (this
folder; /tmp/poincare_smoke with --smoke).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import configs  # pylint: disable=g-import-not-at-top,wrong-import-position

SCHEMES = {'poincare_identity': 'identity', 'hnnpp': 'standard (HNN++)'}
# name: config argument (without seeds/smoke)
CELLS = {
  'poincare_midpoint': 'model=poincare',
  'poincare_frechet': 'model=poincare,bn=frechet',
  'euclid': 'model=euclid',
}
ACC = 'eval/test_accuracy'
SMOKE_CELLS = ('poincare_frechet', 'euclid')  # the midpoint cell is the same path without the swap


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--seeds', type=int, default=3)
  p.add_argument('--smoke', action='store_true')
  p.add_argument(
    '--phase', default='all', choices=('all', 'norms', 'train', 'vjp', 'bn', 'collect')
  )
  p.add_argument('--bn', default='midpoint', choices=('midpoint', 'frechet'), help='--phase bn')
  p.add_argument('--only', default='', help='comma-separated cells to train (default all)')
  p.add_argument('--out', default=None, help='default: this folder; /tmp/poincare_smoke if --smoke')
  args = p.parse_args(argv)
  args.out = pathlib.Path(args.out or ('/tmp/poincare_smoke' if args.smoke else str(HERE)))
  if args.smoke:
    args.seeds = 1
  return args


@contextlib.contextmanager
def frechet_bn(iters: int = configs.KARCHER_ITERS):
  """Within the block, Poincaré batch norm takes the Fréchet mean (Karcher flow, `iters` steps)
  of its batch instead of the gyromidpoint (`initlab.hyperbolic.nn.batch_stats` swapped)."""
  from initlab.hyperbolic import ball  # pylint: disable=g-import-not-at-top
  from initlab.hyperbolic import nn as hnn  # pylint: disable=g-import-not-at-top

  def batch_stats(x, c):
    mu = ball.frechet_mean(x, c, axis=0, iters=iters)
    return mu, ball.frechet_variance(x, c, mu=mu, axis=0)

  old = hnn.batch_stats
  hnn.batch_stats = batch_stats
  try:
    yield
  finally:
    hnn.batch_stats = old


# ---- (a) norm propagation --------------------------------------------------------------------


def _scheme(name, params, key):
  import initlab.init as ii  # pylint: disable=g-import-not-at-top

  return ii.get_scheme(name)(key, params)


def stack_norms(scheme, c, depth=30, dim=64, batch=256, seed=0) -> list[float]:
  """Mean ‖v‖ after each of `depth` exp₀ → PoincareLinear → log₀ layers (index 0: the input)."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from initlab import hyperbolic as hb  # pylint: disable=g-import-not-at-top
  from initlab.models.poincare import PoincareLinear  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  v = rng.normal(size=(batch, dim))
  v /= np.linalg.norm(v, axis=-1, keepdims=True)  # unit tangent inputs
  v = v.astype(np.float32)
  out = [float(np.mean(np.linalg.norm(v, axis=-1)))]
  for i in range(depth):
    with nnx.use_eager_sharding(False):
      mod = PoincareLinear(dim, dim, c=c, rngs=nnx.Rngs(seed * 1000 + i))
    nnx.update(mod, _scheme(scheme, nnx.state(mod, nnx.Param), jax.random.key(seed * 1000 + i)))
    v = np.asarray(hb.logmap0(mod(hb.expmap0(v, c)), c))
    out.append(float(np.mean(np.linalg.norm(v, axis=-1))))
  return out


def resnet_norms(scheme, depth, train_mode, batch=256, seed=0, smoke=False) -> dict:
  """{'names': stage names, 'norms': mean per-pixel ‖log₀ x‖ after each stage but the head}."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  import initlab.models as im  # pylint: disable=g-import-not-at-top
  from initlab import hyperbolic as hb  # pylint: disable=g-import-not-at-top

  cfg = im.default_config(f'poincare_resnet{depth}')
  cfg.input_shape = (8, 8, 1)
  if smoke:
    cfg.widths = (4, 4, 8)
  with nnx.use_eager_sharding(False):
    model = im.build(cfg, rngs=nnx.Rngs(seed))
  nnx.update(model, _scheme(scheme, nnx.state(model, nnx.Param), jax.random.key(seed)))
  images = (load_digits().images[:batch] / 16.0)[..., None].astype(np.float32)
  if train_mode not in _FORWARD:  # one trace per mode and architecture (nnx.jit caches by graph)

    @nnx.jit
    def forward(model, x):
      norms = []
      for _, stage in model.stages(train_mode)[:-1]:
        x = stage(x)
        norms.append(jnp.mean(jnp.linalg.norm(hb.logmap0(x, model.c), axis=-1)))
      return norms

    _FORWARD[train_mode] = forward
  names = [name for name, _ in model.stages(train_mode)[:-1]]
  return dict(names=names, norms=[float(n) for n in _FORWARD[train_mode](model, images)])


_FORWARD = {}


def sweep_norms(args) -> dict:
  t = time.time()
  depth = 4 if args.smoke else 30
  stack = {
    f'{s}/c={c}': stack_norms(s, c, depth=depth, dim=16 if args.smoke else 64)
    for s in SCHEMES
    for c in (1.0, 0.1)
  }
  resnet = {}
  for depth in (8,) if args.smoke else (20, 32):
    for s in SCHEMES:
      for mode in ('train', 'eval'):
        resnet[f'{depth}/{s}/{mode}'] = resnet_norms(
          s, depth, mode == 'train', batch=32 if args.smoke else 256, smoke=args.smoke
        )
  print(f'norms: {time.time() - t:.0f} s', flush=True)
  return dict(stack=stack, resnet=resnet)


# ---- (b, c) training -------------------------------------------------------------------------


def workdir(cell, smoke):
  root = pathlib.Path(os.environ.get('POINCARE_STUDY_WORKDIR', '/tmp/poincare_study'))
  return root / ('smoke' if smoke else 'full') / cell


def config_arg(cell, args):
  return f'{CELLS[cell]},seeds={args.seeds}' + (',smoke' if args.smoke else '')


def train_cells(args) -> None:
  from initlab import train  # pylint: disable=g-import-not-at-top

  only = set(args.only.split(',')) - {''}
  cells = [c for c in (SMOKE_CELLS if args.smoke else CELLS) if not only or c in only]
  if len(cells) > 1:  # one process per cell: the Fréchet swap is process-global state, and
    for cell in cells:  # each cell then traces and compiles its own step from scratch
      _self(args, '--phase=train', f'--only={cell}')
    return
  for cell in cells:
    t = time.time()
    config = configs.get_config(config_arg(cell, args))
    with frechet_bn() if 'bn=frechet' in CELLS[cell] else contextlib.nullcontext():
      res = train.run_study(config, workdir(cell, args.smoke))
    print(f'train {cell}: {time.time() - t:.0f} s, failed: {res["failed"]}', flush=True)


def collect_training(args) -> list[dict]:
  rows = []
  for cell in SMOKE_CELLS if args.smoke else CELLS:
    path = workdir(cell, args.smoke) / 'results.json'
    if not path.is_file():
      print(f'{cell}: no {path}, skipped', flush=True)
      continue
    for scheme, entry in json.loads(path.read_text())['schemes'].items():
      key = ACC if ACC in entry['aggregate'] else 'eval/accuracy'  # the eval split is 'test'
      acc = entry['aggregate'][key]
      wall = [s['wall_s'] for s in entry['seeds']]
      rows.append(
        dict(
          cell=cell,
          scheme=scheme,
          n=acc['n'],
          mean=acc['mean'],
          std=acc['std'],
          accs=[s['final'][key] for s in entry['seeds']],
          wall_s=float(np.mean(wall)),
          steps=entry['seeds'][0]['steps'],
        )
      )
  return rows


# ---- (d) custom VJP vs autodiff --------------------------------------------------------------


def _bench():
  sys.path.insert(0, str(REPO / 'benchmarks'))
  import poincare as bench  # pylint: disable=g-import-not-at-top

  return bench


def _self(args, *extra):
  """This script in a fresh process with `extra` arguments (and --smoke/--seeds/--out)."""
  cmd = [sys.executable, __file__, f'--seeds={args.seeds}', f'--out={args.out}', *extra]
  subprocess.run(cmd + (['--smoke'] if args.smoke else []), check=True)


def bn_time(args) -> dict:
  """(b) ms per training step (custom VJPs) of the Poincaré ResNet with `args.bn`'s mean."""
  bench = _bench()
  t = time.time()
  kw = dict(depth=8, batch=16) if args.smoke else dict(depth=20, batch=64, image=16)
  with frechet_bn() if args.bn == 'frechet' else contextlib.nullcontext():
    side = bench.resnet_steps(**kw, customs=(True,))['custom']
  cpu = {}
  ms = bench.time_steps(
    {'s': side}, repeats=1 if args.smoke else 5, min_round_s=0.05 if args.smoke else 0.5, cpu=cpu
  )
  print(f'bn time {args.bn}: {time.time() - t:.0f} s', flush=True)
  return dict(
    ms=ms['s'], cpu_ms=cpu['s'], temp_mib=side['temp'] / 2**20, compile_s=side['compile_s']
  )


def vjp(args) -> dict:
  bench = _bench()
  t = time.time()
  if args.smoke:
    out = dict(
      mlp=bench.measure_vjp('mlp', depth=3, width=16, batch=32, repeats=1, min_round_s=0.05)
    )
  else:
    out = dict(
      resnet20=bench.measure_vjp('resnet', depth=20, batch=64, image=16, repeats=5),
      mlp30=bench.measure_vjp('mlp', depth=30, width=256, batch=512, repeats=5),
    )
  print(f'vjp: {time.time() - t:.0f} s', flush=True)
  return out


# ---- tables and figures ----------------------------------------------------------------------


def _ms(d):  # {n, mean, std}
  if not d:
    return '–'
  return f'{d["mean"]:.3f} ± {d["std"]:.3f}' if d['n'] > 1 else f'{d["mean"]:.3f}'


def tables(norms, train_rows, vjps, bns) -> str:
  out = []
  if norms:
    out += ['## (a) Mean tangent norm at init, 30 stacked exp₀ → PoincareLinear → log₀ layers', '']
    stack = norms['stack']
    depth = len(next(iter(stack.values()))) - 1
    cols = [l for l in (1, 2, 5, 10, 20, 30) if l <= depth]
    out += ['| init | c | ' + ' | '.join(f'layer {l}' for l in cols) + ' |']
    out += ['|---|---|' + '---|' * len(cols)]
    for key, vals in stack.items():
      s, c = key.split('/c=')
      out.append(f'| {SCHEMES[s]} | {c} | ' + ' | '.join(f'{vals[l]:.3g}' for l in cols) + ' |')
    out += ['', '## (a) Poincaré ResNet at init: mean per-pixel ‖log₀ x‖ after each stage', '']
    out += ['| depth | init | BN statistics | stem | first block | middle block | last block |']
    out += ['|---|---|---|---|---|---|---|']
    for key, r in norms['resnet'].items():
      d, s, mode = key.split('/')
      n = r['norms']
      cells = [n[0], n[1], n[len(n) // 2], n[-1]]
      out.append(
        f'| {d} | {SCHEMES[s]} | {"batch" if mode == "train" else "running (initial)"} | '
        + ' | '.join(f'{v:.3g}' for v in cells)
        + ' |'
      )
  if train_rows:
    out += ['', '## (b, c) Digits: final test accuracy (mean ± std over seeds, ddof 1)', '']
    out += ['| model | init | steps | seeds | test accuracy | per seed | wall s per run |']
    out += ['|---|---|---|---|---|---|---|']
    for r in train_rows:
      per = ', '.join(f'{a:.3f}' for a in r['accs'])
      out.append(
        f'| {r["cell"]} | {r["scheme"]} | {r["steps"]} | {r["n"]} | {_ms(r)} | {per} | '
        f'{r["wall_s"]:.0f} |'
      )
  if bns:
    out += ['', '## (b) Batch-norm mean: one training step (custom VJPs)', '']
    out += ['| BN mean | wall ms/step | CPU ms/step | compiled temp MiB | compile s |']
    out += ['|---|---|---|---|---|']
    for k, r in bns.items():
      out.append(
        f'| {k} | {r["ms"]:.1f} | {r["cpu_ms"]:.1f} | {r["temp_mib"]:.1f} | {r["compile_s"]:.0f} |'
      )
  if vjps:
    out += ['', '## (d) Custom VJPs vs autodiff: one training step', '']
    out += ['| model | side | ms/step | compiled temp MiB | compile s |', '|---|---|---|---|---|']
    for model, r in vjps.items():
      for side in ('custom', 'autodiff'):
        out.append(
          f'| {model} | {side} | {r[side]["ms"]:.1f} | {r[side]["temp_mib"]:.1f} | '
          f'{r[side]["compile_s"]:.0f} |'
        )
      out.append(
        f'| {model} | custom/autodiff | {r["time_ratio"]:.2f}x | {r["mem_ratio"]:.3f}x | |'
      )
  return '\n'.join(out) + '\n'


def plot(norms, path_stack, path_resnet) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  if not norms:
    return
  fig, ax = plt.subplots(figsize=(4.6, 3.2))
  for key, vals in norms['stack'].items():
    s, c = key.split('/c=')
    ax.semilogy(
      range(len(vals)),
      np.maximum(vals, 1e-30),
      marker='o',
      ms=2,
      ls='-' if s == 'poincare_identity' else '--',
      label=f'{SCHEMES[s]}, c={c}',
    )
  ax.set_xlabel('layer')
  ax.set_ylabel('mean tangent norm ‖log₀ x‖')
  ax.set_title('30 stacked Poincaré FC layers at init', fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path_stack, dpi=110)
  plt.close(fig)
  depths = sorted({k.split('/')[0] for k in norms['resnet']}, key=int)
  fig, axes = plt.subplots(1, len(depths), figsize=(4.2 * len(depths), 3.2), squeeze=False)
  for ax, d in zip(axes[0], depths, strict=True):
    for key, r in norms['resnet'].items():
      dd, s, mode = key.split('/')
      if dd != d:
        continue
      ax.semilogy(
        range(len(r['norms'])),
        np.maximum(r['norms'], 1e-30),
        marker='o',
        ms=2,
        ls='-' if mode == 'train' else ':',
        label=f'{SCHEMES[s]}, BN {"batch" if mode == "train" else "running"} stats',
      )
    ax.set_title(f'Poincaré ResNet-{d} at init (digits)', fontsize=9)
    ax.set_xlabel('stage (stem, blocks)')
    ax.set_ylabel('mean per-pixel ‖log₀ x‖')
    ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path_resnet, dpi=110)
  plt.close(fig)


def main(argv=None):
  args = parse_args(argv)
  res, fig = args.out / 'results', args.out / 'figures'
  res.mkdir(parents=True, exist_ok=True)
  fig.mkdir(parents=True, exist_ok=True)
  paths = {k: res / f'{k}.json' for k in ('norms', 'vjp')}
  bn_paths = {m: res / f'bn_{m}.json' for m in ('midpoint', 'frechet')}
  if args.phase == 'bn':
    bn_paths[args.bn].write_text(json.dumps(bn_time(args), indent=1))
    return
  if args.phase in ('all', 'norms'):
    paths['norms'].write_text(json.dumps(sweep_norms(args), indent=1))
  if args.phase in ('all', 'train'):
    train_cells(args)
  if args.phase in ('all', 'vjp'):
    if not args.smoke:  # two more ResNet compiles, each in its own process: minutes
      for mean in bn_paths:
        _self(args, '--phase=bn', f'--bn={mean}')
    paths['vjp'].write_text(json.dumps(vjp(args), indent=1))
  if args.phase in ('all', 'collect'):
    norms, vjps = (json.loads(p.read_text()) if p.is_file() else {} for p in paths.values())
    bns = {m: json.loads(p.read_text()) for m, p in bn_paths.items() if p.is_file()}
    train_rows = collect_training(args)
    (res / 'study.json').write_text(
      json.dumps(dict(norms=norms, training=train_rows, vjp=vjps, bn=bns), indent=1)
    )
    (res / 'tables.md').write_text(tables(norms, train_rows, vjps, bns))
    plot(norms, fig / 'norms_stack.png', fig / 'norms_resnet.png')
    print(tables(norms, train_rows, vjps, bns))


if __name__ == '__main__':
  main()
