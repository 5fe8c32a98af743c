"""LSUV (Mishkin & Matas 2016, arXiv 1511.06422): every normalized layer has unit output
variance, also on a held-out batch; stacked LM kernels are normalized slice by slice; the
same result on 1 and 8 devices."""

import threading

import jax
import jax.numpy as jnp
from flax import nnx
import numpy as np
import pytest

import initlab.init as ii
from initlab.config import ConfigError
from initlab.init.families import lsuv
from initlab.init.schemes import stage_of

import datastage_testlib as tl

TOL = 0.1  # The paper's tolerance, and the scheme's default.


def _heldout(model, size):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  return (jax.tree.map(jnp.asarray, tl.batch(model, size, index=1)),)


@pytest.mark.parametrize('model', ['mlp', 'resnet20'])
def test_heldout_variance_within_tolerance(model):
  """Fit on 256 digits, check on 256 others: |Var − 1| < tol for every normalized layer.

  The tolerance is the fit's own (0.1): on the fit batch LSUV stops inside it, and the held
  out batch's variance differs by sampling noise well below it at 256 examples. Before LSUV
  (Flax's LeCun init) some layer is outside it, so the check has teeth."""
  params, ctx = tl.setup(model, batch_size=256)
  before = lsuv.output_variances(ctx.data, params, _heldout(model, 256))
  assert max(abs(v - 1) for v in before.values()) > TOL
  out = ii.get_scheme('lsuv', tol=TOL)(jax.random.key(0), params, ctx)
  fit = lsuv.output_variances(ctx.data, out)
  held = lsuv.output_variances(ctx.data, out, _heldout(model, 256))
  kernels = [l.path for l in ii.leaves(params) if l.path.endswith('kernel')]
  assert sorted(held) == sorted(kernels)  # every kernel layer is normalized
  for name, v in held.items():
    assert abs(fit[name] - 1) < TOL, (name, fit[name])
    assert abs(v - 1) < TOL, (name, v)


def test_output_capture_matches_the_layer_and_is_removed():
  """The recorded output of hidden/0 is x·W + b of the flattened input; `__call__` is
  restored afterwards."""
  params, ctx = tl.setup('mlp')
  x = ctx.data.inputs(ctx.data.batches[0])
  original = nnx.Linear.__call__
  logits, record = lsuv.layer_outputs(ctx.data.model(params), x)
  assert nnx.Linear.__call__ is original
  outputs = dict(record)
  w, b = np.asarray(params['hidden'][0]['kernel']), np.asarray(params['hidden'][0]['bias'])
  expect = np.asarray(x, np.float64).reshape(len(x), -1) @ w + b
  np.testing.assert_allclose(outputs[('hidden/0/kernel', None)], expect, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(logits, ctx.data.apply(params, x), rtol=1e-5, atol=1e-5)
  assert [u for u, _ in record] == [
    ('hidden/0/kernel', None),
    ('hidden/1/kernel', None),
    ('hidden/2/kernel', None),
    ('head/kernel', None),
  ]


def test_capture_leaves_the_layer_classes_and_other_threads_alone():
  """While `layer_outputs` runs, nnx.Linear's and nnx.Conv's `__call__` are the original
  functions (no class is patched), and a Linear called from another thread meanwhile runs
  as usual and is not recorded; afterwards the model's modules have their own classes."""
  originals = {c: c.__dict__['__call__'] for c in (nnx.Linear, nnx.Conv)}
  seen, other_out = [], []
  other = nnx.Linear(3, 2, rngs=nnx.Rngs(1))

  def call_other():
    seen.append({c: c.__dict__['__call__'] for c in originals})
    other_out.append(other(jnp.ones((1, 3))))

  class Probe(nnx.Module):
    def __init__(self):
      self.conv = nnx.Conv(1, 2, (3, 3), rngs=nnx.Rngs(2))
      self.dense = nnx.Linear(2 * 4 * 4, 3, rngs=nnx.Rngs(3))

    def __call__(self, x):
      seen.append({c: c.__dict__['__call__'] for c in originals})
      y = self.conv(x)
      thread = threading.Thread(target=call_other)
      thread.start()
      thread.join()
      return self.dense(y.reshape(len(y), -1))

  model = Probe()
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
  logits, record = lsuv.layer_outputs(model, x)
  assert len(seen) == 2 and all(s == originals for s in seen)
  assert [u for u, _ in record] == [('conv/kernel', None), ('dense/kernel', None)]
  np.testing.assert_allclose(dict(record)[('dense/kernel', None)], logits)
  np.testing.assert_allclose(other_out[0], other(jnp.ones((1, 3))))
  assert type(model.conv) is nnx.Conv and type(model.dense) is nnx.Linear
  assert {c: c.__dict__['__call__'] for c in originals} == originals


def test_stacked_lm_normalized_per_slice():
  """Slice i of each stacked kernel is its own layer: all slices reach unit variance, and
  their scales differ (one scale for the whole stack could not do that)."""
  params, ctx = tl.setup('transformer_lm', batch_size=32)
  out = ii.get_scheme('lsuv')(jax.random.key(0), params, ctx)
  fit = lsuv.output_variances(ctx.data, out)
  assert {
    'blocks/mlp/fc1/kernel[0]',
    'blocks/mlp/fc1/kernel[1]',
    'blocks/attn/query/kernel[1]',
    'head/kernel',
  } <= set(fit)
  assert all(abs(v - 1) < TOL for v in fit.values()), fit
  orth = ii.Rules([('.*', ii.orthogonal())], roles=('kernel',))(
    jax.random.key(0), nnx.state(ctx.data.model(params), nnx.Param)
  ).to_pure_dict()
  fc2 = np.asarray(out['blocks']['mlp']['fc2']['kernel'])
  base = np.asarray(orth['blocks']['mlp']['fc2']['kernel'])
  scales = np.linalg.norm(fc2.reshape(2, -1), axis=1) / np.linalg.norm(base.reshape(2, -1), axis=1)
  assert abs(scales[0] / scales[1] - 1) > 1e-3, scales


def test_vit_every_projection_normalized():
  params, ctx = tl.setup('vit', batch_size=64)
  out = ii.get_scheme('lsuv')(jax.random.key(0), params, ctx)
  fit = lsuv.output_variances(ctx.data, out)
  assert {'patch_embed/kernel', 'blocks/1/attn/out/kernel', 'blocks/0/mlp/fc2/kernel'} <= set(fit)
  assert all(abs(v - 1) < TOL for v in fit.values()), fit


def test_same_on_1_and_8_devices(devices):
  """Params sharded (FSDP) over 8 devices and batches split: the result equals 1 device."""
  results = []
  for n in (1, 8):
    mesh = tl.mesh(n)
    params, ctx = tl.setup('transformer_lm', batch_size=32, mesh=mesh)
    with jax.set_mesh(mesh):
      out = ii.get_scheme('lsuv')(jax.random.key(3), params, ctx)
    leaf = out['blocks']['mlp']['fc1']['kernel']
    assert leaf.sharding == params['blocks']['mlp']['fc1']['kernel'].sharding
    results.append(jax.tree.map(np.asarray, out))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), *results)


def test_data_stage_scheme_and_bad_options():
  scheme = ii.get_scheme('lsuv', num_batches=3)
  assert stage_of(scheme) == 'data' and scheme.num_batches == 3
  with pytest.raises(ValueError, match=r'option tol=-0.1 must be a number > 0'):
    ii.get_scheme('lsuv', tol=-0.1)
  with pytest.raises(ValueError, match=r'option max_iters=2.5 must be an int > 0'):
    ii.get_scheme('lsuv', max_iters=2.5)
  with pytest.raises(TypeError, match='toll'):
    ii.get_scheme('lsuv', toll=0.1)
  params, _ = tl.setup('mlp')
  with pytest.raises(ConfigError, match="'lsuv' needs the data stage"):
    scheme(jax.random.key(0), params, ii.InitContext())


def test_variance_pools_the_batches_like_numpy():
  """Var over two batches of hidden/0's output equals numpy's float64 variance of both."""
  params, ctx = tl.setup('mlp', num_batches=2, batch_size=32)
  w, b = (np.asarray(params['hidden'][0][k], np.float64) for k in ('kernel', 'bias'))
  b = b + 0.5  # a mean offset, to catch E[y²] − E[y]² mistakes
  params['hidden'][0]['bias'] = jax.numpy.asarray(b, jax.numpy.float32)
  xs = [
    np.asarray(ctx.data.inputs(batch), np.float64).reshape(32, -1) for batch in ctx.data.batches
  ]
  expect = np.var(np.concatenate([x @ w + b for x in xs]))
  got = lsuv.output_variances(ctx.data, params)['hidden/0/kernel']
  assert got == pytest.approx(expect, rel=1e-4)
