"""Times the host side of the Atari env: one vector step of `--envs` emulators (`_Pool.step`, as the pure
callback runs it), in this process and with host worker processes (`common.rl.atari` `host_workers`), the
cost that the Atari evaluation pays per step (rl_softmoe/README.md, 2026-11-28).

    python rl_softmoe/tools/atari_host_bench.py --game=Breakout --envs=20 --workers=0,2 --steps=300

Prints, per worker count, the milliseconds per vector step of `--repeats` timed loops of `--steps` steps
(after 20 warm-up steps), the same action for every emulator.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402

from common.rl import atari  # noqa: E402

_GAME = flags.DEFINE_string('game', 'Breakout', 'ale-py game.')
_ENVS = flags.DEFINE_integer('envs', 20, 'Emulators per vector step (the evaluation: eval_envs x seeds).')
_WORKERS = flags.DEFINE_list('workers', ['0', '2'], 'host_workers values to time.')
_STEPS = flags.DEFINE_integer('steps', 300, 'Vector steps per timed loop.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed loops per worker count.')
_ACTION = flags.DEFINE_integer('action', 1, 'The action every emulator takes (1 is FIRE in Breakout).')


def time_steps(workers: int) -> list[float]:
  """Milliseconds per vector step of each timed loop with `workers` host workers."""
  env = atari.AtariEnv(_GAME.value, host_workers=workers)
  pool, n = env._pool, _ENVS.value
  seed, noops = np.arange(n, dtype=np.int32), np.zeros(n, np.int32)
  ids, token, tick, _, _, _ = pool.reset(seed, noops)
  action = np.full(n, _ACTION.value, np.int32)

  def run(steps):
    nonlocal ids, tick
    for _ in range(steps):
      out = pool.step(ids, token, tick, action, seed, noops)
      ids, tick = out[0], out[2]

  run(20)  # Warm-up (and the workers' start).
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    run(_STEPS.value)
    times.append((time.perf_counter() - start) / _STEPS.value * 1e3)
  env.close()
  return times


def main(argv):
  del argv
  print(f'{_GAME.value}, {_ENVS.value} emulators, {os.cpu_count()} CPUs')
  for w in _WORKERS.value:
    times = time_steps(int(w))
    print(f'host_workers={w}: ' + ', '.join(f'{t:.2f}' for t in times) + ' ms per vector step')


if __name__ == '__main__':
  app.run(main)
