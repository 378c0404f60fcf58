"""The static capacity game with a learning manager: REINFORCE factories and a REINFORCE manager.

Each update plays `batch` one-shot games (research note §5.4, our specification, not the paper's):
1. the manager samples, for every factory i, a per-unit bonus b_i for units ordered from the dear
   supplier B (a level of `game.bonus_levels`) and, with `signal`, a recommended order a_i from the cheap
   supplier A (the paper's "auxiliary state" shown to the agent);
2. factory i sees (its id, its bonus, its signal) and orders a_i units from A (shared tabular policy,
   indexed by the agent id: the tabular form of "shared parameters with an agent-id input");
3. rewards: raw profit r_i; agent reward r_i + b_i (D - a_i); manager reward sum r - kappa * payout.
Factories learn every update; the manager every `manager_every` updates (slower timescale, as the note
recommends against chasing non-stationary learners). Baselines are batch means (per factory, per bonus).

`manager` variants: 'none' (naive MARL), 'incentives', 'signal', 'both': the paper's baseline and ablations.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from common.errors import ConfigError

MANAGERS = ('none', 'incentives', 'signal', 'both')


@flax.struct.dataclass
class StaticState:
  step: jax.Array
  rng: jax.Array
  factory: jax.Array  # logits [N, bonus levels, signals, D + 1]
  manager_bonus: jax.Array  # logits [N, bonus levels]
  manager_signal: jax.Array  # logits [N, D + 1]
  factory_opt: Any
  manager_opt: Any


def uses(manager: str) -> tuple[bool, bool]:
  """(pays incentives, sends a signal) for a manager variant."""
  if manager not in MANAGERS:
    raise ConfigError(f"unknown manager '{manager}' (valid: {', '.join(MANAGERS)})")
  return manager in ('incentives', 'both'), manager in ('signal', 'both')


def make_static(config, game, manager: str):
  """`(init, update, play)` for one seed of the `manager` variant."""
  pays, signals = uses(manager)
  n, d, levels = game.num_agents, game.demand, len(game.bonus_levels)
  num_signals = d + 1 if signals else 1
  factory_tx = optax.adam(config.factory_lr)
  manager_tx = optax.adam(config.manager_lr)
  bonus_values = jnp.asarray(game.bonus_levels, jnp.float32)

  def init(rng):
    rng_init, rng_loop = jax.random.split(rng)
    del rng_init  # Tables start uniform: every seed differs only in its sampling.
    factory = jnp.zeros((n, levels, num_signals, d + 1))
    manager = {'bonus': jnp.zeros((n, levels)), 'signal': jnp.zeros((n, d + 1))}
    return StaticState(
      step=jnp.array(0),
      rng=rng_loop,
      factory=factory,
      manager_bonus=manager['bonus'],
      manager_signal=manager['signal'],
      factory_opt=factory_tx.init(factory),
      manager_opt=manager_tx.init(manager),
    )

  def play(state, key):
    """One batch of games: the sampled choices and every reward."""
    k_bonus, k_signal, k_act = jax.random.split(key, 3)
    batch = config.batch
    if pays:
      bonus_idx = jax.random.categorical(k_bonus, state.manager_bonus, shape=(batch, n))
    else:
      bonus_idx = jnp.zeros((batch, n), jnp.int32)
    if signals:
      signal = jax.random.categorical(k_signal, state.manager_signal, shape=(batch, n))
    else:
      signal = jnp.zeros((batch, n), jnp.int32)
    agent = jnp.arange(n)
    logits = state.factory[agent, bonus_idx, signal]  # [batch, N, D + 1]
    actions = jax.random.categorical(k_act, logits)
    out = jax.vmap(lambda a, b: game.rewards(a, b, config.kappa))(actions, bonus_values[bonus_idx])
    return bonus_idx, signal, actions, out

  def factory_loss(factory, bonus_idx, signal, actions, agent_rewards):
    agent = jnp.arange(game.num_agents)
    logp = jax.nn.log_softmax(factory[agent, bonus_idx, signal])
    logp_a = jnp.take_along_axis(logp, actions[..., None], -1)[..., 0]  # [batch, N]
    # Baseline: mean reward of the same factory with the same bonus in this batch.
    same = jax.nn.one_hot(bonus_idx, factory.shape[1])  # [batch, N, L]
    mean_by_bonus = (same * agent_rewards[..., None]).sum(0) / jnp.maximum(same.sum(0), 1.0)  # [N, L]
    adv = agent_rewards - jnp.take_along_axis(mean_by_bonus[None], bonus_idx[..., None], -1)[..., 0]
    entropy = -(jnp.exp(logp) * logp).sum(-1).mean()
    return -(logp_a * jax.lax.stop_gradient(adv)).mean() * n - config.entropy * entropy

  def manager_loss(manager, bonus_idx, signal, manager_reward):
    adv = jax.lax.stop_gradient(manager_reward - manager_reward.mean())
    logp = 0.0
    if pays:
      lp = jax.nn.log_softmax(manager['bonus'])
      logp = logp + jnp.take_along_axis(lp[None], bonus_idx[..., None], -1)[..., 0].sum(-1)
    if signals:
      lp = jax.nn.log_softmax(manager['signal'])
      logp = logp + jnp.take_along_axis(lp[None], signal[..., None], -1)[..., 0].sum(-1)
    return -(logp * adv).mean()

  def update(state: StaticState, _):
    key = jax.random.fold_in(state.rng, state.step)
    bonus_idx, signal, actions, out = play(state, key)
    grads = jax.grad(factory_loss)(state.factory, bonus_idx, signal, actions, out['agents'])
    updates, factory_opt = factory_tx.update(grads, state.factory_opt, state.factory)
    factory = optax.apply_updates(state.factory, updates)
    manager = {'bonus': state.manager_bonus, 'signal': state.manager_signal}
    m_grads = jax.grad(manager_loss)(manager, bonus_idx, signal, out['manager'])
    m_updates, manager_opt = manager_tx.update(m_grads, state.manager_opt, manager)
    # Slower timescale: the manager's step is applied every `manager_every` updates only.
    active = (state.step % config.manager_every == 0) & (pays or signals)
    manager = jax.tree.map(lambda p, u: p + jnp.where(active, u, 0.0), manager, m_updates)
    manager_opt = jax.tree.map(lambda new, old: jnp.where(active, new, old), manager_opt, state.manager_opt)
    state = state.replace(
      step=state.step + 1,
      factory=factory,
      manager_bonus=manager['bonus'],
      manager_signal=manager['signal'],
      factory_opt=factory_opt,
      manager_opt=manager_opt,
    )
    return state, summarize(game, actions, out)

  return init, update, play


def summarize(game, actions, out) -> dict:
  """The paper's three rewards (per game, summed over factories) and the mechanism's measures."""
  raw = out['raw'].sum(-1)
  return {
    'raw_reward': raw.mean(),
    'agents_reward': out['agents'].sum(-1).mean(),
    'manager_reward': out['manager'].mean(),
    'payout': out['payout'].mean(),
    'oversubscribed': out['oversubscribed'].astype(jnp.float32).mean(),
    'supplier_a_share': actions.sum(-1).mean() / (game.num_agents * game.demand),
  }


def vmapped_chunk(update):
  """`chunk(states, length) -> (states, metrics averaged over the chunk)`: `length` scanned updates of
  every seed (the leading axis of `states`), jitted, the states donated."""

  @functools.partial(jax.jit, static_argnums=1, donate_argnums=0)
  def chunk(states, length):
    def one(state):
      state, m = jax.lax.scan(update, state, None, length=length)
      return state, jax.tree.map(lambda x: x.mean(0), m)

    return jax.vmap(one)(states)

  return chunk


def make_chunk(config, game, manager: str):
  return vmapped_chunk(make_static(config, game, manager)[1])


def make_evaluate(config, game, manager: str):
  """`evaluate(states, key) -> metrics [seeds]` over `config.eval_batch` games with the learned policies."""
  eval_config = config.copy_and_resolve_references()
  eval_config.batch = config.eval_batch
  _, _, play = make_static(eval_config, game, manager)

  @jax.jit
  def evaluate(states, key):
    def one(state):
      _, _, actions, out = play(state, key)
      return summarize(game, actions, out)

    return jax.vmap(one)(states)

  return evaluate


def make_init(config, game, manager: str):
  init, _, _ = make_static(config, game, manager)
  return jax.jit(jax.vmap(init))
