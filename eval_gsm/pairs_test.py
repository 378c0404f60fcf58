"""Tests for pair construction: every acceptance rule, exact re-solving, determinism, speed and storage."""

import dataclasses
import re

import pytest

from eval_gsm import core
from eval_gsm import pairs as P
from eval_gsm import templates as T

# Ann has 10 apples, buys 2 bags of 5, gives away 4 and shares the rest among 2 friends: 8 each.
TOY = T.Template(
  name='toy_apples',
  question='Ann has {a} apples. She buys {b} bags with {c} apples in each bag and gives away {g} apples. She '
  'shares the rest equally among {d} friends. How many apples does each friend get?',
  inputs={'a': (1, 30), 'b': (1, 9), 'c': (1, 9), 'g': (1, 30), 'd': (1, 9)},
  steps=(
    T.Step('bought', 'b * c', '{b} * {c} = {bought}'),
    T.Step('total', 'a + bought', '{a} + {bought} = {total}'),
    T.Step('rest', 'total - g', '{total} - {g} = {rest}'),
    T.Step('each', 'rest / d', '{rest} / {d} = {each}'),
  ),
  answer='each',
  substitutable=('a', 'b', 'c', 'g', 'd'),
)
VALUES = {'a': 10, 'b': 2, 'c': 5, 'g': 4, 'd': 2}


def q1_with(answer) -> core.Problem:
  return core.Problem(question='What is the number?', solution='It is given.', answer=answer, source='test')


def reason(x, variable='a', values=VALUES, ratio=(0.5, 2.0)):
  pair, why = P.build_pair_or_reason(q1_with(x), TOY, values, variable, 'id', ratio=ratio)
  assert (pair is None) == (why is not None)
  return why.split(':')[0] if why else 'ok'


def _run(program: str):
  namespace: dict = {}
  exec(program, namespace)
  return namespace['solution']()


def test_accepts_a_valid_pair_and_solves_it_exactly():
  pair = P.build_pair(q1_with(14), TOY, VALUES, 'a', 'p-1')
  assert pair is not None and pair.id == 'p-1' and pair.variable == 'a'
  assert pair.q2.answer == 10 and pair.q2_original.answer == 8  # (14 + 10 - 4) / 2 and (10 + 10 - 4) / 2
  assert pair.q2.inputs == {**VALUES, 'a': 14} and pair.q2_original.inputs == VALUES
  assert pair.q2.question.startswith('Ann has 14 apples.')
  assert pair.q2_with_x.startswith('Ann has X apples.')
  assert pair.q2_with_x.replace('X', '14') == pair.q2.question
  assert _run(pair.q2.program) == 10
  assert P.build_pair(q1_with(14.0), TOY, VALUES, 'a', 'p-1').q2.answer == 10  # integral float answers


# (X, variable, Q2 values, expected reason): one candidate violating each rule.
REJECTIONS = [
  (14, 'bought', VALUES, 'not_substitutable'),
  (0, 'a', VALUES, 'q1_answer'),
  (-4, 'a', VALUES, 'q1_answer'),
  (2.5, 'a', VALUES, 'q1_answer'),
  ('14', 'a', VALUES, 'q1_answer'),
  (14, 'a', {**VALUES, 'd': 3}, 'original_invalid'),  # 16 / 3
  (14, 'a', {**VALUES, 'a': 40}, 'original_invalid'),  # outside a's range
  (14, 'a', {**VALUES, 'g': 20}, 'original_invalid'),  # answer 0
  (12, 'a', {**VALUES, 'a': 5, 'g': 3}, 'original_literal'),  # '5' is written twice
  (13, 'a', VALUES, 'intermediate'),  # (13 + 10 - 4) / 2
  (30, 'g', VALUES, 'intermediate'),  # 20 - 30 < 0
  (20, 'g', VALUES, 'answer_not_positive'),  # (20 - 20) / 2 = 0
  (90, 'a', VALUES, 'ratio'),  # 48 > 2 x 8
  (4, 'a', VALUES, 'new_literal'),  # '4' is also the number given away
]


@pytest.mark.parametrize('x,variable,values,expected', REJECTIONS)
def test_each_rule_rejects_with_its_reason(x, variable, values, expected):
  assert reason(x, variable, values) == expected


def test_ratio_bounds_are_inclusive():
  values = {'a': 10, 'b': 3, 'c': 2, 'g': 8, 'd': 2}  # (10 + 6 - 8) / 2 = 4
  assert reason(6, values=values) == 'ok'  # (6 + 6 - 8) / 2 = 2 = 0.5 x 4
  assert reason(6, values=values, ratio=(0.6, 2.0)) == 'ratio'
  assert reason(18, values=values) == 'ok'  # (18 + 6 - 8) / 2 = 8 = 2 x 4
  assert reason(18, values=values, ratio=(0.5, 1.5)) == 'ratio'


def test_identity_check_catches_a_broken_substitution(monkeypatch):
  real = P._resolve

  def broken(template, values, variable, value):
    solved = real(template, values, variable, value)
    if value == values[variable]:  # the identity re-solve: pretend the machinery lost a step
      solved = {**solved, template.answer: solved[template.answer] + 1}
    return solved

  monkeypatch.setattr(P, '_resolve', broken)
  pair, why = P.build_pair_or_reason(q1_with(14), TOY, VALUES, 'a', 'id')
  assert pair is None and why.startswith('identity:') and '\n' not in why


def test_all_reasons_are_covered():
  assert {r for *_, r in REJECTIONS} | {'identity'} == set(P.REASONS)


@pytest.fixture(scope='module')
def built():
  return P.build_pairs(200, seed=11)


def test_built_pairs_follow_every_rule(built):
  assert len(built) == 200
  assert [p.id for p in built] == [f'p11-{i:05d}' for i in range(200)]
  for pair in built:
    t = T.TEMPLATES[pair.q2.source.split(':')[1]]
    x = pair.q1.answer
    old = pair.q2_original.inputs[pair.variable]
    assert pair.variable in t.substitutable and type(x) is int and x > 0 and x != old
    assert pair.q1.source != pair.q2.source
    assert pair.indep_q1.source not in (pair.q1.source, pair.q2.source)
    # Exact re-solving: the modified Q2 is the template solved with X.
    solved = T.solve(t, {**pair.q2_original.inputs, pair.variable: x}, check_range=False)
    assert pair.q2.answer == solved[t.answer] and pair.q2.inputs == {k: solved[k] for k in t.inputs}
    assert pair.q2_original.answer == T.solve(t, pair.q2_original.inputs)[t.answer]
    assert 0.5 * pair.q2_original.answer <= pair.q2.answer <= 2 * pair.q2_original.answer
    assert T.count_literal(pair.q2_original.question, old) == 1
    assert T.count_literal(pair.q2.question, x) == 1
    assert len(re.findall(r'\bX\b', pair.q2_with_x)) == 1
    assert T.replace_literal(pair.q2.question, x, 'X') == pair.q2_with_x
    assert _run(pair.q2.program) == pair.q2.answer and _run(pair.q1.program) == x
    for problem in (pair.q1, pair.q2, pair.q2_original, pair.indep_q1):
      assert T.question_pool(problem.question) == 'test'
  assert len({p.q1.question for p in built}) == len(built)
  assert len({p.q2_original.question for p in built}) == len(built)
  # Q2 templates are used about equally often.
  counts = {}
  for p in built:
    counts[p.q2.source] = counts.get(p.q2.source, 0) + 1
  assert max(counts.values()) - min(counts.values()) <= 2 and len(counts) == len(T.TEMPLATES)


def test_build_pairs_is_deterministic(built):
  assert P.build_pairs(200, seed=11) == built
  assert P.build_pairs(20, seed=12)[:5] != built[:5]
  assert P.build_pairs(5, seed=11, with_indep=False)[0].indep_q1 is None


def test_1200_pairs():
  pairs = P.build_pairs(1200, seed=0)
  assert len(pairs) == 1200 and len({p.q1.question for p in pairs}) > 600


def test_external_q1_problems():
  external = [
    core.Problem('q a', 's', 2.5, 'ext:0'),
    core.Problem('q b', 's', 12, 'ext:1'),
    core.Problem('q c', 's', 0, 'ext:2'),
    core.Problem('q d', 's', 30.0, 'ext:3'),
    core.Problem('q e', 's', 45, 'ext:4'),
    core.Problem('q f', 's', 8, 'ext:5'),
  ]
  pairs = P.build_pairs(3, seed=3, q1_problems=external)
  assert [p.q1.source for p in pairs] == ['ext:1', 'ext:3', 'ext:4']
  assert all(not p.q1.source.startswith('template') for p in pairs)
  for p in pairs:
    assert p.indep_q1.source in {'ext:1', 'ext:3', 'ext:4', 'ext:5'} and p.indep_q1 != p.q1
    assert p.q2.inputs[p.variable] == int(p.q1.answer)
  with pytest.raises(P.PairError, match='only 4 of 5 pairs from 4 usable Q1 problems'):
    P.build_pairs(5, seed=3, q1_problems=external)


def test_build_pairs_errors_are_one_line():
  big = T.Template(
    name='big_numbers',
    question='A shop sells {a} thousand pens. How many pens is that?',
    inputs={'a': (1, 3)},
    steps=(T.Step('pens', 'a * 1000', '{a} * 1000 = {pens}'),),
    answer='pens',
    substitutable=('a',),
  )
  other = dataclasses.replace(big, name='big_numbers_2')
  with pytest.raises(P.PairError, match=r'only 0 of 2 pairs from 40 sampled Q1s') as info:
    P.build_pairs(2, seed=0, templates=[big, other])
  assert '\n' not in str(info.value)
  with pytest.raises(P.PairError, match='at least 2 templates'):
    P.build_pairs(2, seed=0, templates=[big])
  with pytest.raises(P.PairError, match='unknown pool'):
    P.build_pairs(2, seed=0, pool='train')


def test_build_pairs_keeps_only_the_given_combinations():
  names = sorted(T.TEMPLATES)
  allowed = {(a, b) for a in names for b in names[:5] if a != b}  # Five templates may be Q2.
  pairs = P.build_pairs(40, seed=5, combinations=allowed)
  assert len(pairs) == 40 and all(P.template_combination(p) in allowed for p in pairs)
  assert {P.template_combination(p)[1] for p in pairs} == set(names[:5])  # Q2 balanced among the allowed.
  with pytest.raises(P.PairError, match='need generated Q1s'):
    P.build_pairs(2, seed=0, combinations=allowed, q1_problems=[q1_with(3)])
  with pytest.raises(P.PairError, match='no combination'):
    P.build_pairs(2, seed=0, combinations={('nope', 'none')})


def test_jsonl_round_trip(tmp_path, built):
  external = dataclasses.replace(built[0], q1=core.Problem('q', 's', 18.0, 'ext:0'), indep_q1=None)
  pairs = list(built[:20]) + [external]
  path = tmp_path / 'pairs.jsonl'
  P.write_pairs_jsonl(path, pairs)
  back = P.read_pairs_jsonl(path)
  assert back == pairs and type(back[-1].q1.answer) is float and back[-1].indep_q1 is None
  with open(path, 'a') as f:
    f.write('{"id": 1}\n')
  with pytest.raises(P.PairError, match=r'pairs.jsonl:22: not a pair'):
    P.read_pairs_jsonl(path)
