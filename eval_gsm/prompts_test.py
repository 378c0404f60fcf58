"""Tests for prompt and target formats (golden strings), exemplars, and the code-mode targets."""

import pytest

from eval_gsm import core
from eval_gsm import pairs as P
from eval_gsm import prompts as PR
from eval_gsm import templates as T

Q1 = core.Problem(
  question='Tom has 3 red and 2 blue cars. How many cars does he have?',
  solution='3 + 2 = 5 cars',
  answer=5,
  source='hand:q1',
  program='def solution():\n  red = 3\n  blue = 2\n  cars = red + blue\n  return cars',
  inputs={'red': 3, 'blue': 2},
)
Q2 = core.Problem(
  question='Each box holds 5 pens. How many pens are in 4 boxes?',
  solution='5 * 4 = 20 pens',
  answer=20,
  source='hand:q2',
  program='def solution():\n  per_box = 5\n  boxes = 4\n  pens = per_box * boxes\n  return pens',
  inputs={'per_box': 5, 'boxes': 4},
)
Q2_ORIGINAL = core.Problem(
  'Each box holds 6 pens. How many pens are in 4 boxes?', '6 * 4 = 24 pens', 24, 'hand:o'
)
INDEP = core.Problem(
  question='Ann reads 7 pages a day for 2 days. How many pages?',
  solution='7 * 2 = 14 pages',
  answer=14,
  source='hand:indep',
  program='def solution():\n  per_day = 7\n  days = 2\n  pages = per_day * days\n  return pages',
)
PAIR = core.Pair(
  id='hand-1',
  q1=Q1,
  q2=Q2,
  q2_original=Q2_ORIGINAL,
  q2_with_x='Each box holds X pens. How many pens are in 4 boxes?',
  variable='per_box',
  indep_q1=INDEP,
)
SINGLE = core.Problem('Sue has 9 plums and eats 4. How many are left?', '9 - 4 = 5 plums', 5, 'hand:ex')
EXEMPLARS = PR.Exemplars(singles=(SINGLE,), pairs=(PAIR,))


def _code(target: str) -> str:
  assert target.startswith('```python\n') and target.endswith('\n```')
  return target[len('```python\n') : -len('\n```')]


def _run(target: str) -> dict:
  namespace: dict = {}
  exec(_code(target), namespace)  # our own oracle programs
  out = {'solution': namespace['solution']()}
  if 'solve_q1' in namespace:
    out['solve_q1'] = namespace['solve_q1']()
  return out


def test_targets_golden():
  assert PR.render_target(SINGLE) == '9 - 4 = 5 plums\n#### 5'
  assert PR.render_comp_target(PAIR) == '3 + 2 = 5 cars\nSo X = 5.\n5 * 4 = 20 pens\n#### 20'
  assert (
    PR.render_indep_target(PAIR) == '7 * 2 = 14 pages\nSo the answer to Q1 is 14.\n5 * 4 = 20 pens\n#### 20'
  )
  assert PR.render_target(core.Problem('q', '', 18.0, 's')) == '#### 18'
  assert PR.STOP == ('\n\nQuestion:', '\n\n\n')


def test_questions_golden():
  assert PR.comp_question(PAIR) == (
    'Let X be the answer to the Q1:\n'
    'Q1: Tom has 3 red and 2 blue cars. How many cars does he have?\n'
    'Solve it and use the value of X to solve Q2. Explain your answer step by step.\n'
    'Q2: Each box holds X pens. How many pens are in 4 boxes?'
  )
  assert PR.indep_question(PAIR) == (
    'Answer both questions. Explain your answer step by step.\n'
    'Q1: Ann reads 7 pages a day for 2 days. How many pages?\n'
    'Q2: Each box holds 5 pens. How many pens are in 4 boxes?'
  )


def test_completion_prompts_golden():
  assert PR.render_prompt('q1', PAIR, EXEMPLARS, shots=1) == (
    'Question: Sue has 9 plums and eats 4. How many are left?\n'
    'Answer: 9 - 4 = 5 plums\n'
    '#### 5\n'
    '\n'
    'Question: Tom has 3 red and 2 blue cars. How many cars does he have?\n'
    'Answer:'
  )
  assert PR.render_prompt('q2', PAIR, EXEMPLARS, shots=0) == (
    'Question: Each box holds 5 pens. How many pens are in 4 boxes?\nAnswer:'
  )
  comp = PR.render_prompt('comp', PAIR, EXEMPLARS, shots=1)
  assert comp == (
    f'Question: {PR.comp_question(PAIR)}\nAnswer: {PR.render_comp_target(PAIR)}\n\n'
    f'Question: {PR.comp_question(PAIR)}\nAnswer:'
  )
  assert comp + PR.render_split_target('comp', PAIR) == (
    f'Question: {PR.comp_question(PAIR)}\nAnswer: {PR.render_comp_target(PAIR)}\n\n'
    f'Question: {PR.comp_question(PAIR)}\nAnswer: {PR.render_comp_target(PAIR)}'
  )


def test_chat_prompt_golden():
  assert PR.render_prompt('indep', PAIR, EXEMPLARS, style='chat', shots=1) == [
    {'role': 'system', 'content': PR.INSTRUCTIONS[('indep', 'cot')]},
    {'role': 'user', 'content': PR.indep_question(PAIR)},
    {'role': 'assistant', 'content': PR.render_indep_target(PAIR)},
    {'role': 'user', 'content': PR.indep_question(PAIR)},
  ]
  assert '#### <number>' in PR.INSTRUCTIONS[('single', 'cot')]
  assert PR.render_split_target('q1', PAIR, style='chat') == '3 + 2 = 5 cars\n#### 5'
  assert PR.render_split_target('q1', PAIR) == ' 3 + 2 = 5 cars\n#### 5'


def test_code_targets_golden_and_runnable():
  assert PR.render_split_target('q2', PAIR, 'code', style='chat') == '```python\n' + Q2.program + '\n```'
  comp = PR.render_comp_code_target(PAIR)
  assert comp == (
    '```python\n'
    'def solve_q1():\n  red = 3\n  blue = 2\n  cars = red + blue\n  return cars\n'
    '\n'
    'def solution():\n  X = solve_q1()\n  per_box = X\n  boxes = 4\n  pens = per_box * boxes\n  return pens\n'
    '```'
  )
  assert _run(comp) == {'solve_q1': 5, 'solution': 20}
  assert _run(PR.render_indep_code_target(PAIR)) == {'solve_q1': 14, 'solution': 20}
  prompt = PR.render_prompt('comp', PAIR, EXEMPLARS, mode='code', shots=1)
  assert prompt.startswith(PR.INSTRUCTIONS[('comp', 'code')] + '\n\nQuestion: Let X be')
  assert 'solve_q1()' in PR.INSTRUCTIONS[('comp', 'code')]


def test_exemplars_are_deterministic_and_disjoint_from_test_pairs():
  exemplars = PR.make_exemplars()
  assert exemplars == PR.make_exemplars(k=8, seed=PR.EXEMPLAR_SEED)
  assert len(exemplars.singles) == len(exemplars.pairs) == 8
  assert len({p.source for p in exemplars.singles}) == 8
  assert all(p.indep_q1 is not None for p in exemplars.pairs)
  ex_questions = {p.question for p in exemplars.singles}
  for p in exemplars.pairs:
    ex_questions |= {p.q1.question, p.q2.question, p.q2_original.question, p.indep_q1.question}
  assert {T.question_pool(q) for q in ex_questions} == {'exemplar'}
  test_pairs = P.build_pairs(300, seed=0)
  test_questions = set()
  for p in test_pairs:
    test_questions |= {p.q1.question, p.q2.question, p.q2_original.question, p.indep_q1.question}
  assert not ex_questions & test_questions
  assert PR.make_exemplars(k=3, seed=99) != PR.make_exemplars(k=3)


@pytest.fixture(scope='module')
def sample_pairs():
  return P.build_pairs(12, seed=3)


@pytest.fixture(scope='module')
def exemplars():
  return PR.make_exemplars()


@pytest.mark.parametrize('split', core.SPLITS)
@pytest.mark.parametrize('style', PR.STYLES)
@pytest.mark.parametrize('mode', PR.MODES)
def test_every_split_renders_in_every_style_and_mode(split, style, mode, sample_pairs, exemplars):
  for pair in sample_pairs:
    for shots in (0, 3, 8):
      prompt = PR.render_prompt(split, pair, exemplars, style=style, mode=mode, shots=shots)
      target = PR.render_split_target(split, pair, mode, style=style)
      query = PR.split_question(split, pair)
      if style == 'completion':
        assert isinstance(prompt, str) and prompt.endswith(f'Question: {query}\nAnswer:')
        assert prompt.count('Question: ') == shots + 1 and target.startswith(' ')
        assert not any(stop in target for stop in PR.STOP)
      else:
        assert [m['role'] for m in prompt] == ['system'] + ['user', 'assistant'] * shots + ['user']
        assert prompt[-1]['content'] == query and not target.startswith(' ')
    if split == 'comp':
      assert f'Q2: {pair.q2_with_x}' in PR.split_question(split, pair)


@pytest.mark.parametrize('split', core.SPLITS)
def test_code_targets_return_the_answers(split, sample_pairs, exemplars):
  for pair in list(sample_pairs) + list(exemplars.pairs):
    result = _run(PR.split_target(split, pair, 'code'))
    expected = {'q1': pair.q1.answer, 'q2': pair.q2.answer, 'comp': pair.q2.answer, 'indep': pair.q2.answer}
    assert result['solution'] == expected[split]
    if split == 'comp':
      assert result['solve_q1'] == pair.q1.answer
    if split == 'indep':
      assert result['solve_q1'] == pair.indep_q1.answer
  for single in exemplars.singles:
    assert _run(PR.render_code_target(single))['solution'] == single.answer


def test_cot_targets_match_the_pair(sample_pairs):
  for pair in sample_pairs:
    comp = PR.split_target('comp', pair)
    assert comp.startswith(pair.q1.solution + f'\nSo X = {pair.q1.answer}.\n' + pair.q2.solution)
    assert comp.endswith(f'\n#### {pair.q2.answer}')
    assert PR.split_target('q2', pair) == f'{pair.q2.solution}\n#### {pair.q2.answer}'


def test_errors_are_one_line():
  external = core.Pair('e', core.Problem('q', 's', 3, 'gsm8k:x:1'), Q2, Q2_ORIGINAL, 'X', 'per_box')
  cases = [
    (lambda: PR.render_prompt('q3', PAIR, EXEMPLARS), 'unknown split'),
    (lambda: PR.render_prompt('q1', PAIR, EXEMPLARS, style='raw'), 'unknown style'),
    (lambda: PR.render_prompt('q1', PAIR, EXEMPLARS, mode='pal'), 'unknown mode'),
    (lambda: PR.render_prompt('q1', PAIR, EXEMPLARS, shots=2), 'shots=2 but there are 1'),
    (lambda: PR.render_prompt('q1', PAIR, None, shots=1), 'needs exemplars'),
    (lambda: PR.render_prompt('indep', external, None, shots=0), 'no indep_q1'),
    (lambda: PR.split_target('comp', external, 'code'), 'no .def solution'),
    (lambda: PR.split_target('q1', external, 'code'), 'no .def solution'),
  ]
  for make, match in cases:
    with pytest.raises(PR.PromptError, match=match) as info:
      make()
    assert '\n' not in str(info.value)
  # Q2's program must assign the substituted input from a literal equal to Q1's answer.
  broken = core.Pair('b', Q1, Q2, Q2_ORIGINAL, 'X', 'boxes')
  with pytest.raises(PR.PromptError, match='link X'):
    PR.render_comp_code_target(broken)
