"""Smoke run of experiments/virgo (issue 11, item 5): the driver's outputs exist and every
number comes from the project's code (accuracy: `initlab.train.run_study`'s results.json;
ratios: `initlab.diagnostics.gnn.variance_ratios`), and the study's configs are valid."""

import json
import pathlib

import jax
import numpy as np
import pytest

from initlab import config as config_lib
import initlab.init as ii

import study_testlib

REPO = pathlib.Path(__file__).resolve().parents[2]
HERE = REPO / 'experiments' / 'virgo'


def _module(name):
  return study_testlib.load('virgo', name)


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  out = tmp_path_factory.mktemp('virgo_study')
  return study_testlib.run_smoke('virgo', out, 'VIRGO_WORKDIR')


def test_smoke_outputs_come_from_the_loop_and_the_diagnostics(smoke):
  out, study = smoke
  run = _module('run')
  assert (out / 'figures' / 'ratios_vs_depth.png').stat().st_size > 1000
  tables = (out / 'results' / 'tables.md').read_text()
  assert '| csbm | gcn | 2 | 1 |' in tables and '| csbm | gcn | 3 | ' in tables
  # Accuracy rows: the study's results.json (final eval/test_accuracy), per scheme.
  ((ds, model, depth, schemes),) = run.SMOKE_TRAIN_GRID
  results = json.loads(
    (out / 'runs' / 'smoke' / f'{ds}_{model}{depth}' / 'results.json').read_text()
  )
  assert [r['scheme'] for r in study['accuracy']] == list(schemes)
  for r in study['accuracy']:
    want = results['schemes'][r['scheme']]['aggregate']['eval/test_accuracy']
    assert (r['mean'], r['n']) == (want['mean'], 1) and 0 < r['mean'] <= 1
  # Ratio rows: every (cell, scheme) of the smoke grid, one finite positive ratio per layer.
  cells = [(d, m, L) for d, m, depths in run.SMOKE_RATIO_GRID for L in depths]
  got = [(r['dataset'], r['model'], r['depth'], r['scheme']) for r in study['ratios']]
  assert got == [(*c, s) for c in cells for s in run.SMOKE_SCHEMES]
  for r in study['ratios']:
    for k in ('forward', 'backward'):
      assert len(r[k]) == r['depth'] and np.all(np.isfinite(r[k])) and min(r[k]) > 0


def test_ratio_rows_are_variance_ratios_of_the_diagnostics(smoke):
  """The smoke's csbm GCN-2 Kaiming row, recomputed with initlab.diagnostics.gnn."""
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from initlab import data  # pylint: disable=g-import-not-at-top
  import initlab.models as im  # pylint: disable=g-import-not-at-top
  from initlab.diagnostics import gnn  # pylint: disable=g-import-not-at-top

  _, study = smoke
  row = next(
    r
    for r in study['ratios']
    if (r['dataset'], r['depth'], r['scheme']) == ('csbm', 2, 'he_normal')
  )
  configs = _module('configs')
  config = configs.get_config('dataset=csbm,model=gcn,depth=2,smoke')
  model_cfg = im.default_config('gcn')
  model_cfg.update(config.model.to_dict())
  g = data.graph(config.data)
  with nnx.use_eager_sharding(False):
    r = gnn.variance_ratios(
      lambda rngs: im.build(model_cfg, rngs=rngs),
      ii.get_scheme('he_normal'),
      g,
      seeds=1,
      mask=g['train_mask'],
    )
  np.testing.assert_allclose(row['forward'], r['forward_mean'], rtol=1e-5)
  np.testing.assert_allclose(row['backward'], r['backward_mean'], rtol=1e-5)


def test_configs_are_valid_and_errors_name_the_choices():
  configs = _module('configs')
  for ds in configs.DATASETS:
    for model in configs.MODELS:
      config = configs.get_config(f'dataset={ds},model={model},depth=3')
      config_lib.validate(config, num_devices=1, process_count=1)
      assert config.init.compare == configs.SCHEMES and config.seeds.num == 5
      assert config.model.name == model and config.model.depth == 3
  heavy = configs.get_config('dataset=chung_lu_heavy')
  assert heavy.data.name == 'chung_lu' and heavy.data.graph.to_dict() == configs.HEAVY
  with pytest.raises(config_lib.ConfigError, match=r"dataset='pubmed'; valid choices: \['cora'"):
    configs.get_config('dataset=pubmed')
  with pytest.raises(config_lib.ConfigError, match=r"schemes='he'; valid choices"):
    configs.get_config('schemes=he')


def test_virgo_mode_names_are_the_modes():
  """virgo_forward / virgo_backward / virgo_arithmetic (for init.compare) = virgo(mode=...)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from initlab import data  # pylint: disable=g-import-not-at-top
  import initlab.models as im  # pylint: disable=g-import-not-at-top

  cfg = {'name': 'csbm'}
  meta = data.metadata(cfg)
  config = im.default_config('gcn')
  config.update(num_features=128, num_classes=4, depth=3, width=16)
  with nnx.use_eager_sharding(False):
    model = im.build(config, rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  ctx = ii.InitContext(hints=model.init_hints(), dataset=ii.stages.dataset_facts(meta))
  for mode in ('forward', 'backward', 'arithmetic'):
    a = ii.get_scheme(f'virgo_{mode}')(jax.random.key(1), params, ctx)
    b = ii.get_scheme('virgo', mode=mode)(jax.random.key(1), params, ctx)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(x, y)
    assert ii.describe(f'virgo_{mode}').startswith('Virgo')
