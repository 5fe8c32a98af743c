"""Init families, one module each: its initializers and its schemes, registered by name.

  variance    the jax.nn.initializers family (lecun/glorot/he/…, zeros, ones, normal, …)
  orthogonal  orthogonal, delta_orthogonal (group-aware)
  zero        ZerO: zero_hadamard, scheme zero_full
  fixup       fixup_scaled, scheme fixup
  lsuv, metainit, gradinit   data-stage schemes (need ctx.data; shared parts in datastage)
  parametrization  standard / ntk / μP: init factors and learning-rate multipliers by width
  virgo       Virgo (graph-aware GNN variances), kaiming_fan_out
  poincare    HNN++ Poincaré layers: hnnpp, poincare_identity
  learngene   schemes tleg_expand, sws_expand (the math: `initlab.init.learngene`)
  lora        LoRA-init schemes (pissa, milora, olora, loftq, loldu, lora_ga, lora_sb, corda,
              lora_default, ...; the math: `initlab.init.lora`, the adapters:
              `initlab.init.adapters`)
  precrop     schemes pai_mask (SNIP/GraSP/SynFlow masks), precrop (the math: `initlab.init.
              pruning`, `initlab.init.precrop`)
(GG priors live in `initlab.init.gg`.) A new family is a new module here, imported below.
"""

from initlab.init.families import fixup, orthogonal, variance, zero  # noqa: F401
from initlab.init.families import parametrization  # noqa: F401  (standard, ntk, mup)
from initlab.init.families import gradinit, lsuv, metainit  # noqa: F401  (data stage)
from initlab.init.families import virgo  # noqa: F401  (GNNs; needs graph statistics)
from initlab.init.families import poincare  # noqa: F401  (HNN++ Poincaré layers)
from initlab.init.families import learngene  # noqa: F401  (tleg_expand, sws_expand)
from initlab.init.families import precrop  # noqa: F401  (pai_mask, precrop)
from initlab.init.families import lora  # noqa: F401  (pissa, olora, lora_ga, corda, ...)
