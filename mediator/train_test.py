"""Tests of the manager/factory training on the static capacity game."""

import json
import os

import jax
import numpy as np
import pytest

from common import config as config_lib
from common.errors import ConfigError
from mediator import static_game
from mediator import static_train
from mediator import train

CONFIG = os.path.join(os.path.dirname(__file__), 'configs', 'default.py')


def tiny(**overrides):
  config = config_lib.load_config(CONFIG + ':smoke', lock=False)
  config.update(
    {
      'num_seeds': 2,
      'updates': 40,
      'log_every': 20,
      'checkpoint_every': 20,
      'batch': 32,
      'eval_batch': 64,
      'managers': ('none', 'incentives'),
    }
  )
  config.update(overrides)
  return config


def test_end_to_end_writes_results(tmp_path):
  config = tiny()
  train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / 'results.json') as f:
    res = json.load(f)
  assert len(res['claims']) == 4 and all(np.isfinite(c['measured']) for c in res['claims'])
  assert res['extra']['evaluation']['none']['payout']['mean'] == 0.0
  assert set(res['extra']['gains_vs_no_manager_percent']) == {'raw reward', 'agents reward', 'manager reward'}
  assert os.path.exists(tmp_path / 'raw_reward.png')


def test_manager_learns_on_a_slower_timescale_and_seeds_are_deterministic():
  config = tiny(manager_every=3)
  game = static_game.CapacityGame(**config.game_kwargs)
  init, update, _ = static_train.make_static(config, game, 'incentives')
  update = jax.jit(update)
  state = init(jax.random.PRNGKey(0))
  history = [state]
  for _ in range(4):
    state, _ = update(state, None)
    history.append(state)
  changed = [not np.array_equal(a.manager_bonus, b.manager_bonus) for a, b in zip(history, history[1:])]
  assert changed == [True, False, False, True]  # Steps 0 and 3 only.
  assert all(not np.array_equal(a.factory, b.factory) for a, b in zip(history, history[1:]))
  again = init(jax.random.PRNGKey(0))
  for _ in range(4):
    again, _ = update(again, None)
  jax.tree.map(np.testing.assert_array_equal, again, state)


def test_no_manager_pays_nothing_and_sends_nothing():
  config = tiny()
  game = static_game.CapacityGame(**config.game_kwargs)
  init, _, play = static_train.make_static(config, game, 'none')
  bonus_idx, signal, _, out = play(init(jax.random.PRNGKey(1)), jax.random.PRNGKey(2))
  assert not np.any(bonus_idx) and not np.any(signal)
  np.testing.assert_array_equal(out['agents'], out['raw'])
  np.testing.assert_allclose(out['manager'], out['raw'].sum(-1), rtol=1e-6)


@pytest.mark.parametrize(
  'overrides,fragment',
  [
    ({'managers': ('none', 'bribes')}, "unknown manager 'bribes'"),
    ({'managers': ('incentives',)}, "must include 'none'"),
    ({'kappa': -1.0}, 'kappa must be >= 0'),
    ({'manager_every': 0}, 'manager_every must be >= 1'),
    ({'env': 'dynamic'}, "unknown env 'dynamic'"),
  ],
)
def test_bad_settings(overrides, fragment, tmp_path):
  with pytest.raises(ConfigError, match=fragment):
    train.train_and_evaluate(tiny(**overrides), str(tmp_path))
  assert not os.listdir(tmp_path)


def seq_tiny(**overrides):
  config = config_lib.load_config(
    os.path.join(os.path.dirname(CONFIG), 'supply_chain.py') + ':smoke', lock=False
  )
  config.update(
    {
      'num_envs': 8,
      'eval_envs': 8,
      'updates': 4,
      'log_every': 2,
      'checkpoint_every': 2,
      'hidden': 8,
      'ppo_epochs': 1,
    }
  )
  config.update(overrides)
  return config


def test_sequential_end_to_end(tmp_path):
  train.train_and_evaluate(seq_tiny(), str(tmp_path))
  with open(tmp_path / 'results.json') as f:
    res = json.load(f)
  assert [c['name'] for c in res['claims']][0] == 'manager raises raw reward'
  evaluation = res['extra']['evaluation']
  assert evaluation['none']['payout']['mean'] == 0.0
  assert 0.0 <= evaluation['incentives']['supplier_a_share']['mean'] <= 1.0
  assert [r['step'] for r in metrics_rows(tmp_path)] == [2, 4]


def metrics_rows(path):
  from common import metrics

  return metrics.read_metrics(str(path))


def test_sequential_rejects_unknown_manager(tmp_path):
  with pytest.raises(ConfigError, match="manager 'bribes' is not available"):
    train.train_and_evaluate(seq_tiny(managers=('none', 'bribes')), str(tmp_path))
  assert not os.listdir(tmp_path)
