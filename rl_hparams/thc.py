"""THC: the Tuning Hyperparameter Consistency score of arXiv 2406.17523, and the sweep's tidy results CSV.

"On the consistency of hyper-parameter selection in value-based deep RL" asks whether a hyper-parameter
tuned in one *training setting* (an agent, a data regime, a game) keeps its best value in another. The
paper's exact THC formula could not be read here; this is a documented reconstruction
(`/work/shared/research/rl_value_based.md` §1.2), with the open choices behind switches.

Performance. A hyper-parameter ``h`` has ``k`` values ``v_1..v_k``. In a setting ``s`` the performance of
``v_i`` is the interquartile mean (IQM) of a score matrix ``X_{s,i}`` of shape ``[seeds, games]``, with a
95 % stratified-bootstrap percentile interval ``[lo_{s,i}, hi_{s,i}]`` (``common.stats``: seeds are
resampled within each game). The bootstrap seed is ``zlib.crc32('axis|context|h|value|setting')``, so
recomputing from the CSV gives bit-identical numbers.

Midpoint ranks (``ties='ci'``). Rank 1 is the best (highest) value. Within one setting value ``i`` is
*certainly better* than ``j`` when ``lo_i > hi_j`` (strictly: touching intervals overlap). Its best possible
rank is ``b_i = 1 + #{j: lo_j > hi_i}`` and its worst ``w_i = k - #{j: hi_j < lo_i}``; its rank is
``r_i = (b_i + w_i) / 2``. Disjoint intervals give the ordinary ranks 1..k; intervals that all overlap give
every value ``(k + 1) / 2``, so seed noise does not turn into rank changes. ``ties='none'`` ranks the point
estimates instead (equal points share their average rank, as ``scipy.stats.rankdata(method='average')``).

THC. Over the settings ``S`` of one context, value ``i``'s rank spread is
``Delta_i = max_s r_{s,i} - min_s r_{s,i}`` and

    THC(h) = (1/k) sum_i Delta_i / D,    D = k - 1 ('k-1', THC in [0, 1]), k ('k') or 1 ('none').

0 means the same ranking everywhere (tune once, transfer); larger means the best value depends on the setting.

Largest THC with distinct ranks (``max_thc``). With ``n`` settings, at most ``n * t`` values can reach a
rank ``<= t`` somewhere (each setting has ``t`` such places), so sorted ascending the ``j``-th smallest
minimum rank (``j = 0..k-1``) is at least ``floor(j / n) + 1``, and symmetrically the ``j``-th largest
maximum rank is at most ``k - floor(j / n)``. Hence ``sum_i Delta_i <= k (k - 1) - 2 sum_{j<k} floor(j / n)``.
The bound is met: write value ``i = g n + c`` (group ``g``, class ``c``); setting ``s`` puts the values of
class ``s`` on top in increasing ``g`` (rank ``g + 1``), those of class ``s + 1 mod n`` at the bottom in
increasing ``g`` (rank ``k - g``), the rest in between; then value ``(g, c)`` has rank ``g + 1`` in setting
``c`` and ``k - g`` in setting ``c - 1 mod n``. Two
settings give ``floor(k^2 / 2)`` (reversed rankings, the Spearman footrule maximum); ``n >= k`` gives
``k (k - 1)`` (every value first somewhere and last elsewhere).

Axes (``compute_thc``): 'agents' (context: regime; settings: agents), 'regimes' (context: agent; settings:
regimes), both on the ``normalized_score`` matrix ``[seeds, games]`` over the games every setting has; and
'games' (context: ``agent/regime``; settings: games) on the raw ``score`` as ``[seeds, 1]``. A value is ranked
only if it is present in every setting of its context (else it is listed in ``dropped_values``); within one
setting its seeds are those present in every pooled game, and seed counts may differ between values.

The CSV (``COLUMNS``) has one row per (run, hyper-parameter value it stands for, seed): the run with every
default appears once per hyper-parameter, with the same ``run_id``. Floats are written with ``repr``, so a
written and re-read CSV gives exactly the same numbers.
"""

from __future__ import annotations

import csv
import math
import os
import zlib
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import scipy.stats

from common import stats
from common.errors import ConfigError

COLUMNS = (
  'agent',
  'regime',
  'game',
  'hyperparameter',
  'value',
  'seed',
  'score',
  'normalized_score',
  'run_id',
)
KEY_COLUMNS = ('agent', 'regime', 'game', 'hyperparameter', 'value', 'seed')
"""A row's identity: no two rows of a CSV share these."""
AXES = ('agents', 'regimes', 'games')
NORMALIZATIONS = ('k-1', 'k', 'none')
TIES = ('ci', 'none')
TABLE_COLUMNS = (
  'axis',
  'context',
  'hyperparameter',
  'setting',
  'value',
  'iqm',
  'low',
  'high',
  'rank',
  'num_seeds',
  'thc',
  'normalization',
  'ties',
)
"""Columns of ``thc_table_csv``: one row per (axis, context, hyper-parameter, setting, value)."""

_STRING_COLUMNS = ('agent', 'regime', 'game', 'hyperparameter', 'value', 'run_id')
_FLOAT_COLUMNS = ('score', 'normalized_score')


class ResultsError(ConfigError):
  """The sweep's results (CSV or rows) are missing, empty or malformed, explained in one line."""


# --------------------------------------------------------------------------
# The tidy CSV.
# --------------------------------------------------------------------------


def _parse_row(raw: Mapping[str, Any], where: str) -> dict:
  """One validated row with ``COLUMNS`` keys: strings, an int seed and finite float scores."""
  missing = [c for c in COLUMNS if c not in raw]
  if missing:
    raise ResultsError(f'{where} lacks column {missing[0]!r}; every row needs {", ".join(COLUMNS)}')
  unknown = [c for c in raw if c not in COLUMNS]
  if unknown:
    raise ResultsError(f'{where} has unknown column {unknown[0]!r}; the columns are {", ".join(COLUMNS)}')
  row = {}
  for column in COLUMNS:
    value = raw[column]
    if column in _STRING_COLUMNS:
      value = str(value)
      if not value:
        raise ResultsError(f'{where}: {column} is empty; give every row a non-empty {column}')
    elif column == 'seed':
      value = _parse_seed(value, where)
    else:
      value = _parse_float(value, column, where)
    row[column] = value
  return row


def _parse_seed(value: Any, where: str) -> int:
  if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
    return int(value)
  try:
    return int(str(value))
  except ValueError:
    raise ResultsError(f'{where}: seed {value!r} is not an integer; write seeds as integers') from None


def _parse_float(value: Any, column: str, where: str) -> float:
  try:
    number = float(value)
  except (TypeError, ValueError):
    raise ResultsError(f'{where}: {column} {value!r} is not a number; fix the row or rerun its run') from None
  if not math.isfinite(number):
    raise ResultsError(f'{where}: {column} is {number}; drop the diverged run or record a finite score')
  return number


def _check_duplicates(rows: Sequence[dict], wheres: Sequence[str]) -> None:
  first = {}
  for row, where in zip(rows, wheres):
    key = tuple(row[c] for c in KEY_COLUMNS)
    if key in first:
      named = ', '.join(f'{c}={v}' for c, v in zip(KEY_COLUMNS, key))
      raise ResultsError(f'{where} repeats {first[key]} ({named}); keep one row per {"/".join(KEY_COLUMNS)}')
    first[key] = where


def validate_rows(rows: Iterable[Mapping[str, Any]], what: str = 'rows') -> list[dict]:
  """Parsed copies of ``rows`` (``COLUMNS`` keys, int seed, float scores); raises ``ResultsError`` on a
  missing or unknown column, an empty name, a non-numeric or non-finite score, or a duplicate row."""
  parsed, wheres = [], []
  for index, raw in enumerate(rows):
    where = f'{what} [{index}]'
    parsed.append(_parse_row(raw, where))
    wheres.append(where)
  if not parsed:
    raise ResultsError(f'{what} has no rows; run the sweep (at least one run must finish) first')
  _check_duplicates(parsed, wheres)
  return parsed


def value_order(values: Iterable[str]) -> list[str]:
  """The distinct ``values``: ascending by number when every one parses as a (non-NaN) float, e.g.
  ['0.0001', '0.001', '1e-2'], else in first-seen order, e.g. ['relu', 'tanh']. Equal numbers written
  differently keep their first-seen order."""
  unique = list(dict.fromkeys(values))
  try:
    numbers = [float(v) for v in unique]
  except (TypeError, ValueError):
    return unique
  if any(math.isnan(x) for x in numbers):
    return unique
  return [v for _, v in sorted(zip(numbers, unique), key=lambda pair: pair[0])]


def _value_orders(rows: Sequence[dict]) -> dict[str, list[str]]:
  """``{hyperparameter: value_order(its values in row order)}``."""
  seen: dict[str, list[str]] = {}
  for row in rows:
    seen.setdefault(row['hyperparameter'], []).append(row['value'])
  return {h: value_order(values) for h, values in seen.items()}


def _write_atomic(path: str, header: Sequence[str], lines: Iterable[Sequence[str]]) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w', newline='') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(header)
    writer.writerows(lines)
  os.replace(tmp, path)
  return path


def write_csv(path: str, rows: Iterable[Mapping[str, Any]]) -> str:
  """Writes the tidy CSV atomically (a temporary file, then a rename) and returns ``path``.

  Rows are validated (see ``validate_rows``) and sorted by (hyperparameter, value in ``value_order``, agent,
  regime, game, seed, run_id), so reading the file back keeps every hyper-parameter's value order (numeric,
  or first seen in ``rows``) and writing the rows read gives the same file. Floats are written with ``repr``
  (exact round trip).
  """
  parsed = validate_rows(rows, 'rows given to write_csv')
  orders = {h: {v: i for i, v in enumerate(order)} for h, order in _value_orders(parsed).items()}
  parsed.sort(
    key=lambda r: (
      r['hyperparameter'],
      orders[r['hyperparameter']][r['value']],
      r['agent'],
      r['regime'],
      r['game'],
      r['seed'],
      r['run_id'],
    )
  )
  lines = [
    [repr(r[c]) if c in _FLOAT_COLUMNS else str(r[c]) for c in COLUMNS]
    for r in parsed  # repr(float) is the shortest string that reads back to the same float.
  ]
  return _write_atomic(path, COLUMNS, lines)


def read_csv(path: str) -> list[dict]:
  """The rows of a tidy CSV (``COLUMNS`` keys; seed an int, score and normalized_score floats).

  Raises:
    ResultsError: the file is missing, empty or holds only the header; a column is missing or unknown; a
      line has the wrong number of fields, an empty name, a non-numeric or non-finite score (the line
      number is named); two lines share (agent, regime, game, hyperparameter, value, seed).
  """
  if not os.path.isfile(path):
    raise ResultsError(f'results CSV {path} not found; run the sweep first or pass the path it wrote')
  rows, wheres = [], []
  with open(path, newline='') as f:
    reader = csv.reader(f)
    try:
      header = next(reader, None)
      if header is None:
        raise ResultsError(f'results CSV {path} is empty; rerun the sweep to rewrite it')
      missing = [c for c in COLUMNS if c not in header]
      if missing:
        raise ResultsError(
          f'results CSV {path} lacks column {missing[0]!r}; its header must be {",".join(COLUMNS)}'
        )
      unknown = [c for c in header if c not in COLUMNS]
      if unknown:
        raise ResultsError(
          f'results CSV {path} has unknown column {unknown[0]!r}; its header must be {",".join(COLUMNS)}'
        )
      for fields in reader:
        if not fields:
          continue  # A blank line.
        where = f'{path} line {reader.line_num}'
        if len(fields) != len(header):
          raise ResultsError(
            f'{where} has {len(fields)} fields, the header {len(header)}; fix or drop the line'
          )
        rows.append(_parse_row(dict(zip(header, fields)), where))
        wheres.append(where)
    except csv.Error as e:
      raise ResultsError(f'results CSV {path} line {reader.line_num} is not CSV ({e}); rewrite it') from None
  if not rows:
    raise ResultsError(f'results CSV {path} has a header but no rows; rerun the sweep until a run finishes')
  _check_duplicates(rows, wheres)
  return rows


# --------------------------------------------------------------------------
# Ranks and THC.
# --------------------------------------------------------------------------


def _check_ties(ties: str) -> None:
  if ties not in TIES:
    raise ConfigError(f'unknown ties {ties!r}; use one of {", ".join(map(repr, TIES))}')


def _divisor(k: int, normalization: str) -> float:
  if normalization not in NORMALIZATIONS:
    raise ConfigError(
      f'unknown normalization {normalization!r}; use one of {", ".join(map(repr, NORMALIZATIONS))}'
    )
  return {'k-1': k - 1.0, 'k': float(k), 'none': 1.0}[normalization]


def midpoint_ranks(
  point: Sequence[float], low: Sequence[float], high: Sequence[float], *, ties: str = 'ci'
) -> np.ndarray:
  """Ranks of ``k`` values in one setting, 1 = best (highest), as a float array ``[k]``.

  ``ties='ci'``: ``r_i = (b_i + w_i) / 2`` with best rank ``b_i = 1 + #{j: low_j > high_i}`` and worst rank
  ``w_i = k - #{j: high_j < low_i}`` (intervals that overlap or touch are ties). ``ties='none'``: ordinary
  ranks of ``point``, equal points averaged. E.g. points/intervals A 10 [8, 12], B 9 [7, 11], C 1 [0, 2]
  give A 1.5, B 1.5, C 3 with 'ci' and 1, 2, 3 with 'none'.
  """
  _check_ties(ties)
  point, low, high = (np.asarray(x, dtype=np.float64) for x in (point, low, high))
  if point.ndim != 1 or point.shape != low.shape or point.shape != high.shape or not point.size:
    raise ValueError(
      f'point, low and high must be non-empty [k] arrays, got {point.shape}, {low.shape}, {high.shape}'
    )
  if ties == 'none':
    return scipy.stats.rankdata(-point, method='average').astype(np.float64)
  if np.any(low > high):
    raise ValueError(f'every interval needs low <= high, got low {low.tolist()} and high {high.tolist()}')
  k = point.size
  better = (low[None, :] > high[:, None]).sum(axis=1)  # [i] = #{j: low_j > high_i}
  worse = (high[None, :] < low[:, None]).sum(axis=1)  # [i] = #{j: high_j < low_i}
  return ((1 + better) + (k - worse)) / 2.0


def thc_from_ranks(ranks: np.ndarray | Sequence[Sequence[float]], normalization: str = 'k-1') -> float:
  """THC of one hyper-parameter from its ranks ``[num_settings, k]``: ``mean_i (max_s r - min_s r) / D``
  with ``D`` = k-1, k or 1 for normalization 'k-1', 'k' or 'none'."""
  ranks = np.asarray(ranks, dtype=np.float64)
  if ranks.ndim != 2:
    raise ValueError(f'ranks must be [num_settings, k], got shape {ranks.shape}')
  num_settings, k = ranks.shape
  divisor = _divisor(k, normalization)
  if num_settings < 2 or k < 2:
    raise ConfigError(
      f'THC needs >= 2 settings and >= 2 values, got ranks of shape {ranks.shape}; sweep more'
    )
  if not np.isfinite(ranks).all():
    raise ValueError(f'ranks must be finite, got {ranks.tolist()}')
  spread = ranks.max(axis=0) - ranks.min(axis=0)
  return float(spread.mean() / divisor)


def max_thc(k: int, num_settings: int, normalization: str = 'k-1') -> float:
  """The largest THC that ``num_settings`` rankings of ``k`` distinct ranks can give (module docstring):
  ``(k (k - 1) - 2 sum_{j<k} floor(j / n)) / k / D``; ``floor(k^2 / 2) / k / D`` for 2 settings."""
  k, num_settings = int(k), int(num_settings)
  if k < 2 or num_settings < 2:
    raise ConfigError(f'THC needs >= 2 settings and >= 2 values, got k={k}, num_settings={num_settings}')
  total = k * (k - 1) - 2 * sum(j // num_settings for j in range(k))
  return total / k / _divisor(k, normalization)


def bootstrap_seed(axis: str, context: str, hyperparameter: str, value: str, setting: str) -> int:
  """The bootstrap seed of one (axis, context, hyper-parameter, value, setting) cell:
  ``zlib.crc32('axis|context|hyperparameter|value|setting')``, the same in every process."""
  return zlib.crc32('|'.join((axis, context, hyperparameter, value, setting)).encode('utf-8'))


def performance_ci(
  scores: np.ndarray | Sequence[Sequence[float]], *, seed: int, reps: int = 1000, confidence: float = 0.95
) -> tuple[float, float, float]:
  """``(IQM, low, high)`` of a ``[seeds, games]`` score matrix with a stratified-bootstrap percentile CI."""
  point, low, high = stats.stratified_bootstrap_ci(
    scores, stats.iqm, reps=reps, confidence=confidence, seed=seed
  )
  return float(point), float(low), float(high)


def _index(rows: Sequence[dict], axis: str) -> dict:
  """``{context: {hyperparameter: {setting: {value: {game: {seed: score}}}}}}`` for one axis."""
  tree: dict = {}
  for r in rows:
    if axis == 'agents':
      context, setting, game, score = r['regime'], r['agent'], r['game'], r['normalized_score']
    elif axis == 'regimes':
      context, setting, game, score = r['agent'], r['regime'], r['game'], r['normalized_score']
    else:  # 'games': one game per setting, its raw score.
      context, setting, game, score = f'{r["agent"]}/{r["regime"]}', r['game'], '', r['score']
    by_value = tree.setdefault(context, {}).setdefault(r['hyperparameter'], {}).setdefault(setting, {})
    by_value.setdefault(r['value'], {}).setdefault(game, {})[r['seed']] = score
  return tree


def _context_entry(
  axis: str,
  context: str,
  hyperparameter: str,
  by_setting: dict,
  order: Sequence[str],
  *,
  normalization: str,
  ties: str,
  reps: int,
  confidence: float,
) -> dict | None:
  """The THC entry of one (context, hyper-parameter), or None when fewer than 2 settings or values remain."""
  settings = sorted(by_setting)
  if len(settings) < 2:
    return None
  games_per_setting = [{g for by_game in by_setting[s].values() for g in by_game} for s in settings]
  games = sorted(set.intersection(*games_per_setting))
  matrices = {}
  for s in settings:
    for value, by_game in by_setting[s].items():
      if not games or any(g not in by_game for g in games):
        continue
      seeds = sorted(set.intersection(*(set(by_game[g]) for g in games)))
      if seeds:
        matrices[s, value] = np.array([[by_game[g][seed] for g in games] for seed in seeds], dtype=np.float64)
  seen = {v for s in settings for v in by_setting[s]}
  ordered = [v for v in order if v in seen]
  values = [v for v in ordered if all((s, v) in matrices for s in settings)]
  if len(values) < 2:
    return None
  shape = (len(settings), len(values))
  point, low, high = np.zeros(shape), np.zeros(shape), np.zeros(shape)
  num_seeds = [[0] * len(values) for _ in settings]
  for si, s in enumerate(settings):
    for vi, v in enumerate(values):
      seed = bootstrap_seed(axis, context, hyperparameter, v, s)
      point[si, vi], low[si, vi], high[si, vi] = performance_ci(
        matrices[s, v], seed=seed, reps=reps, confidence=confidence
      )
      num_seeds[si][vi] = matrices[s, v].shape[0]
  ranks = np.stack([midpoint_ranks(point[i], low[i], high[i], ties=ties) for i in range(len(settings))])
  return {
    'axis': axis,
    'context': context,
    'hyperparameter': hyperparameter,
    'thc': thc_from_ranks(ranks, normalization),
    'normalization': normalization,
    'ties': ties,
    'settings': settings,
    'values': values,
    'ranks': ranks.tolist(),
    'iqm': point.tolist(),
    'low': low.tolist(),
    'high': high.tolist(),
    'dropped_values': [v for v in ordered if v not in values],
    'games': settings if axis == 'games' else games,
    'num_seeds': num_seeds,
    'confidence': float(confidence),
  }


def compute_thc(
  rows: Iterable[Mapping[str, Any]],
  axis: str,
  *,
  normalization: str = 'k-1',
  ties: str = 'ci',
  reps: int = 1000,
  confidence: float = 0.95,
) -> list[dict]:
  """THC of every (context, hyper-parameter) of one axis ('agents', 'regimes' or 'games').

  Contexts with fewer than 2 settings, and hyper-parameters with fewer than 2 values present in every
  setting, are skipped. Entries are sorted by (context, hyper-parameter); each is a dict with axis, context,
  hyperparameter, thc, normalization, ties, settings (sorted), values (``value_order``), ranks / iqm / low /
  high (``[settings][values]`` lists), dropped_values, games (pooled games), num_seeds
  (``[settings][values]``) and confidence. The numbers depend only on the set of rows (seeds and games are
  sorted, bootstrap seeds derive from names); the row order only sets the order of non-numeric values.
  """
  if axis not in AXES:
    raise ConfigError(f'unknown axis {axis!r}; use one of {", ".join(map(repr, AXES))}')
  _divisor(2, normalization)
  _check_ties(ties)
  parsed = validate_rows(rows, 'rows given to compute_thc')
  orders = _value_orders(parsed)
  tree = _index(parsed, axis)
  entries = []
  for context in sorted(tree):
    for hyperparameter in sorted(tree[context]):
      entry = _context_entry(
        axis,
        context,
        hyperparameter,
        tree[context][hyperparameter],
        orders[hyperparameter],
        normalization=normalization,
        ties=ties,
        reps=reps,
        confidence=confidence,
      )
      if entry is not None:
        entries.append(entry)
  return entries


# --------------------------------------------------------------------------
# Summaries and the ranks table.
# --------------------------------------------------------------------------


def _axes_in(entries: Sequence[Mapping[str, Any]]) -> list[str]:
  present = {e['axis'] for e in entries}
  return [a for a in AXES if a in present] + sorted(present - set(AXES))


def summarize_thc(entries: Sequence[Mapping[str, Any]]) -> dict:
  """``{'by_axis': {axis: mean THC over its entries}, 'num_entries': {axis: n},
  'by_hyperparameter': {axis: {hyperparameter: mean THC over contexts}}}`` (axes in ``AXES`` order,
  hyper-parameters sorted)."""
  summary: dict = {'by_axis': {}, 'num_entries': {}, 'by_hyperparameter': {}}
  for axis in _axes_in(entries):
    thcs = [e['thc'] for e in entries if e['axis'] == axis]
    summary['by_axis'][axis] = float(np.mean(thcs))
    summary['num_entries'][axis] = len(thcs)
    per_h: dict[str, list[float]] = {}
    for e in entries:
      if e['axis'] == axis:
        per_h.setdefault(e['hyperparameter'], []).append(e['thc'])
    summary['by_hyperparameter'][axis] = {h: float(np.mean(per_h[h])) for h in sorted(per_h)}
  return summary


def ranking(entries: Sequence[Mapping[str, Any]], axis: str) -> list[tuple[str, float]]:
  """``[(hyperparameter, mean THC over contexts)]`` of one axis, most sensitive first (then by name)."""
  per_h = summarize_thc([e for e in entries if e['axis'] == axis])['by_hyperparameter'].get(axis, {})
  return sorted(per_h.items(), key=lambda item: (-item[1], item[0]))


def thc_table_csv(path: str, entries: Sequence[Mapping[str, Any]]) -> str:
  """Writes the ranks-and-CIs table (``TABLE_COLUMNS``, one row per axis/context/hyper-parameter/setting/
  value, floats with ``repr``) atomically and returns ``path``."""
  lines = []
  for e in entries:
    for si, setting in enumerate(e['settings']):
      for vi, value in enumerate(e['values']):
        lines.append(
          [
            e['axis'],
            e['context'],
            e['hyperparameter'],
            setting,
            value,
            repr(float(e['iqm'][si][vi])),
            repr(float(e['low'][si][vi])),
            repr(float(e['high'][si][vi])),
            repr(float(e['ranks'][si][vi])),
            str(e['num_seeds'][si][vi]) if 'num_seeds' in e else '',
            repr(float(e['thc'])),
            e['normalization'],
            e['ties'],
          ]
        )
  return _write_atomic(path, TABLE_COLUMNS, lines)
