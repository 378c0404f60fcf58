"""Readers for external problem sets: GSM8K-format JSONL, Compositional-GSM-style JSONL and reasoning-gym.

The paper (Hosseini et al., arXiv 2410.01748) uses 1,200 GSM8K test questions as Q1 and builds Q2 from other
GSM8K questions. Nothing of that is shipped here, so these readers let a user bring the data they hold:

  * `read_gsm8k_jsonl`: GSM8K's own format, one ``{"question": ..., "answer": "steps\\n#### 72"}`` per line.
    The solution is the text before '####' without the ``<<48/2=24>>`` calculator annotations; the answer
    may contain commas. The problems can serve as Q1 in `pairs.build_pairs(q1_problems=...)`.
  * `read_compositional_jsonl`: compositional items. The official release is not public, so the accepted
    schema (below, `COMP_FIELDS`) takes the fields such a release would plausibly have, with aliases, and
    also reads back `pairs.write_pairs_jsonl` files.
  * `reasoning_gym_problems`: GSM-style problems from the optional `reasoning_gym` package
    (``gsm_symbolic``: symbolic GSM8K templates), another source of realistic Q1s.

Malformed lines are skipped and reported as 'file:line: what is wrong' (``on_error='skip'``), or stop the read
with a `DataError` (``on_error='stop'``).

Compositional schema: one JSON object per line, either a `pairs.write_pairs_jsonl` record (``q1``, ``q2`` and
``q2_original`` are objects and ``q2_with_x`` is present) or a flat record with these fields (first name
canonical, then aliases; an answer is a number, a numeric string, or GSM8K answer text ending '#### N', whose
steps then become the solution):

  id             uid, idx, item_id                       optional; default '<file>:<line>'
  q1             q1_question, question_1, question1       required: Q1's question
  q1_answer      answer_1, answer1, a1, x_value           required: Q1's answer (the value of X)
  q1_solution    solution_1                               optional
  q2             q2_with_x, q2_question, question_2,      required: Q2 with one number replaced by the word X
                 question2, composed_question
  q2_answer      answer_2, answer2, a2, answer,           required: the modified Q2's answer
                 final_answer
  q2_solution    solution_2                               optional
  q2_standalone  q2_filled, modified_question,            optional: the modified Q2 with X's value written;
                 q2_modified                              default: q2 with every X replaced by Q1's answer
  q2_original    original_q2, original_question_2         optional: Q2 before the modification; default: the
                                                          modified Q2 (the original is then unknown)
  q2_original_answer  original_q2_answer, original_answer_2   optional
  indep_q1       independent_q1                           optional: an unrelated question (`indep` split)
  indep_q1_answer     independent_q1_answer               required with indep_q1
  variable                                                optional: the name of the replaced quantity ('X')
"""

import json
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from eval_gsm import core
from eval_gsm import pairs as pairs_lib

Number = Union[int, float]
PathLike = Union[str, os.PathLike]
T = TypeVar('T')

ON_ERROR = ('skip', 'stop')
RG_VERSION = '0.1.25'

_NUMERIC = re.compile(r'[-+]?\d+(?:\.\d+)?')
_CALCULATOR = re.compile(r'<<[^<>]*>>')
_X_TOKEN = re.compile(r'(?<![A-Za-z0-9_])X(?![A-Za-z0-9_])')
_RG_INSTRUCTION = re.compile(r'\s*Give the result as your final answer\b.*$', re.DOTALL)

COMP_FIELDS: Dict[str, Tuple[str, ...]] = {
  'id': ('id', 'uid', 'idx', 'item_id'),
  'q1': ('q1', 'q1_question', 'question_1', 'question1'),
  'q1_answer': ('q1_answer', 'answer_1', 'answer1', 'a1', 'x_value'),
  'q1_solution': ('q1_solution', 'solution_1'),
  'q2': ('q2', 'q2_with_x', 'q2_question', 'question_2', 'question2', 'composed_question'),
  'q2_answer': ('q2_answer', 'answer_2', 'answer2', 'a2', 'answer', 'final_answer'),
  'q2_solution': ('q2_solution', 'solution_2'),
  'q2_standalone': ('q2_standalone', 'q2_filled', 'modified_question', 'q2_modified'),
  'q2_original': ('q2_original', 'original_q2', 'original_question_2'),
  'q2_original_answer': ('q2_original_answer', 'original_q2_answer', 'original_answer_2'),
  'indep_q1': ('indep_q1', 'independent_q1'),
  'indep_q1_answer': ('indep_q1_answer', 'independent_q1_answer'),
  'variable': ('variable',),
}


class DataError(ValueError):
  """A data file cannot be read as asked (one line naming the file and line)."""


class _BadLine(Exception):
  """Internal: what is wrong with one line."""


# ---------------------------------------------------------------------------------------------------------
# Numbers and GSM8K answer text.
# ---------------------------------------------------------------------------------------------------------


def parse_number(text: str) -> Optional[Number]:
  """'1,234' -> 1234, '$5' -> 5, '2.50' -> 2.5, '18.0' -> 18; None when ``text`` is not one number."""
  s = text.strip().replace(',', '').replace('$', '').rstrip('.').strip()
  if not _NUMERIC.fullmatch(s):
    return None
  value = float(s)
  return int(value) if value.is_integer() and abs(value) < 2**53 else value


def strip_calculator(text: str) -> str:
  """GSM8K text without its ``<<48/2=24>>`` calculator annotations."""
  return _CALCULATOR.sub('', text)


def _clean_solution(text: str) -> str:
  lines = [line.rstrip() for line in strip_calculator(text).strip().splitlines()]
  return '\n'.join(line for line in lines if line.strip())


def parse_gsm8k_answer(answer: str) -> Tuple[str, Number]:
  """(solution, number) from GSM8K answer text 'steps...\\n#### N'; `ValueError` saying what is wrong."""
  if '####' not in answer:
    raise ValueError("answer has no '#### <number>' line")
  steps, _, final = answer.rpartition('####')
  value = parse_number(final)
  if value is None:
    raise ValueError(f"answer after '####' is not a number: {final.strip()[:40]!r}")
  return _clean_solution(steps), value


def _answer_value(raw: Any, what: str) -> Tuple[Optional[str], Number]:
  """(solution or None, number) from a number, a numeric string or GSM8K answer text."""
  if isinstance(raw, bool) or raw is None:
    raise _BadLine(f'{what} must be a number, got {raw!r}')
  if isinstance(raw, (int, float)):
    return None, int(raw) if float(raw).is_integer() else raw
  if not isinstance(raw, str):
    raise _BadLine(f'{what} must be a number or text, got {type(raw).__name__}')
  value = parse_number(raw)
  if value is not None:
    return None, value
  try:
    return parse_gsm8k_answer(raw)
  except ValueError as e:
    raise _BadLine(f'{what}: {e}')


def _format_number(value: Number) -> str:
  """18 -> '18', 18.0 -> '18', 2.5 -> '2.5'."""
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return str(value)


# ---------------------------------------------------------------------------------------------------------
# Line-by-line JSONL reading.
# ---------------------------------------------------------------------------------------------------------


def _read_jsonl(
  path: PathLike, convert: Callable[[Dict[str, Any], str, int], T], on_error: str
) -> Tuple[List[T], List[str]]:
  """Applies ``convert(record, file_name, line_no)`` to every non-blank line; collects or raises errors."""
  if on_error not in ON_ERROR:
    raise ValueError(f'on_error must be one of {ON_ERROR}, got {on_error!r}')
  name = os.path.basename(os.fspath(path))
  try:
    f = open(path, encoding='utf-8')
  except OSError as e:
    raise DataError(f'cannot open {os.fspath(path)}: {e.strerror}; check the path')
  items: List[T] = []
  errors: List[str] = []
  with f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise _BadLine(f'bad JSON ({e.msg} at column {e.colno})')
        if not isinstance(record, dict):
          raise _BadLine(f'expected a JSON object, got {type(record).__name__}')
        items.append(convert(record, name, lineno))
      except _BadLine as e:
        message = f'{os.fspath(path)}:{lineno}: {e}'
        if on_error == 'stop':
          raise DataError(f"{message}; fix the line or pass on_error='skip'") from None
        errors.append(message)
  return items, errors


def _text(record: Mapping[str, Any], key: str) -> str:
  value = record.get(key)
  if not isinstance(value, str) or not value.strip():
    raise _BadLine(f"missing or empty text field '{key}'")
  return value.strip()


def _gsm8k_problem(record: Dict[str, Any], name: str, lineno: int) -> core.Problem:
  question = _text(record, 'question')
  try:
    solution, answer = parse_gsm8k_answer(_text(record, 'answer'))
  except ValueError as e:
    raise _BadLine(str(e))
  return core.Problem(question=question, solution=solution, answer=answer, source=f'gsm8k:{name}:{lineno}')


def read_gsm8k_jsonl(path: PathLike, *, on_error: str = 'skip') -> Tuple[List[core.Problem], List[str]]:
  """Problems from a GSM8K-format JSONL file, and one 'file:line: what' message per skipped line."""
  return _read_jsonl(path, _gsm8k_problem, on_error)


# ---------------------------------------------------------------------------------------------------------
# Compositional items.
# ---------------------------------------------------------------------------------------------------------


def _field(record: Mapping[str, Any], key: str) -> Tuple[Optional[str], Any]:
  """(the name found, its value) for canonical field ``key`` and its aliases; (None, None) if absent."""
  found = [(a, record[a]) for a in COMP_FIELDS[key] if record.get(a) is not None]
  if len(found) > 1:
    raise _BadLine(f"fields {[a for a, _ in found]} are aliases of '{key}'; keep one")
  return found[0] if found else (None, None)


def _required_text(record: Mapping[str, Any], key: str) -> str:
  name, value = _field(record, key)
  if name is None:
    raise _BadLine(f"missing '{key}' (or one of {list(COMP_FIELDS[key][1:])})")
  if not isinstance(value, str) or not value.strip():
    raise _BadLine(f"'{name}' must be non-empty text")
  return value.strip()


def _optional_text(record: Mapping[str, Any], key: str) -> Optional[str]:
  name, value = _field(record, key)
  if name is None:
    return None
  if not isinstance(value, str):
    raise _BadLine(f"'{name}' must be text")
  return value.strip()


def _answer_field(record: Mapping[str, Any], key: str) -> Tuple[Optional[str], Number]:
  name, value = _field(record, key)
  if name is None:
    raise _BadLine(f"missing '{key}' (or one of {list(COMP_FIELDS[key][1:])})")
  return _answer_value(value, name)


def _flat_pair(record: Dict[str, Any], name: str, lineno: int) -> core.Pair:
  where = f'compositional:{name}:{lineno}'
  q1_question = _required_text(record, 'q1')
  q1_steps, q1_answer = _answer_field(record, 'q1_answer')
  q1_solution = _optional_text(record, 'q1_solution')
  q2_with_x = _required_text(record, 'q2')
  if not _X_TOKEN.search(q2_with_x):
    raise _BadLine("the Q2 question has no standalone 'X'; write the replaced number as X")
  q2_steps, q2_answer = _answer_field(record, 'q2_answer')
  q2_solution = _optional_text(record, 'q2_solution')
  standalone = _optional_text(record, 'q2_standalone')
  if standalone is None:
    standalone = _X_TOKEN.sub(_format_number(q1_answer), q2_with_x)
  q2 = core.Problem(
    question=standalone, solution=q2_solution or q2_steps or '', answer=q2_answer, source=f'{where}:q2'
  )
  original = _optional_text(record, 'q2_original')
  if original is None:
    q2_original = q2
  else:
    if _field(record, 'q2_original_answer')[0] is None:
      original_answer: Number = q2_answer
      original_steps = None
    else:
      original_steps, original_answer = _answer_field(record, 'q2_original_answer')
    q2_original = core.Problem(
      question=original, solution=original_steps or '', answer=original_answer, source=f'{where}:q2_original'
    )
  indep = None
  indep_question = _optional_text(record, 'indep_q1')
  if indep_question:
    indep_steps, indep_answer = _answer_field(record, 'indep_q1_answer')
    indep = core.Problem(
      question=indep_question, solution=indep_steps or '', answer=indep_answer, source=f'{where}:indep_q1'
    )
  id_name, id_value = _field(record, 'id')
  variable = record.get('variable', 'X')
  if not isinstance(variable, str) or not variable:
    raise _BadLine("'variable' must be non-empty text")
  return core.Pair(
    id=str(id_value) if id_name is not None else f'{name}:{lineno}',
    q1=core.Problem(
      question=q1_question, solution=q1_solution or q1_steps or '', answer=q1_answer, source=f'{where}:q1'
    ),
    q2=q2,
    q2_original=q2_original,
    q2_with_x=q2_with_x,
    variable=variable,
    indep_q1=indep,
  )


def _comp_pair(record: Dict[str, Any], name: str, lineno: int) -> core.Pair:
  if isinstance(record.get('q1'), dict) and 'q2_with_x' in record:
    try:
      return pairs_lib.pair_from_dict(record)
    except (KeyError, TypeError, AttributeError) as e:
      raise _BadLine(f'looks like a write_pairs_jsonl record but is malformed ({e!r})')
  return _flat_pair(record, name, lineno)


def read_compositional_jsonl(path: PathLike, *, on_error: str = 'skip') -> Tuple[List[core.Pair], List[str]]:
  """Pairs from a compositional JSONL file (schema in the module docstring) and the skipped lines' errors."""
  return _read_jsonl(path, _comp_pair, on_error)


# ---------------------------------------------------------------------------------------------------------
# reasoning-gym.
# ---------------------------------------------------------------------------------------------------------


def strip_rg_instruction(question: str) -> str:
  """A reasoning-gym question without its trailing 'Give the result as your final answer...' sentences."""
  return _RG_INSTRUCTION.sub('', question).strip()


def rg_problem(item: Mapping[str, Any], source: str) -> core.Problem:
  """A `core.Problem` from one reasoning-gym ``gsm_symbolic`` item (question, answer, metadata)."""
  metadata = item.get('metadata') or {}
  cot = metadata.get('answer_cot') or ''
  solution = cot.rpartition('####')[0] if '####' in cot else cot
  value = metadata.get('answer_value')
  answer = parse_number(str(item['answer'])) if value is None else value
  if answer is None or isinstance(answer, bool) or not isinstance(answer, (int, float)):
    raise DataError(f'{source}: answer {item.get("answer")!r} is not a number; skip this item')
  if isinstance(answer, float) and answer.is_integer():
    answer = int(answer)
  return core.Problem(
    question=strip_rg_instruction(item['question']),
    solution=_clean_solution(solution),
    answer=answer,
    source=source,
  )


def reasoning_gym_problems(n: int, seed: int) -> List[core.Problem]:
  """``n`` GSM-style problems from reasoning-gym's ``gsm_symbolic`` dataset, deterministic given ``seed``.

  Needs the optional package: ``pip install reasoning-gym==0.1.25``. Sources are 'reasoning_gym:gsm_symbolic:
  <seed>:<index>'; ``inputs`` and ``program`` stay empty (its solvers cannot be re-run with new values).
  """
  try:
    import reasoning_gym
  except ImportError:
    raise ImportError(
      f'reasoning_gym is not installed; run: pip install reasoning-gym=={RG_VERSION} (or use the templates)'
    ) from None
  dataset: Sequence[Mapping[str, Any]] = reasoning_gym.create_dataset('gsm_symbolic', size=n, seed=seed)
  return [rg_problem(item, f'reasoning_gym:gsm_symbolic:{seed}:{i}') for i, item in enumerate(dataset)]
