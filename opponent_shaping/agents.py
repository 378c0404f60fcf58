"""Policies and critics for the two-player games: a tabular memory-1 agent (IPD) and a GRU agent.

Every agent is a frozen dataclass of static settings with pure functions of explicit parameters, so one
compiled program serves both seats (parameters stacked on a leading agent axis) and every seed (vmap).

- `actor_step(params, carry, obs, t) -> (carry, logits[heads, choices])`: one step of the policy.
- `critic_values(params, obs[T, obs_dim], t[T]) -> values[T]`: the value of each step of a trajectory.

The critic always sees the time step. This is not optional: the Advantage Alignment term multiplies
*sums* of past advantages, and a critic with a per-step bias (a finite-horizon game without a time
feature, or a slow critic) makes those sums one-signed, so the term rewards hurting the opponent
(`../shared/research/multiagent.md` §6.1, §7 pitfall 1).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from opponent_shaping import ipd

ARCHS = ('tabular', 'gru')


class _ActorNet(nn.Module):
  hidden: int
  heads: int
  choices: int

  @nn.compact
  def __call__(self, carry, obs):
    x = nn.relu(nn.Dense(self.hidden, name='embed')(obs))
    carry, y = nn.GRUCell(self.hidden, name='gru')(carry, x)
    logits = nn.Dense(self.heads * self.choices, name='logits', kernel_init=nn.initializers.zeros)(y)
    return carry, logits.reshape(self.heads, self.choices)


class _CriticNet(nn.Module):
  hidden: int

  @nn.compact
  def __call__(self, obs_seq, time_features):
    x = nn.relu(nn.Dense(self.hidden, name='embed')(jnp.concatenate([obs_seq, time_features], -1)))
    gru = nn.RNN(nn.GRUCell(self.hidden), name='gru')
    y = gru(x)
    y = nn.relu(nn.Dense(self.hidden, name='hidden')(jnp.concatenate([y, time_features], -1)))
    return nn.Dense(1, name='value')(y)[..., 0]


@dataclasses.dataclass(frozen=True)
class GRUAgent:
  """A full-history agent: GRU actor (embed → GRU → logits) and a GRU critic fed the time step.

  Matches the AdAlign/LOQA IPD and Coin Game agents in kind (GRU, hidden 64); the critic is a state-value
  critic V(h_t, t) trained on λ-returns.
  """

  obs_dim: int
  heads: int
  choices: int
  episode_length: int
  hidden: int = 64

  @property
  def actor(self):
    return _ActorNet(self.hidden, self.heads, self.choices)

  def initial_carry(self) -> jax.Array:
    return jnp.zeros((self.hidden,))

  def init(self, key) -> dict:
    k_actor, k_critic = jax.random.split(key)
    obs = jnp.zeros((self.obs_dim,))
    actor = self.actor.init(k_actor, self.initial_carry(), obs)
    critic = _CriticNet(self.hidden).init(
      k_critic,
      jnp.zeros((self.episode_length, self.obs_dim)),
      jnp.zeros((self.episode_length, self.episode_length)),
    )
    return {'actor': actor, 'critic': critic}

  def actor_step(self, actor_params, carry, obs, t):
    del t
    return self.actor.apply(actor_params, carry, obs)

  def critic_values(self, critic_params, obs_seq, t_seq):
    return _CriticNet(self.hidden).apply(critic_params, obs_seq, jax.nn.one_hot(t_seq, self.episode_length))


@dataclasses.dataclass(frozen=True)
class TabularAgent:
  """Memory-1 IPD agent: a softmax table over the 5 states (start, CC, CD, DC, DD) and a time-indexed
  value table V[t, state] (the set-up of the research note's calibration, §6.1)."""

  episode_length: int
  heads: int = 1
  choices: int = 2

  def initial_carry(self) -> jax.Array:
    return jnp.zeros((1,))

  def init(self, key) -> dict:
    del key
    states = len(ipd.MEMORY1_STATES)
    return {
      'actor': {'logits': jnp.zeros((states, self.choices))},
      'critic': {'values': jnp.zeros((self.episode_length, states))},
    }

  def actor_step(self, actor_params, carry, obs, t):
    del t
    return carry, actor_params['logits'][ipd.memory1_state(obs)][None, :]

  def critic_values(self, critic_params, obs_seq, t_seq):
    states = jax.vmap(ipd.memory1_state)(obs_seq)
    return critic_params['values'][t_seq, states]


def make_agent(arch: str, game, *, hidden: int = 64):
  """The agent for `arch` in `game`; a clear error for an unknown arch or a tabular agent outside IPD."""
  heads, choices = len(game.action_dims), max(game.action_dims)
  if len(set(game.action_dims)) != 1:
    raise ValueError(f'action heads of different sizes {game.action_dims} are not supported')
  if arch == 'gru':
    return GRUAgent(game.obs_dim, heads, choices, game.episode_length, hidden)
  if arch == 'tabular':
    if not isinstance(game, ipd.IPD):
      raise ValueError(f"arch 'tabular' is a memory-1 IPD policy; use arch 'gru' for {type(game).__name__}")
    return TabularAgent(game.episode_length, heads, choices)
  raise ValueError(f"unknown arch '{arch}' (valid: {', '.join(ARCHS)})")
