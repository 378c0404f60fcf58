"""A bank of grade-school word-problem templates with exact solvers (our stand-in for GSM8K).

Compositional GSM (Hosseini et al., arXiv 2410.01748) builds Q2 by changing one number of a GSM8K question
and re-running a code-form solution. GSM8K is not available offline, so this module owns its problems: every
`Template` is a question with integer inputs and an ordered list of arithmetic steps over them. Because the
solver is the template itself, setting one input to X = answer(Q1) and re-solving is exact (see pairs.py).

  * `Step(name, expr, text)`: ``expr`` uses + - * / and parentheses over earlier names and integer constants;
    it is parsed with `ast` against a whitelist and evaluated exactly with integers and `fractions.Fraction`
    by small closures compiled from the tree (never `eval`).
    ``text`` is the GSM8K-style solution line, a format string over the names.
  * `solve(template, values)` returns every input and step value; all steps must be non-negative integers.
  * `render(template, values)` gives a `core.Problem` with the question, the solution (one computation per
    line, no '#### N' line), the answer and a program-of-thought `def solution():`.
  * `sample(template, rng)` draws inputs until the problem is valid and every substitutable input's number
    appears exactly once in the question (so it can later be replaced by X unambiguously).
  * `question_pool` splits all questions into a small 'exemplar' pool and a 'test' pool by a hash of the text,
    so few-shot exemplars and test items never coincide.

The questions are written for this repository; none is copied from GSM8K.
"""

import ast
import dataclasses
import keyword
import random
import re
import string
import zlib
from fractions import Fraction
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from eval_gsm import core

Number = Union[int, Fraction, float]
# An input's allowed values: (lo, hi) inclusive, or (lo, hi, step) for the multiples of step in lo..hi.
InputRange = Tuple[int, ...]

# Names the prompts' code mode uses itself; a template may not use them as value names.
RESERVED_NAMES = frozenset({'X', 'solution', 'solve_q1'})

_NUMBER = re.compile(r'\d+(?:[.,]\d+)*')
_NAME = re.compile(r'[a-z][a-z0-9_]*')
_ARITH = {ast.Add: '+', ast.Sub: '-', ast.Mult: '*', ast.Div: '/'}
_PRECEDENCE = {ast.Add: 1, ast.Sub: 1, ast.Mult: 2, ast.Div: 2}


class TemplateError(ValueError):
  """A template is malformed, or a draw of its inputs gives an invalid problem (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Step:
  """One solution step: ``name = expr``, shown as the solution line ``text`` (a format string)."""

  name: str
  expr: str
  text: str


@dataclasses.dataclass(frozen=True)
class Template:
  """A parameterised word problem; construction validates it (raises `TemplateError`).

  ``inputs`` maps each input name to its range (see `InputRange`); ``question`` is a format string with one
  ``{name}`` field per input; ``steps`` are solved in order and ``answer`` is the last step's name;
  ``substitutable`` are the inputs that a compositional pair may replace by X.
  """

  name: str
  question: str
  inputs: Dict[str, InputRange]
  steps: Tuple[Step, ...]
  answer: str
  substitutable: Tuple[str, ...]
  # Filled in by __post_init__: the parsed step expressions, their compiled exact evaluators, and whether
  # a step has a division below its top node (only then can the program's '/' differ from exact values).
  _trees: Tuple[ast.expr, ...] = dataclasses.field(init=False, repr=False, compare=False)
  _exact_fns: Tuple[Callable[[Mapping[str, Number]], Number], ...] = dataclasses.field(
    init=False, repr=False, compare=False
  )
  _nested_div: Tuple[bool, ...] = dataclasses.field(init=False, repr=False, compare=False)

  def __post_init__(self):
    trees = _validate(self)
    object.__setattr__(self, '_trees', trees)
    object.__setattr__(self, '_exact_fns', tuple(_compile(t) for t in trees))
    object.__setattr__(self, '_nested_div', tuple(_has_nested_div(t) for t in trees))


# ---------------------------------------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------------------------------------


def _fail(template_name: str, message: str) -> TemplateError:
  return TemplateError(f"template '{template_name}': {message}")


def _format_fields(name: str, text: str, what: str) -> List[str]:
  """The ``{field}`` names of a format string, in order; only bare names are allowed."""
  fields = []
  try:
    parsed = list(string.Formatter().parse(text))
  except ValueError as e:
    raise _fail(name, f'{what} is not a valid format string ({e}); escape literal braces as {{{{ }}}}')
  for _, field, spec, conversion in parsed:
    if field is None:
      continue
    if not _NAME.fullmatch(field) or spec or conversion:
      raise _fail(name, f'{what} has field {{{field}}}; use plain {{name}} fields without format specs')
    fields.append(field)
  return fields


def _check_range(name: str, input_name: str, spec: InputRange) -> None:
  ok = isinstance(spec, tuple) and len(spec) in (2, 3) and all(type(v) is int for v in spec)
  if ok:
    lo, hi = spec[0], spec[1]
    step = spec[2] if len(spec) == 3 else 1
    ok = 0 <= lo <= hi and step >= 1 and lo % step == 0
  if not ok:
    raise _fail(
      name,
      f"input '{input_name}' has range {spec!r}; use (lo, hi) or (lo, hi, step), 0 <= lo <= hi, "
      'lo a multiple of step',
    )


def _parse_expr(name: str, step: Step, known: Sequence[str]) -> ast.expr:
  try:
    tree = ast.parse(step.expr, mode='eval').body
  except SyntaxError:
    raise _fail(name, f"step '{step.name}' has unparsable expr {step.expr!r}")
  for node in ast.walk(tree):
    if isinstance(node, ast.BinOp):
      if type(node.op) not in _ARITH:
        raise _fail(name, f"step '{step.name}' uses an operator other than + - * / in {step.expr!r}")
    elif isinstance(node, ast.Name):
      if node.id not in known:
        raise _fail(name, f"step '{step.name}' uses '{node.id}', which is not an input or earlier step")
    elif isinstance(node, ast.Constant):
      if type(node.value) is not int or node.value < 0:
        raise _fail(name, f"step '{step.name}' has constant {node.value!r}; only non-negative integers")
    elif not isinstance(node, (ast.operator, ast.expr_context)):
      raise _fail(name, f"step '{step.name}' has {type(node).__name__} in {step.expr!r}; use + - * / ( )")
  return tree


def _validate(t: Template) -> Tuple[ast.expr, ...]:
  """Checks that the template's fields agree with each other; returns the parsed step expressions."""
  if not _NAME.fullmatch(t.name):
    raise TemplateError(f'template name {t.name!r} must be lower_snake_case')
  if not t.inputs or not t.steps:
    raise _fail(t.name, 'needs at least one input and one step')
  names = list(t.inputs) + [s.name for s in t.steps]
  for n in names:
    if not _NAME.fullmatch(n) or keyword.iskeyword(n) or n in RESERVED_NAMES:
      raise _fail(t.name, f'value name {n!r} must be a lower_snake_case identifier, not a keyword or X')
  if len(set(names)) != len(names):
    raise _fail(t.name, 'input and step names must all be different')
  for input_name, spec in t.inputs.items():
    _check_range(t.name, input_name, spec)
  trees = []
  for i, step in enumerate(t.steps):
    known = names[: len(t.inputs) + i]
    trees.append(_parse_expr(t.name, step, known))
    text_fields = _format_fields(t.name, step.text, f"step '{step.name}' text")
    unknown = [f for f in text_fields if f not in known and f != step.name]
    if unknown or step.name not in text_fields:
      raise _fail(
        t.name, f"step '{step.name}' text must show {{{step.name}}} and only known names, got {text_fields}"
      )
  used = [{n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} for tree in trees]
  for n in names[:-1]:
    later = used if n in t.inputs else used[names.index(n) - len(t.inputs) + 1 :]
    if not any(n in u for u in later):
      raise _fail(t.name, f"'{n}' is never used by a later step; remove it or use it")
  if t.answer != t.steps[-1].name:
    raise _fail(t.name, f"answer must be the last step's name '{t.steps[-1].name}', got '{t.answer}'")
  fields = _format_fields(t.name, t.question, 'question')
  if set(fields) != set(t.inputs):
    raise _fail(
      t.name, f'question fields {sorted(set(fields))} must be exactly the inputs {sorted(t.inputs)}'
    )
  if not t.substitutable or not set(t.substitutable) <= set(t.inputs):
    raise _fail(t.name, f'substitutable {t.substitutable} must be a non-empty subset of the inputs')
  for n in t.substitutable:
    if fields.count(n) != 1:
      raise _fail(t.name, f"substitutable input '{n}' must appear exactly once in the question")
  return tuple(trees)


def _has_nested_div(tree: ast.expr) -> bool:
  """Whether a division appears anywhere but at the top node of ``tree``."""
  children = [tree.left, tree.right] if isinstance(tree, ast.BinOp) else []
  return any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) for c in children for n in ast.walk(c))


# ---------------------------------------------------------------------------------------------------------
# Exact evaluation and the program-of-thought text.
# ---------------------------------------------------------------------------------------------------------


def _divide(a: Number, b: Number) -> Number:
  """Exact a / b: an int when both are ints and b divides a, else a `Fraction` (ZeroDivisionError on 0)."""
  if type(a) is int and type(b) is int and b != 0 and a % b == 0:
    return a // b
  return Fraction(a) / b


def _exact(node: ast.expr, env: Mapping[str, Number]) -> Number:
  """Exact value of ``node``: ints while everything divides, `Fraction` otherwise."""
  if type(node) is ast.Name:
    return env[node.id]
  if type(node) is ast.Constant:
    return node.value
  a = _exact(node.left, env)
  b = _exact(node.right, env)
  op = type(node.op)
  if op is ast.Add:
    return a + b
  if op is ast.Sub:
    return a - b
  if op is ast.Mult:
    return a * b
  return _divide(a, b)


def _compile(node: ast.expr) -> Callable[[Mapping[str, Number]], Number]:
  """A closure computing `_exact` of ``node`` (the same arithmetic, without walking the tree each time)."""
  if type(node) is ast.Name:
    key = node.id
    return lambda env: env[key]
  if type(node) is ast.Constant:
    value = node.value
    return lambda env: value
  f, g = _compile(node.left), _compile(node.right)
  op = type(node.op)
  if op is ast.Add:
    return lambda env: f(env) + g(env)
  if op is ast.Sub:
    return lambda env: f(env) - g(env)
  if op is ast.Mult:
    return lambda env: f(env) * g(env)
  return lambda env: _divide(f(env), g(env))


def _is_floor_div(node: ast.BinOp, env: Mapping[str, Number]) -> bool:
  """A division is written ``//`` in the program exactly when it is an exact division of integers."""
  a = _exact(node.left, env)
  b = _exact(node.right, env)
  return type(a) is int and type(b) is int and b != 0 and a % b == 0


def _python(node: ast.expr, env: Mapping[str, Number], py_env: Mapping[str, Number]) -> Number:
  """The value Python computes for the program line of ``node`` (floats after a ``/``)."""
  if type(node) is ast.Name:
    return py_env[node.id]
  if type(node) is ast.Constant:
    return node.value
  a = _python(node.left, env, py_env)
  b = _python(node.right, env, py_env)
  op = type(node.op)
  if op is ast.Add:
    return a + b
  if op is ast.Sub:
    return a - b
  if op is ast.Mult:
    return a * b
  return a // b if _is_floor_div(node, env) else a / b


def _code(node: ast.expr, env: Mapping[str, Number]) -> str:
  """Python source for ``node`` with the fewest parentheses, choosing ``//`` or ``/`` per division."""
  if type(node) is ast.Name:
    return node.id
  if type(node) is ast.Constant:
    return str(node.value)
  prec = _PRECEDENCE[type(node.op)]
  left = _code(node.left, env)
  right = _code(node.right, env)
  if isinstance(node.left, ast.BinOp) and _PRECEDENCE[type(node.left.op)] < prec:
    left = f'({left})'
  if isinstance(node.right, ast.BinOp) and _PRECEDENCE[type(node.right.op)] <= prec:
    right = f'({right})'
  op = _ARITH[type(node.op)]
  if op == '/' and _is_floor_div(node, env):
    op = '//'
  return f'{left} {op} {right}'


def in_range(spec: InputRange, value: int) -> bool:
  """Whether ``value`` is one of the values an input with range ``spec`` can take."""
  step = spec[2] if len(spec) == 3 else 1
  return spec[0] <= value <= spec[1] and value % step == 0


def solve(template: Template, values: Mapping[str, int], *, check_range: bool = True) -> Dict[str, int]:
  """All input and step values of ``template`` for ``values``, exactly.

  Raises `TemplateError` when an input is missing, not a non-negative integer or (with ``check_range``)
  outside its range, or when a step is not a non-negative integer. Pass ``check_range=False`` for a value set
  from outside the sampling range (a compositional pair's X).
  """
  name = template.name
  if set(values) != set(template.inputs):
    raise _fail(name, f'inputs must be exactly {sorted(template.inputs)}, got {sorted(values)}')
  env: Dict[str, Number] = {}
  for k, spec in template.inputs.items():
    v = values[k]
    if type(v) is not int or v < 0:
      raise _fail(name, f"input '{k}' = {v!r} must be a non-negative integer")
    if check_range and not (spec[0] <= v <= spec[1] and (len(spec) == 2 or v % spec[2] == 0)):
      raise _fail(name, f"input '{k}' = {v} is outside its range {spec}; pass check_range=False for X")
    env[k] = v
  py_env: Optional[Dict[str, Number]] = None  # Python's values once a '/' made a float; else same as env
  for step, tree, fn, nested in zip(
    template.steps, template._trees, template._exact_fns, template._nested_div
  ):
    try:
      exact = fn(env)
      # With ints only and at most a top-level division, the program computes exactly these values.
      py = exact if py_env is None and not nested else _python(tree, env, env if py_env is None else py_env)
    except ZeroDivisionError:
      raise _fail(name, f"step '{step.name}' divides by zero; draw other inputs")
    if type(exact) is not int:
      if exact.denominator != 1:
        raise _fail(name, f"step '{step.name}' = {exact} is not a whole number; draw other inputs")
      exact = int(exact)
    if exact < 0:
      raise _fail(name, f"step '{step.name}' = {exact} is negative; draw other inputs")
    if type(py) is float:
      if py != exact:
        raise _fail(
          name, f"step '{step.name}': the program's '/' gives {py!r}, not {exact}; draw other inputs"
        )
      if py_env is None:
        py_env = dict(env)
    env[step.name] = exact
    if py_env is not None:
      py_env[step.name] = py
  return env  # every value is an int now


def program_text(template: Template, values: Mapping[str, int]) -> str:
  """The program-of-thought ``def solution():`` for solved ``values`` (inputs as literals, then the steps)."""
  lines = ['def solution():']
  lines += [f'  {k} = {values[k]}' for k in template.inputs]
  lines += [f'  {s.name} = {_code(t, values)}' for s, t in zip(template.steps, template._trees)]
  lines.append(f'  return {template.answer}')
  return '\n'.join(lines)


def render(template: Template, values: Mapping[str, int], *, check_range: bool = True) -> core.Problem:
  """The `core.Problem` for ``values`` (see `solve` for the errors and ``check_range``)."""
  solved = solve(template, values, check_range=check_range)
  return core.Problem(
    question=template.question.format(**solved),
    solution='\n'.join(s.text.format(**solved) for s in template.steps),
    answer=solved[template.answer],
    source=f'template:{template.name}',
    program=program_text(template, solved),
    inputs={k: solved[k] for k in template.inputs},
  )


# ---------------------------------------------------------------------------------------------------------
# Whole-number literals and sampling.
# ---------------------------------------------------------------------------------------------------------


def numbers_in(text: str) -> List[str]:
  """The whole numbers written in ``text``, e.g. '15' and '1,200' but never the '5' inside '15'."""
  return _NUMBER.findall(text)


def count_literal(text: str, value: int) -> int:
  """How many times the number ``value`` is written in ``text`` as a whole number."""
  return numbers_in(text).count(str(value))


def replace_literal(text: str, value: int, replacement: str) -> str:
  """``text`` with the single whole-number occurrence of ``value`` replaced; `ValueError` if not single."""
  matches = [m for m in _NUMBER.finditer(text) if m.group() == str(value)]
  if len(matches) != 1:
    raise ValueError(f'{value} is written {len(matches)} times in the text; it must appear exactly once')
  m = matches[0]
  return text[: m.start()] + replacement + text[m.end() :]


def _draw(spec: InputRange, rng: random.Random) -> int:
  return rng.randrange(spec[0], spec[1] + 1, spec[2] if len(spec) == 3 else 1)


# Questions are split into two disjoint pools by a stable hash of their text: one question in EXEMPLAR_SHARE
# is reserved for few-shot exemplars, the others are for test items. Drawing exemplars and test items from
# different pools guarantees that no exemplar is ever a test question, whatever the seeds.
EXEMPLAR_SHARE = 16
POOLS = ('any', 'test', 'exemplar')


def question_pool(question: str) -> str:
  """'exemplar' for the reserved questions (crc32 of the text divisible by EXEMPLAR_SHARE), else 'test'."""
  return 'exemplar' if zlib.crc32(question.encode('utf-8')) % EXEMPLAR_SHARE == 0 else 'test'


def _check_pool(pool: str) -> None:
  if pool not in POOLS:
    raise TemplateError(f'unknown pool {pool!r}; choose one of {POOLS}')


def is_valid_draw(template: Template, values: Mapping[str, int], pool: str = 'any') -> bool:
  """Whether `sample` would accept ``values``: a valid problem with a positive answer, every substitutable
  input's number written exactly once in the question, and the question in ``pool`` (see `question_pool`)."""
  try:
    solved = solve(template, values)
  except TemplateError:
    return False
  if solved[template.answer] <= 0:
    return False
  question = template.question.format(**values)
  numbers = numbers_in(question)
  if not all(numbers.count(str(values[k])) == 1 for k in template.substitutable):
    return False
  return pool == 'any' or question_pool(question) == pool


def sample_values(
  template: Template, rng: random.Random, max_tries: int = 100, *, pool: str = 'any'
) -> Dict[str, int]:
  """Input values drawn uniformly from the ranges until `is_valid_draw` accepts them.

  ``max_tries`` counts draws; with ``pool='exemplar'`` it is multiplied by EXEMPLAR_SHARE (few draws land
  there).
  """
  _check_pool(pool)
  tries = max_tries * EXEMPLAR_SHARE if pool == 'exemplar' else max_tries
  for _ in range(tries):
    values = {k: _draw(spec, rng) for k, spec in template.inputs.items()}
    if is_valid_draw(template, values, pool):
      return values
  raise _fail(template.name, f'no valid draw in {tries} tries; widen its input ranges or raise max_tries')


def sample(
  template: Template, rng: random.Random, max_tries: int = 100, *, pool: str = 'any'
) -> core.Problem:
  """A random valid problem of ``template`` (see `sample_values`)."""
  return render(template, sample_values(template, rng, max_tries, pool=pool))


# ---------------------------------------------------------------------------------------------------------
# The bank. Each entry: name, question, inputs, steps (name, expr, text), substitutable inputs.
# ---------------------------------------------------------------------------------------------------------


def _t(
  name: str,
  question: str,
  inputs: Dict[str, InputRange],
  steps: Sequence[Tuple[str, str, str]],
  substitutable: Sequence[str],
) -> Template:
  return Template(
    name=name,
    question=question,
    inputs=inputs,
    steps=tuple(Step(*s) for s in steps),
    answer=steps[-1][0],
    substitutable=tuple(substitutable),
  )


_BANK = (
  _t(
    'bakery_boxes',
    'A bakery makes {trays} trays of muffins with {per_tray} muffins on each tray. It sells {sold} muffins '
    'in the morning and packs the rest into boxes of {per_box}. How many boxes does it fill?',
    {'trays': (3, 9), 'per_tray': (6, 16), 'sold': (4, 40), 'per_box': (2, 6)},
    [
      ('muffins', 'trays * per_tray', 'The bakery makes {trays} * {per_tray} = {muffins} muffins.'),
      ('rest', 'muffins - sold', 'After the morning, {muffins} - {sold} = {rest} muffins are left.'),
      ('boxes', 'rest / per_box', 'They fill {rest} / {per_box} = {boxes} boxes.'),
    ],
    ['trays', 'per_tray', 'sold', 'per_box'],
  ),
  _t(
    'egg_sales',
    "Nora's hens lay {per_day} eggs every day. After {days} days she keeps {kept} eggs for her family and "
    'sells the rest for ${price} each. How many dollars does she earn from the eggs?',
    {'per_day': (4, 20), 'days': (3, 10), 'kept': (2, 24), 'price': (1, 3)},
    [
      ('laid', 'per_day * days', 'The hens lay {per_day} * {days} = {laid} eggs.'),
      ('sold', 'laid - kept', 'She sells {laid} - {kept} = {sold} eggs.'),
      ('earned', 'sold * price', 'She earns {sold} * {price} = ${earned}.'),
    ],
    ['per_day', 'days', 'kept'],
  ),
  _t(
    'school_vans',
    'A school sends {classes} classes of {per_class} students on a field trip, together with {adults} '
    'adults. Each van carries {seats} people and every van is full. How many vans does the school use?',
    {'classes': (2, 6), 'per_class': (15, 30), 'adults': (2, 12), 'seats': (5, 8)},
    [
      ('students', 'classes * per_class', 'There are {classes} * {per_class} = {students} students.'),
      ('people', 'students + adults', 'With the adults, {students} + {adults} = {people} people go.'),
      ('vans', 'people / seats', 'The school uses {people} / {seats} = {vans} vans.'),
    ],
    ['classes', 'per_class', 'adults', 'seats'],
  ),
  _t(
    'bike_savings',
    'Omar wants a bike that costs ${bike}. He has saved ${saved}, and his grandmother gives him ${gift}. If '
    'he saves ${weekly} each week from now on, how many weeks will it take him to have exactly enough?',
    {'bike': (80, 400, 10), 'saved': (10, 60, 5), 'gift': (10, 50, 5), 'weekly': (5, 25, 5)},
    [
      ('has', 'saved + gift', 'Omar has {saved} + {gift} = ${has}.'),
      ('needs', 'bike - has', 'He still needs {bike} - {has} = ${needs}.'),
      ('weeks', 'needs / weekly', 'It takes {needs} / {weekly} = {weeks} weeks.'),
    ],
    ['bike', 'saved', 'gift', 'weekly'],
  ),
  _t(
    'tomato_garden',
    'Mia plants {rows} rows of tomato plants with {per_row} plants in each row. Each plant grows {per_plant} '
    'tomatoes. She gives {given} tomatoes to her neighbors. How many tomatoes does she have left?',
    {'rows': (2, 8), 'per_row': (3, 12), 'per_plant': (2, 9), 'given': (5, 60)},
    [
      ('plants', 'rows * per_row', 'Mia has {rows} * {per_row} = {plants} plants.'),
      ('tomatoes', 'plants * per_plant', 'They grow {plants} * {per_plant} = {tomatoes} tomatoes.'),
      ('left', 'tomatoes - given', 'She has {tomatoes} - {given} = {left} tomatoes left.'),
    ],
    ['rows', 'per_row', 'per_plant', 'given'],
  ),
  _t(
    'library_shelves',
    'A small library has {shelves} shelves with {per_shelf} books on each shelf. On Monday, {borrowed} books '
    'are borrowed and {returned} books are returned. How many books are on the shelves at the end of Monday?',
    {'shelves': (4, 12), 'per_shelf': (15, 40), 'borrowed': (10, 80), 'returned': (5, 50)},
    [
      ('books', 'shelves * per_shelf', 'The library has {shelves} * {per_shelf} = {books} books.'),
      ('after_loans', 'books - borrowed', 'After the loans, {books} - {borrowed} = {after_loans} remain.'),
      ('total', 'after_loans + returned', 'With the returns, {after_loans} + {returned} = {total} books.'),
    ],
    ['shelves', 'per_shelf', 'borrowed', 'returned'],
  ),
  _t(
    'reading_plan',
    'Leo is reading a book with {pages} pages. He reads {per_day} pages a day for {days} days. He then reads '
    'the rest of the book in equal parts over {more_days} more days. How many pages does he read on each of '
    'those days?',
    {'pages': (120, 480), 'per_day': (10, 30), 'days': (3, 8), 'more_days': (2, 6)},
    [
      ('read', 'per_day * days', 'First Leo reads {per_day} * {days} = {read} pages.'),
      ('rest', 'pages - read', 'That leaves {pages} - {read} = {rest} pages.'),
      ('each', 'rest / more_days', 'He reads {rest} / {more_days} = {each} pages each day.'),
    ],
    ['pages', 'per_day', 'days', 'more_days'],
  ),
  _t(
    'coast_drive',
    'A family drives {miles} miles to the coast and then the same distance back home. Their car goes {mpg} '
    'miles on one gallon of gas, and gas costs ${per_gallon} per gallon. How many dollars do they spend on '
    'gas for the whole trip?',
    {'miles': (50, 400, 10), 'mpg': (20, 40, 5), 'per_gallon': (3, 6)},
    [
      ('distance', 'miles * 2', 'The round trip is {miles} * 2 = {distance} miles.'),
      ('gallons', 'distance / mpg', 'The car uses {distance} / {mpg} = {gallons} gallons.'),
      ('cost', 'gallons * per_gallon', 'The gas costs {gallons} * {per_gallon} = ${cost}.'),
    ],
    ['miles', 'mpg', 'per_gallon'],
  ),
  _t(
    'pizza_party',
    'At a party, each of the {guests} guests eats {each} slices of pizza. Every pizza is cut into '
    '{per_pizza} slices and costs ${price}. How much do the pizzas cost in total?',
    {'guests': (6, 30), 'each': (2, 4), 'per_pizza': (6, 12, 2), 'price': (8, 16)},
    [
      ('slices', 'guests * each', 'The guests eat {guests} * {each} = {slices} slices.'),
      ('pizzas', 'slices / per_pizza', 'That is {slices} / {per_pizza} = {pizzas} pizzas.'),
      ('cost', 'pizzas * price', 'The pizzas cost {pizzas} * {price} = ${cost}.'),
    ],
    ['guests', 'each', 'per_pizza', 'price'],
  ),
  _t(
    'running_weeks',
    'Sara runs {weekday} miles on each of the 5 weekdays and {weekend} miles on each of the 2 weekend days. '
    'How many miles does she run in {weeks} weeks?',
    {'weekday': (2, 8), 'weekend': (3, 12), 'weeks': (2, 8)},
    [
      ('weekday_miles', 'weekday * 5', 'On weekdays she runs {weekday} * 5 = {weekday_miles} miles.'),
      ('weekend_miles', 'weekend * 2', 'On the weekend she runs {weekend} * 2 = {weekend_miles} miles.'),
      (
        'week',
        'weekday_miles + weekend_miles',
        'Each week is {weekday_miles} + {weekend_miles} = {week} miles.',
      ),
      ('total', 'week * weeks', 'In {weeks} weeks she runs {week} * {weeks} = {total} miles.'),
    ],
    ['weekday', 'weekend', 'weeks'],
  ),
  _t(
    'cinema_change',
    'At the cinema, an adult ticket costs ${adult} and a child ticket costs ${child}. A group buys {adults} '
    'adult tickets and {children} child tickets and pays with ${paid}. How much change do they get?',
    {'adult': (8, 16), 'child': (4, 9), 'adults': (2, 6), 'children': (2, 8), 'paid': (100, 200, 10)},
    [
      ('adult_cost', 'adults * adult', 'Adult tickets cost {adults} * {adult} = ${adult_cost}.'),
      ('child_cost', 'children * child', 'Child tickets cost {children} * {child} = ${child_cost}.'),
      ('total', 'adult_cost + child_cost', 'Together that is {adult_cost} + {child_cost} = ${total}.'),
      ('change', 'paid - total', 'The change is {paid} - {total} = ${change}.'),
    ],
    ['adult', 'child', 'adults', 'children', 'paid'],
  ),
  _t(
    'garden_fence',
    'A rectangular garden is {length} meters long and {width} meters wide. Fencing costs ${per_meter} per '
    'meter. How much does it cost to put a fence around the whole garden?',
    {'length': (8, 40), 'width': (5, 25), 'per_meter': (3, 12)},
    [
      ('half', 'length + width', 'One length and one width make {length} + {width} = {half} meters.'),
      ('perimeter', 'half * 2', 'The fence is {half} * 2 = {perimeter} meters long.'),
      ('cost', 'perimeter * per_meter', 'It costs {perimeter} * {per_meter} = ${cost}.'),
    ],
    ['length', 'width', 'per_meter'],
  ),
  _t(
    'pet_shop_tanks',
    'A pet shop has {tanks} tanks with {per_tank} fish in each tank. It sells {sold} fish, then gets a '
    'delivery of {delivered} new fish. It puts all of its fish into {big_tanks} big tanks with the same '
    'number of fish in each. How many fish are in each big tank?',
    {'tanks': (3, 8), 'per_tank': (8, 20), 'sold': (5, 30), 'delivered': (10, 40), 'big_tanks': (2, 5)},
    [
      ('fish', 'tanks * per_tank', 'The shop starts with {tanks} * {per_tank} = {fish} fish.'),
      ('after_sales', 'fish - sold', 'After the sales it has {fish} - {sold} = {after_sales} fish.'),
      ('all_fish', 'after_sales + delivered', 'The delivery makes {after_sales} + {delivered} = {all_fish}.'),
      ('each', 'all_fish / big_tanks', 'Each big tank gets {all_fish} / {big_tanks} = {each} fish.'),
    ],
    ['tanks', 'per_tank', 'sold', 'delivered', 'big_tanks'],
  ),
  _t(
    'cafe_wages',
    'Ava works {hours} hours a week at a cafe and is paid ${rate} an hour. She also gets ${tips} in tips '
    'every week. How much does she earn in {weeks} weeks?',
    {'hours': (5, 20), 'rate': (8, 15), 'tips': (10, 50), 'weeks': (2, 4)},
    [
      ('pay', 'hours * rate', 'Her weekly pay is {hours} * {rate} = ${pay}.'),
      ('weekly', 'pay + tips', 'With tips she earns {pay} + {tips} = ${weekly} a week.'),
      ('total', 'weekly * weeks', 'In {weeks} weeks she earns {weekly} * {weeks} = ${total}.'),
    ],
    ['hours', 'rate', 'tips', 'weeks'],
  ),
  _t(
    'lemonade_profit',
    'Ben sells lemonade for ${price} a cup. One pitcher fills {cups} cups, and the lemons and sugar for one '
    'pitcher cost ${cost}. He makes {pitchers} pitchers and sells every cup. What is his profit in dollars?',
    {'price': (1, 3), 'cups': (6, 14), 'cost': (3, 8), 'pitchers': (2, 9)},
    [
      ('cups_sold', 'pitchers * cups', 'Ben sells {pitchers} * {cups} = {cups_sold} cups.'),
      ('revenue', 'cups_sold * price', 'He takes in {cups_sold} * {price} = ${revenue}.'),
      ('spent', 'pitchers * cost', 'The ingredients cost {pitchers} * {cost} = ${spent}.'),
      ('profit', 'revenue - spent', 'His profit is {revenue} - {spent} = ${profit}.'),
    ],
    ['cups', 'cost', 'pitchers'],
  ),
  _t(
    'orchard_crates',
    'An orchard has {trees} apple trees, and each tree gives {per_tree} apples. The apples are packed into '
    'crates of {per_crate}, and each crate sells for ${price}. How much money do the crates bring in?',
    {'trees': (4, 20), 'per_tree': (20, 60, 5), 'per_crate': (10, 25, 5), 'price': (6, 15)},
    [
      ('apples', 'trees * per_tree', 'There are {trees} * {per_tree} = {apples} apples.'),
      ('crates', 'apples / per_crate', 'They fill {apples} / {per_crate} = {crates} crates.'),
      ('money', 'crates * price', 'The crates bring in {crates} * {price} = ${money}.'),
    ],
    ['trees', 'per_tree', 'per_crate', 'price'],
  ),
  _t(
    'cookie_flour',
    'A cookie recipe uses {flour} grams of flour for a batch of {batch} cookies. Ella wants to bake '
    '{cookies} cookies for a school sale and has {have} grams of flour at home. How many more grams of '
    'flour does she need?',
    {'flour': (150, 400, 25), 'batch': (12, 24, 6), 'cookies': (36, 144, 6), 'have': (100, 500, 50)},
    [
      ('batches', 'cookies / batch', 'Ella needs {cookies} / {batch} = {batches} batches.'),
      ('needed', 'batches * flour', 'They use {batches} * {flour} = {needed} grams of flour.'),
      ('more', 'needed - have', 'She needs {needed} - {have} = {more} more grams.'),
    ],
    ['flour', 'batch', 'cookies', 'have'],
  ),
  _t(
    'phone_bill',
    'A phone plan costs ${base} a month and includes {free} gigabytes of data. Each extra gigabyte costs '
    '${per_gb}. Kim uses {used} gigabytes this month. How much is her bill?',
    {'base': (15, 45), 'free': (2, 10), 'per_gb': (2, 9), 'used': (5, 25)},
    [
      ('extra_gb', 'used - free', 'Kim uses {used} - {free} = {extra_gb} extra gigabytes.'),
      ('extra_cost', 'extra_gb * per_gb', 'They cost {extra_gb} * {per_gb} = ${extra_cost}.'),
      ('bill', 'base + extra_cost', 'Her bill is {base} + {extra_cost} = ${bill}.'),
    ],
    ['base', 'free', 'per_gb', 'used'],
  ),
  _t(
    'train_trip',
    'A train travels at {speed} kilometers per hour for {hours} hours. After a stop, it travels {extra} more '
    'kilometers to reach the city. It then returns by the same route. How many kilometers does it travel in '
    'all?',
    {'speed': (40, 120, 10), 'hours': (2, 5), 'extra': (15, 90)},
    [
      ('first', 'speed * hours', 'Before the stop it goes {speed} * {hours} = {first} km.'),
      ('one_way', 'first + extra', 'One way is {first} + {extra} = {one_way} km.'),
      ('total', 'one_way * 2', 'There and back is {one_way} * 2 = {total} km.'),
    ],
    ['speed', 'hours', 'extra'],
  ),
  _t(
    'classroom_pencils',
    'A teacher buys {packs} packs of pencils with {per_pack} pencils in each pack. She gives {each} pencils '
    'to each of her {students} students. How many pencils does she have left?',
    {'packs': (3, 12), 'per_pack': (10, 24), 'each': (2, 5), 'students': (15, 32)},
    [
      ('pencils', 'packs * per_pack', 'She buys {packs} * {per_pack} = {pencils} pencils.'),
      ('given', 'students * each', 'She gives away {students} * {each} = {given} pencils.'),
      ('left', 'pencils - given', 'She has {pencils} - {given} = {left} pencils left.'),
    ],
    ['packs', 'per_pack', 'each', 'students'],
  ),
  _t(
    'stamp_album',
    'Ivy has {stamps} stamps. Her uncle gives her {gift} more, and she buys {sheets} sheets with {per_sheet} '
    'stamps on each sheet. She puts all her stamps in an album that holds {per_page} stamps on a page. How '
    'many pages does she fill?',
    {'stamps': (20, 90), 'gift': (5, 30), 'sheets': (2, 6), 'per_sheet': (6, 20), 'per_page': (4, 10)},
    [
      ('after_gift', 'stamps + gift', 'After the gift she has {stamps} + {gift} = {after_gift} stamps.'),
      ('bought', 'sheets * per_sheet', 'She buys {sheets} * {per_sheet} = {bought} stamps.'),
      ('total', 'after_gift + bought', 'In all she has {after_gift} + {bought} = {total} stamps.'),
      ('pages', 'total / per_page', 'She fills {total} / {per_page} = {pages} pages.'),
    ],
    ['stamps', 'gift', 'sheets', 'per_sheet', 'per_page'],
  ),
  _t(
    'bake_sale',
    'A class bakes {cupcakes} cupcakes for a bake sale. They sell all but {left} of them for ${price} each. '
    'Parents also donate ${donations}. How much money does the class raise?',
    {'cupcakes': (30, 120), 'left': (2, 15), 'price': (2, 4), 'donations': (10, 80, 5)},
    [
      ('sold', 'cupcakes - left', 'The class sells {cupcakes} - {left} = {sold} cupcakes.'),
      ('sales', 'sold * price', 'The sales bring {sold} * {price} = ${sales}.'),
      ('raised', 'sales + donations', 'With donations they raise {sales} + {donations} = ${raised}.'),
    ],
    ['cupcakes', 'left', 'donations'],
  ),
  _t(
    'basketball_points',
    'In a basketball game, Maya makes {twos} two-point shots, {threes} three-point shots and {free} free '
    'throws worth one point each. Her teammate scores {more} points more than Maya. How many points does her '
    'teammate score?',
    {'twos': (2, 12), 'threes': (1, 6), 'free': (1, 8), 'more': (2, 15)},
    [
      ('two_points', 'twos * 2', 'Two-point shots give {twos} * 2 = {two_points} points.'),
      ('three_points', 'threes * 3', 'Three-point shots give {threes} * 3 = {three_points} points.'),
      (
        'maya',
        'two_points + three_points + free',
        'Maya scores {two_points} + {three_points} + {free} = {maya}.',
      ),
      ('teammate', 'maya + more', 'Her teammate scores {maya} + {more} = {teammate} points.'),
    ],
    ['twos', 'threes', 'free', 'more'],
  ),
  _t(
    'leaky_tank',
    'A water tank holds {capacity} liters and already has {start} liters in it. A hose adds {rate} liters '
    'every minute, but a leak loses {leak} liters every minute. How many minutes does it take to fill the '
    'tank?',
    {'capacity': (200, 600, 10), 'start': (20, 150, 10), 'rate': (8, 20), 'leak': (1, 5)},
    [
      ('net', 'rate - leak', 'The tank gains {rate} - {leak} = {net} liters a minute.'),
      ('missing', 'capacity - start', 'It needs {capacity} - {start} = {missing} more liters.'),
      ('minutes', 'missing / net', 'Filling takes {missing} / {net} = {minutes} minutes.'),
    ],
    ['capacity', 'start', 'rate', 'leak'],
  ),
  _t(
    'concert_tickets',
    'A concert hall has {rows} rows with {per_row} seats in each row, and every ticket costs ${price}. On '
    'Friday night, {empty} seats stay empty. How much money do the tickets bring in on Friday?',
    {'rows': (5, 15), 'per_row': (8, 20), 'price': (5, 15), 'empty': (4, 40)},
    [
      ('seats', 'rows * per_row', 'The hall has {rows} * {per_row} = {seats} seats.'),
      ('sold', 'seats - empty', 'On Friday {seats} - {empty} = {sold} tickets are sold.'),
      ('money', 'sold * price', 'They bring in {sold} * {price} = ${money}.'),
    ],
    ['rows', 'per_row', 'price', 'empty'],
  ),
  _t(
    'honey_jars',
    'A beekeeper has {hives} hives, and each hive makes {per_hive} kilograms of honey this year. She keeps '
    '{kept} kilograms for herself and sells the rest for ${price} per kilogram. How much does she earn?',
    {'hives': (2, 10), 'per_hive': (5, 20), 'kept': (5, 30), 'price': (4, 12)},
    [
      ('honey', 'hives * per_hive', 'The hives make {hives} * {per_hive} = {honey} kg of honey.'),
      ('sold', 'honey - kept', 'She sells {honey} - {kept} = {sold} kg.'),
      ('earned', 'sold * price', 'She earns {sold} * {price} = ${earned}.'),
    ],
    ['hives', 'per_hive', 'kept', 'price'],
  ),
  _t(
    'knitted_scarves',
    'Rosa knits scarves to sell. Each scarf takes {yarn} meters of yarn, and one ball of yarn has {per_ball} '
    'meters. She buys {balls} balls and uses all of the yarn. She sells every scarf for ${price}. How much '
    'money does she make?',
    {'yarn': (25, 100, 25), 'per_ball': (50, 200, 50), 'balls': (2, 12), 'price': (12, 30)},
    [
      ('meters', 'balls * per_ball', 'Rosa has {balls} * {per_ball} = {meters} meters of yarn.'),
      ('scarves', 'meters / yarn', 'She knits {meters} / {yarn} = {scarves} scarves.'),
      ('money', 'scarves * price', 'She makes {scarves} * {price} = ${money}.'),
    ],
    ['yarn', 'per_ball', 'balls', 'price'],
  ),
  _t(
    'game_points',
    'In a video game, each coin is worth {coin} points and each star is worth {star} points. Liam collects '
    '{coins} coins and {stars} stars, but he loses {lost} points when he falls into a pit. How many points '
    'does he end with?',
    {'coin': (2, 10), 'star': (20, 50, 5), 'coins': (10, 60), 'stars': (2, 9), 'lost': (10, 100, 5)},
    [
      ('coin_points', 'coins * coin', 'Coins give {coins} * {coin} = {coin_points} points.'),
      ('star_points', 'stars * star', 'Stars give {stars} * {star} = {star_points} points.'),
      ('total', 'coin_points + star_points', 'Together that is {coin_points} + {star_points} = {total}.'),
      ('final', 'total - lost', 'He ends with {total} - {lost} = {final} points.'),
    ],
    ['coin', 'star', 'coins', 'stars', 'lost'],
  ),
  _t(
    'commute_minutes',
    'Hana walks {walk} minutes to the bus stop, rides the bus for {bus} minutes and then walks {walk_end} '
    'minutes to her office. She makes the same trip back every evening. How many minutes does she spend '
    'commuting in {days} work days?',
    {'walk': (3, 15), 'bus': (10, 45), 'walk_end': (2, 12), 'days': (3, 10)},
    [
      ('one_way', 'walk + bus + walk_end', 'One way takes {walk} + {bus} + {walk_end} = {one_way} minutes.'),
      ('daily', 'one_way * 2', 'Each day she commutes {one_way} * 2 = {daily} minutes.'),
      ('total', 'daily * days', 'In {days} days that is {daily} * {days} = {total} minutes.'),
    ],
    ['walk', 'bus', 'walk_end', 'days'],
  ),
  _t(
    'book_sale',
    'A bookstore sells a novel for ${price}. During a sale, the price is cut by {percent}%. Jack buys '
    '{count} novels at the sale price. How much does he pay?',
    {'price': (20, 100, 20), 'percent': (10, 50, 5), 'count': (2, 8)},
    [
      ('discount', 'price * percent / 100', 'The discount is {price} * {percent} / 100 = ${discount}.'),
      ('sale_price', 'price - discount', 'A novel now costs {price} - {discount} = ${sale_price}.'),
      ('paid', 'sale_price * count', 'Jack pays {sale_price} * {count} = ${paid}.'),
    ],
    ['price', 'count'],
  ),
  _t(
    'farm_legs',
    'A farm has {chickens} chickens and {cows} cows. The farmer buys {new_cows} more cows. How many legs do '
    'all the chickens and cows have together?',
    {'chickens': (5, 40), 'cows': (3, 20), 'new_cows': (2, 10)},
    [
      ('chicken_legs', 'chickens * 2', 'The chickens have {chickens} * 2 = {chicken_legs} legs.'),
      ('all_cows', 'cows + new_cows', 'Now there are {cows} + {new_cows} = {all_cows} cows.'),
      ('cow_legs', 'all_cows * 4', 'The cows have {all_cows} * 4 = {cow_legs} legs.'),
      ('legs', 'chicken_legs + cow_legs', 'In all there are {chicken_legs} + {cow_legs} = {legs} legs.'),
    ],
    ['chickens', 'cows', 'new_cows'],
  ),
  _t(
    'shared_rent',
    'The monthly rent of an apartment is ${rent} and the utilities cost ${utilities} a month. The '
    '{roommates} roommates split the total equally. How much does each roommate pay over {months} months?',
    {'rent': (600, 1800, 50), 'utilities': (60, 240, 20), 'roommates': (2, 5), 'months': (2, 12)},
    [
      ('monthly', 'rent + utilities', 'Each month costs {rent} + {utilities} = ${monthly}.'),
      ('share', 'monthly / roommates', 'Each roommate pays {monthly} / {roommates} = ${share} a month.'),
      ('total', 'share * months', 'Over {months} months that is {share} * {months} = ${total}.'),
    ],
    ['rent', 'utilities', 'roommates', 'months'],
  ),
  _t(
    'room_paint',
    'Tom is painting {rooms} rooms. Each room has 4 walls, and each wall is {area} square meters. One can of '
    'paint covers {per_can} square meters. How many cans of paint does he need?',
    {'rooms': (2, 6), 'area': (6, 20), 'per_can': (8, 24, 4)},
    [
      ('room_area', 'area * 4', 'Each room has {area} * 4 = {room_area} square meters of wall.'),
      (
        'total_area',
        'room_area * rooms',
        'All rooms have {room_area} * {rooms} = {total_area} square meters.',
      ),
      ('cans', 'total_area / per_can', 'He needs {total_area} / {per_can} = {cans} cans.'),
    ],
    ['rooms', 'area', 'per_can'],
  ),
  _t(
    'bike_rental',
    'Renting a bike costs ${fee} plus ${per_hour} for each hour. A group of {riders} friends each rent a '
    'bike for {hours} hours. How much do they pay altogether?',
    {'fee': (3, 15), 'per_hour': (4, 12), 'riders': (2, 8), 'hours': (2, 6)},
    [
      ('hourly', 'per_hour * hours', 'The hours cost {per_hour} * {hours} = ${hourly} per bike.'),
      ('per_bike', 'fee + hourly', 'Each bike costs {fee} + {hourly} = ${per_bike}.'),
      ('total', 'per_bike * riders', 'The group pays {per_bike} * {riders} = ${total}.'),
    ],
    ['fee', 'per_hour', 'riders', 'hours'],
  ),
  _t(
    'candy_jar',
    'A jar holds {red} red candies and {blue} blue candies. Zoe eats {eaten} candies and shares the rest '
    'equally among {friends} friends. How many candies does each friend get?',
    {'red': (10, 60), 'blue': (10, 60), 'eaten': (2, 12), 'friends': (2, 8)},
    [
      ('candies', 'red + blue', 'The jar has {red} + {blue} = {candies} candies.'),
      ('rest', 'candies - eaten', 'After Zoe eats some, {candies} - {eaten} = {rest} are left.'),
      ('each', 'rest / friends', 'Each friend gets {rest} / {friends} = {each} candies.'),
    ],
    ['red', 'blue', 'eaten', 'friends'],
  ),
  _t(
    'homework_time',
    'Eli has {problems} math problems and {pages} pages of reading for homework. Each problem takes him '
    '{per_problem} minutes and each page takes {per_page} minutes. After homework he practices piano for '
    '{piano} minutes. How many minutes does he spend on homework and piano?',
    {'problems': (5, 25), 'pages': (4, 20), 'per_problem': (2, 6), 'per_page': (2, 5), 'piano': (15, 45)},
    [
      ('math_time', 'problems * per_problem', 'Math takes {problems} * {per_problem} = {math_time} minutes.'),
      ('read_time', 'pages * per_page', 'Reading takes {pages} * {per_page} = {read_time} minutes.'),
      ('homework', 'math_time + read_time', 'Homework takes {math_time} + {read_time} = {homework} minutes.'),
      ('total', 'homework + piano', 'With piano that is {homework} + {piano} = {total} minutes.'),
    ],
    ['problems', 'pages', 'per_problem', 'per_page', 'piano'],
  ),
  _t(
    'team_shirts',
    'A soccer league has {teams} teams with {players} players on each team. Every player gets {shirts} '
    'shirts, and each shirt costs ${price}. How much do all the shirts cost?',
    {'teams': (2, 6), 'players': (8, 12), 'shirts': (2, 3), 'price': (4, 10)},
    [
      ('all_players', 'teams * players', 'The league has {teams} * {players} = {all_players} players.'),
      ('all_shirts', 'all_players * shirts', 'They get {all_players} * {shirts} = {all_shirts} shirts.'),
      ('cost', 'all_shirts * price', 'The shirts cost {all_shirts} * {price} = ${cost}.'),
    ],
    ['teams', 'players', 'shirts', 'price'],
  ),
  _t(
    'allowance_goal',
    'Nina gets ${allowance} of allowance each week and spends ${snacks} of it on snacks. She saves the rest. '
    'She already has ${start} and wants to buy a game that costs ${game}. How many weeks must she save to '
    'have exactly enough?',
    {'allowance': (8, 20), 'snacks': (1, 6), 'start': (5, 40), 'game': (40, 120)},
    [
      ('saved', 'allowance - snacks', 'Each week she saves {allowance} - {snacks} = ${saved}.'),
      ('needs', 'game - start', 'She still needs {game} - {start} = ${needs}.'),
      ('weeks', 'needs / saved', 'It takes {needs} / {saved} = {weeks} weeks.'),
    ],
    ['allowance', 'snacks', 'start', 'game'],
  ),
  _t(
    'seed_packets',
    'A gardener buys {packets} packets of flower seeds with {per_packet} seeds in each packet. Only {sprout} '
    'out of every 10 seeds sprout. She plants the sprouts in pots of {per_pot}. How many pots does she fill?',
    {'packets': (2, 8), 'per_packet': (20, 60, 10), 'sprout': (6, 9), 'per_pot': (2, 6)},
    [
      ('seeds', 'packets * per_packet', 'She has {packets} * {per_packet} = {seeds} seeds.'),
      ('sprouts', 'seeds * sprout / 10', 'Sprouting seeds: {seeds} * {sprout} / 10 = {sprouts}.'),
      ('pots', 'sprouts / per_pot', 'She fills {sprouts} / {per_pot} = {pots} pots.'),
    ],
    ['packets', 'per_packet', 'per_pot'],
  ),
  _t(
    'movie_marathon',
    'Kai watches {movies} movies that are each {length} minutes long, with a {break_len}-minute break after '
    'each movie. How many minutes does his movie marathon take, breaks included?',
    {'movies': (2, 5), 'length': (85, 140, 5), 'break_len': (5, 20, 5)},
    [
      (
        'block',
        'length + break_len',
        'Each movie with its break takes {length} + {break_len} = {block} minutes.',
      ),
      ('total', 'block * movies', 'All {movies} take {block} * {movies} = {total} minutes.'),
    ],
    ['movies', 'length', 'break_len'],
  ),
)

TEMPLATES: Dict[str, Template] = {}
for _template in _BANK:
  if _template.name in TEMPLATES:
    raise TemplateError(f"template name '{_template.name}' is used twice; give each template its own name")
  TEMPLATES[_template.name] = _template
del _template


def get(name: str) -> Template:
  """The template called ``name``; `TemplateError` listing the choices otherwise."""
  if name not in TEMPLATES:
    raise TemplateError(f'unknown template {name!r}; choose one of {", ".join(TEMPLATES)}')
  return TEMPLATES[name]
