"""Init families, one module each: its initializers and its schemes, registered by name.

  variance    the jax.nn.initializers family (lecun/glorot/he/…, zeros, ones, normal, …)
  orthogonal  orthogonal, delta_orthogonal (group-aware)
  zero        ZerO: zero_hadamard, scheme zero_full
  fixup       fixup_scaled, scheme fixup
(GG priors live in `initlab.init.gg`.) A new family is a new module here, imported below.
"""
from initlab.init.families import fixup, orthogonal, variance, zero  # noqa: F401
