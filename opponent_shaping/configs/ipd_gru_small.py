"""Reduced-scale GRU IPD that runs on a CPU: 16-step episodes, hidden 16, 128 envs, 4 seeds, with the
settings that kept the GRU policies from collapsing in a CPU sweep (actor Adam 3e-4, critic 1e-2 with 10
steps per update, no entropy bonus). The H200 runs of `ipd_gru.py` (actor 1e-3 to 3e-3, 2 critic steps)
collapsed to always-defect for both methods; this config isolates what changed.

    python -m opponent_shaping.main --config=opponent_shaping/configs/ipd_gru_small.py --workdir=/tmp/os_small

Acceptance as for `ipd_gru.py`, scaled to 4 seeds: Advantage Alignment >= -1.25 per step and >= 3 of 4
seeds tit-for-tat-like (P(C|CC) >= 0.9, P(C|CD) <= 0.3); naive <= -1.9.
"""

from common import config as config_lib
from opponent_shaping.configs import default
from opponent_shaping.configs import ipd_gru


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, seeds=0, updates=0)
  c = ipd_gru.get_config('smoke' if arg.smoke else None)
  c.experiment = 'ipd_gru_small'
  c.game_kwargs.episode_length = 16
  c.eval_episode_length = 16
  if not arg.smoke:
    c.hidden = 16
    c.num_envs = 128
    c.num_seeds = 4
    c.updates = 1000
    c.eval_envs = 256
    c.checkpoint_every = 500
    c.acceptance.tft_min_seeds = 3
  c.actor_lr = 3e-4
  c.critic_lr = 1e-2
  c.critic_steps = 10
  c.entropy = 0.0
  c.normalize = 'std'
  return default.apply_run_args(c, arg)
