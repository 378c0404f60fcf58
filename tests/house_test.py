"""Cross-project rules, checked on the real repository and on the toy fixture project.

- No project imports another, and `common` imports no project.
- Every `<project>/main.py --help` exits 0.
- Every file in `<project>/configs/` loads with its default and its `smoke` argument.
"""

import os
import subprocess
import sys

import pytest

from common import config as config_lib
from common import projects

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')
# (root, project) pairs: every project of the repository, plus the fixture so the checks run even before
# the first project lands.
MAINS = [(ROOT, p) for p in projects.find_mains(ROOT)] + [
  (FIXTURES, p) for p in projects.find_mains(FIXTURES)
]
CONFIGS = [(ROOT, c) for c in projects.find_configs(ROOT)] + [
  (FIXTURES, c) for c in projects.find_configs(FIXTURES)
]


def test_import_boundaries():
  problems = projects.import_violations(ROOT)
  assert not problems, 'forbidden imports:\n' + '\n'.join(problems)


def test_fixture_is_seen():
  assert 'toyproj' in projects.find_mains(FIXTURES) and 'toyproj/configs/default.py' in projects.find_configs(
    FIXTURES
  )


@pytest.mark.parametrize('root,project', MAINS, ids=[f'{os.path.basename(r)}/{p}' for r, p in MAINS])
def test_main_help_exits_zero(root, project):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, root]), JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    [sys.executable, '-m', f'{project}.main', '--help'],
    cwd=root,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '--config' in proc.stdout + proc.stderr and '--workdir' in proc.stdout + proc.stderr


@pytest.mark.parametrize('root,path', CONFIGS, ids=[p for _, p in CONFIGS])
@pytest.mark.parametrize('arg', ['', 'smoke'])
def test_config_loads(root, path, arg, monkeypatch):
  monkeypatch.syspath_prepend(root)
  config = config_lib.load_config(os.path.join(root, path) + (f':{arg}' if arg else ''))
  assert config_lib.to_dict(config), f'{path}:{arg} is empty'
