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

Budget (an estimate, not measured yet): ~2,900 updates/s per seed with 8 seeds at width 256 on an H100
(research note, section 3.2) gives ~100 s of updates per method at replay ratio 1 and ~170 s in the stress
run, plus MJX stepping of 8 single-env seeds and the compile (~1-2 min): 3-5 min per method, so one
task's four methods take 2-3 calls of 10 minutes; each method is a sub-run that resumes from its
checkpoint (every 20k env steps; 10k in `stress`) and is skipped once finished, so the same command is
simply rerun.
"""

from common import config as config_lib
from rl_plasticity.configs import default


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, stress=False, env='halfcheetah', seeds=0)
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
  if arg.seeds:
    c.num_seeds = arg.seeds
  return c
