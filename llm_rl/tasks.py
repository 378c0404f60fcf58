"""Tasks for VinePPO (Kazemnejad et al., arXiv 2410.01679): problems, prompts, reward and reasoning steps.

The task is ``ArithChain``, a synthetic multi-step word problem sized for a character-level model:

  question  Ann has 7 boxes of 12 pens. She loses 5. She buys 3 more. How many pens now?
  prompt    'Q: <question>\\nA:'                        (format_prompt)
  target    ' 7*12=84\\n84-5=79\\n79+3=82\\n#### 82'     (format_target; prompt + target = a training text)

Each of the k operations of the question (k from ``min_steps`` to ``max_steps``) is ONE line of the solution,
written as a compact equation on the running total. Steps differ in difficulty on purpose, so that credit
assignment matters (the point of VinePPO over a value network):

  easy   (probability 1 - hard_prob)  add or subtract a number from ``easy_range`` (single digits):  79+3=82
  hard   (probability hard_prob)      multiply by a number from ``mul_range``:                      84*12=1008
         a first hard step is written 'N boxes of M <items>' (7*12=84). When every multiplier would take the
         total past ``max_value``, the hard step subtracts a number from ``big_range`` instead (1008-47=961);
         a hard step that cannot be either (total too small) is an easy one and flagged easy.

Every intermediate value is a positive integer (subtractions keep the total >= 1, so no step multiplies 0).
Problem i of ``make_problems(n, seed)`` depends only on (seed, i), so a longer list extends a shorter one.
``split_problems`` draws train from seed 2*s and test from seed 2*s + 1 (the two families never meet) and
drops from train every question that appears in test. ``reasoning_gym_problems`` gives natural-language
GSM8K-style problems (reasoning-gym's ``gsm_symbolic``) in the same ``Problem`` form.

How this maps to the paper (research note /work/shared/research/llm.md §1.2, §4.1):

  reward  1.0 when the integer right after the FIRST '####' equals the answer, else 0.0; a truncated sample
          (it hit the token limit before finishing) scores 0.0 whatever it wrote, like the official configs'
          unfinished-response penalty of 0.0 (``reward``).
  steps   VinePPO's GSM8K split: the response split at '\\n', a step is a line (``step_boundaries``).
          Each newline belongs to the line it ends; whitespace-only lines join the next step (the official
          code merges leading empty pieces forward); by default the final '#### N' line is a step of its own
          (``merge_answer=True`` merges it into the previous step as the official GSM8K format does, which
          saves one Monte Carlo state per trajectory); ``max_steps`` merges every step past the cap into the
          last one. Tokens take the step of their first character (``token_step_index``), as the official
          code maps character advantages to tokens through the tokenizer's offset mapping.
"""

import dataclasses
import re
import string
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from common.errors import ConfigError

ANSWER_MARK = '####'
# Every character ArithChain prompts and targets use (a CharTokenizer alphabet covers them all with this).
ALPHABET = string.ascii_letters + string.digits + " .,?'\n#*+-=:"

_NAMES = (
  ('Ann', 'She'),
  ('Bob', 'He'),
  ('Cy', 'He'),
  ('Dee', 'She'),
  ('Eve', 'She'),
  ('Gus', 'He'),
  ('Ida', 'She'),
  ('Max', 'He'),
  ('Liv', 'She'),
  ('Tom', 'He'),
)
_ITEMS = ('pens', 'cards', 'eggs', 'coins', 'books', 'toys', 'shells', 'beads', 'cups', 'nuts')
_ADD = ('{P} buys {b} more.', '{P} finds {b} more.', '{P} gets {b} more.')
_SUB = ('{P} loses {b}.', '{P} gives away {b}.', '{P} sells {b}.')
_MUL = ('Then {p} has {b} times as many.', '{Poss} {item} grow {b}-fold.')
_RG_INSTRUCTION = re.compile(r'\s*Give the result as your final answer\..*\Z', re.DOTALL)
# The integer after '####': optional spaces, optional minus, digits with well-formed ',' thousands groups, and
# then not a further digit, ',<digit>' or '.<digit>' (so '1,23' and '12.5' are not integers; '12.' is 12).
_LAST_NUMBER_RE = re.compile(r'(?<![\d.,])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?![\d]|[.,]\d)')
_ANSWER_RE = re.compile(r'####[ \t]*(-?(?:\d{1,3}(?:,\d{3})+|\d+))(?!\d|,\d|\.\d)')


class TaskConfigError(ConfigError):
  """A bad task parameter (a ValueError; `common.app` prints it as one line)."""


@dataclasses.dataclass(frozen=True)
class Problem:
  """One word problem: ``solution`` is the step lines joined by '\\n', without the final '#### N' line.

  ``hard[i]`` says whether ``steps[i]`` is a hard step (ArithChain: a multiplication or a multi-digit
  subtraction; reasoning-gym: a line with a multiplication or division sign). ``k == len(steps)``.
  """

  question: str
  solution: str
  answer: int
  steps: List[str]
  hard: List[bool]
  k: int


@dataclasses.dataclass(frozen=True)
class _Params:
  min_steps: int
  max_steps: int
  hard_prob: float
  sub_prob: float
  start_range: Tuple[int, int]
  easy_range: Tuple[int, int]
  mul_range: Tuple[int, int]
  big_range: Tuple[int, int]
  max_value: int


def _check_int(name: str, value, low: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise TaskConfigError(f'{name} must be an integer >= {low}, got {value!r}')


def _check_range(name: str, value, low: int) -> Tuple[int, int]:
  try:
    lo, hi = value
  except (TypeError, ValueError):
    raise TaskConfigError(f'{name} must be a pair (lo, hi), got {value!r}') from None
  _check_int(f'{name}[0]', lo, low)
  _check_int(f'{name}[1]', hi, low)
  if lo > hi:
    raise TaskConfigError(f'{name} = {value!r} has lo > hi; give (lo, hi) with lo <= hi')
  return int(lo), int(hi)


def _check_prob(name: str, value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
    raise TaskConfigError(f'{name} must be a probability in [0, 1], got {value!r}')
  return float(value)


def _make_params(
  min_steps, max_steps, hard_prob, sub_prob, start_range, easy_range, mul_range, big_range, max_value
) -> _Params:
  _check_int('min_steps', min_steps, 1)
  _check_int('max_steps', max_steps, 1)
  if min_steps > max_steps:
    raise TaskConfigError(f'min_steps = {min_steps} > max_steps = {max_steps}; give min_steps <= max_steps')
  start_range = _check_range('start_range', start_range, 1)
  _check_int('max_value', max_value, start_range[1])
  return _Params(
    min_steps=int(min_steps),
    max_steps=int(max_steps),
    hard_prob=_check_prob('hard_prob', hard_prob),
    sub_prob=_check_prob('sub_prob', sub_prob),
    start_range=start_range,
    easy_range=_check_range('easy_range', easy_range, 1),
    mul_range=_check_range('mul_range', mul_range, 2),
    big_range=_check_range('big_range', big_range, 1),
    max_value=int(max_value),
  )


def _uniform(rng: np.random.Generator, lo_hi: Tuple[int, int]) -> int:
  return int(rng.integers(lo_hi[0], lo_hi[1] + 1))


def _pick(rng: np.random.Generator, options: Sequence):
  return options[int(rng.integers(len(options)))]


def _next_step(rng: np.random.Generator, x: int, hard: bool, p: _Params) -> Tuple[str, int, int, bool]:
  """One step from total x: (operator, operand, new total, whether it is hard)."""
  if hard:
    multipliers = [b for b in range(p.mul_range[0], p.mul_range[1] + 1) if x * b <= p.max_value]
    if multipliers:
      b = _pick(rng, multipliers)
      return '*', b, x * b, True
    if x > p.big_range[0]:  # Multiplying would pass max_value: a multi-digit subtraction instead.
      b = _uniform(rng, (p.big_range[0], min(p.big_range[1], x - 1)))
      return '-', b, x - b, True
  b = _uniform(rng, p.easy_range)
  subtract = rng.random() < p.sub_prob
  if b < x and (subtract or x + b > p.max_value):
    return '-', b, x - b, False
  return '+', b, x + b, False


def _make_problem(seed: int, index: int, p: _Params) -> Problem:
  rng = np.random.default_rng([seed, index])
  name, pronoun = _pick(rng, _NAMES)
  item = _pick(rng, _ITEMS)
  k = _uniform(rng, (p.min_steps, p.max_steps))
  hard_draws = rng.random(k) < p.hard_prob
  x = _uniform(rng, p.start_range)
  sentences, steps, hard = [], [], []
  for i in range(k):
    op, b, y, is_hard = _next_step(rng, x, bool(hard_draws[i]), p)
    if i == 0:
      opening = f'{name} has {x} boxes of {b} {item}.' if op == '*' else f'{name} has {x} {item}.'
      sentences.append(opening)
    if i > 0 or op != '*':
      template = _pick(rng, {'+': _ADD, '-': _SUB, '*': _MUL}[op])
      poss = 'Her' if pronoun == 'She' else 'His'
      sentences.append(template.format(P=pronoun, p=pronoun.lower(), Poss=poss, item=item, b=b))
    steps.append(f'{x}{op}{b}={y}')
    hard.append(is_hard)
    x = y
  sentences.append(f'How many {item} now?')
  return Problem(' '.join(sentences), '\n'.join(steps), x, steps, hard, k)


def make_problems(
  n: int,
  seed: int,
  *,
  min_steps: int = 2,
  max_steps: int = 6,
  hard_prob: float = 0.25,
  sub_prob: float = 0.5,
  start_range: Tuple[int, int] = (2, 20),
  easy_range: Tuple[int, int] = (1, 9),
  mul_range: Tuple[int, int] = (3, 19),
  big_range: Tuple[int, int] = (10, 99),
  max_value: int = 9999,
) -> List[Problem]:
  """``n`` ArithChain problems, a function of (seed, index) each (see the module docstring).

  k is uniform in [min_steps, max_steps]; each step is hard with probability ``hard_prob`` (a multiplication
  by ``mul_range`` while the total stays <= ``max_value``, else a subtraction of ``big_range``); an easy step
  subtracts (probability ``sub_prob``, when the total stays >= 1) or adds a number of ``easy_range``. The
  first total comes from ``start_range``.
  """
  _check_int('n', n, 1)
  _check_int('seed', seed, 0)
  p = _make_params(
    min_steps, max_steps, hard_prob, sub_prob, start_range, easy_range, mul_range, big_range, max_value
  )
  return [_make_problem(int(seed), i, p) for i in range(n)]


def split_problems(
  n_train: int,
  n_test: int,
  seed: int,
  *,
  test_overrides: Optional[Dict] = None,
  **kwargs,
) -> Tuple[List[Problem], List[Problem]]:
  """(train, test): ``n_test`` problems of seed 2*seed + 1, ``n_train`` of seed 2*seed with no test question.

  ``kwargs`` go to ``make_problems`` for both splits; ``test_overrides`` changes some for test only (e.g.
  ``{'max_steps': 6}`` to test on longer chains than train). Train problems whose question text appears in
  test are dropped and replaced by the next ones of the train seed, so train has exactly ``n_train``.
  """
  _check_int('n_train', n_train, 1)
  _check_int('n_test', n_test, 1)
  _check_int('seed', seed, 0)
  test = make_problems(n_test, 2 * seed + 1, **{**kwargs, **(test_overrides or {})})
  test_questions = {problem.question for problem in test}
  pool_size = n_train + max(16, n_train // 8)
  while True:  # Problems are prefix-stable in n, so a larger pool extends the smaller one.
    pool = make_problems(pool_size, 2 * seed, **kwargs)
    train = [problem for problem in pool if problem.question not in test_questions][:n_train]
    if len(train) == n_train:
      return train, test
    if pool_size > 8 * n_train + 1000:
      raise TaskConfigError(
        f'only {len(train)} of {pool_size} train problems are not test questions: the problem space is too '
        'small for these splits; widen the ranges, raise max_steps or ask for fewer problems'
      )
    pool_size *= 2


def format_prompt(problem: Problem) -> str:
  """The prompt: 'Q: <question>\\nA:'. The model's response starts right after 'A:'."""
  return f'Q: {problem.question}\nA:'


def format_target(problem: Problem) -> str:
  """The gold response: ' ' + the step lines + '\\n#### N' (just ' #### N' without steps)."""
  return ' ' + '\n'.join([*problem.steps, f'{ANSWER_MARK} {problem.answer}'])


def parse_answer(text: str) -> Optional[int]:
  """The integer right after the FIRST '####' of ``text``, or None.

  Spaces may sit between '####' and the number; a minus sign and ',' thousands separators in well-formed
  groups ('1,234,567') are allowed; whatever follows the number is ignored ('#### 12 pens.' and '#### 12.'
  give 12), except a digit after ',' or '.', which makes it no integer ('1,23', '12.5' give None). Only the
  first '####' counts, so a run-on continuation that writes another '####' cannot change the answer.
  """
  start = text.find(ANSWER_MARK)
  if start < 0:
    return None
  match = _ANSWER_RE.match(text, start)
  return int(match.group(1).replace(',', '')) if match else None


def parse_last_number(text: str) -> Optional[int]:
  """The answer after the first '####' if there is one, else the last integer of ``text`` (or None).

  The lenient extraction of evaluation harnesses, for pretrained models that do not write '####' (the
  ``task.answer='last_number'`` switch); the paper's grader is ``parse_answer``.
  """
  marked = parse_answer(text)
  if marked is not None or ANSWER_MARK in text:
    return marked
  numbers = _LAST_NUMBER_RE.findall(text)
  return int(numbers[-1].replace(',', '')) if numbers else None


ANSWER_PARSERS = {'marked': parse_answer, 'last_number': parse_last_number}


def reward(text: str, answer: int, *, truncated: bool = False, parse: str = 'marked') -> float:
  """1.0 when the number after the first '####' equals ``answer``, else 0.0; a truncated sample scores 0.0.

  ``truncated``: the sample hit the token limit without finishing (VinePPO's configs give unfinished responses
  a reward of 0.0, even when a right '####' number happens to be in them). ``parse``: 'marked' (the number
  after '####', the paper's) or 'last_number' (``parse_last_number``).
  """
  if truncated:
    return 0.0
  return 1.0 if ANSWER_PARSERS[parse](text) == answer else 0.0


def step_boundaries(
  response: str, *, max_steps: Optional[int] = None, merge_answer: bool = False
) -> List[int]:
  """Character offsets where the reasoning steps of ``response`` end (the last one is ``len(response)``).

  A step is a line: it ends right after its '\\n'. The final '#### N' line is the last step. Whitespace-only
  lines join the next step (or the last step at the end), so every step has text ('' gives no step).
  ``merge_answer`` merges a line starting with '####' into the step before it (the official GSM8K format).
  ``max_steps`` merges every step past the cap into the last one: the boundaries become the first
  ``max_steps - 1`` ones and ``len(response)``.
  """
  if max_steps is not None:
    _check_int('max_steps', max_steps, 1)
  bounds, start = [], 0
  for i, char in enumerate(response):
    if char == '\n' and response[start:i].strip():
      if not (merge_answer and bounds and response[start:i].lstrip().startswith(ANSWER_MARK)):
        bounds.append(i + 1)
      else:
        bounds[-1] = i + 1
      start = i + 1
  if start < len(response):
    tail = response[start:]
    answer_tail = merge_answer and tail.lstrip().startswith(ANSWER_MARK)
    if (tail.strip() and not answer_tail) or not bounds:
      bounds.append(len(response))
    else:
      bounds[-1] = len(response)
  if max_steps is not None and len(bounds) > max_steps:
    bounds = bounds[: max_steps - 1] + [bounds[-1]]
  return bounds


def split_steps(response: str, *, max_steps: Optional[int] = None, merge_answer: bool = False) -> List[str]:
  """The steps of ``response`` as text (``''.join`` rebuilds it); boundaries as in ``step_boundaries``."""
  bounds = step_boundaries(response, max_steps=max_steps, merge_answer=merge_answer)
  return [response[a:b] for a, b in zip([0] + bounds[:-1], bounds)]


def token_step_index(token_starts: Union[Sequence[int], np.ndarray], boundaries: Sequence[int]) -> np.ndarray:
  """The step index (int32) of every response token, from the offset of its first character.

  ``token_starts``: one character offset per token, relative to the start of the response (for a character
  tokenizer, the token positions 0..n-1), or an (n, 2) offset mapping of (start, end) pairs. A token belongs
  to the step its first character is in: the number of boundaries <= its start. Tokens at or past the last
  boundary (an EOS token after the text) belong to the last step; with no boundaries every token is step 0.
  """
  starts = np.asarray(token_starts, dtype=np.int64)
  if starts.ndim == 2 and starts.shape[1] == 2:
    starts = starts[:, 0]
  if starts.ndim != 1:
    raise TaskConfigError(
      f'token_starts must be (n,) offsets or (n, 2) (start, end) pairs, got {starts.shape}'
    )
  if starts.size and starts.min() < 0:
    raise TaskConfigError(f'token_starts must be offsets >= 0, got {int(starts.min())}')
  bounds = np.asarray(boundaries, dtype=np.int64)
  if bounds.size == 0:
    return np.zeros(starts.shape, np.int32)
  if bounds.ndim != 1 or bounds[0] < 1 or np.any(np.diff(bounds) < 1):
    raise TaskConfigError(f'boundaries must be increasing positive offsets, got {list(boundaries)}')
  index = np.searchsorted(bounds, starts, side='right')
  return np.minimum(index, bounds.size - 1).astype(np.int32)


def char_step_index(
  response: str, *, max_steps: Optional[int] = None, merge_answer: bool = False
) -> np.ndarray:
  """The step index of every character of ``response`` (a character tokenizer's ``token_step_index``)."""
  bounds = step_boundaries(response, max_steps=max_steps, merge_answer=merge_answer)
  return token_step_index(np.arange(len(response)), bounds)


def _hard_line(line: str) -> bool:
  return bool(re.search(r'[*×/÷]|\d\s*[xX]\s*\d', line))


def reasoning_gym_problems(n: int, seed: int, task: str = 'gsm_symbolic') -> List[Problem]:
  """``n`` natural-language problems from reasoning-gym's ``task`` (GSM8K-style templates), as ``Problem``s.

  The question loses its trailing 'Give the result as your final answer...' instruction; items whose answer
  is not an integer are skipped (and later items of the same seed take their place, so there are n); the
  steps are the non-empty lines of ``metadata['answer_cot']`` before its '####' line (none when it is absent).
  A step is flagged hard when it multiplies or divides. Deterministic in (n, seed): item i of reasoning-gym's
  dataset depends only on (seed, i).
  """
  _check_int('n', n, 1)
  _check_int('seed', seed, 0)
  try:
    import reasoning_gym
  except ImportError:
    raise TaskConfigError('reasoning_gym_problems needs reasoning-gym: pip install reasoning-gym') from None
  size = 2 * n + 16
  try:
    dataset = reasoning_gym.create_dataset(task, size=size, seed=int(seed))
  except (KeyError, ValueError) as e:
    raise TaskConfigError(
      f'reasoning-gym has no usable task {task!r} ({e}); try task="gsm_symbolic"'
    ) from None
  problems = []
  for item in dataset:
    answer = _as_int(item.get('answer'))
    if answer is None:
      continue
    cot = (item.get('metadata') or {}).get('answer_cot') or ''
    steps = []
    for line in cot.split('\n'):
      if line.lstrip().startswith(ANSWER_MARK):
        break
      if line.strip():
        steps.append(line.rstrip())
    question = _RG_INSTRUCTION.sub('', item['question']).strip()
    hard = [_hard_line(line) for line in steps]
    problems.append(Problem(question, '\n'.join(steps), answer, steps, hard, len(steps)))
    if len(problems) == n:
      return problems
  raise TaskConfigError(
    f'only {len(problems)} of {size} reasoning-gym {task!r} items have integer answers; ask for fewer'
  )


def _as_int(value) -> Optional[int]:
  text = str(value).strip().replace(',', '')
  if re.fullmatch(r'-?\d+', text):
    return int(text)
  if re.fullmatch(r'-?\d+\.0+', text):
    return int(text.split('.')[0])
  return None
