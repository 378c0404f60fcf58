"""Tests for the template bank: validation, exact solving, rendering, programs and sampling rules."""

import random

import pytest

from eval_gsm import core
from eval_gsm import templates as T

SAMPLES_PER_TEMPLATE = 100


def _toy(**changes) -> T.Template:
  fields = dict(
    name='toy',
    question='Ann has {a} boxes of {b} pens and gives away {c} pens. She shares the rest among {d} friends. '
    'How many pens does each friend get?',
    inputs={'a': (2, 9), 'b': (3, 12), 'c': (1, 20), 'd': (2, 5)},
    steps=(
      T.Step('pens', 'a * b', '{a} * {b} = {pens} pens'),
      T.Step('rest', 'pens - c', '{pens} - {c} = {rest} pens'),
      T.Step('each', 'rest / d', '{rest} / {d} = {each} pens'),
    ),
    answer='each',
    substitutable=('a', 'b', 'c', 'd'),
  )
  fields.update(changes)
  return T.Template(**fields)


def _run(program: str) -> object:
  namespace: dict = {}
  exec(program, namespace)  # our own generated program-of-thought text
  return namespace['solution']()


def test_bank_has_many_varied_templates():
  assert len(T.TEMPLATES) >= 30
  assert list(T.TEMPLATES) == [t.name for t in T.TEMPLATES.values()]
  for t in T.TEMPLATES.values():
    assert 2 <= len(t.steps) <= 5, t.name
    assert t.substitutable
  assert len({t.question for t in T.TEMPLATES.values()}) == len(T.TEMPLATES)


@pytest.mark.parametrize('name', list(T.TEMPLATES))
def test_samples_are_valid_exact_problems(name):
  t = T.TEMPLATES[name]
  rng = random.Random(name)
  for _ in range(SAMPLES_PER_TEMPLATE):
    p = T.sample(t, rng)
    solved = T.solve(t, p.inputs)
    assert all(type(v) is int and v >= 0 for v in solved.values())
    assert p.answer == solved[t.answer] > 0 and type(p.answer) is int
    assert p.source == f'template:{name}'
    assert set(p.inputs) == set(t.inputs)
    for k in t.substitutable:
      assert T.count_literal(p.question, p.inputs[k]) == 1, (name, k, p.question)
    lines = p.solution.split('\n')
    assert len(lines) == len(t.steps) and '####' not in p.solution
    for line, step in zip(lines, t.steps):
      assert str(solved[step.name]) in T.numbers_in(line)
    assert p.program.startswith('def solution():\n') and p.program.endswith(f'\n  return {t.answer}')
    assert _run(p.program) == p.answer


def test_render_problem_fields():
  t = _toy()
  p = T.render(t, {'a': 4, 'b': 5, 'c': 2, 'd': 3})
  assert p == core.Problem(
    question='Ann has 4 boxes of 5 pens and gives away 2 pens. She shares the rest among 3 friends. How many '
    'pens does each friend get?',
    solution='4 * 5 = 20 pens\n20 - 2 = 18 pens\n18 / 3 = 6 pens',
    answer=6,
    source='template:toy',
    program='def solution():\n  a = 4\n  b = 5\n  c = 2\n  d = 3\n  pens = a * b\n  rest = pens - c\n'
    '  each = rest // d\n  return each',
    inputs={'a': 4, 'b': 5, 'c': 2, 'd': 3},
  )


def test_solve_rejects_non_integral_negative_and_out_of_range():
  t = _toy()
  with pytest.raises(T.TemplateError, match=r"template 'toy'.*step 'each'.*not a whole number"):
    T.solve(t, {'a': 4, 'b': 5, 'c': 1, 'd': 3})
  with pytest.raises(T.TemplateError, match=r"step 'rest'.*negative"):
    T.solve(t, {'a': 2, 'b': 3, 'c': 20, 'd': 2})
  with pytest.raises(T.TemplateError, match=r"input 'a' = 40 is outside"):
    T.solve(t, {'a': 40, 'b': 5, 'c': 2, 'd': 2})
  assert T.solve(t, {'a': 40, 'b': 5, 'c': 2, 'd': 2}, check_range=False)['each'] == 99
  with pytest.raises(T.TemplateError, match='non-negative integer'):
    T.solve(t, {'a': 2.0, 'b': 5, 'c': 2, 'd': 2}, check_range=False)
  with pytest.raises(T.TemplateError, match='inputs must be exactly'):
    T.solve(t, {'a': 2, 'b': 5})
  with pytest.raises(T.TemplateError, match='divides by zero'):
    T.solve(t, {'a': 2, 'b': 5, 'c': 2, 'd': 0}, check_range=False)
  try:
    T.solve(t, {'a': 4, 'b': 5, 'c': 1, 'd': 3})
  except T.TemplateError as e:
    assert '\n' not in str(e)


def test_step_constraint_on_ranges():
  t = _toy(inputs={'a': (2, 9), 'b': (5, 20, 5), 'c': (1, 20), 'd': (2, 5)})
  with pytest.raises(T.TemplateError, match="input 'b'"):
    T.solve(t, {'a': 2, 'b': 7, 'c': 2, 'd': 2})
  rng = random.Random(0)
  assert all(T.sample(t, rng).inputs['b'] % 5 == 0 for _ in range(50))


def test_exact_fractions_and_program_division_operators():
  # '/' inside an expression may be inexact as long as each step is whole; the program then uses '/'.
  t = _toy(
    question='{a} {b} {c} {d}',
    steps=(T.Step('pens', 'a / b * c', '{pens}'), T.Step('each', 'pens + d', '{each}')),
    answer='each',
  )
  values = {'a': 7, 'b': 4, 'c': 8, 'd': 2}
  assert T.solve(t, values)['pens'] == 14
  p = T.render(t, values)
  assert '  pens = a / b * c\n' in p.program and _run(p.program) == 16
  values = {'a': 8, 'b': 4, 'c': 3, 'd': 2}
  assert '  pens = a // b * c\n' in T.render(t, values).program
  # 1 / 7 * 7 is 0.9999999999999999 in floating point: the program would be wrong, so the draw is rejected.
  t2 = _toy(
    question='{a} {b} {c} {d}',
    inputs={'a': (1, 9), 'b': (3, 12), 'c': (1, 20), 'd': (2, 5)},
    steps=(T.Step('pens', 'a / b * c', '{pens}'), T.Step('each', 'pens + d', '{each}')),
    answer='each',
  )
  with pytest.raises(T.TemplateError, match="program's '/'"):
    T.solve(t2, {'a': 1, 'b': 49, 'c': 49, 'd': 2}, check_range=False)


def test_program_parentheses_follow_the_expression():
  t = _toy(
    question='{a} {b} {c} {d}',
    steps=(T.Step('x', '(a + b) * (c - d)', '{x}'), T.Step('y', 'x - (a - d) + 2 * 3', '{y}')),
    answer='y',
  )
  values = {'a': 5, 'b': 3, 'c': 9, 'd': 2}
  p = T.render(t, values)
  assert '  x = (a + b) * (c - d)\n' in p.program and '  y = x - (a - d) + 2 * 3\n' in p.program
  assert _run(p.program) == p.answer == (5 + 3) * (9 - 2) - (5 - 2) + 6


@pytest.mark.parametrize(
  'changes,match',
  [
    ({'steps': (T.Step('each', 'abs(a) + b + c + d', '{each}'),)}, 'Call'),
    ({'steps': (T.Step('each', 'a ** b + c + d', '{each}'),)}, 'operator'),
    ({'steps': (T.Step('each', 'a + b + c + d + e', '{each}'),)}, "'e'"),
    ({'steps': (T.Step('each', 'a + b + c + d + 1.5', '{each}'),)}, 'constant'),
    ({'steps': (T.Step('each', 'a + b + c + d', 'no result'),)}, 'must show'),
    ({'steps': (T.Step('each', 'a + b + c + d', '{each} {zz}'),)}, 'must show'),
    ({'steps': (T.Step('each', 'a + b + c', '{each}'),)}, "'d' is never used"),
    ({'answer': 'pens'}, 'last step'),
    ({'question': '{a} {b} {c}'}, 'question fields'),
    ({'question': '{a} {b} {c} {d} {a}'}, "'a' must appear exactly once"),
    ({'question': '{a:d} {b} {c} {d}'}, 'format specs'),
    ({'substitutable': ('a', 'zz')}, 'subset'),
    ({'substitutable': ()}, 'subset'),
    ({'inputs': {'a': (5, 2), 'b': (3, 12), 'c': (1, 20), 'd': (2, 5)}}, "input 'a'"),
    ({'inputs': {'a': (3, 9, 2), 'b': (3, 12), 'c': (1, 20), 'd': (2, 5)}}, "input 'a'"),
    ({'name': 'Bad Name'}, 'lower_snake_case'),
    ({'steps': (T.Step('X', 'a + b + c + d', '{X}'),)}, 'identifier'),
    ({'steps': (T.Step('a', 'a + b + c + d', '{a}'),)}, 'different'),
  ],
)
def test_validation_rejects_inconsistent_templates(changes, match):
  if 'steps' in changes and 'answer' not in changes:
    changes['answer'] = changes['steps'][-1].name
  with pytest.raises(T.TemplateError, match=match) as info:
    _toy(**changes)
  assert str(info.value).startswith('template') and '\n' not in str(info.value)


def test_whole_number_literals():
  text = 'He has 5 cards, 15 stamps, $5. and 1,200 coins; 2.5 kg; 5'
  assert T.numbers_in(text) == ['5', '15', '5', '1,200', '2.5', '5']
  assert T.count_literal(text, 5) == 3
  assert T.count_literal(text, 15) == 1 and T.count_literal(text, 200) == 0 and T.count_literal(text, 2) == 0
  assert T.replace_literal('buy 15 or 5 pens', 5, 'X') == 'buy 15 or X pens'
  with pytest.raises(ValueError, match='2 times'):
    T.replace_literal('5 and 5', 5, 'X')


def test_sample_rejects_repeated_substitutable_numbers():
  # With tiny ranges, many draws repeat a number; every accepted draw writes each one exactly once.
  t = _toy(inputs={'a': (2, 5), 'b': (2, 6), 'c': (1, 6), 'd': (2, 3)})
  rng = random.Random(1)
  for _ in range(30):
    p = T.sample(t, rng)
    assert all(T.count_literal(p.question, p.inputs[k]) == 1 for k in t.substitutable)
  assert T.solve(t, {'a': 2, 'b': 3, 'c': 2, 'd': 2})['each'] == 2
  assert not T.is_valid_draw(t, {'a': 2, 'b': 3, 'c': 2, 'd': 2})  # valid, but '2' is written three times
  assert T.is_valid_draw(t, {'a': 2, 'b': 5, 'c': 4, 'd': 3})


def test_sample_is_deterministic_and_fails_cleanly():
  t = T.TEMPLATES['bakery_boxes']
  assert T.sample(t, random.Random(5)) == T.sample(t, random.Random(5))
  never = _toy(steps=(T.Step('each', 'a + b + c + d - a - b - c - d', '{each}'),), answer='each')
  with pytest.raises(T.TemplateError, match=r"template 'toy': no valid draw in 7 tries"):
    T.sample(never, random.Random(0), max_tries=7)


def test_pools_split_questions():
  t = T.TEMPLATES['library_shelves']
  rng = random.Random(2)
  assert {T.question_pool(T.sample(t, rng, pool='exemplar').question) for _ in range(10)} == {'exemplar'}
  assert {T.question_pool(T.sample(t, rng, pool='test').question) for _ in range(10)} == {'test'}
  assert T.question_pool('abc') == T.question_pool('abc')
  with pytest.raises(T.TemplateError, match='unknown pool'):
    T.sample(t, rng, pool='train')


def test_get():
  assert T.get('egg_sales') is T.TEMPLATES['egg_sales']
  with pytest.raises(T.TemplateError, match='unknown template'):
    T.get('nope')
