r"""Poincaré ResNet training step: hand-written VJPs vs autodiff (time and compiled temporary
memory), and initlab against HypLL (PyTorch) on the same network, on CPU.

    pip install -e .[bench]          # torch (CPU) and hypll
    python benchmarks/poincare.py                     # ResNet-20 (8-16-32), 16x16x1, batch 64
    python benchmarks/poincare.py --image=32 --batch=32     # CIFAR-sized images (1 channel)
    python benchmarks/poincare.py --model=mlp --depth=30      # 30 PoincareLinear layers

The model is configs/poincare_resnet_digits.py's Poincaré ResNet (van Spengler et al., arXiv
2303.14027: HNN++ convs, midpoint batch norm, tangent ReLU, Möbius-addition residuals, midpoint
pooling, MLR head; c = 0.1) at `--depth`, trained with that config's Adam; the timed function
is `initlab.train.Run.lean_step`, the jitted step the training loop runs (donated state,
explicit shardings), on one device-resident random batch.

  custom / autodiff  the same Run built twice, its step traced once inside
                     `initlab.hyperbolic.use_custom_vjp(True)` and once in (False) (the switch is
                     read at trace time). Compiled temporary memory is XLA's
                     `memory_analysis().temp_size_in_bytes` of each compiled step; goal: custom
                     <= 0.7x autodiff at equal or better speed.
  HypLL              the same architecture written with HypLL's layers (`hypll.nn`:
                     HConvolution2d, HBatchNorm2d(use_midpoint=True), HReLU, HAvgPool2d(use_midpoint
                     =True), Möbius-addition residuals through `PoincareBall.mobius_add` and
                     `project`, an MLR head from `PoincareBall.hyperplane_dists`), curvature
                     softplus⁻¹(0.1) so that HypLL's softplus gives c = 0.1, hypll.optim.RiemannianAdam
                     (plain Adam: the params are Euclidean), eager CPU torch with `torch.set_num_threads(--threads)`. If hypll is not
                     installed its column says so and the rest still runs.

Timing: after `--warmup` untimed steps each, `--repeats` rounds alternate between the three
steps (so load from other processes hits them alike); a round times `n` steps (at least
`--min_round_s`) and the table shows the median ms per step. XLA's CPU backend uses all the
process's cores (its thread pool is not limited by --threads).

Measured (2 CPU cores shared with other jobs; jax 0.10.2, torch 2.13, hypll 0.1.1),
`python benchmarks/poincare.py` at load average ~4 (at ~16 in parentheses):

                wall ms          CPU ms         temp MiB   compile s
    custom       361.2 (1277.2)  359.0 (402.9)     118.3   (682.8 cold)
    autodiff     406.7 (1290.3)  404.8 (431.8)     331.0   (334.7 cold)
    hypll        921.5 (6981.3)  885.9 (1223.4)        -

custom/autodiff: memory 0.357x (0.367x), CPU time 0.89x (0.93x); initlab/HypLL: CPU time
0.41x (0.33x), wall 0.39x (0.18x). `--model=mlp --depth=30 --width=256 --batch=512`: temp
35.4 vs 195.8 MiB (0.181x; 0.93x before the backward passes waited for the cotangent, see
`initlab.hyperbolic.core._after`), CPU time 0.93-0.95x.

`measure_vjp` (the custom/autodiff part, also for a stack of PoincareLinear layers:
`--model=mlp`) is imported by experiments/poincare_resnet/run.py.
"""

import math
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import poincare_resnet_digits

from initlab import data as data_lib
from initlab import hyperbolic as hb
from initlab import train

_MODEL = flags.DEFINE_enum('model', 'resnet', ['resnet', 'mlp'], 'Poincaré ResNet or MLP.')
_DEPTH = flags.DEFINE_integer('depth', 20, 'ResNet depth (6n+2) or MLP layers.')
_WIDTH = flags.DEFINE_integer('width', 256, 'MLP width.')
_BATCH = flags.DEFINE_integer('batch', 64, 'Batch size.')
_IMAGE = flags.DEFINE_integer(
  'image',
  16,
  'Image height = width (>= 16: HypLL rejects a 3x3 kernel on a 2x2 input, even padded).',
)
_HYPLL = flags.DEFINE_bool('hypll', True, 'Also time HypLL (if installed).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps per side first.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed rounds per side (median is shown).')
_MIN_ROUND = flags.DEFINE_float('min_round_s', 0.5, 'Each round runs steps for at least this.')
_THREADS = flags.DEFINE_integer(
  'threads', 1, 'torch.set_num_threads (2 threads on 2 loaded cores ran 17x slower than 1).'
)

C = 0.1


def resnet_config(depth, batch, image):
  """The digits config's model at `depth`; (image, image, 1) inputs (the data's channels)."""
  config = poincare_resnet_digits.get_config('scheme=poincare_identity')
  config.model.depth = depth
  config.model.input_shape = (image, image, 1)
  config.train.batch_size = batch
  return config


def _random_batch(run, batch, image, seed=0):
  rng = np.random.default_rng(seed)
  b = dict(
    image=rng.uniform(0, 1, (batch, image, image, 1)).astype(np.float32),
    label=rng.integers(0, 10, batch).astype(np.int32),
  )
  return data_lib.to_global(b, run.batch_sharding)


_WORKDIRS = tempfile.TemporaryDirectory(prefix='poincare_bench_')  # Removed at exit.


def resnet_steps(depth=20, batch=64, image=8, customs=(True, False)):
  """{'custom': {step, box, temp, compile_s}, 'autodiff': ...} for each of `customs`: a
  compiled lean step of its own Run (`step()` runs it on the state in `box`), its compiled
  temporary bytes and compile seconds."""
  out = {}
  for custom in customs:
    config = resnet_config(depth, batch, image)
    run = train.Run(config, tempfile.mkdtemp(dir=_WORKDIRS.name))
    state, _, _ = run.initial_state()
    b = _random_batch(run, batch, image)
    t = time.perf_counter()
    with hb.use_custom_vjp(custom):
      compiled = run.lean_step.lower(state, b).compile()
    seconds = time.perf_counter() - t
    temp = compiled.memory_analysis().temp_size_in_bytes
    box = [state]

    def step(box=box, compiled=compiled, b=b):
      box[0], _ = compiled(box[0], b)

    out['custom' if custom else 'autodiff'] = dict(step=step, box=box, temp=temp, compile_s=seconds)
  return out


def mlp_steps(depth=30, width=256, batch=512):
  """The same for `depth` exp₀ → PoincareLinear → log₀ layers (identity init + noise), plain
  jitted value_and_grad + SGD (the PoincareLinear memory check of issue 12.2)."""
  rng = np.random.default_rng(0)
  params = [
    (
      jnp.asarray(0.5 * np.eye(width) + 0.01 * rng.normal(size=(width, width)), jnp.float32),
      jnp.zeros(width, jnp.float32),
    )
    for _ in range(depth)
  ]
  v = jnp.asarray(rng.normal(size=(batch, width)) / math.sqrt(width), jnp.float32)
  out = {}
  for custom in (True, False):

    def loss(params, v, custom=custom):
      with hb.use_custom_vjp(custom):
        for z, r in params:
          v = hb.logmap0(hb.poincare_fc(hb.expmap0(v, 1.0), z, r, 1.0), 1.0)
      return jnp.mean(v * v)

    def sgd(params, v, loss=loss):
      g = jax.grad(loss)(params, v)
      return jax.tree.map(lambda p, g: p - 0.01 * g, params, g)

    t = time.perf_counter()
    compiled = jax.jit(sgd, donate_argnums=0).lower(params, v).compile()
    seconds = time.perf_counter() - t
    box = [jax.tree.map(jnp.copy, params)]

    def step(box=box, compiled=compiled):
      box[0] = compiled(box[0], v)

    out['custom' if custom else 'autodiff'] = dict(
      step=step, box=box, temp=compiled.memory_analysis().temp_size_in_bytes, compile_s=seconds
    )
  return out


def _sync(side):
  if 'box' in side:
    jax.block_until_ready(side['box'][0])


def time_steps(sides, warmup=2, repeats=5, min_round_s=0.5, cpu=None):
  """Median wall ms per step of each side's `step()`, rounds alternating between the sides;
  the medians of process CPU ms per step (all threads: robust to other processes' load) go
  into the dict `cpu` if given."""
  for side in sides.values():
    for _ in range(warmup):
      side['step']()
    _sync(side)
  # steps per round from one timed step each
  per = {}
  for name, side in sides.items():
    t = time.perf_counter()
    side['step']()
    _sync(side)
    per[name] = max(1, int(min_round_s / max(time.perf_counter() - t, 1e-6)))
  times = {name: [] for name in sides}
  cpus = {name: [] for name in sides}
  for _ in range(repeats):
    for name, side in sides.items():
      t, c = time.perf_counter(), time.process_time()
      for _ in range(per[name]):
        side['step']()
      _sync(side)
      times[name].append(1e3 * (time.perf_counter() - t) / per[name])
      cpus[name].append(1e3 * (time.process_time() - c) / per[name])
  if cpu is not None:
    cpu.update({name: statistics.median(ts) for name, ts in cpus.items()})
  return {name: statistics.median(ts) for name, ts in times.items()}


def measure_vjp(model='resnet', depth=20, batch=64, image=8, width=256, repeats=5, min_round_s=0.5):
  """{'custom': {ms, temp_mib, compile_s}, 'autodiff': ..., 'mem_ratio', 'time_ratio'}."""
  sides = resnet_steps(depth, batch, image) if model == 'resnet' else mlp_steps(depth, width, batch)
  cpu = {}
  ms = time_steps(sides, repeats=repeats, min_round_s=min_round_s, cpu=cpu)
  out = {
    k: dict(
      ms=ms[k], cpu_ms=cpu[k], temp_mib=sides[k]['temp'] / 2**20, compile_s=sides[k]['compile_s']
    )
    for k in sides
  }
  out['mem_ratio'] = sides['custom']['temp'] / sides['autodiff']['temp']
  out['time_ratio'] = ms['custom'] / ms['autodiff']
  out['cpu_ratio'] = cpu['custom'] / cpu['autodiff']
  return out


# ---- HypLL -----------------------------------------------------------------------------------


def hypll_step(depth=20, widths=(8, 16, 32), batch=64, image=16, threads=1):
  """A step function of the same Poincaré ResNet in HypLL (torch), or None without hypll."""
  try:
    import torch
    from hypll import nn as hnn
    from hypll.manifolds.poincare_ball import Curvature, PoincareBall
    from hypll.optim import RiemannianAdam
    from hypll.tensors import ManifoldTensor, TangentTensor
  except ImportError:
    return None
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  ball = PoincareBall(c=Curvature(value=math.log(math.expm1(C))))  # softplus -> c = 0.1

  class ConvBN(torch.nn.Module):
    def __init__(self, cin, cout, stride, k=3):
      super().__init__()
      self.conv = hnn.HConvolution2d(cin, cout, k, ball, stride=stride, padding=k // 2)
      self.bn = hnn.HBatchNorm2d(cout, ball, use_midpoint=True)

    def forward(self, x):
      return self.bn(self.conv(x))

  class Block(torch.nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.f1, self.f2 = ConvBN(cin, cout, stride), ConvBN(cout, cout, 1)
      self.relu = hnn.HReLU(ball)
      self.skip = (
        hnn.HConvolution2d(cin, cout, 1, ball, stride=stride)
        if stride != 1 or cin != cout
        else None
      )

    def forward(self, x):
      y = self.f2(self.relu(self.f1(x)))
      s = x if self.skip is None else self.skip(x)
      return self.relu(ball.project(ball.mobius_add(y, s)))

  class Net(torch.nn.Module):
    def __init__(self):
      super().__init__()
      n = (depth - 2) // 6
      self.stem, self.relu = ConvBN(1, widths[0], 1), hnn.HReLU(ball)
      blocks, cin = [], widths[0]
      for s, w in enumerate(widths):
        for i in range(n):
          blocks.append(Block(cin, w, 2 if (s > 0 and i == 0) else 1))
          cin = w
      self.blocks = torch.nn.ModuleList(blocks)
      side = image // 4
      self.pool = hnn.HAvgPool2d(side, ball, use_midpoint=True)
      self.z = torch.nn.Parameter(torch.randn(widths[-1], 10) * (2 * widths[-1] * 10) ** -0.5)
      self.r = torch.nn.Parameter(torch.zeros(10))

    def forward(self, images):
      x = ball.expmap(TangentTensor(images, manifold=ball, man_dim=1))
      x = self.relu(self.stem(ball.project(x)))
      for b in self.blocks:
        x = b(x)
      x = self.pool(x)  # (B, C, 1, 1)
      x = ManifoldTensor(x.tensor.flatten(1), manifold=ball, man_dim=1)
      z = ManifoldTensor(self.z, manifold=ball, man_dim=0)
      return ball.hyperplane_dists(x, z, self.r)

  net = Net()
  opt = RiemannianAdam(net.parameters(), lr=1e-3)  # plain Adam on HypLL's Euclidean params
  images = torch.rand(batch, 1, image, image)
  labels = torch.randint(0, 10, (batch,))

  def step():
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(net(images), labels)
    loss.backward()
    opt.step()

  return dict(step=step)


def main(argv):
  del argv
  print(f'jax {jax.__version__}, devices {jax.devices()}', flush=True)
  if _MODEL.value == 'mlp':
    sides = mlp_steps(_DEPTH.value, _WIDTH.value, _BATCH.value)
    what = (
      f'{_DEPTH.value} exp0 -> PoincareLinear({_WIDTH.value}) -> log0 layers, batch {_BATCH.value}'
    )
  else:
    sides = resnet_steps(_DEPTH.value, _BATCH.value, _IMAGE.value)
    what = (
      f'Poincaré ResNet-{_DEPTH.value} (8-16-32, c={C}), {_IMAGE.value}x{_IMAGE.value}x'
      f'1 inputs, batch {_BATCH.value}, Adam'
    )
    if _HYPLL.value:
      h = hypll_step(_DEPTH.value, batch=_BATCH.value, image=_IMAGE.value, threads=_THREADS.value)
      if h is None:
        print('hypll not installed: pip install -e .[bench]')
      else:
        sides['hypll'] = h
  cpu = {}
  ms = time_steps(sides, _WARMUP.value, _REPEATS.value, _MIN_ROUND.value, cpu=cpu)
  print(f'\n{what}; median ms per training step over {_REPEATS.value} rounds')
  print(f'{"":10s} {"wall ms":>9s} {"CPU ms":>9s} {"temp MiB":>9s} {"compile s":>10s}')
  for k, side in sides.items():
    temp = f'{side["temp"] / 2**20:9.1f}' if 'temp' in side else f'{"-":>9s}'
    comp = f'{side["compile_s"]:10.1f}' if 'compile_s' in side else f'{"-":>10s}'
    print(f'{k:10s} {ms[k]:9.1f} {cpu[k]:9.1f} {temp} {comp}')
  print(
    f'\ncustom/autodiff: memory {sides["custom"]["temp"] / sides["autodiff"]["temp"]:.3f}x '
    f'(goal <= 0.7), wall time {ms["custom"] / ms["autodiff"]:.3f}x, CPU time '
    f'{cpu["custom"] / cpu["autodiff"]:.3f}x (goal <= 1)'
  )
  if 'hypll' in ms:
    print(
      f'initlab (custom) / HypLL: wall time {ms["custom"] / ms["hypll"]:.3f}x, CPU time '
      f'{cpu["custom"] / cpu["hypll"]:.3f}x (goal < 1)'
    )


if __name__ == '__main__':
  app.run(main)
