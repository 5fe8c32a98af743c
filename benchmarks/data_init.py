"""Wall time of the data-stage schemes (lsuv, metainit, gradinit) against one training step.

    python benchmarks/data_init.py [--batch 32] [--steps 2,10]

Models: ResNet-20 (32×32×3 inputs, 10 classes) and a small transformer LM (vocab 256,
dim 64, depth 2, sequence 64), random data. The training step is `value_and_grad` of the
training loss plus an SGD update, jitted, timed after warm-up (median of 10).

The schemes build their jitted programs per call. To time them compiled, the persistent
compilation cache is on (a temporary directory) and each scheme is called once to warm it;
the timed calls then load their programs from it (tracing still counts). metainit and
gradinit are timed with two step counts (best of 2 each), giving a fixed part (tracing,
cache loads, set-up) and a per-iteration cost; "default" extrapolates to the scheme's
default step count (metainit 500, gradinit 100). LSUV is timed as one call (best of 2).
All figures are multiples of one training step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import initlab.init as ii
import initlab.models as im
from initlab.init.families import gradinit, metainit
from initlab.train import state as state_lib

DEFAULT_STEPS = {'metainit': 500, 'gradinit': 100}


def _setup(name, batch):
  rng = np.random.default_rng(0)
  if name == 'resnet20':
    cfg = im.default_config('resnet20')
    task = 'classification'
    make = lambda: {
      'image': jnp.asarray(rng.normal(size=(batch, 32, 32, 3)), jnp.float32),
      'label': jnp.asarray(rng.integers(0, 10, batch), jnp.int32),
    }
  else:
    cfg = im.default_config('transformer_lm')
    cfg.update(dict(vocab_size=256, dim=64, depth=2, num_heads=2, max_len=64))
    task = 'lm'

    def make():
      tokens = jnp.asarray(rng.integers(0, 256, (batch, 65)), jnp.int32)
      return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:]}

  module = im.build(cfg, rngs=nnx.Rngs(0))
  params, model_state = state_lib.pure_variables(module)
  data = ii.DataContext(
    graphdef=nnx.graphdef(module), model_state=model_state, batches=(make(), make()), task=task
  )
  return params, ii.InitContext(hints=module.init_hints(), data=data)


def _timed(fn, repeats=1, reduce=statistics.median):
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return reduce(times)


def train_step_time(params, ctx):
  tx = optax.sgd(0.1)

  @jax.jit
  def step(params, opt_state, batch):
    loss, g = jax.value_and_grad(lambda p: ctx.data.loss(p, batch, train=True))(params)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = tx.init(params)
  batch = ctx.data.batches[0]
  _timed(lambda: step(params, opt_state, batch), 2)
  return _timed(lambda: step(params, opt_state, batch), 10)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--steps', default='2,10', help='two step counts for metainit/gradinit')
  parser.add_argument('--models', default='resnet20,lm')
  args = parser.parse_args()
  s1, s2 = (int(s) for s in args.steps.split(','))
  jax.config.update('jax_compilation_cache_dir', tempfile.mkdtemp(prefix='data_init_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  print(f'backend={jax.default_backend()} devices={jax.device_count()} batch={args.batch}')
  print(
    f'{"model":<9} {"scheme":<9} {"call":>9} {"fixed":>9} {"per iter":>9} {"default":>9}'
    '   (multiples of one train step)'
  )
  for name in args.models.split(','):
    params, ctx = _setup(name, args.batch)
    base = train_step_time(params, ctx)
    print(f'{name:<9} train step = {base * 1e3:.1f} ms')
    key = jax.random.key(0)
    first = _timed(lambda: ii.get_scheme('lsuv')(key, params, ctx))
    lsuv = _timed(lambda: ii.get_scheme('lsuv')(key, params, ctx), 2, min)
    print(
      f'{name:<9} {"lsuv":<9} {lsuv / base:9.1f} {"":>9} {"":>9} {lsuv / base:9.1f}'
      f'   (first call, compiling: {first / base:.1f})'
    )
    for scheme, run in (('metainit', metainit.run), ('gradinit', gradinit.run)):
      first = _timed(lambda: run(key, params, ctx, steps=1)[0])
      t1 = _timed(lambda: run(key, params, ctx, steps=s1)[0], 2, min)
      t2 = _timed(lambda: run(key, params, ctx, steps=s2)[0], 2, min)
      per = max(t2 - t1, 0.0) / (s2 - s1)
      fixed = max(t1 - s1 * per, 0.0)
      default = fixed + DEFAULT_STEPS[scheme] * per
      print(
        f'{name:<9} {scheme:<9} {t2 / base:9.1f} {fixed / base:9.1f} {per / base:9.1f} '
        f'{default / base:9.1f}   (first call, compiling: {first / base:.1f})'
      )


if __name__ == '__main__':
  main()
