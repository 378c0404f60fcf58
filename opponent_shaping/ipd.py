"""Iterated Prisoner's Dilemma with the LOQA / Advantage Alignment payoffs and one-hot last-action view.

Rules (LOQA `ipd.py::ipd_step`, as used by Advantage Alignment, arXiv 2406.14662):

- Two agents act simultaneously each step with one binary head: 0 = cooperate (C), 1 = defect (D).
- Payoffs, row player first: CC (-1, -1), CD (-3, 0), DC (0, -3), DD (-2, -2). Mutual cooperation is -1 per
  step, mutual defection -2, so r_i = PAYOFF[a_i, a_j] with PAYOFF = [[-1, -3], [0, -2]].
- Observation of agent i: one-hot of the last joint action from its own seat,
  [me C, me D, opp C, opp D]; all zeros before the first step. Agent 2's row is agent 1's with the two
  halves swapped, so one policy serves both seats.
- Episodes have a fixed length (`episode_length`); there are no done flags.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

import flax
import jax
import jax.numpy as jnp

from common.errors import ConfigError

COOPERATE = 0
DEFECT = 1
# PAYOFF[my_action, opponent_action] = my reward.
PAYOFF = ((-1.0, -3.0), (0.0, -2.0))
# Names of the memory-1 states returned by `memory1_state`, from the agent's own view (CD = I cooperated,
# the opponent defected).
MEMORY1_STATES = ('start', 'CC', 'CD', 'DC', 'DD')
# Last joint action before the first step.
NO_ACTION = -1


@flax.struct.dataclass
class IPDState:
  """Last joint action (NO_ACTION = -1 before the first step) and the step counter."""

  last_actions: jax.Array  # int32[2]
  t: jax.Array  # int32 scalar


def memory1_state(obs_row: jax.Array) -> jax.Array:
  """Memory-1 state index of an IPD observation row, from that agent's view.

  The index is 0 at the start (all-zero observation), else 1 + 2·[I defected] + [opponent defected], i.e.
  1 = CC, 2 = CD, 3 = DC, 4 = DD with my action first (names in `MEMORY1_STATES`). Leading batch
  dimensions are kept.

  Args:
    obs_row: float32[..., 4] observation [me C, me D, opp C, opp D].

  Returns:
    int32[...] state index in {0, ..., 4}.
  """
  obs_row = jnp.asarray(obs_row)
  started = obs_row[..., 0] + obs_row[..., 1] > 0.5
  i_defected = (obs_row[..., 1] > 0.5).astype(jnp.int32)
  opponent_defected = (obs_row[..., 3] > 0.5).astype(jnp.int32)
  return jnp.where(started, 1 + 2 * i_defected + opponent_defected, 0).astype(jnp.int32)


def _always_cooperate(obs_row: jax.Array, key: jax.Array) -> jax.Array:
  del obs_row, key
  return jnp.full((1,), COOPERATE, dtype=jnp.int32)


def _always_defect(obs_row: jax.Array, key: jax.Array) -> jax.Array:
  del obs_row, key
  return jnp.full((1,), DEFECT, dtype=jnp.int32)


def _tit_for_tat(obs_row: jax.Array, key: jax.Array) -> jax.Array:
  """Cooperate at the start (all-zero row), else copy the opponent's last action (opp D = obs_row[3])."""
  del key
  return (obs_row[3:4] > 0.5).astype(jnp.int32)


def _random(obs_row: jax.Array, key: jax.Array) -> jax.Array:
  del obs_row
  return jax.random.randint(key, (1,), 0, 2, dtype=jnp.int32)


# Module-level functions, so every call of `fixed_policies` returns the same objects (stable static args).
_FIXED_POLICIES = {
  'always_cooperate': _always_cooperate,
  'always_defect': _always_defect,
  'tit_for_tat': _tit_for_tat,
  'random': _random,
}


def _check_int(game: str, name: str, value, minimum: int) -> None:
  """Raises a one-line ConfigError (a ValueError) unless `value` is an int >= minimum."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ConfigError(f'{game}: `{name}` must be an integer >= {minimum}, got {value!r}')


@dataclasses.dataclass(frozen=True)
class IPD:
  """Iterated Prisoner's Dilemma, fixed-length episodes (see the module docstring for the rules).

  Attributes:
    episode_length: number of steps the trainer scans from `reset`.
  """

  num_agents: ClassVar[int] = 2
  action_dims: ClassVar[tuple[int, ...]] = (2,)

  episode_length: int = 16

  def __post_init__(self):
    _check_int('IPD', 'episode_length', self.episode_length, 1)

  @property
  def obs_dim(self) -> int:
    return 4

  def reset(self, key: jax.Array) -> IPDState:
    """Start state: no last action, t = 0 (the key is unused: the IPD start is deterministic)."""
    del key
    return IPDState(last_actions=jnp.full((2,), NO_ACTION, dtype=jnp.int32), t=jnp.zeros((), dtype=jnp.int32))

  def observe(self, state: IPDState) -> jax.Array:
    """float32[2, 4]: row i = [one_hot(a_i), one_hot(a_j)], zeros for NO_ACTION."""
    own = jax.nn.one_hot(state.last_actions, 2, dtype=jnp.float32)  # [2, 2]; one_hot(-1) = zeros.
    return jnp.concatenate([own, own[::-1]], axis=-1)

  def step(
    self, state: IPDState, actions: jax.Array, key: jax.Array
  ) -> tuple[IPDState, jax.Array, dict[str, jax.Array]]:
    """One simultaneous move: r_i = PAYOFF[a_i, a_j].

    Args:
      state: current state.
      actions: int32[2, 1], 0 = cooperate, 1 = defect.
      key: unused (the IPD is deterministic).

    Returns:
      (next state, rewards float32[2], {'cooperate': float32[2], 1 where the agent cooperated}).
    """
    del key
    moves = jnp.asarray(actions, dtype=jnp.int32)[:, 0]
    payoff = jnp.asarray(PAYOFF, dtype=jnp.float32)
    rewards = payoff[moves, moves[::-1]]
    next_state = IPDState(last_actions=moves, t=state.t + 1)
    return next_state, rewards, {'cooperate': (moves == COOPERATE).astype(jnp.float32)}

  def fixed_policies(self) -> dict[str, Callable[[jax.Array, jax.Array], jax.Array]]:
    """Scripted opponents acting from their own observation row; each returns int32[1].

    - 'always_cooperate', 'always_defect': constant actions.
    - 'tit_for_tat': cooperate at the start, then copy the opponent's last action.
    - 'random': C or D with probability 1/2.
    """
    return dict(_FIXED_POLICIES)
