"""The `jax.nn.initializers` family, registered under JAX's own names.

Variance scaling (LeCun 1998, Glorot & Bengio 2010, He et al. 2015, arXiv 1502.01852 eq. 10):
Var(w) = scale/n with n = fan_in, fan_out or (fan_in + fan_out)/2 of the param's layout
(`initlab.init.specs`). The public names here are layout-aware factories: `he_normal()` is a
`LayoutInitializer` that `Rules` binds to each param's fan axes.

Layout-free names are JAX's own objects, with JAX's convention: `zeros` and `ones` ARE
initializers (`Rules([(r".*bias", ii.zeros)])`), while `constant`, `normal`, `uniform` and
`truncated_normal` are factories (`ii.normal(0.02)`).
"""

from __future__ import annotations

import jax

from initlab.init.registry import register_initializer

_ji = jax.nn.initializers

variance_scaling = register_initializer(
  'variance_scaling', description="Var = scale/n, n = fan_in | fan_out | fan_avg (JAX's)"
)(_ji.variance_scaling)
lecun_normal = register_initializer(
  'lecun_normal', description="Var = 1/fan_in, truncated normal (Flax's default)"
)(_ji.lecun_normal)
lecun_uniform = register_initializer('lecun_uniform', description='Var = 1/fan_in, uniform')(
  _ji.lecun_uniform
)
glorot_normal = register_initializer(
  'glorot_normal', description='Glorot: Var = 2/(fan_in + fan_out), truncated normal'
)(_ji.glorot_normal)
glorot_uniform = register_initializer(
  'glorot_uniform', description='Glorot: Var = 2/(fan_in + fan_out), uniform'
)(_ji.glorot_uniform)
xavier_normal = register_initializer('xavier_normal', description='= glorot_normal')(
  _ji.xavier_normal
)
xavier_uniform = register_initializer('xavier_uniform', description='= glorot_uniform')(
  _ji.xavier_uniform
)
he_normal = register_initializer(
  'he_normal', description='He: Var = 2/fan_in, truncated normal (ReLU nets)'
)(_ji.he_normal)
he_uniform = register_initializer('he_uniform', description='He: Var = 2/fan_in, uniform')(
  _ji.he_uniform
)
kaiming_normal = register_initializer('kaiming_normal', description='= he_normal')(
  _ji.kaiming_normal
)
kaiming_uniform = register_initializer('kaiming_uniform', description='= he_uniform')(
  _ji.kaiming_uniform
)


def _layout_free(name: str, factory, public, description: str):
  """Registers a layout-free `factory(*options) -> init` (axis kwargs ignored); returns `public`."""

  def registered(*args, in_axis=None, out_axis=None, batch_axis=None, **kwargs):
    del in_axis, out_axis, batch_axis
    return factory(*args, **kwargs)

  registered.__module__, registered.__qualname__ = __name__, f'_layout_free.{name}'
  register_initializer(name, description=description)(registered)
  return public


zeros = _layout_free('zeros', lambda: _ji.zeros, _ji.zeros, 'all 0 (an initializer, as in JAX)')
ones = _layout_free('ones', lambda: _ji.ones, _ji.ones, 'all 1 (an initializer, as in JAX)')
constant = _layout_free('constant', _ji.constant, _ji.constant, 'constant(value): all `value`')
normal = _layout_free('normal', _ji.normal, _ji.normal, 'normal(stddev=0.01): N(0, stddev²)')
uniform = _layout_free('uniform', _ji.uniform, _ji.uniform, 'uniform(scale=0.01): U[0, scale)')
truncated_normal = _layout_free(
  'truncated_normal',
  _ji.truncated_normal,
  _ji.truncated_normal,
  'truncated_normal(stddev=0.01): N(0, stddev²) truncated at ±2 stddev',
)
