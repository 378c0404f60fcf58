"""The paper's Atari setting (Sokar et al., arXiv 2410.01930, Fig. 1): Rainbow with the Impala encoder, each
penultimate variant, 20 games x 5 seeds, 50M agent steps = 200M frames. Documented and loadable; NOT run.

    pip install -e '.[all]'
    python -m rl_softmoe.main --config=rl_softmoe/configs/paper.py --workdir=runs/rl_softmoe/paper
    python -m rl_softmoe.main --config=rl_softmoe/configs/paper.py:smoke --workdir=/tmp/rs_paper   # CPU-sized

Agent (`agent='der'` with Rainbow's values; research note rl_value_based.md §1.1.3, Dopamine's
`labs/moes/configs/full_rainbow.gin`): C51 with 51 atoms, v_max 10 (v_min -10), dueling, noisy head layers
(NoisyNet, factorised Gaussian; sigma0 0.1, Dopamine's NoisyNetwork's, which full_rainbow.gin uses: the
official code's value, while Hessel et al.'s Rainbow used 0.5, `--config.der.noisy_sigma0=0.5`), double,
n-step 3,
prioritized replay of 1M transitions, batch 32, gamma 0.99, Adam lr 6.25e-5 / eps 1.5e-4, 20k transitions
before learning, one update every 4 agent steps, target every 8000, epsilon 1 -> 0.01 over 250k steps, 0.001
in evaluation. Our assumptions (the note does not give them): prioritized-replay exponents 0.5 / 0.5
(`der_preset`'s, Dopamine's JAX Rainbow as the note records for DER) and v_min = -v_max.

Network: the Impala CNN (`encoder='impala'`, 11x11x32 map, 121 PerConv tokens of 32; rl_softmoe.encoder),
then the penultimate variant (H = 512, the note's `expert_hidden_units`; n = 4 experts, as full_rainbow.gin),
then the dueling C51 head. Variants as in Fig. 1: V0 flatten baseline, V1 penultimate scaled x4, V2
SoftMoE-4 (PerConv), V3 single expert scaled x4 (PerConv), V4 SoftMoE-4 PerSample (flatten inside SoftMoE).
The paper also varies the number of experts: `--config.scale=N` (one run per value).

Games: the research note does not list the paper's 20 games (§7: read them off the PDF). The paper says they
are the 20 ALE games of Obando-Ceron et al. 2024 ("Mixtures of Experts Unlock Parameter Scaling for Deep RL",
arXiv 2402.08609), whose list we could not read here either. GAMES below is a PLACEHOLDER, our choice: the
first 20 (alphabetical) of the 26 Atari 100k games that common.rl.atari can human-normalise. Replace it with
the paper's list before a run.

Deviations from the paper that this code cannot avoid (documented, not fixed):
  * noisy layers in the head only: Dopamine's noisy SoftMoE experts (pitfall 12 of the note) and its noisy
    penultimate Dense of the flatten baselines (V0, V1) are not reproduced;
  * the environment is common.rl.atari's Atari 100k protocol: sticky actions OFF (the 200M-frame runs use
    0.25) and life loss terminal in training (not in Dopamine's long runs);
  * scores are the final evaluation of whole games with raw rewards (10 games per seed), not the training
    returns per iteration that Dopamine's `continuous_train` reports (pitfall 15);
  * replay memory: common.rl.replay keeps both 84x84x4 uint8 stacks of every transition, 56 GB per seed for
    1M transitions (Dopamine keeps single frames, ~7 GB). Five vmapped seeds do not fit on one GPU: run the
    seeds as five runs, `--config.num_seeds=1 --config.seed=K` for K = 0..4, each on its own GPU.

Compute (an ESTIMATE, scaled from rl_softmoe/README.md's one measurement, not from a run): 20 games x 5
variants x 5 seeds = 500 runs of 50M agent steps and 12.5M sequential updates each. The H200 benchmark ran
2,813 loop iterations (one update each) per second per MinAtar program (22,506 updates/s over 8 vmapped
seeds, a 10x10 frame and a tiny CNN); at that rate one run's updates alone take 74 min, a floor: the Impala
CNN on 84x84 frames costs far more per update, likely 5-20x. The emulators are the other cost: they run on
the host, one after the other in one callback, at an assumed ~1k agent steps/s per core (not measured here),
i.e. ~14 h per run for 50M steps. So ~600 GPU-hours at the floor, several thousand realistically, and ~7,000
CPU core-hours of emulation: a cluster job of weeks, not a session.

`:smoke` shrinks everything to a CPU-sized run (Pong, V0 and V2, 1 seed, 600 agent steps, small replay,
Impala encoder, hidden 32) that checks the plumbing only; tests load it and validate it, they do not run it.
"""

import ml_collections

from common import config as config_lib
from rl_softmoe.configs import atari100k
from rl_softmoe.configs import default

GAMES = (
  'Alien', 'Amidar', 'Assault', 'Asterix', 'BankHeist', 'BattleZone', 'Boxing', 'Breakout', 'ChopperCommand',
  'CrazyClimber', 'DemonAttack', 'Freeway', 'Frostbite', 'Gopher', 'Hero', 'Jamesbond', 'Kangaroo', 'Krull',
  'KungFuMaster', 'MsPacman',
)  # fmt: skip
"""PLACEHOLDER for the paper's 20 games (not in the research note): see the module docstring."""


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, seeds=0, steps=0)
  c = default.get_config()
  c.experiment = 'paper_rainbow_impala'
  c.env = 'atari'
  c.agent = 'der'
  c.encoder = 'impala'
  c.games = GAMES
  c.variants = ('V0', 'V1', 'V2', 'V3', 'V4')
  c.num_seeds = 5
  c.hidden = 512
  c.scale = 4
  # Rainbow (full_rainbow.gin): the `der` fields at Rainbow's values.
  c.der.n_step = 3
  c.der.num_atoms = 51
  c.der.v_min = -10.0  # Our assumption: -v_max.
  c.der.v_max = 10.0
  c.der.prioritized = True
  c.der.dueling = True
  c.der.noisy = True
  c.double = True
  c.num_envs = 1
  c.total_env_steps = 50_000_000  # Agent steps: 200M frames.
  c.buffer_capacity = 1_000_000
  c.batch_size = 32
  c.learning_rate = 6.25e-5
  c.adam_eps = 1.5e-4
  c.gamma = 0.99
  c.eps_end = 0.01
  c.eps_decay_steps = 250_000
  c.eps_eval = 0.001
  c.learning_starts = 20_000
  c.update_period = 4
  c.target_update_period = 8_000
  c.log_every = 250_000  # One Dopamine iteration.
  c.checkpoint_every = 5_000_000
  c.eval_envs = 10
  c.eval_iterations = 27_000  # One whole game per evaluation env (games are cut at 27k agent steps).
  c.eval_first_game = True  # Stop once every env has ended its first game (27k is the cap).
  c.eval_host_workers = 8  # The evaluation's emulators in 8 processes (same scores as 0; atari100k.py).
  c.max_reference = ml_collections.ConfigDict()  # Atari uses the human scores (common.rl.atari).
  c = atari100k.shrink(c, arg)
  if arg.smoke:
    c.update_period = 1
  return c
