"""Tests for eval_gsm.report: files, table contents, one model, escaping, the CSV."""

import csv
import io
import os

import pytest

from eval_gsm import report


def _summary(s1, s2, sc, ci, n=100, **extra):
  s = {
    'n': n,
    'n_dropped': 2,
    'S1': s1,
    'S2': s2,
    'S_comp': sc,
    'expected': s1 * s2,
    'delta': sc - s1 * s2,
    'delta_ci': ci,
    'relative_gap': (sc - s1 * s2) / (s1 * s2) if s1 * s2 else None,
    'q1_in_comp': 0.7,
    'q2_in_comp': 0.6,
    'q2_in_comp_given_q1': 0.65,
    'indep': None,
    'indep_q2': None,
    'extraction_failure': {'q1': 0.01, 'q2': 0.02, 'comp': 0.05},
    'bootstrap_reps': 2000,
    'confidence': 0.95,
  }
  s.update(extra)
  return s


SUMMARIES = {
  'big-model': _summary(0.9, 0.8, 0.70, (-0.05, -0.01)),
  'small-model': _summary(0.6, 0.5, 0.10, (-0.25, -0.15), indep=0.4, indep_q2=0.45),
}
DETAILS = {
  'big-model': {'prompt': '8-shot', 'extraction': 'strict', 'backend': 'openai:http://127.0.0.1:8000'},
  'small-model': {'prompt': '8-shot', 'extraction': 'flexible', 'backend': 'jax'},
}


def test_writes_all_files(tmp_path):
  paths = report.write_report(SUMMARIES, str(tmp_path / 'out'), title='Gap test', details=DETAILS)
  assert set(paths) == {'md', 'html', 'png', 'csv'}
  for path in paths.values():
    assert os.path.isfile(path) and os.path.getsize(path) > 0
  with open(paths['png'], 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_markdown_table_for_two_models(tmp_path):
  paths = report.write_report(SUMMARIES, str(tmp_path), title='Gap test', details=DETAILS)
  with open(paths['md']) as f:
    md = f.read()
  assert md.startswith('# Gap test\n')
  rows = [
    line for line in md.splitlines() if line.startswith('| big-model') or line.startswith('| small-model')
  ]
  big, small = rows[0], rows[1]
  # S1, S2, S_comp, S1*S2 in %, Delta in points with its CI, relative gap, diagnostics, failures, n.
  assert (
    '| 90.0 | 80.0 | 70.0 | 72.0 | -2.0 [-5.0, -1.0] | -2.8 % | 70.0 | 65.0 | – | 1.0/2.0/5.0 | 100 (2) |'
    in big
  )
  assert '| 60.0 | 50.0 | 10.0 | 30.0 | -20.0 [-25.0, -15.0] | -66.7 % |' in small and '| 45.0 |' in small
  assert '## Settings' in md and 'openai:http://127.0.0.1:8000' in md and 'flexible' in md
  assert '95 % paired-bootstrap CI' in md and '![S_comp against S1·S2](gap.png)' in md


def test_one_model_without_details(tmp_path):
  one = {'only': SUMMARIES['big-model']}
  paths = report.write_report(one, str(tmp_path), title='One')
  with open(paths['md']) as f:
    md = f.read()
  assert '| only |' in md and '## Settings' not in md
  with open(paths['html']) as f:
    assert '<td>only</td>' in f.read()


def test_html_escapes_model_names_and_links_the_plot(tmp_path):
  nasty = {'<script>alert("x")</script> & co|$m$': SUMMARIES['big-model']}
  details = {'<script>alert("x")</script> & co|$m$': {'prompt': '<b>8-shot</b>'}}
  paths = report.write_report(nasty, str(tmp_path), title='A <title> & more', details=details)
  with open(paths['html']) as f:
    page = f.read()
  assert '<script>' not in page and '&lt;script&gt;' in page and '&amp; co' in page
  assert '<b>8-shot</b>' not in page and '&lt;b&gt;8-shot&lt;/b&gt;' in page
  assert '<title>A &lt;title&gt; &amp; more</title>' in page
  assert '<img src="gap.png"' in page
  with open(paths['md']) as f:
    assert 'co\\|$m$' in f.read()  # A '|' in a name does not break the Markdown table.


def test_gap_table_csv():
  text = report.gap_table_csv(SUMMARIES)
  rows = list(csv.DictReader(io.StringIO(text)))
  assert [r['model'] for r in rows] == ['big-model', 'small-model']
  assert tuple(rows[0]) == report.CSV_FIELDS
  assert float(rows[0]['delta']) == pytest.approx(-0.02) and float(rows[0]['delta_lo']) == -0.05
  assert rows[0]['indep'] == '' and float(rows[1]['indep']) == 0.4
  assert float(rows[1]['fail_comp']) == 0.05 and rows[1]['fail_indep'] == ''


def test_missing_values_and_no_models(tmp_path):
  s = _summary(0.0, 0.0, 0.0, (0.0, 0.0), relative_gap=None, q2_in_comp_given_q1=None)
  paths = report.write_report({'zero': s}, str(tmp_path), title='Zero')
  with open(paths['md']) as f:
    assert '| +0.0 [+0.0, +0.0] | – |' in f.read()
  with pytest.raises(ValueError, match='no model'):
    report.write_report({}, str(tmp_path), title='None')
