"""Tests for common.checkpoint: round trips, retention, mismatches, and resume == uninterrupted run."""

import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common import checkpoint
from common.errors import CheckpointMismatchError


@flax.struct.dataclass
class State:
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  rng: jax.Array
  replay: dict  # A ring buffer kept on device, with its insertion counter.


TX = optax.adam(1e-2)


def make_state(seed=0, width=3):
  params = {'w': jnp.ones((width, 2)), 'b': jnp.zeros((2,))}
  replay = {'obs': jnp.zeros((8, width)), 'count': jnp.array(0)}
  return State(
    step=jnp.array(0), params=params, opt_state=TX.init(params), rng=jax.random.PRNGKey(seed), replay=replay
  )


@jax.jit
def train_step(state):
  """Data and noise from (rng, step), so a resumed run sees the same batches."""
  key = jax.random.fold_in(state.rng, state.step)
  x = jax.random.normal(key, (4, state.params['w'].shape[0]))
  loss_fn = lambda p: jnp.mean((x @ p['w'] + p['b'] - 1.0) ** 2)
  grads = jax.grad(loss_fn)(state.params)
  updates, opt_state = TX.update(grads, state.opt_state, state.params)
  slot = state.replay['count'] % state.replay['obs'].shape[0]
  replay = {'obs': state.replay['obs'].at[slot].set(x[0]), 'count': state.replay['count'] + 1}
  return state.replace(
    step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state, replay=replay
  )


def run(workdir, total, *, stop_at=None, every=5):
  """Trains to `total` steps with checkpoints, resuming from the workdir; stops early at `stop_at`."""
  with checkpoint.Checkpointer(workdir, every=every, keep=2) as ckpt:
    state, start = ckpt.restore_or_init(make_state())
    for step in range(start + 1, total + 1):
      state = train_step(state)
      ckpt.save(step, state)
      if step == stop_at:
        break
  return state, start


def assert_trees_equal(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_resume_equals_uninterrupted_run(tmp_path):
  full, start = run(str(tmp_path / 'full'), 20)
  assert start == 0
  _, start = run(str(tmp_path / 'split'), 20, stop_at=10)
  assert start == 0
  resumed, start = run(str(tmp_path / 'split'), 20)
  assert start == 10
  assert int(resumed.step) == 20
  assert_trees_equal(full, resumed)  # Bitwise: params, Adam moments, rng, replay buffer and counter.


def test_same_seed_is_deterministic(tmp_path):
  a, _ = run(str(tmp_path / 'a'), 6, every=100)
  b, _ = run(str(tmp_path / 'b'), 6, every=100)
  assert_trees_equal(a, b)


def test_every_and_keep(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path), every=3, keep=2) as ckpt:
    state = make_state()
    saved = [ckpt.save(step, state) for step in range(1, 11)]
    assert saved == [step % 3 == 0 for step in range(1, 11)]
    assert ckpt.save(10, state, force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [9, 10]
    assert ckpt.latest_step() == 10


def test_round_trip_of_typed_and_raw_keys_and_numpy(tmp_path):
  tree = {
    'raw': jax.random.PRNGKey(3),
    'typed': jax.random.key(4),
    'np': np.arange(5),
    'bf16': jnp.ones((2, 2), jnp.bfloat16),
    'scalar': jnp.array(2.5),
  }
  with checkpoint.Checkpointer(str(tmp_path), every=1) as ckpt:
    ckpt.save(1, tree)
    restored = ckpt.restore(tree)
  assert restored['bf16'].dtype == jnp.bfloat16
  np.testing.assert_array_equal(jax.random.key_data(restored['typed']), jax.random.key_data(tree['typed']))
  restored['typed'], tree['typed'] = (
    jax.random.key_data(restored['typed']),
    jax.random.key_data(tree['typed']),
  )
  assert_trees_equal(tree, restored)


def test_zero_sized_arrays_round_trip(tmp_path):
  """Orbax cannot save zero-sized arrays (MJX's `Data.act` in every Brax/MJX env state): they are saved as
  placeholders and come back with their shapes, from a concrete and from an abstract target."""

  def init():
    return {'act': jnp.zeros((4, 0)), 'np_empty': np.zeros((2, 0, 3), np.int32), 'x': jnp.arange(3.0) + 1}

  state = init()
  with checkpoint.Checkpointer(str(tmp_path), every=1) as ckpt:
    assert ckpt.save(1, state)
    for restored in (ckpt.restore(init()), ckpt.restore_or_init(init)[0]):
      assert restored['act'].shape == (4, 0) and restored['act'].dtype == jnp.float32
      assert restored['np_empty'].shape == (2, 0, 3) and restored['np_empty'].dtype == np.int32
      np.testing.assert_array_equal(restored['x'], [1.0, 2.0, 3.0])


def test_restore_or_init_without_checkpoint(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    state = make_state()
    restored, step = ckpt.restore_or_init(state)
    assert step == 0 and restored is state
    with pytest.raises(FileNotFoundError):
      ckpt.restore(state)


def test_restore_or_init_from_a_function_builds_the_state_only_without_checkpoint(tmp_path):
  calls = []

  def init():
    tree = {'state': make_state(seed=1), 'typed': jax.random.key(4), 'bf16': jnp.ones((2,), jnp.bfloat16)}
    calls.append(isinstance(tree['state'].params['w'], jax.core.Tracer))  # Traced (abstract) or built.
    return tree

  with checkpoint.Checkpointer(str(tmp_path), every=1) as ckpt:
    fresh, step = ckpt.restore_or_init(init)
    assert step == 0 and calls == [False]
    trained = dict(fresh, state=train_step(train_step(fresh['state'])))
    ckpt.save(2, trained)
    restored, step = ckpt.restore_or_init(init)
  # Restored into init's shapes: on resume init only ran under jax.eval_shape's trace, building nothing.
  assert step == 2 and calls == [False, True]
  assert restored['bf16'].dtype == jnp.bfloat16
  assert restored['state'].params['w'].sharding == jax.sharding.SingleDeviceSharding(jax.devices()[0])
  np.testing.assert_array_equal(jax.random.key_data(restored['typed']), jax.random.key_data(trained['typed']))
  assert_trees_equal(restored['state'], trained['state'])


@pytest.mark.parametrize(
  'other', [make_state(width=4), {'params': make_state().params}], ids=['shape', 'structure']
)
def test_mismatch_is_one_clear_line_and_keeps_files(tmp_path, other):
  with checkpoint.Checkpointer(str(tmp_path), every=1) as ckpt:
    ckpt.save(1, make_state())
    ckpt.wait()
    before = sorted(os.listdir(ckpt.directory))
    with pytest.raises(CheckpointMismatchError) as e:
      ckpt.restore_or_init(other)
    message = str(e.value)
    assert 'does not match' in message and '--workdir' in message and '\n' not in message
    assert sorted(os.listdir(ckpt.directory)) == before
    assert_trees_equal(ckpt.restore(make_state()), make_state())


def test_bad_arguments():
  with pytest.raises(ValueError):
    checkpoint.Checkpointer('/tmp/unused', every=0)
