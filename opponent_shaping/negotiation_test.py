"""Tests for the Negotiation Game: proportional shares, waste, utilities, observations, fixed policies."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opponent_shaping import negotiation
from opponent_shaping.negotiation import Negotiation
from opponent_shaping.negotiation import NegotiationState

GAME = Negotiation(episode_length=50, max_quantity=5)
_jit_step = jax.jit(Negotiation.step, static_argnums=0)
_jit_observe = jax.jit(Negotiation.observe, static_argnums=0)


def _state(utilities0, last0=(0, 0, 0), last1=(0, 0, 0)):
  utilities0 = jnp.array(utilities0, dtype=jnp.float32)
  return NegotiationState(
    utilities=jnp.stack([utilities0, 6.0 - utilities0]),
    last_proposals=jnp.array([last0, last1], dtype=jnp.int32),
    t=jnp.zeros((), dtype=jnp.int32),
  )


def _step(state, proposals0, proposals1, game=GAME):
  return _jit_step(game, state, jnp.array([proposals0, proposals1], dtype=jnp.int32), jax.random.key(0))


def test_interface():
  assert GAME.num_agents == 2 and GAME.action_dims == (6, 6, 6) and GAME.obs_dim == 12
  assert Negotiation(max_quantity=2).action_dims == (3, 3, 3)


def test_hand_computed_shares_and_rewards():
  # u1 = [5, 1, 5], u2 = [1, 5, 1]; q1 = [5, 2, 0], q2 = [5, 3, 0]:
  # item 0 halves, item 1 goes 2/5 vs 3/5, item 2 is wasted (both zero).
  # r1 = 0.5·5 + 0.4·1 + 0 = 2.9; r2 = 0.5·1 + 0.6·5 + 0 = 3.5; max_sum = 5 + 5 + 5 = 15.
  state, rewards, info = _step(_state([5, 1, 5]), [5, 2, 0], [5, 3, 0])
  np.testing.assert_allclose(rewards, [2.9, 3.5], rtol=1e-6)
  assert rewards.dtype == jnp.float32 and rewards.shape == (2,)
  assert info['max_sum'].shape == () and info['max_sum'].dtype == jnp.float32
  assert float(info['max_sum']) == 15.0
  np.testing.assert_array_equal(state.last_proposals, [[5, 2, 0], [5, 3, 0]])
  assert int(state.t) == 1


def test_a_sole_claimant_gets_the_whole_item():
  # q1 = [1, 0, 0], q2 = [0, 0, 4] under u1 = [1, 5, 5]: agent 1 gets item 0 (worth 1 to it), item 1 is wasted,
  # agent 2 gets item 2 (worth 1 to it).
  _, rewards, _ = _step(_state([1, 5, 5]), [1, 0, 0], [0, 0, 4])
  np.testing.assert_array_equal(rewards, [1.0, 1.0])


def test_proportional_shares_and_waste():
  shares = negotiation.proportional_shares(jnp.array([[5, 1, 0], [0, 3, 0]]))
  np.testing.assert_allclose(shares, [[1.0, 0.25, 0.0], [0.0, 0.75, 0.0]])
  assert shares.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(shares)))


def test_both_zero_wastes_every_item():
  _, rewards, info = _step(_state([5, 1, 1]), [0, 0, 0], [0, 0, 0])
  np.testing.assert_array_equal(rewards, [0.0, 0.0])
  assert float(info['max_sum']) == 15.0


def test_observation_layout_and_mirroring():
  # Row i: [u_i / 5, my last proposal / 5, opponent's last proposal / 5, pool].
  obs = _jit_observe(GAME, _state([5, 1, 5], last0=(5, 2, 0), last1=(1, 3, 4)))
  assert obs.shape == (2, 12) and obs.dtype == jnp.float32
  np.testing.assert_allclose(obs[0], [1.0, 0.2, 1.0, 1.0, 0.4, 0.0, 0.2, 0.6, 0.8, 1, 1, 1], rtol=1e-6)
  np.testing.assert_allclose(obs[1], [0.2, 1.0, 0.2, 0.2, 0.6, 0.8, 1.0, 0.4, 0.0, 1, 1, 1], rtol=1e-6)


def test_reset_has_zero_last_proposals_and_high_contrast_utilities():
  state = jax.jit(GAME.reset)(jax.random.key(1))
  np.testing.assert_array_equal(state.last_proposals, np.zeros((2, 3)))
  assert int(state.t) == 0
  obs = _jit_observe(GAME, state)
  np.testing.assert_array_equal(obs[:, 3:9], np.zeros((2, 6)))
  np.testing.assert_array_equal(obs[:, 9:], np.ones((2, 3)))
  np.testing.assert_allclose(obs[:, :3] * 5, state.utilities, rtol=1e-6)


POLICY_NAMES = ('cooperative', 'greedy', 'random')


@functools.partial(jax.jit, static_argnums=(0, 1))
def _rollouts(game, num_envs, policy_ids, key):
  """num_envs episodes of POLICY_NAMES[policy_ids[i]] in seat i: per-step (utilities, actions, rewards, info)."""
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
      return next_state, (state.utilities, actions, rewards, info)

    _, trajectory = jax.lax.scan(
      one_step, game.reset(key_reset), jax.random.split(key_steps, game.episode_length)
    )
    return trajectory

  return jax.vmap(episode)(jax.random.split(key, num_envs))


@functools.lru_cache(maxsize=None)
def _play(name0, name1):
  ids = jnp.array([POLICY_NAMES.index(name0), POLICY_NAMES.index(name1)], dtype=jnp.int32)
  return jax.device_get(_rollouts(GAME, 256, ids, jax.random.key(2)))


def test_utilities_are_high_contrast_and_resampled_every_round():
  utilities, _, _, info = _play('random', 'random')  # [256, 50, 2, 3]
  assert set(np.unique(utilities[..., 0, :])) == {1.0, 5.0}
  np.testing.assert_array_equal(utilities[..., 0, :] + utilities[..., 1, :], np.full((256, 50, 3), 6.0))
  assert abs(np.mean(utilities[..., 0, :] == 5.0) - 0.5) < 0.02
  np.testing.assert_array_equal(info['max_sum'], np.full((256, 50), 15.0))
  # Independent draws each round: the whole utility vector repeats with probability 1/8.
  repeats = np.all(utilities[:, 1:] == utilities[:, :-1], axis=(-1, -2))
  assert abs(np.mean(repeats) - 1 / 8) < 0.02


def test_greedy_self_play_collects_sixty_percent_of_max_sum():
  utilities, actions, rewards, info = _play('greedy', 'greedy')
  np.testing.assert_array_equal(actions, np.full((256, 50, 2, 3), 5))
  # Every item is split 50/50: (r1 + r2) / max_sum = 0.5·(5 + 1)·3 / 15 = 0.6 in every round.
  np.testing.assert_allclose(rewards.sum(-1) / info['max_sum'], np.full((256, 50), 0.6), rtol=1e-6)
  np.testing.assert_allclose(rewards, 0.5 * utilities.sum(-1), rtol=1e-6)  # r_i = Σ_j 0.5·u_ij
  np.testing.assert_allclose(rewards.sum(-1), np.full((256, 50), 9.0), rtol=1e-6)


def test_cooperative_self_play_collects_all_of_max_sum():
  utilities, actions, rewards, info = _play('cooperative', 'cooperative')
  np.testing.assert_array_equal(actions, np.where(utilities == 5.0, 5, 0))
  np.testing.assert_allclose(rewards.sum(-1) / info['max_sum'], np.full((256, 50), 1.0), rtol=1e-6)
  # Each agent gets 5 per item it values: 7.5 per round in expectation.
  assert abs(np.mean(rewards) - 7.5) < 0.1


def test_greedy_exploits_cooperative():
  # The greedy agent takes all of its own items and half of the other's: r_greedy = 5·k + 0.5·1·(3 - k) for k
  # items it values 5; the cooperator gets 0.5·5 per item it values 5.
  utilities, _, rewards, _ = _play('greedy', 'cooperative')
  high0 = np.sum(utilities[..., 0, :] == 5.0, axis=-1)
  np.testing.assert_allclose(rewards[..., 0], 5.0 * high0 + 0.5 * (3 - high0), rtol=1e-6)
  np.testing.assert_allclose(rewards[..., 1], 2.5 * (3 - high0), rtol=1e-6)


def test_random_policy_covers_all_quantities():
  _, actions, _, _ = _play('random', 'random')
  frequencies = np.bincount(actions.reshape(-1), minlength=6) / actions.size
  np.testing.assert_allclose(frequencies, np.full(6, 1 / 6), atol=0.01)
  assert actions.dtype == np.int32


@pytest.mark.parametrize(
  'kwargs,name', [({'max_quantity': 0}, 'max_quantity'), ({'episode_length': 0}, 'episode_length')]
)
def test_validation(kwargs, name):
  with pytest.raises(ValueError, match=f'`{name}`'):
    Negotiation(**kwargs)
