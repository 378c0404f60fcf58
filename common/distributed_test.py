"""Tests for common/distributed.py.

Single-device behaviour is tested in-process on a one-device mesh. Behaviour
on several devices is tested in a subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (the flag only takes
effect if set before JAX starts its CPU backend, hence the subprocess); the
subprocess prints a JSON object of findings that the test asserts on.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np
import pytest

from common import distributed

# Root of the monorepo (the directory holding `common/`).
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- #
# multihost_env_present
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
  'environ',
  [
    {'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234'},
    {'COORDINATOR_ADDRESS': '10.0.0.1:1234'},
    {'SLURM_JOB_ID': '42', 'SLURM_NTASKS': '2'},
    {'SLURM_JOB_ID': '42', 'SLURM_NTASKS': '16', 'SLURM_PROCID': '3'},
    {'OMPI_COMM_WORLD_SIZE': '4', 'OMPI_COMM_WORLD_RANK': '0'},
    {'TPU_WORKER_HOSTNAMES': 't1v-n-0,t1v-n-1'},
    {'TPU_WORKER_HOSTNAMES': 'a, b, c'},
    {'MEGASCALE_COORDINATOR_ADDRESS': '10.0.0.2:8080'},
    {'PATH': '/bin', 'OMPI_COMM_WORLD_SIZE': '2'},
  ],
)
def test_multihost_env_present(environ):
  assert distributed.multihost_env_present(environ)


@pytest.mark.parametrize(
  'environ',
  [
    {},
    {'PATH': '/bin', 'HOME': '/root'},
    {'JAX_COORDINATOR_ADDRESS': ''},  # empty counts as unset
    {'COORDINATOR_ADDRESS': '   '},
    {'SLURM_JOB_ID': '42', 'SLURM_NTASKS': '1'},  # single task
    {'SLURM_JOB_ID': '42'},  # no task count
    {'SLURM_NTASKS': '8'},  # no job id
    {'SLURM_JOB_ID': '42', 'SLURM_NTASKS': 'many'},  # not an int
    {'OMPI_COMM_WORLD_SIZE': '1'},
    {'TPU_WORKER_HOSTNAMES': 't1v-n-0'},  # single-host slice
    {'TPU_WORKER_HOSTNAMES': 't1v-n-0,'},
    {'MEGASCALE_COORDINATOR_ADDRESS': ''},
  ],
)
def test_multihost_env_absent(environ):
  assert not distributed.multihost_env_present(environ)


def test_multihost_env_present_reads_os_environ_by_default(monkeypatch):
  for key in (
    'JAX_COORDINATOR_ADDRESS',
    'COORDINATOR_ADDRESS',
    'SLURM_JOB_ID',
    'SLURM_NTASKS',
    'OMPI_COMM_WORLD_SIZE',
    'TPU_WORKER_HOSTNAMES',
    'MEGASCALE_COORDINATOR_ADDRESS',
  ):
    monkeypatch.delenv(key, raising=False)
  assert not distributed.multihost_env_present()
  monkeypatch.setenv('OMPI_COMM_WORLD_SIZE', '2')
  assert distributed.multihost_env_present()


# --------------------------------------------------------------------------- #
# maybe_initialize
# --------------------------------------------------------------------------- #


class FakeInitialize:
  def __init__(self, error=None):
    self.calls = 0
    self.error = error

  def __call__(self):
    self.calls += 1
    if self.error is not None:
      raise self.error


@pytest.fixture
def fresh_state(monkeypatch):
  """Resets maybe_initialize's once-only state for the test."""
  monkeypatch.setattr(distributed, '_initialized', False)


MULTIHOST = {'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '4'}


def test_maybe_initialize_without_env_does_nothing(fresh_state):
  fake = FakeInitialize()
  assert distributed.maybe_initialize({}, initialize=fake) is False
  assert distributed.maybe_initialize({'SLURM_NTASKS': '1'}, initialize=fake) is False
  assert fake.calls == 0


def test_maybe_initialize_calls_once_and_is_idempotent(fresh_state):
  fake = FakeInitialize()
  assert distributed.maybe_initialize(MULTIHOST, initialize=fake) is True
  assert fake.calls == 1
  # Later calls do nothing, whatever the environment or function.
  assert distributed.maybe_initialize(MULTIHOST, initialize=fake) is True
  assert distributed.maybe_initialize({}, initialize=fake) is True
  other = FakeInitialize()
  assert distributed.maybe_initialize(MULTIHOST, initialize=other) is True
  assert fake.calls == 1
  assert other.calls == 0


def test_maybe_initialize_after_single_process_call(fresh_state):
  fake = FakeInitialize()
  assert distributed.maybe_initialize({}, initialize=fake) is False
  assert distributed.maybe_initialize(MULTIHOST, initialize=fake) is True
  assert fake.calls == 1


def test_maybe_initialize_failure_propagates_and_can_retry(fresh_state):
  failing = FakeInitialize(error=RuntimeError('coordinator unreachable'))
  with pytest.raises(RuntimeError, match='coordinator unreachable'):
    distributed.maybe_initialize(MULTIHOST, initialize=failing)
  ok = FakeInitialize()
  assert distributed.maybe_initialize(MULTIHOST, initialize=ok) is True
  assert (failing.calls, ok.calls) == (1, 1)


def test_maybe_initialize_default_without_env_touches_nothing(fresh_state):
  # The real jax.distributed.initialize must not be called in this process.
  assert distributed.maybe_initialize({}) is False
  assert not jax.distributed.is_initialized()


# --------------------------------------------------------------------------- #
# Single-device behaviour (in-process).
# --------------------------------------------------------------------------- #


@pytest.fixture
def mesh1():
  return distributed.make_mesh(devices=jax.devices()[:1])


def test_make_mesh_defaults_to_all_devices():
  mesh = distributed.make_mesh()
  assert mesh.axis_names == ('data',)
  assert distributed.num_devices(mesh) == len(jax.devices())
  assert list(mesh.devices.flat) == jax.devices()


def test_make_mesh_single_device_and_axis_name(mesh1):
  assert distributed.num_devices(mesh1) == 1
  mesh = distributed.make_mesh('seeds', devices=jax.devices()[:1])
  assert mesh.axis_names == ('seeds',)
  assert dict(mesh.shape) == {'seeds': 1}


@pytest.mark.parametrize('kwargs', [dict(devices=[]), dict(axis_name='')])
def test_make_mesh_bad_args(kwargs):
  with pytest.raises(ValueError):
    distributed.make_mesh(**kwargs)


@pytest.mark.parametrize('leading', [1, 3, 5])
def test_shard_leading_single_device_any_size(mesh1, leading):
  tree = {
    'seeds': np.arange(leading, dtype=np.int32),
    'obs': jnp.ones((leading, 2, 3)),
    'nested': [np.zeros((leading,), np.float32), None],
  }
  out = distributed.shard_leading(tree, mesh1)
  assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(tree)
  for leaf_in, leaf_out in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(out)):
    assert isinstance(leaf_out, jax.Array)
    np.testing.assert_array_equal(np.asarray(leaf_out), np.asarray(leaf_in))
    assert leaf_out.sharding == NamedSharding(mesh1, PartitionSpec('data'))


def test_shard_leading_single_device_jit_vmap(mesh1):
  seeds = jnp.arange(3)
  f = jax.jit(jax.vmap(lambda s: jax.random.normal(jax.random.key(s), (2,)).sum()))
  np.testing.assert_allclose(
    np.asarray(f(distributed.shard_leading(seeds, mesh1))), np.asarray(f(seeds)), rtol=1e-6
  )


def test_shard_leading_custom_axis_name():
  mesh = distributed.make_mesh('seeds', devices=jax.devices()[:1])
  out = distributed.shard_leading(jnp.arange(3), mesh, axis_name='seeds')
  assert out.sharding.spec == PartitionSpec('seeds')
  with pytest.raises(ValueError, match="no axis 'data'"):
    distributed.shard_leading(jnp.arange(3), mesh)


def test_shard_leading_scalar_leaf_error(mesh1):
  with pytest.raises(ValueError, match=r"leaf \['lr'\] is a scalar"):
    distributed.shard_leading({'x': jnp.ones(2), 'lr': 0.1}, mesh1)


def test_shard_leading_not_a_mesh():
  with pytest.raises(TypeError, match='jax.sharding.Mesh'):
    distributed.shard_leading(jnp.ones(2), mesh=None)


def test_replicate_single_device(mesh1):
  tree = {'w': np.ones((3, 2), np.float32), 'step': 0}
  out = distributed.replicate(tree, mesh1)
  assert out['w'].sharding == NamedSharding(mesh1, PartitionSpec())
  assert out['step'].shape == ()
  np.testing.assert_array_equal(np.asarray(out['w']), tree['w'])


# --------------------------------------------------------------------------- #
# Several devices (subprocess with 2 forced CPU devices).
# --------------------------------------------------------------------------- #


def _run_python(script: str, device_count: int = 2) -> dict:
  """Runs ``script`` in a fresh interpreter on ``device_count`` CPU devices.

  Returns the JSON object printed on the last line of its stdout.
  """
  env = dict(os.environ)
  flag = f'--xla_force_host_platform_device_count={device_count}'
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' ' + flag).strip()
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get('PYTHONPATH')) if p)
  proc = subprocess.run(
    [sys.executable, '-c', textwrap.dedent(script)],
    env=env,
    cwd=str(REPO_ROOT),
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert proc.returncode == 0, f'subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}'
  return json.loads(proc.stdout.strip().splitlines()[-1])


MULTI_DEVICE_SCRIPT = """
import json

import jax
import jax.numpy as jnp
import numpy as np

from common import distributed

found = {}
mesh = distributed.make_mesh()
found["jax_devices"] = len(jax.devices())
found["mesh_devices"] = distributed.num_devices(mesh)

seeds = jnp.arange(4, dtype=jnp.int32)
obs = jnp.arange(4 * 3, dtype=jnp.float32).reshape(4, 3)
sharded = distributed.shard_leading({"seeds": seeds, "obs": obs}, mesh)
shards = sharded["obs"].addressable_shards
found["shard_shapes"] = [list(s.data.shape) for s in shards]
found["shard_devices"] = sorted(s.device.id for s in shards)
found["shard_rows"] = sorted(np.asarray(s.data)[:, 0].tolist()
                             for s in shards)
found["seed_shard_shapes"] = [
    list(s.data.shape) for s in sharded["seeds"].addressable_shards]
found["spec"] = str(sharded["obs"].sharding.spec)


def per_seed(seed, x):
    key = jax.random.fold_in(jax.random.key(0), seed)
    return jnp.tanh(x * jax.random.normal(key, x.shape)).sum()


f = jax.jit(jax.vmap(per_seed))
out_sharded = f(sharded["seeds"], sharded["obs"])
out_plain = jax.vmap(per_seed)(np.asarray(seeds), np.asarray(obs))
found["max_abs_diff"] = float(
    np.max(np.abs(np.asarray(out_sharded) - np.asarray(out_plain))))
found["out_devices"] = len(out_sharded.sharding.device_set)

rep = distributed.replicate({"w": jnp.ones((3, 2))}, mesh)
found["replicated_shapes"] = [
    list(s.data.shape) for s in rep["w"].addressable_shards]
found["replicated_devices"] = len({s.device.id
                                   for s in rep["w"].addressable_shards})

try:
    distributed.shard_leading({"params": {"w": jnp.zeros((3, 2))}}, mesh)
    found["error"] = None
except ValueError as e:
    found["error"] = str(e)

print(json.dumps(found))
"""


@pytest.fixture(scope='module')
def multi_device_findings():
  return _run_python(MULTI_DEVICE_SCRIPT, device_count=2)


def test_two_device_mesh(multi_device_findings):
  f = multi_device_findings
  assert f['jax_devices'] == 2
  assert f['mesh_devices'] == 2


def test_two_device_shard_leading(multi_device_findings):
  f = multi_device_findings
  assert f['shard_shapes'] == [[2, 3], [2, 3]]
  assert f['shard_devices'] == [0, 1]
  # Rows 0-1 on one device and rows 2-3 on the other (first column values).
  assert f['shard_rows'] == [[0.0, 3.0], [6.0, 9.0]]
  assert f['seed_shard_shapes'] == [[2], [2]]
  assert 'data' in f['spec']


def test_two_device_jit_vmap_matches_unsharded(multi_device_findings):
  f = multi_device_findings
  assert f['max_abs_diff'] < 1e-5
  assert f['out_devices'] == 2


def test_two_device_replicate(multi_device_findings):
  f = multi_device_findings
  assert f['replicated_shapes'] == [[3, 2], [3, 2]]
  assert f['replicated_devices'] == 2


def test_two_device_indivisible_error(multi_device_findings):
  msg = multi_device_findings['error']
  assert msg is not None
  assert '\n' not in msg
  assert "['params']['w']" in msg
  assert 'leading size 3' in msg
  assert '2 devices' in msg
  assert 'use a multiple of 2 seeds' in msg


REAL_INIT_SCRIPT = """
import functools
import json
import socket

import jax

from common import distributed

# Nothing has touched a JAX backend yet: maybe_initialize must be usable here.
with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
address = f"localhost:{port}"
init = functools.partial(jax.distributed.initialize, address,
                         num_processes=1, process_id=0)
env = {"JAX_COORDINATOR_ADDRESS": address}
first = distributed.maybe_initialize(env, initialize=init)
second = distributed.maybe_initialize(env, initialize=init)  # no-op
print(json.dumps({
    "first": first,
    "second": second,
    "is_initialized": jax.distributed.is_initialized(),
    "process_count": jax.process_count(),
    "devices": distributed.num_devices(distributed.make_mesh()),
}))
"""


def test_maybe_initialize_with_real_jax_before_any_jax_call():
  f = _run_python(REAL_INIT_SCRIPT, device_count=2)
  assert f == {'first': True, 'second': True, 'is_initialized': True, 'process_count': 1, 'devices': 2}


def test_manual_launch_arguments_jax_does_not_read_itself():
  env = {'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234', 'JAX_NUM_PROCESSES': '4', 'JAX_PROCESS_ID': '2'}
  assert distributed._manual_launch_kwargs(env) == {'num_processes': 4, 'process_id': 2}
  assert distributed._manual_launch_kwargs({'COORDINATOR_ADDRESS': 'h:1'}) == {'coordinator_address': 'h:1'}
  assert distributed._manual_launch_kwargs({}) == {}
