"""Few-shot prompts and ideal targets for the four splits (q1, q2, comp, indep) in two styles and two modes.

The paper (Hosseini et al., arXiv 2410.01748, Sections 2-3) evaluates every split 8-shot with greedy decoding.
The compositional question reads 'Let X be the answer to the Q1: / Q1: ... / Solve it and use the value of X
to solve Q2. Explain your answer step by step. / Q2: ...'; a code mode asks for ``solve_q1()`` and a
``solution()`` that calls it. The formats below are fixed; extraction and the backends depend on them.

Targets (what an oracle answers):
  single   the solution lines, then '#### <answer>'
  comp     Q1's solution lines, 'So X = <Q1 answer>.', the modified Q2's solution lines, '#### <Q2 answer>'
  indep    the unrelated Q1's lines, 'So the answer to Q1 is <its answer>.', Q2's lines, '#### <Q2 answer>'
  code     a ```python block: ``def solution():`` (single); ``def solve_q1():`` then ``def solution():``
           starting ``X = solve_q1()`` with Q2's substituted input set from X (comp); both functions without
           the X link (indep)

Completion style: each exemplar and the query as 'Question: <text>\\nAnswer: <target>', blocks joined by a
blank line, ending 'Question: <query>\\nAnswer:'; completions stop at `STOP`; code mode puts a one-paragraph
instruction first. Chat style: a system message with the formatting instruction, exemplars as user/assistant
turns, the query as the last user message. ``shots=0`` gives the bare query (completion: no instruction).

Exemplars come from their own seed (`EXEMPLAR_SEED`) and from the reserved exemplar pool of questions
(`templates.question_pool`), so no exemplar is a test item whatever the seeds.
"""

import dataclasses
import random
from typing import List, Optional, Sequence, Tuple, Union

from eval_gsm import core
from eval_gsm import pairs as pairs_lib
from eval_gsm import templates as templates_lib

STYLES = ('completion', 'chat')
MODES = ('cot', 'code')
STOP = ('\n\nQuestion:', '\n\n\n')
# Seed of the exemplar pool; test pairs are built with other seeds (e.g. 0).
EXEMPLAR_SEED = 1234

COMP_INSTRUCTION = 'Solve it and use the value of X to solve Q2. Explain your answer step by step.'
INDEP_INSTRUCTION = 'Answer both questions. Explain your answer step by step.'

# The formatting instruction per kind of split (q1/q2 are 'single') and mode: the chat system message, and
# in code mode also the first paragraph of a completion prompt.
INSTRUCTIONS = {
  ('single', 'cot'): (
    'Solve the math word problem step by step, one short computation per line. '
    "End with a final line '#### <number>' that gives the answer."
  ),
  ('comp', 'cot'): (
    "Solve Q1 step by step, then write 'So X = <value>.', then solve Q2 using that value of X, one short "
    "computation per line. End with a final line '#### <number>' that gives the answer to Q2."
  ),
  ('indep', 'cot'): (
    "Solve Q1 step by step, then write 'So the answer to Q1 is <value>.', then solve Q2, one short "
    "computation per line. End with a final line '#### <number>' that gives the answer to Q2."
  ),
  ('single', 'code'): (
    'Write a Python function solution() that returns the answer to the question as a number. '
    'Put the code in one ```python block.'
  ),
  ('comp', 'code'): (
    'Write a Python function solve_q1() that returns the answer to Q1, and a function solution() that sets '
    'X = solve_q1() and returns the answer to Q2. Put the code in one ```python block.'
  ),
  ('indep', 'code'): (
    'Write a Python function solve_q1() that returns the answer to Q1, and a function solution() that '
    'returns the answer to Q2. Put the code in one ```python block.'
  ),
}


class PromptError(ValueError):
  """A prompt or target cannot be rendered as asked (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Exemplars:
  """Few-shot material: ``singles`` for the q1/q2 splits, ``pairs`` (with ``indep_q1``) for comp/indep."""

  singles: Tuple[core.Problem, ...]
  pairs: Tuple[core.Pair, ...]


def make_exemplars(k: int = 8, seed: int = EXEMPLAR_SEED) -> Exemplars:
  """``k`` single problems (from ``k`` different templates while there are enough) and ``k`` pairs, all
  from the exemplar pool of questions, which test pairs (``build_pairs(pool='test')``) never use."""
  rng = random.Random(seed)
  names = list(templates_lib.TEMPLATES)
  chosen = rng.sample(names, k) if k <= len(names) else [rng.choice(names) for _ in range(k)]
  singles = tuple(templates_lib.sample(templates_lib.TEMPLATES[n], rng, pool='exemplar') for n in chosen)
  pairs = pairs_lib.build_pairs(k, seed, with_indep=True, pool='exemplar')
  return Exemplars(singles=singles, pairs=tuple(pairs))


# ---------------------------------------------------------------------------------------------------------
# Questions and chain-of-thought targets.
# ---------------------------------------------------------------------------------------------------------


def format_number(value: Union[int, float]) -> str:
  """18 -> '18', 18.0 -> '18', 2.5 -> '2.5'."""
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return str(value)


def _lines(*parts: str) -> str:
  return '\n'.join(p for p in parts if p.strip())


def render_target(problem: core.Problem) -> str:
  """A single problem's answer text: its solution lines, then '#### <answer>'."""
  return _lines(problem.solution, f'#### {format_number(problem.answer)}')


def render_comp_target(pair: core.Pair) -> str:
  """Q1's lines, 'So X = <Q1 answer>.', the modified Q2's lines, '#### <Q2 answer>'."""
  return _lines(
    pair.q1.solution,
    f'So X = {format_number(pair.q1.answer)}.',
    pair.q2.solution,
    f'#### {format_number(pair.q2.answer)}',
  )


def _indep_q1(pair: core.Pair) -> core.Problem:
  if pair.indep_q1 is None:
    raise PromptError(f'pair {pair.id} has no indep_q1; build pairs with with_indep=True for the indep split')
  return pair.indep_q1


def render_indep_target(pair: core.Pair) -> str:
  """The unrelated Q1's lines, 'So the answer to Q1 is <answer>.', Q2's lines, '#### <Q2 answer>'."""
  indep = _indep_q1(pair)
  return _lines(
    indep.solution,
    f'So the answer to Q1 is {format_number(indep.answer)}.',
    pair.q2.solution,
    f'#### {format_number(pair.q2.answer)}',
  )


def comp_question(pair: core.Pair) -> str:
  """The paper's compositional question (Figure 2) for ``pair``."""
  return f'Let X be the answer to the Q1:\nQ1: {pair.q1.question}\n{COMP_INSTRUCTION}\nQ2: {pair.q2_with_x}'


def indep_question(pair: core.Pair) -> str:
  """The `indep` diagnostic: an unrelated Q1, then the modified Q2 with X's value written."""
  return f'{INDEP_INSTRUCTION}\nQ1: {_indep_q1(pair).question}\nQ2: {pair.q2.question}'


# ---------------------------------------------------------------------------------------------------------
# Program-of-thought targets.
# ---------------------------------------------------------------------------------------------------------

_DEF = 'def solution():\n'


def code_block(code: str) -> str:
  return f'```python\n{code}\n```'


def _program(problem: core.Problem, what: str) -> str:
  if not problem.program or not problem.program.startswith(_DEF):
    raise PromptError(f"{what} ({problem.source}) has no 'def solution():' program; code mode needs one")
  return problem.program


def _as_solve_q1(problem: core.Problem) -> str:
  return 'def solve_q1():\n' + _program(problem, 'Q1')[len(_DEF) :]


def _linked_to_x(pair: core.Pair) -> str:
  """Q2's program whose substituted input is assigned from X = solve_q1()."""
  program = _program(pair.q2, 'Q2')
  line = f'  {pair.variable} = {format_number(pair.q1.answer)}'
  lines = program.split('\n')
  if lines.count(line) != 1:
    raise PromptError(f"pair {pair.id}: Q2's program must assign '{line.strip()}' exactly once to link X")
  lines[lines.index(line)] = f'  {pair.variable} = X'
  return '\n'.join([lines[0], '  X = solve_q1()'] + lines[1:])


def render_code_target(problem: core.Problem) -> str:
  """The problem's program in a ```python block."""
  return code_block(_program(problem, 'the problem'))


def render_comp_code_target(pair: core.Pair) -> str:
  """``solve_q1()`` (Q1's program) and ``solution()`` (Q2's program, its input set from X = solve_q1())."""
  return code_block(f'{_as_solve_q1(pair.q1)}\n\n{_linked_to_x(pair)}')


def render_indep_code_target(pair: core.Pair) -> str:
  """``solve_q1()`` (the unrelated Q1) and ``solution()`` (the modified Q2 with its value written)."""
  return code_block(f'{_as_solve_q1(_indep_q1(pair))}\n\n{_program(pair.q2, "Q2")}')


# ---------------------------------------------------------------------------------------------------------
# Splits and prompts.
# ---------------------------------------------------------------------------------------------------------


def _kind(split: str) -> str:
  if split not in core.SPLITS:
    raise PromptError(f'unknown split {split!r}; choose one of {core.SPLITS}')
  return 'single' if split in ('q1', 'q2') else split


def _check(style: str, mode: str) -> None:
  if style not in STYLES:
    raise PromptError(f'unknown style {style!r}; choose one of {STYLES}')
  if mode not in MODES:
    raise PromptError(f'unknown mode {mode!r}; choose one of {MODES}')


def split_question(split: str, pair: core.Pair) -> str:
  """The question a model sees for ``split`` of ``pair``."""
  kind = _kind(split)
  if kind == 'single':
    return pair.q1.question if split == 'q1' else pair.q2.question
  return comp_question(pair) if kind == 'comp' else indep_question(pair)


def split_target(split: str, pair: core.Pair, mode: str = 'cot') -> str:
  """The ideal answer text for ``split`` of ``pair`` (no leading space)."""
  kind = _kind(split)
  _check('completion', mode)
  if kind == 'single':
    problem = pair.q1 if split == 'q1' else pair.q2
    return render_target(problem) if mode == 'cot' else render_code_target(problem)
  if kind == 'comp':
    return render_comp_target(pair) if mode == 'cot' else render_comp_code_target(pair)
  return render_indep_target(pair) if mode == 'cot' else render_indep_code_target(pair)


def render_split_target(split: str, pair: core.Pair, mode: str = 'cot', *, style: str = 'completion') -> str:
  """The oracle completion, exactly as it follows the prompt: a leading space after 'Answer:' in completion
  style, the bare target (the assistant message) in chat style."""
  _check(style, mode)
  target = split_target(split, pair, mode)
  return ' ' + target if style == 'completion' else target


def _shots(split: str, exemplars: Exemplars, shots: int, mode: str) -> List[Tuple[str, str]]:
  """(question, target) for the first ``shots`` exemplars of the kind ``split`` needs."""
  kind = _kind(split)
  pool: Sequence[Union[core.Problem, core.Pair]] = exemplars.singles if kind == 'single' else exemplars.pairs
  if not 0 <= shots <= len(pool):
    raise PromptError(
      f'shots={shots} but there are {len(pool)} exemplars for {split}; use make_exemplars(k>=shots)'
    )
  items = []
  for ex in pool[:shots]:
    if kind == 'single':
      items.append((ex.question, render_target(ex) if mode == 'cot' else render_code_target(ex)))
    else:
      items.append((split_question(split, ex), split_target(split, ex, mode)))
  return items


def render_prompt(
  split: str,
  pair: core.Pair,
  exemplars: Optional[Exemplars],
  *,
  style: str = 'completion',
  mode: str = 'cot',
  shots: int = 8,
) -> core.Prompt:
  """The ``shots``-shot prompt for ``split`` of ``pair`` (text for completion style, messages for chat)."""
  _check(style, mode)
  kind = _kind(split)
  if shots and exemplars is None:
    raise PromptError(f'shots={shots} needs exemplars; pass make_exemplars() or shots=0')
  items = _shots(split, exemplars, shots, mode) if shots else []
  query = split_question(split, pair)
  instruction = INSTRUCTIONS[(kind, mode)]
  if style == 'chat':
    messages: List[core.Message] = [{'role': 'system', 'content': instruction}]
    for question, target in items:
      messages += [{'role': 'user', 'content': question}, {'role': 'assistant', 'content': target}]
    messages.append({'role': 'user', 'content': query})
    return messages
  blocks = [f'Question: {q}\nAnswer: {t}' for q, t in items] + [f'Question: {query}\nAnswer:']
  if mode == 'code' and shots:
    blocks.insert(0, instruction)
  return '\n\n'.join(blocks)
