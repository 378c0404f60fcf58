"""Sweep throughput: runs per GPU-hour of one vmapped sweep program, and the projected time of a whole sweep.

    python -m rl_hparams.bench --config=rl_hparams/configs/default.py --steps=5000 --out=bench.json

Builds the first program of each agent of the config (all its settings x seeds vmapped, as the sweep runs
them), compiles its chunk of `--steps` env steps, runs it `--repeats` times from the same warm state
(training steps, past the minimum replay so updates happen), and reports the median seconds per env step of
the whole program, runs x env steps per second, runs per hour at the low regime's length, and the projected
wall-clock of every program of the config (compilation excluded).
"""

from __future__ import annotations

import json
import statistics
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from rl_hparams import sweep

_CONFIG = config_flags.DEFINE_config_file('config', 'rl_hparams/configs/default.py', 'Sweep config.')
_STEPS = flags.DEFINE_integer('steps', 5000, 'Env steps per timed chunk (a multiple of num_envs).')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed chunks.')
_OUT = flags.DEFINE_string('out', '', 'Write the results here as JSON.')
_CONV_IMPLS = flags.DEFINE_string(
  'conv_impls', '', 'Comma-separated conv_impl values to compare (default: the config).'
)
_AGENTS = flags.DEFINE_string(
  'agents', '', 'Comma-separated agents to time (default: every agent of the config).'
)


def bench_program(config, program: sweep.Program, steps: int, repeats: int) -> dict:
  compiled = sweep.Compiled(config, program)
  hp = sweep.stacked_hparams(config, program)
  state = compiled.init(sweep.seed_keys(config, program, 0), hp)
  e = config.num_envs
  # Warm up: fill past the largest minimum replay so the timed chunks do their updates.
  warm = max(int(max(hp.learning_starts)) + e, steps)
  warm = -(-warm // e) * e
  t0 = time.time()
  state, _ = compiled.run_chunk(state, hp, warm // e)
  jax.block_until_ready(state)
  warm_s = time.time() - t0
  times = []
  for _ in range(repeats):
    t0 = time.time()
    state, stats = compiled.run_chunk(state, hp, steps // e)
    jax.block_until_ready(stats)
    times.append(time.time() - t0)
  sec = statistics.median(times[1:] if len(times) > 1 else times)  # The first includes the chunk's compile.
  runs = len(program.settings) * config.num_seeds
  return {
    'program': program.path,
    'runs': runs,
    'timed_env_steps': steps,
    'seconds_per_env_step': sec / steps,
    'runs_x_env_steps_per_second': runs * steps / sec,
    'warmup_seconds_incl_compile': round(warm_s, 2),
    'chunk_seconds': [round(t, 3) for t in times],
  }


def main(argv):
  del argv
  config = _CONFIG.value
  programs, _ = sweep.plan(config)
  agents = _AGENTS.value.split(',') if _AGENTS.value else None
  out = {'device': str(jax.devices()[0].device_kind), 'programs': len(programs), 'by_conv_impl': {}}
  for impl in _CONV_IMPLS.value.split(',') if _CONV_IMPLS.value else [config.conv_impl]:
    config.conv_impl = impl
    rows = {}
    for program in programs:
      if program.agent not in rows and (agents is None or program.agent in agents):
        rows[program.agent] = bench_program(config, program, _STEPS.value, _REPEATS.value)
        print(impl, json.dumps(rows[program.agent]), flush=True)
    low = min(config.regimes.values())
    timed = [p for p in programs if p.agent in rows]
    out['by_conv_impl'][impl] = {
      'per_agent': rows,
      'runs_per_hour_at_low_regime': {
        a: round(r['runs_x_env_steps_per_second'] * 3600 / low, 1) for a, r in rows.items()
      },
      # Every program of the timed agents, one device, compilation excluded.
      'projected_seconds_excl_compile': round(
        sum(rows[p.agent]['seconds_per_env_step'] * p.steps for p in timed), 1
      ),
    }
  print(json.dumps(out, indent=1))
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump(out, f, indent=1)


if __name__ == '__main__':
  app.run(main)
