"""The optimizer of `config.optimizer`: optax by name, a schedule, weight decay, clipping."""
from __future__ import annotations

import inspect

import ml_collections
import optax

from initlab.init import specs
from initlab.init import tree as tree_lib


def schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """The learning-rate schedule `opt.schedule` over `total_steps` steps."""
  peak = opt.learning_rate
  end = peak * opt.end_lr_ratio
  if opt.schedule == 'constant':
    return optax.constant_schedule(peak)
  if opt.schedule == 'cosine':
    return optax.cosine_decay_schedule(peak, max(total_steps, 1), alpha=opt.end_lr_ratio)
  if opt.schedule == 'warmup_cosine':
    warmup = min(opt.warmup_steps, total_steps)
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, warmup, max(total_steps, warmup + 1), end_value=end)
  raise ValueError(f'config.optimizer.schedule: unknown schedule {opt.schedule!r}; '
                   "valid: 'constant', 'cosine', 'warmup_cosine'")


def _decay_mask(params):
  """Weight decay applies to kernels and embeddings, not to biases and norm params.

  The role comes from the param path (`initlab.init.specs.infer_role`), not from ndim:
  stacked (scanned) biases and LayerNorm scales are 2-D. Unknown names fall back to ndim ≥ 2.
  """
  def decays(leaf):
    try:
      return specs.infer_role(leaf.path) in ("kernel", "embedding")
    except specs.LayoutError:
      return leaf.value.ndim >= 2
  return tree_lib.map_leaves(decays, params)


def make(opt: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """`clip_by_global_norm` (if set) -> weight decay (if set) -> `optax.<opt.name>`.

  The optimizer gets the schedule as its `learning_rate`. If it takes `weight_decay`
  (adamw, lamb, ...) the decay is passed to it (decoupled); otherwise it is added to the
  gradients as `add_decayed_weights` (L2). Either way it is masked to kernels and embeddings.
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
  parts.append(factory(schedule(opt, total_steps), **kwargs))
  return parts[0] if len(parts) == 1 else optax.chain(*parts)
