"""The same comparison on real Atari 100k games (ale-py, the `atari` extra): DER and SoftMoE-DER, i.e. DER
with the Nature CNN (11x11x64 feature map, 121 PerConv tokens) and each penultimate variant V0-V4.

    pip install -e '.[all]'
    python -m rl_softmoe.main --config=rl_softmoe/configs/atari100k.py --workdir=runs/rl_softmoe/atari100k
    python -m rl_softmoe.main --config=rl_softmoe/configs/atari100k.py:smoke --workdir=/tmp/rs_atari   # CPU

Protocol (common.rl.atari; research note rl_value_based.md §6 items 13-15): 100k agent steps (400k frames),
one environment, sticky actions off, life loss terminal for training, rewards clipped for learning; the final
evaluation plays whole games with raw rewards (10 parallel games, up to 27k agent steps each) and scores are
human-normalised. `eval_first_game` (on here) counts each eval env's first game and stops once all 10 have
ended (27k steps is the cap), instead of stepping the full 27k-step window (2026-11-28, rl_softmoe/README.md).

Agent (`agent='der'`, common.rl.dqn.der_preset, Dopamine's DER.gin as in the research note §1.1.3): C51 with
51 atoms on [-10, 10], dueling head with noisy layers (NoisyNet, factorised Gaussian, sigma0 0.1 as DER and
Dopamine's NoisyNetwork; `der.noisy_sigma0`, 0.5 before 2026-11-28) together with epsilon-greedy, double,
n-step 10, prioritized replay (exponents 0.5 / 0.5), update every step, target every 2000 steps, epsilon
1 -> 0.01 over 2000 steps after 1600, Adam 1e-4 / eps 1.5e-4, batch 32. Deviation: only the head is noisy
(Dopamine's SoftMoE-DER also makes the experts' first layer noisy, pitfall 12 of the note, and its flatten
baselines' penultimate Dense: `FullRainbowMoENetwork` builds both with its noisy `feature_layer`). `--config.der.noisy=false` drops the noise; `--config.agent=dqn` gives the earlier scalar double DQN.

Budget (an estimate, not run at scale): 5 games x 5 variants = 25 programs of 100k sequential updates (batch
32, 5 seeds vmapped), about 1-2 ms each on an H100 (research note §5.2: 2-4 min of updates per program), plus
the host emulators, which run one after the other in one callback (500k training steps per program, and the
evaluation's 10 games x 5 seeds of up to 27k steps). At about 1k emulator steps/s per core that is about
10-30 min per program, 4-12 hours in all; measure one program first.
"""

import ml_collections

from common import config as config_lib
from rl_softmoe.configs import default

ATARI_GAMES = ('Pong', 'Breakout', 'Boxing', 'Freeway', 'MsPacman')


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, seeds=0, steps=0)
  c = default.get_config()
  c.experiment = 'atari100k_penultimate_variants'
  c.env = 'atari'
  c.agent = 'der'
  c.der.noisy = True
  c.encoder = 'nature'
  c.games = ATARI_GAMES
  c.num_seeds = 5
  c.hidden = 512
  c.num_envs = 1
  c.total_env_steps = 100_000
  c.buffer_capacity = 100_000
  c.learning_rate = 1e-4
  c.adam_eps = 1.5e-4
  c.eps_decay_steps = 2_000
  c.learning_starts = 1_600
  c.update_period = 1
  c.target_update_period = 2_000
  c.log_every = 10_000
  # Every 10k agent steps (about 100 s): a checkpoint is 150-300 MB at 50k steps and 2 seeds (the replay's
  # frames compress well; measured on an H200, 2026-11-28), so a call's end loses little. The one at the last
  # step (checkpoint_final) lets a cut evaluation resume without retraining.
  c.checkpoint_every = 10_000
  c.eval_envs = 10
  c.eval_iterations = 27_000  # One whole game per evaluation env (games are cut at 27k agent steps).
  c.eval_first_game = True  # Stop once every env has ended its first game (27k is the cap).
  # The evaluation's 10 envs x 5 seeds emulators in 8 processes: in one, at about 0.5 ms per emulator step,
  # a 27k-step evaluation takes about 12 min (common.rl.atari, host workers). Same scores as 0.
  c.eval_host_workers = 8
  c.max_reference = ml_collections.ConfigDict()  # Atari uses the human scores (common.rl.atari).
  return shrink(c, arg)


def shrink(c, arg):
  """The CPU `:smoke` sizes and the `:seeds=` / `:steps=` arguments (shared with configs/paper.py)."""
  if arg.smoke:
    c.games = ('Pong',)
    c.variants = ('V0', 'V2')
    c.num_seeds = 1
    c.hidden = 32
    c.total_env_steps = 600
    c.buffer_capacity = 300  # Wraps (checked).
    c.learning_starts = 100
    c.eps_decay_steps = 200
    c.target_update_period = 200
    c.batch_size = 4
    c.log_every = 300
    c.checkpoint_every = 300
    c.eval_envs = 2
    c.eval_iterations = 1_500  # A barely trained agent's Pong game lasts about 1000 agent steps.
    c.eval_host_workers = 2  # One per evaluation emulator.
  if arg.seeds:
    c.num_seeds = arg.seeds
  if arg.steps:
    c.total_env_steps = arg.steps
  return c
