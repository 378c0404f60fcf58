"""Tests of the circular replay buffer: wrap-around, sampling only filled slots, n-step windows against a Python
reference that keeps the whole history, and prioritized sampling."""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.errors import ConfigError
from common.rl import replay
from common.rl import targets


def _step(t, envs=2):
  """Vector step `t`: value 10 * t + env in every env column."""
  return {'x': jnp.arange(envs, dtype=jnp.int32) + 10 * t, 'y': jnp.full((envs, 3), float(t))}


def test_add_wraps_and_counts():
  buffer = replay.init(6, _step(0))  # 2 envs -> 3 rows.
  assert replay.num_rows(buffer) == 3 and replay.num_envs(buffer) == 2
  assert buffer.data['y'].shape == (3, 2, 3)
  for t in range(5):
    buffer = replay.add(buffer, _step(t))
  # Rows 0, 1 were overwritten by steps 3, 4; row 2 still holds step 2; the head is at row 2.
  np.testing.assert_array_equal(buffer.data['x'], [[30, 31], [40, 41], [20, 21]])
  assert int(buffer.pos) == 2 and int(buffer.count) == 3 and int(replay.size(buffer)) == 6


def test_init_rejects_bad_capacity():
  with pytest.raises(ConfigError, match='multiple of the number of envs'):
    replay.init(5, _step(0))
  with pytest.raises(ConfigError, match='leading env axis'):
    replay.init(4, {'a': jnp.zeros((2,)), 'b': jnp.zeros((3,))})


def test_sample_only_filled_slots_uniformly():
  buffer = replay.init(10, _step(0))  # 5 rows.
  for t in range(2):
    buffer = replay.add(buffer, _step(t + 1))
  rows, envs = jax.jit(replay.sample_indices, static_argnums=2)(buffer, jax.random.key(0), 4000)
  assert set(np.asarray(rows).tolist()) == {0, 1}
  counts = collections.Counter(zip(np.asarray(rows).tolist(), np.asarray(envs).tolist()))
  assert set(counts) == {(0, 0), (0, 1), (1, 0), (1, 1)}
  assert all(900 < c < 1100 for c in counts.values())  # 1000 expected each.
  batch = replay.sample(buffer, jax.random.key(0), 4000)
  np.testing.assert_array_equal(batch['x'], 10 * (np.asarray(rows) + 1) + np.asarray(envs))


def _reference_n_step(history, start, newest, n, gamma):
  """Python n-step return over one env's full history (list of (reward, done, terminal)) from time `start`,
  never reading past time `newest`. Returns (return, discount, last time used)."""
  ret, disc, last = np.float32(0.0), np.float32(1.0), start
  for t in range(start, min(start + n, newest + 1)):
    reward, done, terminal = history[t]
    ret = np.float32(ret + disc * np.float32(reward))
    disc = np.float32(disc * np.float32(gamma))
    last = t
    if done:
      if terminal:
        disc = np.float32(0.0)
      break
  return ret, disc, last


@functools.partial(jax.jit, static_argnums=4)
def _windows(buffer, start_rows, start_envs, gamma, n):
  """n-step reductions of the windows at the given slots, and the time stamp of the last step used."""
  window, in_range = replay.window_rows(buffer, start_rows, n)
  column = start_envs[:, None]
  data = buffer.data
  got = targets.n_step_window(
    data['reward'][window, column],
    data['done'][window, column],
    data['terminal'][window, column],
    gamma,
    n,
    in_range,
  )
  last_row = jnp.take_along_axis(window, got.last[:, None], axis=1)[:, 0]
  return got, data['time'][last_row, start_envs]


@pytest.mark.parametrize('steps', [3, 5, 13])  # Not full, exactly full, wrapped more than twice.
def test_n_step_windows_match_python_reference(steps):
  envs, rows, n, gamma = 2, 5, 3, 0.9
  rng = np.random.default_rng(steps)
  rewards = rng.normal(size=(steps, envs)).astype(np.float32)
  dones = rng.random((steps, envs)) < 0.3
  terminals = dones & (rng.random((steps, envs)) < 0.5)
  example = {
    'reward': jnp.zeros((envs,)),
    'done': jnp.zeros((envs,), bool),
    'terminal': jnp.zeros((envs,), bool),
  }
  example['time'] = jnp.zeros((envs,), jnp.int32)
  buffer = replay.init(rows * envs, example)
  for t in range(steps):
    step = {
      'reward': rewards[t],
      'done': dones[t],
      'terminal': terminals[t],
      'time': np.full(envs, t, np.int32),
    }
    buffer = replay.add(buffer, step)
  # Every slot as a start (one fixed shape, one compile); only the filled ones are checked.
  start_rows = np.repeat(np.arange(rows), envs)
  start_envs = np.tile(np.arange(envs), rows)
  got, last_time = _windows(buffer, start_rows, start_envs, gamma, n)
  data = buffer.data
  filled = int(buffer.count) * envs
  start_rows, start_envs = start_rows[:filled], start_envs[:filled]
  for b, (row, env) in enumerate(zip(start_rows, start_envs)):
    start = int(data['time'][row, env])
    history = list(zip(rewards[:, env], dones[:, env], terminals[:, env]))
    ret, disc, last = _reference_n_step(history, start, steps - 1, n, gamma)
    np.testing.assert_allclose(got.reward[b], ret, rtol=1e-6, atol=1e-7)  # Fused code may use FMAs.
    np.testing.assert_allclose(got.discount[b], disc, rtol=1e-6, atol=1e-7)
    assert int(last_time[b]) == last


def test_window_never_crosses_write_head():
  buffer = replay.init(4, {'t': jnp.zeros((1,), jnp.int32)})  # 4 rows, 1 env.
  for t in range(6):  # Rows hold times [4, 5, 2, 3]; the head is row 2 (oldest).
    buffer = replay.add(buffer, {'t': jnp.array([t], jnp.int32)})
  window, in_range = replay.window_rows(buffer, jnp.arange(4), 3)
  np.testing.assert_array_equal(window, [[0, 1, 2], [1, 2, 3], [2, 3, 0], [3, 0, 1]])
  # From time 4 (row 0): times 4, 5, then row 2 is time 2 -> stop. From the oldest row 2: all in order.
  np.testing.assert_array_equal(in_range, [[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]])


def test_prioritized_sampling_is_proportional():
  buffer = replay.init(8, {'x': jnp.zeros((2,))}, prioritized=True)  # 4 rows.
  for _ in range(3):
    buffer = replay.add(buffer, {'x': jnp.zeros((2,))})
  assert float(buffer.max_priority) == 1.0
  np.testing.assert_array_equal(buffer.priorities, [[1, 1], [1, 1], [1, 1], [0, 0]])
  priorities = jnp.array([1.0, 4.0, 9.0, 16.0, 25.0, 36.0])
  buffer = replay.update_priorities(
    buffer, jnp.array([0, 0, 1, 1, 2, 2]), jnp.array([0, 1, 0, 1, 0, 1]), priorities
  )
  assert float(buffer.max_priority) == 36.0
  sample = jax.jit(replay.sample_prioritized, static_argnums=2)
  rows, envs, probs = sample(buffer, jax.random.key(1), 9100, 0.5)
  assert int(jnp.max(rows)) <= 2  # Row 3 is unfilled.
  flat = np.asarray(rows) * 2 + np.asarray(envs)
  expected = np.sqrt(np.asarray(priorities)) / np.sum(np.sqrt(np.asarray(priorities)))  # [1..6] / 21
  np.testing.assert_allclose(np.bincount(flat, minlength=6) / flat.size, expected, atol=2e-3)  # Stratified.
  np.testing.assert_allclose(probs, expected[flat], rtol=1e-5)
  with pytest.raises(ConfigError, match='prioritized=True'):
    replay.sample_prioritized(replay.init(2, {'x': jnp.zeros((1,))}), jax.random.key(0), 2, 1.0)
