r"""LoRA initialization against PEFT (init time and reconstruction error at GPT-2-small shapes),
and the training step with adapters against full fine-tuning.

    python benchmarks/lora_init.py                      # 12 layers, r = 16, 3 repeats
    python benchmarks/lora_init.py --layers=2 --repeats=1 --rounds=2 --steps=2    # quicker
    python benchmarks/lora_init.py --methods=pissa_niter_4 --rounds=0     # init only, one method

Peers: `pip install -e ".[bench]"` (CPU torch, peft). Both libraries run on the same cores:
XLA:CPU and the LAPACK under jaxlib use every core of the process, and torch gets
`torch.set_num_threads(--threads)` (default: the number of cores of the process, printed).

Init: the 4 L matrices of L = --layers GPT-2-small layers, (in, out) = c_attn (768, 2304),
attn c_proj (768, 768), c_fc (768, 3072), mlp c_proj (3072, 768): K = U diag(σ) Vᵀ with
Haar-random U, V (seed 0) and σ_i = i^-0.5, stored in float32; torch gets W = Kᵀ (out, in).
For each method of --methods (PEFT's `init_lora_weights` names: 'pissa' full SVD,
'pissa_niter_<n>' randomized SVD with n subspace iterations, 'olora'):

  initlab  `initlab.init.lora.decompose(K, r, method, alpha=..., key=...)` on each shape
           group stacked (L, n, m): 4 jitted calls, each compiled ahead (`lower().compile()`:
           the compile column, not in the time) and run once untimed; the time is the sum of
           the 4 calls, each blocked on (`jax.block_until_ready`).
  PEFT     `get_peft_model(model, LoraConfig(r, lora_alpha, target_modules=[c_attn, c_proj,
           c_fc], init_lora_weights=method))` on a fresh torch module (GPT-2's h[i].attn.c_attn,
           ...: 4 L `nn.Linear`s holding W), which decomposes layer by layer as PEFT does.
           Raw: that call. Init: raw - the same call with `init_lora_weights=True` (PEFT's
           default: adapter creation and wrapping without any decomposition), the fair
           comparison; the goal (initlab / PEFT <= 0.5) is judged on it.

Rounds alternate between the variants (--repeats of them; the median is shown). Reconstruction
at equal settings, max over the 4 L matrices, float64 from the float32 outputs: `recon`
‖K - (residual + s·a@b)‖/‖K‖ (PEFT: ‖W - (W_res + s·BA)‖/‖W‖ from the PEFT model's base weight,
lora_A and lora_B), and for PiSSA `rank-r` ‖s·a@b - K_r‖/‖K_r‖ with K_r the exact rank-r
truncated SVD (known from the construction). Agreement on layer 0's attn c_proj (768 x 768):
the max abs difference of the products s·a@b of the two libraries (signs of singular vectors
may differ, the products may not) for 'pissa' and 'olora'.

Step: configs/lm_shakespeare.py's transformer LM at its default size (dim 256, depth 4, 4 heads;
--seq_len 128 and --batch 8 as benchmarks/finetune.py's default; tiny_shakespeare prepared into
a temp dir) as two `initlab.train.Run`s whose jitted `Run.lean_step` is timed as
benchmarks/finetune.py does (compile + --warmup untimed steps, then --rounds rounds alternating
between the variants, each timing --steps steps; medians):

  full     every param trainable.
  lora     `config.lora`: targets r'blocks/(attn/(query|key|value|out)|mlp/(fc1|fc2))/kernel',
           rank --rank, alpha --alpha, init 'lora_default'; only the adapters train.

Measured (`python benchmarks/lora_init.py`, defaults; 2 CPU cores (AMD EPYC) shared with another
developer, load average 0.24 at the start and 2.59 at the end (`uptime`); jax 0.10.2, torch
2.13.0+cpu with 2 threads, peft 0.22.0; 336 s in all). Init, median wall s of 3 rounds, initlab
/ PEFT init (raw - default, 0.056 s): pissa 20.33 / 9.82 = 2.07x, pissa_niter_4 1.51 / 0.48 =
3.17x, olora 6.62 / 2.51 = 2.64x: goal <= 0.5x MISSED for all three (two earlier runs of the
same command: 2.04x / 3.21x / 1.83x and 1.42x / 2.81x / 1.63x; a later one as the load average
rose from 0.75 to 6.72, its rounds 4-10x apart, gave 0.84x / 1.04x / 4.78x: read ratios only off
quiet runs). Compile 0.61 / 3.50 / 0.84 s.
Reconstruction equal: recon 6.4e-8 (pissa, both), 4.8e-8 (olora, both); rank-r 2.70e-6 vs
3.21e-6 (pissa), 0.263 vs 0.264 (pissa_niter_4: sketch without oversampling at a 3% gap
σ_16/σ_17); products on the 768 x 768 matrix differ by 4.5e-8 (pissa) and 3.4e-8 (olora).
Where the time goes (one shape group of 12 matrices, separate profile): full SVD and QR are
LAPACK in both (jaxlib: scipy's OpenBLAS gesdd / geqrf+orgqr; torch: MKL), at about parity on
a quiet machine (12 x 768 x 2304 SVD 2.3 s vs 2.0 s; QR 0.80 s vs 0.53 s), but the XLA call
flips between ~1x and ~2x from call to call with load (the Python thread and both XLA Eigen
workers are busy during the LAPACK custom call, ~100% each in `top -H`, plus OpenBLAS's own
worker), while MKL's times stay put. Randomized: torch.svd_lowrank of the 12 matrices 72 ms
vs 290-360 ms; each subspace iteration costs initlab ~65 ms, ~30 ms of it the batched K^T Y
product (K X: 5-7 ms). Step: full 245.5 ms, lora 313.8 ms: 1.278x (per-round ratios 1.244x);
opt-state 2,359,304 / 26,589,192 B = 0.0887x (the adapters are 8.87% of the 3.32M params).

After OLoRA switched to the QR of W's first r columns (R[:r] = Q_rᵀ W; the same factors),
`python benchmarks/lora_init.py --methods=olora --rounds=0` (load average 5.2): initlab 0.570 s
vs PEFT init 2.599 s = 0.219x, goal met; recon 4.84e-8 both, products differ by 3.4e-8.
PiSSA (full and niter=4) still misses the goal: its time is LAPACK's, about at parity.
LoftQ vs PEFT's loftq_init (bitsandbytes 0.50.2 NF4, 768 x 768, r = 16): T = 1 Q differs by
1.5e-8 and BA by 4.1e-7, relative error 8.833178e-2 both; T = 2: 3 of 589,824 entries of Q one
NF4 level apart (the residual on a level midpoint), error 8.514521e-2 vs 8.514518e-2.
"""

import argparse
import logging
import os
import re
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'configs'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import lm_shakespeare

import initlab.init as ii
from initlab import data as data_lib
from initlab import train
from initlab.init import lora

D_MODEL, D_MLP = 768, 3072
# GPT-2 small's Linear layers of one block: (module path in a block, n_in, m_out).
LAYERS = (
  ('attn.c_attn', D_MODEL, 3 * D_MODEL),
  ('attn.c_proj', D_MODEL, D_MODEL),
  ('mlp.c_fc', D_MODEL, D_MLP),
  ('mlp.c_proj', D_MLP, D_MODEL),
)
TARGETS = ['c_attn', 'c_proj', 'c_fc']
LM_TARGETS = r'blocks/(attn/(query|key|value|out)|mlp/(fc1|fc2))/kernel'
INIT_GOAL = 0.5


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--layers', type=int, default=12, help='GPT-2-small layers (4 matrices each)')
  p.add_argument('--rank', type=int, default=16)
  p.add_argument('--alpha', type=float, default=16.0, help='lora_alpha (s = alpha / rank)')
  p.add_argument('--repeats', type=int, default=3, help='init rounds (the median is shown)')
  p.add_argument('--methods', default='pissa,pissa_niter_4,olora', help="PEFT's names")
  p.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)))
  p.add_argument('--seq_len', type=int, default=128)
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--steps', type=int, default=5, help='timed steps per variant per round')
  p.add_argument('--rounds', type=int, default=7, help='step rounds; 0 skips the step part')
  p.add_argument('--warmup', type=int, default=2)
  args = p.parse_args(argv)
  args.methods = tuple(m for m in args.methods.split(',') if m)
  for m in args.methods:
    initlab_method(m)  # Validates.
  return args


def initlab_method(name):
  """PEFT's init_lora_weights name -> (initlab method, its options)."""
  if name in ('pissa', 'olora'):
    return name, {}
  match = re.fullmatch(r'pissa_niter_(\d+)', name)
  if match:
    return 'pissa', {'niter': int(match.group(1))}
  raise ValueError(f"--methods: {name!r} is not 'pissa', 'pissa_niter_<n>' or 'olora'")


# ------------------------------------------------------------------------------------ matrices


def spectrum_matrices(layers, rank):
  """{group: (K (L, n, m) float32, K_r (L, n, m) float64)}: K = U diag(σ) Vᵀ, σ_i = i^-0.5."""
  rng = np.random.default_rng(0)
  out = {}
  for name, n, m in LAYERS:
    k = min(n, m)
    sigma = np.arange(1, k + 1) ** -0.5
    ks, krs = [], []
    for _ in range(layers):
      u = np.linalg.qr(rng.standard_normal((n, k)))[0]
      v = np.linalg.qr(rng.standard_normal((m, k)))[0]
      ks.append(((u * sigma) @ v.T).astype(np.float32))
      krs.append((u[:, :rank] * sigma[:rank]) @ v[:, :rank].T)
    out[name] = (np.stack(ks), np.stack(krs))
  return out


def ratio(x, y):
  return x / y if y > 0 else float('nan')


def rel(err, ref):
  """Max over the leading axis of ‖err‖_F / ‖ref‖_F."""
  num = np.sqrt((err**2).sum(axis=(-2, -1)))
  return float((num / np.sqrt((ref**2).sum(axis=(-2, -1)))).max())


# ------------------------------------------------------------------------------------ initlab


class Initlab:
  """One method's 4 compiled calls; `time()` appends the seconds of one pass."""

  def __init__(self, method, kernels, rank, alpha):
    self.method, options = initlab_method(method)
    self.kernels = {g: jnp.asarray(k) for g, (k, _) in kernels.items()}
    self.key = jax.random.key(0)

    def fn(k, key):
      return lora.decompose(k, rank, self.method, alpha=alpha, key=key, **options)

    self.compiled, self.compile_s = {}, {}
    for group, k in self.kernels.items():
      t = time.perf_counter()
      self.compiled[group] = jax.jit(fn).lower(k, self.key).compile()
      self.compile_s[group] = time.perf_counter() - t
      jax.block_until_ready(self.compiled[group](k, self.key))  # Warm-up.
    self.times, self.cpu, self.out = [], [], {}
    self.group_times = {g: [] for g in self.kernels}

  def time(self):
    total, cpu = 0.0, time.process_time()
    for group, k in self.kernels.items():
      t = time.perf_counter()
      self.out[group] = jax.block_until_ready(self.compiled[group](k, self.key))
      dt = time.perf_counter() - t
      self.group_times[group].append(dt)
      total += dt
    self.times.append(total)
    self.cpu.append(time.process_time() - cpu)

  def factors(self):
    """{group: (residual, a, b)} as float64 numpy, Flax layout."""
    return {g: tuple(np.asarray(x, np.float64) for x in out) for g, out in self.out.items()}


# ------------------------------------------------------------------------------------ PEFT


class Peft:
  """PEFT's `get_peft_model` with one `init_lora_weights` on fresh GPT-2-shaped modules."""

  def __init__(self, init, weights, layers, rank, alpha):
    self.init, self.weights, self.layers = init, weights, layers
    self.rank, self.alpha = rank, alpha
    self.times, self.cpu, self.model = [], [], None

  def fresh(self):
    from torch import nn  # pylint: disable=g-import-not-at-top

    def block(i):
      parts = {'attn': nn.Module(), 'mlp': nn.Module()}
      for name, n, m in LAYERS:
        parent, child = name.split('.')
        lin = nn.utils.skip_init(nn.Linear, n, m, bias=False)
        lin.weight = nn.Parameter(self.weights[name][i].clone())
        setattr(parts[parent], child, lin)
      b = nn.Module()
      b.attn, b.mlp = parts['attn'], parts['mlp']
      return b

    model = nn.Module()
    model.h = nn.ModuleList([block(i) for i in range(self.layers)])
    return model

  def time(self, keep=True):
    from peft import LoraConfig, get_peft_model  # pylint: disable=g-import-not-at-top

    model = self.fresh()
    config = LoraConfig(
      r=self.rank, lora_alpha=self.alpha, target_modules=TARGETS, init_lora_weights=self.init
    )
    t, cpu = time.perf_counter(), time.process_time()
    self.model = get_peft_model(model, config)
    if keep:
      self.times.append(time.perf_counter() - t)
      self.cpu.append(time.process_time() - cpu)

  def factors(self):
    """{group: (residual, a, b)} as float64 numpy in the Flax layout (Wᵀ, Aᵀ, Bᵀ), and s."""
    out, scale = {}, None
    inner = self.model.base_model.model
    for name, _, _ in LAYERS:
      parent, child = name.split('.')
      res, a, b = [], [], []
      for i in range(self.layers):
        layer = getattr(getattr(inner.h[i], parent), child)
        scale = layer.scaling['default']
        res.append(layer.get_base_layer().weight.detach().numpy().T)
        a.append(layer.lora_A['default'].weight.detach().numpy().T)
        b.append(layer.lora_B['default'].weight.detach().numpy().T)
      out[name] = tuple(np.stack(x).astype(np.float64) for x in (res, a, b))
    return out, scale


# ------------------------------------------------------------------------------------ init part


def init_part(args):
  os.environ.setdefault('HF_HUB_OFFLINE', '1')  # No hub look-ups from peft's imports.
  for name in ('bitsandbytes', 'kernels'):  # Their warnings about optional hub-loaded kernels.
    logging.getLogger(name).setLevel(logging.ERROR)
  import peft  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(args.threads)
  print(
    f'init: {4 * args.layers} matrices ({args.layers} GPT-2-small layers), r = {args.rank}, '
    f'alpha = {args.alpha:g}; jax {jax.__version__}, torch {torch.__version__} '
    f'({torch.get_num_threads()} threads), peft {peft.__version__}; {args.repeats} rounds',
    flush=True,
  )
  t = time.perf_counter()
  mats = spectrum_matrices(args.layers, args.rank)
  print(f'  matrices built in {time.perf_counter() - t:.1f} s', flush=True)
  weights = {
    g: torch.from_numpy(np.ascontiguousarray(np.swapaxes(k, -1, -2))) for g, (k, _) in mats.items()
  }
  ours = {m: Initlab(m, mats, args.rank, args.alpha) for m in args.methods}
  peers = {m: Peft(m, weights, args.layers, args.rank, args.alpha) for m in (True, *args.methods)}
  peers[True].time(keep=False)  # Warm-up: peft's first call sets itself up (~1 s).
  for _ in range(args.repeats):  # Rounds alternate between the variants.
    for m in args.methods:
      ours[m].time()
    for p in peers.values():
      p.time()
  scale = args.alpha / args.rank
  med = statistics.median
  base, base_cpu = med(peers[True].times), med(peers[True].cpu)
  print(
    f'\nPEFT default adapters (init_lora_weights=True): {base:.3f} s wall, {base_cpu:.3f} s CPU. '
    'Medians; init = raw - default; CPU: process time, all threads:'
  )
  print(
    f'{"method":14s} {"initlab s":>9s} {"compile s":>9s} {"PEFT raw":>9s} {"PEFT init":>9s} '
    f'{"ratio raw":>9s} {"ratio init":>10s} {"CPU ratio init":>14s}  goal: init <= {INIT_GOAL}'
  )
  for m in args.methods:
    mine, raw = med(ours[m].times), med(peers[m].times)
    fair, fair_cpu = raw - base, med(peers[m].cpu) - base_cpu
    verdict = (
      'n/a (PEFT init <= 0)' if fair <= 0 else 'PASS' if mine / fair <= INIT_GOAL else 'MISS'
    )
    print(
      f'{m:14s} {mine:9.3f} {sum(ours[m].compile_s.values()):9.2f} {raw:9.3f} {fair:9.3f} '
      f'{mine / raw:9.3f} {ratio(mine, fair):10.3f} {ratio(med(ours[m].cpu), fair_cpu):14.3f}  '
      f'{verdict}'
    )
  print('\nwall s of each round, initlab | PEFT raw:')
  for m in (True, *args.methods):
    mine = ' '.join(f'{x:.2f}' for x in ours[m].times) if m in ours else '-'
    print(f'  {m!s:14s} {mine} | ' + ' '.join(f'{x:.2f}' for x in peers[m].times))
  print('\ninitlab per shape group, ms (median):')
  for m in args.methods:
    parts = ', '.join(
      f'{g} {1e3 * statistics.median(ts):.0f}' for g, ts in ours[m].group_times.items()
    )
    print(f'  {m:15s} {parts}')
  print(
    '\nreconstruction, max over matrices (recon: relative error of residual + s·a@b; '
    'rank-r: of s·a@b vs the exact truncated SVD):'
  )
  print(
    f'{"method":15s} {"initlab recon":>14s} {"PEFT recon":>11s} {"initlab rank-r":>15s} '
    f'{"PEFT rank-r":>12s}'
  )
  products = {}
  for m in args.methods:
    theirs, peft_scale = peers[m].factors()
    assert abs(peft_scale - scale) < 1e-12, (peft_scale, scale)
    cols = []
    for f in (ours[m].factors(), theirs):
      rec = max(rel(mats[g][0] - (res + scale * a @ b), mats[g][0]) for g, (res, a, b) in f.items())
      low = max(rel(scale * a @ b - mats[g][1], mats[g][1]) for g, (_, a, b) in f.items())
      cols.append((rec, low))
    low = [f'{c[1]:.2e}' if m.startswith('pissa') else '-' for c in cols]
    print(f'{m:15s} {cols[0][0]:14.2e} {cols[1][0]:11.2e} {low[0]:>15s} {low[1]:>12s}')
    f0, f1 = ours[m].factors()['attn.c_proj'], theirs['attn.c_proj']
    products[m] = (scale * f0[1][0] @ f0[2][0], scale * f1[1][0] @ f1[2][0])
  checks = [m for m in ('pissa', 'olora') if m in products]
  if checks:
    print('\nagreement with PEFT on layer 0 attn c_proj (768 x 768), s·a@b:')
  for m in checks:
    mine, theirs = products[m]
    diff, top = np.abs(mine - theirs).max(), np.abs(theirs).max()
    ok = 'equal to float32 tolerance' if diff <= 1e-4 * top else 'DIFFER'
    print(f'  {m:6s} max |initlab - PEFT| = {diff:.2e} (max |s·BA| = {top:.3f}): {ok}')
  sys.stdout.flush()
  loftq_agreement(args.rank)


def loftq_agreement(rank: int) -> None:
  """initlab's LoftQ (NF4, blocks of 64 along W's rows, `compat_peft_loftq_scaling`: s = 1
  as PEFT assumes) against PEFT's `loftq_init` (bitsandbytes NF4) on one 768 x 768 matrix."""
  try:
    from peft.utils.loftq_utils import loftq_init  # pylint: disable=g-import-not-at-top
    import bitsandbytes  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    print(f'\nLoftQ vs PEFT: skipped ({e}; pip install -e ".[bench]")')
    return
  import torch  # pylint: disable=g-import-not-at-top

  w = np.random.default_rng(0).normal(size=(768, 768)).astype(np.float32) * 0.02
  print('\nLoftQ (NF4) vs PEFT loftq_init on one 768 x 768 matrix:')
  for num_iter in (1, 2):
    q, lora_a, lora_b = (x.numpy() for x in loftq_init(torch.tensor(w), 4, rank, num_iter))
    res, a, b = (
      np.asarray(x)
      for x in lora.decompose(
        jnp.asarray(w.T), rank, 'loftq', num_iter=num_iter, compat_peft_loftq_scaling=True
      )
    )
    err = lambda base, delta: np.linalg.norm(w - base - delta) / np.linalg.norm(w)
    print(
      f'  T={num_iter}: Q max |diff| {np.abs(res.T - q).max():.2e} ({int(np.sum(np.abs(res.T - q) > 1e-6))}'
      f' of {q.size} entries off by > 1e-6), BA max |diff| {np.abs((a @ b).T - lora_b @ lora_a).max():.2e}; '
      f'relative error initlab {err(res.T, (a @ b).T):.6e}, PEFT {err(q, lora_b @ lora_a):.6e}'
    )


# ------------------------------------------------------------------------------------ step part


def lm_config(args, data_dir):
  """configs/lm_shakespeare.py's LM; no eval, checkpoints or diagnostics."""
  config = lm_shakespeare.get_config()
  config.model.max_len = args.seq_len
  config.data.seq_len = args.seq_len
  config.data.data_dir = data_dir
  config.init.compare = ()
  config.seeds.num = 1
  config.diagnostics_at_init = False
  config.train.update(
    batch_size=args.batch, eval_every=0, log_every=1, checkpoint_every=0, progress_bar=False
  )
  return config


def opt_state_bytes(state):
  return sum(x.nbytes for x in jax.tree.leaves(state.opt_state))


class Variant:
  """One Run, its state and batch; `time_round(n)` appends the seconds/step of n lean steps."""

  def __init__(self, name, config, workdir):
    self.name, self.run = name, train.Run(config, workdir)
    with jax.set_mesh(self.run.mesh):
      self.state, _, _ = self.run.initial_state()
      batch = next(iter(self.run.train_iterator()))
      self.batch = data_lib.to_global(batch, self.run.batch_sharding)
    self.opt_bytes = opt_state_bytes(self.state)
    self.wall = []
    t = time.perf_counter()
    self.steps(1)
    self.first_step_s = time.perf_counter() - t

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


def step_part(args):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top

  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax's INFO lines at checkpointer close.
  tfds.disable_progress_bar()
  with tempfile.TemporaryDirectory(prefix='lora_bench_') as tmp:
    data_dir = os.path.join(tmp, 'data')
    data_lib.prepare('tiny_shakespeare', data_dir)
    full = lm_config(args, data_dir)
    adapted = lm_config(args, data_dir)
    adapted.lora.update(targets=LM_TARGETS, rank=args.rank, alpha=args.alpha)
    adapted.init.name = 'lora_default'
    m = full.model
    print(
      f'\nstep: LM dim {m.dim}, depth {m.depth}, heads {m.num_heads}, seq {args.seq_len}, '
      f'batch {args.batch}; {args.rounds} rounds x {args.steps} steps after {args.warmup} '
      'warm-up steps',
      flush=True,
    )
    variants = {}
    try:
      for name, c in (('full', full), ('lora', adapted)):
        variants[name] = Variant(name, c, os.path.join(tmp, name))
      for v in variants.values():
        v.steps(args.warmup)
      for _ in range(args.rounds):
        for v in variants.values():
          v.time_round(args.steps)
      lv = variants['lora']
      total = sum(x.value.size for x in ii.leaves(variants['full'].state.params))
      trained = sorted(lv.run.setup.trainable or ())
      size = sum(x.value.size for x in ii.leaves(lv.state.params) if x.path in trained)
      print(
        f'lora: {len(trained)} trainable leaves ({", ".join(trained[:2])}, ...), {size:,} '
        f'params = {100 * size / total:.2f}% of the {total:,} base params'
      )
      print(
        f'\n{"variant":8s} {"wall ms/step":>13s} {"opt-state MiB":>14s} {"1st call s":>11s}'
        '   wall ms of each round'
      )
      for v in variants.values():
        print(
          f'{v.name:8s} {1e3 * v.median():13.1f} {v.opt_bytes / 2**20:14.3f} '
          f'{v.first_step_s:11.1f}   ' + ' '.join(f'{1e3 * w:.0f}' for w in v.wall)
        )
      fv = variants['full']
      paired = statistics.median(a / b for a, b in zip(lv.wall, fv.wall))
      print(
        f'lora / full: step {lv.median() / fv.median():.3f}x (median of per-round ratios '
        f'{paired:.3f}x), opt-state bytes {lv.opt_bytes / fv.opt_bytes:.4f}x '
        f'({lv.opt_bytes:,} / {fv.opt_bytes:,} B)'
      )
    finally:
      for v in variants.values():
        v.run.checkpointer.close()
  sys.stdout.flush()


def main(argv=None):
  args = parse_args(argv)
  start = time.perf_counter()
  dev = jax.devices()
  print(f'devices: {len(dev)} x {dev[0].device_kind}; {os.cpu_count()} CPUs', flush=True)
  if args.methods:
    init_part(args)
  if args.rounds:
    step_part(args)
  print(f'total {time.perf_counter() - start:.0f} s')


if __name__ == '__main__':
  main()
