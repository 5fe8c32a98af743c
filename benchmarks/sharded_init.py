"""Sharded init of a ~1B-parameter LM vs the naive way, on an 8-device CPU mesh.

    python benchmarks/sharded_init.py                 # ~1.04B params, FSDP over 8 devices
    python benchmarks/sharded_init.py --dim=512 --depth=4 --vocab=8192   # quick
    python benchmarks/sharded_init.py --scheme=gg                        # GG(β=1.5) kernels
    python benchmarks/sharded_init.py --scheme=gg --scheme_options='{"beta": 0.5}'

Each mode runs in its own process so peak RSS (ru_maxrss) is its own:
  sharded: `initlab.init.create_sharded` (construction + scheme under jit, out_shardings);
  naive:   build the model eagerly on one device, then `jax.device_put` to the shardings;
  normal:  fill the same number of float32s with `jax.random.normal`, sharded the same way.
Goals (issue [core]): sharded peak RSS ≤ 1.2 × param bytes + 1 GB; sharded time ≤ 1.5 × normal.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

GB = 1024**3


def _model_fn(args):
  from initlab import models  # pylint: disable=g-import-not-at-top

  cfg = models.default_config('transformer_lm')
  cfg.update(
    vocab_size=args.vocab,
    dim=args.dim,
    depth=args.depth,
    num_heads=args.heads,
    max_len=args.max_len,
  )
  return lambda rngs: models.build(cfg, rngs=rngs)


def _child(args):
  os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import initlab.init as ii  # pylint: disable=g-import-not-at-top
  from initlab import sharding as sharding_lib  # pylint: disable=g-import-not-at-top

  mesh = sharding_lib.make_mesh((('data', 8), ('model', 1)))
  rules = sharding_lib.logical_axis_rules('fsdp')
  model_fn = _model_fn(args)
  options = json.loads(args.scheme_options)
  if args.scheme in ('gg', 'gg_model'):
    options.setdefault('beta', 1.5)
  scheme = ii.get_scheme(args.scheme, **options)
  _, abstract = ii.abstract_model(model_fn)
  n_params = sum(l.value.size for l in ii.leaves(abstract))
  rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  key = jax.random.key(0)
  t0 = time.perf_counter()
  if args.mode == 'sharded':
    _, init, _ = ii.sharded_init(model_fn, mesh=mesh, axis_rules=rules, scheme=scheme)
    compiled = init.lower(key).compile()
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = compiled(key)
  elif args.mode == 'naive':
    t_compile = 0.0
    model = model_fn(nnx.Rngs(key))
    state = scheme(key, nnx.state(model, nnx.Param))
    shardings = sharding_lib.state_shardings(state, mesh, rules)
    out = jax.device_put(state, shardings)
    del model, state
  else:
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
    fill = jax.jit(lambda k: jax.random.normal(k, (n_params,)), out_shardings=sharding)
    compiled = fill.lower(key).compile()
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = compiled(key)
  jax.block_until_ready(out)
  seconds = time.perf_counter() - t0
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  print(
    json.dumps(
      dict(
        mode=args.mode,
        n_params=int(n_params),
        param_bytes=int(4 * n_params),
        seconds=seconds,
        compile_s=t_compile,
        peak_rss=rss,
        rss_before=rss_start,
      )
    )
  )


def main():
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--dim', type=int, default=2048)
  parser.add_argument('--depth', type=int, default=18)
  parser.add_argument('--heads', type=int, default=16)
  parser.add_argument('--vocab', type=int, default=32000)
  parser.add_argument('--max_len', type=int, default=2048)
  parser.add_argument('--scheme', default='he_normal')
  parser.add_argument(
    '--scheme_options',
    default='{}',
    help='JSON keyword arguments of the scheme (gg: beta defaults to 1.5)',
  )
  parser.add_argument(
    '--modes',
    default='normal,sharded,naive',
    help='which of normal,sharded,naive to run (naive holds the model twice)',
  )
  parser.add_argument('--mode', choices=('sharded', 'naive', 'normal'), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.mode:
    return _child(args)

  results = {}
  for mode in args.modes.split(','):
    cmd = [sys.executable, __file__, f'--mode={mode}'] + [
      a for a in sys.argv[1:] if not a.startswith('--mode')
    ]
    print(f'running {mode} ...', flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
      print(out.stderr[-3000:])
      raise SystemExit(f'{mode} failed with exit code {out.returncode}')
    results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
  n, pbytes = results['sharded']['n_params'], results['sharded']['param_bytes']
  print(
    f'\nLM with {n / 1e9:.3f}B params = {pbytes / GB:.2f} GiB float32, 8 fake CPU devices, FSDP'
  )
  print(f'{"mode":<9}{"time s":>9}{"compile s":>11}{"peak RSS GiB":>14}{"RSS / param bytes":>19}')
  for mode, r in results.items():
    print(
      f'{mode:<9}{r["seconds"]:>9.2f}{r["compile_s"]:>11.2f}{r["peak_rss"] / GB:>14.2f}'
      f'{r["peak_rss"] / pbytes:>19.2f}'
    )
  s, nv, nm = results['sharded'], results.get('naive'), results.get('normal')
  budget = 1.2 * pbytes + GB
  print(
    f'\nsharded peak RSS / (1.2 × param bytes + 1 GiB) = {s["peak_rss"] / budget:.2f}  (goal ≤ 1)'
  )
  if nm:
    print(
      f'sharded time / jax.random.normal time         = {s["seconds"] / nm["seconds"]:.2f}  (goal ≤ 1.5)'
    )
  if nv:
    print(f'sharded peak RSS / naive peak RSS            = {s["peak_rss"] / nv["peak_rss"]:.2f}')
    print(f'sharded time / naive time                     = {s["seconds"] / nv["seconds"]:.2f}')


if __name__ == '__main__':
  main()
