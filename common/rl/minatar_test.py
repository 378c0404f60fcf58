"""MinAtar names and the games check."""

import pytest

from common.errors import ConfigError
from common.rl import minatar


def test_short_name_and_games_check():
  assert minatar.short_name('SpaceInvaders-MinAtar') == 'SpaceInvaders'
  minatar.check_games(['Breakout-MinAtar'], {'Breakout': 15.0})
  with pytest.raises(ConfigError, match='config.games is empty'):
    minatar.check_games([])
  with pytest.raises(ConfigError, match='repeats a game'):
    minatar.check_games(['Breakout-MinAtar'] * 2)
  with pytest.raises(ConfigError, match="unknown MinAtar game 'Pong-MinAtar'"):
    minatar.check_games(['Pong-MinAtar'])
  with pytest.raises(ConfigError, match="no entry 'Asterix'"):
    minatar.check_games(['Asterix-MinAtar'], {'Breakout': 15.0})
