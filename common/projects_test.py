"""Tests for common.projects: discovery and the import-boundary checker (on synthetic trees)."""

import os

from common import projects


def make_tree(root, files):
  for rel, text in files.items():
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
      f.write(text)


def test_imported_modules():
  source = (
    'import jax.numpy as jnp\nfrom alpha.models import x\nfrom . import sibling\n'
    'from .sub import y\nimport importlib\nimportlib.import_module("beta.train")\n__import__("gamma")\n'
    'def f():\n  import delta\n'
  )
  assert projects.imported_modules(source) == {'jax', 'alpha', 'importlib', 'beta', 'gamma', 'delta'}


def test_discovery_and_violations(tmp_path):
  root = str(tmp_path)
  make_tree(
    root,
    {
      'common/__init__.py': '',
      'common/good.py': 'import numpy\n',
      'common/bad.py': 'from alpha import m\n',
      'alpha/__init__.py': '',
      'alpha/main.py': 'from common import app\n',
      'alpha/configs/default.py': '',
      'alpha/configs/_helpers.py': '',
      'alpha/configs/smaller.py': '',
      'alpha/deep/inner.py': 'import beta.train\n',
      'beta/__init__.py': '',
      'beta/train.py': 'import alpha  # not allowed either\n',
      'tests/__init__.py': '',
      'tests/x_test.py': 'import alpha, beta\n',  # tests may import anything
      'notes/readme.py': 'import alpha\n',  # not a package: not a project, not checked
      '.hidden/__init__.py': '',
      'x.egg-info/__init__.py': '',
    },
  )
  assert projects.find_projects(root) == ['alpha', 'beta']
  assert projects.find_mains(root) == ['alpha']
  assert projects.find_configs(root) == ['alpha/configs/default.py', 'alpha/configs/smaller.py']
  assert projects.import_violations(root) == [
    'alpha/deep/inner.py imports beta (projects never import each other)',
    'beta/train.py imports alpha (projects never import each other)',
    'common/bad.py imports alpha (common imports no project)',
  ]


def test_clean_tree_and_syntax_errors(tmp_path):
  root = str(tmp_path)
  make_tree(root, {'alpha/__init__.py': 'import common\n', 'common/__init__.py': ''})
  assert projects.import_violations(root) == []
  make_tree(root, {'alpha/broken.py': 'def (:\n'})
  assert projects.import_violations(root)[0].startswith('alpha/broken.py: cannot parse')
