"""Neuroplastic Expansion vs TD3 (Liu et al., ICLR 2025, arXiv 2410.07994): the shared defaults.

    python -m rl_plasticity.main --config=rl_plasticity/configs/default.py:smoke --workdir=/tmp/rp_smoke

`:smoke` (CPU, under 2 minutes): gymnax Pendulum-v1, 2 seeds x {TD3, NE (paper variant)}, actor 2x32,
critic 2x(2x64), 8000 env steps (1000 random), replay ratio 1, delta = 100 updates, growth from ER 20 %
density to 100 % over the first 60 % of updates, experience review on with a threshold that fires.
`:smoke,all` runs every method (td3, ne, ne_code, redo, reset, injection) at the same scale (CPU, about
2 minutes). Expected: the invariants hold (masked entries exactly zero, final density at the target,
finite losses); returns improve on the random policy (about -1200 per episode); the claims on Brax tasks
are checked by configs/gpu.py (they cannot be measured on Pendulum: its returns are negative).

Without `smoke` this is halfcheetah (Brax, MJX backend) with the paper-variant NE and TD3, 8 seeds,
300k env steps; configs/gpu.py is the reduced reproduction and configs/paper.py the paper's scale.
"""

import ml_collections

from common import config as config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, all=False, seeds=0, steps=0, env='')
  c = ml_collections.ConfigDict()
  c.experiment = 'ne_vs_td3'
  c.seed = 0
  c.num_seeds = 8
  c.env = 'halfcheetah'  # envs.CHOICES: pendulum (gymnax) or a Brax task.
  c.backend = 'mjx'  # Brax backend.
  # > 0: cap MJX's line search at this many iterations (0: the task's, 50). Not bit-identical physics
  # (trajectories of a chaotic task drift apart); on a GPU each of the 50 is sequential latency.
  c.mjx_ls_iterations = 0
  c.episode_length = 0  # 0: the task's own limit (Pendulum 200, Brax 1000).
  # Tasks without termination (halfcheetah, the DM Control tasks) reset all envs together at the time limit
  # instead of computing a reset at every step (envs.py; since 2026-11-29). False: the per-step auto-reset.
  c.env_sync_resets = True
  # Methods run one after another, each with all seeds vmapped in one program: td3, ne (paper variant),
  # ne_code (the released code's switches, ne_code below), redo, reset, injection (Plasticity Injection).
  c.methods = ('td3', 'ne')
  # TD3 (Fujimoto et al. 2018; the NE code's defaults).
  c.num_envs = 1
  c.total_env_steps = 300_000
  c.learning_starts = 25_000
  c.buffer_capacity = 300_000
  c.batch_size = 256
  c.replay_ratio = 1.0  # Gradient updates per environment step.
  c.actor_hidden = (256, 256)
  c.critic_hidden = (256, 256, 256)
  c.critic_layer_norm = True  # The NE code's critic: LayerNorm on the 3rd hidden layer.
  c.learning_rate = 3e-4
  c.gamma = 0.99
  c.tau = 0.005
  c.policy_noise = 0.2
  c.noise_clip = 0.5
  c.policy_delay = 2
  c.expl_noise = 0.1
  c.obs_norm = True
  # The loop runs in chunks of `delta` updates; NE's topology step and the baselines' hooks run between them.
  c.delta = 1_000
  c.ne = ml_collections.ConfigDict(
    {
      'initial_density': 0.2,  # Erdos-Renyi start (the code's initial_stl_sparsity 0.8).
      'final_density': 1.0,  # Paper: grow to full size. Code: 0.75 (ne_code).
      'grow_end': 0.6,  # Fraction of updates over which the active count grows linearly.
      'prune_ratio': 0.4,  # Pruned / grown connections per step (code: 0.4).
      'prune_by': 'dormant',  # Paper: tau-dormant units first (ReDo score). Code: 'magnitude'.
      'tau': 0.1,
      'zeta': 0.0,  # Drop fraction of prune-and-regrow after growth (code: 0.2, cosine-decayed).
      'review': True,  # Experience review (oldest review_window of the buffer) when critic FAU < awaken.
      'review_awaken': 0.4,
      'review_temperature': 0.9,
      'review_window': 0.3,
      'batch_halving': False,  # Code's auto_batch: half batch when FAU < 0.9 awaken.
      'adam_count_reset': False,  # Code: each sparse matrix's Adam step count -> 0 at every growth step.
      # Paper/ours: Adam moments zeroed at pruned (so at later regrown) positions. Code: kept; they decay while
      # masked and a regrown connection starts from them (its Adam has no mask; since 2026-11-28).
      'stale_adam_moments': False,
    }
  )
  # The released code's choices (research note rl_plasticity.md, section 1), applied for method 'ne_code'.
  c.ne_code = ml_collections.ConfigDict(
    {
      'final_density': 0.75,
      'prune_by': 'magnitude',
      'zeta': 0.2,
      'batch_halving': True,
      'adam_count_reset': True,
      'stale_adam_moments': True,
    }
  )
  # every: updates, a multiple of delta. weight_scaling: ReDo's code option (default off there too): recycled
  # units' fresh incoming weights at the mean norm of the layer's other units (2026-11-29).
  c.redo = ml_collections.ConfigDict({'tau': 0.1, 'every': 10_000, 'weight_scaling': False})
  c.reset = ml_collections.ConfigDict({'every': 100_000})  # Updates; a multiple of delta.
  c.injection = ml_collections.ConfigDict({'at': 0.5})  # Plasticity Injection after this fraction of updates.
  # Logging, evaluation, checkpoints (env steps, multiples of the chunk delta / replay_ratio).
  c.log_every = 10_000
  c.eval_every = 10_000
  c.eval_episodes = 10
  c.checkpoint_every = 50_000
  c.memory_fraction = 0.9  # Refuse replay buffers above this fraction of device memory.
  c.acceptance = ml_collections.ConfigDict(
    {
      'final_fraction': 0.1,  # Claims use the evaluations in the final 10 % of training.
      'max_dormant_ratio': 0.7,  # NE critic tau=0.1 dormant fraction <= 0.7 x TD3's.
      'min_return_ratio': 0.95,  # IQM return NE / TD3 (1.05 at replay ratio 4: gpu.py:stress).
      'q_bound': 1e5,  # A seed with |mean Q| above this (or a non-finite value) diverged.
    }
  )
  if arg.smoke:
    c.env = 'pendulum'
    c.num_seeds = 2
    c.total_env_steps = 8_000
    c.learning_starts = 1_000
    c.buffer_capacity = 4_000  # Wraps (review draws from the oldest 30 % of the contents).
    c.batch_size = 64
    c.actor_hidden = (32, 32)
    c.critic_hidden = (64, 64)
    c.critic_layer_norm = False
    c.learning_rate = 1e-3
    c.delta = 100
    c.ne.review_awaken = 0.6  # Small ReLU critics sit near FAU 0.5: make the review fire.
    c.redo.every = 1_000
    c.reset.every = 2_000
    c.log_every = 1_000
    c.eval_every = 1_000
    c.eval_episodes = 4
    c.checkpoint_every = 4_000
  if arg.all:
    c.methods = ('td3', 'ne', 'ne_code', 'redo', 'reset', 'injection')
  if arg.env:
    c.env = arg.env
  if arg.seeds:
    c.num_seeds = arg.seeds
  if arg.steps:
    c.total_env_steps = arg.steps
  return c
