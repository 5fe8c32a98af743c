"""Coordinate check: activation scales vs width over the first optimizer steps.

    result = coord_check(config, widths=(64, 128, 256, 512, 1024), steps=3, batch=(x, y))
    result.rms['mup']['hidden/1']        # (len(widths), steps + 1) RMS of that layer's output
    plot_coord_check(result, 'coord_check.png')

For each parametrization and width, the model of `config` is built at that width (its width
option, see `initlab.init.families.parametrization.WIDTH_KEYS`), initialized by the run's
init scheme (`config.init`) with the parametrization's init factors, and trained for
`steps` steps with the run's optimizer (`config.optimizer`, with the parametrization's
learning-rate factors) on one fixed batch; after each step the RMS √mean(h²) of every
stage's output (`model.stages()`, eval mode) is recorded on that batch. Under μP these
scales stay Θ(1) as the width grows; under the standard parametrization with Adam they grow
with width (Yang et al., "Tensor Programs V", arXiv 2203.03466, Appendix D.1, coordinate
checking).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from initlab.init.families import parametrization as param_lib


@dataclasses.dataclass(frozen=True)
class CoordCheck:
  """What `coord_check` measured.

  Attributes:
    widths: the widths, in order.
    steps: optimizer steps taken (rms has steps + 1 rows per width: t = 0 … steps).
    layers: the model's stage names, in order.
    rms: `{parametrization: {layer: float64 array (len(widths), steps + 1)}}`.
    base_width: the base width of ntk and mup.
  """

  widths: tuple[int, ...]
  steps: int
  layers: tuple[str, ...]
  rms: Mapping[str, Mapping[str, np.ndarray]]
  base_width: float

  def final(self, name: str) -> dict[str, np.ndarray]:
    """`{layer: RMS after the last step, one per width}` of parametrization `name`."""
    return {layer: v[:, -1] for layer, v in self.rms[name].items()}

  def to_dict(self) -> dict[str, Any]:
    return dict(
      widths=list(self.widths),
      steps=self.steps,
      layers=list(self.layers),
      base_width=self.base_width,
      rms={p: {l: v.tolist() for l, v in d.items()} for p, d in self.rms.items()},
    )


def _batch(config, batch):
  from initlab import data as data_lib  # pylint: disable=g-import-not-at-top
  from initlab.train import step as step_lib  # pylint: disable=g-import-not-at-top

  if batch is None:
    meta = data_lib.metadata(config.data)
    it = data_lib.build(
      config.data,
      split=config.data.train_split,
      batch_size=config.train.batch_size,
      seed=config.seeds.data,
    )
    b = next(iter(it))
    return b[step_lib.INPUT_KEY[meta.task]], b[step_lib.TARGET_KEY[meta.task]]
  if isinstance(batch, Mapping):
    keys = (
      [k for k in ('image', 'inputs') if k in batch],
      [k for k in ('label', 'targets') if k in batch],
    )
    if not keys[0] or not keys[1]:
      raise ValueError(
        f'coord_check: batch keys {sorted(batch)}; expected image/label or inputs/targets'
      )
    return batch[keys[0][0]], batch[keys[1][0]]
  x, y = batch
  return x, y


def _trajectories(
  model_fn, scheme, tx: optax.GradientTransformation, x, y, steps: int, key, scales, lrs
):
  """(P, steps + 1, layers) RMS of every stage's output on `x` at t = 0 … steps, and the
  stage names, for P parametrizations at one width.

  The model is built and `scheme(key, params, model)` draws its params once; parametrization
  i multiplies them by `scales` [i] and each update of `tx` by `lrs` [i] (trees like the
  params, with a leading axis P): the math of `Parametrization.init_scheme` and `.transform`,
  vmapped, so every parametrization at a width shares one compile.
  """
  names = []

  def run(key, scales, lrs):
    with nnx.use_eager_sharding(False):
      model = model_fn(nnx.Rngs(jax.random.fold_in(key, 0)))
    nnx.update(model, scheme(jax.random.fold_in(key, 1), nnx.state(model, nnx.Param), model))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = params.to_pure_dict(), rest.to_pure_dict()

    def scales_of(p):
      h, out = x, []
      names[:] = []
      for name, fn in nnx.merge(graphdef, p, rest).stages(False):
        h = fn(h)
        names.append(name)
        out.append(jnp.sqrt(jnp.mean(jnp.square(h.astype(jnp.float32)))))
      return jnp.stack(out)

    def loss(p):
      logits = nnx.merge(graphdef, p, rest)(x).astype(jnp.float32)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def one(scale, lr):
      p = jax.tree.map(lambda a, s: (a * s).astype(a.dtype), params, scale)
      state, rows = tx.init(p), [scales_of(p)]
      for _ in range(steps):
        updates, state = tx.update(jax.grad(loss)(p), state, p)
        p = optax.apply_updates(p, jax.tree.map(lambda u, m: (u * m).astype(u.dtype), updates, lr))
        rows.append(scales_of(p))
      return jnp.stack(rows)

    return jax.vmap(one)(scales, lrs)

  rms = jax.jit(run)(key, scales, lrs)
  return rms, tuple(names)


def default_widths(config) -> tuple[float, ...]:
  """The widths of `config`: base_width, 2·base_width, 4·base_width, … up to the width of
  `config.model` (its width option), which is always the last."""
  from initlab import config as config_lib  # pylint: disable=g-import-not-at-top

  p = config.parametrization
  model = config_lib.full_model_config(config)
  top = model[param_lib.width_key(model, p.width_key)]
  if not p.base_width or not 0 < p.base_width <= top:
    raise ValueError(
      f'coord_check: config.parametrization.base_width={p.base_width} must be '
      f'> 0 and at most the model width {top} to give the widths'
    )
  widths, w = [], p.base_width
  while w < top:
    widths.append(type(top)(w))
    w *= 2
  return tuple(widths) + (top,)


def coord_check(
  config,
  widths: Sequence[float] | None = None,
  *,
  steps: int = 3,
  parametrizations: Sequence[str] = param_lib.PARAMETRIZATIONS,
  base_width: float | None = None,
  batch=None,
  seed: int = 0,
) -> CoordCheck:
  """Per-layer activation RMS vs width over the first `steps` steps (see the module doc).

  Args:
    config: a run config (`initlab.config.default_config()` form): its model (at each
      width), init scheme, optimizer and `parametrization` (base_width, width_key,
      zero_readout) are the run's.
    widths: values of the model's width option; default `default_widths(config)`, from
      `config.parametrization.base_width` doubling up to the width of `config.model`.
    steps: optimizer steps (the optimizer's schedule runs over these steps).
    parametrizations: names of `param_lib.PARAMETRIZATIONS` to compare.
    base_width: base width of ntk/mup; default `config.parametrization.base_width`, else
      the smallest width.
    batch: `(inputs, labels)` or a batch dict; default the first train batch of
      `config.data`.
    seed: the init key (model construction and scheme) for every width.
  """
  from initlab import config as config_lib  # pylint: disable=g-import-not-at-top
  from initlab import models  # pylint: disable=g-import-not-at-top
  import initlab.init as ii  # pylint: disable=g-import-not-at-top
  from initlab.train import optim  # pylint: disable=g-import-not-at-top
  from initlab.train import parametrize  # pylint: disable=g-import-not-at-top

  for name in parametrizations:
    param_lib.check(name, 1.0)
  widths = default_widths(config) if widths is None else tuple(widths)
  if steps < 1 or not widths:
    raise ValueError(
      f'coord_check: need steps >= 1 and some widths, got steps={steps}, widths={tuple(widths)}'
    )
  p_cfg = config.parametrization
  base = base_width or p_cfg.base_width or min(widths)
  x, y = _batch(config, batch)
  kind = param_lib.optimizer_kind(config.optimizer.name)
  scheme = ii.get_scheme(config.init.name, **config_lib.scheme_options(config, config.init.name))
  full = config_lib.full_model_config(config)
  rms = {name: [] for name in parametrizations}
  layers = None
  tx = optim.make(config.optimizer, steps)  # The run's optimizer; factors: `_trajectories`.
  for width in widths:
    model_cfg = param_lib.with_width(full, width, p_cfg.width_key)
    params, hints = parametrize.abstract_params(model_cfg)
    ctx = ii.InitContext(hints=hints, model_config=model_cfg)
    ps = [
      parametrize.from_model_config(
        name,
        model_cfg,
        base,
        width_key_=p_cfg.width_key,
        optimizer=kind,
        zero_readout=p_cfg.zero_readout and name == 'mup',
      )
      for name in parametrizations
    ]
    stack = lambda trees: jax.tree.map(lambda *v: jnp.asarray(v, jnp.float32), *trees)
    scales = stack([p.init_scales(params.to_pure_dict()) for p in ps])
    lrs = stack([p.lr_multipliers(params.to_pure_dict()) for p in ps])
    traj, layers = _trajectories(
      lambda rngs, c=model_cfg: models.build(c, rngs=rngs),
      lambda k, tree, model: scheme(k, tree, ctx),
      tx,
      x,
      y,
      steps,
      jax.random.key(seed),
      scales,
      lrs,
    )
    for name, t in zip(parametrizations, np.asarray(traj, np.float64)):
      rms[name].append(t)
  out = {
    name: {layer: np.stack([r[:, i] for r in rows]) for i, layer in enumerate(layers)}
    for name, rows in rms.items()
  }
  return CoordCheck(tuple(widths), steps, layers, out, float(base))


def plot_coord_check(result: CoordCheck, path: str | os.PathLike) -> str:
  """Log-log width vs RMS per layer, one panel per parametrization, as a PNG at `path`.

  Solid: after the last step; dotted: at init (t = 0).
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  names = list(result.rms)
  fig = Figure(figsize=(4.2 * len(names), 3.6))
  axes = fig.subplots(1, len(names), sharey=True, squeeze=False)[0]
  colors = [f'C{i % 10}' for i in range(len(result.layers))]
  for ax, name in zip(axes, names):
    for color, layer in zip(colors, result.layers):
      v = result.rms[name][layer]
      ax.plot(result.widths, v[:, -1], marker='o', color=color, label=layer)
      ax.plot(result.widths, v[:, 0], linestyle=':', color=color)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_title(f'{name} (t = {result.steps}; dotted: t = 0)', fontsize=9)
    ax.set_xlabel('width')
    ax.grid(True, alpha=0.3)
  axes[0].set_ylabel('activation RMS')
  axes[-1].legend(fontsize=7)
  fig.tight_layout()
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path, dpi=110)
  return path
