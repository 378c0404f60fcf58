"""Advantage Alignment (arXiv 2406.14662) on the memory-1 iterated prisoner's dilemma, tabular agents.

Two independent learners with softmax tables over (start, CC, CD, DC, DD) and time-indexed value tables,
trained by policy gradient on GAE advantages; the naive learner (beta = 0) against Advantage Alignment in
the paper's form (beta = 1), same seeds.

    python -m opponent_shaping.main --config=opponent_shaping/configs/default.py:smoke --workdir=/tmp/os

Expected (smoke, 4 seeds, about a minute on 2 CPU cores): naive <= -1.9 per step (mutual defection);
Advantage Alignment >= -1.6 with P(C|CC) >= 0.8 and P(C|CD) <= 0.5 in at least 3 of 4 seeds.
"""

import ml_collections
from ml_collections import config_dict

from common import config as config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, seeds=0, updates=0)
  c = ml_collections.ConfigDict()
  c.experiment = 'ipd_tabular'
  c.seed = 0
  c.game = 'ipd'
  c.game_kwargs = ml_collections.ConfigDict({'episode_length': 16})
  c.arch = 'tabular'
  c.hidden = 64
  c.play = 'independent'  # or 'self_play': one parameter set in both seats.
  # Self-play against a buffer of past selves (research note §1.2, §3.2, pitfall 11), off with size 0: a ring
  # of `size` snapshots of the learner (actor and critic), one taken every `every` updates; in a fixed
  # fraction `frac` of the environments seat 1 is a past self drawn uniformly from the buffer (frozen, not
  # trained). The authors' Coin Game agents: capacity 10 000, a snapshot every 10 updates.
  c.past_selves = ml_collections.ConfigDict({'size': 0, 'every': 10, 'frac': 0.5})
  # Method name -> Advantage Alignment weight beta; beta = 0 is the naive (selfish) learner.
  c.methods = ml_collections.ConfigDict({'naive': 0.0, 'advantage_alignment': 1.0})
  c.claim_methods = ml_collections.ConfigDict({'naive': 'naive', 'aligned': 'advantage_alignment'})
  c.loss = 'pg'  # 'pg' (Advantage Alignment) or 'ppo' (Proximal Advantage Alignment).
  c.ppo_epochs = 4
  c.clip_eps = 0.2
  c.gamma = 0.96
  c.lam = 0.95
  c.normalize = 'std'  # Advantages divided by their batch std ('meanstd' as the Melting Pot code; 'none').
  c.alignment = ml_collections.ConfigDict()
  c.alignment.past = 'discounted'  # Paper. Code variants: 'running_mean', 'inclusive_discounted'.
  c.alignment.mask = 'none'  # Coin Game code: 'opp_positive_past' (with past 'inclusive_discounted').
  c.alignment.past_discount = config_dict.placeholder(float)  # For 'inclusive_discounted'; None: 0.9 gamma.
  c.actor_lr = 1e-2
  c.critic_lr = 1e-1  # The critic must learn fast (research note, pitfall 1).
  c.critic_steps = 1
  c.entropy = 0.0
  c.grad_clip = 100.0
  c.num_envs = 256
  c.num_seeds = 8
  # Devices that split each seed's environments (the mesh's batch axis); the others split the seeds. 1: the
  # seeds alone split over the devices. Must divide the device count and num_envs.
  c.batch_shards = 1
  c.updates = 1500
  c.log_every = 100
  c.checkpoint_every = 500
  c.eval_envs = 1024
  c.eval_episode_length = 16
  c.eval_opponents = ('always_cooperate', 'always_defect', 'tit_for_tat')
  c.acceptance = ml_collections.ConfigDict(
    {
      'naive_max_return': -1.9,
      'aligned_min_return': -1.6,
      'tft_p_cc': 0.8,
      'tft_p_cd': 0.5,
      'tft_min_seeds': 6,
    }
  )
  if arg.smoke:
    c.num_seeds = 4
    c.updates = 1000
    c.checkpoint_every = 500
    c.acceptance.tft_min_seeds = 3
  return apply_run_args(c, arg)


def apply_run_args(c, arg):
  """The `seeds=N,updates=N` arguments every config of this project accepts (0: keep the config's)."""
  if arg.seeds:
    c.num_seeds = arg.seeds
  if arg.updates:
    c.updates = arg.updates
  return c


def shrink_for_smoke(c):
  """The `smoke` form of a GPU config: a CPU plumbing check (tiny GRU, 20 updates), not a reproduction."""
  c.hidden = 16
  c.num_envs = 64
  c.num_seeds = 2
  c.updates = 20
  c.log_every = 10
  c.checkpoint_every = 10
  c.eval_envs = 64
  return c
