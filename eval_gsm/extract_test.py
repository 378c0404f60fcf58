"""Tests for eval_gsm.extract, including the known extraction bugs of peer harnesses (research note §5)."""

import pytest

from eval_gsm import extract
from eval_gsm.extract import Extracted, extract_answer, extract_code, extract_q1, is_correct, normalize_number


@pytest.mark.parametrize(
  'text, value',
  [
    ('42', 42.0),
    ('-5', -5.0),
    ('+7', 7.0),
    ('\u22123', -3.0),  # Unicode minus.
    ('1,234', 1234.0),
    ('1,234,567.5', 1234567.5),
    ('$1,000', 1000.0),
    ('-$5', -5.0),
    ('$-5', -5.0),
    ('$ 12', 12.0),
    ('18.00', 18.0),
    ('18.', 18.0),
    ('0.5', 0.5),
    ('.5', 0.5),
    ('25%', 25.0),
    ('**7**', 7.0),
    (' 42 ', 42.0),
  ],
)
def test_normalize_number_accepts(text, value):
  assert normalize_number(text) == value


@pytest.mark.parametrize(
  'text', ['', 'abc', '1,2,3', '12,34', '1,0000', '1.2.3', '5 6', '- 5', '--5', 'nan', '$']
)
def test_normalize_number_rejects(text):
  assert normalize_number(text) is None


def test_run_on_continuation_after_hash_is_ignored():
  # sglang PR #29933: the model answers, then invents and answers the next few-shot question.
  text = 'She has 6 * 7 = 42 apples.\n#### 42\n\nQuestion: Tom has 3 pens, buys 4?\nAnswer: 3 + 4 = 7\n#### 7'
  for mode in ('strict', 'flexible'):
    assert extract_answer(text, mode) == Extracted(42.0, 'hash')


def test_several_hashes_take_the_first():
  assert extract_answer('#### 3\n#### 4\n#### 5').value == 3.0


def test_negative_answers():
  # proeval PR #19 dropped signs.
  assert extract_answer('The change is 5 - 8 = -3\n#### -3').value == -3.0
  assert extract_answer('#### -$1,250.50').value == -1250.5
  assert extract_answer('The answer is -12.').value == -12.0
  assert extract_answer('so the total is -4', 'flexible') == Extracted(-4.0, 'last_number')


def test_subtraction_is_not_a_negative_number():
  assert extract_answer('We get 20 - 5', 'flexible').value == 5.0
  assert extract_answer('20-5', 'flexible').value == 5.0


def test_answer_followed_by_long_text():
  # veRL PR #7274 kept only the last 300 characters.
  tail = ' This follows because the farmer sold every crate at the market before noon.' * 6
  assert len(tail) > 300
  assert extract_answer('2 * 21 = 42\n#### 42\n' + tail) == Extracted(42.0, 'hash')
  assert extract_answer('The answer is 42.' + tail, 'flexible') == Extracted(42.0, 'answer_is')


@pytest.mark.parametrize(
  'text, value',
  [
    ('#### 1,000', 1000.0),
    ('#### $1,234.50', 1234.5),
    ('####$42', 42.0),
    ('#### 18.00', 18.0),
    ('#### 18.', 18.0),
    ('#### 42.\n', 42.0),
    ('#### **42**', 42.0),
    ('#### 25%', 25.0),
    ('####  7 apples', 7.0),
  ],
)
def test_hash_formats(text, value):
  assert extract_answer(text) == Extracted(value, 'hash')


@pytest.mark.parametrize(
  'text, value',
  [
    ('So the answer is 12.', 12.0),
    ('The final answer is: $1,200', 1200.0),
    ('**The answer is: 8**', 8.0),
    ('The answer is **$18.00**.', 18.0),
    ('THE ANSWER IS 3', 3.0),
    ('The final answer is $\\boxed{-3}$.', -3.0),
    ('Thus \\boxed{17}', 17.0),
    ('The answer is not obvious. After 3 steps, the answer is 9.', 9.0),
    ('The answer is 5.\n\nQuestion: ...\nThe answer is 6.', 5.0),
  ],
)
def test_answer_is_formats(text, value):
  assert extract_answer(text) == Extracted(value, 'answer_is')


def test_hash_wins_over_answer_is():
  assert extract_answer('The answer is 3.\n#### 4') == Extracted(4.0, 'hash')


def test_broken_hash_falls_back_to_answer_is_in_strict_mode():
  assert extract_answer('#### \nThe answer is 9') == Extracted(9.0, 'answer_is')
  assert extract_answer('#### 1,2,3') == Extracted(None, 'none')


@pytest.mark.parametrize('text', ['', 'I cannot solve this.', 'The answer is unknown.', '####', '#### many'])
def test_no_number(text):
  for mode in ('strict', 'flexible'):
    found = extract_answer(text, mode)
    assert found == Extracted(None, 'none') and found.failed


def test_strict_ignores_bare_numbers_flexible_takes_the_last():
  text = 'First 3 + 4 = 7, then 7 * 2 = 14 marbles.'
  assert extract_answer(text) == Extracted(None, 'none')
  assert extract_answer(text, 'flexible') == Extracted(14.0, 'last_number')


def test_numbers_inside_words_are_not_numbers():
  assert extract.last_number('In Q1 the code abc123 gave H2O') is None
  assert extract.last_number('She paid 20kg of rice for 5th place') == 5.0  # Units after a number are fine.
  assert extract_answer('the total is 12 for step2', 'flexible').value == 12.0


def test_flexible_reads_lists_as_separate_numbers_and_commas_as_separators():
  assert extract.last_number('the values 1,2,3') == 3.0
  assert extract.last_number('the total is 1,234, right') == 1234.0
  assert extract.last_number('We have 3 boxes.') == 3.0


def test_unknown_mode():
  with pytest.raises(ValueError, match='strict'):
    extract_answer('#### 1', 'loose')


def test_extract_q1_compositional_and_indep():
  comp = 'Q1: 3 + 5 = 8\nSo X = 8.\nQ2: X = 8 so she has 8 * 2 = 16\n#### 16'
  assert extract_q1(comp) == 8.0
  assert extract_answer(comp) == Extracted(16.0, 'hash')
  indep = 'He ran 2 * 6 = 12 km.\nSo the answer to Q1 is 12.\nShe has 4 + 5 = 9.\n#### 9'
  assert extract_q1(indep) == 12.0
  assert extract_q1('So X = -$1,200.\n#### 3') == -1200.0
  assert extract_q1('So X = **7**.') == 7.0


def test_extract_q1_chain_and_absent():
  assert extract_q1('So X = 3 + 5 = 8.\nThen 8 * 2 = 16\n#### 16') == 8.0
  assert extract_q1('X = 2.5. Then Y = 1 + 1 = 2.') == 2.5
  assert extract_q1('x = 4\nX is 6') == 6.0  # Only a capital X is the variable.
  assert extract_q1('Let X be the answer to Q1.\n#### 16') is None
  assert extract_q1('') is None


FENCED = (
  'Here is my program:\n```python\ndef solution():\n  return 3\n\nprint(solution())\n```\nDone. ```py\nx\n```'
)


def test_extract_code_fenced_and_drops_driver_lines():
  assert extract_code(FENCED) == 'def solution():\n  return 3\n'
  assert extract_code(FENCED, defs_only=False) == 'def solution():\n  return 3\n\nprint(solution())\n'


def test_extract_code_compositional_unfenced_and_unclosed():
  text = (
    'def solve_q1():\n  return 2\n\n\ndef solution():\n  x = solve_q1()\n  return x * 3\nQuestion: next one'
  )
  assert (
    extract_code(text)
    == 'def solve_q1():\n  return 2\n\n\ndef solution():\n  x = solve_q1()\n  return x * 3\n'
  )
  assert extract_code('```python\ndef solution():\n  return 1') == 'def solution():\n  return 1\n'
  assert extract_code('```\ndef solution():\n  return 5\n```') == 'def solution():\n  return 5\n'
  main = '```python\ndef solution():\n  return 1\n\nif __name__ == "__main__":\n  print(solution())\n```'
  assert extract_code(main) == 'def solution():\n  return 1\n'


def test_extract_code_none():
  assert extract_code('The answer is 5.') is None
  assert extract_code('```text\nno code\n```') is None
  assert extract_code('') is None


def test_is_correct():
  assert is_correct(18.0, 18)
  assert is_correct(1e6 + 1e-4, 1000000)
  assert not is_correct(17.0, 18)
  assert not is_correct(None, 18)
  assert not is_correct(True, 1)
  assert is_correct(0.0, 0) and not is_correct(1e-6, 0)
  assert not is_correct(float('nan'), 1) and not is_correct(float('inf'), 1)
  assert is_correct(0.1 + 0.2, 0.3)
