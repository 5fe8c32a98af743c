"""Trained models a run starts from or reads: pretrained sources and a distillation teacher.

    sources = Sources.from_config(config.init.pretrained, mesh, rules, fallback_model_config)
    params, model_state = sources.restore()        # one tree, or {name: tree} for a mapping
    teacher = load_teacher(config.train.distill.teacher, mesh, rules, meta)

A source is a run directory, an Orbax checkpoint directory or one step directory
(`checkpoint.pretrained_source`). Its params AND model state (BatchNorm statistics) are
restored in the source's own tree (the model its config.json or checkpoint config recorded,
`built_model` first), sharded by this run's logical-axis rules on this run's mesh, whatever
the mesh it was saved on. With several sources (`{name: path}`) every source must hold the
same tree as the first (paths and shapes); the error names the source that differs.

Peak memory: `restore()` holds every source at once on the devices (the param stage reads
them inside one jitted program). A data-stage part marked `streams_pretrained=True` makes the
run restore nothing up front; it gets this object as `ctx.sources` and calls `load(name)` per
source, outside jit (peak: the model, what the scheme keeps and one source).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import jax
import ml_collections

from initlab import config as config_lib
from initlab import models
from initlab import sharding as sharding_lib
import initlab.init as ii
from initlab.train import checkpoint as ckpt_lib
from initlab.train import state as state_lib
from initlab.train.step import Teacher


@dataclasses.dataclass(frozen=True)
class Source:
  """One trained model on disk, as this run will restore it.

  Attributes:
    name: its key in `init.pretrained` ('' for a single path).
    path: the checkpoint path `checkpoint.restore_params` reads.
    model_config: the model it holds (the source run's built model).
    graphdef: that model's `nnx.GraphDef`.
    abstract: (params, model_state) `ShapeDtypeStruct`s with this mesh's shardings.
    adapters: the source run's low-rank adapters (`ii.adapters.Adapters`), or None; a LoRA
      run opens as its plain model: `restore` folds the adapters into their kernels.
  """

  name: str
  path: Any
  model_config: Any
  graphdef: Any
  abstract: tuple
  adapters: Any = None

  def restore(self) -> tuple[Any, Any]:
    """(params, model_state) on this mesh (a LoRA run's adapters merged into the kernels)."""
    params, model_state = self.abstract
    if self.adapters is not None:
      mesh = jax.tree.leaves(params)[0].sharding.mesh
      lora = jax.tree.map(
        lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
        self.adapters.abstract(),
        self.adapters.shardings(mesh),
      )
      params = {**params, ii.adapters.ROOT: lora}
    item = {'params': params, 'model_state': model_state} if model_state else {'params': params}
    out = ckpt_lib.restore_params(self.path, item, subtree=())
    params = out['params']
    if self.adapters is not None:
      shardings = jax.tree.map(lambda a: a.sharding, self.abstract[0])
      params = jax.jit(self.adapters.fold, out_shardings=shardings)(params)
    return params, out.get('model_state', {})


def open_source(path, *, name: str, mesh, rules, model_config, key: str) -> Source:
  """The `Source` at `path`; its model is the one its run recorded, else `model_config`.

  `key` names the config key in errors (e.g. 'init.pretrained["a"]').
  """
  try:
    where, saved = ckpt_lib.pretrained_source(path)
  except FileNotFoundError as e:
    raise config_lib.ConfigError(f'config.{key}: {e}') from None
  if saved is not None:
    model_config = saved.get('built_model') or config_lib.full_model_config(
      ml_collections.ConfigDict({k: saved[k] for k in ('model', 'dtype')})
    )
  if not isinstance(model_config, ml_collections.ConfigDict):
    model_config = ml_collections.ConfigDict(model_config)
  graphdef, abstract_state = ii.abstract_model(lambda rngs: models.build(model_config, rngs=rngs))
  shardings = sharding_lib.state_shardings(abstract_state, sharding_lib.as_auto_mesh(mesh), rules)
  sds = lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh)
  abstract = tuple(
    jax.tree.map(sds, a, sh)
    for a, sh in zip(state_lib.pure_variables(abstract_state), state_lib.pure_variables(shardings))
  )
  adapters = None
  if saved is not None and saved.get('adapters'):
    options = {k: v for k, v in saved['adapters'].items() if k != 'train_also'}
    adapters = state_lib.adapters_of(abstract_state, shardings, options)
  return Source(name, where, model_config, graphdef, abstract, adapters)


def _shapes(tree) -> dict[str, tuple]:
  return {l.path: tuple(l.shape) for l in ii.leaves(tree)}


class Sources:
  """The pretrained sources of a run (`config.init.pretrained`), restorable on its mesh.

  Attributes:
    sources: {name: Source}; a single path is the one source named ''.
    mapping: True when the config gave {name: path} (schemes then read dicts).
  """

  def __init__(self, sources: Mapping[str, Source], mapping: bool):
    self.sources, self.mapping = dict(sources), mapping
    names = list(self.sources)
    first = names[0] if names else None
    for name in names[1:]:
      want, have = _shapes(self.sources[first].abstract[0]), _shapes(self.sources[name].abstract[0])
      if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))[0][0]
        raise config_lib.ConfigError(
          f'config.init.pretrained[{name!r}]: its params differ from source {first!r}: param '
          f'{diff!r} is {have.get(diff, "missing")} there, {want.get(diff, "missing")} in '
          f'{first!r} (every source must hold the same model)'
        )

  @classmethod
  def from_config(cls, value, *, mesh, rules, model_config, extra=None) -> Sources | None:
    """The sources of `config.init.pretrained` ('' : None; a path; {name: path}).

    `extra`: an in-memory source (params, model_state) named '' (`train.run(start_from=)`).
    """
    if extra is not None:
      return _InMemory(extra)
    if not value:
      return None
    if isinstance(value, str):
      src = open_source(
        value, name='', mesh=mesh, rules=rules, model_config=model_config, key='init.pretrained'
      )
      return cls({'': src}, mapping=False)
    items = dict(value)
    if not items:
      raise config_lib.ConfigError(
        'config.init.pretrained: an empty mapping; give {name: path} of at least one '
        "source, a single path, or '' for none"
      )
    return cls(
      {
        name: open_source(
          path,
          name=name,
          mesh=mesh,
          rules=rules,
          model_config=model_config,
          key=f'init.pretrained[{name!r}]',
        )
        for name, path in items.items()
      },
      mapping=True,
    )

  @property
  def names(self) -> list[str]:
    return list(self.sources)

  def abstract(self) -> tuple[Any, Any]:
    """(params, model_state) as the scheme will see them (a tree, or {name: tree})."""
    return self._shape({n: s.abstract for n, s in self.sources.items()})

  def load(self, name: str = '') -> tuple[Any, Any]:
    """(params, model_state) of one source, restored now on the mesh."""
    if name not in self.sources:
      raise KeyError(f'no pretrained source {name!r}; sources: {self.names}')
    logging.info('Restoring pretrained source %r from %s', name, self.sources[name].path)
    try:
      return self.sources[name].restore()
    except ckpt_lib.TreeMismatchError as e:
      key = f'init.pretrained[{name!r}]' if self.mapping else 'init.pretrained'
      raise config_lib.ConfigError(f'config.{key}: {e}') from None

  def restore(self) -> tuple[Any, Any]:
    """Every source's (params, model_state), as `abstract()` (all held at once)."""
    return self._shape({n: self.load(n) for n in self.sources})

  def _shape(self, per_name):
    if not self.mapping:
      return per_name['']
    return {n: v[0] for n, v in per_name.items()}, {n: v[1] for n, v in per_name.items()}


class _InMemory(Sources):
  """One source already in memory (a `TrainState`'s params and model state)."""

  def __init__(self, variables):
    self.sources, self.mapping = {'': None}, False
    self._variables = variables

  def abstract(self):
    return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), self._variables
    )

  def load(self, name: str = ''):
    return jax.tree.map(jax.numpy.copy, self._variables)  # The run donates its state.


def load_teacher(path, *, mesh, rules, meta, model_config) -> Teacher:
  """The teacher at `path` (`config.train.distill.teacher`), restored on this mesh.

  Any zoo architecture whose output space matches this run's data (its data-fixed options,
  e.g. num_classes or vocab_size, agree with the dataset) — else a one-line ConfigError.
  """
  src = open_source(
    path,
    name='teacher',
    mesh=mesh,
    rules=rules,
    model_config=model_config,
    key='train.distill.teacher',
  )
  try:
    models.check_fits(src.model_config, meta)
  except ValueError as e:
    raise config_lib.ConfigError(
      f"config.train.distill.teacher: the teacher at {path} does not share this run's output "
      f'space: {e}'
    ) from None
  try:
    variables = src.restore()
  except ckpt_lib.TreeMismatchError as e:
    raise config_lib.ConfigError(f'config.train.distill.teacher: {e}') from None
  shardings = jax.tree.map(lambda a: a.sharding, src.abstract)
  return Teacher(src.graphdef, variables, shardings, str(path))
