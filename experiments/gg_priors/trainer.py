"""A short training loop over initlab's `train.Run` pieces, with a pluggable optimizer.

`initlab.train.run` trains and checkpoints, but the study needs (i) the trained state in memory
for the post-training analyses and (ii) an extra optax transform (BackSlash) in the chain. So
the study builds one `initlab.train.Run` per config (mesh, data, model, init scheme, optimizer,
jitted steps) and drives it here: same init (`Run.setup.init` with the config's seeds), same
data order (`Run.train_iterator`), same train/eval steps; optionally a `Setup` with another
optimizer. Metrics go to `<workdir>/metrics.jsonl` in the loop's format.
"""
from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Callable

import jax
import optax

import analysis

from initlab import config as config_lib
from initlab import data as data_lib
from initlab import models
import initlab.init as ii
from initlab.train import loop
from initlab.train import mesh as mesh_lib
from initlab.train import optim
from initlab.train import state as state_lib
from initlab.train import step as step_lib


class Trainer:
  """One config's model, data and jitted steps; `tx_fn(base_tx)` may wrap the optimizer."""

  def __init__(self, config, workdir, tx_fn: Callable | None = None):
    self.config = config
    self.workdir = pathlib.Path(workdir)
    self.workdir.mkdir(parents=True, exist_ok=True)
    self.run = loop.Run(config, self.workdir / 'unused')
    r = self.run
    if tx_fn is None:
      self.setup, self.train_step = r.setup, r.lean_step
    else:
      self.setup = self._setup(tx_fn(optim.make(config.optimizer, config.train.steps)))
      self.train_step = step_lib.make_train_step(
          self.setup, task=r.meta.task, batch_sharding=r.batch_sharding, metrics=False)
    self.log_step = step_lib.make_train_step(self.setup, task=r.meta.task,
                                             batch_sharding=r.batch_sharding)
    self.eval_step = _eval_step(self.setup, r.meta.task)
    self._eval_batches = None

  def _setup(self, tx):
    c = self.config
    model_cfg = config_lib.full_model_config(c)
    scheme = ii.get_scheme(c.init.name, **config_lib.scheme_options(c, c.init.name))
    return state_lib.Setup.create(
        lambda rngs: models.build(model_cfg, rngs=rngs), tx, mesh=self.run.mesh,
        axis_rules=mesh_lib.axis_rules(c), scheme=scheme, fsdp_axis=mesh_lib.fsdp_axis(c))

  def init(self):
    """The fresh state of the config's init scheme and seeds (as `train.run` starts)."""
    s = self.config.seeds
    with jax.set_mesh(self.run.mesh):
      return self.setup.init(jax.random.key(s.init), jax.random.key(s.dropout))

  def with_params(self, state, params):
    """`state` (this trainer's or another's) with `params`, a fresh optimizer state and step 0;
    the model state (BatchNorm statistics) is kept."""
    with jax.set_mesh(self.run.mesh):
      fresh = jax.jit(self.setup.tx.init)(params)
      copy = lambda t: jax.tree.map(jax.numpy.array, t)  # the new state is donated later
      new = state_lib.TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=copy(params),
                                 opt_state=fresh, model_state=copy(state.model_state),
                                 rng=jax.numpy.array(state.rng),
                                 nonfinite_step=jax.numpy.full((), -1, jax.numpy.int32))
      return jax.device_put(new, self.setup.shardings)

  def eval_batches(self):
    if self._eval_batches is None:
      t = self.config.train
      it = data_lib.build(self.config.data, split=self.config.data.eval_split,
                          batch_size=t.eval_batch_size or t.batch_size, seed=0, shuffle=False,
                          num_epochs=1, drop_remainder=False)
      out = []
      for i, batch in enumerate(it):
        if t.eval_steps and i >= t.eval_steps:
          break
        out.append(data_lib.to_global(batch, self.run.batch_sharding))
      self._eval_batches = out
    return self._eval_batches

  def evaluate(self, state, params=None) -> dict[str, float]:
    """{'loss', 'accuracy'} on the eval split, optionally with `params` swapped in."""
    params = state.params if params is None else params
    with jax.set_mesh(self.run.mesh):
      total = None
      for batch in self.eval_batches():
        out = self.eval_step(params, state.model_state, batch)
        total = out if total is None else jax.tree.map(lambda a, b: a + b, total, out)
    return step_lib.summarize_eval(jax.device_get(total))

  def train(self, state, steps: int | None = None, *, log_name: str = 'metrics.jsonl',
            data_seed: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Runs `steps` (default `train.steps`) updates; logs train/eval metrics like the loop.

    Returns the final state and {'final': last eval, 'wall_s': ..}.
    """
    t = self.config.train
    steps = t.steps if steps is None else steps
    seed = self.config.seeds.data if data_seed is None else data_seed
    it = data_lib.build(self.config.data, split=self.config.data.train_split,
                        batch_size=t.batch_size, seed=seed)
    every = lambda n, s: (n and s % n == 0) or s == steps
    start = time.time()
    lines, final = [], {}
    with jax.set_mesh(self.run.mesh):
      for s in range(1, steps + 1):
        batch = data_lib.to_global(next(it), self.run.batch_sharding)
        if every(t.log_every, s):
          state, m = self.log_step(state, batch)
          m = {k: float(v) for k, v in jax.device_get(m).items()}
          if m.pop('nonfinite_step') >= 0:
            raise FloatingPointError(f'{self.workdir}: NaN/Inf at step {s}')
          lines.append(dict(step=s, split='train', **m))
        else:
          state, _ = self.train_step(state, batch)
        if every(t.eval_every, s):
          final = self.evaluate(state)
          lines.append(dict(step=s, split='eval', **final))
    (self.workdir / log_name).write_text(''.join(json.dumps(l) + '\n' for l in lines))
    return state, dict(final=final, steps=steps, wall_s=time.time() - start)


def _eval_step(setup, task: str):
  """`(params, model_state, batch) -> sums`: like `step.make_eval_step` but without the
  optimizer state, so trainers of one model with different optimizers share one program."""

  def eval_step(params, model_state, batch):
    ce, correct, _ = step_lib.losses(setup, params, model_state, batch, task=task, train=False)
    weight = jax.numpy.ones_like(ce)
    if step_lib.MASK_KEY in batch:
      mask = batch[step_lib.MASK_KEY].astype(jax.numpy.float32)
      weight = weight * mask.reshape(mask.shape + (1,) * (ce.ndim - mask.ndim))
    return dict(loss_sum=jax.numpy.sum(ce * weight),
                correct_sum=jax.numpy.sum(correct * weight), count=jax.numpy.sum(weight))
  return jax.jit(eval_step)


def kernel_mask(params):
  """True for kernels and embeddings (what BackSlash acts on here), by path."""
  return jax.tree_util.tree_map_with_path(lambda p, _: analysis.is_weight(p), params)


def backslash_tx(rdo: float) -> Callable:
  """`tx_fn` adding the reference's BackSlash unit step after the optimizer (kernels only)."""
  return lambda base: optax.chain(
      base, ii.gg.backslash(rdo=rdo, unit_step=True, mask=kernel_mask))
