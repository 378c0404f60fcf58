"""The hyper-parameter schema: conversions, bad values, one-at-a-time settings."""

import pytest

from common.errors import ConfigError
from rl_hparams import schema


def test_every_default_is_valid_and_every_grid_converts():
  for agent in schema.AGENTS:
    for name, value in schema.defaults(agent).items():
      assert schema.spec(name).convert(value) == value
  for s in schema.HYPERPARAMETERS.values():
    assert s.kind in schema.KINDS
    assert [s.convert(v) for v in s.grid] == list(s.grid)
  assert schema.defaults('DER')['target_update_period'] == 2000
  assert schema.defaults('DrQ_eps')['target_update_period'] == 1


def test_bad_names_and_values_are_clear_errors():
  with pytest.raises(ConfigError, match='did you mean learning_rate'):
    schema.spec('learning_rat')
  with pytest.raises(ConfigError, match='unknown agent'):
    schema.defaults('Rainbow')
  with pytest.raises(ConfigError, match='gamma must be <= 1.0'):
    schema.grids({'gamma': (0.9, 1.5)})
  with pytest.raises(ConfigError, match='update_period takes int values'):
    schema.grids({'update_period': (1, 2.5)})
  with pytest.raises(ConfigError, match='activation must be one of'):
    schema.grids({'activation': ('relu', 'swish2')})
  with pytest.raises(ConfigError, match='at least 2 values'):
    schema.grids({'learning_rate': (1e-4,)})
  with pytest.raises(ConfigError, match='repeats a value'):
    schema.grids({'learning_rate': (1e-4, 1e-4)})
  with pytest.raises(ConfigError, match='names no hyper-parameter'):
    schema.grids({})
  with pytest.raises(ConfigError, match='min_replay_history must be >= 0'):
    schema.defaults('DER', {'min_replay_history': -1})


def test_one_at_a_time_shares_the_default_run():
  grids = schema.grids({'learning_rate': (), 'target_update_period': (), 'width': (64, 128)})
  settings, represents = schema.one_at_a_time('DER', grids)
  ids = [s.run_id for s in settings]
  # Defaults once; lr has 3 other values, target period 3 (2000 is DER's default), width 1.
  assert ids[0] == 'default' and len(ids) == 1 + 3 + 3 + 1 and len(set(ids)) == len(ids)
  assert represents[('learning_rate', 1e-4)] == 'default'
  assert represents[('target_update_period', 2000)] == 'default'
  assert represents[('width', 64)] == 'width=64'
  lr = next(s for s in settings if s.run_id == 'learning_rate=0.001').as_dict()
  assert lr['learning_rate'] == 1e-3 and lr['target_update_period'] == 2000  # Only one factor moves.
  # DrQ(eps)'s default target period (1) is in the grid: its other values are 100, 1000, 2000.
  _, drq = schema.one_at_a_time('DrQ_eps', grids)
  assert drq[('target_update_period', 1)] == 'default' and drq[('target_update_period', 2000)] != 'default'
  # A default outside the grid is ranked as one more value (the default run).
  _, rep = schema.one_at_a_time('DER', schema.grids({'learning_rate': (3e-4, 1e-3)}))
  assert rep[('learning_rate', 1e-4)] == 'default' and len(rep) == 3
  # Static keys split programs: only width=64 differs.
  assert len({s.static_key() for s in settings}) == 2
