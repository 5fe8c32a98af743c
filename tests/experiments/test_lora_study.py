"""Smoke run of experiments/lora_init (issue [lora], item 5): the ViT pretrained on digits 0-4,
two adapter inits (one vmapped sweep) and full fine-tuning on 5-9 through the project's loop;
every number in the table comes from the run directories."""

import json

import pytest

import study_testlib


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  out = tmp_path_factory.mktemp('lora_study')
  args = ('--tasks=vit', '--schemes=pissa,lora_ga')
  return study_testlib.run_smoke('lora_init', out, 'LORA_WORKDIR', args=args)


def _summary(path):
  return json.loads((path / 'summary.json').read_text())


def test_smoke_numbers_come_from_the_runs(smoke):
  out, study = smoke
  (res,) = study
  root = out / 'runs' / 'smoke' / 'vit'
  cells = res['ranks']['4']
  assert set(cells) == {'pissa', 'lora_ga'}
  for scheme, cell in cells.items():
    summary = _summary(root / 'r4' / 'runs' / scheme / 'seed_0')
    assert cell['loss'] == [pytest.approx(summary['final']['eval/loss'])]
    assert cell['init_s'] == [summary['init_s']] and summary['init_s'] > 0
  config = json.loads((root / 'r4' / 'runs' / 'pissa' / 'seed_0' / 'config.json').read_text())
  assert config['data']['classes'] == [5, 6, 7, 8, 9] and config['adapters']['rank'] == 4
  base = json.loads((root / 'base' / 'config.json').read_text())
  assert base['data']['classes'] == [0, 1, 2, 3, 4]
  assert res['full'] is not None and len(res['full']['loss']) == 1
  table = (out / 'results' / 'tables.md').read_text()
  assert '## VIT, rank 4' in table and '| full fine-tuning |' in table
  assert (out / 'figures' / 'curves_vit.png').stat().st_size > 1000
