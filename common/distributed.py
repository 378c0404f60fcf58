"""Multi-process start-up and data-parallel sharding helpers.

Typical use at the top of a training script::

    from common import distributed

    distributed.maybe_initialize()          # before any other JAX call
    mesh = distributed.make_mesh()          # 1-D mesh, axis 'data'
    seeds = distributed.shard_leading(jnp.arange(num_seeds), mesh)
    params = distributed.replicate(params, mesh)
    out = jax.jit(jax.vmap(train_one_seed))(seeds)   # split over devices

Everything works on a single device (CPU or one GPU): the mesh then has one
device, any leading size is accepted and sharding is a no-op placement.

Only stable public JAX APIs are used (``jax.sharding.Mesh``,
``NamedSharding``, ``PartitionSpec``, ``jax.device_put``,
``jax.distributed``). Importing this module does not initialise any JAX
backend.
"""

import functools
import logging
import math
import os
import threading
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

__all__ = [
  'make_mesh',
  'maybe_initialize',
  'multihost_env_present',
  'num_devices',
  'replicate',
  'shard_leading',
]

_log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- #
# Multi-process launch detection and initialisation.
# --------------------------------------------------------------------------- #


def _get(environ: Mapping[str, str], key: str) -> str:
  """Returns ``environ[key]`` stripped, or ``''`` if unset."""
  return str(environ.get(key, '') or '').strip()


def _int_above_one(environ: Mapping[str, str], key: str) -> bool:
  """Whether ``environ[key]`` parses as an integer > 1 (False if not int)."""
  try:
    return int(_get(environ, key)) > 1
  except ValueError:
    return False


def _detect_launcher(environ: Mapping[str, str]) -> Optional[str]:
  """Returns a description of the multi-process launch found, or None."""
  for key in ('JAX_COORDINATOR_ADDRESS', 'COORDINATOR_ADDRESS'):
    if _get(environ, key):
      return f'{key}={_get(environ, key)}'
  if _get(environ, 'SLURM_JOB_ID') and _int_above_one(environ, 'SLURM_NTASKS'):
    return f'SLURM job with SLURM_NTASKS={_get(environ, "SLURM_NTASKS")}'
  if _int_above_one(environ, 'OMPI_COMM_WORLD_SIZE'):
    return f'Open MPI with OMPI_COMM_WORLD_SIZE={_get(environ, "OMPI_COMM_WORLD_SIZE")}'
  hosts = [h for h in _get(environ, 'TPU_WORKER_HOSTNAMES').split(',') if h.strip()]
  if len(hosts) > 1:
    return f'TPU pod slice with {len(hosts)} TPU_WORKER_HOSTNAMES'
  if _get(environ, 'MEGASCALE_COORDINATOR_ADDRESS'):
    return 'multislice TPU (MEGASCALE_COORDINATOR_ADDRESS)'
  return None


def multihost_env_present(environ: Mapping[str, str] = os.environ) -> bool:
  """Whether the environment shows a multi-process (multi-host) launch.

  Returns True when any of these is found (empty values count as unset)::

      JAX_COORDINATOR_ADDRESS or COORDINATOR_ADDRESS is set
      SLURM_JOB_ID is set and SLURM_NTASKS > 1
      OMPI_COMM_WORLD_SIZE > 1
      TPU_WORKER_HOSTNAMES lists more than one host (comma separated)
      MEGASCALE_COORDINATOR_ADDRESS is set

  * ``JAX_COORDINATOR_ADDRESS``: the ``host:port`` of process 0, read by
    ``jax.distributed.initialize()`` itself when no address is passed (for
    manual launches, together with the process count and id).
    ``COORDINATOR_ADDRESS`` is accepted as an alias used by some launch
    scripts.
  * SLURM: ``srun`` sets ``SLURM_JOB_ID`` and ``SLURM_NTASKS`` (the number
    of tasks, i.e. processes). JAX's SLURM auto-detection then reads
    ``SLURM_PROCID``, ``SLURM_LOCALID`` and ``SLURM_STEP_NODELIST``. A job
    with a single task is a plain single-process run. Note that an
    ``salloc`` shell with several tasks also matches; start the processes
    with ``srun``.
  * Open MPI: ``mpirun``/``mpiexec`` set ``OMPI_COMM_WORLD_SIZE`` (the
    number of ranks), ``OMPI_COMM_WORLD_RANK`` and
    ``OMPI_COMM_WORLD_LOCAL_RANK``; a size of 1 is a single process.
  * Cloud TPU pod slices: ``TPU_WORKER_HOSTNAMES`` is the comma separated
    list of the slice's hosts; a single-host slice (one name) needs no
    distributed initialisation.
  * Multislice TPU (Megascale/DCN): ``MEGASCALE_COORDINATOR_ADDRESS`` is
    the address of the coordinator shared by all slices.

  Values that are not integers (e.g. ``SLURM_NTASKS=abc``) count as absent.

  Args:
      environ: The environment to inspect; ``os.environ`` by default. Pass a
          dict to test or to decide for another process.

  Returns:
      True if one of the signals above is present, else False.
  """
  return _detect_launcher(environ) is not None


def _manual_launch_kwargs(environ: Mapping[str, str]) -> dict:
  """Arguments JAX does not read from the environment by itself.

  A hand-made cluster sets ``JAX_COORDINATOR_ADDRESS`` (which JAX reads) plus
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (which it does not);
  ``COORDINATOR_ADDRESS`` is passed on as the address when JAX's own name is
  absent.
  """
  kwargs = {}
  if not _get(environ, 'JAX_COORDINATOR_ADDRESS') and _get(environ, 'COORDINATOR_ADDRESS'):
    kwargs['coordinator_address'] = _get(environ, 'COORDINATOR_ADDRESS')
  for key, arg in (('JAX_NUM_PROCESSES', 'num_processes'), ('JAX_PROCESS_ID', 'process_id')):
    if _get(environ, key):
      kwargs[arg] = int(_get(environ, key))
  return kwargs


_init_lock = threading.Lock()
_initialized = False  # Set once maybe_initialize() has initialised.


def maybe_initialize(
  environ: Mapping[str, str] = os.environ,
  *,
  initialize: Optional[Callable[[], Any]] = None,
) -> bool:
  """Initialises ``jax.distributed`` iff a multi-process launch is detected.

  Behaviour::

      already initialised by an earlier call -> nothing, return True
      not multihost_env_present(environ)     -> nothing, return False
      otherwise                               -> initialize(); return True

  ``initialize`` defaults to ``jax.distributed.initialize`` called without
  arguments, which auto-detects the coordinator address, process count and
  process id for the launchers listed in :func:`multihost_env_present`. If
  ``jax.distributed`` was already initialised by other code it is not
  initialised again. The function is idempotent and thread-safe: once it
  has initialised, later calls do nothing and return True. If
  ``initialize`` raises, the error propagates and a later call may retry.

  Call it at the very start of the program, before any other JAX call
  (``jax.devices()``, creating arrays, ...): ``jax.distributed`` must be
  initialised before JAX's backends start. This function itself does not
  start a backend.

  Args:
      environ: The environment to inspect; ``os.environ`` by default.
      initialize: Zero-argument function doing the initialisation, for tests
          or to pass explicit arguments (e.g. with ``functools.partial``).
          Defaults to ``jax.distributed.initialize``.

  Returns:
      True if the distributed runtime was initialised by this call or an
      earlier one (i.e. this is a multi-process run), False if no
      multi-process launch was detected and nothing was done.
  """
  global _initialized
  with _init_lock:
    if _initialized:
      return True
    launcher = _detect_launcher(environ)
    if launcher is None:
      return False
    if initialize is None:
      is_initialized = getattr(jax.distributed, 'is_initialized', None)
      if is_initialized is not None and is_initialized():
        _log.info('jax.distributed already initialised (%s).', launcher)
        _initialized = True
        return True
      initialize = functools.partial(jax.distributed.initialize, **_manual_launch_kwargs(environ))
    _log.info('Initialising jax.distributed: detected %s.', launcher)
    initialize()
    _initialized = True
    return True


# --------------------------------------------------------------------------- #
# Mesh and sharding helpers.
# --------------------------------------------------------------------------- #


def make_mesh(
  axis_name: str = 'data',
  devices: Optional[Sequence[Any]] = None,
) -> Mesh:
  """Builds a 1-D device mesh for data (or seed) parallelism.

  The mesh has shape ``(len(devices),)`` and the single axis ``axis_name``.
  In a multi-process run ``jax.devices()`` lists the devices of all
  processes, so the mesh is global.

  Args:
      axis_name: Name of the mesh axis, used in ``PartitionSpec``s.
      devices: Devices to use, in order; all devices (``jax.devices()``) by
          default. E.g. ``jax.devices()[:1]`` for a single-device mesh.

  Returns:
      A ``jax.sharding.Mesh`` with one axis of size ``len(devices)``.

  Raises:
      ValueError: If ``axis_name`` is empty or ``devices`` is empty.
  """
  if not isinstance(axis_name, str) or not axis_name:
    raise ValueError(f'axis_name must be a non-empty string, got {axis_name!r}.')
  if devices is None:
    devices = jax.devices()
  device_array = np.empty(len(devices), dtype=object)
  device_array[:] = list(devices)
  if device_array.size == 0:
    raise ValueError('make_mesh needs at least one device, got none.')
  return Mesh(device_array, (axis_name,))


def num_devices(mesh: Mesh) -> int:
  """Returns the total number of devices in ``mesh`` (all processes)."""
  return int(mesh.devices.size)


def _axis_size(mesh: Mesh, axis_name: str) -> int:
  if not isinstance(mesh, Mesh):
    raise TypeError(f'mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}.')
  if axis_name not in mesh.axis_names:
    raise ValueError(f'Mesh has no axis {axis_name!r}; its axes are {tuple(mesh.axis_names)}.')
  return int(mesh.shape[axis_name])


def _leaf_name(path) -> str:
  name = jax.tree_util.keystr(path)
  return name if name else '<root>'


def shard_leading(tree: Any, mesh: Mesh, axis_name: str = 'data') -> Any:
  """Splits the leading axis of every leaf of ``tree`` over ``mesh``.

  Each leaf is placed with ``NamedSharding(mesh, PartitionSpec(axis_name))``,
  so for ``N = mesh.shape[axis_name]`` devices a leaf of shape
  ``(B, ...)`` is split into ``N`` blocks of shape ``(B / N, ...)``, block
  ``i`` living on the ``i``-th device of the mesh axis. ``jax.jit`` of a
  function ``jax.vmap``-ed over that axis (seeds, or a batch) then runs each
  block on its own device. On a one-device mesh every ``B`` is accepted.

  All leaves are checked before anything is transferred. In a multi-process
  run every process must pass the same, full (global) values.

  Args:
      tree: A pytree of arrays (JAX or NumPy) with a leading axis each.
      mesh: The device mesh, e.g. from :func:`make_mesh`.
      axis_name: The mesh axis to split the leading axis over.

  Returns:
      A pytree of the same structure of ``jax.Array`` sharded along their
      leading axis.

  Raises:
      ValueError: If a leaf is a scalar, or if a leaf's leading size is not
          divisible by the number of devices; the one-line message names the
          leaf's path, its leading size, the device count and the fix. Also
          if ``mesh`` has no axis ``axis_name``.
      TypeError: If ``mesh`` is not a ``jax.sharding.Mesh``.
  """
  n = _axis_size(mesh, axis_name)
  leaves_with_path, _ = jax.tree_util.tree_flatten_with_path(tree)
  for path, leaf in leaves_with_path:
    shape = np.shape(leaf)
    if not shape:
      raise ValueError(
        f'shard_leading: leaf {_leaf_name(path)} is a scalar; every '
        f'leaf needs a leading (seeds/batch) axis to split over the '
        f'{n} device(s) of mesh axis {axis_name!r} (use replicate() '
        f'for values shared by all devices).'
      )
    size = shape[0]
    if size % n:
      suggestion = max(n, math.ceil(size / n) * n)
      raise ValueError(
        f'shard_leading: leaf {_leaf_name(path)} has leading size '
        f'{size}, which is not divisible by the {n} devices of mesh '
        f'axis {axis_name!r}; use a multiple of {n} seeds (or batch '
        f'size), e.g. {suggestion}.'
      )
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(axis_name)))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a full copy of every leaf of ``tree`` on every device of ``mesh``.

  Uses ``NamedSharding(mesh, PartitionSpec())`` (fully replicated), e.g. for
  parameters shared by all seeds or for a data-parallel model. In a
  multi-process run every process must pass the same values.

  Args:
      tree: A pytree of arrays or scalars.
      mesh: The device mesh, e.g. from :func:`make_mesh`.

  Returns:
      A pytree of the same structure of replicated ``jax.Array``.

  Raises:
      TypeError: If ``mesh`` is not a ``jax.sharding.Mesh``.
  """
  if not isinstance(mesh, Mesh):
    raise TypeError(f'mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}.')
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
