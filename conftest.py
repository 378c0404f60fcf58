"""Repository-wide pytest setup: the `gpu` and `slow` markers.

- `gpu`: skipped, with the reason shown, unless JAX sees a GPU.
- `slow`: skipped unless `--runslow` or `RUN_SLOW=1`, so the default run (and CI) stays fast on 2 CPU cores.
"""

import os

import pytest


def pytest_addoption(parser):
  parser.addoption('--runslow', action='store_true', default=False, help='also run tests marked slow')


def _has_gpu() -> bool:
  import jax  # Only imported when a gpu-marked test was collected.

  try:
    return bool(jax.devices('gpu'))
  except RuntimeError:
    return False


def pytest_collection_modifyitems(config, items):
  run_slow = config.getoption('--runslow') or os.environ.get('RUN_SLOW') == '1'
  gpu_items = [item for item in items if 'gpu' in item.keywords]
  if gpu_items and not _has_gpu():
    skip = pytest.mark.skip(reason='needs a GPU: JAX sees none on this machine')
    for item in gpu_items:
      item.add_marker(skip)
  if not run_slow:
    skip = pytest.mark.skip(reason='slow: run with --runslow or RUN_SLOW=1')
    for item in items:
      if 'slow' in item.keywords:
        item.add_marker(skip)
