"""`python -m initlab.diagnostics` (and its alias `initlab.diagnose`): `main` in-process with
absl flags, the error path as a subprocess, and `run` end to end on a small zoo ResNet.

The ResNet uses the deterministic ZerO scheme: on CPU each random initializer costs an XLA
compile per param shape, which would dominate this test."""

import os
import subprocess
import sys

from absl import flags
import jax
import numpy as np
import pytest

from initlab import models
from initlab.diagnostics import cli as diagnose

PNGS = ('correlation.png', 'forward_variance.png', 'gradient_variance.png', 'jacobian_spectrum.png')
TABLES = ('diagnostics.md', 'diagnostics.json', 'stages.csv', 'summary.csv')


@pytest.fixture
def parse_flags():
  def parse(*args):
    flags.FLAGS(['diagnostics', *args])

  yield parse
  flags.FLAGS.unparse_flags()


def test_main_writes_plots_and_table(parse_flags, tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)
  parse_flags(
    '--model=mlp',
    '--depth=3',
    '--width=16',
    '--model_opt=input_shape=(8, 8, 1)',
    '--init=he_normal,zero_hadamard',
    '--batch_size=8',
    '--jacobian_examples=2',
    '--out=diag',
  )
  diagnose.main(['diagnostics'])
  monkeypatch.chdir(tmp_path.parent)  # a relative --out is resolved at the entry
  printed = capsys.readouterr()
  out = tmp_path / 'diag'
  assert sorted(os.listdir(out)) == sorted(PNGS + TABLES)
  assert 'Mode: **train**' in (out / 'diagnostics.md').read_text()
  assert 'train mode' in printed.err
  assert '| he_normal | 4 |' in printed.out and '| zero_hadamard | 4 |' in printed.out
  assert '| 1 | hidden/0 |' in printed.out
  assert '[2/2] zero_hadamard' in printed.err and 'batch (8, 64)' in printed.err


@pytest.mark.parametrize('module', ['initlab.diagnostics', 'initlab.diagnose'])
def test_unknown_init_exits_nonzero_listing_valid_names(tmp_path, module):
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      module,
      '--model=mlp',
      '--init=he_normal,not_a_scheme',
      f'--out={tmp_path}',
    ],
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode != 0
  assert any(l.startswith(f'{module}: --init=') for l in proc.stderr.splitlines())
  assert "unknown scheme(s) ['not_a_scheme']" in proc.stderr
  assert ('deprecated' in proc.stderr) == (module == 'initlab.diagnose')
  assert 'valid names:' in proc.stderr and 'orthogonal' in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not os.listdir(tmp_path)


def test_config_errors_name_the_valid_choices():
  with pytest.raises(ValueError, match='valid names: .*he_normal'):
    diagnose.parse_schemes('he_normal,nope')
  with pytest.raises(ValueError, match="no option 'widht'; valid options"):
    diagnose.model_config('mlp', opts=['widht=3'])
  with pytest.raises(ValueError, match='unknown'):
    diagnose.model_config('not_a_model')
  assert diagnose.model_config('vit', depth=1, width=32).dim == 32
  assert diagnose.model_config('resnet20', width=0.5).width == 0.5
  assert diagnose.model_config(
    'mlp', opts=['input_shape=(8, 8, 1)', 'activation=tanh']
  ).input_shape == (8, 8, 1)


def test_random_batch_follows_the_registry_input_spec():
  key = jax.random.key(0)
  mlp = diagnose.model_config('mlp', opts=['input_shape=(4, 4, 2)'])
  assert diagnose.random_batch(mlp, 3, 7, key).shape == (3, 32)
  assert diagnose.random_batch(diagnose.model_config('vit'), 2, 7, key).shape == (
    2,
    *diagnose.model_config('vit').input_shape,
  )
  lm = diagnose.model_config('transformer_lm')
  tokens = diagnose.random_batch(lm, 2, 7, key)
  assert tokens.shape == (2, 7) and tokens.dtype.kind == 'i'
  assert 0 <= int(tokens.min()) and int(tokens.max()) < lm.vocab_size
  assert models.input_spec(lm) == models.InputSpec((None,), vocab_size=lm.vocab_size)


def test_run_zoo_resnet(tmp_path):
  results, table = diagnose.run(
    'resnet',
    diagnose.parse_schemes('zero_hadamard'),
    out=str(tmp_path),
    depth=8,
    width=0.25,
    batch_size=4,
    jacobian_examples=1,
    plot=False,
    log=lambda s: None,
    train=False,
  )
  d = results['zero_hadamard']
  assert d.train is False and 'Mode: **eval**' in table
  assert d.names == ('stem', 'stage1/blocks/0', 'stage2/blocks/0', 'stage3/blocks/0', 'head')
  assert '| zero_hadamard | 5 |' in table and sorted(os.listdir(tmp_path)) == sorted(TABLES)
  assert np.all(np.isfinite(d.q)) and np.all(np.isfinite(d.grad_q)) and np.all(d.q > 0)
  # ZerO: 3x3 convs are identities on the centre tap and BN (eval, at init) is x/sqrt(1+eps),
  # so each stride-1 residual block relu(x + x) multiplies q by 4 (closed form).
  assert np.isclose(d.q[1], 4 * d.q[0], rtol=1e-4)
  assert d.jacobian_from == 'input' and d.jacobian_shape == (10, 32 * 32 * 3)
  assert d.jacobian_sv.shape == (1, 10) and np.all(np.isfinite(d.jacobian_sv))
