"""The `gpu` experiment of Neuroplastic Expansion (arXiv 2410.07994), reduced: one Brax task on the MJX backend,
TD3, NE (paper variant), NE (code variant) and ReDo, 8 seeds each (vmapped in one program per method).

    export JAX_DEFAULT_MATMUL_PRECISION=highest   # TF32 matmuls hurt RL stability (Playground issue #86)
    python -m rl_plasticity.main --config=rl_plasticity/configs/gpu.py:env=halfcheetah --workdir=runs/gpu/rp_hc1
    python -m rl_plasticity.main --config=rl_plasticity/configs/gpu.py:env=hopper,stress --workdir=runs/gpu/rp_hop4

Default: 300k env steps at replay ratio 1 (25k random steps, then 275k updates), delta = 1000 updates.
`stress`: replay ratio 4 for 150k env steps (500k updates), the short-horizon way to provoke dormancy.

Acceptance (fixed here before any run; IQM over 8 seeds of the evaluations in the final 10 % of training):
  critic tau=0.1 dormant fraction of NE <= 0.7 x TD3's (both NE variants), ReDo's below TD3's;
  return NE / TD3 >= 0.95 at replay ratio 1 and >= 1.05 at replay ratio 4; no seed diverges
  (every logged value finite and |mean Q| <= 1e5).
Brax task returns are not comparable with the paper's Gym MuJoCo returns.

Budget, measured on an H200 (2026-11-28, README): a TD3 update of 8 seeds costs 0.5 ms, but one MJX
halfcheetah step of 8 single-env seeds costs 14.3 ms (22.8 ms inside the training chunk), so the default
runs at 43 env steps/s per seed: about 2 hours per method at 300k steps, far over a session. Each method is
a sub-run that resumes from its checkpoint (every 20k env steps; 10k in `stress`) and is skipped once
finished, so the same command is simply rerun.

`batched` (ours, for the device budget; not the paper's single environment): 20 envs per seed (20 updates
per vector step, the same replay ratio of 1 update per env step), MJX's line search capped at 6 iterations
(not bit-identical to 50: README) and an evaluation every 30k env steps. 20 envs cost 23.6 ms per vector
step alone on an H200, 1.2 ms per env step; projection 6-12 minutes per method and task (not measured).

    python -m rl_plasticity.main --config=rl_plasticity/configs/gpu.py:env=halfcheetah,batched \
        --workdir=runs/gpu/rp_hc_batched
"""

from common import config as config_lib
from rl_plasticity.configs import default


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, stress=False, batched=False, env='halfcheetah', seeds=0)
  c = default.get_config('smoke' if arg.smoke else None)
  c.experiment = f'gpu_{arg.env}_rr{4 if arg.stress else 1}'
  c.methods = ('td3', 'ne', 'ne_code', 'redo')
  if not arg.smoke:
    c.env = arg.env
    c.num_seeds = 8
    c.total_env_steps = 300_000
    c.learning_starts = 25_000
    c.buffer_capacity = 300_000
    c.delta = 1_000
    c.redo.every = 10_000
    c.log_every = 10_000
    c.eval_every = 10_000
    c.checkpoint_every = 20_000  # 50k until 2026-11-28: runs cut by the call limit lost everything.
    if arg.stress:
      c.replay_ratio = 4.0
      c.total_env_steps = 150_000
      c.learning_starts = 25_000
      c.buffer_capacity = 150_000
      c.delta = 2_000  # 500 env steps per chunk.
      c.redo.every = 40_000
      c.log_every = 5_000
      c.eval_every = 5_000
      c.checkpoint_every = 10_000
      c.acceptance.min_return_ratio = 1.05
  if arg.batched:
    c.experiment += '_batched'
    c.num_envs = 20
    c.mjx_ls_iterations = 6
    if not arg.smoke:
      c.eval_every = 30_000
  if arg.seeds:
    c.num_seeds = arg.seeds
  return c
