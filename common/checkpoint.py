"""Orbax checkpoints with automatic resume (MaxText, dopamine): save every N steps, keep the last K, and
restore any pytree (train state with optimizer state, rng, step, replay buffer, counters).

Resume order, as in big_vision: the latest checkpoint in `workdir/checkpoints`, else the state built from
scratch. A checkpoint whose tree structure or array shapes differ from the state being restored raises
`CheckpointMismatchError` (one line, with the fix) and leaves the files untouched. Orbax casts restored
arrays to the target's dtype, so a float32 checkpoint restores into a bfloat16 state without complaint.

Orbax refuses to save arrays with a zero-sized dimension, which real states hold (MJX's `Data.act` of a model
without actuator activations, so every Brax/MJX env state): such leaves are saved as a one-element placeholder
and rebuilt, as the zero-sized array of the target's shape and dtype, on restore.
"""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp

from common.errors import CheckpointMismatchError

State = TypeVar('State')
CHECKPOINT_DIR = 'checkpoints'


class Checkpointer:
  """A thin wrapper over `orbax.checkpoint.CheckpointManager`.

  Args:
    workdir: the run directory; checkpoints go to `workdir/checkpoints/<step>`.
    every: save when `step % every == 0` (or when `save(..., force=True)`).
    keep: how many recent checkpoints to keep.
    async_save: write in a background thread (Orbax's default); `wait()` blocks until written.
  """

  def __init__(self, workdir: str, *, every: int = 1000, keep: int = 3, async_save: bool = True):
    if every <= 0 or keep <= 0:
      raise ValueError(f'checkpoint every={every} and keep={keep} must both be positive')
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    self.every = every
    # The save decision is ours (Orbax alone would also save the first step it sees).
    options = ocp.CheckpointManagerOptions(
      save_interval_steps=1, max_to_keep=keep, create=True, enable_async_checkpointing=async_save
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The step of the newest checkpoint, or None when there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, *, force: bool = False) -> bool:
    """Saves `state` at `step` if `step` is a multiple of `every` (or `force`); returns whether it did."""
    step = int(step)
    if not (force or step % self.every == 0) or step in self._manager.all_steps():
      return False
    return self._manager.save(step, args=ocp.args.StandardSave(_placeholders(state)), force=True)

  def restore(self, target: State, step: int | None = None) -> State:
    """Restores the checkpoint at `step` (default: latest) into the structure, shapes and shardings of
    `target` (concrete arrays or `jax.ShapeDtypeStruct`s)."""
    self.wait()
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self.directory}')
    try:
      restored = self._manager.restore(step, args=ocp.args.StandardRestore(_placeholders(target)))
    except ValueError as e:
      detail = ' '.join(str(e).split())[:300]
      raise CheckpointMismatchError(
        f'checkpoint {step} in {self.directory} does not match the state being restored ({detail}); '
        'rerun with the config that wrote it, or start a fresh run with another --workdir or '
        '--overwrite (which moves the old run aside)'
      ) from None
    leaves, treedef = jax.tree.flatten(target)
    if not any(_is_empty(x) for x in leaves):
      return restored
    rebuilt = [
      _zeros(t, t.shape) if _is_empty(t) else r
      for t, r in zip(leaves, jax.tree.leaves(restored), strict=True)
    ]
    return jax.tree.unflatten(treedef, rebuilt)

  def restore_or_init(self, init_state: State | Callable[[], State]) -> tuple[State, int]:
    """Automatic resume: `(restored, step)` from the latest checkpoint, else `(init_state, 0)`.

    `init_state` may be a function of no arguments that builds the state. Then, when a checkpoint exists,
    the state is never built: its shapes (`jax.eval_shape`) are the restore target, so a large state (a
    replay buffer) is not held on the device twice while restoring (rl_softmoe's Atari runs ran out of
    memory resuming that way). Without a checkpoint the function is called."""
    step = self.latest_step()
    if step is None:
      return (init_state() if callable(init_state) else init_state), 0
    target = abstract_state(init_state) if callable(init_state) else init_state
    return self.restore(target, step), step

  def wait(self) -> None:
    """Blocks until asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _is_empty(x) -> bool:
  shape = getattr(x, 'shape', None)
  return shape is not None and 0 in tuple(shape)


def _zeros(like, shape):
  """Zeros of `like`'s dtype and the given shape: NumPy for a NumPy leaf, else a JAX array with `like`'s
  sharding (a `jax.ShapeDtypeStruct`'s or an array's; the default device's when it has none)."""
  if isinstance(like, np.ndarray):
    return np.zeros(shape, like.dtype)
  return jax.device_put(np.zeros(shape, like.dtype), getattr(like, 'sharding', None))


def _placeholders(tree):
  """`tree` with every zero-sized leaf (an array or an abstract shape) replaced by one element of its dtype
  (NumPy, JAX or abstract like the leaf), which Orbax saves and restores."""

  def one(x):
    if not _is_empty(x):
      return x
    if isinstance(x, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct((1,), x.dtype, sharding=x.sharding)
    return _zeros(x, (1,))

  return jax.tree.map(one, tree)


def abstract_state(init_fn: Callable[[], State]) -> State:
  """The shapes, dtypes and shardings `init_fn()` would give, without building it (a restore target).
  Leaves without a sharding (what `jax.eval_shape` gives outside `jit`'s out_shardings) get the default
  device's."""
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])

  def spec(x):
    sharding = getattr(x, 'sharding', None) or device
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

  return jax.tree.map(spec, jax.eval_shape(init_fn))
