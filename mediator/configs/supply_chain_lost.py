"""The supply chain with A's unfilled excess lost (as in the static capacity game: never delivered, not
paid, penalised like a lost sale) instead of delivered late. This restores the over-use dilemma that the
`supply_chain.py` chain lacks (there factories buy only from A, with or without a manager: see README).

    python -m mediator.main --config=mediator/configs/supply_chain_lost.py --workdir=/tmp/mediator_lost

Expected: the same acceptance as supply_chain.py (raw reward >= +10 % over no manager, payout <= 10 % of
welfare, manager reward above the no-manager baseline, supplier-A share lower with the manager).

The LIO-style differentiable incentive manager (issue #9's stronger baseline; `lio.py`, keys `lio_max_bonus`
and `lio_lookahead_lr` in supply_chain.py) against the baseline:

    python -m mediator.main --config=mediator/configs/supply_chain_lost.py --workdir=/tmp/mediator_lio \
      "--config.managers=('none','lio')" --config.claim_manager=lio
"""

from common import config as config_lib
from mediator.configs import default
from mediator.configs import supply_chain


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, seeds=0, updates=0, envs=0)
  c = supply_chain.get_config('smoke' if arg.smoke else None)
  c.experiment = 'supply_chain_lost'
  c.game_kwargs.excess_a = 'lost'
  if arg.envs:
    c.num_envs = arg.envs
    c.eval_envs = arg.envs
  return default.apply_run_args(c, arg)
