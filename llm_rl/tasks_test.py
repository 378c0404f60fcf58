"""Tests for llm_rl.tasks: ArithChain generator, splits, formats, reward, step splitting, reasoning-gym."""

import re

import numpy as np
import pytest

from common.errors import UsageError
from llm_rl import tasks
from llm_rl.tasks import Problem, TaskConfigError


def _evaluate(line: str) -> int:
  """The value of 'a<op>b' and check of '=c' for a solution line, written independently of the generator."""
  match = re.fullmatch(r'(\d+)([-+*])(\d+)=(\d+)', line)
  assert match, line
  a, op, b, c = int(match.group(1)), match.group(2), int(match.group(3)), int(match.group(4))
  value = {'+': a + b, '-': a - b, '*': a * b}[op]
  assert value == c, line
  return value


# ArithChain generator.


def test_problems_are_consistent_chains():
  problems = tasks.make_problems(300, seed=3, min_steps=2, max_steps=6, hard_prob=0.3)
  for p in problems:
    assert 2 <= p.k <= 6 and len(p.steps) == len(p.hard) == p.k
    assert p.solution == '\n'.join(p.steps)
    assert '####' not in p.solution
    total = None
    for line, hard in zip(p.steps, p.hard):
      first = int(re.match(r'\d+', line).group())
      assert total is None or first == total, (p.steps, total)  # Each step continues the running total.
      total = _evaluate(line)
      assert 1 <= total <= 9999
      op = re.search(r'[-+*]', line).group()
      operand = int(line.split(op)[1].split('=')[0])
      if hard:  # Hard: a multiplication or a multi-digit subtraction.
        assert op == '*' or (op == '-' and operand >= 10), line
      else:  # Easy: a single-digit addition or subtraction.
        assert op in '+-' and 1 <= operand <= 9, line
    assert total == p.answer
    assert p.question.endswith('now?')
    assert set(tasks.format_prompt(p) + tasks.format_target(p)) <= set(tasks.ALPHABET)


def test_hard_prob_controls_the_share_of_hard_steps():
  def share(hard_prob):
    flags = [h for p in tasks.make_problems(200, 0, hard_prob=hard_prob) for h in p.hard]
    return np.mean(flags)

  assert share(0.0) == 0.0
  assert share(1.0) == 1.0
  assert 0.2 < share(0.3) < 0.4
  both = tasks.make_problems(200, 0, hard_prob=0.3)
  kinds = {p.k for p in both}
  assert kinds == {2, 3, 4, 5, 6}
  # A hard first step reads 'N boxes of M <items>', the question numbers hold the operands.
  for p in both:
    if p.hard[0] and '*' in p.steps[0]:
      a, b = re.match(r'(\d+)\*(\d+)', p.steps[0]).groups()
      assert f'has {a} boxes of {b} ' in p.question


def test_operand_ranges_are_parameters():
  problems = tasks.make_problems(
    100, 1, hard_prob=1.0, mul_range=(11, 12), start_range=(2, 3), max_value=10**9
  )
  for p in problems:
    for line in p.steps:
      assert int(line.split('*')[1].split('=')[0]) in (11, 12)


def test_make_problems_is_deterministic_and_prefix_stable():
  a = tasks.make_problems(50, seed=7)
  assert a == tasks.make_problems(50, seed=7)
  assert a[:20] == tasks.make_problems(20, seed=7)
  assert a != tasks.make_problems(50, seed=8)


def test_split_has_disjoint_questions_and_exact_sizes():
  # A small problem space forces duplicates between the seeds.
  # 10 names x 10 items x 3 phrasings: 300 questions.
  kwargs = dict(min_steps=1, max_steps=1, hard_prob=0.0, sub_prob=0.0, start_range=(2, 2), easy_range=(1, 1))
  train, test = tasks.split_problems(200, 50, seed=0, **kwargs)
  assert len(train) == 200 and len(test) == 50
  assert not {p.question for p in train} & {p.question for p in test}
  assert test == tasks.make_problems(50, 1, **kwargs)
  naive = tasks.make_problems(200, 0, **kwargs)
  assert any(p.question in {q.question for q in test} for p in naive)  # The check did drop something.
  train2, test2 = tasks.split_problems(100, 20, seed=0, test_overrides={'min_steps': 5, 'max_steps': 6})
  assert {p.k for p in test2} <= {5, 6} and {p.k for p in train2} <= {2, 3, 4, 5, 6}


def test_split_of_a_too_small_space_is_a_one_line_error():
  with pytest.raises(TaskConfigError, match='too small'):
    tasks.split_problems(
      10,
      3000,
      seed=0,
      min_steps=1,
      max_steps=1,
      hard_prob=0.0,
      sub_prob=0.0,
      start_range=(2, 2),
      easy_range=(1, 1),
    )  # Test covers all 300 questions.


def test_format_prompt_and_target():
  p = Problem('Ann has 7 boxes of 12 pens. She loses 5. How many pens now?', '7*12=84\n84-5=79', 79,
              ['7*12=84', '84-5=79'], [True, False], 2)  # fmt: skip
  assert tasks.format_prompt(p) == 'Q: Ann has 7 boxes of 12 pens. She loses 5. How many pens now?\nA:'
  assert tasks.format_target(p) == ' 7*12=84\n84-5=79\n#### 79'
  assert tasks.reward(tasks.format_target(p), p.answer) == 1.0


@pytest.mark.parametrize(
  'kwargs, match',
  [
    (dict(n=0), 'n must be'),
    (dict(min_steps=4, max_steps=2), 'min_steps = 4 > max_steps = 2'),
    (dict(min_steps=0), 'min_steps'),
    (dict(hard_prob=1.5), 'hard_prob'),
    (dict(hard_prob=-0.1), 'hard_prob'),
    (dict(sub_prob=2), 'sub_prob'),
    (dict(mul_range=(9, 3)), 'lo > hi'),
    (dict(mul_range=(1, 3)), r'mul_range\[0\]'),
    (dict(easy_range=5), 'pair'),
    (dict(seed=-1), 'seed'),
    (dict(max_value=5), 'max_value'),
  ],
)
def test_bad_parameters_are_task_config_errors(kwargs, match):
  args = {'n': 3, 'seed': 0, **kwargs}
  with pytest.raises(TaskConfigError, match=match) as info:
    tasks.make_problems(args.pop('n'), args.pop('seed'), **args)
  assert isinstance(info.value, ValueError) and isinstance(info.value, UsageError)
  assert '\n' not in str(info.value)


# Reward.


@pytest.mark.parametrize(
  'text, value',
  [
    ('#### 42', 42),
    ('5+5=10\n#### 10', 10),
    ('####42', 42),
    ('#### \t 42   ', 42),
    ('#### -7', -7),
    ('#### 1,234', 1234),
    ('#### -1,234,567', -1234567),
    ('#### 12 pens.', 12),
    ('#### 12.', 12),
    ('#### 12\nQ: Bob has 3 eggs.\nA: #### 3', 12),  # Run-on text after the answer is ignored.
    ('#### 5 #### 6', 5),  # Only the first '####' counts.
    ('', None),
    ('no answer here 42', None),
    ('#### ', None),
    ('#### abc 12', None),  # The first '####' has no number: a later one is not read.
    ('#### - 5', None),
    ('#### 1,23', None),
    ('#### 12.5', None),
  ],
)
def test_parse_answer(text, value):
  assert tasks.parse_answer(text) == value


def test_reward_and_truncation():
  assert tasks.reward(' 3+4=7\n#### 7', 7) == 1.0
  assert tasks.reward(' 3+4=7\n#### 8', 7) == 0.0
  assert tasks.reward(' 3+4=7\n#### 8\n#### 7', 7) == 0.0
  assert tasks.reward(' 3+4=7', 7) == 0.0
  assert tasks.reward('#### -1,000', -1000) == 1.0
  assert tasks.reward(' 3+4=7\n#### 7', 7, truncated=True) == 0.0  # Truncation scores 0 even when right.
  assert tasks.reward(' 3+4=7\n#### 7\n3+4=7\n3+', 7, truncated=True) == 0.0


# Step splitting.


def test_step_boundaries_hand_example():
  response = ' 7*12=84\n84-5=79\n#### 79'
  #           0123456789012345678901234
  assert tasks.step_boundaries(response) == [9, 17, 24]
  assert tasks.split_steps(response) == [' 7*12=84\n', '84-5=79\n', '#### 79']
  expected = [0] * 9 + [1] * 8 + [2] * 7
  np.testing.assert_array_equal(tasks.char_step_index(response), expected)
  ids = tasks.token_step_index(np.arange(len(response) + 1), tasks.step_boundaries(response))
  np.testing.assert_array_equal(ids, expected + [2])  # An EOS token after the text joins the last step.
  assert ids.dtype == np.int32
  # The answer merged into the previous line: the official GSM8K format.
  assert tasks.step_boundaries(response, merge_answer=True) == [9, 24]


def test_step_boundaries_edge_cases():
  assert tasks.step_boundaries('') == []
  assert tasks.step_boundaries(' 3+4=7 #### 7') == [13]  # No newline: one step.
  assert tasks.split_steps('a\nb\n') == ['a\n', 'b\n']
  assert tasks.split_steps('a\nb\n\n') == ['a\n', 'b\n\n']  # A trailing blank line joins the last step.
  assert tasks.split_steps('\n\na\n\nb') == ['\n\na\n', '\nb']  # Blank lines join the next step.
  assert tasks.split_steps('\n \n') == ['\n \n']
  assert tasks.split_steps('a\n#### 5\n', merge_answer=True) == ['a\n#### 5\n']
  assert tasks.split_steps('#### 5', merge_answer=True) == ['#### 5']
  for text in ['a\nb\n\nc', '\n', ' x\n\n\n####  2\nrun on', 'abc']:
    assert ''.join(tasks.split_steps(text)) == text


def test_max_steps_merges_the_rest_into_the_last_step():
  response = 'a\nb\nc\nd\n#### 4'
  assert tasks.step_boundaries(response) == [2, 4, 6, 8, 14]
  assert tasks.step_boundaries(response, max_steps=3) == [2, 4, 14]
  assert tasks.split_steps(response, max_steps=3) == ['a\n', 'b\n', 'c\nd\n#### 4']
  assert tasks.step_boundaries(response, max_steps=1) == [14]
  assert tasks.step_boundaries(response, max_steps=5) == [2, 4, 6, 8, 14]
  np.testing.assert_array_equal(tasks.char_step_index(response, max_steps=2), [0, 0] + [1] * 12)
  with pytest.raises(TaskConfigError, match='max_steps'):
    tasks.step_boundaries(response, max_steps=0)


def test_token_step_index_with_multi_character_tokens():
  response = ' 12+3=15\n#### 15'
  bounds = tasks.step_boundaries(response)
  assert bounds == [9, 16]
  # Tokens ' 12', '+3=', '15', '\n', '####', ' 15': the step of a token is the step of its first character.
  offsets = [(0, 3), (3, 6), (6, 8), (8, 9), (9, 13), (13, 16)]
  np.testing.assert_array_equal(tasks.token_step_index(offsets, bounds), [0, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(tasks.token_step_index([0, 3, 6, 8, 9, 13], bounds), [0, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(tasks.token_step_index([0, 1], []), [0, 0])
  with pytest.raises(TaskConfigError, match='increasing'):
    tasks.token_step_index([0], [5, 5])
  with pytest.raises(TaskConfigError, match='>= 0'):
    tasks.token_step_index([-1], [5])


def test_gold_targets_have_one_step_per_line_plus_the_answer():
  for p in tasks.make_problems(50, 2):
    target = tasks.format_target(p)
    steps = tasks.split_steps(target)
    assert len(steps) == p.k + 1
    assert [s.strip() for s in steps[:-1]] == p.steps and steps[-1] == f'#### {p.answer}'
    assert len(tasks.split_steps(target, merge_answer=True)) == p.k


# reasoning-gym.


def test_reasoning_gym_problems():
  problems = tasks.reasoning_gym_problems(12, seed=1)
  assert len(problems) == 12
  assert problems == tasks.reasoning_gym_problems(12, seed=1)
  assert problems[:5] == tasks.reasoning_gym_problems(5, seed=1)
  for p in problems:
    assert isinstance(p.answer, int)
    assert 'Give the result' not in p.question and p.question.rstrip()[-1] in '?.'
    assert p.k == len(p.steps) == len(p.hard) and p.k >= 1
    assert p.solution == '\n'.join(p.steps) and '####' not in p.solution
    assert tasks.reward(tasks.format_target(p), p.answer) == 1.0
  flags = [h for p in problems for h in p.hard]
  assert any(flags) and not all(flags)


def test_reasoning_gym_missing_is_a_one_line_error(monkeypatch):
  import builtins

  real_import = builtins.__import__

  def fake_import(name, *args, **kwargs):
    if name == 'reasoning_gym':
      raise ImportError(name)
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, '__import__', fake_import)
  with pytest.raises(TaskConfigError, match='pip install reasoning-gym'):
    tasks.reasoning_gym_problems(2, 0)


@pytest.mark.parametrize(
  'text, want',
  [
    ('so 12 + 3 = 15.', 15),
    ('answer: -1,234 items', -1234),
    ('#### 7 then 9', 7),  # A '####' answer wins.
    ('#### abc 5', None),  # '####' without a number: no fallback.
    ('about 3.5 of them', None),
    ('no digits', None),
  ],
)
def test_parse_last_number(text, want):
  assert tasks.parse_last_number(text) == want
  assert tasks.reward(text, 15, parse='last_number') == float(want == 15)
