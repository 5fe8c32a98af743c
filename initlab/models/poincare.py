"""Poincaré-ball layers (HNN++, Shimizu et al., arXiv 2006.08210; Poincaré ResNet, van Spengler,
Berkhout & Mettes, arXiv 2303.14027). The geometry lives in `initlab.hyperbolic`.

    layer = PoincareLinear(64, 64, c=1.0, rngs=nnx.Rngs(0))
    y = layer(x)               # x (..., 64) in the ball {c‖x‖² < 1} -> y (..., 64) in the ball

Params use the names the init machinery reads: `kernel` = z (in, out), tagged `names`
(default ('embed', 'mlp')), and `bias` = r (out,), tagged names[1:]. The module's own init is
HNN++'s standard one (z ~ N(0, 1/(2·in·out)), r = 0); the registered initializers
`poincare_identity` (z = ½·I) and `hnnpp` (the standard one) replace it from a config.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from initlab.hyperbolic.fc import poincare_fc, standard_std
from initlab.models import layers


def hnnpp_kernel_init(key, shape, dtype=jnp.float32):
  """HNN++'s standard kernel init for an (in, out) kernel: N(0, 1/(2·in·out))."""
  return standard_std(shape[-2], shape[-1]) * jax.random.normal(key, shape, dtype)


class PoincareLinear(nnx.Module):
  """HNN++ Poincaré fully-connected layer, (..., in) -> (..., out), points of 𝔹_c.

  c: the curvature magnitude (> 0), a fixed Python float.
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    *,
    c: float = 1.0,
    names: tuple[str | None, str | None] = ('embed', 'mlp'),
    kernel_init=None,
    dtype=None,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if in_features < 1 or out_features < 1:
      raise ValueError(
        f'PoincareLinear: in_features={in_features} and out_features={out_features} must be >= 1'
      )
    if not c > 0:
      raise ValueError(f'PoincareLinear: c={c} must be > 0 (the ball has curvature -c)')
    kinit = layers.partitioned(kernel_init or hnnpp_kernel_init, *names)
    binit = layers.partitioned(layers.zeros_init, names[1])
    self.kernel = nnx.Param(kinit(rngs.params(), (in_features, out_features), param_dtype))
    self.bias = nnx.Param(binit(rngs.params(), (out_features,), param_dtype))
    self.c, self.dtype = c, dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype or jnp.result_type(x, self.kernel[...])
    z, r = self.kernel[...].astype(dtype), self.bias[...].astype(dtype)
    return poincare_fc(jnp.asarray(x, dtype), z, r, self.c)
