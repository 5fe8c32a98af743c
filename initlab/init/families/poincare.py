"""Inits of HNN++ Poincaré layers (kernel = z, the hyperplane orientations; bias = r stays 0).

  hnnpp              HNN++'s standard init (Shimizu et al., arXiv 2006.08210): z ~ N(0, 1/(2nm)),
                     n = fan_in (receptive field included), m = fan_out.
  poincare_identity  Poincaré ResNet's identity init (van Spengler, Berkhout & Mettes, arXiv
                     2303.14027, §4): z = ½·I. For an (n, n) kernel the layer is exactly x ↦ x
                     (`initlab.hyperbolic.fc` derives it; n ≠ m is documented there).

Options of `poincare_identity`:
  when = 'always' (default; Poincaré ResNet's code: ½·eye(n, m) whatever the shape) or
    'expanding' (HypLL's rule: ½·eye only if n ≤ m, otherwise the standard `hnnpp` draw).
  conv = what 'identity' means for a (*window, C_in, C_out) conv kernel, whose unfolded
    (K·C_in, C_out) matrix, K = prod(window), the conv's FC core applies:
    'reference_eye' (default): ½·eye(K·C_in, C_out) in the reference's channel-major unfold
      order (row c·K + p for channel c at window position p, row-major over the window, as torch
      `unfold` and `jax.lax.conv_general_dilated_patches`): output o copies input channel
      ⌊o/K⌋ at window position o mod K, a shifted selection, NOT a centre-tap identity;
    'centre_tap': ½·eye(C_in, C_out) on the centre tap, zeros elsewhere: with C_in = C_out
      output channel o reads input channel o of the same pixel.
Both write the kernel in the (*window, C_in, C_out) layout; the conv must unfold channel-major
for 'reference_eye' to mean what it says (`initlab.models.poincare.PoincareConv2d` does:
kernel[i, j, ch, o] = z[ch·K + i·kw + j, o]).
What the conv then computes (`initlab.hyperbolic.nn.poincare_conv2d`, r = 0): with v the
pixel's β-concatenated window in the tangent space at 0 and v_S its selected coordinates (one
row per output), log₀(y) = asinh(sinh(2√c‖v‖)‖v_S‖/‖v‖)/(2√c) · v_S/‖v_S‖: a selection,
rescaled by how much of the window it keeps. So centre_tap with C_in = C_out maps a pixel
whose neighbours are at the origin to itself times the β-ratio B(K·C/2, ½)/B(C/2, ½) in the
tangent space (≈ 1/√K), and a 1x1 conv (β-ratio 1) to itself exactly; with other non-zero
neighbours it keeps the pixel's direction but not its norm. (Tested in
tests/hyperbolic/test_poincare_layers.py.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initlab.hyperbolic.fc import identity_kernel, standard_std
from initlab.init.families.orthogonal import check_layer_axes
from initlab.init.registry import register_initializer
from initlab.init.specs import normalize_axes

Axes = int | Sequence[int]
WHEN = ('always', 'expanding')
CONV = ('reference_eye', 'centre_tap')


def _fans(shape, in_axis, out_axis):
  ndim = len(shape)
  ins, outs = normalize_axes(in_axis, ndim), normalize_axes(out_axis, ndim)
  receptive = tuple(a for a in range(ndim) if a not in ins + outs)
  size = lambda axes: math.prod(shape[a] for a in axes)
  return ins, outs, receptive, size(receptive) * size(ins), size(outs)


@register_initializer(
  'hnnpp', description='HNN++ standard init of Poincaré layers: N(0, 1/(2·fan_in·fan_out))'
)
def hnnpp(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()):
  """HNN++ (arXiv 2006.08210) standard init: z ~ N(0, 1/(2nm)), n = fan_in, m = fan_out."""
  check_layer_axes('hnnpp', batch_axis, 1)

  def init(key, shape, dtype=jnp.float32):
    _, _, _, n, m = _fans(shape, in_axis, out_axis)
    return standard_std(n, m) * jax.random.normal(key, shape, dtype)

  return init


@register_initializer(
  'poincare_identity', description='Poincaré ResNet identity init: z = ½·I (options when, conv)'
)
def poincare_identity(
  when: str = 'always',
  conv: str = 'reference_eye',
  in_axis: Axes = -2,
  out_axis: Axes = -1,
  batch_axis: Axes = (),
):
  """z = ½·I (arXiv 2303.14027 §4); options `when`, `conv`: module docstring."""
  check_layer_axes('poincare_identity', batch_axis, 1)
  if when not in WHEN:
    raise ValueError(f'poincare_identity: when={when!r}; valid choices: {WHEN}')
  if conv not in CONV:
    raise ValueError(f'poincare_identity: conv={conv!r}; valid choices: {CONV}')

  def init(key, shape, dtype=jnp.float32):
    ins, outs, receptive, n, m = _fans(shape, in_axis, out_axis)
    if when == 'expanding' and n > m:
      return hnnpp(in_axis, out_axis)(key, shape, dtype)
    c_in, window = n // math.prod(shape[a] for a in receptive), [shape[a] for a in receptive]
    if conv == 'centre_tap' or not receptive:
      full = np.zeros(tuple(window) + (c_in, m))
      full[tuple(k // 2 for k in window)] = identity_kernel(c_in, m)
    else:  # channel-major rows c·K + p -> the (*window, C_in) layout, row p·C_in + c
      k = n // c_in
      rows = identity_kernel(n, m).reshape(c_in, k, m)
      full = np.transpose(rows, (1, 0, 2)).reshape(tuple(window) + (c_in, m))
    full = full.reshape(tuple(shape[a] for a in receptive + ins + outs))
    return jnp.asarray(np.transpose(full, np.argsort(receptive + ins + outs)), dtype)

  return init
