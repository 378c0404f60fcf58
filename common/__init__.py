"""The shared core of the monorepo: small, stable, tested modules that at least two projects use.

Submodules are imported on first use (`from common import nn` or `common.nn`), so importing `common`
for one light helper does not pull in JAX, Orbax, TensorBoard and matplotlib.
"""

import importlib

__all__ = [
  'app',
  'checkpoint',
  'config',
  'distributed',
  'errors',
  'metrics',
  'nn',
  'ppo',
  'projects',
  'results',
  'schedules',
  'stats',
]


def __getattr__(name):
  if name in __all__:
    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f"module 'common' has no attribute '{name}'")
