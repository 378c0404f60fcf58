"""Game families: names and the games check."""

import pytest

from common.errors import ConfigError
from common.rl import games


def test_short_name_and_games_check():
  assert games.short_name('SpaceInvaders-MinAtar') == 'SpaceInvaders'
  games.check_games('minatar', ['Breakout-MinAtar'], {'Breakout': 15.0})
  games.check_games('atari', ['Pong', 'Breakout'])
  with pytest.raises(ConfigError, match='config.games is empty'):
    games.check_games('minatar', [])
  with pytest.raises(ConfigError, match='repeats a game'):
    games.check_games('minatar', ['Breakout-MinAtar'] * 2)
  with pytest.raises(ConfigError, match="unknown MinAtar game 'Pong-MinAtar'"):
    games.check_games('minatar', ['Pong-MinAtar'])
  with pytest.raises(ConfigError, match="no entry 'Asterix'"):
    games.check_games('minatar', ['Asterix-MinAtar'], {'Breakout': 15.0})
  with pytest.raises(ConfigError, match="unknown Atari game 'Pongg'; did you mean 'Pong'"):
    games.check_games('atari', ['Pongg'])
  with pytest.raises(ConfigError, match='config.env must be'):
    games.check_games('procgen', ['Coinrun'])
