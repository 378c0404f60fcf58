"""Tests for the Coin Game: pickups and penalties, wrap-around, spawning, owner alternation, observations,
fixed policies and random-play statistics."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opponent_shaping import coin_game
from opponent_shaping.coin_game import CoinGame
from opponent_shaping.coin_game import CoinGameState

RIGHT, LEFT, DOWN, UP = 0, 1, 2, 3
GAME = CoinGame(size=3, episode_length=50)


def _state(player0, player1, coin, owner, t=0):
  return CoinGameState(
    player_positions=jnp.array([player0, player1], dtype=jnp.int32),
    coin_position=jnp.array(coin, dtype=jnp.int32),
    coin_owner=jnp.array(owner, dtype=jnp.int32),
    t=jnp.array(t, dtype=jnp.int32),
  )


# The game is hashable, so it is a static argument: one compile per game for all the tests.
_jit_step = jax.jit(CoinGame.step, static_argnums=0)
_jit_observe = jax.jit(CoinGame.observe, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _resets(game, keys):
  return jax.vmap(game.reset)(keys)


def _step(state, a0, a1, key=jax.random.key(0), game=GAME):
  return _jit_step(game, state, jnp.array([[a0], [a1]], dtype=jnp.int32), key)


def test_action_order_and_interface():
  assert coin_game.ACTION_NAMES == ('right', 'left', 'down', 'up')
  assert GAME.num_agents == 2 and GAME.action_dims == (4,) and GAME.obs_dim == 36


def test_own_pickup_pays_one_to_the_owner_only():
  # Agent 1 owns the coin at (0, 1) and steps right onto it; agent 2 moves up from (2, 2) to (1, 2).
  state, rewards, info = _step(_state((0, 0), (2, 2), (0, 1), owner=0, t=5), RIGHT, UP)
  np.testing.assert_array_equal(rewards, [1.0, 0.0])
  np.testing.assert_array_equal(info['own_pickup'], [1.0, 0.0])
  np.testing.assert_array_equal(info['other_pickup'], [0.0, 0.0])
  np.testing.assert_array_equal(state.player_positions, [[0, 1], [1, 2]])
  assert int(state.coin_owner) == 1 and int(state.t) == 6
  assert tuple(state.coin_position.tolist()) not in {(0, 1), (1, 2)}


def test_other_pickup_pays_one_to_the_taker_and_minus_two_to_the_owner():
  # Same moves, but the coin belongs to agent 2.
  state, rewards, info = _step(_state((0, 0), (2, 2), (0, 1), owner=1), RIGHT, UP)
  np.testing.assert_array_equal(rewards, [1.0, -2.0])
  np.testing.assert_array_equal(info['own_pickup'], [0.0, 0.0])
  np.testing.assert_array_equal(info['other_pickup'], [1.0, 0.0])
  assert int(state.coin_owner) == 0
  # Seats swapped: agent 2 moves up from (2, 2) onto agent 1's coin at (1, 2).
  state, rewards, info = _step(_state((0, 0), (2, 2), (1, 2), owner=0), LEFT, UP)
  np.testing.assert_array_equal(rewards, [-2.0, 1.0])
  np.testing.assert_array_equal(info['other_pickup'], [0.0, 1.0])
  assert int(state.coin_owner) == 1


@pytest.mark.parametrize('owner,expected', [(0, (-1.0, 1.0)), (1, (1.0, -1.0))])
def test_simultaneous_pickup(owner, expected):
  # Both step onto (0, 1): both get +1 and the owner also pays -2.
  state, rewards, info = _step(_state((0, 0), (0, 2), (0, 1), owner=owner), RIGHT, LEFT)
  np.testing.assert_array_equal(rewards, expected)
  np.testing.assert_array_equal(info['own_pickup'], [owner == 0, owner == 1])
  np.testing.assert_array_equal(info['other_pickup'], [owner == 1, owner == 0])
  assert int(state.coin_owner) == 1 - owner
  assert tuple(state.coin_position.tolist()) != (0, 1)


def test_no_pickup_keeps_coin_and_owner():
  state, rewards, info = _step(_state((0, 0), (2, 2), (1, 1), owner=1, t=3), RIGHT, LEFT)
  np.testing.assert_array_equal(rewards, [0.0, 0.0])
  np.testing.assert_array_equal(info['own_pickup'] + info['other_pickup'], [0.0, 0.0])
  np.testing.assert_array_equal(state.coin_position, [1, 1])
  assert int(state.coin_owner) == 1 and int(state.t) == 4


@pytest.mark.parametrize(
  'action,expected0,expected1',
  [
    (UP, (3, 0), (2, 3)),  # top edge wraps to the bottom row
    (LEFT, (0, 3), (3, 2)),  # left edge wraps to the right column
    (DOWN, (1, 0), (0, 3)),  # bottom edge wraps to the top row
    (RIGHT, (0, 1), (3, 0)),  # right edge wraps to the left column
  ],
)
def test_wrap_around_at_each_edge(action, expected0, expected1):
  game = CoinGame(size=4)
  state, rewards, _ = _step(_state((0, 0), (3, 3), (1, 2), owner=0), action, action, game=game)
  np.testing.assert_array_equal(state.player_positions, [expected0, expected1])
  assert state.player_positions.dtype == jnp.int32
  np.testing.assert_array_equal(rewards, [0.0, 0.0])


def test_players_may_share_a_cell():
  state, rewards, _ = _step(_state((0, 0), (0, 2), (2, 2), owner=0), RIGHT, LEFT)
  np.testing.assert_array_equal(state.player_positions, [[0, 1], [0, 1]])
  np.testing.assert_array_equal(rewards, [0.0, 0.0])


def test_observation_channels_hand_computed():
  # size 3, cells row*3 + col: agent 1 at cell 0, agent 2 at cell 5, agent 2's coin at cell 7.
  obs = _jit_observe(GAME, _state((0, 0), (1, 2), (2, 1), owner=1))
  assert obs.shape == (2, 36) and obs.dtype == jnp.float32
  expected = np.zeros((2, 4, 9), np.float32)
  expected[0, 0, 0] = expected[0, 1, 5] = expected[0, 3, 7] = 1.0  # me, other, other's coin
  expected[1, 0, 5] = expected[1, 1, 0] = expected[1, 2, 7] = 1.0  # me, other, my coin
  np.testing.assert_array_equal(obs, expected.reshape(2, 36))


def test_observation_swap_on_random_states():
  states = _resets(GAME, jax.random.split(jax.random.key(1), 4096))
  obs = np.asarray(jax.jit(jax.vmap(GAME.observe))(states)).reshape(4096, 2, 4, 9)
  np.testing.assert_array_equal(obs[:, 1], obs[:, 0][:, [1, 0, 3, 2]])
  np.testing.assert_array_equal(obs[:, :, :2].sum(axis=-1), np.ones((4096, 2, 2)))  # one cell per player
  np.testing.assert_array_equal(obs[:, :, 2:].sum(axis=(-1, -2)), np.ones((4096, 2)))  # one coin, one owner


def test_reset_distribution():
  states = _resets(GAME, jax.random.split(jax.random.key(2), 4096))
  cells = np.asarray(states.player_positions[..., 0] * 3 + states.player_positions[..., 1])
  coin = np.asarray(states.coin_position[:, 0] * 3 + states.coin_position[:, 1])
  assert states.player_positions.dtype == jnp.int32 and states.coin_owner.dtype == jnp.int32
  assert np.all(cells[:, 0] != cells[:, 1]) and np.all(coin != cells[:, 0]) and np.all(coin != cells[:, 1])
  np.testing.assert_allclose(np.bincount(coin, minlength=9) / 4096, np.full(9, 1 / 9), atol=0.02)
  np.testing.assert_allclose(np.bincount(cells[:, 0], minlength=9) / 4096, np.full(9, 1 / 9), atol=0.02)
  assert abs(float(jnp.mean(states.coin_owner)) - 0.5) < 0.03
  np.testing.assert_array_equal(states.t, np.zeros(4096))


def test_new_coin_is_uniform_over_free_cells():
  # Agent 1 picks up the coin at (0, 1); agent 2 lands on (1, 1): cells 1 and 4 are occupied.
  state = _state((0, 0), (1, 2), (0, 1), owner=0)
  actions = jnp.array([[RIGHT], [LEFT]], dtype=jnp.int32)
  next_states, _, _ = jax.jit(jax.vmap(GAME.step, in_axes=(None, None, 0)))(
    state, actions, jax.random.split(jax.random.key(3), 8192)
  )
  coin = np.asarray(next_states.coin_position[:, 0] * 3 + next_states.coin_position[:, 1])
  frequencies = np.bincount(coin, minlength=9) / 8192
  assert frequencies[1] == 0 and frequencies[4] == 0
  np.testing.assert_allclose(np.delete(frequencies, [1, 4]), np.full(7, 1 / 7), atol=0.02)


POLICY_NAMES = ('always_cooperate', 'always_defect', 'random')


@functools.partial(jax.jit, static_argnums=(0, 1))
def _rollouts(game, num_envs, policy_ids, key):
  """num_envs episodes of fixed policies POLICY_NAMES[policy_ids[i]] in seat i.

  The policies are picked with lax.switch on traced ids, so every pairing shares one compile per game.
  Returns per-step (state before, state after, rewards, info), each with leading [num_envs, episode_length].
  """
  policies = [game.fixed_policies()[name] for name in POLICY_NAMES]

  def episode(key):
    key_reset, key_steps = jax.random.split(key)

    def one_step(state, key):
      key0, key1, key_step = jax.random.split(key, 3)
      obs = game.observe(state)
      actions = jnp.stack(
        [
          jax.lax.switch(policy_ids[0], policies, obs[0], key0),
          jax.lax.switch(policy_ids[1], policies, obs[1], key1),
        ]
      )
      next_state, rewards, info = game.step(state, actions, key_step)
      return next_state, (state, next_state, rewards, info)

    _, trajectory = jax.lax.scan(
      one_step, game.reset(key_reset), jax.random.split(key_steps, game.episode_length)
    )
    return trajectory

  return jax.vmap(episode)(jax.random.split(key, num_envs))


@functools.lru_cache(maxsize=None)
def _play(name0, name1, size=3, num_envs=4096, seed=0):
  """numpy trajectories of `name0` vs `name1` on a size x size board, 50-step episodes (cached)."""
  ids = jnp.array([POLICY_NAMES.index(name0), POLICY_NAMES.index(name1)], dtype=jnp.int32)
  return jax.device_get(
    _rollouts(CoinGame(size=size, episode_length=50), num_envs, ids, jax.random.key(seed))
  )


def _own_coin_ratio(info):
  own, other = np.sum(info['own_pickup']), np.sum(info['other_pickup'])
  return own / (own + other)


@pytest.mark.parametrize('size,num_envs', [(3, 4096), (2, 512)])
def test_rollout_invariants_coin_never_on_a_player_owner_alternates_on_pickup_only(size, num_envs):
  before, after, rewards, info = _play('random', 'random', size, num_envs)
  for state in (before, after):
    assert not np.any(np.all(state.player_positions == state.coin_position[..., None, :], axis=-1))
  picked = (info['own_pickup'] + info['other_pickup']).sum(-1) > 0
  np.testing.assert_array_equal(after.coin_owner, np.where(picked, 1 - before.coin_owner, before.coin_owner))
  coin_moved = np.any(after.coin_position != before.coin_position, axis=-1)
  np.testing.assert_array_equal(coin_moved, picked)  # a new coin only after a pickup, and always elsewhere
  np.testing.assert_array_equal(after.t - before.t, np.ones((num_envs, 50)))
  np.testing.assert_array_equal(after.t[:, -1], np.full(num_envs, 50))
  assert np.all((rewards == 0) | picked[..., None])  # only pickups pay
  assert 0.1 < np.mean(picked) < 0.6


def test_random_play_statistics():
  _, _, rewards, info = _play('random', 'random')
  assert rewards.shape == (4096, 50, 2) and rewards.dtype == np.float32
  np.testing.assert_allclose(np.mean(rewards, axis=(0, 1)), [0.0, 0.0], atol=0.02)
  assert abs(_own_coin_ratio(info) - 0.5) < 0.02


def test_always_defect_self_play_takes_half_its_own_coins():
  _, _, rewards, info = _play('always_defect', 'always_defect')
  assert abs(_own_coin_ratio(info) - 0.5) < 0.02
  np.testing.assert_allclose(np.mean(rewards, axis=(0, 1)), [0.0, 0.0], atol=0.02)


def test_always_cooperate_self_play_takes_only_its_own_coins():
  _, _, rewards, info = _play('always_cooperate', 'always_cooperate')
  assert np.sum(info['other_pickup']) == 0 and np.sum(info['own_pickup']) > 0
  assert _own_coin_ratio(info) == 1.0
  assert np.all(rewards >= 0)


def test_always_defect_exploits_always_cooperate():
  # Seat 1 defects: it takes coins of both colours, the cooperator pays -2 for each of its coins taken.
  _, _, rewards, info = _play('always_defect', 'always_cooperate')
  assert np.sum(info['other_pickup'][..., 1]) == 0 and np.sum(info['other_pickup'][..., 0]) > 0
  mean_reward = np.mean(rewards, axis=(0, 1))
  assert mean_reward[0] > 0.3 and mean_reward[1] < 0


@functools.partial(jax.jit, static_argnums=(0, 1))
def _policy_batch(game, name, obs_row, keys):
  return jax.vmap(game.fixed_policies()[name], in_axes=(None, 0))(obs_row, keys)


def _policy_actions(name, obs_row, game=GAME, num_keys=256):
  return np.asarray(_policy_batch(game, name, obs_row, jax.random.split(jax.random.key(8), num_keys)))


@pytest.mark.parametrize('owner', [0, 1])
def test_always_defect_steps_along_a_shortest_torus_path(owner):
  # 3x3: coin at (0, 2) is one step left of (0, 0) through the wrap.
  obs = _jit_observe(GAME, _state((0, 0), (2, 2), (0, 2), owner=owner))[0]
  np.testing.assert_array_equal(_policy_actions('always_defect', obs), np.full((256, 1), LEFT))
  # 5x5: (3, 0) is two steps up through the wrap, three down: always up.
  game = CoinGame(size=5)
  obs = _jit_observe(game, _state((0, 0), (4, 4), (3, 0), owner=owner))[0]
  np.testing.assert_array_equal(_policy_actions('always_defect', obs, game), np.full((256, 1), UP))
  # 5x5: (2, 1) is reached by right or down first; both are chosen, nothing else.
  obs = _jit_observe(game, _state((0, 0), (4, 4), (2, 1), owner=owner))[0]
  assert set(_policy_actions('always_defect', obs, game)[:, 0]) == {RIGHT, DOWN}


def test_always_cooperate_takes_its_coin_and_never_steps_on_the_others():
  mine = _jit_observe(GAME, _state((0, 0), (2, 2), (0, 1), owner=0))[0]
  np.testing.assert_array_equal(_policy_actions('always_cooperate', mine), np.full((256, 1), RIGHT))
  others = _jit_observe(GAME, _state((0, 0), (2, 2), (0, 1), owner=1))[0]
  assert set(_policy_actions('always_cooperate', others)[:, 0]) == {LEFT, DOWN, UP}
  # Seat 2 reads its own row: agent 2 at (2, 2) next to agent 1's coin at (2, 0) (right, through the wrap).
  seat2 = _jit_observe(GAME, _state((0, 0), (2, 2), (2, 0), owner=0))[1]
  assert set(_policy_actions('always_cooperate', seat2)[:, 0]) == {LEFT, DOWN, UP}
  np.testing.assert_array_equal(_policy_actions('always_defect', seat2), np.full((256, 1), RIGHT))


def test_random_policy_is_uniform_over_moves():
  actions = _policy_actions('random', jnp.zeros(36), num_keys=4000)
  assert actions.dtype == np.int32
  np.testing.assert_allclose(np.bincount(actions[:, 0], minlength=4) / 4000, np.full(4, 0.25), atol=0.03)


def test_fixed_policies_are_the_same_objects_every_call():
  assert set(GAME.fixed_policies()) == {'always_defect', 'always_cooperate', 'random'}
  assert GAME.fixed_policies()['always_defect'] is CoinGame(size=3).fixed_policies()['always_defect']


@pytest.mark.parametrize('size', [1, 0, -3, 2.5, True])
def test_size_validation(size):
  with pytest.raises(ValueError, match='`size`'):
    CoinGame(size=size)


def test_smallest_board_has_a_free_cell():
  states = _resets(CoinGame(size=2), jax.random.split(jax.random.key(9), 256))
  cells = states.player_positions[..., 0] * 2 + states.player_positions[..., 1]
  coin = states.coin_position[:, 0] * 2 + states.coin_position[:, 1]
  assert bool(jnp.all((cells[:, 0] != cells[:, 1]) & (coin != cells[:, 0]) & (coin != cells[:, 1])))
