"""Throughput of the whole training loop (env steps, replay, updates) with the seeds vmapped.

    python -m rl_softmoe.bench --config=rl_softmoe/configs/default.py --variants=V0,V2 --out=bench.json

For each variant on the config's first game: builds the seed-vmapped program exactly as a run does, warms it
past `learning_starts` (so the timed chunks update), times `--repeats` chunks of `--steps` env steps per seed
(median, device-synchronised, compile excluded), and reports env steps per second (all seeds), updates per
second, and the projected wall-clock of one `--frames` run of `num_seeds` seeds (MinAtar has no frame skip:
one frame is one env step). The issue's target: an 8-seed 5M-frame MinAtar DQN run under 10 minutes.
"""

import json
import statistics
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from common import results
from rl_softmoe import train

_CONFIG = config_flags.DEFINE_config_file('config', 'rl_softmoe/configs/default.py', 'Experiment config.')
_VARIANTS = flags.DEFINE_list('variants', ['V0', 'V2'], 'Variants to time.')
_STEPS = flags.DEFINE_integer('steps', 20_000, 'Env steps per seed in each timed chunk.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed chunks (median).')
_FRAMES = flags.DEFINE_integer('frames', 5_000_000, 'Projected run length (frames = env steps on MinAtar).')
_OUT = flags.DEFINE_string('out', '', 'Write the rows as JSON here.')


def bench_variant(config, variant: str) -> dict:
  game = config.games[0]
  programs = train.Programs(config, game, variant)
  hp = train.stacked_hparams(config)
  e = config.num_envs
  state = programs.init(train.seed_keys(config, 0, 0), hp)
  t0 = time.time()
  warm = -(-max(config.learning_starts + e, _STEPS.value) // e)
  state, _ = programs.run_chunk(state, hp, warm)
  jax.block_until_ready(state)
  warm_s = time.time() - t0
  times = []
  for _ in range(_REPEATS.value + 1):
    t0 = time.time()
    state, stats = programs.run_chunk(state, hp, _STEPS.value // e)
    jax.block_until_ready(stats)
    times.append(time.time() - t0)
  sec = statistics.median(times[1:])  # The first timed chunk may compile this chunk length.
  seeds = config.num_seeds
  steps = (_STEPS.value // e) * e
  per_step = sec / steps
  return {
    'game': game,
    'variant': variant,
    'seeds': seeds,
    'num_envs': e,
    'update_period': config.update_period,
    'timed_env_steps_per_seed': steps,
    'warmup_seconds_with_compile': round(warm_s, 2),
    'median_chunk_seconds': round(sec, 4),
    'env_steps_per_second_all_seeds': round(seeds * steps / sec, 1),
    'updates_per_second_all_seeds': round(seeds * steps / config.update_period / sec, 1),
    'projected_minutes_for_frames': round(per_step * _FRAMES.value / 60, 2),
    'frames': _FRAMES.value,
  }


def main(argv):
  del argv
  config = _CONFIG.value
  rows = [bench_variant(config, v) for v in _VARIANTS.value]
  out = {'rows': rows, 'run': results.run_info()}
  print(json.dumps(out, indent=1))
  if _OUT.value:
    results.write_json(_OUT.value, out)


if __name__ == '__main__':
  app.run(main)
