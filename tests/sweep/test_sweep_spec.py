"""Sweep specs (ids, products, zips, bad specs) and the manifest (claims, kills, races)."""

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from initlab import config as config_lib
from initlab.sweep import spec
from initlab.sweep.manifest import Manifest

REPO = pathlib.Path(__file__).resolve().parents[2]


def base():
  import quickstart  # pylint: disable=g-import-not-at-top  (configs/ on sys.path: conftest)

  return quickstart.get_config('smoke')


def test_product_zip_and_seeds_give_stable_readable_ids():
  config = base()  # init.compare = (he_normal, orthogonal): swept too.
  sweep = {
    'product': {'optimizer.learning_rate': [0.01, 0.1]},
    'zip': {'model.width': [16, 32], 'model.depth': [1, 2]},
    'seeds': 3,
  }
  trials = spec.trials(config, sweep)
  assert len(trials) == 2 * 2 * 2 * 3
  ids = [t.id for t in trials]
  assert len(set(ids)) == len(ids)
  assert ids[0] == 'he_normal,learning_rate=0.01,width=16,depth=1/seed_0'
  assert [t.id for t in spec.trials(base(), sweep)] == ids  # Stable.
  assert [t.hash for t in spec.trials(base(), sweep)] == [t.hash for t in trials]
  t = trials[-1]
  c = t.run_config()
  assert (c.model.width, c.model.depth, c.optimizer.learning_rate) == (32, 2, 0.1)
  assert (c.init.name, c.init.compare, c.seeds.num) == ('orthogonal', (), 1)
  assert (c.seeds.init, c.seeds.data, c.seeds.dropout) == (2, 2, 2)
  config_lib.validate(c)
  # A value that is not a safe directory name: shortened, with a hash of the point.
  odd = spec.trials(base(), {'product': {'name': ['a/b', 'a:b']}, 'seeds': 1})
  assert len({t.group for t in odd}) == 4 and all('/' not in t.group for t in odd)
  assert all(t.group.rsplit('-', 1)[1].isalnum() for t in odd if 'name=' in t.group)


def test_implied_sweep_is_the_study():
  trials = spec.trials(base())
  assert [t.id for t in trials] == [
    'he_normal/seed_0',
    'he_normal/seed_1',
    'orthogonal/seed_0',
    'orthogonal/seed_1',
  ]


@pytest.mark.parametrize(
  'sweep, vmap, match',
  [
    (
      {'product': {'optimizer.learning_rat': [0.1]}},
      False,
      r"optimizer.learning_rat.*Did you mean 'learning_rate'",
    ),
    ({'product': {'optimizer.learning_rate': []}}, False, r"'optimizer.learning_rate'.*empty"),
    (
      {'zip': {'model.width': [8, 16], 'model.depth': [1]}},
      False,
      r'sweep.zip: zipped keys need equal lengths.*model.width',
    ),
    ({'grid': {}}, False, r"unknown field 'grid'"),
    ({'product': {'model.width': [16, 32]}}, True, r"sweep key 'model.width'.*vmap"),
    ({'seeds': 0}, False, r'sweep.seeds'),
  ],
)
def test_bad_specs_are_one_line_errors_naming_the_key(sweep, vmap, match):
  with pytest.raises(config_lib.ConfigError, match=match) as e:
    trials = spec.trials(base(), sweep)
    if vmap:
      spec.check_vmappable(trials)
  assert '\n' not in str(e.value)


def test_killed_claim_is_claimable_again_but_a_held_one_is_not(tmp_path):
  trials = spec.trials(base())
  m = Manifest(tmp_path)
  m.sync(trials)
  first = m.claim([trials[0].id])
  assert first is not None and m.statuses()[trials[0].id] == 'running'
  assert m.claim([trials[0].id]) is None  # Held (by this process's open lock).
  first.release()  # As if the worker died: still 'running', lock free.
  again = m.claim([trials[0].id])
  assert again is not None and m.read()[trials[0].id]['attempts'] == 2
  again.finish('done')
  assert m.claim([trials[0].id]) is None  # Final: never rerun.
  m.sync(trials)  # Re-syncing the same trials keeps their status.
  assert m.statuses()[trials[0].id] == 'done'
  changed = base()
  changed.train.steps = 60  # A longer run: the finished trial must continue.
  m.sync(spec.trials(changed))
  assert m.statuses()[trials[0].id] == 'pending'


WORKER = textwrap.dedent(
  """
  import os, sys, time
  from initlab.sweep.manifest import Manifest
  m = Manifest(sys.argv[1])
  while True:
    c = m.claim()
    if c is None:
      break
    with open(os.path.join(sys.argv[1], 'ran.log'), 'a') as f:
      f.write(c.trial.id + '\\n')
    time.sleep(0.02)
    c.finish('done')
  """
)


def test_racing_workers_never_run_a_trial_twice(tmp_path):
  trials = spec.trials(
    base(), {'product': {'optimizer.learning_rate': [0.1, 0.2, 0.3]}, 'seeds': 8}
  )
  Manifest(tmp_path).sync(trials)
  env = {**os.environ, 'PYTHONPATH': str(REPO)}
  procs = [
    subprocess.Popen([sys.executable, '-c', WORKER, str(tmp_path)], env=env) for _ in range(4)
  ]
  assert [p.wait(timeout=120) for p in procs] == [0] * 4
  ran = (tmp_path / 'ran.log').read_text().split()
  assert sorted(ran) == sorted(t.id for t in trials)  # Each exactly once.
  entries = Manifest(tmp_path).read()
  assert {(e['status'], e['attempts'], e['finished']) for e in entries.values()} == {('done', 1, 1)}
