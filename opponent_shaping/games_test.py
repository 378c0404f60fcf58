"""Tests for the game registry, the common game interface and the throughput measure."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.errors import UsageError
from opponent_shaping import games
from opponent_shaping.coin_game import CoinGame
from opponent_shaping.ipd import IPD
from opponent_shaping.negotiation import Negotiation

SMALL_GAMES = [
  IPD(episode_length=4),
  CoinGame(size=3, episode_length=4),
  Negotiation(episode_length=4, max_quantity=3),
]


def test_registry():
  assert games.GAMES == {'ipd': IPD, 'coin_game': CoinGame, 'negotiation': Negotiation}
  assert games.make_game('ipd') == IPD(episode_length=16)
  assert games.make_game('coin_game', size=4, episode_length=10) == CoinGame(size=4, episode_length=10)
  assert games.make_game('negotiation', max_quantity=2) == Negotiation(episode_length=50, max_quantity=2)


@pytest.mark.parametrize(
  'name,hint', [('coin_gmae', "did you mean 'coin_game'?"), ('IPD', None), ('chess', None)]
)
def test_unknown_game_is_a_one_line_value_error(name, hint):
  with pytest.raises(ValueError) as error:
    games.make_game(name)
  message = str(error.value)
  assert isinstance(error.value, UsageError) and '\n' not in message
  assert f"unknown game '{name}'" in message and 'valid: coin_game, ipd, negotiation' in message
  assert (hint in message) if hint else ('did you mean' not in message)


def test_unknown_argument_is_a_type_error_naming_the_game():
  with pytest.raises(TypeError) as error:
    games.make_game('negotiation', max_quantiy=3)
  message = str(error.value)
  assert isinstance(error.value, UsageError) and '\n' not in message
  assert "game 'negotiation'" in message and "'max_quantiy'" in message
  assert 'valid: episode_length, max_quantity' in message


def test_bad_values_reach_the_game_validation():
  with pytest.raises(ValueError, match='`size`'):
    games.make_game('coin_game', size=1)


@pytest.mark.parametrize('game', SMALL_GAMES, ids=lambda game: type(game).__name__)
def test_game_is_frozen_and_hashable(game):
  assert hash(game) == hash(dataclasses.replace(game)) and game == dataclasses.replace(game)
  assert game != dataclasses.replace(game, episode_length=5)
  with pytest.raises(dataclasses.FrozenInstanceError):
    game.episode_length = 8
  assert game.num_agents == 2 and isinstance(game.obs_dim, int)
  assert isinstance(game.action_dims, tuple) and all(isinstance(d, int) and d >= 2 for d in game.action_dims)


@functools.partial(jax.jit, static_argnums=0)
def _reset_observe_step(game, key):
  key_reset, key_actions, key_step = jax.random.split(key, 3)
  state = game.reset(key_reset)
  actions = games.sample_random_actions(game, key_actions)
  next_state, rewards, info = game.step(state, actions, key_step)
  return state, game.observe(state), actions, next_state, game.observe(next_state), rewards, info


@pytest.mark.parametrize('game', SMALL_GAMES, ids=lambda game: type(game).__name__)
def test_interface_shapes_and_dtypes_under_jit(game):
  # A raw uint32 key (jax.random.PRNGKey) as well as the typed keys used elsewhere.
  state, obs, actions, next_state, next_obs, rewards, info = _reset_observe_step(game, jax.random.PRNGKey(0))
  heads = len(game.action_dims)
  assert actions.shape == (2, heads) and actions.dtype == jnp.int32
  assert np.all((actions >= 0) & (actions < np.array(game.action_dims)))
  for observation in (obs, next_obs):
    assert observation.shape == (2, game.obs_dim) and observation.dtype == jnp.float32
  assert rewards.shape == (2,) and rewards.dtype == jnp.float32
  assert info and all(value.dtype == jnp.float32 for value in info.values())
  assert state.t.shape == () and state.t.dtype == jnp.int32 and int(state.t) == 0 and int(next_state.t) == 1
  assert jax.tree.structure(state) == jax.tree.structure(next_state)
  for leaf, next_leaf in zip(jax.tree.leaves(state), jax.tree.leaves(next_state)):
    assert leaf.shape == next_leaf.shape and leaf.dtype == next_leaf.dtype  # a valid scan carry


@functools.partial(jax.jit, static_argnums=0)
def _all_fixed_actions(game, obs_row, key):
  return {name: policy(obs_row, key) for name, policy in game.fixed_policies().items()}


@pytest.mark.parametrize('game', SMALL_GAMES, ids=lambda game: type(game).__name__)
def test_fixed_policies_return_valid_actions(game):
  obs = game.observe(game.reset(jax.random.key(1)))
  actions = _all_fixed_actions(game, obs[1], jax.random.key(2))
  assert 'random' in actions and len(actions) >= 3
  for name, action in actions.items():
    assert action.shape == (len(game.action_dims),) and action.dtype == jnp.int32, name
    assert np.all((action >= 0) & (action < np.array(game.action_dims))), name


@pytest.mark.parametrize('game', SMALL_GAMES, ids=lambda game: type(game).__name__)
def test_env_steps_per_second_runs_a_vmapped_scan(game):
  steps_per_second = games.env_steps_per_second(game, 8, jax.random.key(3), repeats=1)
  assert isinstance(steps_per_second, float) and math.isfinite(steps_per_second) and steps_per_second > 0
