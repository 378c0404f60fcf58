"""The `gpu` and `slow` markers of conftest.py skip, with a visible reason, where they should."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SAMPLE = """
import pytest

@pytest.mark.gpu
def test_needs_gpu():
  pass

@pytest.mark.slow
def test_takes_long():
  pass

def test_plain():
  pass
"""


def run_pytest(tmp_path, *args):
  (tmp_path / 'sample_test.py').write_text(SAMPLE)
  env = {k: v for k, v in os.environ.items() if k != 'RUN_SLOW'}
  env.update(PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    [sys.executable, '-m', 'pytest', '-p', 'conftest', '-rs', '-q', 'sample_test.py', *args],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  return proc.returncode, proc.stdout


def test_gpu_and_slow_skip_with_reasons_on_cpu(tmp_path):
  code, out = run_pytest(tmp_path)
  assert code == 0, out
  assert '1 passed, 2 skipped' in out
  assert 'needs a GPU: JAX sees none on this machine' in out
  assert 'slow: run with --runslow or RUN_SLOW=1' in out


def test_runslow_runs_slow_tests(tmp_path):
  code, out = run_pytest(tmp_path, '--runslow')
  assert code == 0, out
  assert '2 passed, 1 skipped' in out
