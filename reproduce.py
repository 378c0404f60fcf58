"""Runs the projects' experiments for a preset and reports each paper claim against our measurement.

    python reproduce.py                       # smoke preset on CPU: every project, minutes
    python reproduce.py --preset=gpu --only=attention,rl_softmoe
    python reproduce.py --preset=paper        # full scale, as in the papers

Each project declares its experiments in `<project>/experiments.py`, as plain data read without
importing the project::

    EXPERIMENTS = {
        'smoke': {'default': ['-m', 'rl_softmoe.main', '--config=rl_softmoe/configs/default.py:smoke']},
        'gpu': {...},
        'paper': {...},
    }

Each entry is the argument list of one `python` subprocess, started from the repository root with
`--workdir=<runs_dir>/<preset>/<project>/<experiment>` appended; the experiment writes `results.json`
there (`common.results.write_results`). A failing experiment does not stop the others. At the end the
claims table is printed and `<runs_dir>/report.md` is written with the plots. The exit code is 1 when any
experiment failed to run or to write its results, else 0 (a claim that was measured and missed is a
result, reported as FAIL, not a crash).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

from common import projects
from common import results as results_lib
from common.config import unknown_name_message

PRESETS = ('smoke', 'gpu', 'paper')
EXPERIMENTS_FILE = 'experiments.py'

_PRESET = flags.DEFINE_enum(
  'preset',
  'smoke',
  PRESETS,
  'smoke: CPU minutes; gpu: one GPU, the reduced reproduction; paper: the full-scale configs.',
)
_ONLY = flags.DEFINE_list('only', [], 'Comma-separated projects to run (default: all).')
_RUNS_DIR = flags.DEFINE_string('runs_dir', 'runs', 'Where workdirs, logs and report.md go.')
_TIMEOUT = flags.DEFINE_float('timeout', 0, 'Seconds allowed per experiment (0: no limit).')
_ROOT = flags.DEFINE_string('root', os.path.dirname(os.path.abspath(__file__)), 'Repository root.')


def read_experiments(path: str) -> dict[str, dict[str, list[str]]]:
  """The `EXPERIMENTS` literal of an experiments.py, checked for shape (no import, no side effects)."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  for node in tree.body:
    if (
      isinstance(node, ast.Assign)
      and len(node.targets) == 1
      and getattr(node.targets[0], 'id', None) == 'EXPERIMENTS'
    ):
      try:
        table = ast.literal_eval(node.value)
      except ValueError:
        raise ValueError(f'{path}: EXPERIMENTS must be a plain literal (dicts, lists, strings)') from None
      break
  else:
    raise ValueError(f'{path} defines no EXPERIMENTS = {{preset: {{name: [args...]}}}}')
  for preset, entries in table.items():
    if preset not in PRESETS:
      raise ValueError(f'{path}: ' + unknown_name_message('preset', preset, PRESETS))
    for name, args in entries.items():
      if not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
        raise ValueError(f'{path}: experiment {preset}/{name} must be a list of argument strings')
  return table


def plan(root: str, preset: str, only: list[str]) -> list[tuple[str, str, list[str]]]:
  """(project, experiment, args) to run, in order."""
  declared = [
    p for p in projects.find_projects(root) if os.path.isfile(os.path.join(root, p, EXPERIMENTS_FILE))
  ]
  for name in only:
    if name not in declared:
      raise ValueError(unknown_name_message('project', name, declared))
  runs = []
  for project in declared:
    if only and project not in only:
      continue
    table = read_experiments(os.path.join(root, project, EXPERIMENTS_FILE))
    for experiment, args in table.get(preset, {}).items():
      runs.append((project, experiment, args))
  return runs


def run_one(root: str, args: list[str], workdir: str, log_path: str, timeout: float | None) -> str:
  """Runs one experiment; returns '' on success, else why it failed."""
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [root, env.get('PYTHONPATH')]))
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, 'w') as log:
    try:
      code = subprocess.run(
        [sys.executable, *args, f'--workdir={workdir}'],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        timeout=timeout,
      ).returncode
    except subprocess.TimeoutExpired:
      return f'timed out after {timeout:.0f} s'
  if code != 0:
    return f'exit code {code}'
  if not os.path.exists(os.path.join(workdir, results_lib.RESULTS_FILE)):
    return 'finished without writing results.json'
  return ''


def _cell(value) -> str:
  if isinstance(value, float):
    return f'{value:.4g}'
  return '-' if value is None else str(value)


def claims_rows(all_results: list[dict]) -> list[list[str]]:
  rows = []
  for res in all_results:
    for c in res['claims']:
      rows.append(
        [
          res['project'],
          res['experiment'],
          c.name,
          _cell(c.paper),
          _cell(c.measured),
          c.unit,
          'PASS' if c.passed else 'FAIL',
        ]
      )
  return rows


HEADER = ['project', 'experiment', 'claim', 'paper', 'ours', 'unit', 'pass']


def format_table(rows: list[list[str]]) -> str:
  widths = [max(len(r[i]) for r in [HEADER] + rows) for i in range(len(HEADER))]
  lines = ['  '.join(h.ljust(w) for h, w in zip(HEADER, widths))]
  lines += ['  '.join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
  return '\n'.join(lines)


def write_report(
  path: str, preset: str, statuses: list[tuple[str, str, str, float]], all_results: list[dict], runs_dir: str
) -> None:
  esc = lambda s: s.replace('|', '\\|')
  lines = [
    f'# Reproduction report: preset `{preset}`',
    '',
    f'Written {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} at commit {results_lib.git_commit()}.',
    '',
    '## Experiments',
    '',
    '| project | experiment | status | wall-clock (s) | device |',
    '|---|---|---|---|---|',
  ]
  devices = {(r['project'], r['_run_name']): r.get('run', {}).get('device_kind', '?') for r in all_results}
  for project, experiment, status, seconds in statuses:
    lines.append(
      f'| {project} | {experiment} | {esc(status or "ok")} | {seconds:.1f} | '
      f'{devices.get((project, experiment), "-")} |'
    )
  lines += ['', '## Claims', '', '| ' + ' | '.join(HEADER) + ' |', '|' + '---|' * len(HEADER)]
  lines += ['| ' + ' | '.join(esc(v) for v in row) + ' |' for row in claims_rows(all_results)]
  plots = [(r, p) for r in all_results for p in r.get('plots', [])]
  if plots:
    lines += ['', '## Plots', '']
    for res, plot in plots:
      rel = os.path.relpath(os.path.join(res['_workdir'], plot), os.path.dirname(path))
      lines += [f'**{res["project"]} / {res["experiment"]}: {plot}**', '', f'![{plot}]({rel})', '']
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')


def main(argv):
  del argv
  root, preset = os.path.abspath(_ROOT.value), _PRESET.value
  runs_dir = os.path.abspath(os.path.join(root, _RUNS_DIR.value))
  try:
    todo = plan(root, preset, _ONLY.value)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if not todo:
    print(
      f'no project declares experiments for preset {preset!r} (<project>/{EXPERIMENTS_FILE}); '
      'nothing to reproduce'
    )
    return 0
  statuses, all_results = [], []
  for i, (project, experiment, args) in enumerate(todo, 1):
    workdir = os.path.join(runs_dir, preset, project, experiment)
    log_path = os.path.join(runs_dir, preset, 'logs', f'{project}.{experiment}.log')
    print(f'[{i}/{len(todo)}] {project}/{experiment} ...', end=' ', flush=True)
    start = time.time()
    status = run_one(root, args, workdir, log_path, _TIMEOUT.value or None)
    seconds = time.time() - start
    if not status:
      try:
        res = results_lib.read_results(workdir)
        res['_workdir'] = workdir
        res['_run_name'] = experiment  # The experiments.py name (results.json may name it otherwise).
        all_results.append(res)
      except (OSError, ValueError, TypeError) as e:
        status = f'unreadable results.json ({e})'
    print(
      f'ok ({seconds:.1f} s)'
      if not status
      else f'FAILED: {status} ({seconds:.1f} s), log: {os.path.relpath(log_path, root)}',
      flush=True,
    )
    statuses.append((project, experiment, status, seconds))
  rows = claims_rows(all_results)
  print()
  print(format_table(rows) if rows else 'no claims were reported')
  report = os.path.join(runs_dir, 'report.md')
  write_report(report, preset, statuses, all_results, runs_dir)
  failed = [s for s in statuses if s[2]]
  print(
    f'\n{len(statuses) - len(failed)} of {len(statuses)} experiments ran; '
    f'{sum(r[-1] == "PASS" for r in rows)} of {len(rows)} claims pass; report: '
    f'{os.path.relpath(report, root)}'
  )
  return 1 if failed else 0


if __name__ == '__main__':
  app.run(main)
