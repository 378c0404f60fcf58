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
`--rejax` times rejax's TD3 on the same Brax task when the package is importable, else it says so and skips:
the same backend, MJX solver caps, episode length, envs per seed, updates per vector step, batch, buffer,
optimiser, noise, policy delay and ReLU networks of our sizes (`rejax_td3`), timed as the difference of two
run lengths so that its compile, buffer fill and final evaluation cancel (`bench_rejax`).

rejax 0.1.3 (the newest, 2026-11) is written for gymnax 0.0.x, whose `step` returns 5 values; with gymnax
1.x its Brax adapter fails. So the comparison runs with gymnax 0.0.9 on the path instead of our 1.0.1 (our
Brax tasks do not import gymnax; only Pendulum does). Wheels to carry for it (`python3 -m pip download
--no-deps ...` for Python 3.12): rejax==0.1.3, distrax==0.1.9, tfp-nightly, gast, decorator, gymnax==0.0.9,
with dm-tree, gymnasium and farama-notifications from `gpu-wheels --default` (not its gymnax). Checked on
2026-11-29 with Python 3.12 and jax 0.11.2 on the CPU: distrax 0.1.9 with tfp-nightly 0.26.0.dev20261027
imports (gymnax 0.0.9 also imports seaborn, which the GPU image has), and on Python 3.11 / jax 0.10.2 the
comparison runs end to end (`rl_plasticity/README.md`).
"""

from __future__ import annotations

import json
import statistics
import time

from absl import logging
import jax

from common import results
from rl_plasticity import envs as envs_lib
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


def rejax_td3(config, steps: int):
  """rejax's TD3 (0.1.x API) set up like ours: the same Brax task, backend and MJX solver caps, our episode
  length, envs per seed, updates per vector step (`num_epochs`), batch, buffer, learning rate, discounting,
  noise, policy delay and ReLU networks of our sizes; one final evaluation, none at the start."""
  import flax.linen as nn
  import rejax
  from brax.envs.wrappers import training as brax_wrappers
  from rejax.compat.brax2gymnax import Brax2GymnaxEnv
  from rejax.networks import DeterministicPolicy
  from rejax.networks import QNetwork

  if config.env not in envs_lib.BRAX:
    raise ValueError(f'the rejax comparison runs on a Brax task, not {config.env!r}')
  cfg = train.agent_config(config, 'td3')  # Our TD3's hyperparameters, from the one mapping a run uses.
  opt = envs_lib.solver_caps(config.get('mjx_ls_iterations', 0))
  task = envs_lib.brax_task(config.env, config.backend, opt)
  length = config.episode_length or envs_lib.BRAX_EPISODE_LENGTH
  env = Brax2GymnaxEnv(brax_wrappers.AutoResetWrapper(brax_wrappers.EpisodeWrapper(task, length, 1)))
  params = env.default_params
  algo = rejax.TD3.create(
    env=env,
    env_params=params,
    total_timesteps=steps,
    eval_freq=steps,
    skip_initial_evaluation=True,
    num_envs=cfg.num_envs,
    num_epochs=cfg.updates_per_iteration,
    batch_size=cfg.batch_size,
    buffer_size=cfg.buffer_capacity,
    fill_buffer=cfg.batch_size * 4,
    learning_rate=cfg.learning_rate,
    gamma=cfg.gamma,
    polyak=1.0 - cfg.tau,
    exploration_noise=cfg.expl_noise,
    target_noise=cfg.policy_noise,
    target_noise_clip=cfg.noise_clip,
    policy_delay=cfg.policy_delay,
  )
  space = env.action_space(params)
  return algo.replace(
    actor=DeterministicPolicy(int(space.shape[0]), (space.low, space.high), cfg.actor_hidden, nn.relu),
    critic=QNetwork(hidden_layer_sizes=cfg.critic_hidden, activation=nn.relu),
  )


def bench_rejax(config, steps: int) -> dict:
  """rejax's TD3 with our number of seeds vmapped, timed as the difference between a run of 2 x `steps` and
  one of `steps` env steps (each compiled ahead, then timed), so that its compile, buffer fill and final
  evaluation cancel and the per-step cost compares with our median updating chunk. A benchmark-only
  dependency: skipped with a message when it does not import or its API differs."""
  try:
    import rejax  # noqa: F401  # pylint: disable=unused-import
  except ImportError:
    return {'skipped': 'rejax is not importable (pip install rejax to compare); skipped'}
  keys = jax.random.split(jax.random.PRNGKey(0), config.num_seeds)
  seconds = {}
  try:
    for n in (steps, 2 * steps):
      algo = rejax_td3(config, n)
      compiled = jax.jit(jax.vmap(algo.train)).lower(keys).compile()
      t0 = time.time()
      jax.block_until_ready(compiled(keys))
      seconds[n] = time.time() - t0
  except Exception as e:  # pylint: disable=broad-except  # A peer's API change must not lose our numbers.
    return {'skipped': f'rejax failed: {type(e).__name__}: {str(e)[:300]}'}
  per_step = (seconds[2 * steps] - seconds[steps]) / steps
  return {
    'method': 'rejax_td3',
    'seeds': int(config.num_seeds),
    'steps': [steps, 2 * steps],
    'run_seconds': [round(seconds[steps], 2), round(seconds[2 * steps], 2)],
    'env_steps_per_second_per_seed': round(1.0 / per_step, 1) if per_step > 0 else None,
    'seconds_per_million_steps_per_seed': round(per_step * 1e6, 1),
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
  _REJAX_STEPS = flags.DEFINE_integer(
    'rejax_steps', 50_000, 'Env steps per seed of the shorter timed rejax run (the longer: twice that).'
  )
  _OUT = flags.DEFINE_string('out', '', 'Write the rows as JSON here.')
  app.run(main)
