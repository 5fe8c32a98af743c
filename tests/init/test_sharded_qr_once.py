"""Sharded init of stacked orthogonal params (issue [gg-scale] item 3): each layer's QR runs on
one device, not on all of them, and the values are those of a 1-device init."""

import jax
import numpy as np
from flax import nnx

import initlab.init as ii

RULES = [('embed', 'data'), ('mlp', 'model'), ('layers', None)]


class Stack(nnx.Module):
  def __init__(self, rngs, layers=16, width=256):
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ('layers', 'embed', 'mlp'))
    self.kernel = nnx.Param(init(rngs.params(), (layers, 64, width)))


def _init(n_devices, scheme):
  mesh = ii.make_mesh((('data', -1), ('model', 1)), devices=jax.devices()[:n_devices])
  return ii.sharded_init(Stack, mesh=mesh, axis_rules=RULES, scheme=scheme)[1]


def _scan_lengths(jaxpr):
  """Lengths of every scan (lax.map) in a jaxpr, sub-jaxprs (shard_map bodies) included."""
  lengths = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'scan':
      lengths.append(eqn.params['length'])
    for sub in jax.core.jaxprs_in_params(eqn.params):
      lengths += _scan_lengths(sub)
  return lengths


def test_each_stacked_qr_runs_on_one_device(devices):
  scheme = ii.Rules([('kernel', ii.orthogonal())])
  init8 = _init(8, scheme)
  # 16 layers over 8 devices: every device maps over 2 layers (before: all 16, every device)
  closed = jax.make_jaxpr(init8)(jax.random.key(0))
  assert 'shard_map' in str(closed)
  assert max(_scan_lengths(closed.jaxpr)) == 2, _scan_lengths(closed.jaxpr)
  eight = init8(jax.random.key(3))['kernel'].value
  one = _init(1, scheme)(jax.random.key(3))['kernel'].value
  np.testing.assert_array_equal(np.asarray(eight), np.asarray(one))
  for w in np.asarray(eight, np.float64)[::5]:  # (64, 256): orthonormal rows
    np.testing.assert_allclose(w @ w.T, np.eye(64), atol=1e-5)


def test_uneven_layer_count_and_plain_initializers_unchanged(devices):
  # 3 layers on 8 devices: padded with repeats, dropped; He (partitionable) keeps lax.map
  scheme = ii.Rules([('kernel', ii.orthogonal())])
  mesh = ii.make_mesh((('data', 8), ('model', 1)))
  _, init, _ = ii.sharded_init(
    lambda r: Stack(r, layers=3), mesh=mesh, axis_rules=RULES, scheme=scheme
  )
  w = init(jax.random.key(1))['kernel'].value
  mesh1 = ii.make_mesh((('data', 1), ('model', 1)), devices=jax.devices()[:1])
  _, init1, _ = ii.sharded_init(
    lambda r: Stack(r, layers=3), mesh=mesh1, axis_rules=RULES, scheme=scheme
  )
  np.testing.assert_array_equal(np.asarray(w), np.asarray(init1(jax.random.key(1))['kernel'].value))
  he = jax.make_jaxpr(_init(8, ii.Rules([('kernel', ii.he_normal())])))(jax.random.key(0))
  assert 'shard_map' not in str(he) and max(_scan_lengths(he.jaxpr)) == 16
