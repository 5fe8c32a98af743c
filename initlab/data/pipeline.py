"""Deterministic, per-process sharded, checkpointable grain input pipelines.

One logical global stream is defined by (source, seed, shuffle, num_epochs):
shuffle (reshuffled every epoch) -> repeat -> transform -> global batches of
`batch_size`. Process p of P receives rows [p*B/P, (p+1)*B/P) of every global
batch, so the processes' batches are disjoint and together form the global
batch that a single process would see, whatever P is.

The returned iterator is a `grain.DatasetIterator`: `get_state()` gives a
small JSON-able dict and `set_state(state)` on a freshly built iterator with
the same arguments continues exactly where the saved one stopped. It also
works with `grain.checkpoint.CheckpointSave/CheckpointRestore` in Orbax.
"""

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any

import grain
import jax
import numpy as np

Example = Mapping[str, Any]
MASK_KEY = 'mask'


def make_iterator(
  source,
  *,
  batch_size: int,
  seed: int,
  shuffle: bool = True,
  num_epochs: int | None = None,
  drop_remainder: bool = True,
  transform: Callable[[Example], Example] | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  num_threads: int = 4,
  prefetch: int = 16,
) -> grain.DatasetIterator:
  """Returns an iterator of this process's share of each global batch.

  Args:
    source: random-access examples (`len`, `[i]`), e.g. `data_source(...)`.
    batch_size: GLOBAL batch size; must be divisible by `process_count`.
    seed: shuffling seed; the same seed gives the same stream everywhere.
    shuffle: whether to shuffle (a different order every epoch).
    num_epochs: number of passes, or None to repeat forever.
    drop_remainder: if True, a last incomplete global batch is dropped. If
      False (requires finite `num_epochs`), it is padded to full size with
      zero examples and every example gets a bool `mask` entry (False for
      padding), e.g. for exact evaluation.
    transform: per-example function from a source record to a dict of numpy
      arrays (e.g. an `ImageTransform`); identity if None.
    process_index: this process's index; defaults to `jax.process_index()`.
    process_count: number of processes; defaults to `jax.process_count()`.
    num_threads: grain reader threads.
    prefetch: grain prefetch buffer size, in local batches.

  Yields:
    dicts of numpy arrays with leading dimension `batch_size // process_count`.
  """
  ds = local_batches(
    source,
    batch_size=batch_size,
    seed=seed,
    shuffle=shuffle,
    num_epochs=num_epochs,
    drop_remainder=drop_remainder,
    transform=transform,
    process_index=process_index,
    process_count=process_count,
  )
  read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  return iter(ds.to_iter_dataset(read))


def local_batches(
  source,
  *,
  batch_size: int,
  seed: int,
  shuffle: bool = True,
  num_epochs: int | None = None,
  drop_remainder: bool = True,
  transform: Callable[[Example], Example] | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
) -> grain.MapDataset:
  """`make_iterator`'s stream as a random-access `grain.MapDataset`: item k is this process's
  k-th local batch, and `make_iterator`'s state after k batches is {'next_index': k}."""
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  if batch_size < 1 or batch_size % process_count:
    raise ValueError(
      f'batch_size={batch_size} must be a positive multiple of process_count={process_count}.'
    )
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} not in [0, process_count={process_count}).')
  if num_epochs is None and not drop_remainder:
    raise ValueError(
      'drop_remainder=False needs a finite num_epochs; an endless stream has no last batch to pad.'
    )
  local = batch_size // process_count

  ds = grain.MapDataset.source(source)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs)
  if transform is not None:
    ds = ds.map(transform)
  if drop_remainder:
    ds = ds.slice(slice(0, len(ds) - len(ds) % batch_size))
  else:
    ds = _pad(ds, batch_size)
  # Local batch k holds rows of global batch k // P, so this process keeps
  # every P-th local batch starting at its index.
  ds = ds.batch(local, drop_remainder=True)
  return ds.slice(slice(process_index, None, process_count))


def _pad(ds: grain.MapDataset, batch_size: int) -> grain.MapDataset:
  """Adds `mask` and zero examples up to a multiple of `batch_size`."""
  ds = ds.map(lambda ex: {**ex, MASK_KEY: np.bool_(True)})
  num_pad = -len(ds) % batch_size
  if not num_pad or not len(ds):
    return ds
  blank = jax.tree.map(np.zeros_like, ds[0])
  blank[MASK_KEY] = np.bool_(False)
  pad = grain.MapDataset.range(num_pad).map(lambda _: blank)
  return grain.MapDataset.concatenate([ds, pad])


def to_global(batch, sharding):
  """Assembles per-process numpy batches into global `jax.Array`s.

  Args:
    batch: pytree of numpy arrays, this process's rows (leading axis).
    sharding: a `jax.sharding.Sharding` for every leaf (e.g.
      `NamedSharding(mesh, P('data'))`), or a pytree of them matching `batch`.

  Returns:
    The same pytree of global arrays whose leading axis is the global batch.
  """
  if isinstance(sharding, jax.sharding.Sharding):
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
  return jax.tree.map(jax.make_array_from_process_local_data, sharding, batch)


@dataclasses.dataclass(frozen=True)
class ImageTransform:
  """Record -> {'image': float32 image * scale, 'label': int32 ()}.

  Reads `image_key` / `label_key` of a record and always emits the keys
  'image' and 'label'. A plain dataclass, so it pickles for worker processes.
  """

  image_key: str = 'image'
  label_key: str = 'label'
  scale: float = 1 / 255

  def __call__(self, ex: Example) -> dict[str, np.ndarray]:
    image = np.asarray(ex[self.image_key], np.float32) * np.float32(self.scale)
    return {'image': image, 'label': np.asarray(ex[self.label_key], np.int32)}
