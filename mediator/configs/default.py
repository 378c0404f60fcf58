"""The static capacity game (research note §5.4; our specification keeping the paper's mechanism):
4 factories each source 4 units; supplier A is cheap (cost 1) with total capacity 5 and lost sales
(penalty 2) when over-subscribed; supplier B is dear (2.5) and unlimited; price 3. Every pure Nash
equilibrium has welfare 13.0, the optimum 15.5 (+19.2 %). A manager pays per-agent bonuses for units
from B (levels 0, 0.1, 0.2, 0.3, 0.5) and/or sends a recommended order; its reward is raw welfare minus
kappa times the payout.

    python -m mediator.main --config=mediator/configs/default.py:smoke --workdir=/tmp/mediator

Expected (smoke, CPU, under 2 minutes): raw welfare with the manager >= 1.10x without (ceiling 1.19);
manager reward >= 13.0; supplier A over-subscribed in under 20 % of games.
"""

import ml_collections

from common import config as config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, seeds=0, updates=0)
  c = ml_collections.ConfigDict()
  c.experiment = 'static_capacity_game'
  c.env = 'static'
  c.seed = 0
  c.game_kwargs = ml_collections.ConfigDict(
    {
      'num_agents': 4,
      'demand': 4,
      'capacity': 5,
      'cost_a': 1.0,
      'cost_b': 2.5,
      'lost_sale': 2.0,
      'price': 3.0,
      'bonus_levels': (0.0, 0.1, 0.2, 0.3, 0.5),
    }
  )
  c.managers = ('none', 'incentives', 'signal', 'both')  # 'none' is the naive MARL baseline.
  c.claim_manager = 'incentives'
  c.kappa = 1.0  # Manager reward = raw - kappa * payout (the paper's exact weighting is unknown).
  c.batch = 256
  c.factory_lr = 0.05
  c.manager_lr = 0.02
  c.manager_every = 2  # The manager learns on a slower timescale than the factories.
  c.entropy = 0.0
  c.num_seeds = 8
  c.updates = 3000
  c.log_every = 100
  c.checkpoint_every = 1000
  c.eval_batch = 4096
  c.acceptance = ml_collections.ConfigDict(
    {
      'nash_welfare': 13.0,
      'optimum_welfare': 15.5,
      'nash_tolerance': 0.5,
      'min_raw_ratio': 1.10,
      'min_manager_reward': 13.0,
      'max_oversubscribed': 0.2,
    }
  )
  if arg.smoke:
    c.num_seeds = 4
    c.updates = 2000
  return apply_run_args(c, arg)


def apply_run_args(c, arg):
  """The `seeds=N,updates=N` arguments every config of this project accepts (0: keep the config's)."""
  if arg.seeds:
    c.num_seeds = arg.seeds
  if arg.updates:
    c.updates = arg.updates
  return c
