"""Config plumbing: the `:arg` string of `--config=path.py:arg`, config files, and config diffs.

Every project config is a Python file with `get_config(arg=None)` returning an `ml_collections.ConfigDict`
(big_vision / flax examples). The text after the colon is parsed here, with typed values taken from the
defaults the config file declares::

    def get_config(arg=None):
      arg = config.parse_arg(arg, smoke=False, seeds=3, env='Breakout-MinAtar')
      ...

    --config=rl_softmoe/configs/default.py:smoke,seeds=5

Bare words are booleans switched on (`smoke`); `key=value` pairs are converted to the type of the default.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
from typing import Any, Mapping

import ml_collections

from common.errors import ConfigError

_TRUE = ('1', 'true', 'yes', 'on')
_FALSE = ('0', 'false', 'no', 'off')


def nearest(name: str, valid, n: int = 3) -> list[str]:
  """The valid names closest to `name` (for "did you mean" messages)."""
  return difflib.get_close_matches(name, sorted(valid), n=n, cutoff=0.5)


def unknown_name_message(kind: str, name: str, valid) -> str:
  """One line: `unknown <kind> 'x'; did you mean 'y'? valid: a, b, c`."""
  close = nearest(name, valid)
  hint = f'; did you mean {" or ".join(repr(c) for c in close)}?' if close else ''
  return f"unknown {kind} '{name}'{hint} (valid: {', '.join(sorted(valid)) or 'none'})"


def convert_text(key: str, text: str, default: Any) -> Any:
  """Converts `text` to the type of `default` (bool words, ints written as 1e5, None guesses a type); a clear
  ConfigError naming `key` when it cannot."""
  want = type(default)
  try:
    if isinstance(default, bool):
      low = text.lower()
      if low in _TRUE:
        return True
      if low in _FALSE:
        return False
      raise ValueError
    if isinstance(default, int):
      as_float = float(text)  # Accepts 1e5 for step counts.
      if not as_float.is_integer():
        raise ValueError
      return int(as_float)
    if isinstance(default, float):
      return float(text)
    if isinstance(default, str):
      return text
    if default is None:
      return _guess(text)
  except ValueError:
    raise ConfigError(
      f"config argument '{key}' expects {want.__name__} (default {default!r}), got '{text}'"
    ) from None
  raise ConfigError(
    f"config argument '{key}' has a default of unsupported type {want.__name__}; "
    'use bool, int, float, str or None'
  )


def _guess(text: str) -> Any:
  """Typed value for a key whose default is None: int, float, bool, None, else str."""
  low = text.lower()
  if low in ('none', 'null'):
    return None
  if low in ('true', 'false'):
    return low == 'true'
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return text


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses `'smoke,seeds=5'` against `defaults` into a ConfigDict of typed values.

  Args:
    arg: the text after the colon of `--config=path.py:arg`, or None/'' for all defaults.
    **defaults: every accepted key with its default; the default's type is the value's type.

  Returns:
    An unlocked ConfigDict holding every key of `defaults`, overridden by `arg`.

  Raises:
    ConfigError: an unknown key (naming the nearest valid ones), a value of the wrong type, a bare word
      for a non-boolean key, or a key given twice.
  """
  out = ml_collections.ConfigDict(dict(defaults))
  seen = set()
  for token in (arg or '').split(','):
    token = token.strip()
    if not token:
      continue
    key, has_value, text = token.partition('=')
    key = key.strip()
    if key not in defaults:
      raise ConfigError(unknown_name_message('config argument', key, defaults))
    if key in seen:
      raise ConfigError(f"config argument '{key}' is given twice in '{arg}'")
    seen.add(key)
    if not has_value:
      if not isinstance(defaults[key], bool):
        raise ConfigError(
          f"config argument '{key}' needs a value ({key}=...), its default is {defaults[key]!r}"
        )
      out[key] = True
    else:
      out[key] = convert_text(key, text.strip(), defaults[key])
  return out


def load_config(spec: str, *, lock: bool = True) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` the way `--config` does (for tests, reproduce.py, notebooks)."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise ConfigError(f"config file '{path}' does not exist")
  name = 'config_' + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ConfigError(f"config file '{path}' defines no get_config(arg)")
  config = module.get_config(arg or None)
  if lock:
    config.lock()
  return config


def to_dict(config: ml_collections.ConfigDict | Mapping) -> dict:
  """A plain JSON-able dict of the config (what `config.json` holds)."""
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort(sort_keys=True))
  return json.loads(json.dumps(config, sort_keys=True, default=repr))


def flatten(tree: Mapping, prefix: str = '') -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, Mapping) and value:
      flat.update(flatten(value, name + '.'))
    else:
      flat[name] = value
  return flat


def diff(old: Mapping, new: Mapping) -> list[str]:
  """Dotted keys whose values differ between two config dicts (added and removed keys too)."""
  a, b = flatten(old), flatten(new)
  return sorted(k for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING))


_MISSING = object()
