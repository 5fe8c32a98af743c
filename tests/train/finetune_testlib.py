"""Test schemes for the loop's finetuning capabilities, and the kill -9 child of the probe test.

python tests/train/finetune_testlib.py WORKDIR DATA_DIR DEVICES MARKER   # the child
"""

import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import initlab.init as ii
import train_testlib  # noqa: F401  (puts configs/ on sys.path)

import pipeline_testlib  # pylint: disable=g-bad-import-order
import resnet_digits  # pylint: disable=g-bad-import-order

MARKER_ENV = 'INITLAB_TEST_PROBE_MARKER'


def half_masks(density: float = 0.5):
  """Param stage: a fixed random mask of every kernel (keeps `density` of the entries)."""

  def scheme(key, params, ctx=None):
    del ctx
    masks = {}
    for leaf in ii.leaves(params):
      if leaf.path.endswith('kernel'):
        k = jax.random.fold_in(key, ii.path_hash(leaf.path))
        node = masks
        *parents, last = leaf.path.split('/')
        for p in parents:
          node = node.setdefault(int(p) if p.isdigit() else p, {})
        node[last] = jax.random.uniform(k, leaf.shape) < density
    return ii.SchemeResult(params, masks=masks)

  return ii.with_stage(scheme, 'param', masks=r'.*kernel')


def average():
  """Param stage: the uniform mean of every source of `ctx.pretrained` ({name: tree}), and
  of their model states (BatchNorm statistics)."""

  def scheme(key, params, ctx=None):
    del key, params
    trees = list(ctx.require('pretrained', 'test_average').values())
    states = list(ctx.pretrained_state.values())
    mean = lambda *xs: sum(xs) / len(xs)
    return ii.SchemeResult(jax.tree.map(mean, *trees), model_state=jax.tree.map(mean, *states))

  return scheme


def stream_average():
  """Data stage: the uniform mean of every pretrained source and its model state, restoring
  one source at a time through `ctx.sources` (the run restores none up front)."""

  def scheme(key, params, ctx=None):
    del key, params
    sources = ctx.require('sources', 'test_stream_average')
    assert ctx.pretrained is None  # Nothing was restored up front.
    total = None
    for name in sources.names:
      one = sources.load(name)
      total = one if total is None else jax.tree.map(jnp.add, total, one)
      del one
    mean = jax.tree.map(lambda x: x / len(sources.names), total)
    return ii.SchemeResult(mean[0], model_state=mean[1])

  return ii.with_stage(scheme, 'data', streams_pretrained=True)


def narrow_by_gradient(keep: float = 0.5):
  """Architecture stage (probe): each residual block of a ResNet keeps the `keep` fraction of
  its inner channels with the largest |θ · ∂L/∂θ| of conv1 (summed per output channel, on
  the probe batches); writes one line to $INITLAB_TEST_PROBE_MARKER per call."""

  def probe(key, params, ctx):
    del key
    marker = os.environ.get(MARKER_ENV)
    if marker:
      with open(marker, 'a') as f:
        f.write('probe\n')
    data = ctx.require('data', 'test_narrow')
    grads = jax.grad(lambda p: data.loss(p, data.batches[0]))(params)
    cfg = ml_collections.ConfigDict(dict(ctx.model_config))
    widths = []
    for leaf, g in zip(ii.leaves(params), ii.leaves(grads)):
      if leaf.path.endswith('conv1/kernel') and 'blocks' in leaf.path:
        score = np.asarray(jnp.abs(leaf.value * g.value).sum(axis=(0, 1, 2)))
        widths.append(int(max(1, round(keep * score.size))))
    cfg.block_widths = tuple(widths)
    return cfg

  return ii.with_stage(lambda key, params, ctx=None: params, 'param', probe=probe)


SCHEMES = {
  'test_half_masks': half_masks,
  'test_average': average,
  'test_stream_average': stream_average,
  'test_narrow': narrow_by_gradient,
}


def registered():
  """The schemes above are registered inside the block only."""
  return pipeline_testlib.registered(SCHEMES)


def mlp_config(data_dir, **train):
  """pipeline_testlib's tiny digits MLP run (12 steps) under he_normal."""
  return pipeline_testlib.config(data_dir, scheme='he_normal', **train)


def resnet_config(data_dir, **train):
  """A ResNet-8 (one block per stage, width 0.25: 4/8/16 channels) on digits, with the MLP's
  schedule of logs and checkpoints (8 steps)."""
  c = resnet_digits.get_config('smoke')
  mlp = mlp_config(data_dir, **{'steps': 8, **train})
  c.init, c.seeds, c.data, c.train = mlp.init, mlp.seeds, mlp.data, mlp.train
  c.diagnostics_at_init = False
  return c


def child(workdir, data_dir, num_devices, marker):
  """The probe test's process: sleeps after each checkpoint so it is killed mid-run."""
  from initlab import train  # pylint: disable=g-import-not-at-top

  os.environ[MARKER_ENV] = marker
  c = resnet_config(data_dir, steps=40, checkpoint_every=4)
  c.init.name = 'test_narrow'
  with registered():
    devices = jax.devices()[: int(num_devices)]
    train.run(c, workdir, devices=devices, callbacks=[lambda *_: time.sleep(0.5)])
  pathlib.Path(workdir, 'child_done').write_text('1')


if __name__ == '__main__':
  child(*sys.argv[1:5])
