"""initlab.init.lora: the plain math of low-rank adapter (LoRA) initializations, in JAX.

    from initlab.init import lora
    residual, lora_a, lora_b = lora.decompose(kernel, 8, 'pissa', alpha=16)
    # kernel (..., n_in, m_out) ≈ residual + (alpha / r) · lora_a @ lora_b

Flax layout: kernel K (..., n_in, m_out) = Wᵀ; lora_a (..., n_in, r), lora_b (..., r, m_out);
PEFT's A = lora_aᵀ, B = lora_bᵀ. Modules: `svd` (exact and randomized SVD), `quant` (NF4 / int
blockwise quantization for LoftQ), `weight` (the weight-only schemes `decompose` dispatches
over), `data` (CorDA, LoRA-GA, LoRA-SB, EVA: schemes that need activations or gradients).
"""

from __future__ import annotations

from typing import Any

import jax

from initlab.init.lora import _util
from initlab.init.lora.data import (
  IncrementalPCA,
  corda,
  corda_covariance,
  corda_svd,
  eva_init,
  eva_ranks,
  ipca_init,
  ipca_update,
  lora_ga,
  lora_sb,
  pca_components,
)
from initlab.init.lora.quant import NF4_LEVELS, dequantize, fake_quantize, nf4_levels, quantize
from initlab.init.lora.svd import svd_lowrank, top_svd
from initlab.init.lora.weight import (
  LDU,
  default,
  gaussian,
  loftq,
  loldu,
  loldu_factors,
  milora,
  olora,
  orthogonal,
  pissa,
)

lora_scale = _util.lora_scale

_SCHEMES = {
  'default': default,
  'gaussian': gaussian,
  'orthogonal': orthogonal,
  'pissa': pissa,
  'milora': milora,
  'olora': olora,
  'loldu': loldu,
  'loftq': loftq,
}
METHODS = tuple(_SCHEMES)
# The options each method takes beyond (alpha, rslora, key, dtype).
OPTIONS = {
  'default': (),
  'gaussian': (),
  'orthogonal': (),
  'pissa': ('niter',),
  'milora': (),
  'olora': (),
  'loldu': (),
  'loftq': ('num_bits', 'method', 'num_iter', 'block_size', 'compat_peft_loftq_scaling'),
}


def decompose(
  kernel: Any,
  rank: int,
  method: str,
  /,
  *,
  alpha: float | None = None,
  rslora: bool = False,
  key: jax.Array | None = None,
  dtype: Any = None,
  **options: Any,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(residual (..., n_in, m_out), lora_a (..., n_in, r), lora_b (..., r, m_out)) of `method`.

  kernel, rank and method are positional-only, so LoftQ's quantizer option is `method=`:
  decompose(K, 8, 'loftq', method='int', num_bits=4). Bad input raises a one-line ValueError
  naming the option and the valid choices.
  """
  _util.check_choice('method', method, METHODS)
  unknown = sorted(set(options) - set(OPTIONS[method]))
  if unknown:
    valid = ', '.join(OPTIONS[method]) or 'none'
    raise ValueError(
      f'option {unknown[0]!r} is not valid for method {method!r}; valid options: {valid}'
    )
  return _SCHEMES[method](kernel, rank, alpha=alpha, rslora=rslora, key=key, dtype=dtype, **options)


__all__ = [
  'LDU',
  'METHODS',
  'NF4_LEVELS',
  'OPTIONS',
  'IncrementalPCA',
  'corda',
  'corda_covariance',
  'corda_svd',
  'decompose',
  'default',
  'dequantize',
  'eva_init',
  'eva_ranks',
  'fake_quantize',
  'gaussian',
  'ipca_init',
  'ipca_update',
  'loftq',
  'loldu',
  'loldu_factors',
  'lora_ga',
  'lora_sb',
  'lora_scale',
  'milora',
  'nf4_levels',
  'olora',
  'orthogonal',
  'pca_components',
  'pissa',
  'quantize',
  'svd_lowrank',
  'top_svd',
]
