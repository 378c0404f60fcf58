"""Neuroplastic Expansion at the paper's scale (documented; not run here).

Paper: Jiashun Liu, Johan Obando-Ceron, Aaron Courville, Ling Pan, "Neuroplastic Expansion in Deep
Reinforcement Learning", ICLR 2025 (arXiv 2410.07994). The paper runs TD3-based NE against TD3, ReDo, Reset
and Plasticity Injection on Gym MuJoCo (HalfCheetah, Hopper, Walker2d, Ant, Humanoid) and DeepMind Control.

    export JAX_DEFAULT_MATMUL_PRECISION=highest
    python -m rl_plasticity.main --config=rl_plasticity/configs/paper.py:env=humanoid --workdir=runs/paper/rp_hum

What this config does: the five locomotion tasks as Brax ports (MJX backend; returns are not comparable with
Gym MuJoCo), every method we have, 10 seeds, the NE code's TD3 settings (25k random steps, batch 256,
replay 1M, actor 2x256, critic 3x256 with LayerNorm on the 3rd layer) and its delta = 100. Horizon: 3M env
steps, our choice between TD3's usual 1M and the code's default of 6M; the per-task horizons, seeds and
delta of the paper's tables must be read from the PDF (our research note could not), and DMC tasks need
MuJoCo Playground (cheetah-run, walker-walk, humanoid) or dm_control on CPU (dog, quadruped), which
envs.py does not have yet.

Compute (an estimate): 6 methods x 10 seeds x 5 tasks x 3M updates = 900M agent-updates; at ~40k
aggregate updates/s on one H100 (10 vmapped seeds, width 256) that is ~6 GPU-hours of updates, about
10-12 with MJX stepping and evaluation (Plasticity Injection's critic costs up to 3x TD3's).
`:env=<task>` picks one task (default halfcheetah).
"""

from common import config as config_lib
from rl_plasticity.configs import default


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, env='halfcheetah')
  c = default.get_config('smoke' if arg.smoke else None)
  c.experiment = f'paper_{arg.env}'
  c.methods = ('td3', 'ne', 'ne_code', 'redo', 'reset', 'injection')
  if not arg.smoke:
    c.env = arg.env
    c.num_seeds = 10
    c.total_env_steps = 3_000_000
    c.learning_starts = 25_000
    c.buffer_capacity = 1_000_000
    c.delta = 100
    c.redo.every = 100_000
    c.reset.every = 500_000
    c.log_every = 25_000
    c.eval_every = 25_000
    c.checkpoint_every = 250_000
  return c
