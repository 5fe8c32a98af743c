"""End-to-end smoke run of experiments/gg_priors (the [gg] study): outputs exist and are sane."""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FIGURES = ('curves_lm.png', 'curves_resnet.png', 'beta_hat.png', 'fits_lm.png',
           'fits_resnet.png', 'backslash.png', 'deepshape_lm.png', 'deepshape_resnet.png')


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  out = tmp_path_factory.mktemp('gg_study')
  env = dict(os.environ, GG_STUDY_WORKDIR=str(out / 'runs'), JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)   # one CPU device, as the study is run
  proc = subprocess.run([sys.executable, 'experiments/gg_priors/run.py', '--smoke',
                         f'--out={out}'], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return out, json.loads((out / 'results' / 'study.json').read_text())


@pytest.mark.slow
def test_outputs_exist(smoke):
  out, res = smoke
  assert (out / 'results' / 'tables.md').read_text().count('###') >= 8
  for name in FIGURES:
    assert (out / 'figures' / name).stat().st_size > 1000, name
  assert {r['model'] for r in res['runs']} == {'lm', 'resnet'}


@pytest.mark.slow
def test_beta_hat_sane(smoke):
  _, res = smoke
  for r in res['runs']:
    for layer, beta in {**r['init_layer_beta'], **r['trained_layer_beta']}.items():
      assert math.isfinite(beta) and 0.1 < beta < 10, (r['beta'], layer, beta)
    assert math.isfinite(r['final']['loss'])


@pytest.mark.slow
def test_quantized_loss_close_to_float32(smoke):
  _, res = smoke
  for r in res['quant']:
    for kind in ('rf8', 'fp8'):
      assert r[kind]['loss'] < 1.5 * r['fp32']['loss'], (r['model'], r['beta'], kind)


@pytest.mark.slow
def test_backslash_and_deepshape(smoke):
  _, res = smoke
  plain = [r for r in res['backslash'] if r['lam'] == 0]
  rate = [r for r in res['backslash'] if r['lam'] > 0]
  assert plain and rate
  for r in rate:
    assert 0 <= r['near_zero'] <= 1 and math.isfinite(r['dense']['loss'])
    assert r['near_zero'] > plain[0]['near_zero']
  for r in res['deepshape']:
    assert r['entropy_after'] < r['entropy_before']
    assert math.isfinite(r['eval_ft']['loss'])
