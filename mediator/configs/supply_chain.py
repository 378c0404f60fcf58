"""The sequential supply chain (research note §5.4, our specification): 4 factories, Poisson(4) demand,
50 steps; supplier A cheap (1.0) with 5 units per step shared pro rata, its excess arriving 2 steps late;
supplier B dear (2.5), unlimited, on time; holding 0.1, lost sale 1.0, price 3. IPPO factories with shared
parameters and an agent-id input; a PPO manager on the global state paying per-agent bonuses on units
from B. The paper's baseline is the same factories without a manager. `managers` may also list 'signal' and
'both' (the manager's per-factory recommended units from A, one-hot in the factory's observation; see
sequential_train.py); they are left out by default to keep the GPU run's time.

    python -m mediator.main --config=mediator/configs/supply_chain.py --workdir=/tmp/mediator_seq

Expected on one H100/H200 (4 seeds, under 10 minutes): raw reward at least +10 % over no manager (paper
+22.2 % in its own, unpublished supply chain); supplier-A share lower than without the manager; payout at
most 10 % of welfare; manager reward above the no-manager baseline.
"""

from common import config as config_lib
from mediator.configs import default


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, seeds=0, updates=0)
  c = default.get_config(None)
  c.experiment = 'supply_chain'
  c.env = 'sequential'
  c.game_kwargs = config_lib.ml_collections.ConfigDict(
    {
      'num_factories': 4,
      'episode_length': 50,
      'max_inventory': 20,
      'demand_rate': 4.0,
      'max_order': 6,
      'capacity_a': 5,
      'lead_a': 1,
      'late_delay_a': 2,
      'lead_b': 1,
      'holding': 0.1,
      'lost_sale': 1.0,
      'price': 3.0,
      'cost_a': 1.0,
      'cost_b': 2.5,
      'bonus_levels': (0.0, 0.1, 0.2, 0.3, 0.5),
      # The manager sees the whole state (False: the summary behind the GPU rows before 2026-11-28).
      'full_global_state': True,
    }
  )
  c.managers = ('none', 'incentives')
  # The constant per-factory bonus on units from B of the 'fixed' diagnostic (a value of bonus_levels each).
  c.fixed_bonus = (0.0, 0.0, 0.0, 0.0)
  # 'lio' (a LIO-style differentiable incentive manager, lio.py): the bound of its continuous bonus per unit
  # from B (b = lio_max_bonus · sigmoid(f_η(s)), > 0; the discrete managers' largest level is 0.5), and α,
  # the step of the factories' simulated policy-gradient update the manager differentiates through (>= 0;
  # 0 leaves only the payout's direct gradient, so the bonus can only fall). The manager's step size and
  # pace are `manager_lr` and `manager_every` (one meta-gradient step per manager update; its critic
  # learns in the same step). The factories' real update stays PPO on raw + bonus.
  c.lio_max_bonus = 0.5
  c.lio_lookahead_lr = 1.0
  c.claim_manager = 'incentives'
  c.hidden = 64
  c.num_envs = 1024
  c.num_seeds = 4
  c.updates = 500
  c.factory_lr = 3e-4
  c.manager_lr = 1e-4
  c.manager_every = 2
  c.gamma = 0.99
  c.lam = 0.95
  c.clip_eps = 0.2
  c.ppo_epochs = 4
  c.value_coef = 0.5
  c.entropy = 0.01
  c.manager_entropy = 0.01  # The manager's own entropy bonus (2026-11-28; before, it shared `entropy`).
  c.grad_clip = 1.0
  c.reward_scale = 0.1  # Learning only; every reported number is in profit units.
  c.log_every = 50
  c.checkpoint_every = 250
  c.eval_envs = 1024
  c.acceptance = config_lib.ml_collections.ConfigDict({'min_raw_ratio': 1.10, 'max_payout_fraction': 0.10})
  if arg.smoke:
    c.hidden = 16
    c.num_envs = 32
    c.num_seeds = 2
    c.updates = 10
    c.log_every = 5
    c.checkpoint_every = 5
    c.eval_envs = 32
  return default.apply_run_args(c, arg)
