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


def test_host_workers_reach_the_atari_env_only():
  with pytest.raises(ConfigError, match='host_workers is for Atari only'):
    games.make('minatar', 'Breakout-MinAtar', host_workers=2)
  pytest.importorskip('ale_py')
  env, _ = games.make(
    'atari', 'Pong', evaluation=True, host_workers=2
  )  # Workers start at the first callback.
  assert env.host_workers == 2 and not env.clip_rewards and not env.terminal_on_life_loss
  assert games.make('atari', 'Pong')[0].host_workers == 0
  with pytest.raises(ConfigError, match='host_workers must be an integer >= 0'):
    games.make('atari', 'Pong', host_workers=-1)
