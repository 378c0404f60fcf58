"""Real Atari 2600 games (ale-py) behind the gymnax-1.0 API, so `common.rl.dqn` runs DER/DrQ on Atari 100k.

    env, env_params = atari.make('Pong')                       # Atari 100k settings (below)
    agent = dqn.make_train(env, env_params, network, config)   # unchanged agent code
    state, metrics = jax.jit(jax.vmap(agent.train))(seeds, hparams)

The environment looks pure to JAX: its state (`AtariState`) is a pytree of small integers and the frame stack,
and `reset`/`step` are traced functions that `vmap`, `jit` and `lax.scan` accept. The emulators live on the
host, in a pool of `ale_py.ALEInterface` objects owned by the env (one per emulator id), and are driven by
`jax.pure_callback(..., vmap_method='broadcast_all')`: however many `vmap`s wrap the env (envs, seeds,
sweeps), ONE callback per vector step receives the whole `[S, E]` batch and steps every emulator in turn.

Protocol (Atari 100k as in Dopamine's `atari_lib` / DER / DrQ; settings differ by agent: see the research
notes, section 6 items 13-14):
  * sticky actions OFF (`repeat_action_probability = 0`), the minimal action set (`full_action_space=False`);
  * `frame_skip = 4` ALE frames per agent step, the reward summed over them; the observation frame is the
    pixel-wise max of the grayscale screens of the last two of those frames (`getScreenGrayscale`, ALE's
    NTSC luminance), resized to `size x size = 84 x 84` by an exact area average (below);
  * a stack of the last `stack = 4` frames, uint8 `[84, 84, 4]`, oldest first. A new episode starts from
    zeros with its first frame in the last channel, as Dopamine's agent state (`_reset_state` then
    `_record_observation`);
  * `terminal_on_life_loss=True`: losing a life is `terminated` (no bootstrap, a new agent episode and a new
    frame stack) but the emulator is NOT reset; it is reset only at the real game over (Dopamine's
    `AtariPreprocessing`). As there, a skip stops early at a terminal frame;
  * a game is truncated after `max_episode_frames = 108_000` frames, counted as `108_000 // frame_skip =
    27_000` agent steps (Dopamine's `max_steps_per_episode`), over the whole game (life losses do not restart
    the count); then `truncated` is True, unless the same step is terminal, and the emulator is reset;
  * `noop_max`: at every game start, `U{0..noop_max}` raw NOOP frames (drawn from the JAX key). Off (0) by
    default, as in Dopamine; 30 is the DQN-paper convention;
  * rewards: `clip_rewards=True` returns `clip(r, -1, 1)`, the reward DER and DrQ learn from (Dopamine clips
    inside the agent; here the agent stores what the env returns). The raw game reward is always in
    `info['raw_reward']`.

Reporting honest scores. With the defaults the agent's logged `episode_return` sums CLIPPED rewards over ONE
LIFE; the Atari 100k papers report the raw score of whole games (human-normalised with `HUMAN_SCORES` and
`RANDOM_SCORES`). Evaluate the trained state with a second env built for that (same network and config):

    eval_env, eval_params = atari.make(game, terminal_on_life_loss=False, clip_rewards=False)
    eval_agent = dqn.make_train(eval_env, eval_params, network, config)
    scores = eval_agent.evaluate(train_state, hparams, num_iterations, rng)   # raw per-game returns

(`evaluate` only counts games that end within `num_iterations`; a game lasts at most 27,000 steps. With
`dqn.Config.eval_first_episode` it counts each env's first game and stops once all have ended; vmapped over
runs, pass `axis_name` so the runs step together and no emulator sees a stale tick.) In a
training env, `info['raw_reward']` summed until `info['game_over']` gives the raw score of each game.

Resize. `cv2` is not a dependency (the CPU image lacks it), so frames are resized here by the exact area
average that cv2's INTER_AREA approximates in floating point: output pixel `(i, j)` is the mean of the source
rectangle `[i*H/84, (i+1)*H/84) x [j*W/84, (j+1)*W/84)`, each source pixel weighted by its overlap, rounded
half to even. The overlaps are multiples of `1/84` pixel, so it is computed in integers: the same bits on
every machine and batch size, and no BLAS (whose threads fight XLA's inside a callback: 40x slower). On
sampled Pong/Breakout/MsPacman/Seaquest frames it equals `cv2.resize(..., INTER_AREA)` (opencv 5.0)
exactly; on random images 0.03% of pixels differ by 1 grey level (cv2's float rounding at ties).

Why a stateful host pool behind `pure_callback` is correct. `pure_callback` promises XLA a function of its
inputs: XLA may drop a call whose outputs are unused, merge two calls with equal inputs, hoist a call with
loop-invariant inputs out of a loop, and reorder calls that do not depend on each other. The step callback
takes `(emulator id, pool token, tick, action, seed, noops)` and returns, among its outputs, the emulator's
new `tick` (its count of steps taken). The host checks that the `tick` it is given is the emulator's current
count. So:
  * the emulator's host state is a deterministic function of its seed and of the actions it was given, and
    `(id, pool, tick)` names one such state: the callback IS a function of its inputs, as long as each state
    is stepped at most once;
  * every step consumes the `tick` the previous step produced: calls on one emulator are ordered by data
    dependence, inside a scan or not, and no two of them have equal inputs (no merging, no hoisting);
  * a dropped call (outputs unused) leaves both the emulator and the state's `tick` unchanged: consistent;
  * the only way to break purity is to step the same state twice (keep an old state and step it again;
    broadcast one state over a batch of actions; merge two resets that got equal keys). The host sees a
    `tick` that is not current and, instead of silently continuing another trajectory, starts a fresh
    emulator for that branch (seeded from the step's key) and returns it with `truncated=True`: one
    transition with reward 0 whose next observation shows the new game;
  * outputs depend only on inputs and the pool, never on wall-clock or thread order, so runs are
    reproducible: the same keys give the same observations (tested), whichever ids the pool assigns.
`io_callback(ordered=True)` is not an option: JAX refuses to `vmap` an ordered callback, and an unordered
`io_callback` is `vmap`-ed as a sequential `lax.map` (one host call per emulator) without making anything
above safer. The callbacks run the emulators one after the other under a lock (ale-py holds the GIL while
emulating, so threads would not help), in this process or spread over worker processes (below).

Emulator ids. Each reset callback assigns fresh ids (host-side counters) to the whole batch it receives,
each emulator seeded (`random_seed`) from its own JAX key; ids are never derived from keys, so vmapped runs
cannot collide. The pool grows by one emulator per env per `reset`, including each `Agent.evaluate` call
(0.7-1 MB each; `close()` frees them all). States therefore differ between two runs in `emulator` (and
`pool`), never in observations, rewards or the other fields: compare runs on those.

Host workers (`host_workers=W`, opt-in; 0, the default, keeps the emulators in this process). ALE holds the
GIL, so emulating in parallel takes processes: with `W >= 1` the emulators live in `W` daemon processes
running `common.rl.ale_host` (numpy and ale-py, no JAX), started with the 'spawn' method (never fork: this
process runs XLA's threads) at the first callback. A callback sends each worker its share of the batch (a
reset's in contiguous parts; a state to worker `id % W`, which owns that emulator; another pool's state to
worker `row % W`), the workers emulate and resize in parallel, and the callback reassembles their outputs
in batch order. Same per-emulator code, so every output but the ids is bit-identical to `W = 0` for the
same keys (tested); worker `w` numbers its emulators `w, w + W, ...` (unique across workers), all under the
pool's token. Cost: about a second to start (in parallel) and 50 MB per worker, and tens of microseconds of
pipe traffic per step; 20 Breakout emulators on 2 cores: 10.3 ms per vector step in process, 5.7 ms with 2
workers. `close()`, garbage collection and exit stop the workers (a later callback starts new ones, whose
ids are above all earlier ones); an error in a worker raises `HostWorkerError` with its traceback.

Resuming. The emulators are not in the JAX state. In the same process, a run continued from its latest
state (chunks of `run_chunk`) is exactly the uninterrupted run. A state restored from a checkpoint in a new
process (or an older state) names emulators this pool does not have at that tick: each is restarted at a
fresh game (one truncated transition with reward 0, and a warning in the log), so a resumed run is NOT
bitwise the uninterrupted one: each env loses the rest of the game it was playing.

`HUMAN_SCORES` / `RANDOM_SCORES` are the per-game table every Atari 100k paper normalises with (the random
and human scores of the DQN papers, Mnih et al., 2015 and van Hasselt et al., 2016, as tabulated for SimPLe,
DER, DrQ, SPR and in `rliable`'s Atari 100k data, Agarwal et al., 2021); written from that table.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import multiprocessing
import os
import re
import sys
import threading
import types
import weakref
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from common.config import nearest
from common.errors import ConfigError
from common.rl import ale_host
from common.rl.ale_host import _area_taps, _Emulator, area_resize  # noqa: F401  (the host code's old home)

__all__ = [
  'ATARI_100K_GAMES',
  'AtariEnv',
  'AtariState',
  'Box',
  'Discrete',
  'EnvParams',
  'HUMAN_SCORES',
  'HostWorkerError',
  'RANDOM_SCORES',
  'area_resize',
  'check_scored_game',
  'human_normalized_score',
  'make',
]

# The 26 games of the Atari 100k benchmark (Kaiser et al., 2019) -> their ale-py ROM ids.
ATARI_100K_GAMES: Dict[str, str] = {
  'Alien': 'alien',
  'Amidar': 'amidar',
  'Assault': 'assault',
  'Asterix': 'asterix',
  'BankHeist': 'bank_heist',
  'BattleZone': 'battle_zone',
  'Boxing': 'boxing',
  'Breakout': 'breakout',
  'ChopperCommand': 'chopper_command',
  'CrazyClimber': 'crazy_climber',
  'DemonAttack': 'demon_attack',
  'Freeway': 'freeway',
  'Frostbite': 'frostbite',
  'Gopher': 'gopher',
  'Hero': 'hero',
  'Jamesbond': 'jamesbond',
  'Kangaroo': 'kangaroo',
  'Krull': 'krull',
  'KungFuMaster': 'kung_fu_master',
  'MsPacman': 'ms_pacman',
  'Pong': 'pong',
  'PrivateEye': 'private_eye',
  'Qbert': 'qbert',
  'RoadRunner': 'road_runner',
  'Seaquest': 'seaquest',
  'UpNDown': 'up_n_down',
}

# Per-game scores of a uniformly random policy and of the human tester, as the Atari 100k papers normalise
# with (SimPLe, DER, CURL, DrQ, SPR; `rliable`'s Atari 100k data); from the DQN papers' tables (Mnih et al.,
# 2015; van Hasselt et al., 2016). Written from that table; they match rliable's copy. Human-normalised:
# (score - random) / (human - random).
RANDOM_SCORES: Dict[str, float] = {
  'Alien': 227.8,
  'Amidar': 5.8,
  'Assault': 222.4,
  'Asterix': 210.0,
  'BankHeist': 14.2,
  'BattleZone': 2360.0,
  'Boxing': 0.1,
  'Breakout': 1.7,
  'ChopperCommand': 811.0,
  'CrazyClimber': 10780.5,
  'DemonAttack': 152.1,
  'Freeway': 0.0,
  'Frostbite': 65.2,
  'Gopher': 257.6,
  'Hero': 1027.0,
  'Jamesbond': 29.0,
  'Kangaroo': 52.0,
  'Krull': 1598.0,
  'KungFuMaster': 258.5,
  'MsPacman': 307.3,
  'Pong': -20.7,
  'PrivateEye': 24.9,
  'Qbert': 163.9,
  'RoadRunner': 11.5,
  'Seaquest': 68.4,
  'UpNDown': 533.4,
}

HUMAN_SCORES: Dict[str, float] = {
  'Alien': 7127.7,
  'Amidar': 1719.5,
  'Assault': 742.0,
  'Asterix': 8503.3,
  'BankHeist': 753.1,
  'BattleZone': 37187.5,
  'Boxing': 12.1,
  'Breakout': 30.5,
  'ChopperCommand': 7387.8,
  'CrazyClimber': 35829.4,
  'DemonAttack': 1971.0,
  'Freeway': 29.6,
  'Frostbite': 4334.7,
  'Gopher': 2412.5,
  'Hero': 30826.4,
  'Jamesbond': 302.8,
  'Kangaroo': 3035.0,
  'Krull': 2665.5,
  'KungFuMaster': 22736.3,
  'MsPacman': 6951.6,
  'Pong': 14.6,
  'PrivateEye': 69571.3,
  'Qbert': 13455.0,
  'RoadRunner': 7845.0,
  'Seaquest': 42054.7,
  'UpNDown': 11693.2,
}


def check_scored_game(game: str) -> None:
  """ConfigError (with close matches) unless `game` is one of the 26 Atari 100k games of the score tables."""
  if game not in HUMAN_SCORES:
    raise ConfigError(_unknown_game_message(game, HUMAN_SCORES))


def human_normalized_score(game: str, score: Any) -> Any:
  """`(score - random) / (human - random)` for one of the 26 Atari 100k games (raw game scores)."""
  check_scored_game(game)
  return (score - RANDOM_SCORES[game]) / (HUMAN_SCORES[game] - RANDOM_SCORES[game])


# --------------------------------------------------------------------------- #
# Spaces, params, state.
# --------------------------------------------------------------------------- #


class Discrete:
  """`n` actions `0..n-1` (gymnax's `spaces.Discrete`)."""

  def __init__(self, n: int):
    self.n = n
    self.shape = ()
    self.dtype = jnp.int32

  def sample(self, key: jax.Array) -> jax.Array:
    return jax.random.randint(key, (), 0, self.n, dtype=jnp.int32)

  def contains(self, x: Any) -> jax.Array:
    return (x >= 0) & (x < self.n)


class Box:
  """Arrays of `shape` and `dtype` with values in `[low, high]` (gymnax's `spaces.Box`)."""

  def __init__(self, low: Any, high: Any, shape: Tuple[int, ...], dtype: Any):
    self.low, self.high, self.shape, self.dtype = low, high, tuple(shape), dtype

  def sample(self, key: jax.Array) -> jax.Array:
    values = jax.random.randint(key, self.shape, self.low, self.high + 1)
    return values.astype(self.dtype)

  def contains(self, x: Any) -> jax.Array:
    return (x.shape == self.shape) & jnp.all(x >= self.low) & jnp.all(x <= self.high)


@flax.struct.dataclass
class EnvParams:
  """No traced parameters: every option is fixed when the `AtariEnv` is built (it fixes the host program)."""


@flax.struct.dataclass
class AtariState:
  """One environment; every field but `frames` is produced by the host callback (see the module docstring).

  Attributes:
    emulator: int32 id of the emulator in the host pool.
    pool: int32 token of the pool (the `AtariEnv` instance, in this process) that owns it.
    tick: int32 steps this emulator has taken; the host steps it only if this is its current count.
    episode_step: int32 agent steps in the current game (life losses do not reset it).
    lives: int32 lives left (ALE's `lives()`).
    frames: uint8 `[size, size, stack]` frame stack, oldest first: the observation.
  """

  emulator: jax.Array
  pool: jax.Array
  tick: jax.Array
  episode_step: jax.Array
  lives: jax.Array
  frames: jax.Array


# --------------------------------------------------------------------------- #
# Game names and ale-py.
# --------------------------------------------------------------------------- #


def _ale_py():
  try:
    return importlib.import_module('ale_py')
  except ImportError:
    raise ConfigError("Atari needs ale-py, which is not installed: pip install -e '.[atari]'") from None


def _normalize(name: str) -> str:
  return re.sub(r'[^a-z0-9]', '', name.lower())


def _camel(rom: str) -> str:
  return ''.join(part[:1].upper() + part[1:] for part in rom.split('_'))


def _unknown_game_message(game: str, valid) -> str:
  by_key = {_normalize(v): v for v in valid}
  close = nearest(game, valid) or [by_key[k] for k in nearest(_normalize(game), by_key)]
  hint = f'; did you mean {" or ".join(repr(c) for c in close)}?' if close else ''
  return (
    f"unknown Atari game '{game}'{hint} (the Atari 100k games: {', '.join(ATARI_100K_GAMES)}; any ale-py ROM "
    'works, by CamelCase name or ROM id)'
  )


def _resolve_game(game: str) -> Tuple[str, str]:
  """`(CamelCase name, ROM id)` of `game`, a CamelCase name ('MsPacman') or a ROM id ('ms_pacman')."""
  roms = _ale_py().roms.get_all_rom_ids()
  names = {_camel(rom): rom for rom in roms}
  names.update(ATARI_100K_GAMES)
  by_key = {_normalize(name): name for name in names}
  key = _normalize(str(game))
  if key not in by_key:
    raise ConfigError(_unknown_game_message(str(game), names))
  name = by_key[key]
  return name, names[name]


# --------------------------------------------------------------------------- #
# The host-side emulator pool.
# --------------------------------------------------------------------------- #


_POOLS: 'weakref.WeakSet[_Pool]' = weakref.WeakSet()


@atexit.register
def _close_pools() -> None:
  """Frees the emulators and stops the host workers before interpreter shutdown (compiled callbacks keep pools
  alive until then, and ale-py's bindings report ALEInterface objects still alive at exit as leaks)."""
  for pool in list(_POOLS):
    pool.close()


class HostWorkerError(RuntimeError):
  """A host worker process failed; the message carries the worker's traceback."""


@contextlib.contextmanager
def _without_main_module():
  """Hides `__main__` while starting spawned workers: a spawned child re-imports the parent's `__main__`
  (a training script that imports JAX), which the workers do not need. The start only launches the child."""
  main = sys.modules.get('__main__')
  sys.modules['__main__'] = types.ModuleType('__main__')
  try:
    yield
  finally:
    sys.modules['__main__'] = main


def _stop_workers(workers: List[Tuple[Any, Any]]) -> None:
  """Asks each worker to close, then joins it (terminating one that does not exit)."""
  for _, conn in workers:
    try:
      conn.send(('close', ()))
    except (OSError, ValueError):
      pass
  for process, conn in workers:
    try:
      if conn.poll(5.0):
        conn.recv()
    except (EOFError, OSError, ValueError):
      pass
    conn.close()
    process.join(5.0)
    if process.is_alive():
      process.terminate()
      process.join(1.0)
  workers.clear()


class _Pool:
  """The emulators of one `AtariEnv`, stepped by the host callbacks (see the module docstring).

  With `workers == 0` they live in this process (`ale_host.Emulators`); otherwise in `workers` spawned
  processes, each running the same `ale_host.Emulators` code on its share of every batch. Emulator `i` lives
  in worker `i % workers`; a reset splits the batch in contiguous parts, one per worker, and another pool's
  state goes to worker `row % workers`. The workers start at the first callback and stop at `close()`.
  """

  def __init__(self, settings: ale_host.Settings, workers: int = 0):
    self.settings = settings
    self.workers = int(workers)
    self._local = ale_host.Emulators(settings) if self.workers == 0 else None
    self._workers: List[Tuple[Any, Any]] = []  # (process, connection) while the workers run.
    self._finalize: Optional[weakref.finalize] = None
    self._next_id = 0  # Workers: no id below this was ever used; new workers start above it.
    self._lock = threading.Lock()
    # Random (unique in practice, across processes too), nonzero: marks the states this pool made.
    self.token = int.from_bytes(os.urandom(4), 'little') & 0x7FFFFFFF or 1
    self.stats = {'reset_calls': 0, 'step_calls': 0, 'steps': 0, 'created': 0, 'restarts': 0}
    _POOLS.add(self)

  def __len__(self) -> int:
    with self._lock:
      if self._local is not None:
        return len(self._local)
      return sum(self._ask({w: ('count', ()) for w in range(len(self._workers))}).values())

  def seeds(self) -> Dict[int, int]:
    with self._lock:
      if self._local is not None:
        return self._local.seeds()
      seeds = {}
      for part in self._ask({w: ('seeds', ()) for w in range(len(self._workers))}).values():
        seeds.update(part)
      return seeds

  def close(self) -> None:
    """Frees every emulator and stops the workers (a later callback starts new ones)."""
    with self._lock:
      if self._local is not None:
        self._local.close()
      self._stop_workers_locked()

  # ----- workers -----

  def _start_workers(self) -> None:
    """`self.workers` spawned processes; worker `w` numbers its emulators `base + w + k * workers`, with
    `base` above every id used before (a state of stopped workers is then unknown to the new ones)."""
    context = multiprocessing.get_context('spawn')  # Never fork: this process runs JAX's threads.
    count = self.workers
    base = -(-self._next_id // count) * count
    try:
      with _without_main_module():
        for w in range(count):
          conn, child = context.Pipe()
          process = context.Process(
            target=ale_host.serve,
            args=(child, self.settings, base + w, count),
            name=f'ale-host-{self.settings.name}-{w}',
            daemon=True,
          )
          process.start()
          child.close()
          self._workers.append((process, conn))
    except BaseException:
      _stop_workers(self._workers)
      raise
    # Stops them when the pool is garbage-collected or at exit, whichever comes first (also `close()`).
    self._finalize = weakref.finalize(self, _stop_workers, self._workers)

  def _ask(self, jobs: Dict[int, Tuple[str, tuple]]) -> Dict[int, Any]:
    """Sends `{worker: (command, args)}`, then collects every answer (the workers run in parallel). Raises
    HostWorkerError with the workers' error text; a worker that died stops them all (restarted next call)."""
    if not jobs:
      return {}
    results, errors, dead = {}, [], False
    sent = []
    for w, job in jobs.items():
      try:
        self._workers[w][1].send(job)
        sent.append(w)
      except (OSError, ValueError) as e:
        errors.append(f'host worker {w} is gone ({e!r})')
        dead = True
    for w in sent:
      process, conn = self._workers[w]
      try:
        status, value = conn.recv()
      except (EOFError, OSError) as e:
        process.join(1.0)
        errors.append(f'host worker {w} exited (exit code {process.exitcode}, {e!r})')
        dead = True
        continue
      if status == 'ok':
        results[w] = value
      else:
        errors.append(f'host worker {w} failed:\n{value}')
    if dead:
      self._stop_workers_locked()
    if errors:
      raise HostWorkerError(f'AtariEnv({self.settings.name}): ' + '\n'.join(errors))
    return results

  def _stop_workers_locked(self) -> None:
    if self._finalize is not None:
      self._finalize()  # _stop_workers(self._workers), once.
      self._finalize = None

  def _scatter(self, command: str, parts: List[np.ndarray], inputs: Tuple[np.ndarray, ...]):
    """Runs `command` on each worker's rows (`parts[w]`, increasing): `[(rows, result)]` of the workers."""
    if not self._workers:
      self._start_workers()
    jobs = {w: (command, tuple(x[rows] for x in inputs)) for w, rows in enumerate(parts) if rows.size}
    results = self._ask(jobs)
    return [(parts[w], results[w]) for w in jobs]

  def _note_ids(self, ids: np.ndarray) -> None:
    if ids.size:
      self._next_id = max(self._next_id, int(ids.max()) + 1)

  @staticmethod
  def _gather(n: int, answers, positions: Tuple[int, ...]) -> List[np.ndarray]:
    """The per-row outputs `positions` of the workers' answers, in batch order."""
    outs = []
    for k in positions:
      sample = answers[0][1][k]
      out = np.empty((n,) + sample.shape[1:], sample.dtype)
      for rows, result in answers:
        out[rows] = result[k]
      outs.append(out)
    return outs

  def _local_core(self) -> ale_host.Emulators:
    """The in-process emulators; with workers, an empty stand-in for an empty batch (no worker to ask)."""
    return self._local if self._local is not None else ale_host.Emulators(self.settings)

  # ----- callbacks -----

  def reset(self, seed: np.ndarray, noops: np.ndarray):
    """Host side of `AtariEnv.reset`: fresh emulators for the whole batch."""
    with self._lock:
      self.stats['reset_calls'] += 1
      # Callbacks receive jax Arrays: convert once (indexing them element by element dispatches JAX ops).
      shape = np.shape(seed)
      seed, noops = np.asarray(seed).reshape(-1), np.asarray(noops).reshape(-1)
      n = seed.size
      if self._local is not None or n == 0:
        ids, lives, frame = self._local_core().reset(seed, noops)
      else:
        answers = self._scatter('reset', np.array_split(np.arange(n), self.workers), (seed, noops))
        ids, lives, frame = self._gather(n, answers, (0, 1, 2))
        self._note_ids(ids)
      self.stats['created'] += n
      zero = np.zeros(n, np.int32)
      outs = (ids, np.full(n, self.token, np.int32), zero, zero, lives, frame)
      return tuple(x.reshape(shape + x.shape[1:]) for x in outs)

  def step(self, emulator, pool, tick, action, seed, noops):
    """Host side of `AtariEnv.step` for the whole batch (all inputs have the same shape)."""
    with self._lock:
      self.stats['step_calls'] += 1
      shape = np.shape(emulator)
      emulator, pool, tick, action, seed, noops = (
        np.asarray(x).reshape(-1) for x in (emulator, pool, tick, action, seed, noops)
      )
      n = emulator.size
      known = pool == self.token
      if self._local is not None or n == 0:
        ids, ticks, steps, lives, last, new_first, reward, terminated, truncated, game_over, restarted = (
          self._local_core().step(known, emulator, tick, action, seed, noops)
        )
        first = last.copy()
        first[game_over] = new_first
      else:
        # A state of this pool goes to the worker that owns its id; any other to a worker by its row.
        owner = np.where(known, emulator % self.workers, np.arange(n) % self.workers)
        parts = [np.flatnonzero(owner == w) for w in range(self.workers)]
        answers = self._scatter('step', parts, (known, emulator, tick, action, seed, noops))
        ids, ticks, steps, lives, last, reward, terminated, truncated, game_over = self._gather(
          n, answers, (0, 1, 2, 3, 4, 6, 7, 8, 9)
        )
        first = last.copy()
        for rows, result in answers:
          first[rows[result[9]]] = result[5]
        restarted = sum(result[10] for _, result in answers)
        self._note_ids(ids)
      self.stats['steps'] += n - restarted
      if restarted:
        self.stats['created'] += restarted
        self.stats['restarts'] += restarted
        logging.warning(
          'AtariEnv(%s): restarted %d of %d emulators whose state this pool cannot continue (restored from a '
          'checkpoint, made by another env, or stepped twice); their episodes are truncated',
          self.settings.name,
          restarted,
          n,
        )
      outs = (
        ids,
        np.full(n, self.token, np.int32),
        ticks,
        steps,
        lives,
        last,
        first,
        reward,
        terminated,
        truncated,
        game_over,
      )
      return tuple(x.reshape(shape + x.shape[1:]) for x in outs)


# --------------------------------------------------------------------------- #
# The environment.
# --------------------------------------------------------------------------- #


def _check_int(name: str, value: Any, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ConfigError(f'AtariEnv {name} must be an integer >= {minimum}, got {value!r}')


class AtariEnv:
  """An ale-py game with the gymnax-1.0 API; emulators on the host (see the module docstring).

  `reset(key, params) -> (obs, state)`, `step(key, state, action, params) -> (obs, state, reward,
  terminated, truncated, info)`, auto-resetting, with `info['final_observation']` (the stack before the
  reset), `info['raw_reward']` (unclipped), `info['lives']`, `info['game_over']` (the game ended, by game
  over or time limit, and the emulator started a new one) and `info['discount']`. Observations are uint8
  `[size, size, stack]`, rewards float32.

  Args:
    game: CamelCase name ('Pong', 'MsPacman') or ale-py ROM id ('ms_pacman'); any of ale-py's ROMs.
    terminal_on_life_loss: a life loss is `terminated` (the emulator continues).
    clip_rewards: return `clip(reward, -1, 1)` (DER/DrQ); the raw reward is in `info['raw_reward']`.
    frame_skip: ALE frames per agent step (reward summed, last two screens max-pooled).
    stack: frames stacked in the observation.
    size: observation height and width.
    max_episode_frames: a game is truncated after `max_episode_frames // frame_skip` agent steps.
    noop_max: up to this many raw NOOP frames at each game start (uniform in `0..noop_max`).
    full_action_space: the 18 legal actions instead of the game's minimal set.
    host_workers: 0 runs the emulators in this process; `W >= 1` runs them in `W` spawned worker processes,
      each stepping its share of every batch (same outputs, except emulator ids; see the module docstring).

  Raises:
    ConfigError: ale-py missing, an unknown game, or a bad option.
  """

  def __init__(
    self,
    game: str,
    *,
    terminal_on_life_loss: bool = True,
    clip_rewards: bool = True,
    frame_skip: int = 4,
    stack: int = 4,
    size: int = 84,
    max_episode_frames: int = 108_000,
    noop_max: int = 0,
    full_action_space: bool = False,
    host_workers: int = 0,
  ):
    _check_int('frame_skip', frame_skip, 1)
    _check_int('stack', stack, 1)
    _check_int('size', size, 1)
    _check_int('max_episode_frames', max_episode_frames, frame_skip)
    _check_int('noop_max', noop_max, 0)
    _check_int('host_workers', host_workers, 0)
    self.name, self.rom = _resolve_game(game)
    self.terminal_on_life_loss = bool(terminal_on_life_loss)
    self.clip_rewards = bool(clip_rewards)
    self.frame_skip = int(frame_skip)
    self.stack = int(stack)
    self.size = int(size)
    self.max_episode_frames = int(max_episode_frames)
    self.max_episode_steps = self.max_episode_frames // self.frame_skip
    self.noop_max = int(noop_max)
    self.full_action_space = bool(full_action_space)
    self.host_workers = int(host_workers)
    ale_py = _ale_py()
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # Process-wide: no banner per emulator.
    rom_path = str(ale_py.roms.get_rom_path(self.rom))
    probe = ale_py.ALEInterface()
    probe.loadROM(rom_path)
    actions = probe.getLegalActionSet() if self.full_action_space else probe.getMinimalActionSet()
    self.action_names = tuple(str(a).split('.')[-1] for a in actions)
    self.num_actions = len(actions)
    height, width = probe.getScreenDims()
    settings = ale_host.Settings(
      name=self.name,
      rom_path=rom_path,
      screen=(int(height), int(width)),
      frame_skip=self.frame_skip,
      terminal_on_life_loss=self.terminal_on_life_loss,
      max_episode_steps=self.max_episode_steps,
      size=self.size,
      full_action_space=self.full_action_space,
    )
    self._pool = _Pool(settings, self.host_workers)

  def __repr__(self) -> str:
    return (
      f'AtariEnv({self.name!r}, terminal_on_life_loss={self.terminal_on_life_loss}, '
      f'clip_rewards={self.clip_rewards}, frame_skip={self.frame_skip}, stack={self.stack}, '
      f'size={self.size}, max_episode_frames={self.max_episode_frames}, noop_max={self.noop_max}, '
      f'host_workers={self.host_workers})'
    )

  # ----- gymnax API -----

  @property
  def default_params(self) -> EnvParams:
    return EnvParams()

  def action_space(self, params: Optional[EnvParams] = None) -> Discrete:
    return Discrete(self.num_actions)

  def observation_space(self, params: Optional[EnvParams] = None) -> Box:
    return Box(0, 255, (self.size, self.size, self.stack), jnp.uint8)

  def _draws(self, key: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """The emulator seed (ALE `random_seed`) and the number of no-op frames of a game started with `key`."""
    key_seed, key_noop = jax.random.split(key)
    seed = jax.random.randint(key_seed, (), 0, 2**31 - 1, dtype=jnp.int32)
    noops = jax.random.randint(key_noop, (), 0, self.noop_max + 1, dtype=jnp.int32)
    return seed, noops

  def _fresh_stack(self, frame: jax.Array) -> jax.Array:
    zeros = jnp.zeros(frame.shape + (self.stack - 1,), jnp.uint8)
    return jnp.concatenate([zeros, frame[..., None]], axis=-1)

  def reset(self, key: jax.Array, params: Optional[EnvParams] = None) -> Tuple[jax.Array, AtariState]:
    """A fresh emulator (new id, seeded from `key`) at the start of a game."""
    seed, noops = self._draws(key)
    i32 = jax.ShapeDtypeStruct((), jnp.int32)
    shapes = (i32,) * 5 + (jax.ShapeDtypeStruct((self.size, self.size), jnp.uint8),)
    emulator, pool, tick, episode_step, lives, frame = jax.pure_callback(
      self._pool.reset, shapes, seed, noops, vmap_method='broadcast_all'
    )
    state = AtariState(emulator, pool, tick, episode_step, lives, self._fresh_stack(frame))
    return state.frames, state

  def step(
    self, key: jax.Array, state: AtariState, action: Any, params: Optional[EnvParams] = None
  ) -> Tuple[jax.Array, AtariState, jax.Array, jax.Array, jax.Array, Dict[str, jax.Array]]:
    """One agent step of `state`'s emulator; a new game (seeded no-ops from `key`) after a game over."""
    seed, noops = self._draws(key)
    i32 = jax.ShapeDtypeStruct((), jnp.int32)
    frame = jax.ShapeDtypeStruct((self.size, self.size), jnp.uint8)
    f32 = jax.ShapeDtypeStruct((), jnp.float32)
    boolean = jax.ShapeDtypeStruct((), jnp.bool_)
    shapes = (i32,) * 5 + (frame, frame, f32) + (boolean,) * 3
    outs = jax.pure_callback(
      self._pool.step,
      shapes,
      state.emulator,
      state.pool,
      state.tick,
      jnp.asarray(action, jnp.int32),
      seed,
      noops,
      vmap_method='broadcast_all',
    )
    emulator, pool, tick, episode_step, lives, last, first, raw_reward, terminated, truncated, game_over = (
      outs
    )
    final_obs = jnp.concatenate([state.frames[..., 1:], last[..., None]], axis=-1)
    done = terminated | truncated
    obs = jnp.where(done, self._fresh_stack(first), final_obs)
    reward = jnp.clip(raw_reward, -1.0, 1.0) if self.clip_rewards else raw_reward
    new_state = AtariState(emulator, pool, tick, episode_step, lives, obs)
    info = {
      'final_observation': final_obs,
      'raw_reward': raw_reward,
      'lives': lives,
      'game_over': game_over,
      'discount': 1.0 - terminated.astype(jnp.float32),
    }
    return obs, new_state, reward, terminated, truncated, info

  # ----- host pool -----

  @property
  def num_emulators(self) -> int:
    """Emulators alive in this env's pool."""
    return len(self._pool)

  def host_stats(self) -> Dict[str, int]:
    """Host counters: callbacks (`reset_calls`, `step_calls`), emulator `steps`, `created`, `restarts`."""
    return dict(self._pool.stats, emulators=len(self._pool))

  def emulator_seeds(self) -> Dict[int, int]:
    """`{emulator id: ALE random_seed}` of the live emulators."""
    return self._pool.seeds()

  def close(self) -> None:
    """Frees every emulator and stops the host workers (the next callback starts new ones); states made
    before are restarted (truncated) if stepped again."""
    self._pool.close()


def make(game: str, **kwargs: Any) -> Tuple[AtariEnv, EnvParams]:
  """`(env, env_params)` for `dqn.make_train`; keyword arguments as `AtariEnv`'s (Atari 100k defaults)."""
  env = AtariEnv(game, **kwargs)
  return env, env.default_params
