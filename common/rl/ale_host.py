"""The host side of `common.rl.atari`: ale-py emulators and the exact area resize, in numpy and the stdlib only.

`Emulators` holds the emulators of one process and steps a flat batch of them (emulation, max-pooling of the
last two screens, the area resize); `common.rl.atari._Pool` calls it in the main process (`host_workers=0`)
or in each of its worker processes (`serve`, started with multiprocessing's 'spawn' method). This module
imports no JAX, so a worker process starts in well under a second and carries no XLA threads; ale-py is
imported on first use (the JAX side reports a missing ale-py as a ConfigError).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import signal
import sys
import traceback
from typing import Any, Dict, Tuple

import numpy as np

# --------------------------------------------------------------------------- #
# Resize.
# --------------------------------------------------------------------------- #


@functools.lru_cache(maxsize=None)
def _area_taps(src: int, dst: int) -> Tuple[np.ndarray, np.ndarray]:
  """Integer area weights of a 1-D resize `src -> dst` as taps: `(index, weight)`, both `[dst, k]`.

  Output pixel `i` covers `[i * src / dst, (i + 1) * src / dst)` source pixels; source pixel `j` weighs
  `dst * overlap`, an integer (the interval ends are multiples of `1 / dst`), so each row sums to `src`.
  Rows with fewer than `k` taps are padded with weight 0.
  """
  taps = []
  for i in range(dst):
    lo, hi = i * src, (i + 1) * src  # In units of 1/dst source pixel.
    row = [(j, min(hi, (j + 1) * dst) - max(lo, j * dst)) for j in range(lo // dst, -(-hi // dst))]
    taps.append([(j, w) for j, w in row if w > 0])
  k = max(len(row) for row in taps)
  index = np.zeros((dst, k), np.intp)
  weight = np.zeros((dst, k), np.int32)
  for i, row in enumerate(taps):
    for t, (j, w) in enumerate(row):
      index[i, t], weight[i, t] = j, w
  return index, weight


def area_resize(frames: np.ndarray, size: int) -> np.ndarray:
  """Exact area-average resize of uint8 frames `[..., H, W] -> [..., size, size]`, rounded half to even.

  Integer arithmetic throughout: the weighted sums (`_area_taps`) are integers up to `255 * H * W`, divided by
  `H * W` with round-half-to-even, so the result is the same bits on every machine and batch size. Gathers
  and multiply-adds only, no BLAS (whose threads fight XLA's CPU threads inside a host callback).
  """
  frames = np.asarray(frames)
  h, w = frames.shape[-2:]
  index_x, weight_x = _area_taps(w, size)
  index_y, weight_y = _area_taps(h, size)
  x = frames.astype(np.int32)  # Sums reach 255 * H * W (8.6e6 for 210x160).
  cols = sum(x[..., index_x[:, t]] * weight_x[:, t] for t in range(index_x.shape[1]))  # [..., H, size]
  total = sum(cols[..., index_y[:, t], :] * weight_y[:, t, None] for t in range(index_y.shape[1]))
  denominator = h * w
  quotient, remainder = np.divmod(total, denominator)
  round_up = (2 * remainder > denominator) | ((2 * remainder == denominator) & (quotient % 2 == 1))
  return (quotient + round_up).astype(np.uint8)


# --------------------------------------------------------------------------- #
# Emulators.
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the host code needs of an `AtariEnv` (picklable: it is sent to the worker processes)."""

  name: str  # CamelCase game name, for messages.
  rom_path: str
  screen: Tuple[int, int]  # ALE screen (height, width).
  frame_skip: int
  terminal_on_life_loss: bool
  max_episode_steps: int
  size: int  # Observation height and width.
  full_action_space: bool


@dataclasses.dataclass
class _Emulator:
  ale: Any
  actions: list
  seed: int
  tick: int = 0
  episode_step: int = 0
  lives: int = 0


@functools.lru_cache(maxsize=None)
def _ale_py():
  ale_py = importlib.import_module('ale_py')
  ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # Process-wide: no banner per emulator.
  return ale_py


class Emulators:
  """The emulators of one process, keyed by id, stepped a flat batch at a time (see `common.rl.atari`).

  Ids are `first_id, first_id + id_stride, ...`: the pool of the main process counts 0, 1, 2, ...; worker `w`
  of `W` counts `base + w, base + w + W, ...`, so ids are unique across workers and `id % W` names the owner.
  Not thread-safe: the caller holds the pool's lock.
  """

  def __init__(self, settings: Settings, first_id: int = 0, id_stride: int = 1):
    self.settings = settings
    self._emulators: Dict[int, _Emulator] = {}
    self._next_id = int(first_id)
    self._stride = int(id_stride)

  def __len__(self) -> int:
    return len(self._emulators)

  def seeds(self) -> Dict[int, int]:
    return {i: em.seed for i, em in self._emulators.items()}

  def close(self) -> None:
    self._emulators.clear()

  def _create(self, seed: int) -> Tuple[int, _Emulator]:
    ale_py = _ale_py()
    s = self.settings
    ale = ale_py.ALEInterface()
    ale.setInt('random_seed', int(seed))
    ale.setFloat('repeat_action_probability', 0.0)
    ale.setInt('frame_skip', 1)  # Frame skipping is done here, with max-pooling.
    ale.loadROM(s.rom_path)
    actions = list(ale.getLegalActionSet() if s.full_action_space else ale.getMinimalActionSet())
    emulator_id = self._next_id
    self._next_id += self._stride
    em = _Emulator(ale=ale, actions=actions, seed=int(seed))
    self._emulators[emulator_id] = em
    return emulator_id, em

  def _start_game(self, em: _Emulator, noops: int, out: np.ndarray) -> None:
    """Resets the game, plays `noops` raw NOOP frames, and writes the first screen into `out`."""
    ale = em.ale
    ale.reset_game()
    for _ in range(int(noops)):
      ale.act(0)  # NOOP is action 0 of the full set.
      if ale.game_over(with_truncation=False):
        ale.reset_game()
    em.lives = ale.lives()
    em.episode_step = 0
    ale.getScreenGrayscale(out)

  def _act(self, em: _Emulator, action: int, raw: np.ndarray) -> Tuple[float, bool, bool]:
    """One agent step: `frame_skip` frames, the max of the last two screens into `raw`; `(reward,
    game_over, life_lost)`. Stops early at a terminal frame (Dopamine's `AtariPreprocessing.step`)."""
    s = self.settings
    if not 0 <= action < len(em.actions):
      raise ValueError(f'Atari action {action} is out of range [0, {len(em.actions)})')
    ale, ale_action = em.ale, em.actions[action]
    skip = s.frame_skip
    reward = 0.0
    game_over = life_lost = False
    screens = np.empty((2,) + tuple(s.screen), np.uint8)
    taken = 0
    for t in range(skip):
      reward += ale.act(ale_action)
      game_over = ale.game_over(with_truncation=False)
      lives = ale.lives()
      life_lost = lives < em.lives
      em.lives = lives
      stop = game_over or (s.terminal_on_life_loss and life_lost)
      if stop or t >= skip - 2:
        ale.getScreenGrayscale(screens[taken % 2])
        taken += 1
      if stop:
        break
    if taken >= 2:
      np.maximum(screens[0], screens[1], out=raw)
    else:
      raw[:] = screens[0]
    return reward, game_over, life_lost

  def reset(self, seed: np.ndarray, noops: np.ndarray):
    """Fresh emulators for a flat batch: `(ids, lives, frame)`, frames `[n, size, size]`."""
    n = seed.size
    ids = np.empty(n, np.int32)
    lives = np.empty(n, np.int32)
    raw = np.empty((n,) + tuple(self.settings.screen), np.uint8)
    for i in range(n):
      ids[i], em = self._create(seed[i])
      self._start_game(em, noops[i], raw[i])
      lives[i] = em.lives
    return ids, lives, area_resize(raw, self.settings.size)

  def step(self, known, emulator, tick, action, seed, noops):
    """One agent step of a flat batch. `known[i]`: the state carries this pool's token.

    Returns `(ids, ticks, steps, lives, last, new_first, reward, terminated, truncated, game_over,
    restarted)`: per-row outputs, except `new_first` (the first frame of the new game, for the rows with
    `game_over` only, in row order: other rows start from `last`) and `restarted` (how many rows were a
    state this pool cannot continue, restarted at a fresh emulator).
    """
    s = self.settings
    n = emulator.size
    raw = np.empty((n, 2) + tuple(s.screen), np.uint8)  # The step's last frame, the next episode's first.
    ids, ticks, steps, lives = (np.empty(n, np.int32) for _ in range(4))
    reward = np.zeros(n, np.float32)
    terminated, truncated, game_over = (np.zeros(n, bool) for _ in range(3))
    restarted = 0
    for i in range(n):
      em_id = int(emulator[i])
      em = self._emulators.get(em_id) if known[i] else None
      if em is None or em.tick != int(tick[i]):
        # A state this pool cannot continue (another process, another env, or already stepped): a fresh
        # emulator for it, and the episode is cut.
        em_id, em = self._create(seed[i])
        self._start_game(em, noops[i], raw[i, 1])
        raw[i, 0] = raw[i, 1]
        truncated[i] = game_over[i] = True
        restarted += 1
      else:
        r, over, life_lost = self._act(em, int(action[i]), raw[i, 0])
        em.tick += 1
        em.episode_step += 1
        reward[i] = r
        terminated[i] = over or (s.terminal_on_life_loss and life_lost)
        limit = em.episode_step >= s.max_episode_steps
        truncated[i] = limit and not terminated[i]
        game_over[i] = over or limit
        if game_over[i]:
          self._start_game(em, noops[i], raw[i, 1])
        else:
          raw[i, 1] = raw[i, 0]
      ids[i], ticks[i], steps[i], lives[i] = em_id, em.tick, em.episode_step, em.lives
    last = area_resize(raw[:, 0], s.size)
    if game_over.any():  # Only new games have a different first frame.
      new_first = area_resize(raw[game_over, 1], s.size)
    else:
      new_first = np.empty((0, s.size, s.size), np.uint8)
    return ids, ticks, steps, lives, last, new_first, reward, terminated, truncated, game_over, restarted


# --------------------------------------------------------------------------- #
# Worker processes.
# --------------------------------------------------------------------------- #

_COMMANDS = ('reset', 'step', 'seeds', 'count', 'modules')


def serve(conn: Any, settings: Settings, first_id: int, id_stride: int) -> None:
  """A worker process: answers `(command, args)` messages on `conn` until 'close' or the parent's end closes.

  Each answer is `('ok', result)` or `('error', traceback text)`; an error leaves the worker serving.
  """
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes the workers.
  emulators = Emulators(settings, first_id, id_stride)
  while True:
    try:
      command, args = conn.recv()
    except (EOFError, OSError):  # The parent is gone.
      break
    if command == 'close':
      emulators.close()
      conn.send(('ok', None))
      break
    try:
      if command not in _COMMANDS:
        raise ValueError(f'unknown host worker command {command!r}')
      if command == 'count':
        result = len(emulators)
      elif command == 'modules':
        result = sorted(sys.modules)
      else:
        result = getattr(emulators, command)(*args)
    except Exception:
      conn.send(('error', traceback.format_exc()))
    else:
      conn.send(('ok', result))
  conn.close()
