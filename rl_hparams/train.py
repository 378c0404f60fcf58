"""The THC experiment end to end: the sweep (rl_hparams.sweep), the tidy CSV, THC on each transfer axis
(rl_hparams.thc), the claims B1-B4 and the report (rl_hparams.report).

THC is always computed from the CSV as written to disk and read back (never from in-memory numbers), and
computed twice from two reads: B1 holds only if both are bit-identical.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Dict, List

import numpy as np

from common import results
from common.errors import ConfigError
from rl_hparams import report
from rl_hparams import sweep
from rl_hparams import thc

CSV_FILE = 'sweep.csv'
AXES = ('agents', 'regimes', 'games')


def compute_all(config, rows: List[dict]) -> List[dict]:
  """THC entries of every axis from tidy rows, with the config's normalisation, ties and bootstrap."""
  t = config.thc
  entries = []
  for axis in AXES:
    entries += thc.compute_thc(
      rows,
      axis,
      normalization=t.normalization,
      ties=t.ties,
      reps=t.bootstrap_reps,
      confidence=t.confidence,
    )
  return entries


def _mean_thc(summary: Dict[str, Any], axis: str):
  value = summary.get('by_axis', {}).get(axis)
  return None if value is None or not math.isfinite(value) else float(value)


def _ordering_claim(name: str, paper: str, low, high, *, strict: bool, needs: str) -> results.Claim:
  """Passes when mean THC on axis `low` is below (`strict`) or at most that on axis `high`; `low` and `high`
  are (axis, mean THC or None). Measured: THC(high) - THC(low), positive when the claim holds."""
  (low_axis, a), (high_axis, b) = low, high
  if a is None or b is None:
    return results.Claim(name, paper, None, False, '', f'not measured: needs {needs}')
  return results.Claim(
    name,
    paper,
    round(b - a, 4),
    bool(a < b if strict else a <= b),
    f'THC difference ({high_axis} - {low_axis})',
    f'{low_axis} {a:.3f}, {high_axis} {b:.3f}',
  )


def build_claims(
  config, entries: List[dict], recomputed_equal: bool, finished: List[dict]
) -> List[results.Claim]:
  """B1-B4 and the loop checks, from THC entries computed from the saved CSV."""
  summary = thc.summarize_thc(entries)
  agents, regimes, games = (_mean_thc(summary, a) for a in AXES)
  claims = [
    results.Claim(
      'B1 THC recomputed from the saved CSV is bit-identical',
      'THC is a deterministic function of the results table',
      recomputed_equal,
      recomputed_equal,
      '',
      'two computations from two reads of sweep.csv compare equal with ==; the THC unit tests run in CI',
    )
  ]
  claims.append(
    _ordering_claim(
      'B2 mean THC across agents < across data regimes',
      'tunings transfer across agents better than across data regimes',
      ('agents', agents),
      ('regimes', regimes),
      strict=True,
      needs='two agents in one regime and one agent in two regimes',
    )
  )
  claims.append(
    _ordering_claim(
      'B3 mean THC across games >= across data regimes',
      'the environment is the least transferable axis',
      ('regimes', regimes),
      ('games', games),
      strict=False,
      needs='two games and two regimes',
    )
  )
  acc = config.acceptance
  for axis in AXES:
    ranked = thc.ranking(entries, axis)
    if not ranked:
      continue
    top = [name for name, _ in ranked[: acc.top_k]]
    hits = [name for name in acc.paper_sensitive if name in top]
    claims.append(
      results.Claim(
        f'B4 (report) most tuning-sensitive across {axis}',
        'epsilon and update period are among the most sensitive',
        ', '.join(f'{n} {v:.2f}' for n, v in ranked[: acc.top_k]),
        bool(hits),
        f'top {acc.top_k} by mean THC',
        f'passes when a paper-named one is in our top {acc.top_k} (found: {", ".join(hits) or "none"}); '
        'report only, not a gate',
      )
    )
  finite = all(p['losses_finite'] for p in finished)
  claims.append(
    results.Claim('check: losses finite', 'finite', finite, finite, '', 'every chunk of every run')
  )
  unscored = sweep.unscored_runs(finished)
  claims.append(
    results.Claim(
      'check: every run scored',
      'every evaluation ends an episode',
      len(unscored),
      not unscored,
      'runs without a score',
      'runs whose evaluation ended no episode have no CSV row; raise eval_iterations'
      + (f' (first: {unscored[0]})' if unscored else ''),
    )
  )
  return claims


def train_and_evaluate(config, workdir: str):
  """Runs (or resumes) the sweep, then writes sweep.csv, THC, claims, plots and report.md."""
  sweep.validate(config)
  start_time = time.time()
  budget = config.time_budget_s if config.time_budget_s and config.time_budget_s > 0 else math.inf
  finished, randoms, complete = sweep.run_sweep(config, workdir, budget)
  if not complete:
    programs, _ = sweep.plan(config)
    throughput = _throughput(finished)
    results.write_json(os.path.join(workdir, 'progress.json'), throughput)
    results.write_results(
      workdir,
      project='rl_hparams',
      experiment=config.experiment,
      claims=[_incomplete_claim(len(finished), len(programs))],
      wall_clock_s=time.time() - start_time,
      extra={'throughput': throughput},
    )
    return None
  return analyze(config, workdir, finished, randoms, wall_clock_s=time.time() - start_time)


def _incomplete_claim(done: int, total: int) -> results.Claim:
  return results.Claim(
    'sweep complete',
    'all programs',
    f'{done}/{total} programs',
    done == total,
    '',
    'rerun the same command to continue (finished programs are skipped)',
  )


def _throughput(finished: List[dict]) -> Dict[str, Any]:
  """Runs per hour of the finished programs, from their own wall-clock (compilation included)."""
  seconds = sum(p['wall_seconds'] for p in finished)
  runs = sum(len(p['runs']) * p['num_seeds'] for p in finished)
  steps = sum(len(p['runs']) * p['num_seeds'] * p['env_steps'] for p in finished)
  return {
    'programs_finished': len(finished),
    'runs_finished': runs,
    'program_seconds_total': round(seconds, 1),
    'runs_per_device_hour': round(runs / seconds * 3600, 1) if seconds else None,
    'env_steps_per_second_all_runs': round(steps / seconds, 1) if seconds else None,
  }


def analyze(config, workdir: str, finished: List[dict], randoms: Dict[str, float], *, wall_clock_s: float):
  """sweep.csv, THC (from the CSV on disk), claims, plots and report.md from the finished programs.

  With fewer programs than the plan (`python -m rl_hparams.analyze` on a sweep in progress), the claims say
  so ('sweep complete' fails) and every THC is over what exists: a setting missing for a value drops that
  value, a context with one setting is skipped (rl_hparams.thc)."""
  programs, represents = sweep.plan(config)
  rows = sweep.csv_rows(config, finished, randoms, represents)
  if not rows:
    raise ConfigError('the sweep produced no rows: check config.sweep and config.runs')
  csv_path = os.path.join(workdir, CSV_FILE)
  thc.write_csv(csv_path, rows)
  entries = compute_all(config, thc.read_csv(csv_path))
  again = compute_all(config, thc.read_csv(csv_path))
  claims = build_claims(config, entries, _entries_equal(entries, again), finished)
  partial = len(finished) < len(programs)
  if partial:
    claims.insert(0, _incomplete_claim(len(finished), len(programs)))
  thc.thc_table_csv(os.path.join(workdir, 'thc_ranks.csv'), entries)
  summary = thc.summarize_thc(entries)
  results.write_json(os.path.join(workdir, 'thc.json'), {'summary': summary, 'entries': entries})
  title = (
    f'THC on {config.env}: {", ".join(config.runs)} x {len(config.games)} games x {config.num_seeds} seeds'
  )
  if partial:
    title += f' (partial: {len(finished)}/{len(programs)} programs)'
  files = report.write_report(workdir, entries, rows, claims_md=results_markdown(claims), title=title)
  throughput = _throughput(finished)
  results.write_results(
    workdir,
    project='rl_hparams',
    experiment=config.experiment,
    claims=claims,
    plots=[f for f in files if f.endswith('.png')],
    wall_clock_s=wall_clock_s,
    extra={'thc_summary': summary, 'throughput': throughput, 'random_return': randoms},
  )
  return summary


def _entries_equal(a: List[dict], b: List[dict]) -> bool:
  """Exact equality of two THC computations (floats compared with ==, NaN equal to NaN)."""
  if len(a) != len(b):
    return False

  def same(x, y):
    if isinstance(x, dict):
      return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple, np.ndarray)):
      return len(x) == len(y) and all(same(i, j) for i, j in zip(x, y))
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
      return True
    return x == y

  return all(same(x, y) for x, y in zip(a, b))


def results_markdown(claims: List[results.Claim]) -> str:
  lines = ['| claim | paper | measured | passed | criterion |', '|---|---|---|---|---|']
  for c in claims:
    passed = 'PASS' if c.passed else 'FAIL'
    lines.append(f'| {c.name} | {c.paper} | {c.measured} | {passed} | {c.criterion} |')
  return '\n'.join(lines)
