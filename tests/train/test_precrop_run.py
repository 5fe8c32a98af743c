"""Pruning at init and PreCropping through the loop (issue [precrop]): 'pai_mask' keeps its
masked kernel entries at exactly 0 through training and a resume on the 8-device mesh;
'precrop' builds, records and trains a narrower ResNet at the mask's kernel budget."""

import json
import math

import jax
import numpy as np
import pytest

from initlab import train
import initlab.init as ii
from initlab.init import precrop as pc

import finetune_testlib as lib  # pylint: disable=g-bad-import-order

pytestmark = pytest.mark.filterwarnings(
  'ignore:Exception ignored in. None:pytest.PytestUnraisableExceptionWarning'
)


def _flat(tree):
  return {l.path: np.asarray(jax.device_get(l.value)) for l in ii.leaves(tree)}


def _kernels(params):
  return {p: v for p, v in _flat(params).items() if p.endswith('kernel')}


def test_pai_mask_stays_zero_through_100_steps_and_a_resume_on_8_devices(
  data_dir, tmp_path, devices
):
  config = lib.resnet_config(data_dir, steps=60, checkpoint_every=30, log_every=30)
  config.init.name = 'pai_mask'
  config.init.pai_mask = dict(score='snip', density=0.3)
  train.run(config, tmp_path / 'run', devices=devices)
  config.train.steps = 100  # Resumes from step 60 with the checkpointed masks.
  result = train.run(config, tmp_path / 'run', devices=devices)
  assert result.summary['resumed_from'] == 60
  masks, params = _flat(result.state.masks), _kernels(result.state.params)
  assert set(masks) == set(params)  # Every conv and dense kernel, nothing else.
  total = sum(m.size for m in masks.values())
  assert sum(int(m.sum()) for m in masks.values()) == round(0.3 * total)  # Global top-k.
  for path, m in masks.items():
    assert np.all(params[path][~m] == 0), path
    assert np.count_nonzero(params[path][m]) > 0.9 * m.sum(), path  # The kept entries trained.


def test_precrop_builds_a_narrower_resnet_at_the_budget_and_reuses_it(data_dir, tmp_path):
  config = lib.resnet_config(data_dir, steps=4, checkpoint_every=4, log_every=2)
  config.model.width = 1.0  # ResNet-8 at 16/32/64 channels.
  config.init.name = 'precrop'
  config.init.precrop = dict(score='synflow', density=0.2, rounds=10)
  result = train.run(config, tmp_path / 'run')
  built = json.loads((tmp_path / 'run' / 'config.json').read_text())['built_model']
  dense_kernels = pc.layout(config.model).kernel_params()
  kernels = _kernels(result.state.params)
  got = sum(math.prod(v.shape) for v in kernels.values())
  # Global top-k keeps 0.2 of the kernels, so the budget is 0.2 x the dense kernel params.
  assert abs(got - 0.2 * dense_kernels) <= 0.01 * 0.2 * dense_kernels
  assert tuple(built['stage_widths']) != (16, 32, 64) and len(built['block_widths']) == 3
  assert kernels['stem/conv/kernel'].shape[-1] == built['stage_widths'][0]
  assert np.isfinite(result.summary['final']['train/loss'])
  # A second run on the workdir reuses the recorded model: no probe, the same widths; a
  # fresh workdir (a run killed before it recorded them) probes again and gets the same.
  again = train.Run(config, tmp_path / 'run')
  fresh = train.Run(config, tmp_path / 'fresh')
  assert not again.probed and fresh.probed
  for r in (again, fresh):
    assert tuple(r.model_config.block_widths) == tuple(built['block_widths'])
    assert tuple(r.model_config.stage_widths) == tuple(built['stage_widths'])
    r.checkpointer.close()
