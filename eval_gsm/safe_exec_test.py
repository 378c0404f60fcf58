"""Tests for eval_gsm.safe_exec: the whitelist, the limits, and that the parent never hangs."""

import sys

import pytest

from eval_gsm import safe_exec
from eval_gsm.safe_exec import (
  ProgramError,
  ProgramTimeout,
  UnsafeProgramError,
  check_program,
  run_program,
  run_programs,
)

SINGLE = '''
def solution():
  """Apples in 3 boxes of 12, minus 5 eaten."""
  boxes = 3
  per_box = 12
  total = boxes * per_box
  total -= 5
  return total
'''

COMPOSITIONAL = """
def solve_q1():
  cookies = 4 * 6
  return cookies // 3


def solution(x=None):
  x = solve_q1()
  price = 2.5
  return x * price + 1
"""

RICH = """
def helper(n: int) -> int:
  return n * (n + 1) // 2


def solution() -> float:
  prices = [3, 4.5, 2]
  counts = [2, 1, 4]
  prices[2] = 2.5
  total = 0
  for i in range(len(prices)):
    total += prices[i] * counts[i]
  evens = sum([k for k in range(10) if k % 2 == 0])
  a, b = divmod(17, 5)
  n = 0
  while n < 3:
    n += 1
    if n == 2:
      continue
  print(total, n)
  best = max(prices) if total > 10 else min(prices)
  return total + evens + a + b + helper(4) + abs(-1) + round(best, 1) + pow(2, 3) + int(2.7) + float(1)
"""


def test_single_program():
  assert run_program(SINGLE) == {'solution': 31}


def test_compositional_shape():
  assert run_program(COMPOSITIONAL, ('solve_q1', 'solution')) == {'solve_q1': 8, 'solution': 21.0}


def test_whitelisted_features_run():
  # total 6 + 4.5 + 10 = 20.5; evens 20; divmod 3, 2; helper 10; abs 1; round 4.5; pow 8; int 2; float 1.
  assert run_program(RICH) == {'solution': 20.5 + 20 + 3 + 2 + 10 + 1 + 4.5 + 8 + 2 + 1.0}


def test_check_program_passes_good_code():
  for source in (SINGLE, COMPOSITIONAL, RICH):
    assert check_program(source) is None


@pytest.mark.parametrize(
  'source, words',
  [
    ('import os\ndef solution():\n  return 1', 'import'),
    ('def solution():\n  import os\n  return 1', 'import'),
    ('def solution():\n  from os import system\n  return 1', 'import'),
    ("def solution():\n  return __import__('os')", "'__import__'"),
    ("def solution():\n  x = 'os'\n  return 1", 'str literal'),
    ('def solution():\n  return __import__', 'dunder'),
    ('def solution():\n  os.system(1)\n  return 1', 'attribute'),
    ('def solution():\n  return ().__class__', 'attribute'),
    ('def solution():\n  x = [1]\n  x.append(2)\n  return 1', 'attribute'),
    ('def solution():\n  return open(1)', "'open'"),
    ('def solution():\n  return eval(1)', "'eval'"),
    ('def solution():\n  return exec(1)', "'exec'"),
    ('def solution():\n  f = eval\n  return 1', "'eval'"),
    ('def solution():\n  return getattr(1, 2)', "'getattr'"),
    ('def solution():\n  return (lambda: 1)()', 'call'),
    ('def solution():\n  f = lambda: 1\n  return 1', 'lambda'),
    ('def solution():\n  global x\n  return 1', 'global'),
    ('def solution():\n  with x:\n    pass\n  return 1', 'with'),
    ('def solution():\n  try:\n    pass\n  except:\n    pass\n  return 1', 'try'),
    ('class A:\n  pass\ndef solution():\n  return 1', 'class'),
    ('def solution():\n  yield 1', 'yield'),
    ('@dec\ndef solution():\n  return 1', 'decorator'),
    ('def solution(x=print()):\n  return 1', 'default'),
    ('def solution():\n  x = "abc"\n  return 1', 'str literal'),
    ("def solution():\n  return f'{1}'", 'f-string'),
    ('def solution():\n  x = [1, 2]\n  return x[0:1]', 'slicing'),
    ('def solution():\n  def inner():\n    return 1\n  return inner()', 'nested'),
    ('x = 1\ndef solution():\n  return x', 'top-level'),
    ('def solution():\n  return y', 'never assigned'),
    ('def solution():\n  return [x for x in range(3)] + [x]', 'never assigned'),
    ('def solution():\n  for c in solution():\n    pass\n  return 1', 'looping'),
    ('def solution():\n  return 1 << 4', 'LShift'),
    ('def solution():\n  __x = 1\n  return 1', 'dunder'),
    ('def solution(*a):\n  return 1', '*args'),
    ('def solution():\n  return {1: 2}', 'dict'),
    ('def solution():\n  del x\n  return 1', 'del'),
    ('def solution() -> str:\n  return 1', 'annotation'),
    ('def solution():\n  solve()\n  return 1', "'solve'"),
    ('def helper():\n  return 1\ndef solution():\n  helper()\n  return 1', 'expression statement'),
  ],
)
def test_rejects(source, words):
  with pytest.raises(UnsafeProgramError) as e:
    check_program(source)
  message = str(e.value)
  assert words in message and '\n' not in message and 'line' in message


def test_run_program_checks_before_running_and_errors_are_program_errors():
  with pytest.raises(UnsafeProgramError):
    run_program('import os\ndef solution():\n  return 1')
  assert issubclass(UnsafeProgramError, ProgramError) and issubclass(ProgramTimeout, ProgramError)


@pytest.mark.parametrize(
  'source, entries, words',
  [
    ('def solution(:\n  return 1', ('solution',), 'syntax error'),
    ('', ('solution',), 'empty'),
    ('def other():\n  return 1', ('solution',), 'no solution()'),
    ('def solution():\n  return 1', ('solve_q1', 'solution'), 'no solve_q1()'),
    ('def solution(n):\n  return n', ('solution',), 'without arguments'),
    ('def solution():\n  return 1 / 0', ('solution',), 'ZeroDivisionError'),
    ('def solution():\n  return [1, 2]', ('solution',), 'returned list'),
    ('def solution():\n  return None', ('solution',), 'returned NoneType'),
    ('def solution():\n  return 1 > 0', ('solution',), 'returned bool'),
    ('def solution():\n  x = [1]\n  return x[5]', ('solution',), 'IndexError'),
  ],
)
def test_program_errors_are_one_line(source, entries, words):
  with pytest.raises(ProgramError) as e:
    run_program(source, entries)
  assert words in str(e.value) and '\n' not in str(e.value) and 'Traceback' not in str(e.value)


def test_infinite_loop_times_out():
  with pytest.raises(ProgramTimeout, match='0.5 s'):
    run_program('def solution():\n  while True:\n    pass', timeout_s=0.5)


def test_huge_powers_are_refused_at_run_time():
  for source in (
    'def solution():\n  return 2 ** 10 ** 10',
    'def solution():\n  return pow(10, 10 ** 8)',
    'def solution():\n  x = 7\n  x **= 100000\n  return 1',
  ):
    with pytest.raises(ProgramError, match='bits'):
      run_program(source)
  assert run_program('def solution():\n  return pow(3, 10 ** 9, 7)') == {'solution': pow(3, 10**9, 7)}


def test_repeated_squaring_is_capped():
  source = 'def solution():\n  x = 3\n  for i in range(40):\n    x = x * x\n  return 1'
  with pytest.raises(ProgramError, match='bits'):
    run_program(source)


def test_deep_recursion():
  with pytest.raises(ProgramError, match='recursion'):
    run_program('def f(n):\n  return f(n + 1)\n\ndef solution():\n  return f(0)')


def test_memory_bombs():
  with pytest.raises(ProgramError, match='limit'):  # Refused by the list-length bound before allocating.
    run_program('def solution():\n  return len([0] * 10 ** 10)')
  with pytest.raises(ProgramError, match='limit'):
    run_program('def solution():\n  x = 10 ** 10 * [0]\n  return 1')
  if sys.platform != 'linux':
    return  # RLIMIT_AS is only enforced on Linux.
  # Each list is under the length bound; together they pass the address-space limit.
  bomb = 'def solution():\n  x = [[k] * 10 ** 6 for k in range(200)]\n  return len(x)'
  with pytest.raises(ProgramError, match='memory'):
    run_program(bomb, memory_mb=128)


def test_huge_return_is_refused():
  source = 'def solution():\n  x = 2 ** 4000\n  return x * x * x'
  with pytest.raises(ProgramError, match='bits'):
    run_program(source)


def test_run_programs_keeps_order_and_reports_errors():
  sources = [
    'def solution():\n  return 1',
    None,
    'def solution():\n  while True:\n    pass',
    'import os\ndef solution():\n  return 1',
    'def solution():\n  return 2.5',
    'def solution():\n  return 1 // 0',
  ]
  out = run_programs(sources, workers=2, timeout_s=0.5)
  assert out[0] == {'solution': 1} and out[4] == {'solution': 2.5}
  assert out[1].startswith('ProgramError: no program')
  assert out[2].startswith('ProgramTimeout:')
  assert out[3].startswith('UnsafeProgramError:')
  assert out[5].startswith('ProgramError:') and 'ZeroDivisionError' in out[5]


@pytest.mark.parametrize('workers', [1, 3])
def test_run_programs_keeps_workers_children_alive_at_once(monkeypatch, workers):
  # Counts live children instead of timing them: a timed assertion fails on a loaded CI machine.
  live, peak = [0], [0]
  spawn, kill, finish = safe_exec._spawn, safe_exec._kill, safe_exec._finish

  def counting_spawn(*args):
    live[0] += 1
    peak[0] = max(peak[0], live[0])
    return spawn(*args)

  def counting_kill(job):
    live[0] -= 1
    return kill(job)

  def counting_finish(job, timeout_s):
    live[0] -= 1
    return finish(job, timeout_s)

  monkeypatch.setattr(safe_exec, '_spawn', counting_spawn)
  monkeypatch.setattr(safe_exec, '_kill', counting_kill)
  monkeypatch.setattr(safe_exec, '_finish', counting_finish)
  looping = 'def solution():\n  while True:\n    pass'
  # 1 s, not less: on a loaded machine forking the test process alone took over 0.3 s, and the quick program
  # then timed out.
  out = run_programs([looping] * 4 + ['def solution():\n  return 1'], workers=workers, timeout_s=1.0)
  assert all(o.startswith('ProgramTimeout') for o in out[:4]) and out[4] == {'solution': 1}
  assert peak[0] == workers and live[0] == 0


def test_many_small_programs():
  sources = [f'def solution():\n  return {i} * 2' for i in range(30)]
  assert run_programs(sources, workers=3) == [{'solution': 2 * i} for i in range(30)]


def test_bad_arguments():
  with pytest.raises(ValueError, match='workers'):
    run_programs(['def solution():\n  return 1'], workers=0)


def test_source_length_limit():
  source = 'def solution():\n  return 1' + ' + 1' * safe_exec.MAX_SOURCE_CHARS
  with pytest.raises(ProgramError, match='characters'):
    check_program(source)
