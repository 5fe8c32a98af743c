"""Tiny configs of every zoo model and jitted helpers, shared by the tests in this folder.

Eager model construction compiles one small XLA program per initializer and shape, which
is slow on the shared test CPUs; so most tests use `materialize(abstract model)` (values
drawn with numpy on the host), and only a few build models for real.
"""

from flax import nnx
import initlab.init as ii
import initlab.models as im
import jax
import jax.numpy as jnp
import numpy as np

TINY = {
  'mlp': dict(input_shape=(8, 8, 1), depth=2, width=16),
  'resnet': dict(depth=8, width=0.5, input_shape=(8, 8, 3)),  # widths 8/16/32, 1 block/stage
  'vit': dict(input_shape=(8, 8, 3), patch_size=4, dim=16, depth=2, num_heads=2),
  'transformer_lm': dict(vocab_size=32, dim=16, depth=3, num_heads=2, max_len=8),
  'vgg': dict(widths=(8, 16, 16), pool_after=(0, 1, 2), input_shape=(8, 8, 3)),  # 8 -> 4 -> 2 -> 1
}
NAMES = tuple(TINY)


def tiny_config(name, **overrides):
  config = im.default_config(name)
  config.update(TINY[name])
  config.update(overrides)
  return config


def tiny_input(name, seed=0, batch=4):
  config, key = tiny_config(name), jax.random.key(seed)
  if name == 'transformer_lm':
    return jax.random.randint(key, (batch, config.max_len), 0, config.vocab_size)
  return jax.random.normal(key, (batch, *config.input_shape), jnp.float32)


@nnx.jit(static_argnames='train')
def forward(model, x, train=False):
  return model(x, train=train)


@nnx.jit(static_argnames='train')
def forward_by_stages(model, x, train=False):
  for _, stage in model.stages(train):
    x = stage(x)
  return x


def abstract(config):
  """The model of `config` with ShapeDtypeStruct leaves (nothing computed)."""
  return nnx.eval_shape(lambda: im.build(config, rngs=nnx.Rngs(0)))


def materialize(model, seed=0):
  """Fills an abstract `model` in place, on the host: kernels ~ N(0, 1/fan_in), biases and
  norm params near their defaults, BatchNorm statistics 0 (mean) and 1 (var)."""
  rng = np.random.default_rng(seed)

  def fill(leaf):
    shape, dtype = leaf.shape, leaf.value.dtype
    if leaf.path.endswith('/mean'):
      return jnp.zeros(shape, dtype)
    if leaf.path.endswith('/var'):
      return jnp.ones(shape, dtype)
    spec = ii.infer_spec(leaf.path, shape, leaf.names)
    noise = rng.standard_normal(shape)
    if spec.role in ('kernel', 'embedding'):
      noise /= np.sqrt(spec.fans(shape)[0])
    else:
      noise = 0.1 * noise + (spec.role == 'norm_scale')
    return jnp.asarray(noise, dtype)

  nnx.update(model, ii.map_leaves(fill, nnx.state(model)))
  return model
