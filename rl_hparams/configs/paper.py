"""The paper's scale (arXiv 2406.17523): DER and DrQ(eps) on the 26 Atari 100k games (ale-py, the `atari`
extra), both data regimes, every hyper-parameter of the schema at its default grid. Not run here.

    pip install -e '.[all]'   # includes ale-py and its ROMs
    python -m rl_hparams.main --config=rl_hparams/configs/paper.py --workdir=runs/paper/rl_hparams/atari100k

Protocol (research note rl_value_based.md §1.2, §6 items 13-17): 84x84 grayscale, frame skip 4, 4-frame stack,
sticky actions off, life loss terminal, episodes cut at 108k frames; low regime 100k agent steps (400k
frames), high regime 10M agent steps (40M frames), each a separate run with its own schedule; the evaluation
of each run averages 100 episodes (here the first episode of each of 100 parallel environments, stopping once
all have ended, at most 27k agent steps: `eval_first_game`); scores are human-normalised with the standard
Atari random/human tables (common.rl.atari).

Compute (an estimate, not measured): 14 hyper-parameters x 4 values give 43 settings per (agent, regime,
game); x 5 seeds x 26 games x 4 (agent, regime) pairs = 22,360 runs (the paper reports about 108k, so it ran
more values or seeds). The low regime is 100k sequential updates per program; the high regime 10M, i.e.
100x longer: with the emulators on the host, expect the high regime to dominate by two orders of magnitude.
Which 12 hyper-parameters and which grids the paper used could not be read here (research note §7): the
schema's 14 are swept.
"""

import ml_collections

from common import config as config_lib
from rl_hparams import schema
from rl_hparams.configs import default

ATARI_100K = (
  'Alien', 'Amidar', 'Assault', 'Asterix', 'BankHeist', 'BattleZone', 'Boxing', 'Breakout', 'ChopperCommand',
  'CrazyClimber', 'DemonAttack', 'Freeway', 'Frostbite', 'Gopher', 'Hero', 'Jamesbond', 'Kangaroo', 'Krull',
  'KungFuMaster', 'MsPacman', 'Pong', 'PrivateEye', 'Qbert', 'RoadRunner', 'Seaquest', 'UpNDown',
)  # fmt: skip


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False)
  c = default.get_config('smoke' if arg.smoke else None)
  c.experiment = 'thc_atari100k'
  c.env = 'atari'
  c.num_seeds = 5
  c.games = ATARI_100K
  c.regimes = ml_collections.ConfigDict({'low': 100_000, 'high': 10_000_000})
  c.runs = ('DER:low', 'DrQ_eps:low', 'DER:high', 'DrQ_eps:high')
  c.sweep = ml_collections.ConfigDict({name: () for name in schema.HYPERPARAMETERS})
  c.buffer_capacity = 1_000_000
  c.augment_pad = 4
  c.log_every = 50_000
  c.checkpoint_every = 500_000
  c.eval_envs = 100
  c.eval_iterations = 27_000
  c.eval_first_game = True  # Each env's first episode; 27k agent steps is the cap (rl_hparams.sweep).
  c.eval_host_workers = 8  # The evaluation's host emulators in 8 processes (same scores; rl_hparams.sweep).
  if arg.smoke:  # Two games, tiny runs: checks the Atari path end to end.
    c.games = ('Pong', 'Breakout')
    c.regimes = ml_collections.ConfigDict({'low': 1_000, 'high': 2_000})
    c.runs = ('DER:low', 'DrQ_eps:low', 'DER:high')
    c.sweep = ml_collections.ConfigDict({'learning_rate': (1e-4, 1e-3), 'epsilon_train': (0.01, 0.1)})
    c.buffer_capacity = 1_000
    c.log_every = 500
    c.checkpoint_every = 0
    c.num_seeds = 1
    c.eval_envs = 2
    c.eval_iterations = 1_500  # A Pong game of a barely trained agent lasts about 1000 agent steps.
    c.eval_host_workers = 2
  return c
