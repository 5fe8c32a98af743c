"""Poincaré-ball geometry for hyperbolic networks (HNN++, arXiv 2006.08210; Poincaré ResNet,
arXiv 2303.14027), in plain JAX. Below `initlab.models`: imports nothing from models or train.

  core   mobius_add, project, expmap0, logmap0 with hand-written VJPs (`use_custom_vjp`), the
         dtype-aware ε, the learnable-curvature helpers
  ball   lambda_x, mobius_scalar, expmap/logmap at any point, dist, gyration, transport,
         midpoint, frechet_variance, frechet_mean (Karcher flow)
  fc     poincare_fc: the HNN++ fully-connected layer (z, r), its core with a hand-written VJP;
         the identity and standard inits' kernels
  nn     layer math: beta_concat, conv_patches/poincare_conv2d, batch_stats/batch_norm/
         running_stats (midpoint BN), tangent_relu, midpoint_pool, mlr_logits

Points are (..., d) arrays (batched over leading axes), c > 0 a scalar: the ball is
{c‖x‖² < 1}, with curvature −c.
"""

from initlab.hyperbolic.ball import (  # noqa: F401
  dist,
  expmap,
  frechet_mean,
  frechet_variance,
  gyration,
  lambda_x,
  logmap,
  midpoint,
  mobius_scalar,
  transport,
)
from initlab.hyperbolic.core import (  # noqa: F401
  custom_vjp_enabled,
  expmap0,
  logmap0,
  mobius_add,
  proj_eps,
  project,
  softplus_curvature,
  softplus_inverse,
  use_custom_vjp,
)
from initlab.hyperbolic.fc import poincare_fc  # noqa: F401
from initlab.hyperbolic import nn  # noqa: F401
