"""MinAtar (Young & Tian, 2019) through gymnax: the games, their names and the evaluation length they need.

Shared by the MinAtar experiments of rl_softmoe and rl_hparams, which normalise scores per game with a
reference keyed by the short name ('Breakout') and evaluate for at least `MIN_EVAL_ITERATIONS` vector steps.
"""

from __future__ import annotations

from typing import Sequence

from common.errors import ConfigError

GAMES = (
  'Asterix-MinAtar',
  'Breakout-MinAtar',
  'Freeway-MinAtar',
  'Seaquest-MinAtar',
  'SpaceInvaders-MinAtar',
)
"""gymnax's MinAtar environments (gymnax 1.0)."""

MIN_EVAL_ITERATIONS = 1000
"""gymnax truncates MinAtar episodes at 1000 steps, so this many vector steps end an episode in every env."""


def short_name(game: str) -> str:
  """'Breakout-MinAtar' -> 'Breakout' (the key of a per-game score reference)."""
  return game.split('-')[0]


def check_games(games: Sequence[str], reference=None) -> None:
  """ConfigError for an empty or repeated list, an unknown game, or a game `reference` has no entry for."""
  games = list(games)
  if not games:
    raise ConfigError('config.games is empty; give at least one of ' + ', '.join(GAMES))
  if len(set(games)) != len(games):
    raise ConfigError(f'config.games repeats a game: {games}')
  for game in games:
    if game not in GAMES:
      raise ConfigError(f'unknown MinAtar game {game!r}: choose from {", ".join(GAMES)}')
    if reference is not None and short_name(game) not in reference:
      raise ConfigError(f'config.max_reference has no entry {short_name(game)!r} for {game}; add one')
