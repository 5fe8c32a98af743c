r"""PreCropping vs masked pruning at init: step time and memory at equal kernel params, and
the cost of scoring.

    python benchmarks/precrop.py                   # ResNet-20 on digits, batch 128
    python benchmarks/precrop.py --steps=3 --repeats=3      # quicker

configs/resnet_digits.py's ResNet-20 (width 1, 8x8x1 digits, batch 128) as `initlab.train.Run`s, each timing its jitted lean step (`Run.lean_step`) on one
device-resident batch:

  dense          he_normal: the reference for the scoring costs.
  masked@d       `pai_mask` (SNIP, density d): the dense net with masks (the step multiplies
                 gradients and params by them), d in --densities.
  precrop@d      `precrop` (SNIP, density d): the narrower dense net at the same kernel params.

Goal (issue [precrop]): the cropped step <= 0.5x the masked one at 10% density. Timing: each
program is compiled and run --warmup times untimed; --repeats rounds alternate between the
variants, each timing --steps steps; the table shows medians. Memory: the compiled step's
XLA memory analysis (arguments + temporaries + outputs - aliased, bytes), the peak a device
needs for it. Scoring: SNIP, GraSP and single-shot SynFlow (`initlab.init.pruning.scores`)
and 100-round SynFlow (`synflow_masks`) on the dense net's params and batch, each the median
of --repeats calls after one compiling call, over the dense step's median.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import jax

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'configs'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import resnet_digits

from initlab import data as data_lib
from initlab import train
from initlab.init import pruning


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--densities', default='0.1,0.02')
  p.add_argument('--batch', type=int, default=128)
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--warmup', type=int, default=2)
  args = p.parse_args(argv)
  args.densities = tuple(float(d) for d in args.densities.split(','))
  return args


def config(args, scheme, density=None):
  c = resnet_digits.get_config(f'scheme={scheme}')
  c.diagnostics_at_init = False
  c.train.update(
    dict(batch_size=args.batch, eval_every=0, checkpoint_every=0, log_every=1, progress_bar=False)
  )
  if density is not None:
    c.init[scheme] = dict(score='snip', density=density)
  return c


class Variant:
  """A Run, its state and one batch; `time_round(n)` appends the median s/step of n steps."""

  def __init__(self, name, c, workdir):
    self.name, self.run = name, train.Run(c, workdir)
    with jax.set_mesh(self.run.mesh):
      self.state, _, _ = self.run.initial_state()
      batch = next(iter(self.run.train_iterator()))
      self.batch = data_lib.to_global(batch, self.run.batch_sharding)
    masked_out = sum(int((~m).sum()) for m in jax.tree.leaves(self.state.masks))
    self.params = sum(x.size for x in jax.tree.leaves(self.state.params)) - masked_out
    compiled = self.run.lean_step.lower(self.state, self.batch).compile()
    mem = compiled.memory_analysis()
    self.bytes = (
      mem.argument_size_in_bytes
      + mem.temp_size_in_bytes
      + mem.output_size_in_bytes
      - mem.alias_size_in_bytes
    )
    self.wall = []

  def steps(self, n):
    with jax.set_mesh(self.run.mesh):
      for _ in range(n):
        self.state, _ = self.run.lean_step(self.state, self.batch)
      jax.block_until_ready(self.state.params)

  def time_round(self, n):
    t = time.perf_counter()
    self.steps(n)
    self.wall.append((time.perf_counter() - t) / n)

  def median(self):
    return statistics.median(self.wall)


def scoring_times(dense: Variant, repeats: int) -> dict[str, float]:
  """Median seconds of each score (and 100-round SynFlow) on the dense net's params/batch."""
  run, state, batch = dense.run, dense.state, dense.batch
  model_state = state.model_state

  def apply_fn(params, x):
    from flax import nnx  # pylint: disable=g-import-not-at-top

    model = nnx.merge(run.setup.graphdef, params, model_state)
    return model(x, train=False)

  calls = {
    method: jax.jit(
      lambda p, x, y, m=method: pruning.scores(m, apply_fn, p, x, y, key=jax.random.key(0))
    )
    for method in ('snip', 'grasp', 'synflow')
  }
  out = {}
  with jax.set_mesh(run.mesh):
    x, y = batch['image'], batch['label']
    for method, fn in calls.items():
      jax.block_until_ready(fn(state.params, x, y))
      times = []
      for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(state.params, x, y))
        times.append(time.perf_counter() - t)
      out[method] = statistics.median(times)
    t = time.perf_counter()
    jax.block_until_ready(pruning.synflow_masks(apply_fn, state.params, x, 0.1, rounds=100))
    out['synflow x100 rounds'] = time.perf_counter() - t
  return out


def main(argv=None):
  args = parse_args(argv)
  start = time.perf_counter()
  dev = jax.devices()
  print(
    f'devices: {len(dev)} x {dev[0].device_kind}; ResNet-20 on 8x8x1 digits, '
    f'batch {args.batch}; {args.repeats} rounds x {args.steps} steps after {args.warmup} warm-up',
    flush=True,
  )
  with tempfile.TemporaryDirectory(prefix='precrop_bench_') as tmp:
    specs = [('dense', config(args, 'he_normal'))]
    for d in args.densities:
      specs += [(f'masked@{d:g}', config(args, 'pai_mask', d))]
      specs += [(f'precrop@{d:g}', config(args, 'precrop', d))]
    variants = {}
    try:
      for name, c in specs:
        variants[name] = Variant(name, c, os.path.join(tmp, name))
      for v in variants.values():
        v.steps(args.warmup)
      for _ in range(args.repeats):
        for v in variants.values():
          v.time_round(args.steps)
      print(f'\n{"variant":14s} {"kept params":>11s} {"wall ms/step":>13s} {"step MiB":>9s}')
      for v in variants.values():
        print(f'{v.name:14s} {v.params:11,d} {1e3 * v.median():13.1f} {v.bytes / 2**20:9.2f}')
      print('\nprecrop / masked at equal kernel params (median over median):')
      for d in args.densities:
        crop, masked = variants[f'precrop@{d:g}'], variants[f'masked@{d:g}']
        ratio = crop.median() / masked.median()
        goal = '' if d != 0.1 else f' (goal <= 0.5x: {"PASS" if ratio <= 0.5 else "MISS"})'
        print(
          f'  density {d:g}: step {ratio:.3f}x{goal}, memory {crop.bytes / masked.bytes:.3f}x, '
          f'params {crop.params / masked.params:.3f}x'
        )
      base = variants['dense'].median()
      print('\nscoring time / one dense train step:')
      for method, s in scoring_times(variants['dense'], args.repeats).items():
        print(f'  {method:20s} {1e3 * s:9.1f} ms  {s / base:7.2f}x')
    finally:
      for v in variants.values():
        v.run.checkpointer.close()
  print(f'total {time.perf_counter() - start:.0f} s')


if __name__ == '__main__':
  main()
