"""Every test sees a fake 8-device CPU platform (set before jax is imported)."""

import os

os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Room in XLA:CPU's worker pool for every all-reduce participant of the 8 fake devices, as
# `import initlab` does (`initlab.size_cpu_worker_pool`); set here too because jax.devices()
# may create the CPU client before initlab is imported. Inherited by the tests' subprocesses.
os.environ.setdefault('PJRT_NPROC', '128')

import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

from initlab import config as config_lib  # noqa: E402
from initlab import data  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def devices():
  assert len(jax.devices()) == 8, 'conftest must set up 8 fake CPU devices'
  return jax.devices()


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfds'))
  data.prepare('digits', path)
  return path


@pytest.fixture
def tiny_config(data_dir):
  """One quickstart run (he_normal, 1 seed), 12 steps, logging every step."""

  def make(**train):
    config = config_lib.load(REPO / 'configs' / 'quickstart.py', 'smoke')
    config.init.compare = ()
    config.init.name = 'he_normal'
    config.seeds.num = 1
    config.data.data_dir = data_dir
    config.diagnostics_at_init = False
    config.model.depth = 2
    config.model.width = 32
    config.train.update(
      dict(
        steps=12, batch_size=16, log_every=1, eval_every=0, checkpoint_every=4, keep_checkpoints=5
      )
    )
    config.train.update(train)
    return config

  return make
