"""GG priors: sampling throughput, shape fits and DeepShape on a 100M-param tree, RF8 vs FP8.

    python benchmarks/gg.py                    # 1e8-param tree (≈ 4 min on 2 busy CPU cores)
    python benchmarks/gg.py --params=2e7       # quick
    python benchmarks/gg.py --only=sampling    # the sampler rows only (issue [gg-scale]: ≤ 2×)

Prints one table; "ratio" is time / baseline time measured in the same run (median of
--repeats after a warm-up, jitted, block_until_ready; the GG sampler rows: median ratio of
back-to-back pairs with the baseline):
  sampling   GG init draws (default "icdf" sampler, the "marsaglia_tsang" option; "jax" =
             jax.random.generalized_normal) vs
             jax.random.normal of the same number of float32s, and scipy.stats.gennorm.rvs;
  fit        `fit_tree` (exact / pooled / mle) on the tree vs one Σθ² pass over it;
  deepshape  `deepshape` on the whole tree vs `jnp.sort` of as many int32 (its main primitive;
             a float `jnp.argsort` is ~7× slower than that on CPU, see initlab/init/gg/shaping.py);
  rf8        encode+decode vs the FP8 E4M3 round trip, and their errors on N(0, 0.02²).
Runs on the default JAX backend (CPU unless told otherwise); one device.
"""

import argparse
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import initlab.init as ii
from initlab.init import gg


def _timeit(fn, repeats):
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _paired(fn, base, repeats):
  """(median time of fn, median of time(fn)/time(base)) over `repeats` back-to-back pairs: on a
  shared machine the load changes between rows, less within a pair."""
  jax.block_until_ready(fn())
  jax.block_until_ready(base())
  times, ratios = [], []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    t1 = time.perf_counter()
    jax.block_until_ready(base())
    t2 = time.perf_counter()
    times.append(t1 - t0)
    ratios.append((t1 - t0) / (t2 - t1))
  return statistics.median(times), statistics.median(ratios)


def _row(rows, name, seconds, base=None, note=''):
  rows.append((name, seconds, None if base is None else seconds / base, note))


def sampling(rows, n, repeats):
  normal = jax.jit(lambda k: jax.random.normal(k, (n,)))
  t_normal = _timeit(lambda: normal(jax.random.key(0)), repeats)
  _row(rows, f'normal {n:.0e} f32 (baseline)', t_normal, t_normal, f'{n / t_normal / 1e6:.0f} M/s')
  normal_k = lambda: normal(jax.random.key(0))
  for beta in (0.5, 1.0, 1.5, 4.0):
    for sampler in ('icdf', 'marsaglia_tsang'):
      init = gg.generalized_gaussian(beta, sampler=sampler)
      f = jax.jit(lambda k, init=init: init(k, (n // 1024, 1024)))
      t, ratio = _paired(lambda f=f: f(jax.random.key(1)), normal_k, repeats)
      rows.append((f'GG {sampler} β={beta}', t, ratio, f'{n / t / 1e6:.0f} M/s'))
  for sampler in ('icdf', 'marsaglia_tsang'):
    init = gg.generalized_gaussian(1.5, truncate=2.0, sampler=sampler)
    f = jax.jit(lambda k, init=init: init(k, (n // 1024, 1024)))
    t, ratio = _paired(lambda f=f: f(jax.random.key(1)), normal_k, repeats)
    rows.append((f'GG {sampler} β=1.5 truncate=2', t, ratio, f'{n / t / 1e6:.0f} M/s'))
  m = max(n // 16, 1 << 16)  # the jax sampler is slow: time fewer draws, compare per draw
  init = gg.generalized_gaussian(1.5, sampler='jax')
  f = jax.jit(lambda k: init(k, (m // 1024, 1024)))
  t = _timeit(lambda: f(jax.random.key(1)), 1) * n / m
  _row(
    rows, 'GG jax.random.generalized_normal', t, t_normal, f'{n / t / 1e6:.1f} M/s (from {m:.0e})'
  )
  rng, m = np.random.default_rng(0), min(n, 1 << 22)
  t = _timeit(lambda: stats.gennorm.rvs(1.5, size=m, random_state=rng), 1) * n / m
  _row(
    rows,
    'scipy gennorm.rvs β=1.5 (numpy, f64)',
    t,
    t_normal,
    f'{n / t / 1e6:.1f} M/s (from {m:.0e})',
  )


def big_tree(num_params):
  """Four (rows, 2500) float32 kernels summing to `num_params`, GG(β=1) init, jitted."""
  rows = int(num_params) // 4 // 2500
  kernel = jax.ShapeDtypeStruct((rows, 2500), jnp.float32)
  tree = {f'layer{i}': {'kernel': kernel} for i in range(4)}
  scheme = jax.jit(lambda k: ii.get_scheme('gg', beta=1.0)(k, tree))
  t0 = time.perf_counter()
  params = jax.block_until_ready(scheme(jax.random.key(0)))
  return params, 4 * rows * 2500, time.perf_counter() - t0


def fits(rows, params, repeats):
  sumsq = jax.jit(lambda p: sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(p)))
  base = _timeit(lambda: sumsq(params), repeats)
  _row(rows, 'Σθ² pass over the tree (baseline)', base, base)
  beta = float(gg.fit_tree(params, pooled=True)[gg.POOLED].beta)
  for name, kw in (
    ('fit_tree exact, per tensor', {}),
    ('fit_tree exact, pooled', dict(pooled=True)),
    ('fit_tree mle, pooled', dict(pooled=True, method='mle')),
  ):
    fn = lambda kw=kw: list(gg.fit_tree(params, **kw).values())
    t = _timeit(fn, 1 if 'mle' in name else repeats)
    _row(rows, name, t, base, f'β̂={beta:.3f} (true 1)' if 'pooled' in name else '')


def deepshape(rows, params, num_params):
  keys = jax.random.randint(jax.random.key(0), (num_params,), -(2**31), 2**31 - 1, jnp.int32)
  base = _timeit(lambda: jnp.sort(keys), 1)
  del keys
  _row(rows, f'jnp.sort of {num_params:.0e} int32 (baseline)', base, base)
  t0 = time.perf_counter()
  out, info = gg.deepshape(params, return_info=True)
  jax.block_until_ready(out)
  t = time.perf_counter() - t0  # one run: includes compilation (~seconds)
  _row(
    rows,
    'deepshape (1 run, with compile)',
    t,
    base,
    f'T={info.half_range} β̂ {info.beta:.2f}→{info.beta_target:.2f}',
  )
  del out


def rf8(rows, params, repeats):
  w = jax.tree_util.tree_leaves(params)[0]
  base = _timeit(lambda: gg.fp8_e4m3_fake_quant(w), repeats)
  _row(rows, f'fp8 e4m3 round trip {w.size:.0e} (baseline)', base, base)
  t = _timeit(lambda: gg.rf8_fake_quant(w), repeats)
  _row(rows, 'rf8 encode+decode', t, base)
  x = (np.random.default_rng(0).standard_normal(1_000_000) * 0.02).astype(np.float32)
  for name, fq in (
    ('rf8', gg.rf8_fake_quant),
    ('fp8 e4m3 (per-tensor scale)', gg.fp8_e4m3_fake_quant),
  ):
    err = np.asarray(fq(x), np.float64) - x
    nz = np.asarray(fq(x)) != 0
    print(
      f'  {name:28s} N(0,0.02²) 1e6: RMS err/σ = {np.sqrt(np.mean(err**2)) / 0.02:.4f}, '
      f'max rel err (nonzero) = {np.max(np.abs(err[nz]) / np.abs(x[nz])):.4f}, '
      f'zeros = {int((~nz).sum())}'
    )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--params', type=float, default=1e8, help='size of the param tree')
  parser.add_argument('--draws', type=float, default=2**24, help='draws in the sampling rows')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--only', choices=('sampling',), help='run only these rows')
  args = parser.parse_args()
  print(f'backend={jax.default_backend()} devices={jax.device_count()}')
  t_start = time.perf_counter()
  rows = []
  sampling(rows, int(args.draws), args.repeats)
  if args.only:
    return _print(rows, t_start)
  params, num_params, t_init = big_tree(args.params)
  print(
    f'  GG(β=1) init of a {num_params:.2e}-param tree (4 kernels, jitted, with compile): '
    f'{t_init:.1f} s'
  )
  fits(rows, params, args.repeats)
  rf8(rows, params, args.repeats)
  deepshape(rows, params, num_params)
  _print(rows, t_start)


def _print(rows, t_start):
  print(f'\n{"benchmark":44s} {"seconds":>9s} {"ratio":>7s}  note')
  for name, sec, ratio, note in rows:
    print(f'{name:44s} {sec:9.3f} {"" if ratio is None else f"{ratio:7.2f}":>7s}  {note}')
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f'\npeak RSS {rss:.1f} GB; total {time.perf_counter() - t_start:.0f} s')


if __name__ == '__main__':
  main()
