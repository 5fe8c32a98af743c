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

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope='session')
def devices():
  assert len(jax.devices()) == 8, 'conftest must set up 8 fake CPU devices'
  return jax.devices()
