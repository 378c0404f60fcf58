"""The sequential supply chain with a learning manager: IPPO factories and a PPO manager, trained together.

Per update, `num_envs` episodes of `episode_length` steps are rolled out (one `lax.scan`):
- the manager sees the global state and samples, for every factory, a per-unit bonus level for units
  ordered from supplier B (`chain.bonus_levels`; variants 'incentives' and 'both') and/or a signal, a
  recommended number of units from supplier A in {0..max_order} (variants 'signal' and 'both'; the
  sequential form of the static game's recommended a_i, see `static_train.py`);
- each factory sees its own observation (inventory, pipeline, last demand and order, agent id, time), its
  bonus (one-hot) and, with a signal, its own recommendation (one-hot) sampled at this step, and picks
  (quantity, supplier) with a policy shared by all factories (IPPO with an agent-id input: the paper's
  plain multi-agent baseline is this learner with no manager). The signal is cheap talk: nothing enforces
  or pays for following it;
- factories are rewarded with raw profit + payout, the manager with sum raw - kappa * payout (no payout
  without incentives, so 'signal' earns sum raw).
'team' (ours, a diagnostic, not the paper's) has no manager: every factory is rewarded with the mean raw
profit of all factories, so the same learners pursue the welfare itself. Its raw reward is an empirical
ceiling of what any incentive scheme can buy from these learners in this chain (the sequential counterpart
of the static game's brute-force optimum).
'fixed' (ours, a diagnostic) pays every factory a constant bonus per unit from B, `config.fixed_bonus[i]` (one
value of `bonus_levels` per factory), and does not learn: whether any such scheme buys the claimed gain from
these learners separates what incentives can do in this chain from what our manager learns.
'lio' (issue #9's stronger baseline, `lio.py`): a LIO-style manager whose incentive is a continuous,
deterministic function of the global state (a bonus in [0, `lio_max_bonus`] per factory per unit from B,
seen by the factory as one input column), learnt by differentiating its reward through one simulated
policy-gradient step of the factories instead of by PPO.
Both learn with PPO-clipped losses on GAE advantages (`common.ppo`); the manager's step is applied every
`manager_every` updates (slower timescale). The manager's bonus and signal are independent categorical
heads of one MLP; its log-probability is their sum.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax

from common import nn as common_nn
from common import ppo
from common.errors import ConfigError
from mediator import lio
from mediator import static_train

SEQUENTIAL_MANAGERS = ('none', 'incentives', 'signal', 'both', 'team', 'fixed', lio.NAME)


@flax.struct.dataclass
class SeqState:
  step: jax.Array
  rng: jax.Array
  factory: Any  # {'actor': params, 'critic': params}
  manager: Any
  factory_opt: Any
  manager_opt: Any


class Batch(NamedTuple):
  x: jax.Array  # [T, E, N, obs + levels (+ signals)]: factory inputs ('lio': obs + 1, the bonus / max)
  actions: jax.Array  # [T, E, N]
  logp: jax.Array  # [T, E, N]
  reward: jax.Array  # [T, E, N]: raw + payout
  gs: jax.Array  # [T, E, G]: global state
  bonus: jax.Array  # [T, E, N]: bonus level indices (0 with 'lio', whose bonus is continuous)
  signal: jax.Array  # [T, E, N]: recommended units from A (0 without a signal)
  m_logp: jax.Array  # [T, E]
  m_reward: jax.Array  # [T, E]
  stats: dict


def check_manager(manager: str) -> tuple[bool, bool]:
  """(pays incentives, sends a signal) for a manager variant; a one-line ConfigError for unknown ones."""
  if manager not in SEQUENTIAL_MANAGERS:
    raise ConfigError(
      f"manager '{manager}' is not available in the supply chain (valid: {', '.join(SEQUENTIAL_MANAGERS)})"
    )
  return manager in ('incentives', 'both', 'fixed', lio.NAME), manager in ('signal', 'both')


def fixed_bonus_indices(config, chain) -> jax.Array:
  """int32[N]: the level index of each factory's `config.fixed_bonus`; a one-line ConfigError otherwise."""
  values, levels = tuple(config.fixed_bonus), tuple(chain.bonus_levels)
  if len(values) != chain.num_factories or any(v not in levels for v in values):
    raise ConfigError(
      f'fixed_bonus {values} must give each of the {chain.num_factories} factories one of bonus_levels {levels}'
    )
  return jnp.asarray([levels.index(v) for v in values], jnp.int32)


def num_signals(chain) -> int:
  """Signal values: a recommended number of units from supplier A, 0..max_order."""
  return chain.max_order + 1


def make_sequential(config, chain, manager: str):
  """`(init, update, rollout)` for one seed of the `manager` variant."""
  pays, signals = check_manager(manager)
  team = manager == 'team'
  fixed = manager == 'fixed'
  differentiable = manager == lio.NAME  # A deterministic incentive function learnt through the factories.
  if differentiable:
    lio.check_config(config)
  learns = (pays or signals) and not fixed  # Whether a manager policy acts and learns.
  fixed_idx = fixed_bonus_indices(config, chain) if fixed else None
  n, levels = chain.num_factories, len(chain.bonus_levels)
  sig = num_signals(chain) if signals else 0  # No signal columns without a signal: 'incentives' unchanged.
  bonus_cols = 1 if differentiable else levels  # 'lio': the bonus value / lio_max_bonus; else a one-hot.
  bonus_values = jnp.asarray(chain.bonus_levels, jnp.float32)
  hidden = (config.hidden, config.hidden)
  f_actor = common_nn.MLP(hidden + (chain.num_actions,))
  f_critic = common_nn.MLP(hidden + (1,))
  m_bonus = 0 if signals and not pays else n * levels  # 'none' keeps its (unused) bonus head, as before.
  if differentiable:
    m_bonus = n  # f_η(s): one logit per factory, b = lio_max_bonus · sigmoid.
  m_actor = common_nn.MLP(hidden + (m_bonus + n * sig,))
  m_critic = common_nn.MLP(hidden + (1,))
  factory_tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(config.factory_lr))
  manager_tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(config.manager_lr))
  x_dim, g_dim = chain.obs_dim + bonus_cols + sig, chain.global_state_dim

  def manager_heads(out):
    """Manager MLP output [..., m_bonus + N·sig] -> (bonus logits [..., N, L], signal logits [..., N, sig])."""
    lead = out.shape[:-1]
    bonus = out[..., :m_bonus].reshape(lead + (n, levels)) if m_bonus else None
    return bonus, out[..., m_bonus:].reshape(lead + (n, sig))

  def head_logp(logits, idx):
    return ppo.categorical_logp(logits, idx).sum(-1)

  def factory_input(obs, bonus, bonus_value, signal):
    """[..., N, x_dim]: each factory's observation, its bonus (one-hot level; 'lio': value / max) and
    (with a signal) its own signal."""
    if differentiable:
      parts = [obs, bonus_value[..., None] / config.lio_max_bonus]
    else:
      parts = [obs, jax.nn.one_hot(bonus, levels)]
    if signals:
      parts.append(jax.nn.one_hot(signal, sig))
    return jnp.concatenate(parts, -1)

  def init(rng):
    rng_init, rng_loop = jax.random.split(rng)
    k = jax.random.split(rng_init, 4)
    factory = {
      'actor': f_actor.init(k[0], jnp.zeros((x_dim,))),
      'critic': f_critic.init(k[1], jnp.zeros((x_dim,))),
    }
    manager_p = {
      'actor': m_actor.init(k[2], jnp.zeros((g_dim,))),
      'critic': m_critic.init(k[3], jnp.zeros((g_dim,))),
    }
    return SeqState(
      step=jnp.array(0),
      rng=rng_loop,
      factory=factory,
      manager=manager_p,
      factory_opt=factory_tx.init(factory),
      manager_opt=manager_tx.init(manager_p),
    )

  def rollout(state, key, num_envs):
    k_reset, k_loop = jax.random.split(key)
    env = jax.vmap(chain.reset)(jax.random.split(k_reset, num_envs))

    def step(env, key):
      k_bonus, k_act, k_env = jax.random.split(key, 3)
      gs = jax.vmap(chain.global_state)(env)
      bonus = jnp.zeros((num_envs, n), jnp.int32)
      signal = jnp.zeros((num_envs, n), jnp.int32)
      m_logp = jnp.zeros((num_envs,))
      if fixed:
        bonus = jnp.broadcast_to(fixed_idx, (num_envs, n))
      elif differentiable:
        bonus_value = lio.incentive(m_actor.apply, state.manager['actor'], gs, config.lio_max_bonus)
      elif pays or signals:
        b_logits, s_logits = manager_heads(m_actor.apply(state.manager['actor'], gs))
        if pays:
          bonus = jax.random.categorical(k_bonus, b_logits)
          m_logp = m_logp + head_logp(b_logits, bonus)
        if signals:
          signal = jax.random.categorical(jax.random.fold_in(k_bonus, 1), s_logits)
          m_logp = m_logp + head_logp(s_logits, signal)
      if not differentiable:
        bonus_value = bonus_values[bonus]
      x = factory_input(jax.vmap(chain.observe)(env), bonus, bonus_value, signal)
      logits = f_actor.apply(state.factory['actor'], x)
      actions = jax.random.categorical(k_act, logits)
      logp = ppo.categorical_logp(logits, actions)
      env, raw, info = jax.vmap(chain.step)(env, actions, jax.random.split(k_env, num_envs))
      rew = jax.vmap(lambda r, i, b: chain.rewards(r, i, b, config.kappa))(raw, info, bonus_value)
      stats = {
        'raw': raw.sum(-1),
        'agents': rew['agents'].sum(-1),
        'manager': rew['manager'],
        'payout': rew['payout'],
        'units_a': info['units_a'].sum(-1),
        'units_b': info['units_b'].sum(-1),
        'fill_a': info['fill_a'],
        'lost': info['lost'].sum(-1),
      }
      if signals:  # Factories whose units from A equal their recommendation.
        stats['followed'] = (info['units_a'] == signal).astype(jnp.float32).mean(-1)
      if pays:  # The bonus offered per unit from B (mean over factories), paid or not.
        stats['bonus'] = bonus_value.mean(-1)
      # 'team': each factory earns the factories' mean raw profit (no manager, no payout).
      f_reward = jnp.broadcast_to(raw.mean(-1, keepdims=True), raw.shape) if team else rew['agents']
      return env, Batch(x, actions, logp, f_reward, gs, bonus, signal, m_logp, rew['manager'], stats)

    _, batch = jax.lax.scan(step, env, jax.random.split(k_loop, chain.episode_length))
    return batch

  def advantages(values, rewards):
    """GAE along time (axis 0) for every other axis, bootstrap 0 (fixed-length episodes)."""
    flat_v = values.reshape(values.shape[0], -1)
    flat_r = rewards.reshape(rewards.shape[0], -1)
    gae = functools.partial(ppo.gae, gamma=config.gamma, lam=config.lam)
    adv, ret = jax.vmap(gae, in_axes=(1, 1, None), out_axes=1)(flat_r, flat_v, jnp.zeros(()))
    return adv.reshape(values.shape), ret.reshape(values.shape)

  def ppo_epochs(params, opt, tx, loss_fn, length):
    def epoch(carry, _):
      params, opt = carry
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt = tx.update(grads, opt, params)
      return (optax.apply_updates(params, updates), opt), loss

    (params, opt), losses = jax.lax.scan(epoch, (params, opt), None, length=length)
    return params, opt, losses[-1]

  def update(state: SeqState, _):
    key = jax.random.fold_in(state.rng, state.step)
    batch = rollout(state, key, config.num_envs)
    scale = config.reward_scale
    f_values = f_critic.apply(state.factory['critic'], batch.x)[..., 0]
    f_adv_raw, f_ret = advantages(f_values, batch.reward * scale)
    f_adv = ppo.normalize(f_adv_raw)

    def factory_loss(params):
      logits = f_actor.apply(params['actor'], batch.x)
      logp = ppo.categorical_logp(logits, batch.actions)
      pg, _ = ppo.ppo_clipped_loss(logp, batch.logp, f_adv, clip_eps=config.clip_eps)
      v = f_critic.apply(params['critic'], batch.x)[..., 0]
      entropy = ppo.entropy_of_logits(logits).mean()
      return pg + config.value_coef * ppo.value_loss(v, f_ret) - config.entropy * entropy

    factory, factory_opt, f_loss = ppo_epochs(
      state.factory, state.factory_opt, factory_tx, factory_loss, config.ppo_epochs
    )
    manager_p, manager_opt, m_loss = state.manager, state.manager_opt, jnp.zeros(())
    if learns:
      m_values = m_critic.apply(state.manager['critic'], batch.gs)[..., 0]
      m_adv_raw, m_ret = advantages(m_values, batch.m_reward * scale)

      def manager_critic_loss(params):
        return config.value_coef * ppo.value_loss(m_critic.apply(params['critic'], batch.gs)[..., 0], m_ret)

      if differentiable:  # One meta-gradient step per manager update, as in LIO.

        def lio_bonus(eta):  # [T, E, N]: the incentive function at the batch's global states.
          return lio.incentive(m_actor.apply, eta, batch.gs, config.lio_max_bonus)

        units_b = chain.decode_actions(batch.actions)[1]
        discount = config.gamma * config.lam

        def lio_loss(params):
          """−J(η) of `lio.meta_objective` (one look-ahead step of the factories that sampled the batch)."""
          objective = lio.meta_objective(
            params['actor'],
            bonus_fn=lio_bonus,
            theta=state.factory['actor'],
            logp_fn=lambda theta: ppo.categorical_logp(f_actor.apply(theta, batch.x), batch.actions),
            logp_old=batch.logp,
            factory_env_adv=lio.env_advantage(
              f_adv_raw, scale * lio_bonus(state.manager['actor']) * units_b, discount
            ),
            manager_adv=m_adv_raw,
            units_b=units_b,
            kappa=config.kappa,
            scale=scale,
            discount=discount,
            lr=config.lio_lookahead_lr,
          )
          return -objective + manager_critic_loss(params)

        new_p, new_opt, m_loss = ppo_epochs(state.manager, state.manager_opt, manager_tx, lio_loss, 1)
      else:
        m_adv = ppo.normalize(m_adv_raw)

        def manager_loss(params):
          b_logits, s_logits = manager_heads(m_actor.apply(params['actor'], batch.gs))
          logp, entropy = jnp.zeros(batch.m_logp.shape), 0.0
          if pays:
            logp = logp + head_logp(b_logits, batch.bonus)
            entropy = entropy + ppo.entropy_of_logits(b_logits).mean()
          if signals:
            logp = logp + head_logp(s_logits, batch.signal)
            entropy = entropy + ppo.entropy_of_logits(s_logits).mean()
          pg, _ = ppo.ppo_clipped_loss(logp, batch.m_logp, m_adv, clip_eps=config.clip_eps)
          return pg + manager_critic_loss(params) - config.manager_entropy * entropy

        new_p, new_opt, m_loss = ppo_epochs(
          state.manager, state.manager_opt, manager_tx, manager_loss, config.ppo_epochs
        )
      active = state.step % config.manager_every == 0
      manager_p = jax.tree.map(lambda a, b: jnp.where(active, a, b), new_p, state.manager)
      manager_opt = jax.tree.map(lambda a, b: jnp.where(active, a, b), new_opt, state.manager_opt)
    state = state.replace(
      step=state.step + 1,
      factory=factory,
      manager=manager_p,
      factory_opt=factory_opt,
      manager_opt=manager_opt,
    )
    metrics = summarize(batch.stats)
    metrics.update(factory_loss=f_loss, manager_loss=m_loss)
    return state, metrics

  return init, update, rollout


def summarize(stats) -> dict:
  """Per-episode sums (the paper's raw, agents' and manager's rewards) and the mechanism's measures."""
  per_episode = {k: stats[k].sum(0).mean() for k in ('raw', 'agents', 'manager', 'payout', 'lost')}
  units_a, units_b = stats['units_a'].sum(), stats['units_b'].sum()
  out = {
    'raw_reward': per_episode['raw'],
    'agents_reward': per_episode['agents'],
    'manager_reward': per_episode['manager'],
    'payout': per_episode['payout'],
    'payout_fraction': per_episode['payout'] / jnp.maximum(jnp.abs(per_episode['raw']), 1e-6),
    'supplier_a_share': units_a / jnp.maximum(units_a + units_b, 1e-6),
    'fill_a': stats['fill_a'].mean(),
    'lost_per_episode': per_episode['lost'],
  }
  if 'followed' in stats:  # Only with a signal: the share of factory decisions that follow it.
    out['signal_followed'] = stats['followed'].mean()
  if 'bonus' in stats:  # Only with incentives: the mean bonus offered (uniform over the levels at the start).
    out['mean_bonus'] = stats['bonus'].mean()
  return out


def make_chunk(config, chain, manager: str):
  return static_train.vmapped_chunk(make_sequential(config, chain, manager)[1])


def make_init(config, chain, manager: str):
  init, _, _ = make_sequential(config, chain, manager)
  return jax.jit(jax.vmap(init))


def make_evaluate(config, chain, manager: str):
  _, _, rollout = make_sequential(config, chain, manager)

  @jax.jit
  def evaluate(states, key):
    return jax.vmap(lambda s: summarize(rollout(s, key, config.eval_envs).stats))(states)

  return evaluate
