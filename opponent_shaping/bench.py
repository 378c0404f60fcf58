"""Throughput of the games and of training: environment steps per second (random play) and agent updates
per second with seeds vmapped, for each experiment config, timed after compilation (median of repeats).

    python -m opponent_shaping.bench --configs=ipd_gru,coin_game,negotiation [--updates=20] [--out=bench.json]

One "update" is a full training step of both agents for every seed: a `num_envs` x `episode_length`
rollout, advantages, and the actor and critic steps. Environment steps per second of training counts
num_seeds x num_envs x episode_length per update.
"""

import json
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from common import config as config_lib
from opponent_shaping import agents as agents_lib
from opponent_shaping import games
from opponent_shaping import train as train_lib

_CONFIGS = flags.DEFINE_list('configs', ['default', 'ipd_gru', 'coin_game', 'negotiation'], 'Config names.')
_UPDATES = flags.DEFINE_integer('updates', 20, 'Updates per timed chunk.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed chunks (the median is reported).')
_ENV_BATCH = flags.DEFINE_integer('env_batch', 65536, 'Environments for the random-play measure.')
_OUT = flags.DEFINE_string('out', '', 'Write the table as JSON here.')


def bench_config(name: str) -> dict:
  config = config_lib.load_config(f'opponent_shaping/configs/{name}.py')
  game = train_lib.make_game(config)
  agent = agents_lib.make_agent(config.arch, game, hidden=config.hidden)
  train_chunk = train_lib.make_train_chunk(config, game, agent)
  method = next(iter(config.methods))
  states = train_lib.init_states(config, game, agent)[method]
  betas = jnp.full((config.num_seeds,), config.methods[method], jnp.float32)
  start = time.perf_counter()
  states, stats = train_chunk(states, betas, _UPDATES.value)
  jax.block_until_ready(stats)
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    states, stats = train_chunk(states, betas, _UPDATES.value)
    jax.block_until_ready(stats)
    times.append(time.perf_counter() - start)
  per_update = statistics.median(times) / _UPDATES.value
  env_random = games.env_steps_per_second(game, _ENV_BATCH.value, jax.random.PRNGKey(0))
  return {
    'config': name,
    'seeds': config.num_seeds,
    'envs': config.num_envs,
    'T': game.episode_length,
    'updates_per_s': 1 / per_update,
    'train_env_steps_per_s': config.num_seeds * config.num_envs * game.episode_length / per_update,
    'random_env_steps_per_s': env_random,
    'first_chunk_s': compile_s,
    'full_run_estimate_s': per_update * config.updates * len(config.methods),
  }


def main(argv):
  del argv
  rows = [bench_config(name) for name in _CONFIGS.value]
  device = jax.devices()[0].device_kind
  print(f'device: {device}, jax {jax.__version__}')
  print(
    f'{"config":12} {"seeds":>5} {"envs":>5} {"T":>3} {"updates/s":>10} {"train steps/s":>14} '
    f'{"random steps/s":>15} {"1st chunk s":>11} {"run est. s":>10}'
  )
  for r in rows:
    print(
      f'{r["config"]:12} {r["seeds"]:5d} {r["envs"]:5d} {r["T"]:3d} {r["updates_per_s"]:10.2f} '
      f'{r["train_env_steps_per_s"]:14.3e} {r["random_env_steps_per_s"]:15.3e} {r["first_chunk_s"]:11.1f} '
      f'{r["full_run_estimate_s"]:10.0f}'
    )
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump({'device': device, 'jax': jax.__version__, 'rows': rows}, f, indent=2)


if __name__ == '__main__':
  app.run(main)
