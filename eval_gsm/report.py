"""Reports of the reasoning gap: a Markdown and an HTML table per model, a CSV, and the paper's main figure.

For each model (a ``metrics.summarize`` dict) the table gives S1, S2, S_comp, the independence prediction
S1*S2, the gap Delta = S_comp - S1*S2 with its paired-bootstrap CI, the relative gap Delta / (S1*S2), the
diagnostics of Hosseini et al. (arXiv 2410.01748, Section 5: Q1 accuracy inside the compositional answer,
Q2 accuracy there given Q1 right, Q2 accuracy after an unrelated Q1), extraction failures and n.
``gap.png`` is the paper's Figure 1 in the Delta form: S_comp (y) against S1*S2 (x) per model with the y = x
line (no gap); points below it have a negative gap, and the vertical bars are Delta's CI moved to the point
(S_comp's interval given S1*S2). The settings that move scores (prompt style, shots, extraction mode,
backend) go beside the numbers, since few-shot vs zero-shot formatting alone can move GSM scores 20 points.
"""

import csv
import html
import io
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

COLUMNS = (
  ('S1', 'S1'),
  ('S2', 'S2'),
  ('S_comp', 'S_comp'),
  ('expected', 'S1·S2'),
)
CSV_FIELDS = (
  'model',
  'n',
  'n_dropped',
  'S1',
  'S2',
  'S_comp',
  'expected',
  'delta',
  'delta_lo',
  'delta_hi',
  'relative_gap',
  'q1_in_comp',
  'q2_in_comp_given_q1',
  'indep',
  'indep_q2',
  'fail_q1',
  'fail_q2',
  'fail_comp',
  'fail_indep',
)
_HEADER = (
  'model',
  'S1',
  'S2',
  'S_comp',
  'S1·S2',
  'Δ [CI]',
  'Δ / S1·S2',
  'Q1 in comp',
  'Q2 in comp given Q1 ✓',
  'indep Q2',
  'extraction failures q1/q2/comp',
  'n (dropped)',
)


def _pct(value: Optional[float]) -> str:
  return '–' if value is None else f'{100.0 * value:.1f}'


def _points(value: Optional[float]) -> str:
  return '–' if value is None else f'{100.0 * value:+.1f}'


def _row(name: str, s: Mapping[str, Any]) -> List[str]:
  """One table row of display strings: accuracies in %, Delta in points, the relative gap in %."""
  lo, hi = s.get('delta_ci') or (None, None)
  ci = f' [{_points(lo)}, {_points(hi)}]' if lo is not None else ''
  rel = s.get('relative_gap')
  fails = s.get('extraction_failure') or {}
  return [
    name,
    *(_pct(s.get(key)) for key, _ in COLUMNS),
    _points(s.get('delta')) + ci,
    '–' if rel is None else f'{100.0 * rel:+.1f} %',
    _pct(s.get('q1_in_comp')),
    _pct(s.get('q2_in_comp_given_q1')),
    _pct(s.get('indep_q2')),
    '/'.join(_pct(fails.get(split)) for split in ('q1', 'q2', 'comp')),
    f'{s.get("n", 0)} ({s.get("n_dropped", 0)})',
  ]


def _md_cell(text: Any) -> str:
  return str(text).replace('\\', '\\\\').replace('|', '\\|').replace('\n', ' ')


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  lines = ['| ' + ' | '.join(_md_cell(h) for h in header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(_md_cell(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  head = ''.join(f'<th>{html.escape(str(h))}</th>' for h in header)
  body = ''.join('<tr>' + ''.join(f'<td>{html.escape(str(c))}</td>' for c in row) + '</tr>\n' for row in rows)
  return f'<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>'


def _settings(details: Optional[Mapping[str, Mapping[str, Any]]]) -> Optional[tuple]:
  """(header, rows) of the per-model settings, keys in first-seen order; None without details."""
  if not details:
    return None
  keys: List[str] = []
  for setting in details.values():
    keys += [k for k in setting if k not in keys]
  rows = [[name, *(setting.get(k, '–') for k in keys)] for name, setting in details.items()]
  return ['model', *keys], rows


def _note(summaries: Mapping[str, Mapping[str, Any]]) -> str:
  first = next(iter(summaries.values()), {})
  level = first.get('confidence', 0.95)
  reps = first.get('bootstrap_reps', '?')
  return (
    f'Accuracies in %, Δ = S_comp − S1·S2 in points with a {100 * level:g} % paired-bootstrap CI over pairs '
    f'({reps} resamples). A compositional item is right only when both answers are. n counts pairs with '
    'q1, q2 and comp graded; dropped pairs lacked one of them.'
  )


def _csv_value(value: Any) -> Any:
  if value is None:
    return ''
  return round(value, 6) if isinstance(value, float) else value


def gap_table_csv(summaries: Mapping[str, Mapping[str, Any]]) -> str:
  """One CSV row per model (fractions, not %; empty where a value is absent), header ``CSV_FIELDS``."""
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator='\n')
  writer.writeheader()
  for name, s in summaries.items():
    lo, hi = s.get('delta_ci') or (None, None)
    fails = s.get('extraction_failure') or {}
    row = {key: s.get(key) for key in CSV_FIELDS if key in s}
    row.update(model=name, delta_lo=lo, delta_hi=hi)
    row.update({f'fail_{split}': fails.get(split) for split in ('q1', 'q2', 'comp', 'indep')})
    writer.writerow({k: _csv_value(v) for k, v in row.items() if k in CSV_FIELDS})
  return buf.getvalue()


def plot_gap(summaries: Mapping[str, Mapping[str, Any]], path: str, *, title: str = '') -> str:
  """The paper's main figure: S_comp against S1*S2 per model, y = x, Delta's CI as vertical bars."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
  ax.plot([0, 1], [0, 1], ls='--', color='gray', lw=1, label='y = x (no gap)')
  for name, s in summaries.items():
    x, y, delta = s['expected'], s['S_comp'], s['delta']
    lo, hi = s.get('delta_ci') or (delta, delta)
    yerr = [[max(0.0, delta - lo)], [max(0.0, hi - delta)]]
    ax.errorbar([x], [y], yerr=yerr, fmt='o', capsize=4, ms=6)
    ax.annotate(name.replace('$', r'\$'), (x, y), textcoords='offset points', xytext=(6, 4), fontsize=8)
  ax.set_xlim(0, 1.02)
  ax.set_ylim(0, 1.02)
  ax.set_aspect('equal')
  ax.set_xlabel('S1 · S2 (expected compositional accuracy)')
  ax.set_ylabel('S_comp (compositional accuracy)')
  ax.set_title(title or 'Reasoning gap Δ = S_comp − S1·S2')
  ax.grid(alpha=0.3)
  ax.legend(loc='upper left', fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path


def write_report(
  summaries: Dict[str, dict],
  out_dir: str,
  *,
  title: str,
  details: Optional[Dict[str, dict]] = None,
) -> Dict[str, str]:
  """Writes ``report.md``, ``report.html``, ``gap.png`` and ``gap.csv`` into ``out_dir``; returns their paths
  by kind ('md', 'html', 'png', 'csv'). ``details``: per-model settings (prompt style, shots, extraction
  mode, backend, ...) shown in a second table."""
  if not summaries:
    raise ValueError('no model summaries to report; pass {model name: metrics.summarize(...)}')
  os.makedirs(out_dir, exist_ok=True)
  paths = {
    'md': os.path.join(out_dir, 'report.md'),
    'html': os.path.join(out_dir, 'report.html'),
    'png': os.path.join(out_dir, 'gap.png'),
    'csv': os.path.join(out_dir, 'gap.csv'),
  }
  plot_gap(summaries, paths['png'], title=title)
  rows = [_row(name, s) for name, s in summaries.items()]
  settings = _settings(details)
  note = _note(summaries)

  md = [f'# {title}', '', _md_table(_HEADER, rows), '', note, '']
  if settings:
    md += ['## Settings', '', _md_table(*settings), '']
  md += ['![S_comp against S1·S2](gap.png)', '']
  with open(paths['md'], 'w', encoding='utf-8') as f:
    f.write('\n'.join(md))

  page = [
    '<!DOCTYPE html>',
    '<html><head><meta charset="utf-8">',
    f'<title>{html.escape(title)}</title>',
    '<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}'
    'th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th:first-child,td:first-child'
    '{text-align:left}</style>',
    '</head><body>',
    f'<h1>{html.escape(title)}</h1>',
    _html_table(_HEADER, rows),
    f'<p>{html.escape(note)}</p>',
  ]
  if settings:
    page += ['<h2>Settings</h2>', _html_table(*settings)]
  page += ['<img src="gap.png" alt="S_comp against S1·S2 per model">', '</body></html>', '']
  with open(paths['html'], 'w', encoding='utf-8') as f:
    f.write('\n'.join(page))
  with open(paths['csv'], 'w', encoding='utf-8') as f:
    f.write(gap_table_csv(summaries))
  return paths
