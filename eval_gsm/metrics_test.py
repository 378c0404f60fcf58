"""Tests for eval_gsm.metrics: grading every split in both modes, and the gap's estimate and paired CIs.

The simulations are the research note's honest checks without a real LLM (§4.2): an oracle (Delta = 0
exactly), independent hops (Delta = 0 within its CI) and a planted second-hop failure (Delta recovered).
"""

import numpy as np
import pytest

from common.errors import UsageError
from eval_gsm import core
from eval_gsm import metrics


def _problem(answer, name='p'):
  return core.Problem(question=f'{name}?', solution='', answer=answer, source='test')


PAIR = core.Pair(
  id='p0',
  q1=_problem(8, 'q1'),
  q2=_problem(20, 'q2'),
  q2_original=_problem(15, 'q2o'),
  q2_with_x='q2 with X?',
  variable='n',
  indep_q1=_problem(12, 'indep'),
)


def _rec(pair_id, split, correct, q1=None, q2=None, failed=False):
  return {
    'pair_id': pair_id,
    'split': split,
    'correct': correct,
    'q1_correct': q1,
    'q2_correct': q2,
    'failed_extraction': failed,
  }


def _triple(pair_id, c1, c2, h1, h2):
  return [_rec(pair_id, 'q1', c1), _rec(pair_id, 'q2', c2), _rec(pair_id, 'comp', h1 and h2, h1, h2)]


def _simulate(n, p1, p2, q=0.0, seed=0):
  """Singles right with p1, p2; inside comp hop 1 right with p1, hop 2 with p2 and then failing with q."""
  rng = np.random.default_rng(seed)
  u = rng.random((n, 5))
  records = []
  for i in range(n):
    hop1, hop2 = bool(u[i, 2] < p1), bool(u[i, 3] < p2 and u[i, 4] >= q)
    records += _triple(f'p{i}', bool(u[i, 0] < p1), bool(u[i, 1] < p2), hop1, hop2)
  return records


# ---- grading ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  'split, output, correct, q1, q2',
  [
    ('q1', '4 * 2 = 8\n#### 8', True, None, None),
    ('q1', '4 * 2 = 9\n#### 9', False, None, None),
    ('q2', 'She pays 20.\n#### 20\n\nQuestion: more\n#### 8', True, None, None),
    ('comp', '4 * 2 = 8\nSo X = 8.\n8 + 12 = 20\n#### 20', True, True, True),
    ('comp', '4 * 2 = 9\nSo X = 9.\n9 + 11 = 20\n#### 20', False, False, True),  # Lucky Q2: still wrong.
    ('comp', '4 * 2 = 8\nSo X = 8.\n8 + 13 = 21\n#### 21', False, True, False),
    ('indep', '6 * 2 = 12\nSo the answer to Q1 is 12.\n#### 20', True, True, True),
    ('indep', '6 * 2 = 12\nSo the answer to Q1 is 8.\n#### 20', False, False, True),  # Graded vs indep_q1.
  ],
)
def test_grade_cot(split, output, correct, q1, q2):
  record = metrics.grade(split, output, PAIR)
  assert record['pair_id'] == 'p0' and record['split'] == split
  assert (record['correct'], record['q1_correct'], record['q2_correct']) == (correct, q1, q2)
  assert record['failed_extraction'] is False


def test_grade_cot_extraction_failures_and_flexible():
  assert metrics.grade('q1', 'It is 8 apples.', PAIR)['failed_extraction'] is True
  record = metrics.grade('q1', 'It is 8 apples.', PAIR, extraction='flexible')
  assert record['correct'] and not record['failed_extraction'] and record['method'] == 'last_number'
  record = metrics.grade('comp', '4 * 2 = 8\n8 + 12 = 20\n#### 20', PAIR)  # No X line.
  assert record['failed_extraction'] and not record['correct'] and record['q2_correct']


CODE_Q1 = '```python\ndef solution():\n  return 4 * 2\n```'
CODE_COMP = (
  'Here:\n```python\ndef solve_q1():\n  return 4 * 2\n\n\ndef solution():\n  x = solve_q1()\n'
  '  return x + 12\n\nprint(solution())\n```'
)


def test_grade_code_single_and_compositional():
  record = metrics.grade('q1', CODE_Q1, PAIR, mode='code')
  assert record['correct'] and record['method'] == 'code' and record['error'] is None
  assert not metrics.grade('q2', CODE_Q1, PAIR, mode='code')['correct']
  record = metrics.grade('comp', CODE_COMP, PAIR, mode='code')
  assert (record['correct'], record['q1_correct'], record['q2_correct']) == (True, True, True)
  record = metrics.grade(
    'indep', CODE_COMP.replace('4 * 2', '6 * 2').replace('x + 12', '20'), PAIR, mode='code'
  )
  assert record['correct'] and record['pred_q1'] == 12


def test_grade_code_failures():
  record = metrics.grade('q1', 'The answer is 8.', PAIR, mode='code')
  assert record['failed_extraction'] and not record['correct'] and record['method'] == 'none'
  record = metrics.grade('q1', '```python\nimport os\ndef solution():\n  return 8\n```', PAIR, mode='code')
  assert record['correct'] and record['error'] is None  # Top-level lines (the unused import) are dropped.
  bad = '```python\ndef solution():\n  return os.getpid()\n```'
  record = metrics.grade('q1', bad, PAIR, mode='code')
  assert not record['correct'] and record['error'].startswith('UnsafeProgramError')
  # solution() crashes but solve_q1() is right: Q1's part is still credited.
  crash = '```python\ndef solve_q1():\n  return 8\n\ndef solution():\n  return solve_q1() / 0\n```'
  record = metrics.grade('comp', crash, PAIR, mode='code')
  assert (record['correct'], record['q1_correct'], record['q2_correct']) == (False, True, False)
  assert 'ZeroDivisionError' in record['error']


def test_grade_all_matches_grade():
  items = [('q1', CODE_Q1, PAIR), ('comp', CODE_COMP, PAIR), ('q2', 'no code', PAIR)]
  assert metrics.grade_all(items, mode='code') == [metrics.grade(*item, mode='code') for item in items]


def test_grade_bad_arguments():
  with pytest.raises(ValueError, match='split'):
    metrics.grade('q3', '#### 1', PAIR)
  with pytest.raises(ValueError, match='mode'):
    metrics.grade('q1', '#### 1', PAIR, mode='pal')
  no_indep = core.Pair('p1', PAIR.q1, PAIR.q2, PAIR.q2_original, 'x', 'n')
  with pytest.raises(UsageError, match='indep_q1'):
    metrics.grade('indep', '#### 1', no_indep)


# ---- summaries --------------------------------------------------------------------------------------------


def test_oracle_has_exactly_zero_gap():
  records = [r for i in range(50) for r in _triple(f'p{i}', True, True, True, True)]
  s = metrics.summarize(records, bootstrap_reps=200)
  assert (s['S1'], s['S2'], s['S_comp'], s['expected']) == (1.0, 1.0, 1.0, 1.0)
  assert s['delta'] == 0.0 and s['delta_ci'] == (0.0, 0.0) and s['relative_gap'] == 0.0
  assert s['n'] == 50 and s['n_dropped'] == 0


def test_independent_hops_have_no_gap():
  s = metrics.summarize(_simulate(2000, 0.8, 0.7, seed=1))
  lo, hi = s['delta_ci']
  assert abs(s['delta']) < 0.03 and lo < 0.0 < hi and lo <= s['delta'] <= hi
  assert abs(s['S1'] - 0.8) < 0.03 and abs(s['S2'] - 0.7) < 0.03
  assert abs(s['q2_in_comp_given_q1'] - 0.7) < 0.04  # Hop 2 does not care about hop 1.


def test_planted_gap_is_recovered():
  p1, p2, q = 0.8, 0.7, 0.3
  planted = p1 * p2 * (1 - q) - p1 * p2
  assert planted == pytest.approx(-0.168)
  s = metrics.summarize(_simulate(2000, p1, p2, q, seed=2))
  lo, hi = s['delta_ci']
  assert lo <= planted <= hi and hi < 0.0
  assert s['relative_gap'] == pytest.approx(s['delta'] / s['expected'])
  assert abs(s['q2_in_comp_given_q1'] - p2 * (1 - q)) < 0.04


def test_ci_width_shrinks_with_n():
  widths = []
  for n in (100, 400, 1600):
    lo, hi = metrics.summarize(_simulate(n, 0.8, 0.7, seed=3), bootstrap_reps=500)['delta_ci']
    widths.append(hi - lo)
  assert widths[0] > widths[1] > widths[2]
  assert widths[0] / widths[2] == pytest.approx(4.0, rel=0.35)  # 1 / sqrt(n).


def test_deterministic_for_a_seed():
  records = _simulate(200, 0.6, 0.5, 0.2, seed=4)
  assert metrics.summarize(records, seed=7) == metrics.summarize(records, seed=7)
  assert metrics.summarize(records, seed=7)['delta_ci'] != metrics.summarize(records, seed=8)['delta_ci']


def test_bootstrap_on_a_tiny_dataset_by_hand():
  # Two pairs: A right everywhere, B wrong everywhere. A resample holds A k times out of 2, so
  # S1 = S2 = S_comp = k/2 and Delta = k/2 - k^2/4: 0 (k = 0), 0.25 (k = 1), 0 (k = 2).
  records = _triple('A', True, True, True, True) + _triple('B', False, False, False, False)
  s = metrics.summarize(records, bootstrap_reps=4000, confidence=0.5, seed=0)
  assert s['delta'] == 0.5 - 0.25
  # P(k = 1) = 1/2, so the 25 % quantile is 0 and the 75 % quantile is 0.25.
  assert s['delta_ci'] == (0.0, 0.25)
  # Pairing: every resample has S1 == S2 == S_comp, so the three intervals coincide.
  assert s['S1_ci'] == s['S2_ci'] == s['S_comp_ci']
  boot = metrics.bootstrap_means(np.array([[1.0], [0.0]]), reps=4000, seed=0)
  assert set(np.unique(boot)) == {0.0, 0.5, 1.0}
  assert abs((boot == 0.5).mean() - 0.5) < 0.03


def test_bootstrap_chunks_do_not_change_the_result_shape():
  columns = np.random.default_rng(0).random((50, 3))
  boot = metrics.bootstrap_means(columns, reps=101, seed=0, chunk_entries=200)
  assert boot.shape == (101, 3) and np.all((boot >= 0) & (boot <= 1))


def test_missing_splits_are_counted_and_dropped():
  records = _triple('a', True, True, True, True) + _triple('b', True, False, False, False)
  records += [_rec('c', 'q1', True), _rec('c', 'q2', True)]  # No comp.
  records += [_rec('d', 'comp', True, True, True)]  # Only comp.
  s = metrics.summarize(records, bootstrap_reps=100)
  assert s['n'] == 2 and s['n_dropped'] == 2
  assert s['missing'] == {'q1': 1, 'q2': 1, 'comp': 1}
  assert (s['S1'], s['S2'], s['S_comp']) == (1.0, 0.5, 0.5)
  assert s['delta'] == 0.0


def test_diagnostics_indep_and_failures():
  records = []
  records += _triple('a', True, True, True, True)
  records += _triple('b', True, True, True, False)
  records += _triple('c', True, True, False, True)
  records += _triple('d', False, True, False, False)
  records[-1]['failed_extraction'] = True  # d's comp output could not be read.
  records += [_rec('a', 'indep', True, True, True), _rec('b', 'indep', False, True, False)]
  s = metrics.summarize(records, bootstrap_reps=100)
  assert s['q1_in_comp'] == 0.5 and s['q2_in_comp'] == 0.5
  assert s['q2_in_comp_given_q1'] == 0.5 and s['n_q1_in_comp'] == 2
  assert s['n_indep'] == 2 and s['indep'] == 0.5 and s['indep_q1'] == 1.0 and s['indep_q2'] == 0.5
  assert s['extraction_failure'] == {'q1': 0.0, 'q2': 0.0, 'comp': 0.25, 'indep': 0.0}
  assert s['S_comp'] == 0.25 and s['expected'] == 0.75 and s['delta'] == -0.5


def test_no_indep_and_zero_expected():
  records = _triple('a', False, True, False, False) + _triple('b', False, False, False, False)
  s = metrics.summarize(records, bootstrap_reps=50)
  assert s['relative_gap'] is None and s['indep'] is None and s['n_indep'] == 0
  assert s['q2_in_comp_given_q1'] is None
  assert 'indep' not in s['extraction_failure']


def test_summarize_errors():
  with pytest.raises(UsageError, match='no pair'):
    metrics.summarize([_rec('a', 'q1', True)])
  with pytest.raises(UsageError, match='two'):
    metrics.summarize(_triple('a', True, True, True, True) + [_rec('a', 'q1', True)])
  with pytest.raises(UsageError, match='split'):
    metrics.summarize([_rec('a', 'q3', True)])


def test_graded_records_feed_summarize():
  outputs = {'q1': '#### 8', 'q2': '#### 20', 'comp': 'So X = 8.\n#### 20', 'indep': 'So X = 12.\n#### 20'}
  records = [metrics.grade(split, out, PAIR) for split, out in outputs.items()]
  s = metrics.summarize(records, bootstrap_reps=20)
  assert s['n'] == 1 and s['delta'] == 0.0 and s['indep'] == 1.0
  assert s['program_error'] == {'q1': 0.0, 'q2': 0.0, 'comp': 0.0, 'indep': 0.0}
