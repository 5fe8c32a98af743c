"""Smoke run of experiments/poincare_resnet (issue 12.5): outputs exist and are sane, the
training numbers come from `initlab.train.run_study` (the one loop) of configs derived from
configs/, and the study's Fréchet-mean batch norm really swaps the mean."""

import pathlib

import jax
import numpy as np
import pytest

from initlab import config as config_lib
from initlab import rundir
from initlab.hyperbolic import ball
from initlab.hyperbolic import nn as hnn

import study_testlib

REPO = pathlib.Path(__file__).resolve().parents[2]
STUDY = REPO / 'experiments' / 'poincare_resnet'


def _module(name):
  return study_testlib.load('poincare_resnet', name)


def test_configs_derive_from_the_base_configs():
  configs = _module('configs')
  for model, base in (('poincare', 'poincare_resnet_digits.py'), ('euclid', 'resnet_digits.py')):
    base_cfg = config_lib.load(REPO / 'configs' / base)
    cfg = configs.get_config(f'model={model},seeds=3')
    config_lib.validate(cfg, num_devices=1, process_count=1)
    assert cfg.model.to_dict() == base_cfg.model.to_dict()  # ResNet-20 both
    assert cfg.model.depth == 20 and cfg.seeds.num == 3 and cfg.init.compare == ()
    for key in ('optimizer.name', 'optimizer.learning_rate', 'data.name'):
      a, b = cfg, base_cfg
      for part in key.split('.'):
        a, b = a[part], b[part]
      assert a == b, key
    assert (cfg.train.steps, cfg.train.batch_size) == (configs.STEPS, configs.BATCH)
  assert 'Fréchet' in configs.get_config('model=poincare,bn=frechet').name
  with pytest.raises(config_lib.ConfigError, match="valid choices: \\['poincare', 'euclid'\\]"):
    configs.get_config('model=vit')
  with pytest.raises(config_lib.ConfigError, match="'frechet' with 'poincare'"):
    configs.get_config('model=euclid,bn=frechet')


def test_frechet_bn_swaps_the_batch_mean_and_restores_it():
  run = _module('run')
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 3)) * 2.0
  x = (
    np.tanh(np.linalg.norm(x, axis=-1, keepdims=True))
    * x
    / np.linalg.norm(x, axis=-1, keepdims=True)
  )
  with jax.enable_x64(True):
    mid, _ = hnn.batch_stats(x, 1.0)
    with run.frechet_bn(iters=20):
      mu, var = hnn.batch_stats(x, 1.0)
    np.testing.assert_allclose(mu, ball.frechet_mean(x, 1.0, iters=20), atol=1e-12)
    np.testing.assert_allclose(var, ball.frechet_variance(x, 1.0, mu=mu), atol=1e-12)
    assert np.max(np.abs(np.asarray(mu) - np.asarray(mid))) > 1e-3
    np.testing.assert_array_equal(hnn.batch_stats(x, 1.0)[0], mid)  # restored


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  out = tmp_path_factory.mktemp('poincare_study')
  return study_testlib.run_smoke('poincare_resnet', out, 'POINCARE_STUDY_WORKDIR', timeout=900)


@pytest.mark.slow
def test_smoke_outputs(smoke):
  out, res = smoke
  stack = res['norms']['stack']
  for c in ('1.0', '0.1'):
    ident, std = stack[f'poincare_identity/c={c}'], stack[f'hnnpp/c={c}']
    assert min(ident) > 0.98 * ident[0]  # identity init keeps the tangent norm
    assert std[-1] < 0.1 * std[0]  # the standard init shrinks it layer after layer
  assert {k.split('/')[1] for k in res['norms']['resnet']} == {'poincare_identity', 'hnnpp'}
  assert res['vjp']['mlp']['mem_ratio'] <= 0.7
  for name in ('norms_stack.png', 'norms_resnet.png'):
    assert (out / 'figures' / name).stat().st_size > 1000, name
  assert '(d) Custom VJPs' in (out / 'results' / 'tables.md').read_text()


@pytest.mark.slow
def test_smoke_numbers_come_from_the_one_loop(smoke):
  out, res = smoke
  rows = {r['cell']: r for r in res['training']}
  assert set(rows) == {'poincare_frechet', 'euclid'}
  for cell, r in rows.items():
    d = out / 'runs' / 'smoke' / cell / 'runs' / r['scheme'] / 'seed_0'
    final = rundir.read_json(d / 'summary.json')['final']
    assert r['accs'] == [final['eval/accuracy']] and 0 <= r['mean'] <= 1  # eval split: test
    saved = rundir.read_json(d / 'config.json')
    assert ('Fréchet' in saved['name']) == (cell == 'poincare_frechet')
