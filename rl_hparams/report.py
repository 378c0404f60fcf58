"""The THC study's static report: bar charts, rank heat maps and ``report.md``, from ``thc.compute_thc``.

Files written into the workdir (names relative to it):

* ``thc_<axis>.png``: one bar per hyper-parameter, its mean THC over the axis's contexts, with each context's
  THC as a dot (the spread shows whether one context drives the mean).
* ``ranks_<axis>_<context>.png``: for one axis and context, a grid of small heat maps, one per
  hyper-parameter: rows are the settings, columns the values, the colour and the number in each cell the
  value's (midpoint) rank, 1 = best. A column whose colour changes down the rows is an inconsistent value.
  The context is made file-safe (``DER/low`` -> ``DER_low``).
* ``report.md``: the title, the claims markdown given, the data swept, the mean THC per axis, THC per
  hyper-parameter and axis (and per context), per hyper-parameter the tables of IQM [low, high] and rank of
  each value in each setting, and the image links.

THC numbers are written with 3 decimals (``0.667``); ranks with ``:g`` (``1.5``, ``3``); scores with 4
significant digits. Plots use matplotlib's Agg backend (``common.results._pyplot``) and every figure is
closed after saving.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Mapping, Sequence

import numpy as np

from common import results
from rl_hparams import thc

REPORT_FILE = 'report.md'
RANKS_TABLE_FILE = 'thc_ranks.csv'
"""Linked from the report when the caller wrote it (``thc.thc_table_csv``) into the same workdir."""

_AXIS_TITLES = {
  'agents': 'across agents (context: data regime)',
  'regimes': 'across data regimes (context: agent)',
  'games': 'across games (context: agent/regime)',
}


def format_thc(value: float) -> str:
  """A THC as written in the report's tables: 3 decimals, e.g. '0.667'."""
  return f'{value:.3f}'


def _format_score(value: float) -> str:
  return f'{value:.0f}' if abs(value) >= 1e4 else f'{value:.4g}'


def _format_rank(value: float) -> str:
  return f'{value:g}'


def safe_name(text: str) -> str:
  """``text`` with every run of characters other than letters, digits, '.', '_' and '-' replaced by '_'."""
  return re.sub(r'[^A-Za-z0-9._-]+', '_', text).strip('_') or '_'


def _axes(entries: Sequence[Mapping[str, Any]]) -> list[str]:
  present = {e['axis'] for e in entries}
  return [a for a in thc.AXES if a in present] + sorted(present - set(thc.AXES))


def _contexts(entries: Sequence[Mapping[str, Any]], axis: str) -> list[str]:
  return list(dict.fromkeys(e['context'] for e in entries if e['axis'] == axis))


def _ylabel(entries: Sequence[Mapping[str, Any]]) -> str:
  norms = sorted({e['normalization'] for e in entries})
  return 'THC' + (f" (normalization '{norms[0]}')" if len(norms) == 1 else '')


# --------------------------------------------------------------------------
# Plots.
# --------------------------------------------------------------------------


def plot_thc_bars(path: str, entries: Sequence[Mapping[str, Any]], axis: str) -> str:
  """Bar chart of one axis: mean THC over contexts per hyper-parameter, each context's THC as a dot."""
  plt = results._pyplot()  # pylint: disable=protected-access
  mine = [e for e in entries if e['axis'] == axis]
  names = sorted({e['hyperparameter'] for e in mine})
  contexts = _contexts(mine, axis)
  means = thc.summarize_thc(mine)['by_hyperparameter'][axis]
  fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 1.5), 3.8), dpi=100)
  x = np.arange(len(names))
  ax.bar(x, [means[h] for h in names], color='tab:blue', alpha=0.6, label='mean over contexts')
  offsets = np.linspace(-0.25, 0.25, len(contexts)) if len(contexts) > 1 else [0.0]
  for offset, context in zip(offsets, contexts):
    points = [
      (i, e['thc'])
      for i, h in enumerate(names)
      for e in mine
      if e['hyperparameter'] == h and e['context'] == context
    ]
    ax.plot([i + offset for i, _ in points], [t for _, t in points], 'o', markersize=4, label=context)
  ax.set_xticks(x, names, rotation=30, ha='right')
  ax.set_ylabel(_ylabel(mine))
  if all(e['normalization'] != 'none' for e in mine):  # THC <= 1: a fixed scale compares axes by eye.
    ax.set_ylim(-0.03, 1.05)
  ax.set_title(f'THC {_AXIS_TITLES.get(axis, axis)}', fontsize=10)
  ax.grid(axis='y', alpha=0.3)
  if len(contexts) <= 8:
    ax.legend(fontsize=7)
  return results._save(fig, path)  # pylint: disable=protected-access


def plot_rank_grid(path: str, entries: Sequence[Mapping[str, Any]], axis: str, context: str) -> str:
  """Heat maps of one (axis, context), one per hyper-parameter: settings x values, colour and text = rank."""
  plt = results._pyplot()  # pylint: disable=protected-access
  mine = sorted(
    (e for e in entries if e['axis'] == axis and e['context'] == context), key=lambda e: e['hyperparameter']
  )
  ncols = min(4, len(mine))
  nrows = math.ceil(len(mine) / ncols)
  cell_w = max(2.4, 0.55 * max(len(e['values']) for e in mine) + 1.4)
  cell_h = max(1.9, 0.28 * max(len(e['settings']) for e in mine) + 1.2)
  fig, axes = plt.subplots(nrows, ncols, figsize=(cell_w * ncols, cell_h * nrows), dpi=90, squeeze=False)
  for ax in axes.flat[len(mine) :]:
    ax.axis('off')
  for ax, e in zip(axes.flat, mine):
    ranks = np.asarray(e['ranks'], dtype=np.float64)
    k = ranks.shape[1]
    ax.imshow(ranks, cmap='viridis_r', vmin=1, vmax=k, aspect='auto')
    for (i, j), rank in np.ndenumerate(ranks):
      color = 'white' if rank > (k + 1) / 2 else 'black'
      ax.text(j, i, _format_rank(rank), ha='center', va='center', fontsize=7, color=color)
    ax.set_xticks(range(k), e['values'], rotation=45, ha='right', fontsize=7)
    ax.set_yticks(range(len(e['settings'])), e['settings'], fontsize=7)
    ax.set_title(f'{e["hyperparameter"]} (THC {format_thc(e["thc"])})', fontsize=8)
  fig.suptitle(f'ranks {_AXIS_TITLES.get(axis, axis)}: {context} (1 = best)', fontsize=9)
  return results._save(fig, path)  # pylint: disable=protected-access


# --------------------------------------------------------------------------
# Markdown.
# --------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
  return lines + ['| ' + ' | '.join(row) + ' |' for row in rows]


def _data_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  if not rows:
    return ['No result rows were given.']

  def distinct(column):
    return sorted({str(r[column]) for r in rows})

  runs = {tuple(str(r[c]) for c in ('agent', 'regime', 'game', 'run_id', 'seed')) for r in rows}
  values: dict[str, list[str]] = {}
  for r in rows:
    values.setdefault(str(r['hyperparameter']), []).append(str(r['value']))
  lines = [
    f'- {len(rows)} rows from {len(runs)} training runs (distinct agent, regime, game, run_id, seed; the'
    " defaults run stands for every hyper-parameter's default value).",
    f'- agents: {", ".join(distinct("agent"))}; regimes: {", ".join(distinct("regime"))}.',
    f'- games ({len(distinct("game"))}): {", ".join(distinct("game"))}.',
    f'- seeds: {", ".join(str(s) for s in sorted({int(r["seed"]) for r in rows}))}.',
    '- hyper-parameters and values:',
  ]
  for h in sorted(values):
    lines.append(f'  - {h}: {", ".join(thc.value_order(values[h]))}')
  return lines


def _cell(e: Mapping[str, Any], si: int, vi: int) -> str:
  return (
    f'{_format_score(e["iqm"][si][vi])} '
    f'[{_format_score(e["low"][si][vi])}, {_format_score(e["high"][si][vi])}] '
    f'(rank {_format_rank(e["ranks"][si][vi])})'
  )


def _markdown(
  title: str,
  claims_md: str,
  entries: Sequence[Mapping[str, Any]],
  rows: Sequence[Mapping[str, Any]],
  images: Mapping[str, list[str]],
  ranks_table: bool,
) -> str:
  lines = [f'# {title}', '']
  if claims_md.strip():
    lines += [claims_md.strip(), '']
  lines += ['## Data', ''] + _data_section(rows) + ['']
  if not entries:
    lines += ['No THC entries: every context had fewer than 2 settings or 2 common values.', '']
    return '\n'.join(lines)

  summary = thc.summarize_thc(entries)
  axes = _axes(entries)
  norms = ', '.join(sorted({f"'{e['normalization']}'" for e in entries}))
  ties = ', '.join(sorted({f"'{e['ties']}'" for e in entries}))
  lines += [
    '## THC',
    '',
    f'THC = mean over values of (max - min rank across settings) / D, normalization {norms} (D = k-1 puts it'
    f' in [0, 1]; 0 = the same ranking in every setting); ranks tie by {ties} (midpoint ranks over'
    " overlapping bootstrap CIs when 'ci').",
    '',
    '### Mean THC per axis',
    '',
  ]
  lines += _table(
    ['axis', 'entries (context x hyper-parameter)', 'mean THC'],
    [[a, str(summary['num_entries'][a]), format_thc(summary['by_axis'][a])] for a in axes],
  )
  names = sorted({e['hyperparameter'] for e in entries})
  lines += ['', '### THC per hyper-parameter (mean over contexts)', '']
  lines += _table(
    ['hyper-parameter'] + axes,
    [
      [h]
      + [
        format_thc(summary['by_hyperparameter'][a][h]) if h in summary['by_hyperparameter'][a] else '-'
        for a in axes
      ]
      for h in names
    ],
  )
  for axis in axes:
    contexts = _contexts(entries, axis)
    by_key = {(e['context'], e['hyperparameter']): e['thc'] for e in entries if e['axis'] == axis}
    lines += ['', f'### THC {_AXIS_TITLES.get(axis, axis)}, per context', '']
    lines += _table(
      ['hyper-parameter'] + contexts,
      [
        [h] + [format_thc(by_key[c, h]) if (c, h) in by_key else '-' for c in contexts]
        for h in names
        if any(k[1] == h for k in by_key)
      ],
    )
    lines += [''] + [f'![{name}]({name})' for name in images.get(axis, [])]

  confidence = sorted({e.get('confidence', 0.95) for e in entries})
  ci = '/'.join(f'{100 * c:g}' for c in confidence)
  lines += ['', f'## IQM [{ci} % CI] and rank per setting', '']
  if ranks_table:
    lines += [f'The same numbers, machine-readable: [{RANKS_TABLE_FILE}]({RANKS_TABLE_FILE}).', '']
  for h in names:
    lines += [f'### {h}', '']
    for e in (e for axis in axes for e in entries if e['axis'] == axis and e['hyperparameter'] == h):
      dropped = (
        f'; dropped (not in every setting): {", ".join(e["dropped_values"])}' if e['dropped_values'] else ''
      )
      lines += [f'**{e["axis"]}, {e["context"]}**: THC {format_thc(e["thc"])}{dropped}', '']
      lines += _table(
        ['setting'] + list(e['values']),
        [[s] + [_cell(e, si, vi) for vi in range(len(e['values']))] for si, s in enumerate(e['settings'])],
      )
      lines.append('')
  return '\n'.join(lines)


def write_report(
  workdir: str,
  entries: Sequence[Mapping[str, Any]],
  rows: Sequence[Mapping[str, Any]],
  *,
  claims_md: str = '',
  title: str,
) -> list[str]:
  """Writes the bar charts, rank heat maps and ``report.md`` into ``workdir``; returns their names relative
  to ``workdir`` (the PNGs in axis/context order, then ``report.md``).

  Args:
    workdir: the output folder (created if needed).
    entries: ``thc.compute_thc`` entries of any axes.
    rows: the tidy result rows (``thc.read_csv``), summarised in the report's data section.
    claims_md: markdown inserted under the title (e.g. the claims table).
    title: the report's title.
  """
  os.makedirs(workdir, exist_ok=True)
  written: list[str] = []
  images: dict[str, list[str]] = {}
  used: set[str] = set()
  for axis in _axes(entries):
    name = f'thc_{safe_name(axis)}.png'
    plot_thc_bars(os.path.join(workdir, name), entries, axis)
    written.append(name)
    images[axis] = [name]
    for context in _contexts(entries, axis):
      name = stem = f'ranks_{safe_name(axis)}_{safe_name(context)}'
      suffix = 2
      while name in used:  # Two contexts made the same file-safe name ('a/b' and 'a_b').
        name, suffix = f'{stem}_{suffix}', suffix + 1
      used.add(name)
      plot_rank_grid(os.path.join(workdir, name + '.png'), entries, axis, context)
      written.append(name + '.png')
      images[axis].append(name + '.png')
  ranks_table = os.path.exists(os.path.join(workdir, RANKS_TABLE_FILE))
  text = _markdown(title, claims_md, entries, rows, images, ranks_table)
  path = os.path.join(workdir, REPORT_FILE)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)
  written.append(REPORT_FILE)
  return written
