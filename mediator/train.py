"""Training and evaluation of factories with and without a manager, every variant on the same seeds.

`config.env = 'static'` runs the one-shot capacity game (`static_train.py`, REINFORCE);
`config.env = 'sequential'` the supply chain (`sequential_train.py`, IPPO factories and a PPO manager).
Every variant in `config.managers` trains in one process so the claims compare them directly.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from common import checkpoint
from common import metrics as metrics_lib
from common import results
from common.errors import ConfigError
from mediator import sequential_train
from mediator import static_game
from mediator import static_train
from mediator import supply_chain

METRICS = ('raw_reward', 'agents_reward', 'manager_reward', 'payout', 'oversubscribed', 'supplier_a_share')


ENVS = {
  'static': (static_game.CapacityGame, static_train, static_train.uses),
  'sequential': (supply_chain.SupplyChain, sequential_train, sequential_train.check_manager),
}


def make_game(config):
  """(environment, its training module) for `config.env`."""
  if config.env not in ENVS:
    raise ConfigError(f"unknown env '{config.env}' (valid: {', '.join(ENVS)})")
  env_cls, module, _ = ENVS[config.env]
  return env_cls(**config.game_kwargs), module


def validate(config) -> None:
  make_game(config)
  for manager in config.managers:
    ENVS[config.env][2](manager)
  if 'none' not in config.managers or config.claim_manager not in config.managers:
    raise ConfigError(
      f"managers {tuple(config.managers)} must include 'none' (the baseline) and "
      f"claim_manager '{config.claim_manager}'"
    )
  if config.kappa < 0:
    raise ConfigError(f'kappa must be >= 0, got {config.kappa}')
  if config.manager_every < 1:
    raise ConfigError(f'manager_every must be >= 1, got {config.manager_every}')


def train_and_evaluate(config, workdir: str):
  validate(config)
  start_time = time.time()
  game, module = make_game(config)
  seeds = jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)
  init = {m: module.make_init(config, game, m) for m in config.managers}
  chunk = {m: module.make_chunk(config, game, m) for m in config.managers}
  with checkpoint.Checkpointer(workdir, every=config.checkpoint_every, keep=2) as ckpt:
    states, start = ckpt.restore_or_init({m: init[m](seeds) for m in config.managers})
    with metrics_lib.MetricWriter(workdir, resume_step=start) as writer:
      for begin, end in metrics_lib.chunks(config.updates, config.log_every, start=start):
        row = {}
        for m in config.managers:
          states[m], stats = chunk[m](states[m], end - begin)
          row[m] = jax.tree.map(lambda x: x.mean(), stats)
        writer.write(end, {'train': row})
        ckpt.save(end, states, force=end == config.updates)
  key = jax.random.PRNGKey(config.seed + 1)
  ev = {m: jax.device_get(module.make_evaluate(config, game, m)(states[m], key)) for m in config.managers}
  claims = claims_for(config, ev) if config.env == 'static' else sequential_claims(config, ev)
  plots = plot_training(workdir, config)
  summary = {
    m: {k: {'mean': float(np.mean(v)), 'per_seed': np.asarray(v).tolist()} for k, v in e.items()}
    for m, e in ev.items()
  }
  gains = paper_comparison(config, ev)
  if jax.process_index() == 0:
    results.write_results(
      workdir,
      project='mediator',
      experiment=config.experiment,
      claims=claims,
      plots=plots,
      wall_clock_s=time.time() - start_time,
      extra={'evaluation': summary, 'gains_vs_no_manager_percent': gains},
    )
  return ev, claims


def paper_comparison(config, ev) -> dict:
  """The paper's three percentages (raw, agents', manager's reward vs no manager), ours beside theirs."""
  base = float(np.mean(ev['none']['raw_reward']))
  ours = ev[config.claim_manager]
  return {
    name: {'paper': paper, 'ours': 100 * (float(np.mean(ours[key])) / base - 1)}
    for name, key, paper in (
      ('raw reward', 'raw_reward', 22.2),
      ('agents reward', 'agents_reward', 23.8),
      ('manager reward', 'manager_reward', 20.1),
    )
  }


def sequential_claims(config, ev) -> list[results.Claim]:
  acc = config.acceptance
  none, ours = ev['none'], ev[config.claim_manager]
  base = float(np.mean(none['raw_reward']))
  raw, manager = float(np.mean(ours['raw_reward'])), float(np.mean(ours['manager_reward']))
  share_none, share = float(np.mean(none['supplier_a_share'])), float(np.mean(ours['supplier_a_share']))
  return [
    results.Claim.at_least(
      'manager raises raw reward',
      paper=1.222,
      measured=raw / base,
      threshold=acc.min_raw_ratio,
      unit='x no manager',
    ),
    results.Claim(
      'supplier-A share falls with the manager',
      paper='diversified suppliers',
      measured=share,
      passed=share < share_none,
      unit='share of units from A',
      criterion=f'< {share_none:.3f} (no manager)',
    ),
    results.Claim.at_most(
      'payout as a fraction of welfare',
      paper=0.016,
      measured=float(np.mean(ours['payout_fraction'])),
      threshold=acc.max_payout_fraction,
      unit='payout / raw reward',
    ),
    results.Claim(
      "manager's reward above the no-manager baseline",
      paper=1.201,
      measured=manager / base,
      passed=manager > base,
      unit='x no-manager raw reward',
      criterion='> 1',
    ),
  ]


def claims_for(config, ev) -> list[results.Claim]:
  acc = config.acceptance
  base = float(np.mean(ev['none']['raw_reward']))
  ours = ev[config.claim_manager]
  raw, manager = float(np.mean(ours['raw_reward'])), float(np.mean(ours['manager_reward']))
  over = float(np.mean(ours['oversubscribed']))
  ceiling = acc.optimum_welfare / acc.nash_welfare
  return [
    results.Claim(
      'no manager: factories reach the Nash welfare',
      paper=acc.nash_welfare,
      measured=base,
      passed=abs(base - acc.nash_welfare) <= acc.nash_tolerance,
      unit='raw welfare',
      criterion=f'within {acc.nash_tolerance} of {acc.nash_welfare}',
    ),
    results.Claim.at_least(
      'manager raises raw welfare',
      paper=1.222,
      measured=raw / base,
      threshold=acc.min_raw_ratio,
      unit='x no manager',
      note=f'ceiling {ceiling:.3f}; paper +22.2 % in its own game',
    ),
    results.Claim.at_least(
      "manager's reward",
      paper=acc.nash_welfare,
      measured=manager,
      threshold=acc.min_manager_reward,
      unit='raw - kappa payout',
    ),
    results.Claim(
      'supplier A over-subscribed',
      paper='rarely',
      measured=over,
      passed=over < acc.max_oversubscribed,
      unit='fraction of games',
      criterion=f'< {acc.max_oversubscribed}',
    ),
  ]


def plot_training(workdir: str, config) -> list[str]:
  title = 'capacity game' if config.env == 'static' else 'supply chain'
  rows = metrics_lib.read_metrics(workdir)
  plots = []
  for key in ('raw_reward', 'manager_reward', 'supplier_a_share', 'payout'):
    name = f'{key}.png'
    results.plot_curves(
      os.path.join(workdir, name),
      results.metric_curves(rows, list(config.managers), key),
      xlabel='update',
      ylabel=key.replace('_', ' '),
      title=f'{title}: {key.replace("_", " ")}',
    )
    plots.append(name)
  return plots
