"""What lives in the repository: project folders, their mains, configs and experiments, and the import
rule between them (projects import `common` and third-party packages, never each other; `common` imports
no project).

A project is a top-level folder with an `__init__.py`, other than `common` and `tests`. Nothing here
imports JAX, so `reproduce.py` and the cross-project tests start fast.
"""

from __future__ import annotations

import ast
import os
from typing import Iterator

SHARED = 'common'
NOT_PROJECTS = frozenset({SHARED, 'tests', 'runs', 'build', 'dist'})


def find_projects(root: str) -> list[str]:
  """Names of the project folders under `root`, sorted."""
  names = []
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    if (
      name.startswith(('.', '_'))
      or name in NOT_PROJECTS
      or name.endswith('.egg-info')
      or not os.path.isfile(os.path.join(path, '__init__.py'))
    ):
      continue
    names.append(name)
  return names


def python_files(folder: str) -> Iterator[str]:
  for dirpath, dirnames, filenames in os.walk(folder):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith(('.', '__pycache__')))
    for name in sorted(filenames):
      if name.endswith('.py'):
        yield os.path.join(dirpath, name)


def imported_modules(source: str) -> set[str]:
  """Top-level names a module imports: `import a.b`, `from a import b`, and string literals passed to
  `importlib.import_module` / `__import__`. Relative imports stay inside their package and are skipped."""
  names = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names.update(alias.name.split('.')[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names.add(node.module.split('.')[0])
    elif (
      isinstance(node, ast.Call)
      and node.args
      and isinstance(node.args[0], ast.Constant)
      and isinstance(node.args[0].value, str)
    ):
      func = node.func
      name = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', '')
      if name in ('import_module', '__import__'):
        names.add(node.args[0].value.split('.')[0])
  return names


def import_violations(root: str) -> list[str]:
  """One line per forbidden import under `root`: a project importing another project, or `common`
  importing a project."""
  projects = set(find_projects(root))
  owners = sorted(projects) + ([SHARED] if os.path.isdir(os.path.join(root, SHARED)) else [])
  problems = []
  for owner in owners:
    for path in python_files(os.path.join(root, owner)):
      with open(path, encoding='utf-8') as f:
        source = f.read()
      try:
        imported = imported_modules(source)
      except SyntaxError as e:
        problems.append(f'{os.path.relpath(path, root)}: cannot parse ({e})')
        continue
      for name in sorted(imported & (projects - {owner})):
        rule = 'common imports no project' if owner == SHARED else 'projects never import each other'
        problems.append(f'{os.path.relpath(path, root)} imports {name} ({rule})')
  return problems


def find_mains(root: str) -> list[str]:
  """Projects that have a `main.py`."""
  return [p for p in find_projects(root) if os.path.isfile(os.path.join(root, p, 'main.py'))]


def find_configs(root: str) -> list[str]:
  """Paths (relative to `root`) of every config file `<project>/configs/*.py`."""
  found = []
  for project in find_projects(root):
    folder = os.path.join(root, project, 'configs')
    if os.path.isdir(folder):
      found += [
        os.path.join(project, 'configs', n)
        for n in sorted(os.listdir(folder))
        if n.endswith('.py') and not n.startswith('_')
      ]
  return found
