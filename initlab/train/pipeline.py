"""The staged init of one run (`initlab.init.stages`), wired to the run's mesh, data and sources.

    build_model(run, model_config, scheme)   # 1. architecture (resize, probe), 2. param (traced)
    state = initial_state(run)               # resume, else param stage + data stage

1. Architecture: every part's `resize(model_config, ctx)`, then every part's `probe(key,
   params, ctx) -> model_config`: a dense probe model of the current config is built and
   initialized by the param-stage parts before the probing part (else the modules' own
   init), and the probe sees its params and `ctx.data` over `num_batches` training batches
   drawn with the data stage's seed. The chosen config is recorded in config.json
   ('built_model'); a rerun of the same config reuses it and never probes again (so the
   model does not depend on a later data order or mesh). A param-stage part may also return
   `SchemeResult(params, model_config)` (`ii.ArchitectureChange`): that model is built from
   the scheme's params.
2. Param: one jitted, sharded program (`state.Setup.create`): the param-stage parts with
   `ctx.pretrained` / `ctx.pretrained_state` restored from `config.init.pretrained` (one
   tree, or {name: tree}); μP/NTK init factors after them (`Parametrization.wrap`).
   `config.init_from` (and `train.run(start_from=)`) is the source of a final
   `from_pretrained` part that copies every param and the model state, after the scheme and
   its μP factors: the run starts from those params, and the data stage still runs on them.
3. Data: the data-stage parts on batches drawn with their own seed (`stages.data_seed`), with
   `ctx.sources` to restore pretrained sources one at a time; a part marked
   `streams_pretrained=True` makes the run restore none up front (peak memory: the model, what
   the scheme keeps and one source, instead of every source at once).
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import ml_collections

from initlab import config as config_lib
from initlab import data as data_lib
from initlab import models
from initlab import rundir
from initlab import sharding as sharding_lib
import initlab.init as ii
from initlab.train import optim
from initlab.train import parametrize
from initlab.train import partition
from initlab.train import state as state_lib
from initlab.train import workdir as workdir_lib
from initlab.train.state import Setup

PROBE_SALT = 3  # Probe key: fold_in(fold_in(init key, PROBE_SALT), part path).


def _build(cfg):
  return lambda rngs: models.build(cfg, rngs=rngs)


def _fold(key, path):
  for i in path:
    key = jax.random.fold_in(key, i)
  return key


def build_model(run, model_cfg, scheme) -> None:
  """The architecture stage and the traced param stage; sets on `run`: plan, init_ctx,
  sources, lora_options, probed, parametrization, tx, setup, model_config."""
  run.plan = ii.stages.plan(scheme)
  run.init_ctx = ii.InitContext(dataset=ii.stages.dataset_facts(run.meta))
  rules = sharding_lib.axis_rules(run.config.sharding)
  model_cfg = ii.stages.resize(run.plan, model_cfg, run.init_ctx)
  run.sources = run.open_sources(model_cfg, rules)
  run.lora_options = lora_options(run)
  run.streams = run.plan.streams
  if run.streams and run.copy_pretrained:
    raise ValueError('init_from / start_from copy their source up front; no part may stream it')
  abstract = run.sources.abstract() if up_front(run) else (None, None)
  run.probed = False
  if run.plan.probes:
    recorded = recorded_built_model(run)
    if recorded is not None:
      logging.info('%s: reusing the recorded probed model', run.workdir)
      model_cfg = recorded
    else:
      for path, part in run.plan.probes:
        model_cfg = probe(run, path, part, model_cfg, rules)
      run.probed = True
  source = None
  while True:
    run.parametrization = parametrize.from_config(run.config, model_cfg)
    run.tx = optim.make(run.config.optimizer, run.config.train.steps, run.parametrization)
    param_scheme = run.parametrization.wrap(run.plan.param)
    if run.copy_pretrained:
      copy = ii.get_scheme('from_pretrained')
      param_scheme = copy if param_scheme is None else ii.chain(param_scheme, copy, warn=False)
    try:
      run.setup = Setup.create(
        _build(model_cfg),
        run.tx,
        mesh=run.mesh,
        axis_rules=rules,
        scheme=param_scheme,
        ctx=dataclasses.replace(run.init_ctx, model_config=model_cfg if source is None else source),
        source_fn=None if source is None else _build(source),
        pretrained=abstract[0],
        pretrained_state=abstract[1],
        trainable=run.config.optimizer.get('trainable', ''),
        masked=run.plan.masks,
        lora=run.lora_options,
      )
      break
    except ii.ArchitectureChange as e:  # The scheme returned SchemeResult: build that model.
      source, model_cfg = model_cfg, e.model_config
  if source is not None or run.plan.resizes or run.plan.probes:
    run.check_fits(model_cfg)
  run.model_config = model_cfg


def lora_options(run) -> dict | None:
  """`Setup.create`'s adapter options from `config.lora` and the scheme (the kind a part
  declares with its `adapter_kind` attribute; 'lora' by default); None without targets. A
  LoRA-init scheme without `lora.targets` is a one-line error."""
  lora = run.config.lora
  kinds = {getattr(p, 'adapter_kind') for _, p in run.plan.parts if hasattr(p, 'adapter_kind')}
  if not lora.targets:
    if kinds:
      raise config_lib.ConfigError(
        f'config.init.name={run.config.init.name!r} initializes low-rank adapters: set '
        "config.lora.targets (a regex of kernel paths, e.g. r'.*(query|value)/kernel')"
      )
    return None
  if len(kinds) > 1:
    raise config_lib.ConfigError(f'config.init: parts of the scheme ask for adapter kinds {kinds}')
  kind = kinds.pop() if kinds else 'lora'
  factor = max([getattr(p, 'adapter_rank_factor', 1.0) for _, p in run.plan.parts], default=1.0)
  return dict(
    rank_factor=float(factor),
    targets=lora.targets, rank=lora.rank, alpha=lora.alpha, rslora=lora.rslora, kind=kind,
    train_also=lora.get('train_also', ''),
  )  # fmt: skip


def up_front(run) -> bool:
  """Whether the run restores its pretrained sources before the param stage (all at once):
  it has sources and no scheme part streams them (`streams_pretrained`)."""
  return run.sources is not None and not run.streams


def recorded_built_model(run) -> ml_collections.ConfigDict | None:
  """'built_model' of the workdir's config.json when it holds a run of this very config."""
  try:
    saved = rundir.read_json(run.workdir / rundir.CONFIG)
  except (OSError, ValueError):
    return None
  current = workdir_lib.config_dict(run.config)
  if not isinstance(saved, dict) or workdir_lib.config_changes(saved, current):
    return None
  built = saved.get('built_model')
  return None if built is None else ml_collections.ConfigDict(built)


def probe(run, path, part, model_cfg, rules) -> ml_collections.ConfigDict:
  """`part.probe(key, params, ctx)` on the dense model of `model_cfg` (module docstring)."""
  earlier = [(q, p) for q, p in run.plan.parts if q < path and ii.stage_of(p) == 'param']

  def init_scheme(key, params, ctx=None):
    for q, p in earlier:
      params, _ = ii.unwrap(p(_fold(key, q), params, ctx))
    return params

  ctx = dataclasses.replace(run.init_ctx, model_config=model_cfg)
  graphdef, init, _ = ii.sharded_init(
    _build(model_cfg),
    mesh=run.mesh,
    axis_rules=rules,
    scheme=init_scheme if earlier else None,
    ctx=ctx,
  )
  key = jax.random.key(run.config.seeds.init)
  with jax.set_mesh(run.mesh):
    pretrained = run.sources.restore()[0] if up_front(run) else None
    params, model_state = state_lib.pure_variables(init(key, pretrained))
    batches = draw_batches(run, int(getattr(part, 'num_batches', 1)))
    data = data_context(run, graphdef, model_state, batches)
    dense = data.model(params)
    hints = dense.init_hints() if hasattr(dense, 'init_hints') else {}
    ctx = dataclasses.replace(ctx, hints=hints, data=data, pretrained=pretrained)
    chosen = part.probe(_fold(jax.random.fold_in(key, PROBE_SALT), path), params, ctx)
  if not isinstance(chosen, (ml_collections.ConfigDict, dict)):
    raise ValueError(
      f'init scheme part {path}: probe returned {type(chosen).__name__}, not a model config'
    )
  chosen = ml_collections.ConfigDict(dict(chosen))
  logging.info('probe chose model %s', chosen)
  return chosen


def data_context(run, graphdef, model_state, batches) -> ii.DataContext:
  """`ctx.data` over `batches` with the run's loss and teacher."""
  teacher = None
  if run.teacher is not None:
    t = run.teacher  # Its variables are an argument of the program, not baked-in constants.
    logits = jax.jit(lambda variables, x: t.logits(variables, x))
    teacher = lambda x: logits(t.variables, x)
  return ii.DataContext(graphdef, model_state, batches, run.meta.task, run.loss, teacher)


def draw_batches(run, n: int) -> tuple:
  """`n` global training batches drawn with the data stage's own seed (`stages.data_seed`;
  training's data order is unchanged); a graph task's batch is the whole graph."""
  if run.node_task:
    return (run.graph.batch(run.config.data.train_split),) * n
  it = run.train_iterator(seed=ii.stages.data_seed(run.config.seeds.data))
  return tuple(data_lib.to_global(next(it), run.batch_sharding) for _ in range(n))


def initial_state(run) -> state_lib.TrainState:
  """The state at step 0: the param stage (pretrained sources restored), then the data stage."""
  keys = jax.random.key(run.config.seeds.init), jax.random.key(run.config.seeds.dropout)
  pretrained = run.sources.restore() if up_front(run) else (None, None)
  state = run.setup.init(*keys, *pretrained)
  if run.plan.data:
    state = data_stage(run, state, keys, pretrained)
  return state


def data_stage(run, state, keys, pretrained) -> state_lib.TrainState:
  """The data-stage parts on `plan.num_batches` batches; a fresh optimizer state after."""
  batches = draw_batches(run, run.plan.num_batches)
  model = run.setup.model(state)
  ctx = dataclasses.replace(
    run.init_ctx,
    model_config=run.model_config,
    pretrained=pretrained[0],
    pretrained_state=pretrained[1],
    hints=model.init_hints() if hasattr(model, 'init_hints') else {},
    data=data_context(run, run.setup.graphdef, state.model_state, batches),
    sources=run.sources,
    adapters=run.setup.adapters,
  )
  out = ii.stages.run_data_stage(
    run.plan, jax.random.fold_in(keys[0], 1), state.params, ctx, run.setup.shardings.params
  )
  params, result = ii.unwrap(out)
  model_state, masks = state.model_state, state.masks
  if result is not None and result.model_state is not None:
    model_state = jax.device_put(result.model_state, run.setup.shardings.model_state)
  if result is not None and result.masks is not None:
    masks = _data_stage_masks(run, result.masks, params, masks)
  return run.setup.from_params(params, model_state, masks, *keys)


def _data_stage_masks(run, given, params, masks):
  given = partition.check_masks(given, params, 'data-stage init scheme')
  undeclared = {l.path for l in ii.leaves(given)} - run.setup.masked
  if undeclared:
    raise ValueError(
      f'a data-stage init scheme returned a mask for {sorted(undeclared)[0]!r}, which no '
      'part declares (with_stage(..., masks=<param regex>))'
    )
  return jax.device_put(partition.insert(masks, given), run.setup.shardings.masks)
