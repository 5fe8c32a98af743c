"""Test schemes for the staged init pipeline (`registered()`) and the kill -9 child.

python tests/train/pipeline_testlib.py WORKDIR DATA_DIR STEPS EVERY   # the child
"""

import contextlib
import sys
import time

import jax.numpy as jnp
import ml_collections

import initlab.init as ii
import train_testlib  # noqa: F401  (puts configs/ on sys.path)

import quickstart  # pylint: disable=g-bad-import-order


def _unit_logits_scale(ctx, params):
  """1 / std of the logits over every batch of `ctx.data` (float32 ())."""
  data = ctx.require('data', 'test_unit_logits')
  logits = jnp.concatenate([data.apply(params, data.inputs(b)) for b in data.batches])
  return 1 / jnp.std(logits)


def unit_logits(num_batches: int = 2):
  """Data stage: scales the head (kernel and bias) so the logits have unit variance on the
  data-stage batches (a linear head: the logits scale by the same factor)."""

  def scheme(key, params, ctx=None):
    del key
    s = _unit_logits_scale(ctx, params)
    head = {k: v * s for k, v in params['head'].items()}
    return {**params, 'head': head}

  return ii.with_stage(scheme, 'data', num_batches=num_batches)


def widen(factor: int = 2, extra_layers: int = 1):
  """Architecture stage (`resize`): the MLP gets `factor` x width and `extra_layers` more
  hidden layers; its params are left as built (the model's own init)."""

  def resize(model_config, ctx):
    del ctx
    cfg = ml_collections.ConfigDict(dict(model_config))
    cfg.width = model_config['width'] * factor
    cfg.depth = model_config['depth'] + extra_layers
    return cfg

  return ii.with_stage(lambda key, params, ctx=None: params, 'param', resize=resize)


def deepen():
  """Param stage returning `SchemeResult`: the MLP (depth d, width w, with d >= 1) becomes
  depth d + 1; the new last hidden layer is the identity (relu(relu(h)) = relu(h)), so the
  new model computes the same function as the one the scheme read."""

  def scheme(key, params, ctx=None):
    del key
    cfg = ml_collections.ConfigDict(dict(ctx.model_config))
    d, w = cfg.depth, cfg.width
    cfg.depth = d + 1
    new = params.to_pure_dict()
    hidden = dict(new['hidden'])
    hidden[d] = {
      'kernel': jnp.eye(w, dtype=hidden[0]['kernel'].dtype),
      'bias': jnp.zeros((w,), hidden[0]['bias'].dtype),
    }
    return ii.SchemeResult({**new, 'hidden': hidden}, cfg)

  return scheme


def needs_graph(stage: str = 'param'):
  """Needs the dataset fact 'degree_stats' (graph data), which digits lacks."""

  def scheme(key, params, ctx=None):
    del key
    ctx.require('degree_stats', 'test_needs_graph')
    return params

  return ii.with_stage(scheme, stage)


SCHEMES = {
  'test_unit_logits': unit_logits,
  'test_widen': widen,
  'test_deepen': deepen,
  'test_needs_graph': needs_graph,
}


@contextlib.contextmanager
def registered(schemes=None):
  """The test schemes ({name: factory}, default SCHEMES) are registered inside the block only
  (`--list` stays the package's)."""
  schemes = SCHEMES if schemes is None else schemes
  for name, factory in schemes.items():
    ii.register_scheme(name)(factory)
  try:
    yield
  finally:
    for name in schemes:
      ii.registry._SCHEMES.pop(name, None)  # pylint: disable=protected-access
      ii.registry._DESCRIPTIONS.pop(name, None)  # pylint: disable=protected-access


def config(data_dir, *, scheme='test_unit_logits', **train):
  """A tiny digits MLP run (quickstart smoke) with init `scheme`."""
  c = quickstart.get_config('smoke')
  c.init.compare = ()
  c.init.name = scheme
  c.seeds.num = 1
  c.data.data_dir = data_dir
  c.diagnostics_at_init = False
  c.model.depth = 2
  c.model.width = 32
  c.train.update(
    dict(
      steps=12,
      batch_size=16,
      log_every=1,
      eval_every=0,
      checkpoint_every=4,
      keep_checkpoints=5,
      progress_bar=False,
    )
  )
  c.train.update(train)
  return c


def child(workdir, data_dir, steps, every):
  """The process the resume test kills: sleeps after each checkpoint so it is killed mid-run."""
  from initlab import train  # pylint: disable=g-import-not-at-top

  c = config(data_dir, steps=steps, checkpoint_every=every)
  with registered():
    train.run(c, workdir, callbacks=[lambda *_: time.sleep(1.0)])


if __name__ == '__main__':
  child(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
