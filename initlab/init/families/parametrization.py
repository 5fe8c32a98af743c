"""Width parametrizations: standard (SP), NTK and μP, relative to a base width.

    p = parametrize.from_model_config('mup', model_config, base_width=64)  # initlab.train
    scheme = p.wrap(ii.get_scheme('he_normal'))   # the init, then μP's init factors
    tx = optax.chain(optax.adam(lr), p.transform())  # per-param learning-rate multipliers

A parametrization says how each param's init variance and learning rate scale with the
width n of the model. Both come from one table (`Parametrization.table`: param path ->
`Entry`), built from the params' `ParamSpec` fans at the model's width and at the base width
n₀ (the same model built with its width option = n₀, abstractly). With r = fan_in/fan_in₀
(and r_out = fan_out/fan_out₀) every factor is 1 at the base width, so a run tuned at n₀
(its init scheme and learning rate η) is the run each parametrization scales up
(μTransfer: Yang et al., "Tensor Programs V", arXiv 2203.03466).

Roles (TP V, Table 3 and its Section 4 / Appendix definitions), per param:
  input   a kernel whose fan_in does not grow with width (the first layer; also a layer
          with no width at all), and every embedding table (its input is a one-hot vocab);
  output  the classifier (the model's init_hints()['classifier']) and any kernel from a
          growing fan_in to a fixed fan_out;
  hidden  every other kernel (fan_in grows with width);
  vector  biases and norm scales/offsets ("all biases" of Table 3).

Factors (TP V Table 3 for μP, the form without forward multipliers; its Tables 8-9 are
equivalent forms that put multipliers in the model's forward pass, which initlab's models
do not have. NTK is Jacot et al., arXiv 1806.07572, moved to the same form by the
abc-symmetry of Yang & Hu, "Tensor Programs IV", arXiv 2011.14522: (a, b, c) ->
(a+θ, b-θ, c-θ) for Adam, c-2θ for SGD, with θ = -1/2 on the layers whose fan_in grows):

                    input    vector   hidden      output
  init variance     ×1       ×1       ×1          ×1/r (μP; 0 with zero_readout)
  Adam LR   ntk     1        1        r^(-1/2)    r^(-1/2)
            mup     1        1        1/r         1/r
  SGD LR    ntk     1        1        1/r         1/r
            mup     r_out    r_out    1           1/r
standard changes nothing. "Adam" is every entrywise-normalized optimizer (adam, adamw,
lion, …; the default for names not in SGD_LIKE); "SGD" the plain gradient steps of `SGD_LIKE`. The init factors multiply
what the init scheme drew, so they assume a fan_in-scaled base init (LeCun, He,
`variance_scaling(.., 'fan_in')`, the default he_normal): then a hidden kernel already has
Var ∝ 1/fan_in (Table 3's 1/fan_in) and the readout gets Var ∝ 1/(fan_in·r) (Table 3's
1/fan_in²). Input-like inits are left as the scheme draws them: μP wants them independent
of width, so an embedding table should get a width-free init (Flax's `nn.Embed` default
has Var 1/D). Learning-rate factors multiply the optimizer's update, weight decay included
(as the `mup` package's MuAdamW). Not covered: μP's attention logit scale 1/d_head instead
of 1/√d_head (TP V) is part of the model's forward pass, not of its params.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Mapping

import jax
import optax

from initlab.init import tree as tree_lib
from initlab.init.schemes import SchemeResult
from initlab.init.specs import LayoutError, infer_spec

PARAMETRIZATIONS = ('standard', 'ntk', 'mup')
ROLES = ('input', 'hidden', 'output', 'vector')
OPTIMIZER_KINDS = ('adam', 'sgd')
SGD_LIKE = ('sgd', 'noisy_sgd', 'polyak_sgd')  # optax names whose step is -η·g (+ momentum).
WIDTH_KEYS = ('width', 'dim')  # Model options holding the width (mlp, resnet / vit, LM).


def optimizer_kind(name: str) -> str:
  """'sgd' for the optax optimizers of SGD_LIKE, 'adam' (entrywise normalized) for the rest."""
  return 'sgd' if name in SGD_LIKE else 'adam'


@dataclasses.dataclass(frozen=True)
class Entry:
  """One param's role, fans (at the width and at the base width) and factors."""

  role: str
  fan_in: int
  base_fan_in: int
  fan_out: int
  base_fan_out: int
  init_scale: float  # Multiplies the init scheme's value: sqrt of the variance factor.
  lr: float  # Multiplies the optimizer's update.
  shape: tuple[int, ...] = ()  # The param's shape at the width.


def factors(
  name: str,
  role: str,
  r_in: float,
  r_out: float = 1.0,
  *,
  optimizer: str = 'adam',
  zero_readout: bool = False,
) -> tuple[float, float]:
  """(init variance factor, learning-rate factor) of a param (TP V Table 3, see module doc).

  `r_in`, `r_out`: fan_in/base fan_in and fan_out/base fan_out of the param.
  """
  if name not in PARAMETRIZATIONS:
    raise ValueError(f'parametrization {name!r}; valid: {", ".join(PARAMETRIZATIONS)}')
  if role not in ROLES:
    raise ValueError(f'role {role!r}; valid: {", ".join(ROLES)}')
  if optimizer not in OPTIMIZER_KINDS:
    raise ValueError(f'optimizer kind {optimizer!r}; valid: {", ".join(OPTIMIZER_KINDS)}')
  if name == 'standard':
    return 1.0, 1.0
  wide = role in ('hidden', 'output')
  if name == 'ntk':
    return 1.0, (r_in**-0.5 if optimizer == 'adam' else 1 / r_in) if wide else 1.0
  var = (0.0 if zero_readout else 1 / r_in) if role == 'output' else 1.0
  if optimizer == 'adam':
    return var, 1 / r_in if wide else 1.0
  return var, {'input': r_out, 'vector': r_out, 'hidden': 1.0, 'output': 1 / r_in}[role]


def _spec(leaf):
  try:
    return infer_spec(leaf.path, leaf.shape, leaf.names)
  except LayoutError as e:
    raise ValueError(f'parametrization: {e}') from None


def role_of(spec, fans, base_fans, path: str, classifier: str | None) -> str:
  """input / hidden / output / vector of a param (see the module doc)."""
  if spec.role in ('bias', 'norm_scale', 'norm_offset'):
    return 'vector'
  if spec.role == 'embedding':
    return 'input'
  grows_in, grows_out = fans[0] != base_fans[0], fans[1] != base_fans[1]
  if (classifier and re.fullmatch(classifier, path)) or (grows_in and not grows_out):
    return 'output'
  return 'hidden' if grows_in else 'input'


@dataclasses.dataclass(frozen=True)
class Parametrization:
  """A parametrization's table, `{param path: Entry}`, and what applies it.

  Build with `Parametrization.build` (from param trees), `Parametrization.standard()`, or
  from a zoo model config with `initlab.train.parametrize.from_model_config` (which builds the
  model abstractly; `initlab.init` never imports the models).
  """

  name: str
  table: Mapping[str, Entry]

  @classmethod
  def build(
    cls,
    name: str,
    params: Any,
    base_params: Any,
    *,
    classifier: str | None = None,
    optimizer: str = 'adam',
    zero_readout: bool = False,
  ) -> Parametrization:
    """The table of `params` (any param tree; arrays or ShapeDtypeStructs) against the same
    model's `base_params` at the base width. `classifier`: regex of the readout's path."""
    factors(name, 'input', 1.0, optimizer=optimizer)  # Checks name and optimizer.
    if zero_readout and name != 'mup':
      raise ValueError(f'zero_readout is a μP option; parametrization {name!r} has none')
    base = {l.path: l for l in tree_lib.leaves(base_params)}
    table = {}
    for leaf in tree_lib.leaves(params):
      if leaf.path not in base:
        raise ValueError(
          f'parametrization: param {leaf.path!r} is not in the base-width model '
          f'(its params: {sorted(base)[:6]} ...)'
        )
      spec = _spec(leaf)
      fans, base_fans = spec.fans(leaf.shape), spec.fans(base[leaf.path].shape)
      role = role_of(spec, fans, base_fans, leaf.path, classifier)
      var, lr = factors(
        name,
        role,
        fans[0] / base_fans[0],
        fans[1] / base_fans[1],
        optimizer=optimizer,
        zero_readout=zero_readout,
      )
      table[leaf.path] = Entry(
        role, fans[0], base_fans[0], fans[1], base_fans[1], math.sqrt(var), lr, leaf.shape
      )
    return cls(name, table)

  @classmethod
  def standard(cls) -> Parametrization:
    """The standard parametrization: every factor 1 for every param (of any model)."""
    return cls('standard', _Ones())

  @property
  def active(self) -> bool:
    """False for 'standard': the run's init and optimizer stay as they are."""
    return self.name != 'standard'

  def _entry(self, path: str) -> Entry:
    if path not in self.table:
      raise KeyError(
        f'parametrization {self.name!r}: no entry for param {path!r}; it knows '
        f'{sorted(self.table)[:6]} ...'
      )
    return self.table[path]

  def mismatch(self, params: Any) -> str | None:
    """None if the table has every param of `params` with its shape, else what differs for
    the first param that does not match (its path, its shape and what the table expects)."""
    for leaf in tree_lib.leaves(params):
      want = self.table[leaf.path].shape if leaf.path in self.table else None
      if want is None or tuple(want) != tuple(leaf.shape):
        expects = 'has no such param' if want is None else f'expects shape {tuple(want)}'
        return (
          f'param {leaf.path!r} has shape {tuple(leaf.shape)} but the table {expects} '
          f'(it knows {sorted(self.table)[:6]} ...)'
        )
    return None

  def init_scheme(self) -> Callable:
    """A param-stage scheme `(key, params, ctx) -> params` multiplying each param by its
    `init_scale` (untouched where it is 1); params unchanged if inactive.

    A param the table lacks, or holds with another shape, is a ValueError naming the first
    such path, its shape and what the table expects (the params are of another model)."""

    def scale(leaf):
      s = self.table[leaf.path].init_scale
      return leaf.value if s == 1.0 else (leaf.value * s).astype(leaf.value.dtype)

    def scheme(key, params, ctx=None):
      del key, ctx
      if not self.active:
        return params
      if (problem := self.mismatch(params)) is not None:
        raise ValueError(f'parametrization {self.name!r}: {problem}')
      return tree_lib.map_leaves(scale, params)

    scheme.__qualname__ = f'parametrization_{self.name}'
    return scheme

  def wrap(self, scheme: Callable | None) -> Callable | None:
    """`scheme` followed by this parametrization's init factors (`scheme` if inactive).

    `scheme` gets `fold_in(key, 0)` (as in `chain(scheme, self.init_scheme())`). If it
    returns a `SchemeResult`, the factors apply to its params and the result keeps its other
    fields. One exception: a `SchemeResult` with a new `model_config` whose params the table
    does not match comes back untouched: that is a run's first init of an architecture
    change, which the run discards before it builds the new model from the scheme's params
    with that model's own parametrization (`initlab.train.pipeline`). Any other param the
    table does not match is a ValueError (`init_scheme`)."""
    if not self.active:
      return scheme
    factors_ = self.init_scheme()
    if scheme is None:
      return factors_

    def wrapped(key, params, ctx=None):
      out = scheme(jax.random.fold_in(key, 0), params, ctx)
      if not isinstance(out, SchemeResult):
        return factors_(jax.random.fold_in(key, 1), out, ctx)
      if out.model_config is not None and self.mismatch(out.params) is not None:
        return out  # Another model's params: the run rebuilds with that model's table.
      return dataclasses.replace(out, params=factors_(jax.random.fold_in(key, 1), out.params))

    name = getattr(scheme, '__qualname__', None) or type(scheme).__name__
    wrapped.__qualname__ = f'{factors_.__qualname__}({name})'
    return wrapped

  def init_scales(self, params: Any) -> Any:
    """A tree like `params` (any param tree) of each param's init factor (std multiplier)."""
    return tree_lib.map_leaves(lambda leaf: self._entry(leaf.path).init_scale, params)

  def lr_multipliers(self, params: Any) -> Any:
    """A tree like `params` (any param tree) of each param's learning-rate factor."""
    return tree_lib.map_leaves(lambda leaf: self._entry(leaf.path).lr, params)

  def transform(self) -> optax.GradientTransformation:
    """Multiplies each param's update by its learning-rate factor (stateless; chain it
    right after the optimizer)."""

    def update(updates, state, params=None):
      del params

      def mul(path, u):
        m = self._entry(tree_lib.path_str(path)).lr
        return u if m == 1.0 else (u * m).astype(u.dtype)

      return jax.tree_util.tree_map_with_path(mul, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def width_key(model_config: Mapping[str, Any], key: str = '') -> str:
  """The model option that holds the width: `key`, else the first of WIDTH_KEYS it has."""
  for k in (key,) if key else WIDTH_KEYS:
    if k in model_config:
      return k
  wanted = repr(key) if key else ' or '.join(map(repr, WIDTH_KEYS))
  raise ValueError(
    f'parametrization.width_key: model {model_config.get("name")!r} has no '
    f'option {wanted}; its options: {", ".join(sorted(model_config.keys()))}'
  )


def check(
  name: str,
  base_width: float,
  *,
  model_config: Mapping[str, Any] | None = None,
  width_key_: str = '',
  zero_readout: bool = False,
) -> None:
  """Raises ValueError('parametrization.<key>: ...') for options no run can use."""
  if name not in PARAMETRIZATIONS:
    raise ValueError(
      f'parametrization.name: expected one of {", ".join(PARAMETRIZATIONS)}; got {name!r}'
    )
  if zero_readout and name != 'mup':
    raise ValueError(
      f"parametrization.zero_readout: a μP option (name='mup'); got it with name={name!r}"
    )
  if not isinstance(base_width, (int, float)) or isinstance(base_width, bool) or base_width < 0:
    raise ValueError(f'parametrization.base_width: expected a width >= 0, got {base_width!r}')
  if name == 'standard':
    return
  if base_width <= 0:
    raise ValueError(
      f'parametrization.base_width: {name} needs the width of the base model '
      f'(> 0: the width at which its init and learning rate were tuned), got '
      f'{base_width!r}'
    )
  if model_config is not None:
    k = width_key(model_config, width_key_)
    if isinstance(model_config[k], int) and float(base_width) != int(base_width):
      raise ValueError(
        f'parametrization.base_width: {base_width} for the integer model option '
        f'{k!r}; expected a whole number'
      )


def with_width(model_config, width: float, key: str = ''):
  """A copy of the ConfigDict `model_config` with its width option set to `width`."""
  k = width_key(model_config, key)
  cfg = model_config.copy_and_resolve_references()
  with cfg.unlocked():
    cfg[k] = type(model_config[k])(width)
  return cfg


class _Ones(dict):
  """The standard parametrization's table: factors 1 for every path."""

  def __contains__(self, path):
    return True

  def __getitem__(self, path):
    return Entry('standard', 0, 0, 0, 0, 1.0, 1.0)
