"""End-to-end smoke run of experiments/gg_priors (the [gg] study): outputs exist and are sane,
and every number comes from `initlab.train.run` (the one loop) of a config derived from configs/."""

import math
import pathlib

import pytest

from initlab import config as config_lib
from initlab import rundir

import study_testlib

REPO = pathlib.Path(__file__).resolve().parents[2]
FIGURES = (
  'curves_lm.png',
  'curves_resnet.png',
  'beta_hat.png',
  'fits_lm.png',
  'fits_resnet.png',
  'backslash.png',
  'deepshape_lm.png',
  'deepshape_resnet.png',
)


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  out = tmp_path_factory.mktemp('gg_study')
  return study_testlib.run_smoke('gg_priors', out, 'GG_STUDY_WORKDIR')


def _configs():
  return study_testlib.load('gg_priors', 'configs')


def test_configs_derive_from_the_base_configs():
  configs = _configs()
  for model, base in (('lm', 'lm_shakespeare.py'), ('resnet', 'resnet_digits.py')):
    for smoke in ('', ',smoke'):
      base_cfg = config_lib.load(REPO / 'configs' / base, smoke[1:] or None)
      cfg = configs.get_config(f'model={model},beta=1.5,seed=2{smoke}')
      config_lib.validate(cfg, num_devices=1, process_count=1)
      assert cfg.init.name == 'gg_model' and cfg.init.gg_model.beta == 1.5
      assert (cfg.seeds.init, cfg.seeds.data, cfg.seeds.dropout) == (2, 2, 2)
      for key in (
        'data.name',
        'data.eval_split',
        'optimizer.name',
        'optimizer.schedule',
        'optimizer.kwargs',
        'optimizer.grad_clip_norm',
        'model.name',
        'model.num_heads' if model == 'lm' else 'model.norm',
      ):
        a, b = cfg, base_cfg
        for part in key.split('.'):
          a, b = a[part], b[part]
        assert a == b, key  # inherited, not copied
      if smoke:
        assert cfg.model.to_dict() == base_cfg.model.to_dict()
  bs = configs.get_config('model=lm,backslash=0.001')
  assert bs.optimizer.extra == (('backslash', {'rdo_per_param': 0.001}),)
  ft = configs.get_config('model=resnet,seed=1,finetune=7')
  assert (ft.train.steps, ft.train.eval_every, ft.seeds.data) == (7, 7, 1 + configs.FT_DATA_SEED)
  assert ft.optimizer.schedule == 'constant'
  with pytest.raises(config_lib.ConfigError, match="'lm', 'resnet'"):
    configs.get_config('model=vit')


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


def _eval_final(run_dir):
  final = rundir.read_json(run_dir / 'summary.json')['final']
  return {k[len('eval/') :]: v for k, v in final.items() if k.startswith('eval/')}


@pytest.mark.slow
def test_numbers_come_from_the_one_loop(smoke):
  out, res = smoke
  runs = out / 'runs' / 'smoke'
  assert not list(runs.rglob('unused')), 'no half-built loop.Run directories'
  for r in res['runs']:
    d = runs / r['model'] / f'beta_{r["beta"]}' / f'seed_{r["seed"]}'
    saved = rundir.read_json(d / 'config.json')
    assert saved['init']['gg_model']['beta'] == r['beta'] and saved['seeds']['data'] == r['seed']
    assert r['final'] == _eval_final(d)
    records = rundir.dedupe_steps(rundir.read_jsonl(d / 'metrics.jsonl'))
    assert r['eval_curve'] == [x for x in records if x['split'] == 'eval']
    assert [x['step'] for x in records if x['split'] == 'train'] == list(range(1, r['steps'] + 1))
    assert (d / 'checkpoints' / str(r['steps'])).is_dir() and list((d / 'tb').iterdir())
    assert r['init_layer_beta'] == rundir.read_json(d / 'init_layer_beta.json')
  for r in res['backslash']:
    if r['lam']:
      d = runs / 'lm_backslash' / f'lam_{r["lam"]}' / f'seed_{r["seed"]}'
      extra = rundir.read_json(d / 'config.json')['optimizer']['extra']
      assert extra == [['backslash', {'rdo_per_param': r['lam']}]]
      assert r['dense'] == _eval_final(d)
  for r in res['deepshape']:
    d = runs / r['model'] / 'beta_2.0' / f'seed_{r["seed"]}'
    assert r['eval_ft'] == _eval_final(d / 'deepshape_ft')
    assert r['eval_ctrl_ft'] == _eval_final(d / 'deepshape_ctrl')
    assert r['eval_before'] == _eval_final(d)
