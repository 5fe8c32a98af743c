"""The optimizer of `config.optimizer`: optax by name, a schedule, weight decay, clipping,
and extra transforms registered by name (`config.optimizer.extra`).

    config.optimizer.extra = (('backslash', {'rdo_per_param': 1e-3}),)   # or ('backslash',)

An extra transform is a factory `(**options) -> optax.GradientTransformation` registered with
`@register_transform('<name>')`; `make` chains the extras after the optimizer, in order.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import jax
import ml_collections
import optax

from initlab.errors import ConfigError
from initlab.init import specs
from initlab.init import tree as tree_lib

_TRANSFORMS: dict[str, Callable[..., optax.GradientTransformation]] = {}


def schedule(opt: ml_collections.ConfigDict, total_steps: int, peak=None) -> optax.Schedule:
  """The learning-rate schedule `opt.schedule` over `total_steps` steps (peak: `peak`, a
  traced per-trial value under the vmap sweep runner, else `opt.learning_rate`).

  Every schedule is the peak times a unit-peak shape, so a traced peak never meets optax's
  Python-side checks on it (warmup_cosine_decay_schedule tests `peak_value == 0.0`)."""
  peak = opt.learning_rate if peak is None else peak
  if opt.schedule == 'constant':
    return optax.constant_schedule(peak)
  if opt.schedule == 'cosine':
    unit = optax.cosine_decay_schedule(1.0, max(total_steps, 1), alpha=opt.end_lr_ratio)
  elif opt.schedule == 'warmup_cosine':
    warmup = min(opt.warmup_steps, total_steps)
    unit = optax.warmup_cosine_decay_schedule(
      0.0, 1.0, warmup, max(total_steps, warmup + 1), end_value=opt.end_lr_ratio
    )
  else:
    raise ValueError(
      f'config.optimizer.schedule: unknown schedule {opt.schedule!r}; '
      "valid: 'constant', 'cosine', 'warmup_cosine'"
    )
  return lambda count: peak * unit(count)


def _decay_mask(params):
  """Weight decay applies to kernels and embeddings, not to biases and norm params.

  The role comes from the param path (`initlab.init.specs.infer_role`), not from ndim:
  stacked (scanned) biases and LayerNorm scales are 2-D. Unknown names fall back to ndim ≥ 2.
  """

  def decays(leaf):
    try:
      return specs.infer_role(leaf.path) in ('kernel', 'embedding')
    except specs.LayoutError:
      return leaf.value.ndim >= 2

  return tree_lib.map_leaves(decays, params)


def make(
  opt: ml_collections.ConfigDict, total_steps: int, parametrization=None, learning_rate=None
) -> optax.GradientTransformation:
  """`clip_by_global_norm` (if set) -> weight decay (if set) -> `optax.<opt.name>`
  -> the per-param learning-rate factors of an active `parametrization` (ntk, mup; see
  `initlab.init.families.parametrization`, built by `initlab.train.parametrize.from_config`).

  The optimizer gets the schedule as its `learning_rate`. If it takes `weight_decay`
  (adamw, lamb, ...) the decay is passed to it (decoupled); otherwise it is added to the
  gradients as `add_decayed_weights` (L2). Either way it is masked to kernels and embeddings.
  The extra transforms of `opt.extra` (`parse_extra`) follow the optimizer, in order.
  `learning_rate` replaces `opt.learning_rate` as the peak (a traced value under vmap: the
  optimizer state's structure does not depend on it, so checkpoints are those of a run).
  """
  factory = getattr(optax, opt.name, None)
  if factory is None:
    raise ValueError(f'config.optimizer.name: optax has no optimizer {opt.name!r}')
  kwargs = dict(opt.kwargs)
  takes_decay = 'weight_decay' in inspect.signature(factory).parameters
  parts = []
  if opt.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.weight_decay and takes_decay:
    kwargs['weight_decay'] = opt.weight_decay
    if 'mask' in inspect.signature(factory).parameters:
      kwargs['mask'] = _decay_mask
  elif opt.weight_decay:
    parts.append(optax.add_decayed_weights(opt.weight_decay, mask=_decay_mask))
  elif takes_decay:
    kwargs.setdefault('weight_decay', 0.0)
  parts.append(factory(schedule(opt, total_steps, learning_rate), **kwargs))
  if parametrization is not None and parametrization.active:
    parts.append(parametrization.transform())
  tx = parts[0] if len(parts) == 1 else optax.chain(*parts)
  extras = [_TRANSFORMS[name](**options) for name, options in parse_extra(opt.get('extra', ()))]
  return optax.chain(tx, *extras) if extras else tx


def register_transform(name: str) -> Callable:
  """Decorator registering `factory(**options) -> GradientTransformation` as extra `name`."""

  def register(factory):
    if name in _TRANSFORMS:
      raise ValueError(f'register_transform: {name!r} is already registered')
    _TRANSFORMS[name] = factory
    return factory

  return register


def transform_names() -> list[str]:
  """The names `config.optimizer.extra` accepts."""
  return sorted(_TRANSFORMS)


def parse_extra(extra) -> list[tuple[str, dict[str, Any]]]:
  """`config.optimizer.extra` as `(name, options)` pairs, checked.

  Each item is a registered name or a `(name, {option: value})` pair. Raises ConfigError
  naming the item, and the valid names or options, for anything else.
  """

  def bad(i, what):
    return ConfigError(f'config.optimizer.extra[{i}]: {what}')

  if not isinstance(extra, (tuple, list)):
    raise ConfigError(
      f'config.optimizer.extra: expected a tuple of transform names or (name, options) '
      f'pairs, got {extra!r}'
    )
  out = []
  for i, item in enumerate(extra):
    name = options = None
    if isinstance(item, str):
      name, options = item, {}
    elif isinstance(item, (tuple, list)) and len(item) == 2:
      name, options = item
    if not isinstance(name, str) or not isinstance(options, (Mapping, ml_collections.ConfigDict)):
      raise bad(i, f'expected a name or a (name, {{option: value}}) pair, got {item!r}')
    if name not in _TRANSFORMS:
      raise bad(i, f'unknown transform {name!r}; valid: {", ".join(transform_names())}')
    options = dict(options)
    valid = list(inspect.signature(_TRANSFORMS[name]).parameters)
    for key in options:
      if key not in valid:
        raise bad(i, f'unknown option {key!r} of {name!r}; valid: {", ".join(valid)}')
    try:
      _TRANSFORMS[name](**options)
    except (TypeError, ValueError) as e:
      raise bad(i, f'bad options {options} for {name!r}: {e}') from None
    out.append((name, options))
  return out


_MASKS = {'weights': _decay_mask, 'all': None}


@register_transform('backslash')
def backslash(
  rdo: float | None = None,
  rdo_per_param: float | None = None,
  clip: float = 1.0,
  reestimate_every: int = 1,
  method: str = 'exact',
  mask: str = 'weights',
) -> optax.GradientTransformation:
  """BackSlash's unit step θ ← θ − ∇R(θ) after the optimizer (arXiv 2504.16968; see
  `initlab.init.gg.rate`), with ∇R = (rdo·β̂/N)·sign(θ)(|θ| + clip)^(β̂−1).

  Args:
    rdo: the rate–distortion weight (default the reference's 2e3).
    rdo_per_param: instead of `rdo`, λ = rdo/N: rdo = λ·N with N the number of masked params
      (known at init), so the per-step shrink λ·β̂ does not depend on the model size.
    clip, reestimate_every, method: as `initlab.init.gg.backslash`.
    mask: 'weights' (kernels and embeddings, by param role, as weight decay) or 'all'.
  """
  from initlab.init import gg  # pylint: disable=g-import-not-at-top

  if mask not in _MASKS:
    raise ValueError(f'mask={mask!r}; valid: {", ".join(map(repr, _MASKS))}')
  if rdo is not None and rdo_per_param is not None:
    raise ValueError('set rdo or rdo_per_param, not both')
  kwargs = dict(clip=clip, reestimate_every=reestimate_every, method=method, unit_step=True)
  if rdo_per_param is None:
    return gg.backslash(rdo=2e3 if rdo is None else rdo, mask=_MASKS[mask], **kwargs)
  gg.backslash(**kwargs)  # Checks the options now.

  def make(params):  # N from the (masked) params' shapes: static under jit.
    n = sum(x.size for x in jax.tree.leaves(params))
    return gg.backslash(rdo=rdo_per_param * n, **kwargs)

  tx = optax.GradientTransformation(
    lambda params: make(params).init(params),
    lambda u, s, params=None: make(params).update(u, s, params),
  )
  return tx if _MASKS[mask] is None else optax.masked(tx, _MASKS[mask])
