"""Param specs: what a tensor is (role) and which axes are fan-in, fan-out and batch.

Fans follow `jax.nn.initializers.variance_scaling` (and PyTorch's
`_calculate_fan_in_and_fan_out`): every axis that is neither an in-, out- nor batch axis is
a receptive-field axis and multiplies both fans. So a Flax conv kernel (kh, kw, in, out)
has fan_in = kh·kw·in and fan_out = kh·kw·out (a grouped conv's kernel holds in/groups
input channels, so its fan_in is kh·kw·in/groups, as in PyTorch), and a stacked (scanned)
dense kernel (layers, in, out) has the fans of one (in, out) layer.

Embeddings (vocab, features) follow Flax's `nn.Embed` default, `variance_scaling(1,
'fan_in', 'normal', out_axis=0)`, whose fan_in is the feature size D: the in axis is the
feature axis and the out axis the vocabulary, so fan_in = D and fan_out = V, as PyTorch's
fan rule gives for `nn.Embedding.weight` (V, D). He/LeCun on an embedding therefore has
Var = gain²/D, and a ViT class token or position table (n, D) has fan_in = D too. The
vocabulary fan (fan_in = V, the `weight.shape[0]` of some reference code) is available
only on request: `infer_spec(..., embedding_fan_in="vocab")` or
`Rules(..., embedding_fan_in="vocab")`.

A spec comes from, in order: an explicit override, the variable's logical axis names
('layers' marks a stacked axis, 'heads'/'kv' an attention head group), or the path and
shape of the standard Flax layers (Dense, Conv, DenseGeneral/attention, Embed, norms).
It is never guessed from `shape[0]`; an unknown layout raises `LayoutError`. In particular
an unnamed 3-D kernel outside attention is refused unless its module is named like a conv
('conv…': a 1-D conv (width, in, out)): it may as well be a stack of (in, out) layers from
Linen's `nn.scan`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

ROLES = ('kernel', 'bias', 'embedding', 'norm_scale', 'norm_offset')
EMBEDDING_FAN_IN = ('features', 'vocab')

STACKED_AXIS_NAMES = ('layers', 'layer', 'stack', 'stage')
HEAD_AXIS_NAMES = ('heads', 'kv', 'head_dim', 'q_heads', 'kv_heads')
ATTENTION_PARENTS = ('query', 'key', 'value', 'q', 'k', 'v', 'qkv', 'q_proj', 'k_proj', 'v_proj')
ATTENTION_OUT_PARENTS = ('out', 'o', 'o_proj', 'out_proj', 'attn_out')
_NORM_PARENT = re.compile(r'(norm|^bn|^ln|batchnorm|layernorm|rmsnorm)', re.IGNORECASE)


class LayoutError(ValueError):
  """A param whose layout (role or fan axes) cannot be determined."""


def normalize_axes(axes: int | Sequence[int], ndim: int) -> tuple[int, ...]:
  """`axes` (an int or a sequence, negative allowed) as non-negative axes of an `ndim`-D array."""
  axes = (axes,) if isinstance(axes, int) else tuple(axes)
  for a in axes:
    if not -ndim <= a < ndim:
      raise ValueError(f'axis {a} is out of range for a {ndim}-D tensor')
  return tuple(a % ndim for a in axes)


@dataclasses.dataclass(frozen=True)
class ParamSpec:
  """Role and axis layout of one param tensor.

  Attributes:
    role: one of ROLES.
    in_axes: axes that are summed over by the layer's input (fan-in axes).
    out_axes: axes indexing the layer's outputs (fan-out axes).
    batch_axes: independent copies, e.g. the leading axis of scanned layers.
  Axes are non-negative. Axes in none of the three are receptive-field axes.
  """

  role: str
  in_axes: tuple[int, ...] = ()
  out_axes: tuple[int, ...] = ()
  batch_axes: tuple[int, ...] = ()

  def __post_init__(self):
    if self.role not in ROLES:
      raise ValueError(f'ParamSpec.role={self.role!r}; valid roles: {ROLES}')

  def receptive_axes(self, ndim: int) -> tuple[int, ...]:
    used = set(self.in_axes) | set(self.out_axes) | set(self.batch_axes)
    return tuple(a for a in range(ndim) if a not in used)

  def fans(self, shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a tensor of `shape` with this layout."""
    receptive = math.prod(shape[a] for a in self.receptive_axes(len(shape)))
    fan_in = math.prod(shape[a] for a in self.in_axes) * receptive
    fan_out = math.prod(shape[a] for a in self.out_axes) * receptive
    return fan_in, fan_out

  def jax_axes(self) -> dict:
    """kwargs for `jax.nn.initializers.variance_scaling`-style factories."""
    return dict(in_axis=self.in_axes, out_axis=self.out_axes, batch_axis=self.batch_axes)

  def with_vocab_fan_in(self) -> 'ParamSpec':
    """For an embedding: the spec with fan_in = vocab size, fan_out = features (in/out swapped).

    Flax and PyTorch use fan_in = features (the default spec); this is for reproducing
    reference code that reads an embedding's `shape[0]` as its fan.
    """
    if self.role != 'embedding':
      raise ValueError(f'with_vocab_fan_in() is for embeddings, not role {self.role!r}')
    return dataclasses.replace(self, in_axes=self.out_axes, out_axes=self.in_axes)


def dense_spec(ndim: int = 2, batch_axes: tuple[int, ...] = ()) -> ParamSpec:
  """The Flax convention (…, in, out): in = -2, out = -1, all other non-batch axes receptive."""
  return ParamSpec('kernel', (ndim - 2,), (ndim - 1,), tuple(batch_axes))


def _segments(path: str) -> list[str]:
  return [s for s in path.split('/') if s]


def _is_int(s: str) -> bool:
  return s.lstrip('-').isdigit()


def infer_role(path: str) -> str:
  """Role from the leaf name and its parent module's name."""
  segs = _segments(path)
  if not segs:
    raise LayoutError('empty param path')
  name = segs[-1].lower()
  parents = [s for s in segs[:-1] if not _is_int(s)]
  parent = parents[-1] if parents else ''
  in_norm = bool(_NORM_PARENT.search(parent))
  if name in ('scale', 'gamma') or (in_norm and name == 'weight'):
    return 'norm_scale'
  if name in ('bias', 'offset', 'beta', 'b'):
    return 'norm_offset' if in_norm else 'bias'
  if name in ('embedding', 'embeddings', 'wte', 'wpe', 'pos_embedding', 'position_embedding'):
    return 'embedding'
  if name in ('kernel', 'weight', 'w', 'lora_a', 'lora_b'):
    return 'kernel'
  raise LayoutError(
    f'cannot infer the role of param {path!r} from its name {segs[-1]!r}; known names: '
    'kernel/weight/w (kernel), bias/b (bias), scale/gamma (norm scale), embedding (embedding). '
    "Pass an explicit spec, e.g. Rules(..., specs={r'<regex>': ParamSpec(...)})."
  )


def _spec_from_names(path, shape, names, role) -> ParamSpec | None:
  names = tuple(n for n in names)
  if len(names) != len(shape):
    raise LayoutError(
      f'param {path!r}: {len(names)} logical axis names {names} for shape {tuple(shape)}'
    )
  batch = tuple(i for i, n in enumerate(names) if n in STACKED_AXIS_NAMES)
  rest = [i for i in range(len(shape)) if i not in batch]
  if role != 'kernel' or not rest:
    return _shape_rule(path, shape, role, batch)
  heads = [i for i in rest if names[i] in HEAD_AXIS_NAMES]
  if heads and len(heads) < len(rest):
    others = [i for i in rest if i not in heads]
    if heads[0] < others[0]:  # (heads, head_dim, embed): attention output projection
      return ParamSpec('kernel', tuple(heads), tuple(others), batch)
    return ParamSpec('kernel', tuple(others), tuple(heads), batch)  # (embed, heads, head_dim)
  return _shape_rule(path, shape, role, batch, named=True)


def _shape_rule(path, shape, role, batch=(), named=False) -> ParamSpec:
  ndim = len(shape)
  rest = [i for i in range(ndim) if i not in batch]
  if role in ('bias', 'norm_scale', 'norm_offset'):
    return ParamSpec(role, (), tuple(rest), tuple(batch))
  if role == 'embedding':
    if len(rest) != 2:
      raise LayoutError(f'embedding {path!r} has shape {tuple(shape)}; expected (vocab, features)')
    return ParamSpec('embedding', (rest[1],), (rest[0],), tuple(batch))  # fan_in = features
  if len(rest) < 2:
    raise LayoutError(
      f'kernel {path!r} has shape {tuple(shape)}: a kernel needs at least (in, out) axes '
      f'(batch axes {tuple(batch)}). Pass an explicit ParamSpec for it.'
    )
  parents = [s.lower() for s in _segments(path)[:-1] if not _is_int(s)]
  parent = parents[-1] if parents else ''
  if len(rest) == 3 and parent in ATTENTION_PARENTS:  # DenseGeneral (in, heads, head_dim)
    return ParamSpec('kernel', (rest[0],), (rest[1], rest[2]), tuple(batch))
  if len(rest) == 3 and parent in ATTENTION_OUT_PARENTS:  # DenseGeneral (heads, head_dim, out)
    return ParamSpec('kernel', (rest[0], rest[1]), (rest[2],), tuple(batch))
  if len(rest) == 3 and 'conv' not in parent:
    what = "logical axis names without a 'layers' axis" if named else 'no logical axis names'
    raise LayoutError(
      f'kernel {path!r} has shape {tuple(shape)} and {what}: it could be a 1-D conv (width, '
      "in, out) or stacked layers (layers, in, out) as from Linen's nn.scan, so its fans are "
      "unknown. Name its axes (e.g. ('layers', 'embed', 'mlp')), or pass an explicit spec: "
      f"Rules(..., specs={{{path!r}: ParamSpec('kernel', in_axes=(1,), out_axes=(2,), "
      'batch_axes=(0,))}).'
    )
  # Dense (in, out) or Conv (*spatial, in, out).
  return ParamSpec('kernel', (rest[-2],), (rest[-1],), tuple(batch))


def _stacked_axes_from_path(path: str) -> tuple[int, ...]:
  """A container named like a stack and not followed by an integer index holds stacked params."""
  segs = _segments(path)[:-1]
  for i, s in enumerate(segs):
    if s.lower() in ('scan', 'scanned', 'stacked') and not (
      i + 1 < len(segs) and _is_int(segs[i + 1])
    ):
      return (0,)
  return ()


def infer_spec(
  path: str,
  shape: Sequence[int],
  names: Sequence[str | None] | None = None,
  embedding_fan_in: str = 'features',
) -> ParamSpec:
  """The ParamSpec of the leaf at `path` with `shape` and optional logical axis `names`.

  `embedding_fan_in`: "features" (Flax/PyTorch: fan_in = D) or "vocab" (fan_in = V).
  """
  if embedding_fan_in not in EMBEDDING_FAN_IN:
    raise ValueError(f'embedding_fan_in={embedding_fan_in!r}; valid choices: {EMBEDDING_FAN_IN}')
  shape = tuple(int(d) for d in shape)
  role = infer_role(path)
  if names is not None:
    spec = _spec_from_names(path, shape, names, role)
  else:
    spec = _shape_rule(path, shape, role, _stacked_axes_from_path(path))
  for a in spec.in_axes + spec.out_axes + spec.batch_axes:
    if not 0 <= a < len(shape):
      raise LayoutError(f'param {path!r}: axis {a} out of range for shape {shape}')
  if spec.role == 'embedding' and embedding_fan_in == 'vocab':
    spec = spec.with_vocab_fan_in()
  return spec
