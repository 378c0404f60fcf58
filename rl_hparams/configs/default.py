"""The `gpu` experiment of "On the consistency of hyper-parameter selection in value-based deep RL"
(Obando-Ceron, Araújo, Courville & Castro, arXiv 2406.17523) on MinAtar.

DER and DrQ(eps) (common.rl.dqn presets: Dopamine's Atari 100k agents, DER without noisy nets) with the
MinAtar Q-network (rl_hparams.networks), swept one hyper-parameter at a time around each agent's defaults: 10
hyper-parameters x 4 values (rl_hparams.schema grids), 3 seeds, on Breakout, Asterix and SpaceInvaders; the
low data regime (100k env steps) for both agents and the high regime (500k env steps) for DER. Each (agent,
regime, game) is one vmapped program of 31 settings x 3 seeds = 93 runs.

    python -m rl_hparams.main --config=rl_hparams/configs/default.py --workdir=runs/gpu/rl_hparams/thc_minatar
    python -m rl_hparams.main --config=rl_hparams/configs/default.py:smoke --workdir=/tmp/thc_smoke

The sweep resumes: rerun the same command after an interruption (or with `--config.time_budget_s=N`, which
stops cleanly between programs) and finished programs are skipped.

Expected (criteria fixed here before any run):
  B1 THC recomputed from the saved sweep.csv is bit-identical (and the THC unit tests pass in CI);
  B2 mean THC across agents < mean THC across data regimes;
  B3 mean THC across games >= mean THC across data regimes;
  B4 (report only) the most tuning-sensitive hyper-parameters; the paper names epsilon and update period.
THC: midpoint ranks with ties where 95 % bootstrap CIs of the IQM overlap, rank spread over settings divided
by (k - 1) (rl_hparams.thc; the paper's exact normalisation could not be read: `thc.normalization`).

`:smoke` (CPU, about 2 minutes): Breakout, 2 hyper-parameters x 2 values x 2 seeds, both agents in a 1k-step
low regime and DER in a 2k-step high regime (minimum replay 200, horizon 3, batch 16, width 32), THC end to
end from the CSV.
"""

import ml_collections

from common import config as config_lib

SWEEP_10 = (
  'learning_rate',
  'adam_eps',
  'gamma',
  'epsilon_train',
  'target_update_period',
  'update_horizon',
  'update_period',
  'batch_size',
  'weight_decay',
  'min_replay_history',
)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, seeds=0, budget=0, high=0)
  c = ml_collections.ConfigDict()
  c.experiment = 'thc_minatar'
  c.env = 'minatar'
  c.seed = 0
  c.num_seeds = 3
  c.games = ('Breakout-MinAtar', 'Asterix-MinAtar', 'SpaceInvaders-MinAtar')
  c.regimes = ml_collections.ConfigDict({'low': 100_000, 'high': 500_000})  # Env (agent) steps.
  c.runs = ('DER:low', 'DrQ_eps:low', 'DER:high')  # agent:regime pairs.
  # {hyper-parameter: values}; an empty tuple sweeps the schema's default grid (rl_hparams.schema).
  c.sweep = ml_collections.ConfigDict({name: () for name in SWEEP_10})
  c.default_overrides = ml_collections.ConfigDict()  # Replace agent defaults (smoke only).
  # Agent sizes (static): one env as in Atari 100k; the replay keeps the last 100k transitions.
  c.num_envs = 1
  c.buffer_capacity = 100_000
  c.conv_impl = 'matmul'  # 'xla': nn.Conv (a grouped convolution once vmapped over runs); same function.
  c.augment_pad = 1  # DrQ(eps) random shift on 10x10 MinAtar frames (4 on 84x84 Atari frames).
  # Loop and evaluation.
  c.log_every = 10_000  # Env steps per chunk (one metrics row).
  c.checkpoint_every = 0  # 0: resume at program granularity (replay buffers of ~100 runs are gigabytes).
  c.devices = 0  # Local devices running programs in parallel (0: all of them).
  c.time_budget_s = 0.0  # > 0: stop (resumably) before a new program once this many seconds have passed.
  c.eval_envs = 16
  c.eval_iterations = 1_000  # Vector steps of the final evaluation (>= 1000: every MinAtar episode ends).
  # Score normalisation: (R - R_random) / (R_ref - R_random), R_random measured in the run.
  c.max_reference = ml_collections.ConfigDict(
    {'Breakout': 15.0, 'Asterix': 20.0, 'SpaceInvaders': 80.0, 'Freeway': 60.0, 'Seaquest': 20.0}
  )
  c.thc = ml_collections.ConfigDict(
    {'normalization': 'k-1', 'ties': 'ci', 'bootstrap_reps': 1000, 'confidence': 0.95}
  )
  c.acceptance = ml_collections.ConfigDict(
    {'paper_sensitive': ('epsilon_train', 'update_period'), 'top_k': 4}
  )
  if arg.smoke:
    c.num_seeds = 2
    c.games = ('Breakout-MinAtar',)
    c.regimes = ml_collections.ConfigDict({'low': 1_000, 'high': 2_000})
    c.sweep = ml_collections.ConfigDict({'learning_rate': (1e-4, 1e-3), 'epsilon_train': (0.01, 0.1)})
    c.default_overrides = ml_collections.ConfigDict(
      {'min_replay_history': 200, 'update_horizon': 3, 'batch_size': 16, 'width': 32}
    )
    c.buffer_capacity = 1_000
    c.log_every = 500
    c.checkpoint_every = 500
    c.eval_envs = 4
    c.thc.bootstrap_reps = 200
  if arg.seeds:
    c.num_seeds = arg.seeds
  if arg.budget:
    c.time_budget_s = float(arg.budget)
  if (
    arg.high
  ):  # The high regime's length in env steps (e.g. `:high=200000` where 500k does not fit a budget).
    c.regimes.high = arg.high
  return c
