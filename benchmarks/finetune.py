r"""Finetuning step costs of the training loop: a ~2% trainable partition, distillation, masks.

    python benchmarks/finetune.py                          # LM dim 256, depth 4, seq 128, batch 8
    python benchmarks/finetune.py --size=large             # dim 512, depth 8, seq 256, batch 32
    python benchmarks/finetune.py --dim=128 --depth=2 --steps=3 --repeats=3    # quicker

One transformer LM (configs/lm_shakespeare.py at `--size`, or `--dim/--depth/--seq_len/
--batch` overrides; tiny_shakespeare prepared into a temp dir) is built as four `initlab.train.
Run`s whose jitted lean step (`Run.lean_step`: the step the loop runs between log steps) is
timed on a copy of the same first training batch, device-resident:

  full     every param trainable, CE loss, no masks: the baseline of every ratio.
  partial  `config.optimizer.trainable = --trainable` (default the readout: final_norm and
           head, ~2% of the params; the exact fraction is printed). Goals: optimizer-state
           bytes (sum of `nbytes` of `state.opt_state`'s leaves) <= 0.05x, step <= 0.8x.
  distill  `config.train.loss = 'distill'` (T = 2, alpha = 0.5) with a teacher of the same
           config trained `--teacher_steps` steps by `initlab.train.run` into a temp dir; its
           forward runs inside the jitted step. Goal: step <= 1.6x.
  masked   an init scheme registered here (lecun_normal, then a param-stage part that masks
           half of every kernel: `ii.with_stage(..., masks=r'.*kernel')`); the step keeps the
           masked entries at 0. Goal: step <= 1.1x.

Timing: each step is compiled and run `--warmup` times untimed first; then `--repeats` rounds
alternate between the variants (full, partial, distill, masked, full, ...: load from other
processes hits them alike), each timing `--steps` steps (blocking on the last). The table shows
the median per-step wall time and process CPU time (all of XLA's threads) over the rounds;
ratios are medians over the baseline's medians of the same run, goals are judged on wall time
(beside them: the CPU-time ratio, and the median of the per-round wall ratios variant / full,
which cancels load drift between rounds). Temp dirs are removed at exit.

Measured (2 CPU cores shared with other jobs, load average ~4.5; defaults; warm compilation
cache), median wall ms/step: full 440.8, partial 92.2, distill 503.5, masked 428.3. partial
(readout, 1.995% of 3.32M params): opt-state bytes 0.020x, step 0.209x; distill 1.142x
(CPU time 1.160x); masked 0.972x. 70 s in all (114 s with a cold compilation cache and 5 x 8
steps).
"""

import os
import statistics
import sys
import tempfile
import time

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags, logging

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import lm_shakespeare

import initlab.init as ii
from initlab import data as data_lib
from initlab import train

SIZES = {  # name -> (dim, depth, num_heads, seq_len, batch)
  'small': (256, 4, 4, 128, 8),  # ~3.3M params: a step takes ~0.1-0.5 s on 2 CPU cores.
  'large': (512, 8, 8, 256, 32),  # For accelerators.
}

_SIZE = flags.DEFINE_enum('size', 'small', list(SIZES), 'Preset LM size (see SIZES).')
_DIM = flags.DEFINE_integer('dim', None, 'Model width (overrides --size).')
_DEPTH = flags.DEFINE_integer('depth', None, 'Transformer blocks (overrides --size).')
_HEADS = flags.DEFINE_integer('heads', None, 'Attention heads (overrides --size).')
_SEQ = flags.DEFINE_integer('seq_len', None, 'Sequence length (overrides --size).')
_BATCH = flags.DEFINE_integer('batch', None, 'Global batch size (overrides --size).')
_TRAINABLE = flags.DEFINE_string(
  'trainable', r'(final_norm|head)/.*', 'config.optimizer.trainable of the partial variant.'
)
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per variant per round.')
_REPEATS = flags.DEFINE_integer('repeats', 7, 'Rounds (the median over rounds is shown).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps per variant after compiling.')
_TEACHER_STEPS = flags.DEFINE_integer('teacher_steps', 2, 'Steps the teacher is trained.')
_DENSITY = flags.DEFINE_float('density', 0.5, 'Fraction of every kernel the masks keep.')

MASK_SCHEME = 'bench_finetune_half_masks'
VARIANTS = ('full', 'partial', 'distill', 'masked')
# variant -> (metric, goal): ratio of the variant over 'full' must be <= goal.
GOALS = {
  'partial': (('opt-state bytes', 0.05), ('step', 0.8)),
  'distill': (('step', 1.6),),
  'masked': (('step', 1.1),),
}


@ii.register_scheme(MASK_SCHEME, 'benchmarks/finetune.py: lecun_normal, then masks of kernels')
def kernel_masks(density: float = 0.5):
  """lecun_normal, then a param-stage part: a fixed random mask keeping `density` of every
  kernel's entries (declared with `masks=r'.*kernel'`)."""

  def masks_of(key, params, ctx=None):
    del ctx
    masks = {}
    for leaf in ii.leaves(params):
      if not leaf.path.endswith('kernel'):
        continue
      node = masks
      *parents, last = leaf.path.split('/')
      for name in parents:
        node = node.setdefault(int(name) if name.isdigit() else name, {})
      node[last] = jax.random.bernoulli(ii.leaf_key(key, leaf.path), density, leaf.shape)
    return ii.SchemeResult(params, masks=masks)

  return ii.chain(
    ii.get_scheme('lecun_normal'), ii.with_stage(masks_of, 'param', masks=r'.*kernel')
  )


def lm_config(data_dir):
  """configs/lm_shakespeare.py at the chosen size; no eval, checkpoints or diagnostics."""
  dim, depth, heads, seq_len, batch = SIZES[_SIZE.value]
  dim, depth = _DIM.value or dim, _DEPTH.value or depth
  heads, seq_len, batch = _HEADS.value or heads, _SEQ.value or seq_len, _BATCH.value or batch
  config = lm_shakespeare.get_config()
  config.model.update(dict(dim=dim, depth=depth, num_heads=heads, max_len=seq_len))
  config.data.seq_len = seq_len
  config.data.data_dir = data_dir
  config.init.compare = ()
  config.seeds.num = 1
  config.diagnostics_at_init = False
  config.train.update(
    dict(batch_size=batch, eval_every=0, log_every=1, checkpoint_every=0, progress_bar=False)
  )
  return config


def variant_configs(data_dir, teacher_dir):
  configs = {name: lm_config(data_dir) for name in VARIANTS}
  configs['partial'].optimizer.trainable = _TRAINABLE.value
  configs['distill'].train.loss = 'distill'
  configs['distill'].train.distill.update(dict(teacher=teacher_dir, temperature=2.0, alpha=0.5))
  configs['masked'].init.name = MASK_SCHEME
  configs['masked'].init[MASK_SCHEME] = dict(density=_DENSITY.value)
  return configs


def train_teacher(data_dir, workdir):
  """The same LM trained `--teacher_steps` steps (checkpointed at the end) by the loop."""
  config = lm_config(data_dir)
  steps = _TEACHER_STEPS.value
  config.train.update(dict(steps=steps, checkpoint_every=steps, log_every=steps))
  t = time.perf_counter()
  result = train.run(config, workdir)
  print(
    f'teacher: {steps} steps by initlab.train.run in {time.perf_counter() - t:.1f} s, final '
    f'loss {result.summary["final"].get("train/loss", result.summary["final"])}',
    flush=True,
  )


def opt_state_bytes(state):
  return sum(x.nbytes for x in jax.tree.leaves(state.opt_state))


def trainable_fraction(run, state):
  params = ii.leaves(state.params)
  total = sum(leaf.value.size for leaf in params)
  paths = run.setup.trainable
  chosen = [leaf for leaf in params if paths is None or leaf.path in paths]
  return sum(leaf.value.size for leaf in chosen) / total, [leaf.path for leaf in chosen], total


class Variant:
  """One Run, its state and batch; `steps(n)` runs n lean steps, blocking on the last."""

  def __init__(self, name, config, workdir):
    self.name = name
    self.run = train.Run(config, workdir)
    with jax.set_mesh(self.run.mesh):
      self.state, _, _ = self.run.initial_state()
      self.batch = data_lib.to_global(
        next(iter(self.run.train_iterator())), self.run.batch_sharding
      )
    self.opt_bytes = opt_state_bytes(self.state)
    self.wall, self.cpu = [], []  # Per-step seconds, one entry per round.
    t = time.perf_counter()
    self.steps(1)
    self.first_step_s = time.perf_counter() - t  # Compile (or compilation-cache hit) + one step.

  def steps(self, n):
    with jax.set_mesh(self.run.mesh):
      for _ in range(n):
        self.state, _ = self.run.lean_step(self.state, self.batch)
      jax.block_until_ready(self.state.params)

  def time_round(self, n):
    wall, cpu = time.perf_counter(), time.process_time()
    self.steps(n)
    self.wall.append((time.perf_counter() - wall) / n)
    self.cpu.append((time.process_time() - cpu) / n)

  def median(self, what):
    return statistics.median(getattr(self, what))

  def close(self):
    self.run.checkpointer.close()


def masked_zero(variant):
  """(masked entries, of which exactly 0) over every masked param of `variant`'s state."""
  params = {x.path: np.asarray(jax.device_get(x.value)) for x in ii.leaves(variant.state.params)}
  total = zero = 0
  for leaf in ii.leaves(variant.state.masks):
    off = ~np.asarray(jax.device_get(leaf.value))
    total += int(off.sum())
    zero += int((params[leaf.path][off] == 0).sum())
  return total, zero


def verdict(ratio, goal):
  return f'{ratio:.3f}x (goal <= {goal}x: {"PASS" if ratio <= goal else "MISS"})'


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax's INFO lines at every checkpointer close.
  tfds.disable_progress_bar()
  start = time.perf_counter()
  dev = jax.devices()
  with tempfile.TemporaryDirectory(prefix='finetune_bench_') as tmp:
    data_dir = os.path.join(tmp, 'data')
    data_lib.prepare('tiny_shakespeare', data_dir)
    config = lm_config(data_dir)
    m = config.model
    print(
      f'devices: {len(dev)} x {dev[0].device_kind}; LM dim {m.dim}, depth {m.depth}, heads '
      f'{m.num_heads}, seq {config.data.seq_len}, batch {config.train.batch_size}; '
      f'{_REPEATS.value} rounds x {_STEPS.value} steps per variant after {_WARMUP.value} '
      'warm-up steps',
      flush=True,
    )
    teacher_dir = os.path.join(tmp, 'teacher')
    train_teacher(data_dir, teacher_dir)
    variants = {}
    try:
      for name, cfg in variant_configs(data_dir, teacher_dir).items():
        variants[name] = Variant(name, cfg, os.path.join(tmp, name))
      for v in variants.values():
        v.steps(_WARMUP.value)
      for _ in range(_REPEATS.value):  # Rounds alternate between the variants.
        for v in variants.values():
          v.time_round(_STEPS.value)
      report(variants)
    finally:
      for v in variants.values():
        v.close()
  print(f'total {time.perf_counter() - start:.0f} s', flush=True)


def report(variants):
  full, partial = variants['full'], variants['partial']
  fraction, paths, total = trainable_fraction(partial.run, partial.state)
  print(
    f'\npartial: optimizer.trainable={_TRAINABLE.value!r} -> {len(paths)} of the params '
    f'({", ".join(paths)}): {100 * fraction:.3f}% of {total:,} trainable',
  )
  total_masked, zero = masked_zero(variants['masked'])
  print(
    f'masked: {total_masked:,} masked kernel entries, {zero:,} exactly 0 after '
    f'{int(jax.device_get(variants["masked"].state.step))} steps',
  )
  print(
    f'\n{"variant":9s} {"wall ms/step":>13s} {"CPU ms/step":>12s} {"opt-state MiB":>14s} '
    f'{"1st call s":>11s}   wall ms of each round'
  )
  for v in variants.values():
    print(
      f'{v.name:9s} {1e3 * v.median("wall"):13.1f} {1e3 * v.median("cpu"):12.1f} '
      f'{v.opt_bytes / 2**20:14.3f} {v.first_step_s:11.1f}   '
      + ' '.join(f'{1e3 * w:.0f}' for w in v.wall)
    )
  print('\nratios (variant / full: median over median; goals judged on wall time):')
  base = {'wall': full.median('wall'), 'cpu': full.median('cpu')}
  for name, goals in GOALS.items():
    v = variants[name]
    for metric, goal in goals:
      if metric == 'step':
        wall, cpu = v.median('wall') / base['wall'], v.median('cpu') / base['cpu']
        paired = statistics.median(a / b for a, b in zip(v.wall, full.wall))
        print(
          f'  {name:8s} step time        {verdict(wall, goal)}   (by CPU time: {cpu:.3f}x; '
          f'median of per-round wall ratios: {paired:.3f}x)'
        )
      else:
        ratio = v.opt_bytes / full.opt_bytes
        print(
          f'  {name:8s} opt-state bytes  {verdict(ratio, goal)}   '
          f'({v.opt_bytes:,} / {full.opt_bytes:,} B)'
        )
  sys.stdout.flush()


if __name__ == '__main__':
  app.run(main)
