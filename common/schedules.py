"""Optax-compatible schedules shared across projects.

Every public factory in this module returns a callable ``schedule(step)`` that
maps a (possibly traced) integer step count to a scalar floating point
``jax.Array``. The callables are pure ``jax.numpy`` functions without Python
control flow on the step, so they work unchanged inside ``jax.jit``,
``jax.vmap`` and ``jax.lax.scan`` and can be passed anywhere Optax accepts a
schedule (e.g. ``optax.adam(learning_rate=schedule)``).

Hyper-parameters (peak values, step counts, ...) are validated eagerly when a
schedule is built, so a bad configuration fails at construction time with a
``ValueError`` (or ``TypeError`` for values of the wrong type) instead of
silently producing NaNs during training. They must therefore be concrete
Python/NumPy numbers, not traced values. Negative steps are treated as step 0.

Example:
    >>> sched = make_schedule("warmup_cosine", peak_value=3e-4,
    ...                       total_steps=10_000, warmup_steps=500)
    >>> optimizer = optax.adamw(learning_rate=sched)
"""

import difflib
import inspect
import math
import numbers
from typing import Any, Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
  'SCHEDULES',
  'Schedule',
  'constant_with_warmup',
  'linear_epsilon',
  'make_schedule',
  'warmup_cosine',
  'warmup_linear_decay',
]

# A callable ``step -> scalar value``; the same contract as ``optax.Schedule``.
Schedule = Callable[[Any], jax.Array]


# --------------------------------------------------------------------------- #
# Argument validation.
# --------------------------------------------------------------------------- #


def _as_float(name: str, value: Any) -> float:
  """Returns ``value`` as a finite Python float or raises a clear error."""
  bad_type = isinstance(value, (bool, str, bytes)) or value is None
  result = 0.0
  if not bad_type:
    try:
      if np.ndim(value) != 0:
        raise TypeError(name)
      result = float(value)  # Fails for tracers (abstract values).
    except Exception:  # pylint: disable=broad-except
      bad_type = True
  if bad_type:
    raise TypeError(f'{name} must be a concrete real number, got {value!r} (type {type(value).__name__}).')
  if not math.isfinite(result):
    raise ValueError(f'{name} must be finite, got {value!r}.')
  return result


def _as_steps(name: str, value: Any, *, minimum: int = 0) -> int:
  """Returns ``value`` as a Python int >= ``minimum`` or raises a clear error.

  Integral floats such as ``1e4`` (common in config files) are accepted.
  """
  if isinstance(value, bool):
    raise TypeError(f'{name} must be an integer number of steps, got {value!r}.')
  if isinstance(value, numbers.Integral):
    result = int(value)
  elif isinstance(value, numbers.Real) and float(value).is_integer():
    result = int(value)
  else:
    raise TypeError(
      f'{name} must be an integer number of steps, got {value!r} (type {type(value).__name__}).'
    )
  if result < minimum:
    raise ValueError(f'{name} must be >= {minimum}, got {result}.')
  return result


def _check_warmup_within_total(warmup_steps: int, total_steps: int) -> None:
  if warmup_steps > total_steps:
    raise ValueError(
      f'warmup_steps ({warmup_steps}) must not exceed total_steps '
      f'({total_steps}); total_steps counts the warmup steps.'
    )


# --------------------------------------------------------------------------- #
# Traceable building blocks.
# --------------------------------------------------------------------------- #


def _step_as_float(step: Any) -> jax.Array:
  """Converts a (possibly traced) step to a non-negative float array."""
  step = jnp.asarray(step)
  step = step.astype(jnp.result_type(float))  # float32, float64 under x64.
  return jnp.maximum(step, 0.0)


def _linear_warmup(step: jax.Array, init_value: float, peak_value: float, warmup_steps: int) -> jax.Array:
  """``init + (peak - init) * min(step / W, 1)``; constant peak if W == 0."""
  if warmup_steps == 0:
    return jnp.full_like(step, peak_value)
  frac = jnp.clip(step / warmup_steps, 0.0, 1.0)
  return init_value + (peak_value - init_value) * frac


def _ramp(step: jax.Array, start: int, length: int) -> jax.Array:
  """``clip((step - start) / length, 0, 1)``; a unit step at start if 0."""
  if length == 0:
    return jnp.where(step >= start, 1.0, 0.0).astype(step.dtype)
  return jnp.clip((step - start) / length, 0.0, 1.0)


# --------------------------------------------------------------------------- #
# Public schedules.
# --------------------------------------------------------------------------- #


def warmup_cosine(
  peak_value: float,
  total_steps: int,
  warmup_steps: int = 0,
  *,
  init_value: float = 0.0,
  end_value: float = 0.0,
) -> Schedule:
  """Linear warmup followed by a half-cosine decay.

  With ``W = warmup_steps``, ``T = total_steps``, ``D = T - W`` and
  ``s = max(step, 0)``::

      s <  W:      v(s) = init + (peak - init) * s / W
      W <= s <= T: v(s) = end + (peak - end) * (1 + cos(pi * (s - W) / D)) / 2
      s >  T:      v(s) = end

  ``total_steps`` counts the warmup, so the decay lasts ``T - W`` steps. In
  the middle of the decay (``s = W + (T - W) / 2``) the value is
  ``(peak + end) / 2``. If ``W == T`` there is no decay phase and the value
  jumps from ``peak`` to ``end`` at step ``T``.

  Args:
      peak_value: Value reached at the end of warmup (``s = W``).
      total_steps: Total number of steps ``T`` including the warmup; >= 1.
      warmup_steps: Number of linear warmup steps ``W``, ``0 <= W <= T``.
          With ``W = 0`` the schedule starts directly at ``peak_value``.
      init_value: Value at step 0 when ``W > 0``.
      end_value: Final value, reached at ``s = T`` and held afterwards.

  Returns:
      An Optax-compatible schedule ``step -> scalar jax.Array`` that accepts
      traced integer steps under ``jax.jit``.

  Raises:
      ValueError: If ``total_steps < 1``, ``warmup_steps < 0``,
          ``warmup_steps > total_steps`` or a value is not finite.
      TypeError: If an argument has the wrong type.
  """
  peak_value = _as_float('peak_value', peak_value)
  init_value = _as_float('init_value', init_value)
  end_value = _as_float('end_value', end_value)
  total_steps = _as_steps('total_steps', total_steps, minimum=1)
  warmup_steps = _as_steps('warmup_steps', warmup_steps)
  _check_warmup_within_total(warmup_steps, total_steps)
  decay_steps = total_steps - warmup_steps

  def schedule(step):
    s = _step_as_float(step)
    warm = _linear_warmup(s, init_value, peak_value, warmup_steps)
    frac = _ramp(s, warmup_steps, decay_steps)
    cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    decayed = end_value + (peak_value - end_value) * cosine
    return jnp.where(s < warmup_steps, warm, decayed)

  return schedule


def warmup_linear_decay(
  peak_value: float,
  total_steps: int,
  warmup_steps: int = 0,
  *,
  init_value: float = 0.0,
  end_value: float = 0.0,
) -> Schedule:
  """Linear warmup followed by a linear decay.

  With ``W = warmup_steps``, ``T = total_steps`` and ``s = max(step, 0)``::

      s <  W:      v(s) = init + (peak - init) * s / W
      W <= s <= T: v(s) = peak + (end - peak) * (s - W) / (T - W)
      s >  T:      v(s) = end

  ``total_steps`` counts the warmup, so the decay lasts ``T - W`` steps. If
  ``W == T`` there is no decay phase and the value jumps from ``peak`` to
  ``end`` at step ``T``.

  Args:
      peak_value: Value reached at the end of warmup (``s = W``).
      total_steps: Total number of steps ``T`` including the warmup; >= 1.
      warmup_steps: Number of linear warmup steps ``W``, ``0 <= W <= T``.
      init_value: Value at step 0 when ``W > 0``.
      end_value: Final value, reached at ``s = T`` and held afterwards.

  Returns:
      An Optax-compatible schedule ``step -> scalar jax.Array``.

  Raises:
      ValueError: If ``total_steps < 1``, ``warmup_steps < 0``,
          ``warmup_steps > total_steps`` or a value is not finite.
      TypeError: If an argument has the wrong type.
  """
  peak_value = _as_float('peak_value', peak_value)
  init_value = _as_float('init_value', init_value)
  end_value = _as_float('end_value', end_value)
  total_steps = _as_steps('total_steps', total_steps, minimum=1)
  warmup_steps = _as_steps('warmup_steps', warmup_steps)
  _check_warmup_within_total(warmup_steps, total_steps)
  decay_steps = total_steps - warmup_steps

  def schedule(step):
    s = _step_as_float(step)
    warm = _linear_warmup(s, init_value, peak_value, warmup_steps)
    frac = _ramp(s, warmup_steps, decay_steps)
    decayed = peak_value + (end_value - peak_value) * frac
    return jnp.where(s < warmup_steps, warm, decayed)

  return schedule


def constant_with_warmup(
  peak_value: float,
  warmup_steps: int = 0,
  *,
  init_value: float = 0.0,
) -> Schedule:
  """Linear warmup to a constant value.

  With ``W = warmup_steps`` and ``s = max(step, 0)``::

      s <  W: v(s) = init + (peak - init) * s / W
      s >= W: v(s) = peak

  Args:
      peak_value: Constant value after warmup.
      warmup_steps: Number of linear warmup steps ``W >= 0``; with ``W = 0``
          the schedule is the constant ``peak_value``.
      init_value: Value at step 0 when ``W > 0``.

  Returns:
      An Optax-compatible schedule ``step -> scalar jax.Array``.

  Raises:
      ValueError: If ``warmup_steps < 0`` or a value is not finite.
      TypeError: If an argument has the wrong type.
  """
  peak_value = _as_float('peak_value', peak_value)
  init_value = _as_float('init_value', init_value)
  warmup_steps = _as_steps('warmup_steps', warmup_steps)

  def schedule(step):
    s = _step_as_float(step)
    return _linear_warmup(s, init_value, peak_value, warmup_steps)

  return schedule


def linear_epsilon(
  start: float,
  end: float,
  decay_steps: int,
  *,
  warmup_steps: int = 0,
) -> Schedule:
  """Linearly decaying exploration epsilon for epsilon-greedy RL agents.

  A generalisation of Dopamine's ``linearly_decaying_epsilon`` (which fixes
  ``start = 1``). With ``W = warmup_steps``, ``D = decay_steps`` and
  ``s = max(step, 0)``::

      eps(s) = start + (end - start) * clip((s - W) / D, 0, 1)

  i.e. ``start`` for ``s <= W``, linear from ``start`` to ``end`` for
  ``W <= s <= W + D``, and ``end`` from ``s = W + D`` on. The warmup is
  typically the number of steps spent filling the replay buffer
  (Dopamine's ``min_replay_history``). If ``D == 0`` epsilon jumps from
  ``start`` to ``end`` at step ``W``.

  Args:
      start: Epsilon during warmup and at the start of the decay, in [0, 1].
      end: Final epsilon, in [0, 1] (usually ``end <= start``).
      decay_steps: Number of steps ``D >= 0`` over which epsilon moves
          linearly from ``start`` to ``end``.
      warmup_steps: Number of initial steps ``W >= 0`` held at ``start``.

  Returns:
      A schedule ``step -> scalar jax.Array`` that accepts traced integer
      steps inside ``jax.jit``.

  Raises:
      ValueError: If ``start`` or ``end`` lies outside [0, 1] or a step
          count is negative.
      TypeError: If an argument has the wrong type.
  """
  start = _as_float('start', start)
  end = _as_float('end', end)
  for name, value in (('start', start), ('end', end)):
    if not 0.0 <= value <= 1.0:
      raise ValueError(f'{name} must be an epsilon in [0, 1], got {value}.')
  decay_steps = _as_steps('decay_steps', decay_steps)
  warmup_steps = _as_steps('warmup_steps', warmup_steps)

  def schedule(step):
    s = _step_as_float(step)
    return start + (end - start) * _ramp(s, warmup_steps, decay_steps)

  return schedule


# --------------------------------------------------------------------------- #
# Lookup by name.
# --------------------------------------------------------------------------- #

# Schedule factories available through `make_schedule`, by name.
SCHEDULES: Dict[str, Callable[..., Schedule]] = {
  'warmup_cosine': warmup_cosine,
  'warmup_linear_decay': warmup_linear_decay,
  'constant_with_warmup': constant_with_warmup,
  'linear_epsilon': linear_epsilon,
}


def make_schedule(name: str, **kwargs: Any) -> Schedule:
  """Builds one of the schedules in ``SCHEDULES`` by name.

  Names are matched case-insensitively and ``-`` is treated as ``_``, so
  ``"Warmup-Cosine"`` selects :func:`warmup_cosine`.

  Args:
      name: One of ``warmup_cosine``, ``warmup_linear_decay``,
          ``constant_with_warmup`` or ``linear_epsilon``.
      **kwargs: Keyword arguments forwarded to the selected factory.

  Returns:
      The schedule ``step -> scalar jax.Array`` built by the factory.

  Raises:
      ValueError: If ``name`` is unknown; the message lists the valid names
          and the closest match, if any. Also any ``ValueError`` raised by
          the factory for bad values.
      TypeError: If ``name`` is not a string, or ``kwargs`` do not match the
          factory's signature (the message names the schedule and shows
          its signature).
  """
  if not isinstance(name, str):
    raise TypeError(f'Schedule name must be a string, got {name!r}.')
  key = name.strip().lower().replace('-', '_')
  valid = sorted(SCHEDULES)
  if key not in SCHEDULES:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f' Did you mean {close[0]!r}?' if close else ''
    raise ValueError(f'Unknown schedule {name!r}.{hint} Valid names: {", ".join(valid)}.')
  factory = SCHEDULES[key]
  signature = inspect.signature(factory).replace(return_annotation=inspect.Signature.empty)
  try:
    signature.bind(**kwargs)
  except TypeError as e:
    raise TypeError(f'Bad arguments for schedule {key!r}{signature}: {e}') from None
  return factory(**kwargs)
