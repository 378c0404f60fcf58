"""Evaluation after training: self-play, play against scripted opponents, a league across methods and
seeds, IPD P(cooperate | history) tables, plots, and the claims written to results.json.

All numbers are per step and per agent, averaged over `config.eval_envs` episodes of
`config.eval_episode_length` steps (16 for the Coin Game, as in the authors' league).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from common import metrics as metrics_lib
from common import results
from opponent_shaping import train as train_lib

# Observation rows for IPD histories of length one, from the agent's view: [me C, me D, opp C, opp D].
_IPD_LAST = {'CC': [1, 0, 1, 0], 'CD': [1, 0, 0, 1], 'DC': [0, 1, 1, 0], 'DD': [0, 1, 0, 1]}
# The same joint actions as (seat 0 cooperated, seat 1 cooperated) flags: the rows' 'me C' and 'opp C'.
_IPD_JOINT = {name: (float(row[0]), float(row[2])) for name, row in _IPD_LAST.items()}


def seat(tree, i: int, play: str):
  """The parameters that play seat i (the shared set in self-play)."""
  return tree if play == 'self_play' else jax.tree.map(lambda x: x[i], tree)


def pair_stats(game_name: str, traj) -> dict:
  """Per-seat summaries of a batch of episodes: return per step, and the game's own measure for seat 0."""
  out = {'return_0': traj.rewards[:, 0].mean(), 'return_1': traj.rewards[:, 1].mean()}
  if game_name == 'coin_game':
    # Of the coins seat 0 picked up, the share that were its own (LOLA's 'own coin' measure).
    own, other = traj.info['own_pickup'][..., 0].sum(), traj.info['other_pickup'][..., 0].sum()
    out['own_coin_ratio_0'] = own / jnp.maximum(own + other, 1.0)
  elif game_name == 'ipd':
    coop = traj.info['cooperate']  # [T, B, 2]: 1 where the seat cooperated.
    out['cooperation_0'] = coop[..., 0].mean()
    # Over whole episodes (`ipd_cooperation_table` reads the policy at step 1 only): seat 0's cooperation at
    # each step, and how often seat 0 cooperates after each joint action of the step before (its own first),
    # with the number of such steps (0 visits gives 0).
    out['cooperation_by_step_0'] = coop[..., 0].mean(1)
    before, after = coop[:-1], coop[1:, :, 0]
    for name, (me, opp) in _IPD_JOINT.items():
      seen = (before[..., 0] == me) & (before[..., 1] == opp)
      visits = seen.sum().astype(jnp.float32)
      out[f'after_{name}_visits_0'] = visits
      out[f'after_{name}_cooperation_0'] = jnp.sum(after * seen) / jnp.maximum(visits, 1.0)
  elif game_name == 'negotiation':
    out['max_sum_ratio'] = traj.rewards.sum() / traj.info['max_sum'].sum()
  return out


def ipd_cooperation_table(agent, actor_params) -> dict[str, jax.Array]:
  """P(C | start) and P(C | last joint action) for histories of length one."""

  def p_cooperate(logits):
    return jax.nn.softmax(logits[0])[0]

  carry = agent.initial_carry()
  carry_1, logits = agent.actor_step(actor_params, carry, jnp.zeros((4,)), 0)
  table = {'start': p_cooperate(logits)}
  for name, row in _IPD_LAST.items():
    _, logits = agent.actor_step(actor_params, carry_1, jnp.asarray(row, jnp.float32), 1)
    table[name] = p_cooperate(logits)
  return table


def evaluate_states(config, game, agent, states) -> dict:
  """Every measurement the claims rest on, as nested dicts of numpy arrays."""
  eval_game = dataclasses.replace(game, episode_length=config.eval_episode_length)
  rollout = train_lib.make_rollout(eval_game, agent, config.eval_envs)
  key = jax.random.PRNGKey(config.seed + 1)
  play = config.play
  out = {'self_play': {}, 'fixed': {}, 'league': {}, 'ipd_table': {}}

  @jax.jit
  def self_play(state):
    return jax.vmap(lambda s: pair_stats(config.game, rollout(train_lib.stack_seats(s.actor, play), key)))(
      state
    )

  @functools.partial(jax.jit, static_argnums=1)  # One compile per scripted opponent, shared by methods.
  def versus_fixed(state, policy):
    def one(s):
      actor0 = seat(s.actor, 0, play)
      actor2 = jax.tree.map(lambda x: jnp.stack([x, x]), actor0)  # Seat 1's policy is replaced.
      return pair_stats(config.game, rollout(actor2, key, opponent=policy))

    return jax.vmap(one)(state)

  @jax.jit
  def league(row_state, col_state):
    """Seat 0 from every seed of `row`, seat 1 from every seed of `col`: [seeds, seeds]."""

    def one(a, b):
      actor2 = jax.tree.map(lambda x, y: jnp.stack([x, y]), seat(a.actor, 0, play), seat(b.actor, 1, play))
      return pair_stats(config.game, rollout(actor2, key))

    return jax.vmap(lambda a: jax.vmap(lambda b: one(a, b))(col_state))(row_state)

  fixed = game.fixed_policies()
  for name, state in states.items():
    out['self_play'][name] = jax.device_get(self_play(state))
    out['fixed'][name] = {p: jax.device_get(versus_fixed(state, fixed[p])) for p in config.eval_opponents}
    if config.game == 'ipd':
      table = jax.vmap(lambda actor: ipd_cooperation_table(agent, seat(actor, 0, play)))(state.actor)
      out['ipd_table'][name] = jax.device_get(table)
  for row in states:
    for col in states:
      out['league'][f'{row} vs {col}'] = jax.device_get(league(states[row], states[col]))
  return out


def _mean_self(stats) -> float:
  return float(np.mean([stats['return_0'], stats['return_1']]))


def _offdiag_mean(matrix) -> float:
  n = matrix.shape[0]
  return float(matrix[~np.eye(n, dtype=bool)].mean()) if n > 1 else float(matrix.mean())


def claims_for(config, ev) -> list[results.Claim]:
  """The acceptance claims of `config.acceptance`, measured on `ev`. The thresholds live in the config."""
  acc, game = config.acceptance, config.game
  naive, aligned = config.claim_methods.naive, config.claim_methods.aligned
  at_least, at_most = results.Claim.at_least, results.Claim.at_most
  if game == 'ipd':
    table = ev['ipd_table'][aligned]
    tft = (table['CC'] >= acc.tft_p_cc) & (table['CD'] <= acc.tft_p_cd)
    return [
      at_most(
        'naive learners defect (mean return per step)',
        paper=-2.0,
        measured=_mean_self(ev['self_play'][naive]),
        threshold=acc.naive_max_return,
        unit='reward/step',
      ),
      at_least(
        'Advantage Alignment cooperates (mean return per step)',
        paper=-1.0,
        measured=_mean_self(ev['self_play'][aligned]),
        threshold=acc.aligned_min_return,
        unit='reward/step',
      ),
      at_least(
        'Advantage Alignment is tit-for-tat-like (seeds)',
        paper='reciprocity',
        measured=float(tft.sum()),
        threshold=acc.tft_min_seeds,
        unit=f'of {tft.size} seeds',
        note=f'seeds with P(C|CC) >= {acc.tft_p_cc} and P(C|CD) <= {acc.tft_p_cd}',
      ),
    ]
  if game == 'coin_game':
    return [
      at_least(
        'AdAlign self-play own-coin ratio',
        paper=0.70,
        measured=float(ev['self_play'][aligned]['own_coin_ratio_0'].mean()),
        threshold=acc.aligned_min_own_coin,
        unit='ratio',
        note='league: AdAlign 0.70-0.87, LOQA 0.91',
      ),
      at_least(
        'AdAlign self-play reward per step',
        paper=0.177,
        measured=_mean_self(ev['self_play'][aligned]),
        threshold=acc.aligned_min_return,
        unit='reward/step',
      ),
      at_least(
        'AdAlign is not exploited by always-defect',
        paper=-0.103,
        measured=float(ev['fixed'][aligned]['always_defect']['return_0'].mean()),
        threshold=acc.aligned_min_vs_defect,
        unit='reward/step',
      ),
      at_most(
        'naive self-play own-coin ratio',
        paper=0.5,
        measured=float(ev['self_play'][naive]['own_coin_ratio_0'].mean()),
        threshold=acc.naive_max_own_coin,
        unit='ratio',
      ),
    ]
  if game == 'negotiation':
    return [
      at_least(
        'AdAlign max-sum ratio',
        paper='cooperative',
        measured=float(ev['self_play'][aligned]['max_sum_ratio'].mean()),
        threshold=acc.aligned_min_ratio,
        unit='of best total',
      ),
      at_most(
        'naive max-sum ratio',
        paper=0.60,
        measured=float(ev['self_play'][naive]['max_sum_ratio'].mean()),
        threshold=acc.naive_max_ratio,
        unit='of best total',
        note='greedy play gives 0.60',
      ),
    ]
  return []


def plot_training(workdir: str, config) -> list[str]:
  rows = metrics_lib.read_metrics(workdir)
  if not rows:
    return []
  measure = {'ipd': 'cooperation', 'coin_game': 'own_coin_ratio', 'negotiation': 'max_sum_ratio'}[config.game]
  plots = []
  for key, label in (('return_per_step', 'return per step'), (measure, measure.replace('_', ' '))):
    name = f'{key}.png'
    results.plot_curves(
      os.path.join(workdir, name),
      results.metric_curves(rows, list(config.methods), key),
      xlabel='update',
      ylabel=label,
      title=f'{config.game}: {label} over training',
    )
    plots.append(name)
  return plots


def _summary(ev) -> dict:
  """JSON-able means (and per-seed lists) of every measurement."""

  def conv(x):
    if isinstance(x, dict):
      return {k: conv(v) for k, v in x.items()}
    arr = np.asarray(x, dtype=np.float64)
    return {'mean': float(arr.mean()), 'per_seed': arr.tolist()} if arr.ndim == 1 else arr.tolist()

  return conv(ev)


def evaluate_and_report(config, workdir, game, agent, states, *, train_seconds, start_time):
  ev = evaluate_states(config, game, agent, states)
  claims = claims_for(config, ev)
  plots = plot_training(workdir, config)
  summary = _summary(ev)
  if jax.process_index() == 0:
    results.write_results(
      workdir,
      project='opponent_shaping',
      experiment=config.experiment,
      claims=claims,
      plots=plots,
      wall_clock_s=time.time() - start_time,
      extra={
        'train_seconds': train_seconds,
        'evaluation': summary,
        'env_steps': config.updates
        * train_lib.env_steps_per_update(config)
        * config.num_seeds
        * len(config.methods),
      },
    )
  return ev, claims
