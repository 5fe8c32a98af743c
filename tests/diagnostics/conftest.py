"""Tiny NNX models with `stages(train)` for the diagnostics API tests (zoo-independent).

Their params come from numpy (`np_init`): JAX's random initializers cost an XLA compile per
shape, which dominates a CPU test's time.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import initlab.init as ii


def np_init(key, shape, dtype=jnp.float32):
  """N(0, 1/fan_in) from numpy, seeded by the JAX key (LeCun-normal scale, untruncated)."""
  seed = np.asarray(jax.random.key_data(key)).tolist()
  fan_in = shape[0] if len(shape) == 2 else 1
  return jnp.asarray(np.random.default_rng(seed).normal(0, fan_in**-0.5, shape), dtype)


def np_scheme(gain=1.0):
  """A kernel-only `Rules` scheme drawing `gain` · np_init: a compile-free stand-in scheme."""
  return ii.Rules([('.*', lambda k, s, d=jnp.float32: gain * np_init(k, s, d))], roles=('kernel',))


class ToyMLP(nnx.Module):
  """(B, din) -> (B, dout). Stages 'layer_i' = act(Dense) and 'out' = Dense, no biases."""

  def __init__(self, din=8, width=8, dout=4, depth=2, act=jax.nn.relu, *, rngs):
    dims = [din] + [width] * depth
    self.layers = nnx.List(
      [
        nnx.Linear(a, b, use_bias=False, kernel_init=np_init, rngs=rngs)
        for a, b in zip(dims[:-1], dims[1:])
      ]
    )
    self.out = nnx.Linear(dims[-1], dout, use_bias=False, kernel_init=np_init, rngs=rngs)
    self.act = act

  def stages(self, train=False):
    del train
    return [(f'layer_{i}', lambda h, l=l: self.act(l(h))) for i, l in enumerate(self.layers)] + [
      ('out', self.out)
    ]

  def __call__(self, x, train=False):
    for _, fn in self.stages(train):
      x = fn(x)
    return x


class ToyBN(nnx.Module):
  """Dense -> BatchNorm (batch stats when train) -> relu, then Dense."""

  def __init__(self, din=8, width=16, *, rngs):
    self.dense = nnx.Linear(din, width, use_bias=False, kernel_init=np_init, rngs=rngs)
    self.norm = nnx.BatchNorm(width, rngs=rngs)
    self.out = nnx.Linear(width, 3, use_bias=False, kernel_init=np_init, rngs=rngs)

  def stages(self, train=False):
    return [
      ('dense', self.dense),
      ('norm', lambda h: jax.nn.relu(self.norm(h, use_running_average=not train))),
      ('out', self.out),
    ]


class ToyTokens(nnx.Module):
  """int (B, T) -> Embed (B, T, 8) -> Dense (B, T, 5)."""

  def __init__(self, vocab=11, *, rngs):
    self.embed = nnx.Embed(vocab, 8, embedding_init=np_init, rngs=rngs)
    self.out = nnx.Linear(8, 5, kernel_init=np_init, rngs=rngs)

  def stages(self, train=False):
    del train
    return [('embed', self.embed), ('out', self.out)]


class Scale(nnx.Module):
  """Two stages: Dense, then × `factor` (so ∂L/∂h_1 = factor · ∂L/∂h_2)."""

  def __init__(self, factor, *, rngs):
    self.dense = nnx.Linear(6, 6, kernel_init=np_init, rngs=rngs)
    self.factor = factor

  def stages(self, train=False):
    del train
    return [('dense', self.dense), ('scale', lambda h: h * self.factor)]


@pytest.fixture(scope='session')
def toys():
  return types.SimpleNamespace(
    MLP=ToyMLP, BN=ToyBN, Tokens=ToyTokens, Scale=Scale, scheme=np_scheme
  )


@pytest.fixture(scope='session')
def gaussian():
  def make(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)

  return make
