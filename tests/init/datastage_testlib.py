"""Builds what the run's data stage gives a scheme, without the training loop: params (a
plain dict, sharded on a mesh), an InitContext with a DataContext and digits / token batches."""

from __future__ import annotations

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

import initlab.init as ii
import initlab.models as im
from initlab import sharding as sharding_lib
from initlab.train import state as state_lib

SMALL = {
  'mlp': dict(input_shape=(8, 8, 1), depth=3, width=32, num_classes=10),
  'resnet': dict(depth=8, width=0.5, input_shape=(8, 8, 1), num_classes=10),
  'resnet20': dict(depth=20, width=0.5, input_shape=(8, 8, 1), num_classes=10),
  'vit': dict(input_shape=(8, 8, 1), patch_size=2, dim=16, depth=2, num_heads=2, num_classes=10),
  'transformer_lm': dict(vocab_size=32, dim=16, depth=2, num_heads=2, max_len=16),
}


@functools.lru_cache(maxsize=None)
def _digits():
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  d = load_digits()
  order = np.random.default_rng(0).permutation(len(d.target))
  images = (d.images[order] / 16.0).astype(np.float32)[..., None]
  return images, d.target[order].astype(np.int32)


def batch(model: str, size: int, index: int = 0, seq: int = 16):
  """Batch `index` of `size` examples: digits (classification) or random tokens (lm)."""
  if model == 'transformer_lm':
    rng = np.random.default_rng(100 + index)
    tokens = rng.integers(0, SMALL[model]['vocab_size'], (size, seq + 1)).astype(np.int32)
    return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:]}
  images, labels = _digits()
  lo = index * size
  assert lo + size <= len(labels), 'not enough digits'
  return {'image': images[lo : lo + size], 'label': labels[lo : lo + size]}


def config(model: str, **overrides):
  name = 'resnet' if model.startswith('resnet') else model
  cfg = im.default_config(name)
  cfg.update(SMALL[model])
  cfg.update(overrides)
  return cfg


def setup(
  model: str,
  *,
  num_batches: int = 1,
  batch_size: int = 64,
  mesh=None,
  scheme=None,
  seed: int = 0,
  **overrides,
):
  """(params, InitContext with .data) as a run's data stage would give them.

  mesh: None for plain single-device arrays, else params created sharded (FSDP rules) and
  batches split over the mesh's batch axis.
  """
  cfg = config(model, **overrides)
  task = 'lm' if model == 'transformer_lm' else 'classification'
  model_fn = lambda rngs: im.build(cfg, rngs=rngs)
  if mesh is None:
    module = model_fn(nnx.Rngs(seed))
    if scheme is not None:
      nnx.update(
        module,
        scheme(
          jax.random.key(seed),
          nnx.state(module, nnx.Param),
          ii.InitContext(hints=module.init_hints()),
        ),
      )
    put = lambda x: jnp.asarray(x)
  else:
    module = ii.create_sharded(
      model_fn,
      mesh=mesh,
      axis_rules=sharding_lib.logical_axis_rules('fsdp'),
      key=jax.random.key(seed),
      scheme=scheme,
    )
    put = lambda x: jax.device_put(x, sharding_lib.batch_sharding(mesh))
  params, model_state = state_lib.pure_variables(module)
  graphdef = nnx.graphdef(module)
  batches = tuple(jax.tree.map(put, batch(model, batch_size, i)) for i in range(num_batches))
  data = ii.DataContext(graphdef=graphdef, model_state=model_state, batches=batches, task=task)
  return params, ii.InitContext(hints=module.init_hints(), data=data)


def mesh(n: int):
  return ii.make_mesh((('data', -1), ('model', 1)), devices=jax.devices()[:n])


def kernel_norms(params) -> dict[str, np.ndarray]:
  """Frobenius norm of every kernel (per slice along axis 0 for 3-D+ LM stacks: not used)."""
  return {
    l.path: float(np.linalg.norm(np.asarray(l.value, np.float64)))
    for l in ii.leaves(params)
    if l.path.endswith('kernel')
  }
