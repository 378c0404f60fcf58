"""Tests for the evaluation measures and the claim criteria (hand-made inputs)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from opponent_shaping import agents as agents_lib
from opponent_shaping import evaluate
from opponent_shaping import train as train_lib


def test_ipd_table_reads_the_memory1_policy():
  agent = agents_lib.TabularAgent(episode_length=4)
  logits = jnp.array([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0], [-1.0, 0.0], [0.0, 0.5]])  # start CC CD DC DD
  table = evaluate.ipd_cooperation_table(agent, {'logits': logits})
  expected = jax.nn.softmax(logits)[:, 0]
  for i, name in enumerate(['start', 'CC', 'CD', 'DC', 'DD']):
    np.testing.assert_allclose(table[name], expected[i], rtol=1e-6)


def test_coin_game_pair_stats_own_coin_ratio():
  # 2 steps x 1 env: seat 0 takes its own coin once and seat 1's coin once; seat 1 takes one of seat 0's.
  info = {
    'own_pickup': jnp.array([[[1.0, 0.0]], [[0.0, 0.0]]]),
    'other_pickup': jnp.array([[[1.0, 1.0]], [[0.0, 0.0]]]),
  }
  traj = train_lib.Trajectory(
    obs=None, t=None, actions=None, logp=None, rewards=jnp.array([[[1.0], [-1.0]], [[0.0], [0.0]]]), info=info
  )
  stats = evaluate.pair_stats('coin_game', traj)
  assert float(stats['own_coin_ratio_0']) == 0.5
  assert float(stats['return_0']) == 0.5 and float(stats['return_1']) == -0.5


def test_ipd_pair_stats_over_whole_episodes():
  # 4 steps x 2 envs, cooperate flags (seat 0, seat 1). Env 0: CC, CC, DC, DD. Env 1: CD, DD, DD, CD.
  coop = jnp.array(
    [
      [[1.0, 1.0], [1.0, 0.0]],
      [[1.0, 1.0], [0.0, 0.0]],
      [[0.0, 1.0], [0.0, 0.0]],
      [[0.0, 0.0], [1.0, 0.0]],
    ]
  )
  traj = train_lib.Trajectory(
    obs=None, t=None, actions=None, logp=None, rewards=jnp.zeros((4, 2, 2)), info={'cooperate': coop}
  )
  stats = evaluate.pair_stats('ipd', traj)
  np.testing.assert_allclose(stats['cooperation_by_step_0'], [1.0, 0.5, 0.0, 0.5])
  assert float(stats['cooperation_0']) == 0.5
  # Transitions (before -> seat 0's next move): env 0: CC->C, CC->D, DC->D; env 1: CD->D, DD->D, DD->C.
  expected = {'CC': (2, 0.5), 'CD': (1, 0.0), 'DC': (1, 0.0), 'DD': (2, 0.5)}
  for name, (visits, p_c) in expected.items():
    assert float(stats[f'after_{name}_visits_0']) == visits, name
    assert float(stats[f'after_{name}_cooperation_0']) == p_c, name


def ipd_config(min_seeds=2):
  return ml_collections.ConfigDict(
    {
      'game': 'ipd',
      'claim_methods': {'naive': 'n', 'aligned': 'a'},
      'acceptance': {
        'naive_max_return': -1.9,
        'aligned_min_return': -1.6,
        'tft_p_cc': 0.8,
        'tft_p_cd': 0.5,
        'tft_min_seeds': min_seeds,
      },
    }
  )


def ipd_eval(p_cc, p_cd, aa_return=-1.3):
  return {
    'self_play': {
      'n': {'return_0': np.array([-2.0, -2.0]), 'return_1': np.array([-2.0, -1.95])},
      'a': {'return_0': np.full(2, aa_return), 'return_1': np.full(2, aa_return)},
    },
    'ipd_table': {'a': {'CC': np.array(p_cc), 'CD': np.array(p_cd)}},
  }


@pytest.mark.parametrize(
  'p_cc,p_cd,min_seeds,tft_pass',
  [
    ([0.9, 0.95], [0.1, 0.4], 2, True),
    ([0.9, 0.7], [0.1, 0.4], 2, False),  # Second seed does not cooperate after CC.
    ([0.9, 0.95], [0.1, 0.6], 2, False),  # Second seed does not retaliate.
    ([0.9, 0.7], [0.1, 0.4], 1, True),
  ],
)
def test_ipd_claims(p_cc, p_cd, min_seeds, tft_pass):
  claims = evaluate.claims_for(ipd_config(min_seeds), ipd_eval(p_cc, p_cd))
  naive, aligned, tft = claims
  assert naive.passed and naive.measured == pytest.approx(-1.9875)
  assert aligned.passed and aligned.measured == pytest.approx(-1.3)
  assert tft.passed is tft_pass
  assert not evaluate.claims_for(ipd_config(), ipd_eval(p_cc, p_cd, aa_return=-1.7))[1].passed
