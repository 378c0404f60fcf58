"""One metric writer for every project: append-only `metrics.jsonl` plus TensorBoard, a NaN/inf guard and a
progress bar for long loops run in chunks (big_vision, dreamerv3, CleanRL).

Names are grouped by prefix: `train/loss`, `eval/return`, `charts/epsilon`. A nested dict
`{'train': {'loss': x}}` is flattened to `train/loss`; a name with no group is refused, so TensorBoard and
analysis scripts always see the same groups.

The writer pulls values to the host once per `write` call (one `jax.device_get` for the whole dict), so
call it every N steps, or once per chunk with `write_stacked`, never every step inside a jitted loop.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Iterator, Mapping

import numpy as np

from common.errors import NonFiniteError

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'train': {'loss': 1}} -> {'train/loss': 1}; a top-level name must carry a group (`train/...`)."""
  flat = {}
  for key, value in metrics.items():
    name = f'{prefix}{key}'
    if isinstance(value, Mapping):
      flat.update(flatten_metrics(value, name + '/'))
    else:
      flat[name] = value
  return flat


def _to_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
  import jax  # Deferred: the writer itself is usable (and testable) without touching devices.

  flat = flatten_metrics(metrics)
  for name in flat:
    if '/' not in name:
      raise ValueError(f"metric '{name}' has no group; name it like 'train/{name}' or 'eval/{name}'")
  host = jax.device_get(flat)
  out = {}
  for name, value in host.items():
    array = np.asarray(value)
    if array.size != 1:
      raise ValueError(
        f"metric '{name}' has shape {array.shape}; reduce it to a scalar (e.g. mean over "
        'seeds) before writing, or use write_stacked for a leading step axis'
      )
    out[name] = array.reshape(()).item()
  return out


def _json_value(value: float) -> Any:
  """Strict JSON has no NaN/inf: write them as the strings 'nan', 'inf', '-inf'."""
  if isinstance(value, float) and not math.isfinite(value):
    return 'nan' if math.isnan(value) else ('inf' if value > 0 else '-inf')
  return value


def read_metrics(workdir: str) -> list[dict]:
  """All rows of `workdir/metrics.jsonl` (non-finite values come back as float nan/inf)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        rows.append({k: float(v) if v in ('nan', 'inf', '-inf') else v for k, v in row.items()})
  return rows


class MetricWriter:
  """Writes scalar metrics to `metrics.jsonl` and TensorBoard; stops the run on NaN or inf.

  Args:
    workdir: the run directory.
    resume_step: when resuming from a checkpoint at this step, rows logged after it (by the interrupted
      run, past its last checkpoint) are dropped so the file matches an uninterrupted run.
    tensorboard: also write TensorBoard event files under `workdir/tensorboard` (tensorboardX, no TF).
    enabled: write anything at all; defaults to `jax.process_index() == 0` so only one host writes.
    check_finite: raise NonFiniteError on a NaN/inf value (after writing the row, so it is on record).
  """

  def __init__(
    self,
    workdir: str,
    *,
    resume_step: int | None = None,
    tensorboard: bool = True,
    enabled: bool | None = None,
    check_finite: bool = True,
  ):
    if enabled is None:
      import jax

      enabled = jax.process_index() == 0
    self.workdir = workdir
    self.enabled = enabled
    self.check_finite = check_finite
    self._tb = None
    self._file = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, METRICS_FILE)
    if resume_step is not None:
      self._truncate_after(path, resume_step)
    self._file = open(path, 'a')
    if tensorboard:
      from tensorboardX import SummaryWriter

      self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR), flush_secs=30)

  @staticmethod
  def _truncate_after(path: str, step: int) -> None:
    if not os.path.exists(path):
      return
    with open(path) as f:
      lines = [line for line in f if line.strip()]
    keep = [line for line in lines if json.loads(line).get('step', -1) <= step]
    if len(keep) != len(lines):
      tmp = path + '.tmp'
      with open(tmp, 'w') as f:
        f.writelines(keep)
      os.replace(tmp, path)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Writes one row of scalars at `step`; raises NonFiniteError after writing a NaN/inf."""
    if not self.enabled:
      return
    scalars = _to_scalars(metrics)
    row = {'step': int(step), 'time': round(time.time(), 3)}
    row.update({k: _json_value(v) for k, v in scalars.items()})
    self._file.write(json.dumps(row) + '\n')
    self._file.flush()
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(name, value, int(step))
    if self.check_finite:
      bad = [k for k, v in scalars.items() if isinstance(v, float) and not math.isfinite(v)]
      if bad:
        self.flush()
        raise NonFiniteError(
          f'metric {", ".join(bad)} is {scalars[bad[0]]} at step {int(step)}; the run stops here and '
          f'the last good checkpoint in {self.workdir} is kept: lower the learning rate or check the '
          'inputs, then rerun the same command to resume from it'
        )

  def write_stacked(self, steps, metrics: Mapping[str, Any]) -> None:
    """Writes metrics stacked over a leading step axis, as a scanned chunk returns them."""
    if not self.enabled:
      return
    import jax

    steps = np.asarray(steps)
    host = jax.device_get(flatten_metrics(metrics))
    for i, step in enumerate(steps):
      self.write(int(step), {k: np.asarray(v)[i] for k, v in host.items()})

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def chunks(
  total: int,
  chunk: int,
  *,
  start: int = 0,
  desc: str = 'train',
  disable: bool = False,
  log_interval_s: float = 60.0,
) -> Iterator[tuple[int, int]]:
  """Yields `(begin, end)` step ranges of at most `chunk` steps from `start` to `total`, with progress.

  On a terminal the progress is a tqdm bar (starting at `start` when a run resumes). In a batch job (stderr
  not a terminal) it is absl log lines: one when the loop starts, then at most one per `log_interval_s`
  seconds and one at the end, each with the step, the percentage and the steps per second so far. (tqdm
  alone printed nothing there: its bar is off when stderr is not a terminal; until 2026-11-28 this made
  every batch job that trained through `chunks` silent after its start.) `disable=True`: no progress.
  """
  if chunk <= 0:
    raise ValueError(f'chunk size must be positive, got {chunk}')
  if not disable and sys.stderr.isatty():
    from tqdm import tqdm

    with tqdm(total=total, initial=start, desc=desc, unit='step', dynamic_ncols=True, mininterval=0.5) as bar:
      for begin, end in _ranges(total, chunk, start):
        yield begin, end
        bar.update(end - begin)
    return
  from absl import logging

  if not disable and start < total:
    logging.info('%s: starting at step %d of %d', desc, start, total)
  first = last = time.monotonic()
  for begin, end in _ranges(total, chunk, start):
    yield begin, end
    now = time.monotonic()
    if not disable and (now - last >= log_interval_s or end == total):
      rate = (end - start) / max(now - first, 1e-9)
      logging.info('%s: step %d of %d (%.0f %%), %.3g steps/s', desc, end, total, 100.0 * end / total, rate)
      last = now


def _ranges(total: int, chunk: int, start: int) -> Iterator[tuple[int, int]]:
  begin = start
  while begin < total:
    end = min(begin + chunk, total)
    yield begin, end
    begin = end
