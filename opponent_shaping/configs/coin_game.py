"""Advantage Alignment on the 3x3 Coin Game with the LOQA/AdAlign rules (one coin, owner alternating on
pickup, 4 moves, +1 for any pickup, -2 to the owner when the other takes it), GRU agents in self-play.
Hyper-parameters as in the authors' checkpoints (research note §3.2): batch 512, 50-step episodes,
gamma 0.96, actor Adam 3e-3, critic 1e-2, entropy 0.1, grad clip 10. Evaluation on 16-step episodes, as
in the authors' league.

    python -m opponent_shaping.main --config=opponent_shaping/configs/coin_game.py --workdir=/tmp/os_coin

Expected on one H100/H200 (4 seeds): Advantage Alignment self-play own-coin ratio >= 0.75 and >= 0.15
reward per step, >= -0.15 per step against always-defect; naive own-coin ratio <= 0.60. The authors'
league: AdAlign 0.70-0.87 own-coin, LOQA 0.91.
"""

from common import config as config_lib
from opponent_shaping.configs import default


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, seeds=0, updates=0, size=3)
  c = default.get_config(None)
  c.experiment = 'coin_game'
  c.game = 'coin_game'
  c.game_kwargs = config_lib.ml_collections.ConfigDict({'size': arg.size, 'episode_length': 50})
  c.arch = 'gru'
  c.hidden = 64
  c.play = 'self_play'
  c.num_envs = 512
  c.num_seeds = 4
  c.updates = 3000
  c.actor_lr = 3e-3
  c.critic_lr = 1e-2
  c.critic_steps = 2
  c.entropy = 0.1
  c.grad_clip = 10.0
  c.normalize = 'meanstd'  # As the official PAA code: a biased critic must not bias the alignment term.
  c.eval_episode_length = 16
  c.eval_opponents = ('always_cooperate', 'always_defect', 'random')
  c.acceptance = config_lib.ml_collections.ConfigDict(
    {
      'aligned_min_own_coin': 0.75,
      'aligned_min_return': 0.15,
      'aligned_min_vs_defect': -0.15,
      'naive_max_own_coin': 0.60,
    }
  )
  if arg.smoke:
    default.shrink_for_smoke(c)
  return default.apply_run_args(c, arg)
