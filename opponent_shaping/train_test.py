"""End-to-end tests of training: smoke run, resume == uninterrupted, determinism, consistency of the
re-run recurrent policy with the rollout, and clear errors on bad settings."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import checkpoint
from common import config as config_lib
from common import metrics as metrics_lib
from common.errors import UsageError
from opponent_shaping import agents as agents_lib
from opponent_shaping import train as train_lib

CONFIGS = os.path.join(os.path.dirname(__file__), 'configs')


def tiny(name='default.py', **overrides):
  config = config_lib.load_config(os.path.join(CONFIGS, name) + ':smoke', lock=False)
  config.update(
    {'num_seeds': 2, 'updates': 20, 'log_every': 10, 'checkpoint_every': 10, 'eval_envs': 32, 'num_envs': 32}
  )
  config.update(overrides)
  return config


def final_states(config, workdir):
  game = train_lib.make_game(config)
  agent = agents_lib.make_agent(config.arch, game, hidden=config.hidden)
  with checkpoint.Checkpointer(workdir) as ckpt:
    return ckpt.restore(train_lib.init_states(config, game, agent), step=config.updates)


def rows(workdir):
  return [{k: v for k, v in r.items() if k != 'time'} for r in metrics_lib.read_metrics(workdir)]


@pytest.fixture(scope='module')
def full_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('full'))
  config = tiny()
  train_lib.train_and_evaluate(config, workdir)
  return config, workdir


def test_smoke_run_writes_metrics_checkpoints_and_results(full_run):
  config, workdir = full_run
  with open(os.path.join(workdir, 'results.json')) as f:
    res = json.load(f)
  assert {c['name'] for c in res['claims']} >= {'naive learners defect (mean return per step)'}
  assert all(np.isfinite(c['measured']) for c in res['claims'])
  assert set(res['plots']) == {'return_per_step.png', 'cooperation.png'}
  table = res['extra']['evaluation']['ipd_table']['advantage_alignment']
  assert set(table) == {'start', 'CC', 'CD', 'DC', 'DD'} and len(table['CC']['per_seed']) == 2
  steps = [r['step'] for r in rows(workdir)]
  assert steps == [10, 20]
  assert all(np.isfinite(v) for r in rows(workdir) for v in r.values())


def test_resume_equals_uninterrupted(full_run, tmp_path, monkeypatch):
  config, full_dir = full_run
  original = metrics_lib.chunks

  def interrupted(*args, **kwargs):
    for i, chunk in enumerate(original(*args, **kwargs)):
      if i == 1:
        raise KeyboardInterrupt  # After the first chunk was trained, logged and checkpointed.
      yield chunk

  monkeypatch.setattr(train_lib.metrics_lib, 'chunks', interrupted)
  with pytest.raises(KeyboardInterrupt):
    train_lib.train_and_evaluate(config, str(tmp_path))
  assert [r['step'] for r in rows(str(tmp_path))] == [10]
  monkeypatch.setattr(train_lib.metrics_lib, 'chunks', original)
  train_lib.train_and_evaluate(config, str(tmp_path))
  # Bitwise on CPU; GPU reductions are not bitwise reproducible, so there only up to rounding.
  exact = jax.default_backend() == 'cpu'
  resumed, full = rows(str(tmp_path)), rows(full_dir)
  assert [r.keys() for r in resumed] == [r.keys() for r in full]
  for a, b in zip(resumed, full):
    np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=0 if exact else 1e-4)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(
      np.asarray(a), np.asarray(b), rtol=0 if exact else 1e-4, atol=0 if exact else 1e-5
    ),
    final_states(config, str(tmp_path)),
    final_states(config, full_dir),
  )


def test_recomputed_log_probs_match_the_rollout():
  """The loss re-runs the recurrent policy over the stored trajectory: it must give the rollout's log-probs
  (PPO's ratio is 1 before the first step)."""
  config = tiny('coin_game.py', hidden=8, num_envs=4)
  game = train_lib.make_game(config)
  agent = agents_lib.make_agent('gru', game, hidden=8)
  params = jax.vmap(agent.init)(jax.random.split(jax.random.PRNGKey(0), 2))
  traj = jax.jit(train_lib.make_rollout(game, agent, 4))(params['actor'], jax.random.PRNGKey(1))
  for i in range(2):
    actor = jax.tree.map(lambda x: x[i], params['actor'])
    logp, entropy = train_lib.sequence_logp(agent, actor, traj.obs[:, i], traj.t, traj.actions[:, i])
    np.testing.assert_allclose(logp, traj.logp[:, i], rtol=1e-5, atol=1e-5)
    assert jnp.all(entropy > 0)


def test_self_play_shares_one_parameter_set():
  tree = {'w': jnp.arange(3.0)}
  both = train_lib.stack_seats(tree, 'self_play')
  assert both['w'].shape == (2, 3)
  assert train_lib.stack_seats(both, 'independent') is both


@pytest.mark.parametrize(
  'overrides,fragment',
  [
    ({'play': 'selfplay'}, "unknown play 'selfplay'"),
    ({'loss': 'ppo2'}, "unknown loss 'ppo2'"),
    ({'methods': {'naive': 0.0, 'aa': -1.0}}, 'beta must be >= 0'),
    ({'normalize': 'batch'}, "unknown normalize 'batch'"),
  ],
)
def test_bad_settings_fail_before_compiling(overrides, fragment, tmp_path):
  config = tiny(**overrides)
  with pytest.raises(ValueError, match=fragment):
    train_lib.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path)  # Nothing was written.


def test_bad_alignment_variant_and_game_are_usage_errors(tmp_path):
  config = tiny()
  config.alignment.past = 'discount'
  with pytest.raises(UsageError, match='discounted'):
    train_lib.train_and_evaluate(config, str(tmp_path))
  with pytest.raises(UsageError, match='coin_game'):
    train_lib.train_and_evaluate(tiny(game='coin_gme'), str(tmp_path))
  with pytest.raises(UsageError, match='size'):
    train_lib.train_and_evaluate(
      tiny('coin_game.py', game_kwargs={'size': 1, 'episode_length': 8}), str(tmp_path)
    )
  with pytest.raises(ValueError, match='tabular'):
    train_lib.train_and_evaluate(
      tiny(game='coin_game', game_kwargs={'size': 3, 'episode_length': 8}), str(tmp_path)
    )


SHARDED_SCRIPT = """
import json
import jax, numpy as np
from common import config as config_lib
from opponent_shaping import agents as agents_lib, train as train_lib
config = config_lib.load_config('opponent_shaping/configs/default.py:smoke,seeds=2', lock=False)
config.num_envs = 16
game = train_lib.make_game(config)
agent = agents_lib.make_agent(config.arch, game)
chunk = train_lib.make_train_chunk(config, game, agent)
betas = jax.numpy.ones((2,))
plain = train_lib.init_states(config, game, agent)['advantage_alignment']
sharded = train_lib.shard_seeds(train_lib.init_states(config, game, agent)['advantage_alignment'])
devices = sorted({d.id for d in sharded.actor['logits'].sharding.device_set})
out_plain, _ = chunk(plain, betas, 5)
out_sharded, _ = chunk(sharded, betas, 5)
diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in
           zip(jax.tree.leaves(out_plain), jax.tree.leaves(out_sharded)))
print(json.dumps({'devices': devices, 'diff': diff,
                  'out_devices': len(out_sharded.actor['logits'].sharding.device_set)}))
"""


def test_seeds_shard_over_two_devices():
  import subprocess
  import sys

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(
    os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu', PYTHONPATH=root
  )
  proc = subprocess.run(
    [sys.executable, '-c', SHARDED_SCRIPT], cwd=root, env=env, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  found = json.loads(proc.stdout.strip().splitlines()[-1])
  assert found['devices'] == [0, 1] and found['out_devices'] == 2
  assert found['diff'] < 1e-5
