"""The `gpu` experiment of "Don't flatten, tokenize!" (Sokar et al., arXiv 2410.01930) on MinAtar.

DQN (common.rl.dqn, double DQN, Huber loss, Adam) with the MinAtar encoder (2 x Conv(16, 3x3, SAME) + ReLU)
followed by one penultimate variant (rl_softmoe.softmoe.VARIANTS): V0 flatten H=128, V1 flatten x4,
V2 SoftMoE-4 PerConv, V3 single expert x4 PerConv, V4 SoftMoE-4 PerSample; Breakout, Asterix and
SpaceInvaders (gymnax MinAtar) x 8 seeds, the seeds vmapped in one program per (game, variant).

    python -m rl_softmoe.main --config=rl_softmoe/configs/default.py --workdir=runs/gpu/rl_softmoe/minatar
    python -m rl_softmoe.main --config=rl_softmoe/configs/default.py:smoke --workdir=/tmp/rs_smoke

Budget (measured on an H200, 2026-11-27): 15 (game, variant) sub-runs of 100k env steps (4 envs, one update
every 4 env steps: 25k vector steps and 25k updates of batch 32, 8 seeds vmapped) took 24-58 s each, 602 s
in all, about 11 minutes end to end with compilation (rl_softmoe/README.md); `:steps=N` (env steps) or
`:seeds=N` shrink it.

Expected (acceptance, criteria fixed here before any run):
  A1 IQM(V2) > IQM(V4) and IQM(V3) > IQM(V4), each with P(improvement) > 0.5;
  A2 IQM(V2) >= IQM(V1) and IQM(V3) >= IQM(V1);
  A3 |IQM(V3) - IQM(V2)| <= 0.10 normalised units, or overlapping 95 % CIs;
  A4 every variant's mean Breakout return >= 3x the random policy's.
Scores are normalised per game as (R - R_random) / (R_ref - R_random): R_random is measured by a uniformly
random policy inside the run, R_ref is `max_reference` below (rough final returns of a well-tuned DQN on
MinAtar, a fixed scale, not a claim).

`:smoke` (CPU, under 2 minutes): Breakout, 2 seeds, V0 and V2, 4000 env steps with a 1000-transition
replay (it wraps) and a target sync every 400 env steps (10 syncs, checked).
"""

import ml_collections

from common import config as config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, seeds=0, steps=0)
  c = ml_collections.ConfigDict()
  c.experiment = 'minatar_penultimate_variants'
  c.seed = 0
  c.num_seeds = 8
  c.env = 'minatar'  # or 'atari' (ale-py, configs/atari100k.py)
  c.games = ('Breakout-MinAtar', 'Asterix-MinAtar', 'SpaceInvaders-MinAtar')
  c.variants = ('V0', 'V1', 'V2', 'V3', 'V4')
  # Network: encoder ('minatar': conv_layers x Conv(conv_features, 3x3); 'nature': Nature CNN) and penultimate.
  c.encoder = 'minatar'
  c.conv_features = 16
  c.conv_layers = 2
  c.hidden = 128  # H.
  c.scale = 4  # n: experts of V2/V4, width factor of V1/V3.
  # Agent: 'dqn' (scalar double DQN from common.rl.dqn.dqn_preset) or 'der' (der_preset: C51, dueling,
  # n-step, prioritized replay; the fields of `der` below). The fields after `der` override either preset.
  c.agent = 'dqn'
  c.der = ml_collections.ConfigDict(
    {
      'n_step': 10,
      'num_atoms': 51,  # 1: a scalar head (no C51).
      'v_min': -10.0,
      'v_max': 10.0,
      'prioritized': True,
      'dueling': True,
      'noisy': False,  # NoisyNet head layers (common.rl.networks.NoisyDense); DER.gin has them.
      # sigma0 of the noisy layers (sigma = sigma0 / sqrt(fan-in) at init): 0.1 is DER's (van Hasselt et al.
      # 2019) and Dopamine's JAX NoisyNetwork's, used by DER.gin and full_rainbow.gin; 0.5 is Fortunato et
      # al.'s and Rainbow's (Hessel et al. 2018). Before 2026-11-28 this was fixed at 0.5.
      'noisy_sigma0': 0.1,
    }
  )  # Used by agent 'der' only (DER.gin values; configs/paper.py sets Rainbow's).
  # Agent (static: common.rl.dqn.Config).
  c.num_envs = 4
  c.total_env_steps = 100_000
  c.buffer_capacity = 50_000
  c.batch_size = 32
  c.double = True
  c.obs_storage_dtype = 'uint8'  # MinAtar frames are 0/1 planes.
  # Agent (traced: common.rl.dqn.HParams), step counts in env steps.
  c.learning_rate = 2.5e-4
  c.adam_eps = 3.125e-4
  c.gamma = 0.99
  c.eps_end = 0.01
  c.eps_decay_steps = 25_000
  c.eps_eval = 0.001
  c.learning_starts = 5_000
  c.update_period = 4
  c.target_update_period = 2_000
  # Loop, evaluation and results.
  c.log_every = 5_000  # Env steps per chunk (one metrics row, one possible checkpoint).
  c.checkpoint_every = 50_000  # Env steps; a multiple of log_every.
  # False: no checkpoint at the last training step (the evaluation follows at once and the sub-run then drops
  # its checkpoints); saves a replay-sized write and keeps one checkpoint on disk at a time (2026-11-28).
  c.checkpoint_final = True
  c.eval_envs = 4  # Atari only: parallel games of the final evaluation (MinAtar evaluates on num_envs envs).
  # Atari only: worker processes that step the evaluation's emulators in parallel (common.rl.atari
  # `host_workers`; same scores, bit for bit); 0 steps them in this process, one after the other.
  c.eval_host_workers = 0
  c.eval_iterations = 1_000  # Vector steps of the final evaluation (>= 1000: every env ends an episode).
  # True: count each evaluation env's first game only and stop once every env has ended one (eval_iterations
  # is then a cap); False: every game that ends within eval_iterations vector steps.
  c.eval_first_game = False
  # The games whose positions name each game's random keys (empty: `games` itself). A run of a subset of a
  # larger config's games passes the larger list here, so each game gets the keys it has in the full run
  # (rl_softmoe/tools/parallel_subruns.sh runs one process per game and variant this way).
  c.key_games = ()
  c.max_reference = ml_collections.ConfigDict(
    {'Breakout': 15.0, 'Asterix': 20.0, 'SpaceInvaders': 80.0, 'Freeway': 60.0, 'Seaquest': 20.0}
  )
  c.acceptance = ml_collections.ConfigDict(
    {
      'min_improvement_probability': 0.5,  # A1: P(X > Y) must exceed this.
      'equivalence_tolerance': 0.10,  # A3, normalised units.
      'min_random_ratio': 3.0,  # A4.
      'bootstrap_reps': 2000,
      'confidence': 0.95,
    }
  )
  if arg.smoke:
    c.num_seeds = 2
    c.games = ('Breakout-MinAtar',)
    c.variants = ('V0', 'V2')
    c.total_env_steps = 4_000
    c.buffer_capacity = 1_000
    c.learning_starts = 400
    c.eps_decay_steps = 1_000
    c.target_update_period = 400
    c.log_every = 1_000
    c.checkpoint_every = 2_000
  if arg.seeds:
    c.num_seeds = arg.seeds
  if arg.steps:
    c.total_env_steps = arg.steps
  return c
