"""Model-level schemes: `(key, params, ctx) -> params`, composable and registered by name.

A scheme needs more than one tensor's shape: depth (Fixup), graph statistics, a batch and
the apply function (LSUV), pretrained params (learngene). `InitContext` carries those.
A scheme that changes the architecture returns `SchemeResult(params, model_config)`.
Schemes live with their family in `initlab.init.families` (and `initlab.init.gg`).

A scheme states the stage of a run's init pipeline it runs in (`initlab.init.stages`) by
attributes on the callable, set with `with_stage`: `stage` = "param" (default: inside the
jitted, sharded init) or "data" (after it, with `ctx.data`, a `DataContext`); optional
`resize(model_config, ctx) -> model_config` (architecture stage, before the model is built);
`num_batches` (data stage: how many training batches `ctx.data.batches` holds, default 1).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Mapping, Protocol
import warnings

from flax import nnx
import jax

from initlab import losses
from initlab.errors import ConfigError
from initlab.init import adapters as adapters_lib
from initlab.init import tree as tree_lib

STAGES = ('param', 'data')


def _call(model, x, train: bool):
  """`model(x, train=train)`; a model whose call takes `rngs` gets a fixed dropout key."""
  if train and 'rngs' in inspect.signature(model.__call__).parameters:
    return model(x, train=train, rngs=nnx.Rngs(dropout=0))
  return model(x, train=train)


@dataclasses.dataclass(frozen=True)
class DataContext:
  """What a data-stage scheme reads: the model's structure, training batches, apply and loss.

  Attributes:
    graphdef: the model's `nnx.GraphDef` (or `adapters.Adapted`: adapters folded in).
    model_state: nested dict of the model's non-Param variables (e.g. BatchNorm statistics).
    batches: global (sharded) training batches, dicts with 'image', 'label'
      (classification) or 'inputs', 'targets' (lm), leading axis = global batch.
    task: 'classification', 'lm' or 'node_classification'.
    objective: the run's training loss (`initlab.losses`, `config.train.loss`).
    teacher: `inputs -> logits` of the run's teacher (`config.train.distill.teacher`), or
      None; `loss` feeds it to an objective that needs a teacher.
  `apply` and `loss` are jitted and pure: `model_state` is never updated by them.
  """

  graphdef: Any
  model_state: Any
  batches: tuple
  task: str
  objective: losses.Loss = losses.CE
  teacher: Callable | None = None

  def model(self, params) -> nnx.Module:
    """The `nnx.Module` holding `params` (nested dict of Param values) and `model_state`
    (adapters, if the graphdef is `adapters.Adapted`, folded in)."""
    return adapters_lib.merge_module(self.graphdef, params, self.model_state)

  @functools.cached_property
  def _jitted(self):
    def apply(params, model_state, inputs, train):
      model = adapters_lib.merge_module(self.graphdef, params, model_state)
      return _call(model, inputs, train)

    def loss(params, model_state, batch, train, teacher_logits):
      logits = apply(params, model_state, self.inputs(batch), train)
      return losses.mean_loss(self.objective, logits, batch, self.task, teacher_logits)

    return (jax.jit(apply, static_argnames='train'), jax.jit(loss, static_argnames='train'))

  def inputs(self, batch):
    """The model input of `batch` ('image' or 'inputs'; a graph task's batch itself)."""
    return losses.model_input(batch, self.task)

  def apply(self, params, inputs, *, train: bool = False) -> jax.Array:
    """Logits `model(inputs, train=train)` (float; [batch, classes] or [batch, seq, vocab])."""
    return self._jitted[0](params, self.model_state, inputs, train)

  def loss(self, params, batch, *, train: bool = False) -> jax.Array:
    """The training loss on `batch` (`objective`; mean per token for lm, per labelled node
    for a graph), float32 (). Differentiable in `params`; the teacher's logits are not."""
    teacher = None
    if self.objective.needs_teacher:
      if self.teacher is None:
        raise ValueError(f'the data stage has no teacher for loss {self.objective.name!r}')
      teacher = jax.lax.stop_gradient(self.teacher(self.inputs(batch)))
    return self._jitted[1](params, self.model_state, batch, train, teacher)


@dataclasses.dataclass(frozen=True)
class InitContext:
  """What a scheme may read besides the params.

  Attributes:
    hints: facts the model states about itself (`model.init_hints()`), e.g.
      'residual_final' (regex of the last layer of every residual branch),
      'residual_branch' (regex of every kernel inside a residual branch), 'classifier'
      (regex of the output layer), 'num_branches', 'branch_layers', 'depth'.
    model_config: the model's config, for schemes that rebuild or resize the model.
    batch: an input batch, for data-dependent schemes used outside a run.
    apply_fn: `apply_fn(params, batch) -> outputs`, likewise.
    pretrained: a pretrained param tree (in a run: `config.init.pretrained`, restored into
      this mesh's param shardings), for schemes that start from one; with several sources
      (`config.init.pretrained = {name: path}`) a dict {name: param tree}.
    pretrained_state: the model state (e.g. BatchNorm statistics) of `pretrained`, in the
      same form (a nested dict, or {name: nested dict}).
    sources: in a run's data stage, its pretrained sources to restore one at a time
      (`sources.names`, `sources.load(name) -> (params, model_state)`, outside jit); a part
      marked `with_stage(fn, 'data', streams_pretrained=True)` makes the run restore nothing
      up front (`pretrained` stays None), so the scheme holds one source at a time.
    extras: anything else a scheme documents that it reads.
    dataset: facts about the run's dataset: 'task', 'num_classes', 'vocab_size',
      'input_shape', 'num_train_examples' (and, for graph data, graph statistics).
    data: a `DataContext` in the data stage (None in the param stage).
    adapters: in a run with `config.lora.targets`, its `adapters.Adapters` (the adapted
      kernels, their matrix views, ranks and scales; params['lora'] holds them), in the
      data stage.
  """

  hints: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  model_config: Any = None
  batch: Any = None
  apply_fn: Callable | None = None
  pretrained: Any = None
  pretrained_state: Any = None
  sources: Any = None
  extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  dataset: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  data: DataContext | None = None
  adapters: Any = None

  def hint(self, name: str, scheme: str):
    if name not in self.hints:
      raise KeyError(
        f'init scheme {scheme!r} needs the model hint {name!r}; '
        f"this model gives {sorted(self.hints)} (see the model's init_hints())"
      )
    return self.hints[name]

  def require(self, field: str, scheme: str):
    """`field` of this context, of `dataset` or of `hints`; a one-line ConfigError if absent.

    `field` is a context attribute ('data', 'pretrained', 'model_config', 'batch', ...), a
    dataset fact or a model hint. The error names the scheme and what it needs, e.g.
    `require('degree_stats', 'virgo')` on an image dataset.
    """
    value = getattr(self, field, None) if field in _FIELDS else None
    if value is None and field in self.dataset:
      value = self.dataset[field]
    if value is None and field in self.hints:
      value = self.hints[field]
    if value is None or (field in _FIELDS and isinstance(value, Mapping) and not value):
      what = {
        'data': "the data stage (mark it with_stage(..., 'data'))",
        'pretrained': 'pretrained params (set config.init.pretrained)',
      }.get(field, f'{field!r}')
      if field in _FIELDS:
        raise ConfigError(
          f'config.init: scheme {scheme!r} needs {what}, which this run does not give'
        )
      have = sorted(k for k, v in {**self.dataset, **self.hints}.items() if v is not None)
      raise ConfigError(
        f'config.init: scheme {scheme!r} needs {what}, which this model and '
        f'dataset do not give (they give: {", ".join(have) or "nothing"})'
      )
    return value


_FIELDS = tuple(f.name for f in dataclasses.fields(InitContext))


@dataclasses.dataclass(frozen=True)
class SchemeResult:
  """What a scheme returns when it gives more than params.

  Attributes:
    params: the param tree.
    model_config: a new model config (the scheme changed the architecture; the run builds
      that model from `params`), or None.
    masks: fixed 0/1 masks, a nested dict of bool arrays over some of the params' paths
      (pruning at init); the run declares which params carry masks from the scheme's
      `masks` attribute (a path regex, see `with_stage`), keeps masked entries at exactly 0
      in training and checkpoints the masks. None: no masks.
    model_state: the model's other variables (e.g. BatchNorm statistics, a nested dict like
      the model's), e.g. restored or merged from pretrained sources; None keeps the model's.
  """

  params: Any
  model_config: Any = None
  masks: Any = None
  model_state: Any = None

  def merged_into(self, earlier: SchemeResult | None) -> SchemeResult:
    """This result over an `earlier` one of the same chain: fields this one leaves None
    keep the earlier value (masks of different params are combined)."""
    if earlier is None:
      return self
    masks = self.masks
    if earlier.masks is not None:
      masks = {**earlier.masks, **(masks or {})} if masks is not None else earlier.masks
    return SchemeResult(
      self.params,
      self.model_config if self.model_config is not None else earlier.model_config,
      masks,
      self.model_state if self.model_state is not None else earlier.model_state,
    )


def unwrap(result, earlier: SchemeResult | None = None) -> tuple[Any, SchemeResult | None]:
  """(params, the accumulated `SchemeResult` or None) of a scheme's return value."""
  if isinstance(result, SchemeResult):
    merged = result.merged_into(earlier)
    return merged.params, merged
  return result, earlier


def finish(params, result: SchemeResult | None):
  """What a chain of parts returns: plain params, or a `SchemeResult` if any part gave one."""
  return params if result is None else dataclasses.replace(result, params=params)


class Scheme(Protocol):
  def __call__(self, key: jax.Array, params: Any, ctx: InitContext | None = None) -> Any: ...


def with_stage(fn: Callable, stage: str = 'param', **attrs) -> Callable:
  """`fn` marked as a scheme of `stage` ("param" | "data"), with `attrs` set on it.

  attrs: `resize` (`(model_config, ctx) -> model_config`, the architecture stage),
  `num_batches` (data stage: training batches in `ctx.data.batches`), or anything the
  pipeline documents. Returns `fn` itself, or a wrapper when `fn` takes no attributes.
  """
  if stage not in STAGES:
    raise ValueError(f'with_stage: unknown stage {stage!r}; valid: {", ".join(STAGES)}')
  try:
    fn.stage = stage
  except (AttributeError, TypeError, dataclasses.FrozenInstanceError):
    inner = fn
    fn = functools.wraps(inner)(lambda key, params, ctx=None: inner(key, params, ctx))
    fn.stage = stage
  for name, value in attrs.items():
    setattr(fn, name, value)
  return fn


def stage_of(scheme) -> str:
  """The stage `scheme` runs in: its `stage` attribute, "param" by default."""
  return getattr(scheme, 'stage', 'param')


def _name(scheme) -> str:
  return getattr(scheme, '__qualname__', None) or repr(scheme)


def chain(*schemes: Scheme, warn: bool = True) -> Scheme:
  """Applies `schemes` in order; the i-th gets `fold_in(key, i)`.

  A later scheme overwrites what an earlier one set on the same params, so order the
  general before the specific: `chain(ii.get_scheme("he_normal"), ii.Rules([(r".*attn/.*
  kernel", ii.orthogonal())]))` is He everywhere but orthogonal attention. With `warn`,
  a scheme whose every param is rewritten by later ones (it has no effect, e.g.
  `chain(orthogonal, fixup)`: Fixup sets every kernel) raises a UserWarning. A param
  counts as set when the scheme returns a different array object for it.

  Across stages: the chain exposes `.stages` (its parts, in order) and `.stage` ("data" if
  any part is a data-stage scheme, else "param"); a run's pipeline applies the param-stage
  parts inside the jitted init and the data-stage parts after it, each still with its
  `fold_in(key, i)`. A param-stage part after a data-stage part is a ValueError naming both.
  A part returning `SchemeResult` (a new architecture, masks, model state) hands its params
  to the later parts (their `ctx` still describes the model the chain read) and the chain
  returns a `SchemeResult` with the last params and every field a part set (a later part's
  value wins; masks of different params are combined).
  """
  for i, scheme in enumerate(schemes):
    for j in range(i):
      if stage_of(schemes[j]) == 'data' and stage_of(scheme) == 'param':
        raise ValueError(
          f'chain: scheme {i} ({_name(scheme)}) runs in the param stage but '
          f'comes after scheme {j} ({_name(schemes[j])}), a data-stage scheme; '
          'put param-stage schemes first'
        )

  def chained(key, params, ctx=None):
    written, result = [], None
    for i, scheme in enumerate(schemes):
      before = {l.path: l.value for l in tree_lib.leaves(params)}
      out = scheme(jax.random.fold_in(key, i), params, ctx)
      params, result = unwrap(out, result)  # Later parts get the new model's params.
      if isinstance(out, SchemeResult) and out.model_config is not None:
        before = {}
      written.append(
        {l.path for l in tree_lib.leaves(params) if before.get(l.path) is not l.value}
        if before
        else set()
      )
    for i, paths in enumerate(written if warn else ()):
      later = set().union(*written[i + 1 :])
      if paths and paths <= later:
        warnings.warn(
          f'chain: every param that scheme {i} ({_name(schemes[i])}) sets is set '
          f'again by a later scheme, so scheme {i} has no effect; put the general '
          'scheme first and narrower ones after it',
          UserWarning,
          stacklevel=2,
        )
    return finish(params, result)

  chained.stages = tuple(schemes)
  chained.stage = 'data' if any(stage_of(s) == 'data' for s in schemes) else 'param'
  return chained
