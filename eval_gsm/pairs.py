"""Compositional pairs (Q1, Q2 with X = answer(Q1)), built exactly from the template bank.

The paper (Hosseini et al., arXiv 2410.01748, Section 2) takes a GSM8K test question as Q1 and another one as
Q2, changes one number of Q2 to X = answer(Q1), recomputes Q2's answer by editing and running a code-form
solution, and keeps the pair only if the new answer is a positive integer "not too far" from the original.
About 25% of their items needed manual fixes. Here Q2 is a template instance, so the re-solve is exact and
the rules are checked mechanically (`build_pair_or_reason` says which rule rejected a candidate):

  not_substitutable   the variable is not one of the template's substitutable inputs
  q1_answer           Q1's answer is not a positive integer
  original_invalid    the original Q2 values do not give a valid problem with a positive answer
  original_literal    the original value is not written exactly once in the original Q2 question
  intermediate        with X, a step is not a non-negative integer (or divides by zero)
  answer_not_positive with X, the answer is not positive
  ratio               with X, the answer is outside [ratio[0], ratio[1]] x the original answer
  new_literal         X is not written exactly once in the modified Q2 question
  identity            re-solving through the same substitution with the original value does not reproduce
                      the original Q2 (guards the substitution machinery; checked last, on survivors only)

`build_pairs(n, seed)` draws Q1 and Q2 from different templates (or takes Q1 from external problems) and
keeps the first accepted Q2 for each Q1; `write_pairs_jsonl` / `read_pairs_jsonl` store pairs losslessly.
"""

import dataclasses
import json
import os
import random
from fractions import Fraction
from typing import Any, Collection, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Union

from eval_gsm import core
from eval_gsm import templates as templates_lib

REASONS = (
  'not_substitutable',
  'q1_answer',
  'original_invalid',
  'original_literal',
  'intermediate',
  'answer_not_positive',
  'ratio',
  'new_literal',
  'identity',
)

Ratio = Tuple[float, float]


class PairError(ValueError):
  """Pairs cannot be built or read as asked (one-line message)."""


def integer_answer(problem: core.Problem) -> Optional[int]:
  """``problem.answer`` as an int when it is a positive integer (18 or 18.0), else None."""
  a = problem.answer
  if isinstance(a, bool) or not isinstance(a, (int, float)):
    return None
  if isinstance(a, float) and not a.is_integer():
    return None
  return int(a) if a > 0 else None


def _resolve(
  template: templates_lib.Template, values: Mapping[str, int], variable: str, value: int
) -> Dict[str, int]:
  """All values of ``template`` with ``variable`` set to ``value`` (no range check: X may be anything)."""
  return templates_lib.solve(template, {**values, variable: value}, check_range=False)


def build_pair_or_reason(
  q1: core.Problem,
  q2_template: templates_lib.Template,
  q2_values: Mapping[str, int],
  variable: str,
  pair_id: str,
  *,
  ratio: Ratio = (0.5, 2.0),
  indep_q1: Optional[core.Problem] = None,
) -> Tuple[Optional[core.Pair], Optional[str]]:
  """``(pair, None)`` when the candidate passes every rule, else ``(None, '<reason>: <details>')``.

  The reason starts with one of `REASONS`. Cheap checks run first, so rejecting a candidate costs little.
  """
  t = q2_template
  if variable not in t.substitutable:
    return None, f'not_substitutable: {variable!r} is not in {t.name}.substitutable {t.substitutable}'
  x = integer_answer(q1)
  if x is None:
    return None, f'q1_answer: Q1 answer {q1.answer!r} is not a positive integer'
  try:
    original = templates_lib.solve(t, q2_values)
  except templates_lib.TemplateError as e:
    return None, f'original_invalid: {e}'
  old_answer = original[t.answer]
  if old_answer <= 0:
    return None, f'original_invalid: original answer {old_answer} is not positive'
  old_value = q2_values[variable]
  old_question = t.question.format(**q2_values)
  if (k := templates_lib.count_literal(old_question, old_value)) != 1:
    return None, f'original_literal: {old_value} is written {k} times in the original Q2'
  try:
    new = _resolve(t, q2_values, variable, x)
  except templates_lib.TemplateError as e:
    return None, f'intermediate: {e}'
  new_answer = new[t.answer]
  if new_answer <= 0:
    return None, f'answer_not_positive: with {variable}={x} the answer is {new_answer}'
  lo, hi = Fraction(ratio[0]), Fraction(ratio[1])
  if not lo * old_answer <= new_answer <= hi * old_answer:
    return None, f'ratio: new answer {new_answer} is outside [{ratio[0]}, {ratio[1]}] x {old_answer}'
  new_values = {k: new[k] for k in t.inputs}
  new_question = t.question.format(**new_values)
  if (k := templates_lib.count_literal(new_question, x)) != 1:
    return None, f'new_literal: {x} is written {k} times in the modified Q2'
  # The same code path that substituted X must give back the original Q2 when given the original value.
  if _resolve(t, q2_values, variable, old_value) != original:
    return None, f'identity: re-solving {t.name} with {variable}={old_value} does not reproduce Q2'
  q2 = templates_lib.render(t, new_values, check_range=False)
  pair = core.Pair(
    id=pair_id,
    q1=q1,
    q2=q2,
    q2_original=templates_lib.render(t, dict(q2_values)),
    q2_with_x=templates_lib.replace_literal(q2.question, x, 'X'),
    variable=variable,
    indep_q1=indep_q1,
  )
  return pair, None


def build_pair(
  q1: core.Problem,
  q2_template: templates_lib.Template,
  q2_values: Mapping[str, int],
  variable: str,
  pair_id: str,
  *,
  ratio: Ratio = (0.5, 2.0),
  indep_q1: Optional[core.Problem] = None,
) -> Optional[core.Pair]:
  """The pair, or None when a rule rejects it (`build_pair_or_reason` says which)."""
  pair, _ = build_pair_or_reason(
    q1, q2_template, q2_values, variable, pair_id, ratio=ratio, indep_q1=indep_q1
  )
  return pair


# ---------------------------------------------------------------------------------------------------------
# Many pairs.
# ---------------------------------------------------------------------------------------------------------

# For one Q1, the other templates are tried least-used-as-Q2 first (ties in random order), with up to
# DRAWS_PER_TEMPLATE draws each, until CANDIDATES_PER_Q1 (draw, variable) candidates have been screened; then
# the next Q1 is taken. Least-used-first keeps templates whose draws are seldom accepted from being starved
# (left alone, the few templates with large inputs would take most pairs whose Q1 answer is large).
DRAWS_PER_TEMPLATE = 2
CANDIDATES_PER_Q1 = 150
# An external Q1 is not replaceable by a fresh draw, so it gets a larger search (and so does the rare
# exemplar pool, where only one modified Q2 in EXEMPLAR_SHARE is usable).
EXTERNAL_SEARCH_FACTOR = 10
# build_pairs gives up after this many sampled Q1s per requested pair.
Q1_TRIES_PER_PAIR = 20


def _template_list(
  templates: Union[None, Mapping[str, templates_lib.Template], Sequence[templates_lib.Template]],
) -> List[templates_lib.Template]:
  if templates is None:
    return list(templates_lib.TEMPLATES.values())
  if isinstance(templates, Mapping):
    return list(templates.values())
  return list(templates)


def _screen(
  t: templates_lib.Template, values: Mapping[str, int], variable: str, x: int, old_answer: int, ratio: Ratio
) -> bool:
  """A fast necessary condition for acceptance (integral steps, positive answer within the ratio)."""
  try:
    new_answer = _resolve(t, values, variable, x)[t.answer]
  except templates_lib.TemplateError:
    return False
  return 0 < new_answer and Fraction(ratio[0]) * old_answer <= new_answer <= Fraction(ratio[1]) * old_answer


def _find_q2(
  q1: core.Problem,
  q1_template: Optional[str],
  bank: Sequence[templates_lib.Template],
  usage: Dict[str, int],
  rng: random.Random,
  pair_id: str,
  ratio: Ratio,
  seen_q2: Set[str],
  pool: str,
  budget: int,
  combinations: Optional[Collection[Tuple[str, str]]] = None,
) -> Optional[core.Pair]:
  """The first accepted Q2 for ``q1`` (see DRAWS_PER_TEMPLATE for the search order), or None.

  Draws whose question is in ``seen_q2`` are skipped, and so are variables whose value already equals X (the
  paper modifies a number of Q2; an unchanged Q2 would make the modified split a copy of the original).
  The original and the modified Q2 question must both lie in ``pool`` (see `templates.question_pool`).
  With ``combinations``, only Q2 templates ``t`` with ``(q1_template, t.name)`` in it are tried.
  """
  x = integer_answer(q1)
  if x is None:
    return None
  others = [
    t
    for t in bank
    if t.name != q1_template and (combinations is None or (q1_template, t.name) in combinations)
  ]
  rng.shuffle(others)
  others.sort(key=lambda t: usage.get(t.name, 0))
  for t in others:
    for _ in range(DRAWS_PER_TEMPLATE):
      try:
        values = templates_lib.sample_values(t, rng, pool=pool)
      except templates_lib.TemplateError:
        break
      if t.question.format(**values) in seen_q2:
        continue
      old_answer = templates_lib.solve(t, values)[t.answer]
      variables = list(t.substitutable)
      rng.shuffle(variables)
      for v in variables:
        if values[v] != x and _screen(t, values, v, x, old_answer, ratio):
          pair, _ = build_pair_or_reason(q1, t, values, v, pair_id, ratio=ratio)
          if pair is not None and (pool == 'any' or templates_lib.question_pool(pair.q2.question) == pool):
            return pair
        budget -= 1
        if budget <= 0:
          return None
  return None


def _template_name(problem: core.Problem) -> Optional[str]:
  return problem.source[len('template:') :] if problem.source.startswith('template:') else None


def template_combination(pair: core.Pair) -> Tuple[Optional[str], Optional[str]]:
  """(Q1 template, Q2 template) of ``pair``: the combination its compositional question chains (None for a
  problem that does not come from a template)."""
  return _template_name(pair.q1), _template_name(pair.q2)


def build_pairs(
  n: int,
  seed: int,
  *,
  templates: Union[None, Mapping[str, templates_lib.Template], Sequence[templates_lib.Template]] = None,
  ratio: Ratio = (0.5, 2.0),
  with_indep: bool = True,
  q1_problems: Optional[Sequence[core.Problem]] = None,
  pool: str = 'test',
  combinations: Optional[Collection[Tuple[str, str]]] = None,
) -> List[core.Pair]:
  """``n`` pairs, deterministic given ``seed``; ids 'p{seed}-{i:05d}'.

  Q1 is sampled from the bank (or taken in order from ``q1_problems``, skipping those whose answer is not a
  positive integer); Q2 is drawn from another template. Sampled Q1 questions and original Q2 questions are
  not repeated across pairs, and each template is used as Q2 about equally often. ``indep_q1`` (with
  ``with_indep``) is an unrelated problem: another of ``q1_problems`` when given, else a draw from a template
  used by neither Q1 nor Q2. Every generated question (Q1, both Q2s, indep_q1) lies in ``pool``: 'test'
  (default) for evaluation items, 'exemplar' for few-shot exemplars (see `templates.question_pool`; the two
  never share a question), or 'any'. ``combinations`` (a set of (Q1 template, Q2 template) names, see
  `template_combination`) keeps only pairs of those combinations; Q2 templates are then balanced among the
  ones the combinations allow. Raises `PairError` when ``n`` pairs cannot be reached within a bounded number
  of attempts.
  """
  bank = _template_list(templates)
  if len(bank) < 2:
    raise PairError(f'build_pairs needs at least 2 templates, got {len(bank)}; pass more templates')
  if n < 0:
    raise PairError(f'build_pairs: n must be >= 0, got {n}')
  if pool not in templates_lib.POOLS:
    raise PairError(f'build_pairs: unknown pool {pool!r}; choose one of {templates_lib.POOLS}')
  if combinations is not None and q1_problems is not None:
    raise PairError('build_pairs: combinations name templates, so they need generated Q1s, not q1_problems')
  if combinations is not None:
    combinations = frozenset(combinations)
    names = {t.name for t in bank}
    if not any(a in names and b in names for a, b in combinations):
      raise PairError('build_pairs: no combination in `combinations` has both templates in the bank')
  rng = random.Random(seed)
  external = None
  if q1_problems is not None:
    external = [p for p in q1_problems if integer_answer(p) is not None]
  pairs: List[core.Pair] = []
  usage: Dict[str, int] = {}
  seen_q1: Set[str] = set()
  seen_q2: Set[str] = set()
  q1_iter = _q1_stream(bank, rng, external, pool)
  budget = CANDIDATES_PER_Q1 * (EXTERNAL_SEARCH_FACTOR if external is not None else 1)
  budget *= templates_lib.EXEMPLAR_SHARE if pool == 'exemplar' else 1
  max_q1 = n * Q1_TRIES_PER_PAIR if external is None else len(external)
  tried = 0
  while len(pairs) < n and tried < max_q1:
    tried += 1
    index, q1 = next(q1_iter)
    if q1 is None or (external is None and q1.question in seen_q1):
      continue
    pair_id = f'p{seed}-{len(pairs):05d}'
    pair = _find_q2(
      q1, _template_name(q1), bank, usage, rng, pair_id, ratio, seen_q2, pool, budget, combinations
    )
    if pair is None:
      continue
    seen_q1.add(q1.question)
    seen_q2.add(pair.q2_original.question)
    q2_name = _template_name(pair.q2)
    usage[q2_name] = usage.get(q2_name, 0) + 1
    if with_indep:
      pair = dataclasses.replace(pair, indep_q1=_indep(pair, index, bank, rng, external, pool))
    pairs.append(pair)
  if len(pairs) < n:
    source = f'{len(external)} usable Q1 problems' if external is not None else f'{tried} sampled Q1s'
    raise PairError(
      f'build_pairs: only {len(pairs)} of {n} pairs from {source}; lower n, widen ratio or add Q1s'
    )
  return pairs


def _q1_stream(
  bank: Sequence[templates_lib.Template],
  rng: random.Random,
  external: Optional[List[core.Problem]],
  pool: str,
) -> Iterator[Tuple[int, Optional[core.Problem]]]:
  """(index into ``external`` or -1, Q1) forever: external problems in order, else draws from the bank
  (None for a template that found no valid draw, so that the caller's attempt count stays bounded)."""
  if external is not None:
    yield from enumerate(external)
    return
  while True:
    t = rng.choice(bank)
    try:
      q1 = templates_lib.sample(t, rng, pool=pool)
    except templates_lib.TemplateError:
      q1 = None
    yield -1, q1


def _indep(
  pair: core.Pair,
  index: int,
  bank: Sequence[templates_lib.Template],
  rng: random.Random,
  external: Optional[List[core.Problem]],
  pool: str,
) -> core.Problem:
  """An unrelated Q1 for the `indep` diagnostic split."""
  if external is not None and len(external) > 1:
    j = rng.randrange(len(external) - 1)
    return external[j + (j >= index)]
  used = {_template_name(pair.q1), _template_name(pair.q2)}
  others = [t for t in bank if t.name not in used] or list(bank)
  for _ in range(100):
    try:
      return templates_lib.sample(rng.choice(others), rng, pool=pool)
    except templates_lib.TemplateError:
      continue
  raise PairError("build_pairs: could not sample an independent Q1; widen the templates' input ranges")


# ---------------------------------------------------------------------------------------------------------
# JSONL storage.
# ---------------------------------------------------------------------------------------------------------


def problem_from_dict(d: Mapping[str, Any]) -> core.Problem:
  """A `core.Problem` from its `dataclasses.asdict` form (`KeyError`/`TypeError` when malformed)."""
  return core.Problem(
    question=d['question'],
    solution=d['solution'],
    answer=d['answer'],
    source=d['source'],
    program=d.get('program'),
    inputs=dict(d.get('inputs') or {}),
  )


def pair_to_dict(pair: core.Pair) -> Dict[str, Any]:
  return dataclasses.asdict(pair)


def pair_from_dict(d: Mapping[str, Any]) -> core.Pair:
  """A `core.Pair` from `pair_to_dict` output (`KeyError`/`TypeError` when malformed)."""
  indep = d.get('indep_q1')
  return core.Pair(
    id=d['id'],
    q1=problem_from_dict(d['q1']),
    q2=problem_from_dict(d['q2']),
    q2_original=problem_from_dict(d['q2_original']),
    q2_with_x=d['q2_with_x'],
    variable=d['variable'],
    indep_q1=None if indep is None else problem_from_dict(indep),
  )


def write_pairs_jsonl(path: Union[str, os.PathLike], pairs: Sequence[core.Pair]) -> None:
  """One JSON object per line (`dataclasses.asdict` of each pair); `read_pairs_jsonl` reads it back."""
  with open(path, 'w', encoding='utf-8') as f:
    for pair in pairs:
      f.write(json.dumps(pair_to_dict(pair), ensure_ascii=False) + '\n')


def read_pairs_jsonl(path: Union[str, os.PathLike]) -> List[core.Pair]:
  """The pairs written by `write_pairs_jsonl`; `PairError` naming the file and line when one is malformed."""
  pairs = []
  with open(path, encoding='utf-8') as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        pairs.append(pair_from_dict(json.loads(line)))
      except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise PairError(f'{os.fspath(path)}:{lineno}: not a pair written by write_pairs_jsonl ({e!r})')
  return pairs
