"""Tests for the one-shot capacity game: hand-computed profits, equilibria, optimum, bonuses and errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.errors import ConfigError
from mediator.static_game import CapacityGame

GAME = CapacityGame()
NO_BONUS_NE = sorted(set(itertools.permutations((1, 1, 2, 2))))
# The game is hashable, so it is a static argument: one compile per function for all the tests.
_jit_rewards = jax.jit(CapacityGame.rewards, static_argnums=0)
_jit_fill = jax.jit(CapacityGame.fill, static_argnums=0)


def _rewards(actions, bonuses, kappa=1.0):
  return _jit_rewards(
    GAME, jnp.asarray(actions, jnp.int32), jnp.asarray(bonuses, jnp.float32), jnp.float32(kappa)
  )


def test_hand_computed_profits_oversubscribed():
  # a = (1, 1, 2, 2): Σa = 6 > K = 5, f = 5/6.
  # r(a=1) = 2·1·5/6 − 2·1·1/6 + 0.5·3 = 10/6 − 2/6 + 1.5 = 8/6 + 1.5
  # r(a=2) = 2·2·5/6 − 2·2·1/6 + 0.5·2 = 20/6 − 4/6 + 1.0 = 16/6 + 1.0
  # welfare = 2·(8/6 + 1.5) + 2·(16/6 + 1) = 48/6 + 5 = 13.
  out = _rewards([1, 1, 2, 2], [0.0] * 4)
  np.testing.assert_allclose(float(_jit_fill(GAME, jnp.array([1, 1, 2, 2]))), 5 / 6, rtol=1e-6)
  np.testing.assert_allclose(out['raw'], [8 / 6 + 1.5, 8 / 6 + 1.5, 16 / 6 + 1, 16 / 6 + 1], rtol=1e-6)
  assert bool(out['oversubscribed'])
  assert GAME.welfare((1, 1, 2, 2)) == pytest.approx(13.0)
  np.testing.assert_allclose(GAME.raw_profits_np([1, 1, 2, 2]), out['raw'], rtol=1e-6)


def test_hand_computed_profits_within_capacity_and_all_b():
  # (0, 0, 1, 4): Σa = 5 = K, f = 1: r = 2·a + 0.5·(4 − a) -> (2, 2, 3.5, 8); welfare 15.5.
  out = _rewards([0, 0, 1, 4], [0.0] * 4)
  np.testing.assert_allclose(out['raw'], [2.0, 2.0, 3.5, 8.0], rtol=1e-6)
  assert not bool(out['oversubscribed'])
  # Nobody uses A: f = 1 by definition and r = 0.5·4 = 2 each.
  assert float(_jit_fill(GAME, jnp.zeros(4, jnp.int32))) == 1.0
  np.testing.assert_allclose(_rewards([0, 0, 0, 0], [0.0] * 4)['raw'], [2.0] * 4)
  # Everyone all-A: Σa = 16, f = 5/16: r = 2·4·5/16 − 2·4·11/16 = 2.5 − 5.5 = −3.
  np.testing.assert_allclose(_rewards([4, 4, 4, 4], [0.0] * 4)['raw'], [-3.0] * 4, rtol=1e-6)


def test_jnp_matches_numpy_on_every_joint_action():
  joint = GAME.joint_actions()
  assert joint.shape == (625, 4)
  raw = jax.jit(jax.vmap(GAME.raw_profits))(jnp.asarray(joint, jnp.int32))
  np.testing.assert_allclose(raw, GAME.raw_profits_np(joint), rtol=1e-5, atol=1e-5)


def test_nash_equilibria_without_bonus_all_have_welfare_13():
  equilibria = GAME.pure_nash_equilibria()
  assert equilibria == NO_BONUS_NE
  for a in equilibria:
    assert GAME.welfare(a) == pytest.approx(13.0)
  # Why (1, 1, 2, 2) is stable for a 2-agent: going to 3 gives Σa = 7, f = 5/7 and
  # r = 2·3·5/7 − 2·3·2/7 + 0.5·1 = 18/7 + 0.5 ≈ 3.07 < 16/6 + 1 ≈ 3.67.
  assert GAME.raw_profits_np([1, 1, 2, 3])[3] == pytest.approx(18 / 7 + 0.5)
  assert GAME.raw_profits_np([1, 1, 2, 3])[3] < GAME.raw_profits_np([1, 1, 2, 2])[3]
  # The optimum (0, 0, 1, 4) is not stable: agent 0 gains by moving one unit to A, although that
  # over-subscribes A: Σa = 6, f = 5/6, r_0 = 2·5/6 − 2/6 + 0.5·3 = 8/6 + 1.5 ≈ 2.83 > 2.
  assert GAME.raw_profits_np([1, 0, 1, 4])[0] == pytest.approx(8 / 6 + 1.5)
  assert GAME.raw_profits_np([0, 0, 1, 4])[0] == pytest.approx(2.0)


def test_social_optimum_is_15_5():
  value, optima = GAME.social_optimum()
  assert value == pytest.approx(15.5)
  assert (0, 0, 1, 4) in optima
  # Optima use A exactly to capacity.
  assert all(sum(a) == 5 for a in optima)
  assert (1, 1, 2, 2) not in optima


def test_uniform_bonus_0_2_makes_every_equilibrium_optimal():
  equilibria = GAME.pure_nash_equilibria(0.2)
  assert equilibria == sorted(set(itertools.permutations((1, 1, 1, 2))))
  for a in equilibria:
    out = _rewards(a, [0.2] * 4)
    # B units: 16 − 5 = 11; payout 0.2·11 = 2.2.
    assert float(jnp.sum(out['raw'])) == pytest.approx(15.5, abs=1e-5)
    assert float(out['payout']) == pytest.approx(2.2, abs=1e-5)
    assert float(jnp.sum(out['agents'])) == pytest.approx(17.7, abs=1e-5)
    assert float(out['manager']) == pytest.approx(13.3, abs=1e-5)
  assert GAME.manager_value(0.2) == pytest.approx(13.3)


def test_bonus_0_15_changes_nothing():
  assert GAME.pure_nash_equilibria(0.15) == GAME.pure_nash_equilibria() == NO_BONUS_NE
  assert GAME.pure_nash_equilibria([0.15] * 4) == NO_BONUS_NE
  # Same equilibria, so the manager only loses the payout: 13 − 0.15·10 = 11.5.
  assert GAME.manager_value(0.15) == pytest.approx(11.5)


def test_best_uniform_and_targeted_bonus():
  # Uniform: 0 -> 13.0, 0.1 -> 12.0, 0.2 -> 13.3, 0.3 -> 15.5 − 3.3 = 12.2, 0.5 -> 15.5 − 5.5 = 10.
  assert GAME.best_uniform_bonus() == pytest.approx((0.2, 13.3))
  # Targeted: bonus 0.2 to three agents only; the unique equilibrium gives the unpaid agent 2 A units
  # and the others 1 each: raw 15.5, payout 0.2·3·3 = 1.8, manager 13.7 > 13.3.
  bonuses, value = GAME.best_targeted_bonus()
  assert bonuses == (0.0, 0.2, 0.2, 0.2) and value == pytest.approx(13.7)
  assert GAME.pure_nash_equilibria(bonuses) == [(2, 1, 1, 1)]


def test_incentives_counted_exactly_once():
  a = [0, 1, 3, 4]
  b = [0.1, 0.2, 0.3, 0.5]
  kappa = 2.0
  out = _rewards(a, b, kappa)
  payout = np.array([0.1 * 4, 0.2 * 3, 0.3 * 1, 0.5 * 0])
  # Σa = 8, f = 5/8: r = 2·a·5/8 − 2·a·3/8 + 0.5·(4 − a) = 0.5·a + 0.5·(4 − a) = 2 for every agent.
  np.testing.assert_allclose(out['raw'], [2.0] * 4, rtol=1e-6)
  np.testing.assert_allclose(GAME.payouts(jnp.array(a), jnp.array(b)), payout, rtol=1e-6)
  np.testing.assert_allclose(out['agents'], 2.0 + payout, rtol=1e-6)
  assert float(out['payout']) == pytest.approx(1.3, abs=1e-6)
  assert float(out['manager']) == pytest.approx(8.0 - kappa * 1.3, abs=1e-5)


def test_rewards_vmap_over_batch():
  actions = jnp.array([[1, 1, 2, 2], [0, 0, 1, 4]], jnp.int32)
  bonuses = jnp.full((2, 4), 0.2, jnp.float32)
  out = jax.jit(jax.vmap(GAME.rewards, in_axes=(0, 0, None)))(actions, bonuses, 1.0)
  np.testing.assert_allclose(jnp.sum(out['raw'], axis=-1), [13.0, 15.5], rtol=1e-6)
  np.testing.assert_array_equal(out['oversubscribed'], [True, False])


def test_game_is_hashable_and_levels_become_a_tuple():
  game = CapacityGame(bonus_levels=[0, 0.5])
  assert game.bonus_levels == (0.0, 0.5)
  assert hash(game) == hash(CapacityGame(bonus_levels=(0.0, 0.5)))


@pytest.mark.parametrize(
  'kwargs,match',
  [
    (dict(num_agents=1), 'num_agents'),
    (dict(num_agents=2.0), 'num_agents'),
    (dict(demand=0), 'demand'),
    (dict(capacity=0), 'capacity'),
    (dict(capacity=float('inf')), 'capacity'),
    (dict(cost_a=-1.0), 'cost_a'),
    (dict(cost_b=-0.1), 'cost_b'),
    (dict(lost_sale=-1.0), 'lost_sale'),
    (dict(price=-3.0), 'price'),
    (dict(bonus_levels=(0.0, -0.1)), 'bonus_levels'),
    (dict(bonus_levels=(0.2, 0.1)), 'sorted'),
    (dict(bonus_levels=()), 'bonus_levels'),
  ],
)
def test_config_errors(kwargs, match):
  with pytest.raises(ConfigError, match=match) as err:
    CapacityGame(**kwargs)
  assert isinstance(err.value, ValueError) and '\n' not in str(err.value)


def test_argument_errors():
  with pytest.raises(ConfigError, match='bonuses'):
    GAME.pure_nash_equilibria([0.1, 0.2])
  with pytest.raises(ConfigError, match='bonuses'):
    GAME.pure_nash_equilibria(-0.1)
  with pytest.raises(ConfigError, match='actions'):
    GAME.welfare((0, 0, 5, 0))
