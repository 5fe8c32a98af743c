"""Generalized-Gaussian priors: GG init, DeepShape and RF8 (Wu et al., "It Takes a Good Model to
Train a Good Model: Generalized Gaussian Priors for Optimized LLMs", arXiv 2506.00486 v1–v3),
BackSlash (Wu et al., "BackSlash: Rate Constrained Optimized Training of Large Language Models",
arXiv 2504.16968) and the moment-matching shape estimate both use. Modules: sampling,
initializer (GG init), estimate (fits), rate (BackSlash), shaping (DeepShape), rf8, report.

    import initlab.init as ii                                  # registers "gg", "gg_model"
    params = ii.get_scheme("gg", beta=1.5)(key, params)        # GG kernels, Var = 2/fan_in
    fits = ii.gg.fit_tree(params)                              # {path: GGFit(beta, alpha, mu)}
    tx = optax.chain(ii.gg.backslash(rdo=2e3), optax.adam(1e-3))
    small = ii.gg.deepshape(trained)                           # narrower GG on the 2^-13 grid
    w8 = ii.gg.rf8_fake_quant_tree(trained)                    # RF8 round trip
"""

# pylint: disable=g-importing-member
from initlab.init.gg.estimate import (
  BETA_GRID,
  BETA_MAX,
  BETA_MIN,
  POOLED,
  GGFit,
  alpha_from_std,
  beta_from_ratio,
  fit,
  fit_tree,
  gg_logpdf,
  moment_ratio,
)
from initlab.init.gg.initializer import (
  MODES,
  fan_size,
  generalized_gaussian,
  gg_alpha,
  gg_model,
  truncation_variance_factor,
)
from initlab.init.gg.rate import (
  BackslashState,
  backslash,
  backslash_step,
  estimate_beta,
  rate,
  rate_grad,
)
from initlab.init.gg.report import plot_fits
from initlab.init.gg.rf8 import (
  fp8_e4m3_fake_quant,
  rf8_decode,
  rf8_encode,
  rf8_fake_quant,
  rf8_fake_quant_tree,
  rf8_nbytes,
  size_table,
)
from initlab.init.gg.sampling import standard_gg
from initlab.init.gg.shaping import (
  DeepShapeInfo,
  deepshape,
  deepshape_tensor,
  grid_entropy,
  grid_half_range,
)
