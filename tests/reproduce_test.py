"""Tests for reproduce.py on fake projects in a temporary repository root."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(ROOT, 'tests', 'fixtures', 'toyproj')


def reproduce(root, *args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    [sys.executable, os.path.join(ROOT, 'reproduce.py'), f'--root={root}', *args],
    cwd=root,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  return proc.returncode, proc.stdout, proc.stderr


def add_project(root, name, experiments, files=None):
  os.makedirs(os.path.join(root, name))
  files = dict(files or {}, **{'__init__.py': '', 'experiments.py': f'EXPERIMENTS = {experiments!r}\n'})
  for rel, text in files.items():
    with open(os.path.join(root, name, rel), 'w') as f:
      f.write(textwrap.dedent(text))


def test_no_project_says_so_and_exits_zero(tmp_path):
  code, out, err = reproduce(str(tmp_path))
  assert code == 0, err
  assert 'nothing to reproduce' in out


@pytest.fixture(scope='module')
def fake_repo(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('repo'))
  shutil.copytree(TOY, os.path.join(root, 'toyproj'), ignore=shutil.ignore_patterns('__pycache__'))
  add_project(
    root,
    'broken',
    {'smoke': {'crash': ['-c', 'raise SystemExit(3)'], 'silent': ['-c', 'print("no results")']}},
  )
  add_project(root, 'gpuonly', {'gpu': {'big': ['-c', 'raise SystemExit(1)']}})
  return root


def test_one_failure_does_not_stop_the_rest(fake_repo):
  code, out, err = reproduce(fake_repo, '--runs_dir=runs')
  assert code == 1, err
  assert '[1/3] broken/crash ... FAILED: exit code 3' in out
  assert '[2/3] broken/silent ... FAILED: finished without writing results.json' in out
  assert '[3/3] toyproj/default ... ok' in out
  table = out[out.index('project') :]
  assert 'toyproj' in table and 'loss falls tenfold' in table and 'PASS' in table
  assert '1 of 3 experiments ran; 1 of 1 claims pass' in out
  report = open(os.path.join(fake_repo, 'runs', 'report.md')).read()
  assert '| broken | crash | exit code 3 |' in report
  assert '| toyproj | default | ok |' in report and '| cpu |' in report
  assert '| toyproj | default | measured < 0.1' not in report  # Criterion is not a table column.
  assert '![loss.png](smoke/toyproj/default/loss.png)' in report
  assert os.path.exists(os.path.join(fake_repo, 'runs', 'smoke', 'toyproj', 'default', 'loss.png'))
  with open(os.path.join(fake_repo, 'runs', 'smoke', 'toyproj', 'default', 'results.json')) as f:
    assert json.load(f)['claims'][0]['passed'] is True
  assert os.path.exists(os.path.join(fake_repo, 'runs', 'smoke', 'logs', 'broken.crash.log'))


def test_only_and_unknown_project(fake_repo):
  code, out, err = reproduce(fake_repo, '--only=gpuonly', '--preset=gpu', '--runs_dir=runs_gpu')
  assert code == 1 and '[1/1] gpuonly/big ... FAILED' in out
  code, out, err = reproduce(fake_repo, '--only=toyproj,brokn')
  assert code == 2
  assert "unknown project 'brokn'; did you mean 'broken'?" in err


def test_malformed_experiments_file(tmp_path):
  add_project(str(tmp_path), 'odd', {'smok': {'x': ['-c', 'pass']}})
  code, out, err = reproduce(str(tmp_path))
  assert code == 2 and "unknown preset 'smok'" in err
