"""Times each program of a run separately (trace+lower, XLA compile, then two runs), printing each line as
soon as it is measured, so a device call cut by its limit still says where the time went.

    python rl_plasticity/tools/stall_probe.py --config=rl_plasticity/configs/gpu.py:env=halfcheetah \
        --steps=100 --parts=env,env_ls6,env_positional,chunk,evaluate

Parts (any order, comma-separated):
  env            `steps` sequential env steps of all seeds x num_envs (vmapped), the config's backend
  env_lsN        the same with MJX's line search capped at N iterations (Brax's tasks ship 50)
  env_itN        the same with at most N MJX solver iterations (Brax's halfcheetah and hopper ship 4)
  env_positional / env_generalized / env_spring: the same on another Brax pipeline
  envxM          the same with M envs per seed (amortises the per-step latency over M times the data)
  chunk          the TD3 chunk program (`Programs.chunk`) over `steps` iterations, once in the random
                 warm-up phase and once past learning_starts (one update per iteration at replay ratio 1)
  evaluate       the evaluation program with episodes cut to `steps` steps (a run's are 1000)
ms/step is per sequential step; a run does total_env_steps / num_envs of them per method (300k in `gpu`),
and `bench.py` does learning_starts + (chunks + 1) x 1000 before its first row.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import app, flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rl_plasticity import train  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', 'rl_plasticity/configs/gpu.py:env=halfcheetah', 'Config.')
_STEPS = flags.DEFINE_integer('steps', 100, 'Sequential steps (loop length) of each timed program.')
_PARTS = flags.DEFINE_list('parts', ['env', 'chunk', 'evaluate'], 'What to time (module docstring).')


def say(msg: str) -> None:
  print(f'[{time.strftime("%H:%M:%S")}] {msg}', flush=True)


def timed(name: str, fn, args, steps: int) -> None:
  """Lowers, compiles and runs `fn(*args)` twice; one line per phase."""
  t0 = time.time()
  lowered = jax.jit(fn).lower(*args)
  t1 = time.time()
  say(f'{name}: traced+lowered in {t1 - t0:.1f} s; compiling...')
  compiled = lowered.compile()
  t2 = time.time()
  say(f'{name}: XLA compile {t2 - t1:.1f} s; running {steps} sequential steps...')
  for rep in range(2):
    t3 = time.time()
    jax.block_until_ready(compiled(*args))
    dt = time.time() - t3
    say(f'{name}: run {rep + 1}: {dt:.2f} s = {1e3 * dt / steps:.2f} ms per sequential step')


def make_env(config, backend=None, iterations=0, ls_iterations=0, episode_length=0):
  """The config's env (`train.make_env`), with the part's solver caps (0: the config's line-search cap, the
  task's iterations)."""
  over = {'mjx_iterations': iterations}
  if backend:
    over['backend'] = backend
  if ls_iterations:
    over['mjx_ls_iterations'] = ls_iterations
  if episode_length:
    over['episode_length'] = episode_length
  return train.make_env(config, **over)


def env_part(config, part: str, steps: int) -> None:
  backend, iters, ls, per_seed = None, 0, 0, int(config.num_envs)
  rest = part[len('env') :].lstrip('_')
  if rest.startswith('ls'):
    ls = int(rest[2:])
  elif rest.startswith('it'):
    iters = int(rest[2:])
  elif rest.startswith('x'):
    per_seed = int(rest[1:])
  elif rest:
    backend = rest
  env = make_env(config, backend, iters, ls)
  batch = int(config.num_seeds) * per_seed
  keys = jax.random.split(jax.random.PRNGKey(0), batch)
  _, state = jax.jit(jax.vmap(env.reset))(keys)

  def roll(state, key):
    def body(state, t):
      k = jax.random.fold_in(key, t)
      action = jax.random.uniform(k, (batch, env.act_dim), minval=-1.0, maxval=1.0)
      _, state, reward, *_ = jax.vmap(env.step)(jax.random.split(k, batch), state, action)
      return state, reward

    return jax.lax.scan(body, state, jnp.arange(steps))

  timed(f'{part} ({config.env}, batch {batch})', roll, (state, jax.random.PRNGKey(1)), steps)


def main(argv):
  del argv
  config, steps = _CONFIG.value, _STEPS.value
  say(f'jax {jax.__version__}, devices {jax.devices()}, env {config.env}, seeds {config.num_seeds}, '
      f'num_envs {config.num_envs}, steps {steps}, XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}')  # fmt: skip
  for part in _PARTS.value:
    if part.startswith('env'):
      env_part(config, part, steps)
    elif part in ('chunk', 'evaluate'):
      env = make_env(config, episode_length=steps if part == 'evaluate' else 0)
      programs = train.Programs(config, env, 'td3')
      t0 = time.time()
      state = jax.block_until_ready(programs.init(train.seed_keys(config)))
      say(f'init (reset, replay buffers): first call {time.time() - t0:.1f} s, compile included')
      agent = programs.agent
      if part == 'chunk':

        def chunk(s, start):
          return jax.vmap(lambda s_: agent.run_chunk(s_, start, steps))(s)

        t0 = time.time()
        compiled = jax.jit(chunk).lower(state, jnp.int32(0)).compile()
        say(f'chunk: lowered and compiled in {time.time() - t0:.1f} s')
        n = int(config.num_envs)
        for phase, start in (('warm-up', 0), ('updating', config.learning_starts // n)):
          for rep in range(2):
            t0 = time.time()
            jax.block_until_ready(compiled(state, jnp.int32(start)))
            dt = time.time() - t0
            say(f'chunk {phase} run {rep + 1}: {dt:.2f} s = {1e3 * dt / steps:.2f} ms per iteration')
      else:
        keys = train.purpose_keys(state, 3, 0)
        timed(f'evaluate ({config.eval_episodes} episodes x {steps} steps)', jax.vmap(agent.evaluate),
              (state, keys), steps)  # fmt: skip
    else:
      say(f'unknown part {part!r}: skipped')


if __name__ == '__main__':
  app.run(main)
