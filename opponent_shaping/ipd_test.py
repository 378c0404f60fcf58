"""Tests for the IPD: payoff table, mirrored observations, memory-1 states, fixed policies."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opponent_shaping import ipd

GAME = ipd.IPD(episode_length=16)


def _step(a0, a1, state=None):
  state = GAME.reset(jax.random.key(0)) if state is None else state
  return GAME.step(state, jnp.array([[a0], [a1]], dtype=jnp.int32), jax.random.key(1))


@pytest.mark.parametrize(
  'a0,a1,expected',
  [(0, 0, (-1.0, -1.0)), (0, 1, (-3.0, 0.0)), (1, 0, (0.0, -3.0)), (1, 1, (-2.0, -2.0))],
  ids=['CC', 'CD', 'DC', 'DD'],
)
def test_payoff_table(a0, a1, expected):
  _, rewards, info = _step(a0, a1)
  assert rewards.dtype == jnp.float32 and rewards.shape == (2,)
  np.testing.assert_array_equal(rewards, expected)
  np.testing.assert_array_equal(info['cooperate'], [a0 == 0, a1 == 0])
  assert info['cooperate'].dtype == jnp.float32


def test_reset_observation_is_zeros_and_t_is_zero():
  state = GAME.reset(jax.random.key(3))
  obs = GAME.observe(state)
  assert obs.shape == (2, GAME.obs_dim) == (2, 4) and obs.dtype == jnp.float32
  np.testing.assert_array_equal(obs, np.zeros((2, 4)))
  assert state.t.dtype == jnp.int32 and int(state.t) == 0


def test_observation_is_mirrored_last_joint_action():
  state, _, _ = _step(0, 1)  # Agent 1 cooperated, agent 2 defected.
  obs = GAME.observe(state)
  np.testing.assert_array_equal(obs[0], [1, 0, 0, 1])  # [me C, me D, opp C, opp D]
  np.testing.assert_array_equal(obs[1], [0, 1, 1, 0])
  assert int(state.t) == 1
  state, _, _ = _step(1, 1, state)
  np.testing.assert_array_equal(GAME.observe(state), [[0, 1, 0, 1], [0, 1, 0, 1]])
  assert int(state.t) == 2


@pytest.mark.parametrize(
  'a0,a1,state0,state1',
  [(0, 0, 'CC', 'CC'), (0, 1, 'CD', 'DC'), (1, 0, 'DC', 'CD'), (1, 1, 'DD', 'DD')],
)
def test_memory1_state_from_each_view(a0, a1, state0, state1):
  obs = GAME.observe(_step(a0, a1)[0])
  assert ipd.MEMORY1_STATES[int(ipd.memory1_state(obs[0]))] == state0
  assert ipd.MEMORY1_STATES[int(ipd.memory1_state(obs[1]))] == state1


def test_memory1_state_indices_and_batching():
  assert ipd.MEMORY1_STATES == ('start', 'CC', 'CD', 'DC', 'DD')
  rows = jnp.array([[0, 0, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 1]], jnp.float32)
  states = ipd.memory1_state(rows)
  assert states.dtype == jnp.int32
  np.testing.assert_array_equal(states, [0, 1, 2, 3, 4])
  np.testing.assert_array_equal(jax.vmap(ipd.memory1_state)(rows), [0, 1, 2, 3, 4])


def test_fixed_policies_from_each_memory1_state():
  policies = GAME.fixed_policies()
  assert set(policies) == {'always_cooperate', 'always_defect', 'tit_for_tat', 'random'}
  rows = jnp.array([[0, 0, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 1]], jnp.float32)
  keys = jax.random.split(jax.random.key(0), 5)
  act = lambda name: jax.vmap(policies[name])(rows, keys)  # noqa: E731
  np.testing.assert_array_equal(act('always_cooperate'), [[0]] * 5)
  np.testing.assert_array_equal(act('always_defect'), [[1]] * 5)
  # start -> C; then the opponent's last action: CC -> C, CD -> D, DC -> C, DD -> D.
  np.testing.assert_array_equal(act('tit_for_tat'), [[0], [0], [1], [0], [1]])
  assert act('tit_for_tat').dtype == jnp.int32


def test_random_policy_defects_half_the_time():
  actions = jax.vmap(GAME.fixed_policies()['random'], in_axes=(None, 0))(
    jnp.zeros(4), jax.random.split(jax.random.key(0), 4000)
  )
  assert actions.shape == (4000, 1) and set(np.unique(actions)) == {0, 1}
  assert abs(float(jnp.mean(actions)) - 0.5) < 0.03


@functools.partial(jax.jit, static_argnums=(0, 1))
def _episode_returns(name0, name1, key):
  """Returns float32[2] summed over one episode of fixed policy name0 (seat 1) vs name1 (seat 2)."""
  policies = GAME.fixed_policies()

  def one_step(state, key):
    key0, key1, key_step = jax.random.split(key, 3)
    obs = GAME.observe(state)
    actions = jnp.stack([policies[name0](obs[0], key0), policies[name1](obs[1], key1)])
    state, rewards, _ = GAME.step(state, actions, key_step)
    return state, rewards

  key_reset, key_steps = jax.random.split(key)
  state, rewards = jax.lax.scan(
    one_step, GAME.reset(key_reset), jax.random.split(key_steps, GAME.episode_length)
  )
  return jnp.sum(rewards, axis=0), state.t


def test_scanned_episodes_of_fixed_policies():
  key = jax.random.key(0)
  # TFT vs always-defect: CD once (-3, 0), then DD for 15 steps (-2 each).
  returns, t = _episode_returns('tit_for_tat', 'always_defect', key)
  np.testing.assert_array_equal(returns, [-3.0 - 2.0 * 15, -2.0 * 15])
  assert int(t) == 16
  # TFT vs TFT cooperates throughout; always-cooperate is exploited at 0 vs -3 per step.
  np.testing.assert_array_equal(_episode_returns('tit_for_tat', 'tit_for_tat', key)[0], [-16.0, -16.0])
  np.testing.assert_array_equal(_episode_returns('always_defect', 'always_cooperate', key)[0], [0.0, -48.0])


def test_validation():
  with pytest.raises(ValueError, match='episode_length'):
    ipd.IPD(episode_length=0)
