"""A fixed-capacity circular replay buffer that is a pytree, so it lives inside `jit`, `vmap` and `lax.scan`.

Layout. Transitions come from `E` parallel environments, one vector step at a time. The buffer stores them as
`E` columns of a ring of `rows = capacity // E` rows: every leaf of `buffer.data` has shape `[rows, E, ...]`,
`add` writes one row (one vector step, all environments) at `buffer.pos` and advances it, so each column is the
time series of one environment. `buffer.count` is the number of rows written so far (at most `rows`).

What is stored is up to the caller (a pytree of arrays with a leading env axis). The value-based agents in
`common.rl.dqn` store one transition per step: `obs`, `action`, `reward`, `done` (the episode ended here:
terminated or truncated), `terminal` (terminated: no bootstrap) and `next_obs` (the true next observation,
gymnax's `info['final_observation']`, so truncated episodes bootstrap correctly even though the environment
auto-resets).

Multi-step windows. An n-step target starting at row `i` needs the rows `i, i+1, ..., i+n-1` (mod `rows`) of the
same column. `window_rows` returns them with an `in_range` mask that is False from the first row that has not
been written after row `i`, i.e. a window never crosses the write head into older data. Because every stored
transition carries its own `next_obs`, a window cut short by the write head (or by an episode end, which
`common.rl.targets.n_step_window` handles) is still a valid, shorter multi-step target, so *every* filled slot
is a valid start and sampling is exactly uniform over the filled slots.

Prioritized replay (Schaul et al., 2016) is optional: `init(..., prioritized=True)` adds a `[rows, E]` priority
array, new transitions get the largest priority seen so far, and `sample_prioritized` draws stratified samples
with probability proportional to `priority ** exponent` (the exponent may be traced). It scans all slots
(a cumulative sum), which is cheap on accelerators at the sizes used here (10^5 slots) and needs no sum-tree.

All functions are pure; sizes (`capacity`, `batch_size`, `n`) are static Python ints, everything else may be
traced.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError

__all__ = [
  'Buffer',
  'add',
  'gather',
  'init',
  'num_envs',
  'num_rows',
  'sample',
  'sample_indices',
  'sample_prioritized',
  'size',
  'update_priorities',
  'window_rows',
]


@flax.struct.dataclass
class Buffer:
  """The replay buffer's state.

  Attributes:
    data: the stored pytree; every leaf has shape `[rows, E, ...]`.
    pos: int32 scalar, the row the next `add` writes (the write head).
    count: int32 scalar, rows written so far, at most `rows`.
    priorities: `[rows, E]` float32 priorities (prioritized buffers only, else None).
    max_priority: float32 scalar, the priority given to new transitions (prioritized buffers only).
  """

  data: Any
  pos: jax.Array
  count: jax.Array
  priorities: Optional[jax.Array] = None
  max_priority: Optional[jax.Array] = None


def init(capacity: int, example: Any, *, prioritized: bool = False) -> Buffer:
  """An empty buffer for `capacity` transitions shaped like `example`.

  Args:
    capacity: total number of transitions kept (over all environments); must be a positive multiple of the
      number of environments `E`.
    example: one vector step, a pytree whose leaves have a leading env axis `[E, ...]` (only shapes and dtypes
      are used).
    prioritized: also keep priorities for `sample_prioritized`.

  Raises:
    ConfigError: `capacity` is not a positive multiple of `E`, or the leaves disagree on `E`.
  """
  leaves = jax.tree.leaves(example)
  if not leaves:
    raise ConfigError('replay example transition has no arrays; pass one vector step of transitions')
  envs = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
  if len(envs) != 1 or None in envs:
    raise ConfigError(
      f'replay example leaves must share a leading env axis, got leading sizes {sorted(envs, key=str)}'
    )
  (e,) = envs
  capacity = int(capacity)
  if capacity < e or capacity % e:
    raise ConfigError(
      f'replay capacity must be a positive multiple of the number of envs ({e}), got {capacity}'
    )
  rows = capacity // e
  data = jax.tree.map(lambda x: jnp.zeros((rows,) + tuple(np.shape(x)), jnp.asarray(x).dtype), example)
  priorities = jnp.zeros((rows, e), jnp.float32) if prioritized else None
  max_priority = jnp.ones((), jnp.float32) if prioritized else None
  zero = jnp.zeros((), jnp.int32)
  return Buffer(data=data, pos=zero, count=zero, priorities=priorities, max_priority=max_priority)


def num_rows(buffer: Buffer) -> int:
  """Rows in the ring (static): capacity // E."""
  return jax.tree.leaves(buffer.data)[0].shape[0]


def num_envs(buffer: Buffer) -> int:
  """Environment columns `E` (static)."""
  return jax.tree.leaves(buffer.data)[0].shape[1]


def size(buffer: Buffer) -> jax.Array:
  """Transitions currently stored (int32): filled rows times E."""
  return buffer.count * num_envs(buffer)


def add(buffer: Buffer, transition: Any) -> Buffer:
  """Writes one vector step (leaves `[E, ...]`) at the write head and advances it, overwriting the oldest row
  once the buffer is full. New transitions get `max_priority` in a prioritized buffer."""
  rows = num_rows(buffer)
  data = jax.tree.map(
    lambda store, x: jax.lax.dynamic_update_index_in_dim(store, jnp.asarray(x, store.dtype), buffer.pos, 0),
    buffer.data,
    transition,
  )
  priorities = buffer.priorities
  if priorities is not None:
    row = jnp.full((num_envs(buffer),), buffer.max_priority, jnp.float32)
    priorities = jax.lax.dynamic_update_index_in_dim(priorities, row, buffer.pos, 0)
  return buffer.replace(
    data=data,
    pos=(buffer.pos + 1) % rows,
    count=jnp.minimum(buffer.count + 1, rows),
    priorities=priorities,
  )


def sample_indices(buffer: Buffer, key: jax.Array, batch_size: int) -> Tuple[jax.Array, jax.Array]:
  """`(rows, envs)`, each int32 `[batch_size]`: slots drawn uniformly (with replacement) from the filled ones.

  The filled slots are rows `0..count-1` of every column (rows fill from 0 and are never emptied), so one
  integer in `[0, count * E)` picks a slot. The buffer must not be empty (the agent only samples after
  `learning_starts` steps); an empty buffer returns slot (0, 0).
  """
  e = num_envs(buffer)
  flat = jax.random.randint(key, (batch_size,), 0, jnp.maximum(size(buffer), 1), dtype=jnp.int32)
  return flat // e, flat % e


def gather(buffer: Buffer, rows: jax.Array, envs: jax.Array) -> Any:
  """The stored transitions at slots `(rows, envs)` (any matching shapes `S`); leaves `[*S, ...]`."""
  return jax.tree.map(lambda x: x[rows, envs], buffer.data)


def sample(buffer: Buffer, key: jax.Array, batch_size: int) -> Any:
  """`batch_size` transitions drawn uniformly from the filled slots; leaves `[batch_size, ...]`."""
  rows, envs = sample_indices(buffer, key, batch_size)
  return gather(buffer, rows, envs)


def window_rows(buffer: Buffer, rows: jax.Array, n: int) -> Tuple[jax.Array, jax.Array]:
  """The rows of the n-step windows starting at `rows`, and which of them hold data written after the start.

  Args:
    buffer: the buffer.
    rows: int `[...]` start rows (filled rows).
    n: static window length.

  Returns:
    `(window, in_range)`, both `[..., n]`: `window[..., k] = (rows + k) % num_rows`, and `in_range[..., k]` is
    True when that row was written at or after the start row, i.e. when `k` is less than the number of rows
    from the start up to the newest row (`pos - 1`). A window therefore never crosses the write head: past it
    lie rows from an older lap (or unfilled rows), whatever the environment did.
  """
  total = num_rows(buffer)
  rows = jnp.asarray(rows, jnp.int32)
  k = jnp.arange(n, dtype=jnp.int32)
  window = (rows[..., None] + k) % total
  # Rows from the start up to and including the newest row `pos - 1`: in [1, total].
  available = (buffer.pos - rows - 1) % total + 1
  return window, k < available[..., None]


def sample_prioritized(
  buffer: Buffer, key: jax.Array, batch_size: int, exponent: Any, num_strata: Any = None
) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Stratified proportional sampling: `(rows, envs, probs)` with `P(slot) = p**exponent / sum(p**exponent)`.

  The total mass is cut into `num_strata` equal segments (default `batch_size`) and sample `b < num_strata`
  is drawn from segment `b` (as Dopamine's sum tree does), which lowers the variance against independent
  draws. Unfilled rows have probability 0. `probs[b]` is the probability of the drawn slot, for the importance
  weights `(N * P) ** -beta`.

  `num_strata` may be traced and smaller than `batch_size`: the first `num_strata` samples are then exactly
  those of a call with `batch_size = num_strata` (the uniform draws of a key are prefixes of each other), and
  the rest are padding the caller masks. This is how a batch size is swept inside one compiled program.
  """
  if buffer.priorities is None:
    raise ConfigError('sample_prioritized needs a buffer made with init(..., prioritized=True)')
  total = num_rows(buffer)
  e = num_envs(buffer)
  filled = (jnp.arange(total) < buffer.count)[:, None]
  mass = jnp.where(filled, jnp.power(buffer.priorities, exponent), 0.0).reshape(-1)
  cumulative = jnp.cumsum(mass)
  norm = cumulative[-1]
  strata = jnp.float32(batch_size) if num_strata is None else jnp.asarray(num_strata, jnp.float32)
  # Clipped below 1: padding samples (b >= num_strata) land on the last filled slot and are masked.
  offsets = jnp.arange(batch_size, dtype=jnp.float32) + jax.random.uniform(key, (batch_size,))
  u = jnp.minimum(offsets * (1.0 / strata), 1.0)  # A multiply, not a divide: see `probs` below.
  flat = jnp.searchsorted(cumulative, u * norm, side='right').astype(jnp.int32)
  # Rounding can land on the end or on a zero-mass slot; clamp into the filled slots.
  flat = jnp.clip(flat, 0, jnp.maximum(size(buffer), 1) - 1)
  # Multiplied by the reciprocal (not divided): XLA rewrites divisions by a broadcast scalar inconsistently
  # between programs, and vmapped runs must equal single runs bitwise.
  probs = mass[flat] * (1.0 / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny))
  return flat // e, flat % e, probs


def update_priorities(
  buffer: Buffer, rows: jax.Array, envs: jax.Array, priorities: jax.Array, mask: Optional[jax.Array] = None
) -> Buffer:
  """Sets the priorities of slots `(rows, envs)` (and raises `max_priority` to cover them); entries whose
  `mask` is False (padding of a masked batch) change nothing."""
  if buffer.priorities is None:
    raise ConfigError('update_priorities needs a buffer made with init(..., prioritized=True)')
  priorities = jnp.asarray(priorities, jnp.float32)
  if mask is None:
    return buffer.replace(
      priorities=buffer.priorities.at[rows, envs].set(priorities),
      max_priority=jnp.maximum(buffer.max_priority, jnp.max(priorities)),
    )
  rows = jnp.where(mask, rows, num_rows(buffer))  # Out of bounds: dropped by the scatter.
  return buffer.replace(
    priorities=buffer.priorities.at[rows, envs].set(priorities, mode='drop'),
    max_priority=jnp.maximum(buffer.max_priority, jnp.max(jnp.where(mask, priorities, 0.0))),
  )
