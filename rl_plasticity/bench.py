"""Throughput of the whole TD3 / NE loop (env steps, replay, updates, NE's topology steps), seeds vmapped.

    export JAX_DEFAULT_MATMUL_PRECISION=highest
    python -m rl_plasticity.bench --config=rl_plasticity/configs/gpu.py:env=halfcheetah --methods=td3,ne \
        --chunks=5 --out=bench.json
    python -m rl_plasticity.bench --config=rl_plasticity/configs/default.py:smoke --chunks=5   # CPU

For each method: builds the seed-vmapped programs exactly as a run does, runs through `learning_starts` and
one updating chunk (compile excluded), then times `--chunks` chunks of `delta` updates with their hooks
(median chunk, device-synchronised) and reports env steps per second (all seeds), per seed, and the
projected wall-clock per million env steps per seed. The issue's targets: ours at least as fast per
million steps per seed as rejax's TD3 on the same task, card and seeds; NE at most 1.3x TD3's cost.
`--rejax` times rejax's TD3 (`brax/<env>`) when the package is importable, else it says so and skips.
"""

from __future__ import annotations

import json
import statistics
import time

from absl import logging
import jax

from common import results
from rl_plasticity import train


def bench_method(config, env, method: str, chunks: int) -> dict:
  programs = train.Programs(config, env, method)
  state = programs.init(train.seed_keys(config))
  chunk = train.chunk_env_steps(config)
  warm_end = config.learning_starts + chunk
  t0 = t_last = time.time()

  def progress(step, row):  # One line per warm-up chunk: a slow loop shows long before the first row.
    nonlocal t_last
    jax.block_until_ready(row)
    logging.info(
      '%s: warm-up to env step %d of %d, chunk %.1f s', method, step, warm_end, time.time() - t_last
    )
    t_last = time.time()

  state = train.run_steps(config, programs, state, 0, warm_end, log=progress)
  jax.block_until_ready(state)
  warm = time.time() - t0
  times, begin = [], config.learning_starts + chunk
  for _ in range(chunks):
    t0 = time.time()
    state = train.run_steps(config, programs, state, begin, begin + chunk)
    jax.block_until_ready(state)
    times.append(time.time() - t0)
    logging.info('%s: timed chunk %d of %d: %.2f s', method, len(times), chunks, times[-1])
    begin += chunk
  sec = statistics.median(times)
  per_seed = chunk / sec
  return {
    'method': method,
    'env': config.env,
    'seeds': int(config.num_seeds),
    'replay_ratio': float(config.replay_ratio),
    'chunk_env_steps': chunk,
    'warmup_seconds_with_compile': round(warm, 2),
    'median_chunk_seconds': round(sec, 4),
    'env_steps_per_second_all_seeds': round(per_seed * config.num_seeds, 1),
    'env_steps_per_second_per_seed': round(per_seed, 1),
    'seconds_per_million_steps_per_seed': round(1e6 / per_seed, 1),
  }


def bench_rejax(config, steps: int) -> dict:
  """rejax's TD3 on `brax/<env>` with the same number of vmapped seeds (benchmark-only dependency)."""
  try:
    import rejax
  except ImportError:
    return {'skipped': 'rejax is not importable (pip install rejax to compare); skipped'}
  try:
    algo = rejax.TD3.create(env=f'brax/{config.env}', total_timesteps=steps, eval_freq=steps)
    train_fn = jax.jit(jax.vmap(algo.train))
    keys = jax.random.split(jax.random.PRNGKey(0), config.num_seeds)
    t0 = time.time()
    jax.block_until_ready(train_fn(keys))
    first = time.time() - t0
    t0 = time.time()
    jax.block_until_ready(train_fn(keys))
    sec = time.time() - t0
  except Exception as e:  # pylint: disable=broad-except  # A peer's API change must not lose our numbers.
    return {'skipped': f'rejax failed: {type(e).__name__}: {str(e)[:200]}'}
  return {
    'method': 'rejax_td3',
    'seeds': int(config.num_seeds),
    'steps': steps,
    'first_call_seconds_with_compile': round(first, 2),
    'seconds': round(sec, 2),
    'seconds_per_million_steps_per_seed': round(sec / steps * 1e6, 1),
  }


def main(argv):
  del argv
  config = _CONFIG.value
  env = train.validate(config)
  rows = [bench_method(config, env, m, _CHUNKS.value) for m in _METHODS.value]
  by = {r['method']: r for r in rows}
  if 'td3' in by and 'ne' in by:
    by['ne']['cost_vs_td3'] = round(by['ne']['median_chunk_seconds'] / by['td3']['median_chunk_seconds'], 3)
  if _REJAX.value:
    rows.append(bench_rejax(config, _REJAX_STEPS.value))
  out = {'rows': rows, 'run': results.run_info()}
  print(json.dumps(out, indent=1))
  if _OUT.value:
    results.write_json(_OUT.value, out)


if __name__ == '__main__':
  from absl import app, flags
  from ml_collections import config_flags

  _CONFIG = config_flags.DEFINE_config_file('config', 'rl_plasticity/configs/default.py:smoke', 'Run config.')
  _METHODS = flags.DEFINE_list('methods', ['td3', 'ne'], 'Methods to time.')
  _CHUNKS = flags.DEFINE_integer('chunks', 5, 'Timed chunks (median).')
  _REJAX = flags.DEFINE_bool('rejax', True, 'Also time rejax TD3 when importable.')
  _REJAX_STEPS = flags.DEFINE_integer('rejax_steps', 100_000, 'Env steps of the timed rejax run.')
  _OUT = flags.DEFINE_string('out', '', 'Write the rows as JSON here.')
  app.run(main)
