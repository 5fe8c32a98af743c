r"""initlab's train step vs a minimal hand-written `jax.jit` step; LM model-FLOPs utilization.

    python benchmarks/step_overhead.py                       # MLP, ResNet-20, LM; CPU sizes
    python benchmarks/step_overhead.py --models=lm --size=large --peak_tflops=989

For each model, both steps run the same model, optimizer and device-resident batch: initlab's
(`initlab.train.step.make_train_step`: explicit shardings, donated state, on-device metrics
l2_params/l2_grads/l2_updates/accuracy/NaN tracking) and a plain NNX/optax step (value_and_grad,
update, apply_updates; donated). Steps/s over `--repeats` x `--steps` steps each after warm-up,
timed in blocks of `--block` steps that alternate between the functions (so load from other
processes hits them alike), and at least `--min_seconds` each; ratio = initlab / baseline
steps/s (goal >= 0.97), also by process CPU time (robust to other processes' load), and
the FLOPs and bytes of both compiled programs (XLA cost analysis: noise-free). The loop
runs initlab's lean step between log steps and its metrics step every `log_every` steps; both
are timed (the metrics step's ratio is printed too).

LM MFU = 6 * params * tokens/s / peak FLOP/s of all devices; the peak per device is
`--peak_tflops`, else a table of known accelerators (dense bf16), else an assumed CPU peak
(cores x 3 GHz x 32 f32 FLOP/cycle), printed as such.
"""

import os
import sys
import tempfile
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import lm_shakespeare
import quickstart
import resnet_digits
from initlab import data as data_lib
from initlab import train

_MODELS = flags.DEFINE_list('models', ['mlp', 'resnet', 'lm'], 'Models to time.')
_STEPS = flags.DEFINE_integer('steps', 200, 'Timed steps per round.')
_WARMUP = flags.DEFINE_integer('warmup', 20, 'Untimed steps per function first.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Passes of `steps` steps per step function.')
_MIN_SECONDS = flags.DEFINE_float(
  'min_seconds', 4.0, 'Keep timing until each function ran this long (fast models get more steps).'
)
_BLOCK = flags.DEFINE_integer(
  'block', 20, 'Steps per timed block; blocks of the step functions alternate.'
)
_SIZE = flags.DEFINE_enum(
  'size',
  'cpu',
  ['cpu', 'large'],
  "'cpu': small models; 'large': the configs as they are (for accelerators).",
)
_PEAK = flags.DEFINE_float('peak_tflops', None, 'Peak TFLOP/s per device for the MFU.')

# Dense bf16 peak TFLOP/s per JAX device (by device_kind prefix).
PEAK_TFLOPS = {
  'NVIDIA H200': 989.0,
  'NVIDIA H100': 989.0,
  'NVIDIA A100': 312.0,
  'NVIDIA L4': 121.0,
  'NVIDIA A10G': 70.0,
  'Tesla V100': 125.0,
  'Tesla T4': 65.0,
  'TPU v6 lite': 918.0,
  'TPU v5p': 459.0,
  'TPU v5 lite': 197.0,
  'TPU v4': 275.0,
  'TPU v3': 61.5,
  'TPU v2': 22.5,
}


def _configs():
  """name -> config (no checkpoints/eval: only the step is timed)."""
  mlp = quickstart.get_config()
  resnet = resnet_digits.get_config('scheme=he_normal')
  lm = lm_shakespeare.get_config()
  if _SIZE.value == 'cpu':
    resnet.train.batch_size = 32
    lm.model.update(dict(dim=128, depth=2, num_heads=4, max_len=64))
    lm.data.seq_len = 64
    lm.train.batch_size = 8
  out = {}
  for name, config in (('mlp', mlp), ('resnet', resnet), ('lm', lm)):
    config.init.compare = ()
    config.seeds.num = 1
    config.diagnostics_at_init = False
    config.train.progress_bar = False
    out[name] = config
  return out


def _baseline_step(run, task):
  """A minimal NNX + optax step on the same model and optimizer (the hand-written yardstick).

  Params and optimizer state are plain dicts of arrays (the fastest pytrees to dispatch).
  """
  tx = run.setup.tx
  inputs, targets = {'classification': ('image', 'label'), 'lm': ('inputs', 'targets')}[task]
  model = run.setup.model(run.setup.init(jax.random.key(0), jax.random.key(1)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def step(p, opt_state, r, batch):
    def loss_fn(p):
      m = nnx.merge(graphdef, _as_state(params, p), _as_state(rest, r))
      logits = m(batch[inputs], train=True).astype(jnp.float32)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch[targets]).mean()
      return loss, nnx.state(m, nnx.Not(nnx.Param)).to_pure_dict()

    (loss, r), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, r, loss

  p, r = params.to_pure_dict(), rest.to_pure_dict()
  return jax.jit(step, donate_argnums=(0, 1, 2)), (p, jax.jit(tx.init)(p), r)


def _as_state(template, pure):
  state = jax.tree.map(lambda x: x, template)
  nnx.replace_by_pure_dict(state, pure)
  return state


def _time(fn, n):
  """(wall, process CPU) seconds of `n` calls of `fn`, blocking on the last result."""
  out = fn()
  jax.block_until_ready(out)
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(n):
    out = fn()
  jax.block_until_ready(out)
  return time.perf_counter() - wall, time.process_time() - cpu


def _cost(fn, *args):
  """(FLOPs, bytes accessed) of `fn`'s compiled program, from XLA's cost analysis."""
  cost = fn.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost.get('flops', float('nan')), cost.get('bytes accessed', float('nan'))


def _peak_tflops():
  kind = jax.devices()[0].device_kind
  if _PEAK.value:
    return _PEAK.value, f'--peak_tflops ({kind})'
  for prefix, tflops in PEAK_TFLOPS.items():
    if kind.startswith(prefix):
      return tflops, f'table: {prefix}'
  if jax.devices()[0].platform == 'cpu':
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    tflops = cores * 3e9 * 32 / 1e12 / jax.device_count()
    return tflops, f'ASSUMED CPU peak: {cores} cores x 3 GHz x 32 FLOP/cycle'
  raise SystemExit(f'unknown device {kind!r}: pass --peak_tflops')


def bench(name, config, workdir):
  run = train.Run(config, workdir)
  task = run.meta.task
  with jax.set_mesh(run.mesh):
    state, _, _ = run.initial_state()
    batch = data_lib.to_global(next(iter(run.train_iterator())), run.batch_sharding)
    base_step, base_state = _baseline_step(run, task)
    costs = [_cost(run.lean_step, state, batch), _cost(base_step, *base_state, batch)]
    box = {'initlab': state, 'baseline': base_state}

    def initlab_step():  # The step the loop runs between log steps.
      box['initlab'], _ = run.lean_step(box['initlab'], batch)
      return box['initlab'].step

    def initlab_log_step():  # The step of log steps: + l2 norms, accuracy, learning rate.
      box['initlab'], metrics = run.train_step(box['initlab'], batch)
      return metrics['loss']

    def baseline_step():
      *rest, loss = base_step(*box['baseline'], batch)
      box['baseline'] = tuple(rest)
      return loss

    fns = {'initlab': initlab_step, 'baseline': baseline_step, 'log_step': initlab_log_step}
    for fn in fns.values():
      _time(fn, _WARMUP.value)
    # Short blocks, interleaved: load from other processes hits every function alike.
    times = {key: [] for key in fns}
    while (
      len(times['initlab']) * _BLOCK.value < _STEPS.value * _REPEATS.value
      or min(sum(w for w, _ in v) for v in times.values()) < _MIN_SECONDS.value
    ):
      for key, fn in fns.items():
        times[key].append(_time(fn, _BLOCK.value))
  n = len(times['initlab']) * _BLOCK.value
  rate = {k: n / sum(w for w, _ in v) for k, v in times.items()}
  cpu_rate = {k: n / sum(c for _, c in v) for k, v in times.items()}
  ours, theirs = rate['initlab'], rate['baseline']
  print(
    f'{name:7s} initlab {ours:9.1f} steps/s   baseline {theirs:9.1f} steps/s   '
    f'ratio {ours / theirs:.3f}   (by process CPU time: '
    f'{cpu_rate["initlab"] / cpu_rate["baseline"]:.3f}; log step with metrics '
    f'{rate["log_step"]:.1f} steps/s, ratio {rate["log_step"] / theirs:.3f}; '
    f'{n} steps each)',
    flush=True,
  )
  print(
    f'{"":7s} compiled cost (XLA cost analysis): initlab {costs[0][0]:.4g} FLOPs, '
    f'{costs[0][1]:.4g} bytes; baseline {costs[1][0]:.4g} FLOPs, {costs[1][1]:.4g} bytes',
    flush=True,
  )
  if task == 'lm':
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    tokens = config.train.batch_size * config.data.seq_len
    peak, source = _peak_tflops()
    flops = 6 * num_params * tokens * ours
    mfu = flops / (peak * 1e12 * jax.device_count())
    print(
      f'lm      params {num_params:,}  tokens/step {tokens}  {tokens * ours:,.0f} tokens/s  '
      f'{flops / 1e12:.4f} TFLOP/s  peak {peak:.3f} TFLOP/s/device x {jax.device_count()} '
      f'({source})  MFU {100 * mfu:.2f}%',
      flush=True,
    )
  return ours / theirs


def main(argv):
  del argv
  print(
    f'devices: {jax.device_count()} x {jax.devices()[0].device_kind}; >= {_STEPS.value} '
    f'steps x {_REPEATS.value} passes in blocks of {_BLOCK.value} (and >= '
    f'{_MIN_SECONDS.value} s) after {_WARMUP.value} warm-up steps; sizes: {_SIZE.value}'
  )
  configs = _configs()
  with tempfile.TemporaryDirectory() as tmp:
    for name in _MODELS.value:
      bench(name, configs[name], os.path.join(tmp, name))


if __name__ == '__main__':
  app.run(main)
