"""Game registry (`make_game`, `GAMES`) and an environment-throughput measure.

Every game is a frozen dataclass (hashable: a static jit argument) with `num_agents = 2`, `action_dims`,
`obs_dim`, `episode_length`, `reset(key)`, `observe(state) -> float32[2, obs_dim]`,
`step(state, actions int32[2, len(action_dims)], key) -> (state, rewards float32[2], info)` and
`fixed_policies() -> {name: (obs_row, key) -> int32[len(action_dims)]}`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp

from common.errors import ConfigError
from common.errors import UsageError
from opponent_shaping.coin_game import CoinGame
from opponent_shaping.ipd import IPD
from opponent_shaping.negotiation import Negotiation

GAMES = {'ipd': IPD, 'coin_game': CoinGame, 'negotiation': Negotiation}


class GameArgumentError(UsageError, TypeError):
  """A keyword argument that the named game does not take (also a TypeError, as for a bad call)."""


def make_game(name: str, **kwargs: Any):
  """The game registered as `name`, built with `kwargs` (its dataclass fields).

  Raises:
    ConfigError: (a ValueError) for an unknown name, in one line with the nearest valid name and the list.
    GameArgumentError: (a TypeError) for a keyword the game does not take, naming the game and its fields.
  """
  if name not in GAMES:
    close = difflib.get_close_matches(str(name), sorted(GAMES), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ''
    raise ConfigError(f"unknown game '{name}'{hint} (valid: {', '.join(sorted(GAMES))})")
  game_class = GAMES[name]
  fields = [field.name for field in dataclasses.fields(game_class)]
  unknown = sorted(set(kwargs) - set(fields))
  if unknown:
    raise GameArgumentError(
      f"game '{name}' takes no argument {', '.join(repr(k) for k in unknown)} (valid: {', '.join(fields)})"
    )
  return game_class(**kwargs)


def sample_random_actions(game, key: jax.Array) -> jax.Array:
  """int32[2, len(action_dims)]: every head of both agents uniform over its choices."""
  return jax.random.randint(
    key, (game.num_agents, len(game.action_dims)), 0, jnp.asarray(game.action_dims), dtype=jnp.int32
  )


@functools.partial(jax.jit, static_argnums=(0, 1))
def _random_rollouts(game, num_envs: int, key: jax.Array) -> jax.Array:
  """Sum of rewards and observations of `num_envs` random-play episodes (vmapped envs, scanned steps)."""

  def episode(key):
    key_reset, key_steps = jax.random.split(key)

    def one_step(state, key):
      key_actions, key_step = jax.random.split(key)
      state, rewards, _ = game.step(state, sample_random_actions(game, key_actions), key_step)
      # The observation is what a trainer computes every step; summing it keeps it from being pruned.
      return state, jnp.sum(rewards) + jnp.sum(game.observe(state))

    _, totals = jax.lax.scan(
      one_step, game.reset(key_reset), jax.random.split(key_steps, game.episode_length)
    )
    return jnp.sum(totals)

  return jnp.sum(jax.vmap(episode)(jax.random.split(key, num_envs)))


def env_steps_per_second(game, num_envs: int, key: jax.Array, repeats: int = 3) -> float:
  """Environment steps per second of random play: num_envs · episode_length / (best time of `repeats`).

  One step is `step` + `observe` with uniform random actions, vmapped over `num_envs` environments and
  scanned over `episode_length` steps, all in one jitted call. The first call (compilation) is a warm-up and
  is not timed; each timed call ends with `block_until_ready`.
  """
  _random_rollouts(game, num_envs, key).block_until_ready()
  best = float('inf')
  for repeat in range(repeats):
    start = time.perf_counter()
    _random_rollouts(game, num_envs, jax.random.fold_in(key, repeat + 1)).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return num_envs * game.episode_length / best
