"""Learngene through the loop (issue [learngene]): a TLEG / SWS learngene trained as a zoo model,
descendants initialized from its run directory by `tleg_expand` / `sws_expand`."""

import jax
import numpy as np
import pytest

from initlab import config as config_lib
from initlab import data as data_lib
from initlab import train

from train_testlib import REPO  # pylint: disable=g-bad-import-order

pytestmark = pytest.mark.filterwarnings(
  'ignore:Exception ignored in. None:pytest.PytestUnraisableExceptionWarning'
)


@pytest.fixture(scope='module')
def text_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfds_text'))
  data_lib.prepare('tiny_shakespeare', path)
  return path


def _config(text_dir, arg, **train_opts):
  c = config_lib.load(REPO / 'configs' / 'learngene.py', f'smoke,{arg}')
  c.data.data_dir = text_dir
  c.train.update(dict(eval_every=0, **train_opts))
  return c


@pytest.fixture(scope='module')
def genes(text_dir, tmp_path_factory):
  """{'tleg': run dir, 'sws': run dir}: learngenes trained 4 steps on the labels (CE)."""
  out = {}
  for gene in ('tleg', 'sws'):
    path = tmp_path_factory.mktemp(gene)
    c = _config(text_dir, f'role=gene,gene={gene}', steps=4, checkpoint_every=4)
    c.train.loss = 'ce'
    train.run(c, path)
    out[gene] = path
  return out


def _logits(run, state, batch):
  return np.asarray(run.setup.model(state)(batch['inputs']))


@pytest.mark.parametrize('gene', ['tleg', 'sws'])
@pytest.mark.parametrize('num_devices', [1, 8])
def test_descendant_of_the_learngenes_depth_reproduces_its_logits(
  gene, num_devices, genes, text_dir, tmp_path, devices
):
  gene_config = _config(text_dir, f'role=gene,gene={gene}', steps=4, checkpoint_every=4)
  gene_config.train.loss = 'ce'
  gene_run = train.Run(gene_config, genes[gene], devices=devices[:num_devices])
  c = _config(text_dir, f'role=descendant,gene={gene},depth={gene_run.model_config.depth}')
  c.init.pretrained = str(genes[gene])
  c.init[f'{gene}_expand'] = dict(c.init.get(f'{gene}_expand', {}), copy_head=True)
  run = train.Run(c, tmp_path / 'descendant', devices=devices[:num_devices])
  with jax.set_mesh(run.mesh):
    learned, _, resumed = gene_run.initial_state()
    assert resumed
    state, _, _ = run.initial_state()
    batch = data_lib.to_global(next(run.train_iterator()), run.batch_sharding)
    np.testing.assert_allclose(
      _logits(run, state, batch), _logits(gene_run, learned, batch), rtol=2e-5, atol=2e-5
    )
  for r in (run, gene_run):
    r.checkpointer.close()


def test_eight_layer_tleg_expands_to_twelve_on_the_descendants_shardings(genes, text_dir, tmp_path):
  c = _config(text_dir, 'role=descendant,gene=tleg,depth=12')
  c.init.pretrained = str(genes['tleg'])
  run = train.Run(c, tmp_path / 'd12')
  with jax.set_mesh(run.mesh):
    state, _, _ = run.initial_state()
  kernel = state.params['blocks']['mlp']['fc1']['kernel']
  assert kernel.shape[0] == 12
  assert kernel.sharding == run.setup.shardings.params['blocks']['mlp']['fc1']['kernel']
  run.checkpointer.close()


def test_incompatible_descendant_is_refused_naming_the_param(genes, text_dir, tmp_path):
  c = _config(text_dir, 'role=descendant,gene=tleg,depth=4')
  c.init.pretrained = str(genes['tleg'])
  c.model.dim = 48
  match = r"tleg_expand: param 'blocks/\S+' has shape \(4, [^)]*\) in this model but the learngene"
  with pytest.raises(config_lib.ConfigError, match=match):
    train.run(c, tmp_path / 'wide')
  assert not (tmp_path / 'wide').exists() or not any((tmp_path / 'wide').iterdir())


def test_four_layer_descendant_beats_random_init_after_fifty_steps(text_dir, tmp_path):
  """Teacher (150 steps) -> TLEG learngene distilled from it (150 steps, α = 1) -> 4-layer
  descendants: after 50 steps their train loss is below random init's (mean of 3 seeds)."""
  teacher = _config(text_dir, 'role=teacher', steps=150, checkpoint_every=150, log_every=50)
  train.run(teacher, tmp_path / 'teacher')
  gene = _config(text_dir, 'role=gene,gene=tleg', steps=150, checkpoint_every=150, log_every=50)
  gene.train.distill.teacher = str(tmp_path / 'teacher')
  train.run(gene, tmp_path / 'gene')
  final = {}
  for role in ('descendant', 'scratch'):
    losses = []
    for seed in range(3):
      c = _config(text_dir, f'role={role},gene=tleg,depth=4', steps=50, checkpoint_every=50)
      c.seeds.update(dict(init=seed, data=seed, dropout=seed))
      if role == 'descendant':
        c.init.pretrained = str(tmp_path / 'gene')
      losses.append(train.run(c, tmp_path / f'{role}_{seed}').summary['final']['train/loss'])
    final[role] = losses
  print('train loss after 50 steps:', final)
  assert np.mean(final['descendant']) < np.mean(final['scratch'])
