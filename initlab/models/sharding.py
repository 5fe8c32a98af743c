"""Logical-axis rules: how the zoo's logical axis names map onto mesh axes.

    mesh = jax.make_mesh((4, 2), ('data', 'model'))
    with jax.set_mesh(mesh), nnx.logical_axis_rules(logical_axis_rules('fsdp')):
      model = initlab.models.build(config.model, rngs=nnx.Rngs(0))   # params born sharded

Presets assume mesh axes named 'data' (batch / FSDP) and 'model' (tensor parallel).
Every logical name in LOGICAL_AXES has a rule (Flax passes an unmapped name through
as a mesh axis name), and a sharded axis must be divisible by the mesh axis size.
"""
from __future__ import annotations

# Param axes: 'layers' = stacked (scanned) layers, 'embed' = model width, 'mlp' = MLP hidden,
# 'heads'/'kv' = attention heads/head dim, 'vocab', 'classes', 'conv_in'/'conv_out' = conv
# channels. Activation axis: 'batch'.
LOGICAL_AXES = ('batch', 'layers', 'embed', 'mlp', 'heads', 'kv', 'vocab', 'classes', 'conv_in',
                'conv_out')

_SHARDED = {
    # Params replicated, batch split over 'data'.
    'data_parallel': {'batch': 'data'},
    # FSDP: each param's model-width axis ('embed'; 'conv_out' for convs) split over 'data'.
    'fsdp': {'batch': 'data', 'embed': 'data', 'conv_out': 'data'},
    # Megatron-style tensor parallelism over 'model', batch over 'data'.
    'tensor_parallel': {'batch': 'data', 'mlp': 'model', 'heads': 'model', 'vocab': 'model'},
}
PRESETS = tuple(_SHARDED)


def logical_axis_rules(preset: str) -> tuple[tuple[str, str | None], ...]:
  """((logical_name, mesh_axis or None), ...) for `preset` in PRESETS.

  Usable with `flax.nnx.logical_axis_rules(...)` and `flax.linen.logical_to_mesh_sharding`.
  """
  if preset not in _SHARDED:
    raise ValueError(f'sharding preset {preset!r} is unknown; valid: {PRESETS}')
  return tuple((name, _SHARDED[preset].get(name)) for name in LOGICAL_AXES)
