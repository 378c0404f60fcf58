"""Run model-written program-of-thought code safely: an AST whitelist, then a forked, resource-limited child.

In the paper's code mode (Hosseini et al., arXiv 2410.01748, Section 4) the model answers with a Python
program: `solution()` for a single question, plus `solve_q1()` that `solution()` calls for a compositional
item. Grading runs that program, so it must not be able to touch the host. Two layers:

1. ``check_program`` parses the source and refuses anything outside a small arithmetic language:
   - the module holds only function definitions (and a docstring); no decorators, nested functions,
     ``*args``/``**kwargs``; defaults only numeric literals; annotations only ``int``/``float``/``bool``;
   - statements: assignment (to names, tuples of names, or ``xs[i]``), augmented assignment, return,
     if/elif/else, for, while, break, continue, pass, and ``print(...)`` (a no-op: models add debug prints);
   - expressions: numbers, True/False/None, arithmetic (``<<`` and ``@`` excluded), comparisons, and/or/not,
     ``a if c else b``, list and tuple literals, list comprehensions and generator expressions;
   - ``for`` (and comprehensions) iterate over ``range(...)``, a name, or a list/tuple literal;
   - **lists**: literals, indexing ``xs[i]`` (also ``xs[i][j]``) to read and to assign, iteration, and the
     builtins ``len``/``sum``/``min``/``max``. No slices, no methods (``xs.append`` is attribute access);
   - calls only to functions defined in the program and to the builtins in ``SAFE_BUILTINS``;
   - never: imports, attribute access, strings (besides docstrings), f-strings, lambda, global/nonlocal,
     dunder names, names of other builtins (``open``, ``eval``, ``exec``, ``__import__``, ...),
     with/try/raise/class/yield/await/del/assert.
   Names are resolved by scope: a name must be a parameter or assigned in its function, a comprehension
   target inside its comprehension, a function of the program, or a safe builtin.
2. ``run_program`` executes the checked code in a child made with ``os.fork`` whose address space
   (the parent's current size + ``memory_mb``) and CPU time are capped with ``resource.setrlimit``; the
   parent kills it at a wall-clock deadline. ``*`` and ``**`` (and ``pow``) are rewritten into calls that
   refuse integers above ``MAX_INT_BITS`` bits and lists above ``MAX_LIST_LEN`` items, so ``2 ** 10 ** 10``
   and ``[0] * 10 ** 10`` fail at once with a clear message instead of exhausting memory. Results come back
   as JSON (never pickle) over a pipe, capped at ``MAX_RESULT_BYTES``; each entry's value must be an int or
   a float (bool is refused).

The child runs only pure Python (no imports, no locks, no I/O except one pipe write), so forking a
multi-threaded parent (HTTP backends, JAX) is safe here; the wall-clock kill covers anything else.
Call ``run_programs`` from one thread at a time (a concurrently forked child could hold another job's pipe
open, delaying that job to its deadline).
"""

import ast
import builtins
import copy
import dataclasses
import json
import math
import os
import resource
import selectors
import signal
import time
import warnings
from typing import Dict, FrozenSet, List, Optional, Sequence, Set, Union

MAX_SOURCE_CHARS = 20_000
MAX_INT_BITS = 4096
MAX_LIST_LEN = 1_000_000
MAX_RESULT_BYTES = 1 << 20
MAX_MESSAGE_CHARS = 200

SAFE_BUILTINS = ('abs', 'min', 'max', 'round', 'int', 'float', 'range', 'sum', 'len', 'divmod', 'pow')
_ANNOTATIONS = ('int', 'float', 'bool')
_MUL, _POW = '__safe_mul', '__safe_pow'

Value = Union[int, float]


class ProgramError(RuntimeError):
  """A program could not be run or failed; the message is one line (no traceback)."""


class UnsafeProgramError(ProgramError):
  """The program uses something outside the whitelist; the message names it and its line."""


class ProgramTimeout(ProgramError):
  """The program ran past its wall-clock or CPU-time limit."""


# ----------------------------------------------------------------------------------------------------------
# The whitelist check.
# ----------------------------------------------------------------------------------------------------------

_BIN_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
_BIN_OPS += (ast.BitAnd, ast.BitOr, ast.BitXor, ast.RShift)
_UNARY_OPS = (ast.UAdd, ast.USub, ast.Not, ast.Invert)
_CMP_OPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot)
_BUILTIN_NAMES = frozenset(dir(builtins))
_NODE_WORDS = {
  ast.Import: 'import',
  ast.ImportFrom: 'import',
  ast.Attribute: 'attribute access (x.y)',
  ast.Lambda: 'lambda',
  ast.Global: 'global',
  ast.Nonlocal: 'nonlocal',
  ast.With: 'with',
  ast.Try: 'try',
  ast.ClassDef: 'class',
  ast.Yield: 'yield',
  ast.YieldFrom: 'yield',
  ast.Await: 'await',
  ast.AsyncFunctionDef: 'async def',
  ast.JoinedStr: 'f-string',
  ast.Slice: 'slicing (xs[a:b])',
  ast.Starred: 'star unpacking (*xs)',
  ast.Dict: 'dict literal',
  ast.Set: 'set literal',
  ast.DictComp: 'dict comprehension',
  ast.SetComp: 'set comprehension',
  ast.Delete: 'del',
  ast.Raise: 'raise',
  ast.Assert: 'assert',
  ast.NamedExpr: 'walrus (:=)',
}


def _where(node: ast.AST) -> str:
  line = getattr(node, 'lineno', None)
  return f' (line {line})' if line else ''


def _refuse(node: ast.AST, what: str) -> UnsafeProgramError:
  return UnsafeProgramError(
    f'{what} is not allowed{_where(node)}; code answers may only use arithmetic, if/for/while, '
    f'lists and the builtins {", ".join(SAFE_BUILTINS)}'
  )


def _is_docstring(stmt: ast.stmt) -> bool:
  return (
    isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)
  )


def _is_print(stmt: ast.stmt) -> bool:
  """`print(...)` as a statement: allowed and a no-op (its arguments are still checked)."""
  call = stmt.value if isinstance(stmt, ast.Expr) else None
  return isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == 'print'


def _is_number_literal(node: Optional[ast.expr]) -> bool:
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
    node = node.operand
  return isinstance(node, ast.Constant) and type(node.value) in (int, float, bool, type(None))


def _bound_names(target: ast.expr) -> Set[str]:
  if isinstance(target, ast.Name):
    return {target.id}
  if isinstance(target, (ast.Tuple, ast.List)):
    return set().union(*(_bound_names(t) for t in target.elts)) if target.elts else set()
  return set()


def _function_locals(fn: ast.FunctionDef) -> Set[str]:
  """Parameters and every name the function assigns (comprehension targets are not function locals)."""
  names = {a.arg for a in fn.args.args + fn.args.posonlyargs + fn.args.kwonlyargs}

  def visit(stmts: Sequence[ast.stmt]) -> None:
    for stmt in stmts:
      if isinstance(stmt, ast.Assign):
        for target in stmt.targets:
          names.update(_bound_names(target))
      elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign, ast.For)):
        names.update(_bound_names(stmt.target))
      for field in ('body', 'orelse'):
        visit(getattr(stmt, field, []) or [])

  visit(fn.body)
  return names


@dataclasses.dataclass
class _Checker:
  functions: FrozenSet[str]
  scope: FrozenSet[str] = frozenset()

  def name(self, node: ast.Name) -> None:
    if node.id.startswith('__'):
      raise _refuse(node, f'the dunder name {node.id!r}')
    if isinstance(node.ctx, ast.Store):
      return  # A bound name is local to its function or comprehension: loads of it never reach builtins.
    if node.id in self.scope or node.id in self.functions or node.id in SAFE_BUILTINS:
      return
    if node.id in _BUILTIN_NAMES:
      raise _refuse(node, f'the builtin {node.id!r}')
    raise UnsafeProgramError(f'name {node.id!r} is never assigned{_where(node)}; define it before use')

  def iterable(self, node: ast.expr) -> None:
    is_range = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'range'
    if not (is_range or isinstance(node, (ast.Name, ast.List, ast.Tuple, ast.Subscript))):
      raise _refuse(node, 'looping over anything but range(...), a list or a name')
    self.expr(node)

  def target(self, node: ast.expr) -> None:
    if isinstance(node, ast.Name):
      self.name(node)
    elif isinstance(node, (ast.Tuple, ast.List)):
      for elt in node.elts:
        self.target(elt)
    elif isinstance(node, ast.Subscript):
      self.expr(node)
    else:
      raise _refuse(node, f'assigning to {type(node).__name__}')

  def annotation(self, node: Optional[ast.expr]) -> None:
    if node is None or (isinstance(node, ast.Constant) and node.value is None):
      return
    if not (isinstance(node, ast.Name) and node.id in _ANNOTATIONS):
      raise _refuse(node, 'an annotation other than int, float or bool')

  def comprehension(self, node: Union[ast.ListComp, ast.GeneratorExp]) -> None:
    inner = self
    for gen in node.generators:
      if gen.is_async:
        raise _refuse(node, 'async comprehension')
      inner.iterable(gen.iter)
      inner = _Checker(self.functions, inner.scope | _bound_names(gen.target))
      inner.target(gen.target)
      for cond in gen.ifs:
        inner.expr(cond)
    inner.expr(node.elt)

  def expr(self, node: ast.expr) -> None:
    if isinstance(node, ast.Constant):
      if type(node.value) not in (int, float, bool, type(None)):
        raise _refuse(node, f'the {type(node.value).__name__} literal {node.value!r:.40}')
    elif isinstance(node, ast.Name):
      self.name(node)
    elif isinstance(node, ast.BinOp):
      if not isinstance(node.op, _BIN_OPS):
        raise _refuse(node, f'the operator {type(node.op).__name__}')
      self.expr(node.left)
      self.expr(node.right)
    elif isinstance(node, ast.UnaryOp):
      self.expr(node.operand)
    elif isinstance(node, ast.BoolOp):
      for value in node.values:
        self.expr(value)
    elif isinstance(node, ast.Compare):
      if not all(isinstance(op, _CMP_OPS) for op in node.ops):
        raise _refuse(node, 'this comparison')
      for value in [node.left, *node.comparators]:
        self.expr(value)
    elif isinstance(node, ast.IfExp):
      for value in (node.test, node.body, node.orelse):
        self.expr(value)
    elif isinstance(node, (ast.List, ast.Tuple)):
      for elt in node.elts:
        self.expr(elt)
    elif isinstance(node, ast.Subscript):
      if isinstance(node.slice, ast.Slice):
        raise _refuse(node, 'slicing (xs[a:b])')
      if not isinstance(node.value, (ast.Name, ast.Subscript)) or isinstance(node.slice, ast.Tuple):
        raise _refuse(node, 'subscripts other than xs[i]')
      self.expr(node.value)
      self.expr(node.slice)
    elif isinstance(node, ast.Call):
      func = node.func
      if not isinstance(func, ast.Name) or not (func.id in SAFE_BUILTINS or func.id in self.functions):
        what = f'calling {func.id!r}' if isinstance(func, ast.Name) else 'this call'
        raise _refuse(node, what if not isinstance(func, ast.Attribute) else 'attribute access (x.y)')
      self.name(func)
      for arg in node.args:
        self.expr(arg)
      for keyword in node.keywords:
        if keyword.arg is None or keyword.arg.startswith('__'):
          raise _refuse(node, '**kwargs')
        self.expr(keyword.value)
    elif isinstance(node, (ast.ListComp, ast.GeneratorExp)):
      self.comprehension(node)
    else:
      raise _refuse(node, _NODE_WORDS.get(type(node), type(node).__name__))

  def body(self, stmts: Sequence[ast.stmt]) -> None:
    for stmt in stmts:
      self.stmt(stmt)

  def stmt(self, node: ast.stmt) -> None:
    if isinstance(node, ast.Assign):
      self.expr(node.value)
      for target in node.targets:
        self.target(target)
    elif isinstance(node, ast.AugAssign):
      if not isinstance(node.op, _BIN_OPS):
        raise _refuse(node, f'the operator {type(node.op).__name__}')
      if not isinstance(node.target, (ast.Name, ast.Subscript)):
        raise _refuse(node, 'this augmented assignment')
      self.expr(node.value)
      self.target(node.target)
    elif isinstance(node, ast.AnnAssign):
      self.annotation(node.annotation)
      if node.value is not None:
        self.expr(node.value)
      self.target(node.target)
    elif isinstance(node, ast.Return):
      if node.value is not None:
        self.expr(node.value)
    elif isinstance(node, (ast.If, ast.While)):
      self.expr(node.test)
      self.body(node.body)
      self.body(node.orelse)
    elif isinstance(node, ast.For):
      self.iterable(node.iter)
      self.target(node.target)
      self.body(node.body)
      self.body(node.orelse)
    elif isinstance(node, (ast.Pass, ast.Break, ast.Continue)):
      pass
    elif _is_docstring(node):
      pass
    elif _is_print(node):
      for arg in node.value.args + [k.value for k in node.value.keywords]:
        self.expr(arg)
    elif isinstance(node, ast.Expr):
      self.expr(node.value)  # A more specific reason first (attribute, yield, ...).
      raise _refuse(node, 'an expression statement (e.g. a bare call)')
    elif isinstance(node, ast.FunctionDef):
      raise _refuse(node, 'a nested function')
    else:
      raise _refuse(node, _NODE_WORDS.get(type(node), type(node).__name__))


def _check_function(fn: ast.FunctionDef, functions: FrozenSet[str]) -> None:
  if fn.name.startswith('__'):
    raise _refuse(fn, f'the dunder name {fn.name!r}')
  if fn.decorator_list:
    raise _refuse(fn, 'a decorator')
  args = fn.args
  if args.vararg or args.kwarg:
    raise _refuse(fn, '*args or **kwargs')
  for default in args.defaults + [d for d in args.kw_defaults if d is not None]:
    if not _is_number_literal(default):
      raise _refuse(fn, 'a default argument that is not a number')
  checker = _Checker(functions, frozenset(_function_locals(fn)))
  for arg in args.args + args.posonlyargs + args.kwonlyargs:
    if arg.arg.startswith('__'):
      raise _refuse(fn, f'the dunder name {arg.arg!r}')
    checker.annotation(arg.annotation)
  checker.annotation(fn.returns)
  checker.body(fn.body)


def _parse(source: str) -> ast.Module:
  if not isinstance(source, str) or not source.strip():
    raise ProgramError('the program is empty; code answers must define solution()')
  if len(source) > MAX_SOURCE_CHARS:
    raise ProgramError(f'the program has {len(source)} characters, over the limit {MAX_SOURCE_CHARS}')
  try:
    return ast.parse(source)
  except SyntaxError as e:
    raise ProgramError(f'syntax error (line {e.lineno}): {e.msg}') from None
  except (ValueError, MemoryError, RecursionError) as e:
    raise ProgramError(f'cannot parse the program: {_one_line(e)}') from None


def _check_tree(tree: ast.Module) -> None:
  functions = frozenset(s.name for s in tree.body if isinstance(s, ast.FunctionDef))
  for i, stmt in enumerate(tree.body):
    if isinstance(stmt, ast.FunctionDef):
      _check_function(stmt, functions)
    elif not (i == 0 and _is_docstring(stmt)):
      raise _refuse(stmt, f'the top-level {_NODE_WORDS.get(type(stmt), type(stmt).__name__)} statement')
  if not functions:
    raise ProgramError('the program defines no function; code answers must define solution()')


def check_program(source: str) -> None:
  """Raise ``UnsafeProgramError`` (or ``ProgramError`` for syntax errors) unless ``source`` is whitelisted."""
  tree = _parse(source)
  try:
    _check_tree(tree)
  except RecursionError:
    raise ProgramError('the program is nested too deeply to check; simplify its expressions') from None


# ----------------------------------------------------------------------------------------------------------
# Bounded arithmetic and compilation.
# ----------------------------------------------------------------------------------------------------------


def _short(x: int) -> str:
  return str(x) if x.bit_length() <= 64 else f'<{x.bit_length()}-bit int>'


def _safe_mul(a, b):
  if isinstance(a, int) and isinstance(b, int):
    if a.bit_length() + b.bit_length() > MAX_INT_BITS + 1:
      raise ProgramError(f'an integer product would exceed {MAX_INT_BITS} bits; GSM answers never need this')
  elif (
    isinstance(a, (list, tuple)) and isinstance(b, int) or isinstance(b, (list, tuple)) and isinstance(a, int)
  ):
    seq, times = (a, b) if isinstance(a, (list, tuple)) else (b, a)
    if len(seq) * times > MAX_LIST_LEN:
      raise ProgramError(f'a list of {len(seq) * times:.3g} items is over the limit of {MAX_LIST_LEN}')
  return a * b


def _safe_pow(a, b, mod=None):
  if mod is not None:
    return pow(a, b, mod)  # Bounded by the modulus.
  if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
    if a.bit_length() * b > MAX_INT_BITS + 1:
      raise ProgramError(
        f'{_short(a)} ** {_short(b)} would exceed {MAX_INT_BITS} bits; GSM answers never need this'
      )
  return a**b


def _as_load(node: ast.expr) -> ast.expr:
  node = copy.deepcopy(node)
  for child in ast.walk(node):
    if hasattr(child, 'ctx'):
      child.ctx = ast.Load()
  return node


class _Bound(ast.NodeTransformer):
  """Rewrites `a * b` and `a ** b` (also `*=` and `**=`) into calls of the bounded helpers."""

  def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
    self.generic_visit(node)
    helper = _MUL if isinstance(node.op, ast.Mult) else _POW if isinstance(node.op, ast.Pow) else None
    if helper is None:
      return node
    call = ast.Call(func=ast.Name(helper, ast.Load()), args=[node.left, node.right], keywords=[])
    return ast.copy_location(call, node)

  def visit_AugAssign(self, node: ast.AugAssign) -> ast.stmt:
    self.generic_visit(node)
    if not isinstance(node.op, (ast.Mult, ast.Pow)):
      return node
    helper = _MUL if isinstance(node.op, ast.Mult) else _POW
    call = ast.Call(func=ast.Name(helper, ast.Load()), args=[_as_load(node.target), node.value], keywords=[])
    return ast.copy_location(ast.Assign(targets=[node.target], value=call), node)


@dataclasses.dataclass(frozen=True)
class _Prepared:
  code: object
  entries: tuple


def _prepare(source: str, entries: Sequence[str]) -> _Prepared:
  tree = _parse(source)
  try:
    _check_tree(tree)
  except RecursionError:
    raise ProgramError('the program is nested too deeply to check; simplify its expressions') from None
  defs = {s.name: s for s in tree.body if isinstance(s, ast.FunctionDef)}
  for entry in entries:
    if entry not in defs:
      need = ' and '.join(f'{e}()' for e in entries)
      raise ProgramError(f'the program defines no {entry}(); code answers here must define {need}')
    args = defs[entry].args
    if len(args.args) + len(args.posonlyargs) > len(args.defaults):
      raise ProgramError(f'{entry}() must be callable without arguments')
  try:
    tree = ast.fix_missing_locations(_Bound().visit(tree))
    return _Prepared(compile(tree, '<program>', 'exec'), tuple(entries))
  except (SyntaxError, ValueError, RecursionError) as e:
    raise ProgramError(f'cannot compile the program: {_one_line(e)}') from None


# ----------------------------------------------------------------------------------------------------------
# The child process.
# ----------------------------------------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  text = text[0] if text else ''
  text = f'{type(error).__name__}: {text}' if text else type(error).__name__
  return text[:MAX_MESSAGE_CHARS]


def _no_op(*args, **kwargs) -> None:
  del args, kwargs


def _execute(prepared: _Prepared) -> Dict[str, Value]:
  safe = {name: getattr(builtins, name) for name in SAFE_BUILTINS}
  safe['pow'] = _safe_pow
  safe['print'] = _no_op
  env = {'__builtins__': safe, '__name__': 'program', _MUL: _safe_mul, _POW: _safe_pow}
  exec(prepared.code, env)
  out = {}
  for entry in prepared.entries:
    try:
      value = env[entry]()
    except ProgramError as e:
      raise ProgramError(f'{entry}(): {e}') from None
    except MemoryError:
      raise
    except RecursionError:
      raise ProgramError(f'{entry}(): recursion too deep') from None
    except Exception as e:
      raise ProgramError(f'{entry}() raised {_one_line(e)}') from None
    if type(value) not in (int, float):
      raise ProgramError(f'{entry}() returned {type(value).__name__}; it must return an int or a float')
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
      raise ProgramError(f'{entry}() returned an integer over {MAX_INT_BITS} bits')
    out[entry] = value
  return out


def _current_vm_bytes() -> int:
  try:
    with open('/proc/self/statm') as f:
      return int(f.read().split()[0]) * os.sysconf('SC_PAGE_SIZE')
  except (OSError, ValueError, IndexError):
    return 0


def _limit(which: int, soft: int) -> None:
  _, hard = resource.getrlimit(which)
  if hard != resource.RLIM_INFINITY:
    soft = min(soft, hard)
  resource.setrlimit(which, (soft, hard))


def _child(prepared: _Prepared, wfd: int, memory_mb: float, cpu_s: int) -> None:
  """Runs in the forked child: limit, execute, write one JSON object, exit without cleanup."""
  try:
    try:
      _limit(resource.RLIMIT_CORE, 0)
      _limit(resource.RLIMIT_CPU, cpu_s)
      # RLIMIT_AS counts the whole (copy-on-write) address space inherited from the parent, which is large
      # in a JAX process; the program gets `memory_mb` on top of it.
      _limit(resource.RLIMIT_AS, _current_vm_bytes() + int(memory_mb * 2**20))
      out = {'ok': _execute(prepared)}
    except ProgramError as e:
      out = {'error': str(e)}
    except MemoryError:
      out = {'error': f'the program ran out of memory (limit {memory_mb:g} MB over the parent)'}
    except RecursionError:
      out = {'error': 'recursion too deep'}
    except BaseException as e:
      out = {'error': f'the program failed: {_one_line(e)}'}
    data = json.dumps(out).encode()
    if len(data) > MAX_RESULT_BYTES:
      data = b'{"error": "the program returned too much data"}'
    view = memoryview(data)
    while view:
      view = view[os.write(wfd, view) :]
  finally:
    os._exit(0)


# ----------------------------------------------------------------------------------------------------------
# The parent: a small scheduler over forked children.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Job:
  index: int
  pid: int
  fd: int
  deadline: float
  data: bytearray = dataclasses.field(default_factory=bytearray)


def _spawn(index: int, prepared: _Prepared, timeout_s: float, memory_mb: float) -> _Job:
  rfd, wfd = os.pipe()
  with warnings.catch_warnings():  # Python 3.12 warns about fork in threaded parents; see module docstring.
    warnings.simplefilter('ignore', DeprecationWarning)
    pid = os.fork()
  if pid == 0:
    try:
      os.close(rfd)
      signal.signal(signal.SIGINT, signal.SIG_DFL)
      _child(prepared, wfd, memory_mb, max(1, math.ceil(timeout_s)) + 1)
    finally:
      os._exit(1)
  os.close(wfd)
  return _Job(index, pid, rfd, time.monotonic() + timeout_s)


def _kill(job: _Job) -> None:
  try:
    os.kill(job.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  os.waitpid(job.pid, 0)
  os.close(job.fd)


def _finish(job: _Job, timeout_s: float) -> Union[Dict[str, Value], ProgramError]:
  os.close(job.fd)
  _, status = os.waitpid(job.pid, 0)
  if job.data:
    try:
      out = json.loads(bytes(job.data))
    except ValueError:
      return ProgramError('the program child sent an unreadable result')
    if 'ok' in out and isinstance(out['ok'], dict):
      return {k: v for k, v in out['ok'].items()}
    return ProgramError(str(out.get('error', 'unknown error'))[: MAX_MESSAGE_CHARS * 2])
  if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    if sig in (signal.SIGXCPU, signal.SIGKILL):
      return ProgramTimeout(f'the program used over {timeout_s:g} s of CPU time; does a loop never end?')
    return ProgramError(f'the program crashed ({signal.Signals(sig).name})')
  return ProgramError(f'the program child exited with status {os.waitstatus_to_exitcode(status)}')


def _timeout_error(timeout_s: float) -> ProgramTimeout:
  return ProgramTimeout(
    f'the program ran over {timeout_s:g} s; does a loop never end? (raise timeout_s if not)'
  )


def _run_all(
  sources: Sequence[Optional[str]], entries: Sequence[str], workers: int, timeout_s: float, memory_mb: float
) -> List[Union[Dict[str, Value], ProgramError]]:
  if timeout_s <= 0 or memory_mb <= 0 or workers < 1:
    raise ValueError(
      f'need timeout_s > 0, memory_mb > 0, workers >= 1; got {timeout_s}, {memory_mb}, {workers}'
    )
  results: List[Union[Dict[str, Value], ProgramError, None]] = [None] * len(sources)
  todo = []
  for i, source in enumerate(sources):
    try:
      if source is None:
        raise ProgramError('no program found in the completion')
      todo.append((i, _prepare(source, entries)))
    except ProgramError as e:
      results[i] = e
  todo.reverse()
  running: Dict[int, _Job] = {}
  selector = selectors.DefaultSelector()
  try:
    while todo or running:
      while todo and len(running) < workers:
        i, prepared = todo.pop()
        job = _spawn(i, prepared, timeout_s, memory_mb)
        running[job.fd] = job
        selector.register(job.fd, selectors.EVENT_READ)
      wait = max(0.0, min(job.deadline for job in running.values()) - time.monotonic())
      for key, _ in selector.select(wait):
        job = running[key.fd]
        chunk = os.read(job.fd, 65536)
        job.data += chunk
        if chunk and len(job.data) <= MAX_RESULT_BYTES:
          continue
        selector.unregister(job.fd)
        del running[job.fd]
        if chunk:
          _kill(job)
          results[job.index] = ProgramError('the program returned too much data')
        else:
          results[job.index] = _finish(job, timeout_s)
      now = time.monotonic()
      for job in [j for j in running.values() if j.deadline <= now]:
        selector.unregister(job.fd)
        del running[job.fd]
        _kill(job)
        results[job.index] = _timeout_error(timeout_s)
  finally:
    for job in running.values():
      _kill(job)
    selector.close()
  return results  # type: ignore[return-value]


def run_program(
  source: str, entries: Sequence[str] = ('solution',), *, timeout_s: float = 2.0, memory_mb: float = 256
) -> Dict[str, Value]:
  """Check and run ``source`` in a limited child; returns ``{entry: value}`` for each entry function.

  Raises ``UnsafeProgramError`` (whitelist), ``ProgramTimeout`` (wall clock or CPU) or ``ProgramError``.
  """
  (result,) = _run_all([source], entries, 1, timeout_s, memory_mb)
  if isinstance(result, ProgramError):
    raise result
  return result


def run_programs(
  sources: Sequence[Optional[str]],
  entries: Sequence[str] = ('solution',),
  *,
  workers: int = 2,
  timeout_s: float = 2.0,
  memory_mb: float = 256,
) -> List[Union[Dict[str, Value], str]]:
  """Runs many programs, ``workers`` children at a time; per program, in order, ``{entry: value}`` or a
  one-line error string such as ``'ProgramTimeout: ...'``. A ``None`` source (no code found) is an error."""
  out = _run_all(sources, entries, workers, timeout_s, memory_mb)
  return [f'{type(r).__name__}: {r}' if isinstance(r, ProgramError) else r for r in out]
