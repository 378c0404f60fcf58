"""Tests for the GSM8K, compositional and reasoning-gym readers (small files written into tmp_path)."""

import json
import re
import sys

import pytest

from eval_gsm import core
from eval_gsm import pairs as P
from eval_gsm import readers as R


def write_lines(path, lines):
  path.write_text(''.join(line + '\n' for line in lines), encoding='utf-8')
  return path


def gsm_line(question, answer):
  return json.dumps({'question': question, 'answer': answer})


@pytest.fixture
def gsm_file(tmp_path):
  return write_lines(
    tmp_path / 'mini.jsonl',
    [
      gsm_line(
        'Lia has 48 beads and uses half. How many are left?',
        'She uses 48/2 = <<48/2=24>>24 beads.\nShe has 48 - 24 = <<48-24=24>>24 left.\n#### 24',
      ),
      '',
      '{"question": "broken", ',  # line 3: bad JSON
      json.dumps({'question': 'No answer key?'}),  # line 4
      gsm_line('No final line?', 'It is 5.'),  # line 5
      gsm_line('Not a number?', 'Steps.\n#### twelve'),  # line 6
      '[1, 2]',  # line 7: not an object
      gsm_line('A town has 1,200 homes and builds 34 more. How many homes?', '1200 + 34 = 1234\n#### 1,234'),
      gsm_line('The temperature drops from 3 by 5 degrees. What is it now?', '3 - 5 = -2\n#### -2'),
      gsm_line('Half of 5?', '5 / 2 = 2.5\n#### 2.5'),
    ],
  )


def test_read_gsm8k_skips_and_reports_malformed_lines(gsm_file):
  problems, errors = R.read_gsm8k_jsonl(gsm_file)
  assert problems[0] == core.Problem(
    question='Lia has 48 beads and uses half. How many are left?',
    solution='She uses 48/2 = 24 beads.\nShe has 48 - 24 = 24 left.',
    answer=24,
    source='gsm8k:mini.jsonl:1',
  )
  assert [p.answer for p in problems] == [24, 1234, -2, 2.5]
  assert [p.source for p in problems[1:]] == [
    'gsm8k:mini.jsonl:8',
    'gsm8k:mini.jsonl:9',
    'gsm8k:mini.jsonl:10',
  ]
  assert type(problems[1].answer) is int
  assert [e.split(': ')[0].rsplit(':', 1)[1] for e in errors] == ['3', '4', '5', '6', '7']
  assert 'bad JSON' in errors[0] and "'answer'" in errors[1] and "'####" in errors[2]
  assert 'not a number' in errors[3] and 'JSON object' in errors[4]
  assert all(e.startswith(str(gsm_file)) and '\n' not in e for e in errors)


def test_read_gsm8k_stop_raises_a_one_line_data_error(gsm_file):
  with pytest.raises(R.DataError, match=r'mini\.jsonl:3: bad JSON.*on_error') as info:
    R.read_gsm8k_jsonl(gsm_file, on_error='stop')
  assert '\n' not in str(info.value)
  with pytest.raises(ValueError, match='on_error must be one of'):
    R.read_gsm8k_jsonl(gsm_file, on_error='ignore')
  with pytest.raises(R.DataError, match='cannot open'):
    R.read_gsm8k_jsonl(gsm_file.parent / 'missing.jsonl')


def test_gsm8k_problems_can_be_q1(gsm_file):
  problems, _ = R.read_gsm8k_jsonl(gsm_file)
  pairs = P.build_pairs(2, seed=0, q1_problems=problems)
  assert [p.q1.source for p in pairs] == ['gsm8k:mini.jsonl:1', 'gsm8k:mini.jsonl:8']


def test_parse_number():
  assert R.parse_number('1,234') == 1234 and R.parse_number(' $5 ') == 5 and R.parse_number('18.0') == 18
  assert R.parse_number('2.50') == 2.5 and R.parse_number('-3') == -3 and R.parse_number('7.') == 7
  assert R.parse_number('twelve') is None and R.parse_number('1 2') is None and R.parse_number('') is None


FLAT = {
  'id': 'c-1',
  'q1': 'Sam buys 3 packs of 4 pens. How many pens does he have?',
  'q1_answer': 'He has 3 * 4 = <<3*4=12>>12 pens.\n#### 12',
  'q2': 'A box holds X crayons. Mia has 2 boxes. How many crayons does she have?',
  'q2_answer': 24,
}


def test_read_compositional_flat_records(tmp_path):
  aliased = {
    'uid': 7,
    'question_1': FLAT['q1'],
    'answer_1': 12,
    'solution_1': 'Three packs of four.',
    'q2_with_x': FLAT['q2'],
    'final_answer': '24',
    'q2_filled': 'A box holds 12 crayons. Mia has 2 boxes. How many crayons does she have?',
    'original_q2': 'A box holds 10 crayons. Mia has 2 boxes. How many crayons does she have?',
    'original_q2_answer': 20,
    'indep_q1': 'Tim has 5 cats and gets 2 more. How many cats?',
    'indep_q1_answer': '5 + 2 = 7\n#### 7',
  }
  path = write_lines(tmp_path / 'comp.jsonl', [json.dumps(FLAT), json.dumps(aliased)])
  (first, second), errors = R.read_compositional_jsonl(path)
  assert errors == []
  assert first.id == 'c-1' and first.variable == 'X'
  assert first.q1 == core.Problem(FLAT['q1'], 'He has 3 * 4 = 12 pens.', 12, 'compositional:comp.jsonl:1:q1')
  assert first.q2_with_x == FLAT['q2']
  assert first.q2.question == 'A box holds 12 crayons. Mia has 2 boxes. How many crayons does she have?'
  assert first.q2.answer == 24 and first.q2_original == first.q2 and first.indep_q1 is None
  assert second.id == '7' and second.q1.solution == 'Three packs of four.' and second.q2.answer == 24
  assert second.q2.question == aliased['q2_filled']
  assert second.q2_original.question == aliased['original_q2'] and second.q2_original.answer == 20
  assert second.indep_q1.answer == 7 and second.indep_q1.solution == '5 + 2 = 7'


@pytest.mark.parametrize(
  'record,message',
  [
    ({k: v for k, v in FLAT.items() if k != 'q1'}, "missing 'q1'"),
    ({k: v for k, v in FLAT.items() if k != 'q2_answer'}, "missing 'q2_answer'"),
    ({**FLAT, 'q2': 'A box holds 12 crayons.'}, "no standalone 'X'"),
    ({**FLAT, 'q2': 'XL boxes hold Xs.'}, "no standalone 'X'"),
    ({**FLAT, 'q1_answer': 'twelve'}, "q1_answer: answer has no '####"),
    ({**FLAT, 'q2_answer': [24]}, 'number or text'),
    ({**FLAT, 'answer': 24}, 'aliases'),
    ({**FLAT, 'indep_q1': 'Unrelated?'}, "missing 'indep_q1_answer'"),
  ],
)
def test_read_compositional_reports_bad_records(tmp_path, record, message):
  path = write_lines(tmp_path / 'bad.jsonl', [json.dumps(FLAT), json.dumps(record)])
  pairs, errors = R.read_compositional_jsonl(path)
  assert len(pairs) == 1 and len(errors) == 1
  assert errors[0].startswith(f'{path}:2: ')
  assert re.search(message, errors[0]), errors[0]
  with pytest.raises(R.DataError, match=r'bad\.jsonl:2: '):
    R.read_compositional_jsonl(path, on_error='stop')


def test_read_compositional_reads_our_own_pairs(tmp_path):
  pairs = P.build_pairs(5, seed=4)
  path = tmp_path / 'ours.jsonl'
  P.write_pairs_jsonl(path, pairs)
  with open(path, 'a') as f:
    f.write(json.dumps({'q1': {'question': 'x'}, 'q2_with_x': 'X'}) + '\n')
  back, errors = R.read_compositional_jsonl(path)
  assert back == pairs
  assert len(errors) == 1 and errors[0].startswith(f'{path}:6: looks like a write_pairs_jsonl record')


def test_strip_rg_instruction():
  q = (
    'Ada has 3 kites and buys 4. How many kites? Give the result as your final answer. Do not include units.'
  )
  assert R.strip_rg_instruction(q) == 'Ada has 3 kites and buys 4. How many kites?'
  assert R.strip_rg_instruction('No instruction here.') == 'No instruction here.'


def test_rg_problem_from_an_item():
  item = {
    'question': 'Ada has 3 kites and buys 4. How many? Give the result as your final answer. No units.',
    'answer': '7',
    'metadata': {'answer_cot': 'She has 3 + 4 = 7 kites.\n#### 7', 'answer_value': 7},
  }
  p = R.rg_problem(item, 'rg:0')
  assert p == core.Problem('Ada has 3 kites and buys 4. How many?', 'She has 3 + 4 = 7 kites.', 7, 'rg:0')


def test_reasoning_gym_missing_package_error(monkeypatch):
  monkeypatch.setitem(sys.modules, 'reasoning_gym', None)  # makes `import reasoning_gym` fail
  with pytest.raises(ImportError, match=r'pip install reasoning-gym') as info:
    R.reasoning_gym_problems(3, seed=0)
  assert '\n' not in str(info.value)


def test_reasoning_gym_problems_for_real():
  pytest.importorskip('reasoning_gym')
  problems = R.reasoning_gym_problems(6, seed=1)
  assert len(problems) == 6 and problems == R.reasoning_gym_problems(6, seed=1)
  for i, p in enumerate(problems):
    assert p.source == f'reasoning_gym:gsm_symbolic:1:{i}'
    assert 'Give the result' not in p.question and p.question.endswith(('?', '.'))
    assert '####' not in p.solution and p.solution
    assert isinstance(p.answer, (int, float)) and not isinstance(p.answer, bool)
  usable = [p for p in problems if P.integer_answer(p) is not None]
  assert P.build_pairs(2, seed=0, q1_problems=usable)[0].q1 == usable[0]
