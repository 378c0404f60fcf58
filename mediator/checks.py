"""Field validation shared by the mediator environments: one-line ConfigErrors raised before compiling."""

from __future__ import annotations

import math

import numpy as np

from common.errors import ConfigError


def check_int(owner: str, name: str, value, minimum: int, reason: str = '') -> None:
  """Raises a one-line ConfigError unless `value` is an int >= minimum."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    because = f' ({reason})' if reason else ''
    raise ConfigError(f'{owner}: `{name}` must be an integer >= {minimum}{because}, got {value!r}')


def check_real(
  owner: str, name: str, value, minimum: float, strict: bool = False, maximum: float | None = None
) -> None:
  """Raises a one-line ConfigError unless `value` is a finite real >= minimum (> when strict), <= maximum."""
  ok = (
    not isinstance(value, bool)
    and isinstance(value, (int, float, np.integer, np.floating))
    and math.isfinite(value)
    and (value > minimum if strict else value >= minimum)
    and (maximum is None or value <= maximum)
  )
  if not ok:
    bound = f'> {minimum}' if strict else f'>= {minimum}'
    if maximum is not None:
      bound += f' and <= {maximum}'
    raise ConfigError(f'{owner}: `{name}` must be a finite number {bound}, got {value!r}')
