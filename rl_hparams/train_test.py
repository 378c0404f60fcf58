"""End to end: the smoke sweep, THC from its CSV, resume of a partly finished sweep, bad configs."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from common import config as config_lib
from common.errors import ConfigError
from rl_hparams import sweep
from rl_hparams import thc
from rl_hparams import train
from rl_hparams.configs import default


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('thc_smoke'))
  summary = train.train_and_evaluate(default.get_config('smoke'), workdir)
  return workdir, summary


def _claims(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return {c['name']: c for c in json.load(f)['claims']}


def test_smoke_end_to_end(smoke_run):
  workdir, summary = smoke_run
  rows = thc.read_csv(os.path.join(workdir, train.CSV_FILE))
  # 3 (agent, regime) x 1 game x 2 hyper-parameters x 2 values x 2 seeds; 3 settings x 2 seeds = 6 runs each.
  assert len(rows) == 3 * 2 * 2 * 2
  assert len({(r['agent'], r['regime'], r['run_id'], r['seed']) for r in rows}) == 3 * 6
  assert {r['run_id'] for r in rows if r['value'] == '0.0001'} == {'default'}
  claims = _claims(workdir)
  assert claims['B1 THC recomputed from the saved CSV is bit-identical']['passed']
  assert claims['check: losses finite']['passed']
  b2 = claims['B2 mean THC across agents < across data regimes']
  assert b2['measured'] is not None  # Measured (pass or fail is the experiment's business).
  assert claims['B3 mean THC across games >= across data regimes']['measured'] is None  # One game only.
  assert set(summary['by_axis']) == {'agents', 'regimes'}
  for name in ('report.md', 'thc_ranks.csv', 'thc.json', 'thc_agents.png', 'thc_regimes.png'):
    assert os.path.exists(os.path.join(workdir, name)), name
  # THC recomputed here from the file equals what the run stored.
  config = default.get_config('smoke')
  with open(os.path.join(workdir, 'thc.json')) as f:
    stored = json.load(f)['entries']
  again = train.compute_all(config, rows)
  assert [e['thc'] for e in again] == [e['thc'] for e in stored]
  # Each program trained past its minimum replay: every run made updates.
  for program in sweep.plan(config)[0]:
    with open(os.path.join(workdir, program.path, sweep.RUNS_FILE)) as f:
      runs = json.load(f)['runs']
    assert all(min(r['updates']) > 0 for r in runs.values())


def test_partly_finished_sweep_resumes_to_the_same_csv(smoke_run, tmp_path, monkeypatch):
  """A sweep killed inside its last program: finished programs are skipped (their runs.json untouched), the
  killed one resumes from its checkpoint, and the CSV equals the uninterrupted sweep's byte for byte."""
  full_dir, _ = smoke_run
  workdir = str(tmp_path / 'run')
  shutil.copytree(full_dir, workdir)
  config = default.get_config('smoke')
  programs, _ = sweep.plan(config)
  last = programs[-1]
  os.remove(os.path.join(workdir, last.path, sweep.RUNS_FILE))
  os.remove(os.path.join(workdir, train.CSV_FILE))
  finished = [os.path.join(workdir, p.path, sweep.RUNS_FILE) for p in programs[:-1]]
  stamps = [os.stat(p).st_mtime_ns for p in finished]

  built = []
  original_init = sweep.Compiled.__init__

  def counting_init(self, config_, program):
    built.append(program.path)
    original_init(self, config_, program)

  original_chunk = sweep.Compiled.run_chunk
  calls = []

  def preempted(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # After the first chunk and its checkpoint (env step 500).
      raise RuntimeError('simulated preemption')
    return original_chunk(self, *args, **kwargs)

  monkeypatch.setattr(sweep.Compiled, '__init__', counting_init)
  monkeypatch.setattr(sweep.Compiled, 'run_chunk', preempted)
  with pytest.raises(RuntimeError, match='simulated preemption'):
    train.train_and_evaluate(config, workdir)
  monkeypatch.setattr(sweep.Compiled, 'run_chunk', original_chunk)
  train.train_and_evaluate(config, workdir)
  assert set(built) == {last.path}  # Finished programs were never rebuilt.
  assert [os.stat(p).st_mtime_ns for p in finished] == stamps  # ... nor rewritten.
  with open(os.path.join(workdir, last.path, sweep.RUNS_FILE)) as f:
    assert json.load(f)['resumed_from'] == 500
  with open(os.path.join(workdir, train.CSV_FILE)) as f, open(os.path.join(full_dir, train.CSV_FILE)) as g:
    assert f.read() == g.read()


def test_time_budget_stops_between_programs(tmp_path, monkeypatch):
  config = default.get_config('smoke')
  config.time_budget_s = 1e-9

  def fake_program(c, w, p, f):
    return {'agent': p.agent, 'regime': p.regime, 'game': p.game, 'runs': {}, 'num_seeds': 2,
            'env_steps': p.steps, 'wall_seconds': 1.0, 'losses_finite': True}  # fmt: skip

  monkeypatch.setattr(sweep, 'run_program', fake_program)
  monkeypatch.setattr(sweep, 'random_score', lambda *a: 0.5)
  assert train.train_and_evaluate(config, str(tmp_path)) is None
  claims = _claims(str(tmp_path))
  assert claims['sweep complete']['measured'] == '1/3 programs' and not claims['sweep complete']['passed']


@pytest.mark.parametrize(
  'overrides, match',
  [
    ({'runs': ('DER:medium',)}, 'regime .medium. of'),
    ({'runs': ('Rainbow:low',)}, 'unknown agent'),
    ({'games': ('Pong-MinAtar',)}, 'unknown MinAtar game'),
    ({'regimes': {'low': 1_100, 'high': 2_000}}, 'multiple of log_every'),
    ({'env': 'procgen'}, 'config.env must be'),
    ({'eval_first_game': 'yes'}, 'eval_first_game must be True or False'),
    ({'eval_host_workers': -1}, 'eval_host_workers must be an integer >= 0'),
    ({'eval_host_workers': 2}, 'eval_host_workers is for Atari only'),
  ],
)
def test_bad_config_fails_before_compiling(tmp_path, monkeypatch, overrides, match):
  monkeypatch.setattr(sweep, 'Compiled', lambda *a, **k: pytest.fail('compiled before validating'))
  config = default.get_config('smoke')
  for k, v in overrides.items():
    config[k] = v
  with pytest.raises(ConfigError, match=match):
    train.train_and_evaluate(config, str(tmp_path))


def test_paper_config_evaluates_first_episodes():
  """configs/paper.py counts each eval env's first episode (27k agent steps as the cap) in its evaluator;
  the MinAtar default, which has no such field, keeps the fixed window."""
  from rl_hparams.configs import paper

  assert not sweep.eval_first_game(default.get_config())
  c = paper.get_config()
  assert sweep.eval_first_game(c) and c.eval_iterations == 27_000
  pytest.importorskip('ale_py')
  c = paper.get_config('smoke')
  compiled = sweep.Compiled(c, sweep.plan(c)[0][0])
  evaluator = compiled.evaluator.config
  assert evaluator.eval_first_episode and evaluator.num_envs == c.eval_envs == 2
  assert (
    compiled.eval_env.host_workers == c.eval_host_workers == 2 and paper.get_config().eval_host_workers == 8
  )
  assert sweep.eval_host_workers(default.get_config()) == 0


def test_unknown_hyperparameter_in_the_sweep_is_named(tmp_path):
  config = default.get_config('smoke')
  config.sweep['learning_rat'] = (1e-4, 1e-3)
  with pytest.raises(ConfigError, match="unknown hyper-parameter 'learning_rat'"):
    train.train_and_evaluate(config, str(tmp_path))


# Slow (55 s on CI's 2 cores: a fresh subprocess compiles every program again); run with --runslow.
@pytest.mark.slow
def test_two_devices_run_programs_in_parallel_with_the_same_results(smoke_run, tmp_path):
  """Two (forced CPU) devices, one worker thread each: the programs' results equal the one-device sweep's."""
  full_dir, _ = smoke_run
  workdir = str(tmp_path / 'two')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
  cmd = [
    sys.executable,
    '-m',
    'rl_hparams.main',
    '--config=rl_hparams/configs/default.py:smoke',
    "--config.runs=('DER:low','DrQ_eps:low')",
    f'--workdir={workdir}',
  ]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'running the sweep on 2 devices in parallel' in out.stderr
  for path in ('DER/low/Breakout-MinAtar/net-default', 'DrQ_eps/low/Breakout-MinAtar/net-default'):
    with (
      open(os.path.join(workdir, path, sweep.RUNS_FILE)) as f,
      open(os.path.join(full_dir, path, sweep.RUNS_FILE)) as g,
    ):
      assert json.load(f)['runs'] == json.load(g)['runs'], path


def test_analyze_a_partial_sweep_says_so(smoke_run, tmp_path):
  """`rl_hparams.analyze` on a sweep with a program missing: THC over what exists, claims name the gap."""
  from rl_hparams import analyze

  full_dir, _ = smoke_run
  workdir = str(tmp_path / 'partial')
  shutil.copytree(full_dir, workdir)
  config = default.get_config('smoke')
  with open(os.path.join(workdir, 'config.json'), 'w') as f:  # What `common.app` writes for a real run.
    json.dump(config_lib.to_dict(config), f)
  last = sweep.plan(config)[0][-1]
  os.remove(os.path.join(workdir, last.path, sweep.RUNS_FILE))
  loaded, finished, randoms = analyze.load(workdir)
  assert len(finished) == 2 and set(randoms) == {'Breakout-MinAtar'}
  train.analyze(loaded, workdir, finished, randoms, wall_clock_s=0.0)
  claims = _claims(workdir)
  assert claims['sweep complete']['measured'] == '2/3 programs' and not claims['sweep complete']['passed']
  with open(os.path.join(workdir, 'report.md')) as f:
    assert '(partial: 2/3 programs)' in f.readline()
  with pytest.raises(ConfigError, match='does not exist'):
    analyze.load(str(tmp_path / 'nowhere'))
