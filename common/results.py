"""What an experiment claims and what it measured: `results.json`, plus matplotlib (Agg) plot helpers.

Each experiment ends by writing `<workdir>/results.json`::

    results.write_results(workdir, project='rl_softmoe', experiment='default', claims=[
        results.Claim('SoftMoE beats flatten (IQM)', paper=1.0, measured=1.3, passed=True,
                      unit='x baseline', criterion='measured >= 1.1'),
    ], plots=['returns.png'], wall_clock_s=123.4)

`reproduce.py` gathers these files into the claims table and `runs/report.md`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import time
from typing import Any, Mapping, Sequence

RESULTS_FILE = 'results.json'
SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Claim:
  """One claim of a paper and our measurement of it.

  Attributes:
    name: what is claimed, e.g. 'stick-breaking perplexity at 4x train length <= softmax'.
    paper: the paper's number (or a short string when the claim is qualitative).
    measured: our number (None when it could not be measured; then `passed` must be False).
    passed: whether `measured` meets the claim under `criterion`.
    unit: unit of both numbers ('ppl', '% accuracy', 'x baseline', ...).
    criterion: how pass/fail was decided, e.g. 'measured >= 0.9 * paper'.
  """

  name: str
  paper: float | str | None
  measured: float | str | None
  passed: bool
  unit: str = ''
  criterion: str = ''

  def __post_init__(self):
    if not self.name:
      raise ValueError('a claim needs a name')
    if not isinstance(self.passed, bool):
      raise TypeError(f"claim '{self.name}': passed must be a bool, got {type(self.passed).__name__}")
    if self.measured is None and self.passed:
      raise ValueError(f"claim '{self.name}' passes without a measured value")
    if isinstance(self.measured, float) and not math.isfinite(self.measured) and self.passed:
      raise ValueError(f"claim '{self.name}' passes with a non-finite measured value {self.measured}")

  @classmethod
  def at_least(cls, name: str, *, paper, measured: float, threshold: float, unit: str = '', note: str = ''):
    """A claim that passes when `measured >= threshold`; the criterion text is written from the same
    comparison, so the two cannot disagree."""
    return cls(
      name,
      paper,
      measured,
      bool(measured >= threshold),
      unit,
      f'>= {threshold}' + (f' ({note})' if note else ''),
    )

  @classmethod
  def at_most(cls, name: str, *, paper, measured: float, threshold: float, unit: str = '', note: str = ''):
    """A claim that passes when `measured <= threshold`."""
    return cls(
      name,
      paper,
      measured,
      bool(measured <= threshold),
      unit,
      f'<= {threshold}' + (f' ({note})' if note else ''),
    )


def git_commit(cwd: str | None = None) -> str:
  """The current commit (with '-dirty' when the tree has uncommitted changes), or 'unknown'."""
  cwd = cwd or os.path.dirname(os.path.abspath(__file__))
  try:
    commit = subprocess.run(
      ['git', 'rev-parse', '--short=12', 'HEAD'],
      cwd=cwd,
      capture_output=True,
      text=True,
      timeout=10,
      check=True,
    ).stdout.strip()
    dirty = subprocess.run(
      ['git', 'status', '--porcelain', '--untracked-files=no'],
      cwd=cwd,
      capture_output=True,
      text=True,
      timeout=10,
    ).stdout.strip()
    return commit + ('-dirty' if dirty else '')
  except (OSError, subprocess.SubprocessError):
    return 'unknown'


def run_info() -> dict[str, Any]:
  """Where and with what a result was produced: commit, host, devices, versions."""
  info = {
    'commit': git_commit(),
    'host': platform.node(),
    'python': platform.python_version(),
    'time_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
  }
  try:
    import jax

    devices = jax.devices()
    info.update(
      jax=jax.__version__,
      backend=jax.default_backend(),
      device_count=len(devices),
      device_kind=devices[0].device_kind,
    )
  except Exception as e:  # pylint: disable=broad-except  # No usable backend must not lose the results.
    info['devices_error'] = str(e)
  return info


def write_results(
  workdir: str,
  *,
  project: str,
  experiment: str,
  claims: Sequence[Claim],
  plots: Sequence[str] = (),
  wall_clock_s: float | None = None,
  extra: Mapping[str, Any] | None = None,
) -> str:
  """Writes `workdir/results.json` and returns its path. `plots` are paths relative to `workdir`."""
  for plot in plots:
    if not os.path.exists(os.path.join(workdir, plot)):
      raise FileNotFoundError(f'plot {plot} listed in results is not in {workdir}')
  data = {
    'schema': SCHEMA_VERSION,
    'project': project,
    'experiment': experiment,
    'claims': [dataclasses.asdict(c) for c in claims],
    'plots': list(plots),
    'wall_clock_s': wall_clock_s,
    'run': run_info(),
    'extra': dict(extra or {}),
  }
  path = os.path.join(workdir, RESULTS_FILE)
  write_json(path, data, indent=2)
  return path


def write_json(path: str, obj: Any, *, indent: int = 1) -> None:
  """Writes `obj` as JSON atomically (a temporary file, then a rename): a killed run never leaves half a
  file. NumPy scalars and arrays are converted; parent folders are created."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=indent, default=_json_default)
  os.replace(tmp, path)


def read_json(path: str) -> Any | None:
  """The JSON in `path`, or None when it is missing or unreadable (e.g. a sub-run's marker not written yet)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _json_default(value):
  try:
    import numpy as np

    if isinstance(value, np.generic):
      return value.item()
    if isinstance(value, np.ndarray):
      return value.tolist()
  except ImportError:
    pass
  raise TypeError(f'{type(value).__name__} is not JSON serialisable')


def read_results(path: str) -> dict[str, Any]:
  """Reads and validates a results.json (a file path or a workdir)."""
  if os.path.isdir(path):
    path = os.path.join(path, RESULTS_FILE)
  with open(path) as f:
    data = json.load(f)
  missing = {'project', 'experiment', 'claims'} - data.keys()
  if missing:
    raise ValueError(f'{path} lacks {", ".join(sorted(missing))}; write it with common.results.write_results')
  data['claims'] = [Claim(**c) for c in data['claims']]
  return data


def _pyplot():
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  return plt


def metric_curves(
  rows: Sequence[Mapping[str, Any]], groups: Sequence[str], key: str, prefix: str = 'train'
) -> dict[str, tuple[list, list]]:
  """`{group: (steps, values)}` of `<prefix>/<group>/<key>` from `metrics.read_metrics` rows (NaN where a
  row lacks it), ready for `plot_curves`."""
  steps = [r['step'] for r in rows]
  return {g: (steps, [r.get(f'{prefix}/{g}/{key}', math.nan) for r in rows]) for g in groups}


def plot_curves(
  path: str, curves: Mapping[str, tuple], *, xlabel: str, ylabel: str, title: str = '', logy: bool = False
) -> str:
  """Line plot of named curves, each `(x, y)` or `(x, y, low, high)` with a shaded band (e.g. a CI)."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for name, curve in curves.items():
    x, y = curve[0], curve[1]
    (line,) = ax.plot(x, y, label=name)
    if len(curve) == 4:
      ax.fill_between(x, curve[2], curve[3], color=line.get_color(), alpha=0.2, linewidth=0)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if logy:
    ax.set_yscale('log')
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  return _save(fig, path)


def plot_bars(path: str, values: Mapping[str, float | tuple], *, ylabel: str, title: str = '') -> str:
  """Bar chart of named values, each a number or `(point, low, high)` drawn with an error bar."""
  plt = _pyplot()
  names = list(values)
  points = [v[0] if isinstance(v, tuple) else v for v in values.values()]
  errors = None
  if any(isinstance(v, tuple) for v in values.values()):
    lows = [p - v[1] if isinstance(v, tuple) else 0.0 for p, v in zip(points, values.values())]
    highs = [v[2] - p if isinstance(v, tuple) else 0.0 for p, v in zip(points, values.values())]
    errors = [lows, highs]
  fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names)), 4), dpi=120)
  ax.bar(names, points, yerr=errors, capsize=4, color='tab:blue', alpha=0.8)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.grid(axis='y', alpha=0.3)
  return _save(fig, path)


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path)
  _pyplot().close(fig)
  return path
