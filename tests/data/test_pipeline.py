"""grain pipelines: determinism, per-process sharding, padding, resume."""

import json

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from initlab import data

N = 50
SOURCE = [{'x': np.int32(i), 'y': np.full((2,), i, np.float32)} for i in range(N)]


def _xs(it, steps=None):
  batches = list(it) if steps is None else [next(it) for _ in range(steps)]
  return np.stack([b['x'] for b in batches])


def _iter(**kw):
  kw = {'batch_size': 8, 'seed': 0, **kw}
  return data.make_iterator(SOURCE, **kw)


def test_deterministic_by_seed_and_seeds_differ():
  a, b = _xs(_iter(), 10), _xs(_iter(), 10)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, _xs(_iter(seed=1), 10))


def test_epochs_are_reshuffled_permutations():
  xs = _xs(_iter(batch_size=10, num_epochs=2)).reshape(2, N)
  assert sorted(xs[0]) == sorted(xs[1]) == list(range(N))
  assert not np.array_equal(xs[0], xs[1])


def test_no_shuffle_keeps_order_and_drops_remainder():
  xs = _xs(_iter(shuffle=False, num_epochs=1))
  assert xs.shape == (N // 8, 8)
  np.testing.assert_array_equal(xs.ravel(), np.arange(N // 8 * 8))


@pytest.mark.parametrize('num_epochs', [None, 3])
def test_processes_get_disjoint_halves_of_the_global_batch(num_epochs):
  steps = 3 * N // 8  # Finite case: all global batches, across epochs.
  full = _xs(_iter(num_epochs=num_epochs), steps)
  halves = [
    _xs(_iter(num_epochs=num_epochs, process_index=p, process_count=2))
    if num_epochs
    else _xs(_iter(process_index=p, process_count=2), steps)
    for p in (0, 1)
  ]
  assert halves[0].shape == halves[1].shape == (steps, 4)
  np.testing.assert_array_equal(np.concatenate(halves, axis=1), full)
  for row0, row1 in zip(*halves):
    assert not set(row0) & set(row1)


def test_padding_masks_the_remainder_across_processes():
  halves = [
    list(_iter(num_epochs=1, drop_remainder=False, shuffle=False, process_index=p, process_count=2))
    for p in (0, 1)
  ]
  assert len(halves[0]) == len(halves[1]) == -(-N // 8)
  xs = np.concatenate([b['x'] for h in halves for b in h])
  mask = np.concatenate([b['mask'] for h in halves for b in h])
  assert mask.dtype == bool and mask.sum() == N
  assert sorted(xs[mask]) == list(range(N))
  assert not xs[~mask].any()


def test_resume_from_state_continues_exactly():
  it = _iter(process_index=1, process_count=2, transform=lambda e: e)
  _xs(it, 9)
  state = json.loads(json.dumps(it.get_state()))  # As written to disk.
  expected = _xs(it, 12)
  fresh = _iter(process_index=1, process_count=2, transform=lambda e: e)
  fresh.set_state(state)
  np.testing.assert_array_equal(_xs(fresh, 12), expected)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match='batch_size=6.*process_count=4'):
    _iter(batch_size=6, process_count=4, process_index=0)
  with pytest.raises(ValueError, match='process_index=2'):
    _iter(process_count=2, process_index=2)
  with pytest.raises(ValueError, match='num_epochs'):
    _iter(drop_remainder=False)


def test_to_global_on_the_8_device_mesh(devices):
  mesh = jax.sharding.Mesh(np.array(devices), ('data',))
  batch = next(_iter(batch_size=16))
  out = data.to_global(batch, NamedSharding(mesh, P('data')))
  assert out['x'].shape == (16,) and out['y'].shape == (16, 2)
  assert len(out['x'].sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(out['y']), batch['y'])
  tree = {'x': NamedSharding(mesh, P('data')), 'y': NamedSharding(mesh, P())}
  out = data.to_global(batch, tree)
  assert out['y'].sharding.spec == P()
