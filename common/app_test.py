"""Tests for common.app: workdir rules in-process, and the whole entry point through the toy project."""

import json
import os
import subprocess
import sys

import ml_collections
import pytest

from common import app
from common.errors import WorkdirError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')
TOY_CONFIG = os.path.join(FIXTURES, 'toyproj', 'configs', 'default.py')


def cfg(**kw):
  return ml_collections.ConfigDict(dict({'lr': 0.1, 'model': {'width': 8}}, **kw))


def snapshot(workdir):
  out = {}
  for dirpath, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(dirpath, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, workdir)] = f.read()
  return out


def test_new_then_resume(tmp_path):
  workdir = str(tmp_path / 'run')
  assert app.prepare_workdir(workdir, cfg()) == 'new'
  with open(os.path.join(workdir, app.CONFIG_FILE)) as f:
    assert json.load(f) == {'lr': 0.1, 'model': {'width': 8}}
  assert app.prepare_workdir(workdir, cfg()) == 'resume'


def test_other_config_is_refused_and_nothing_changes(tmp_path):
  workdir = str(tmp_path)
  app.prepare_workdir(workdir, cfg())
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1}\n')
  before = snapshot(workdir)
  with pytest.raises(WorkdirError) as e:
    app.prepare_workdir(workdir, cfg(lr=0.2, seed=3))
  assert 'differs in lr, seed' in str(e.value) and '--overwrite' in str(e.value)
  assert snapshot(workdir) == before


def test_overwrite_moves_the_old_run_aside(tmp_path):
  workdir = str(tmp_path)
  app.prepare_workdir(workdir, cfg())
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1}\n')
  before = snapshot(workdir)
  assert app.prepare_workdir(workdir, cfg(lr=0.2), overwrite=True) == 'replaced'
  aside = [n for n in os.listdir(workdir) if n.startswith('replaced-')]
  assert len(aside) == 1
  assert snapshot(os.path.join(workdir, aside[0])) == before
  assert sorted(os.listdir(workdir)) == sorted([app.CONFIG_FILE, aside[0]])


def test_unusable_workdirs(tmp_path, monkeypatch):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(WorkdirError, match='cannot create workdir'):
    app.prepare_workdir(str(blocker / 'run'), cfg())
  (tmp_path / 'bad').mkdir()
  (tmp_path / 'bad' / app.CONFIG_FILE).write_text('{not json')
  with pytest.raises(WorkdirError, match='cannot read'):
    app.prepare_workdir(str(tmp_path / 'bad'), cfg())
  # Tests run as root in CI, where chmod cannot take write permission away: fake the answer.
  monkeypatch.setattr(os, 'access', lambda *a: False)
  with pytest.raises(WorkdirError, match='not writable'):
    app.prepare_workdir(str(tmp_path / 'ro'), cfg())


def run_toy(workdir, *args, arg='smoke'):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, FIXTURES]), JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    [sys.executable, '-m', 'toyproj.main', f'--config={TOY_CONFIG}:{arg}', f'--workdir={workdir}', *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  return proc.returncode, proc.stdout + proc.stderr


def error_line(output):
  lines = [line for line in output.splitlines() if line.startswith('error: ')]
  assert len(lines) == 1, output[-3000:]
  return lines[0]


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('toy') / 'run')
  code, out = run_toy(workdir)
  assert code == 0, out[-3000:]
  return workdir


def test_end_to_end_writes_everything(finished_run):
  names = set(os.listdir(finished_run))
  assert {'config.json', 'metrics.jsonl', 'checkpoints', 'tensorboard', 'results.json', 'loss.png'} <= names
  with open(os.path.join(finished_run, 'results.json')) as f:
    assert json.load(f)['claims'][0]['passed'] is True


def test_rerun_resumes_without_duplicating_metrics(finished_run):
  with open(os.path.join(finished_run, 'metrics.jsonl')) as f:
    before = [json.loads(line)['step'] for line in f]
  code, out = run_toy(finished_run)
  assert code == 0, out[-3000:]
  assert '(resume run)' in out
  with open(os.path.join(finished_run, 'metrics.jsonl')) as f:
    assert [json.loads(line)['step'] for line in f] == before


def test_other_config_fails_in_one_line_and_keeps_the_workdir(finished_run):
  before = snapshot(finished_run)
  code, out = run_toy(finished_run, '--config.lr=0.2')
  assert code == app.EXIT_USAGE
  assert 'holds a run with another config (differs in lr)' in error_line(out)
  assert snapshot(finished_run) == before


@pytest.mark.parametrize(
  'arg,fragment',
  [
    ('smok', "unknown config argument 'smok'; did you mean 'smoke'?"),
    ('smoke,seed=abc', "config argument 'seed' expects int"),
  ],
)
def test_bad_config_argument_is_one_line(tmp_path, arg, fragment):
  code, out = run_toy(str(tmp_path / 'run'), arg=arg)
  assert code == app.EXIT_USAGE
  assert fragment in error_line(out)
  assert not os.path.exists(tmp_path / 'run')


def test_bad_override_is_one_line(tmp_path):
  code, out = run_toy(str(tmp_path / 'run'), '--config.lrr=0.2')
  assert code == app.EXIT_USAGE
  line = error_line(out)
  assert 'unknown key' in line and 'lrr' in line and 'Did you mean "lr"' in line
  code, out = run_toy(str(tmp_path / 'run'), '--config.lr=fast')
  assert code == app.EXIT_USAGE and 'fast' in error_line(out)
  assert not os.path.exists(tmp_path / 'run')


def test_workdir_that_cannot_be_created(tmp_path):
  (tmp_path / 'file').write_text('x')
  code, out = run_toy(str(tmp_path / 'file' / 'run'))
  assert code == app.EXIT_USAGE
  assert 'cannot create workdir' in error_line(out)


def test_checkpoint_that_does_not_match_the_model(tmp_path):
  """The code changed under an unchanged config: restoring must fail clearly and keep the files."""
  workdir = str(tmp_path / 'run')
  code, out = run_toy(workdir)
  assert code == 0, out[-3000:]
  path = os.path.join(workdir, 'config.json')
  with open(path) as f:
    saved = json.load(f)
  saved['dim'] = 5  # As if the model grew while config.json stayed the same.
  with open(path, 'w') as f:
    json.dump(saved, f)
  before = snapshot(workdir)
  code, out = run_toy(workdir, '--config.dim=5')
  assert code == app.EXIT_USAGE
  assert 'does not match the state being restored' in error_line(out)
  assert snapshot(workdir) == before


def test_nan_stops_the_run_in_one_line(tmp_path):
  code, out = run_toy(str(tmp_path / 'run'), '--config.optimizer=sgd', '--config.lr=1e4')
  assert code == app.EXIT_USAGE
  line = error_line(out)
  assert 'train/' in line and 'last good checkpoint' in line
