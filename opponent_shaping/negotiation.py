"""Social-dilemma Negotiation Game of Advantage Alignment (`ObligatedRatioDiscreteEG`, one-shot rounds).

Rules (AdAlign code @ 23d2587, `configs/eg.yaml`, arXiv 2406.14662):

- 3 item types with pool p = [1, 1, 1].
- Utilities are drawn 'high contrast' every round: per item j, agent 1's utility u_1j is 1 or 5 with
  probability 1/2 each and agent 2's is u_2j = 6 - u_1j, so every item is worth 5 to one agent and 1 to the
  other.
- Each round both agents simultaneously propose q_ij in {0, ..., max_quantity} for every item (3 categorical
  heads of max_quantity + 1 choices).
- Item j is split in proportion to the proposals: share_ij = q_ij / (q_1j + q_2j); if both propose 0 the item
  is wasted (share 0 for both; the original code's +1e-8 in the denominator gives the same result).
- Reward r_i = Σ_j share_ij · p_j · u_ij, not normalised. New utilities are drawn after every round; an
  episode is `episode_length` rounds with no done flags.
- Observation of agent i (12 floats): [u_i / 5, my last proposal / max_quantity, the opponent's last
  proposal / max_quantity, p]; last proposals are zeros before the first round. Both seats see the
  opponent's last proposal (the original code had a TODO here).

The dilemma: proposing max_quantity everywhere is weakly dominant and splits every item 50/50, so greedy
play collects (r_1 + r_2) / max_sum = 9 / 15 = 0.6, where max_sum = Σ_j max(u_1j, u_2j)·p_j = 15. Claiming only
the items one values at 5 collects 15 / 15 = 1.0.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, ClassVar

import flax
import jax
import jax.numpy as jnp

from common.errors import ConfigError

NUM_ITEMS = 3
ITEM_POOL = (1.0, 1.0, 1.0)
LOW_UTILITY = 1.0
HIGH_UTILITY = 5.0


@flax.struct.dataclass
class NegotiationState:
  """This round's utilities, both agents' last proposals and the step counter."""

  utilities: jax.Array  # float32[2, NUM_ITEMS]
  last_proposals: jax.Array  # int32[2, NUM_ITEMS]; zeros before the first round
  t: jax.Array  # int32 scalar


def _check_int(game: str, name: str, value, minimum: int) -> None:
  """Raises a one-line ConfigError (a ValueError) unless `value` is an int >= minimum."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ConfigError(f'{game}: `{name}` must be an integer >= {minimum}, got {value!r}')


def sample_high_contrast_utilities(key: jax.Array) -> jax.Array:
  """float32[2, NUM_ITEMS]: u_1j ∈ {1, 5} with probability 1/2 each, u_2j = 6 - u_1j."""
  first = jnp.where(jax.random.bernoulli(key, 0.5, (NUM_ITEMS,)), HIGH_UTILITY, LOW_UTILITY)
  return jnp.stack([first, LOW_UTILITY + HIGH_UTILITY - first]).astype(jnp.float32)


def proportional_shares(proposals: jax.Array) -> jax.Array:
  """share_ij = q_ij / (q_1j + q_2j), and 0 for both where q_1j = q_2j = 0 (the item is wasted).

  Args:
    proposals: [2, NUM_ITEMS] non-negative quantities (any numeric dtype).

  Returns:
    float32[2, NUM_ITEMS].
  """
  proposals = jnp.asarray(proposals, dtype=jnp.float32)
  total = jnp.sum(proposals, axis=0, keepdims=True)
  return jnp.where(total > 0, proposals / jnp.where(total > 0, total, 1.0), 0.0)


@functools.lru_cache(maxsize=None)
def _fixed_policies(game: 'Negotiation') -> dict[str, Callable[[jax.Array, jax.Array], jax.Array]]:
  """Built once per game so the same function objects come back (stable static jit arguments)."""
  max_quantity = game.max_quantity

  def greedy(obs_row, key):
    del obs_row, key
    return jnp.full((NUM_ITEMS,), max_quantity, dtype=jnp.int32)

  def cooperative(obs_row, key):
    # Own utilities are obs_row[:3] = u / 5 ∈ {0.2, 1.0}: claim everything of the items worth 5, nothing else.
    del key
    values_high = obs_row[:NUM_ITEMS] * HIGH_UTILITY > 0.5 * (LOW_UTILITY + HIGH_UTILITY)
    return jnp.where(values_high, max_quantity, 0).astype(jnp.int32)

  def random(obs_row, key):
    del obs_row
    return jax.random.randint(key, (NUM_ITEMS,), 0, max_quantity + 1, dtype=jnp.int32)

  return {'greedy': greedy, 'cooperative': cooperative, 'random': random}


@dataclasses.dataclass(frozen=True)
class Negotiation:
  """The AdAlign social-dilemma Negotiation Game (rules in the module docstring).

  Attributes:
    episode_length: rounds (negotiations) per episode; utilities are redrawn every round.
    max_quantity: largest quantity one can propose per item; each head has max_quantity + 1 choices.
  """

  num_agents: ClassVar[int] = 2

  episode_length: int = 50
  max_quantity: int = 5

  def __post_init__(self):
    _check_int('Negotiation', 'episode_length', self.episode_length, 1)
    _check_int('Negotiation', 'max_quantity', self.max_quantity, 1)

  @property
  def action_dims(self) -> tuple[int, ...]:
    return (self.max_quantity + 1,) * NUM_ITEMS

  @property
  def obs_dim(self) -> int:
    return 4 * NUM_ITEMS

  def reset(self, key: jax.Array) -> NegotiationState:
    """First round's utilities, zero last proposals, t = 0."""
    return NegotiationState(
      utilities=sample_high_contrast_utilities(key),
      last_proposals=jnp.zeros((2, NUM_ITEMS), dtype=jnp.int32),
      t=jnp.zeros((), dtype=jnp.int32),
    )

  def observe(self, state: NegotiationState) -> jax.Array:
    """float32[2, 12]: row i = [u_i / 5, q_i / max_quantity, q_j / max_quantity, pool]."""
    proposals = state.last_proposals.astype(jnp.float32) / self.max_quantity
    pool = jnp.broadcast_to(jnp.asarray(ITEM_POOL, dtype=jnp.float32), (2, NUM_ITEMS))
    return jnp.concatenate([state.utilities / HIGH_UTILITY, proposals, proposals[::-1], pool], axis=-1)

  def step(
    self, state: NegotiationState, actions: jax.Array, key: jax.Array
  ) -> tuple[NegotiationState, jax.Array, dict[str, jax.Array]]:
    """One simultaneous negotiation under this round's utilities, then new utilities for the next one.

    Args:
      state: current state (its utilities are the ones the agents observed).
      actions: int32[2, NUM_ITEMS] proposals q_ij in {0, ..., max_quantity}.
      key: PRNG key for the next round's utilities.

    Returns:
      (next state, rewards float32[2] with r_i = Σ_j share_ij·p_j·u_ij, {'max_sum': float32 scalar
      Σ_j max(u_1j, u_2j)·p_j of this round}).
    """
    proposals = jnp.asarray(actions, dtype=jnp.int32)
    pool = jnp.asarray(ITEM_POOL, dtype=jnp.float32)
    rewards = jnp.sum(proportional_shares(proposals) * pool * state.utilities, axis=-1)
    max_sum = jnp.sum(jnp.max(state.utilities, axis=0) * pool)
    next_state = NegotiationState(
      utilities=sample_high_contrast_utilities(key), last_proposals=proposals, t=state.t + 1
    )
    return next_state, rewards, {'max_sum': max_sum}

  def fixed_policies(self) -> dict[str, Callable[[jax.Array, jax.Array], jax.Array]]:
    """Scripted opponents acting from their own observation row; each returns int32[3].

    - 'greedy': max_quantity on every item.
    - 'cooperative': max_quantity on the items it values 5, 0 on the others.
    - 'random': uniform quantities.
    """
    return dict(_fixed_policies(self))
