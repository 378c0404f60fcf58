"""The game families of the value-based experiments (rl_softmoe, rl_hparams): MinAtar through gymnax and the
Atari 100k games through ale-py (`common.rl.atari`): checking a config's games and making their envs.

MinAtar scores are normalised per game with a reference keyed by the short name ('Breakout'), and evaluated
for at least `MIN_EVAL_ITERATIONS` vector steps; Atari scores are human-normalised
(`atari.human_normalized_score`) over whole games with raw rewards (`make(..., evaluation=True)`).
"""

from __future__ import annotations

from typing import Any, Sequence, Tuple

from common.errors import ConfigError

FAMILIES = ('minatar', 'atari')

MINATAR_GAMES = (
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


def _check_family(family: str) -> None:
  if family not in FAMILIES:
    raise ConfigError(f'config.env must be "minatar" or "atari", got {family!r}')


def check_host_workers(family: str, workers: Any, name: str = 'host_workers') -> None:
  """ConfigError unless `workers` (`atari.AtariEnv`'s host worker processes, named `name` in the message) is an
  integer >= 0, and 0 outside Atari (MinAtar runs on the device: it has no host emulators)."""
  if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
    raise ConfigError(f'{name} must be an integer >= 0, got {workers!r}')
  if workers and family != 'atari':
    raise ConfigError(
      f'{name} is for Atari only (config.env={family!r} has no host emulators), got {workers!r}'
    )


def check_games(family: str, games: Sequence[str], reference=None) -> None:
  """ConfigError for an unknown family, an empty or repeated list, an unknown game, or (MinAtar) a game
  `reference` has no entry for; Atari games must be among the 26 of the human/random score tables."""
  _check_family(family)
  games = list(games)
  known = MINATAR_GAMES if family == 'minatar' else None
  if not games:
    raise ConfigError(
      'config.games is empty; give at least one game' + (f' of {", ".join(known)}' if known else '')
    )
  if len(set(games)) != len(games):
    raise ConfigError(f'config.games repeats a game: {games}')
  for game in games:
    if family == 'atari':
      from common.rl import atari

      atari.check_scored_game(game)
    elif game not in MINATAR_GAMES:
      raise ConfigError(f'unknown MinAtar game {game!r}: choose from {", ".join(MINATAR_GAMES)}')
    elif reference is not None and short_name(game) not in reference:
      raise ConfigError(f'config.max_reference has no entry {short_name(game)!r} for {game}; add one')


def make(family: str, game: str, *, evaluation: bool = False, host_workers: int = 0) -> Tuple[Any, Any]:
  """`(env, env_params)` of `game`. For Atari the training env clips rewards and ends episodes at a life loss;
  the evaluation env plays whole games with raw rewards (the score the Atari 100k papers report). MinAtar has
  one env for both.

  `host_workers` is `atari.AtariEnv`'s: worker processes for the emulators (0: in this process). MinAtar runs
  on the device, so a nonzero value there is a ConfigError."""
  _check_family(family)
  check_host_workers(family, host_workers)
  if family == 'minatar':
    import gymnax

    return gymnax.make(game)
  from common.rl import atari  # The `atari` extra (ale-py).

  if evaluation:
    return atari.make(game, terminal_on_life_loss=False, clip_rewards=False, host_workers=host_workers)
  return atari.make(game, host_workers=host_workers)
