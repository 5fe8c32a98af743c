"""The process around a run: multi-host start-up and JAX's persistent compilation cache.

(Where arrays live, the mesh and every sharding, is `initlab.sharding`.)
"""

from __future__ import annotations

import logging
import os

import jax

import initlab

DISTRIBUTED_ENV = 'INITLAB_DISTRIBUTED'
CACHE_ENV = 'INITLAB_COMPILATION_CACHE'
_COORDINATOR_ENVS = ('JAX_COORDINATOR_ADDRESS', 'COORDINATOR_ADDRESS')


def maybe_initialize_distributed() -> bool:
  """Calls `jax.distributed.initialize()` when the environment asks for multi-host.

  Asked for by `INITLAB_DISTRIBUTED=1` (cluster auto-detection: TPU pods, SLURM, ...) or a
  coordinator address in `JAX_COORDINATOR_ADDRESS` (then `JAX_NUM_PROCESSES` and
  `JAX_PROCESS_ID` are read by JAX too). Must run before any other JAX call; idempotent.
  """
  wanted = os.environ.get(DISTRIBUTED_ENV, '') not in ('', '0', 'false', 'False')
  wanted = wanted or any(os.environ.get(k) for k in _COORDINATOR_ENVS)
  if not wanted or jax.distributed.is_initialized():
    return False
  initlab.size_cpu_worker_pool()
  kwargs = {}
  address = next((os.environ[k] for k in _COORDINATOR_ENVS if os.environ.get(k)), None)
  if address:
    kwargs['coordinator_address'] = address
    for env, arg in (('JAX_NUM_PROCESSES', 'num_processes'), ('JAX_PROCESS_ID', 'process_id')):
      if os.environ.get(env):
        kwargs[arg] = int(os.environ[env])
  jax.distributed.initialize(**kwargs)
  logging.info(
    'jax.distributed: process %d of %d, %d local / %d global devices',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True


def enable_compilation_cache() -> str | None:
  """Turns on JAX's persistent compilation cache unless it is configured already.

  Runs of a study compile the same train/eval steps (and each scheme's init for every
  seed): cached, only the first run pays the compile time. The directory is
  `$INITLAB_COMPILATION_CACHE`, else `$XDG_CACHE_HOME/initlab/jax` (~/.cache/...); set
  `INITLAB_COMPILATION_CACHE=0` to leave the cache off. Returns the directory in use.
  """
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  path = os.environ.get(CACHE_ENV)
  if path in ('0', 'false', 'False', 'off'):
    return None
  if not path:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    path = os.path.join(base, 'initlab', 'jax')
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.2)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return path
