"""End-to-end tests of training: smoke run, resume == uninterrupted, determinism, consistency of the
re-run recurrent policy with the rollout, and clear errors on bad settings."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common import checkpoint
from common import config as config_lib
from common import metrics as metrics_lib
from common.errors import ConfigError, UsageError
from opponent_shaping import agents as agents_lib
from opponent_shaping import ipd
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


def _two_adam_steps(tx, grads_seq, shape):
  params = {'w': jnp.zeros(shape)}
  opt = tx.init(params)
  for g in grads_seq:
    updates, opt = tx.update({'w': g}, opt, params)
    params = optax.apply_updates(params, updates)
  return params['w']


@pytest.mark.parametrize('which', ['actor', 'critic'])
def test_independent_learners_clip_their_own_gradients(which):
  """Independent play stacks both learners' parameters on a leading seat axis and steps them with one
  optimizer: its gradient clip must act on each seat's own norm, so that a spike in one learner's gradient
  does not shrink the other's step. Seat 0's parameters must move exactly as with seat 0 alone."""
  config = tiny(grad_clip=10.0)
  assert config.play == 'independent'
  tx = train_lib.make_optimizers(config)[0 if which == 'actor' else 1]
  seat0 = [jnp.array([0.3, 0.4, 0.0]), jnp.array([-0.6, 0.8, 0.1])]
  seat1 = [jnp.array([0.3, 0.4, 0.0]), jnp.array([300.0, -400.0, 5.0])]  # Norm 500 > 10: clipped.
  both = _two_adam_steps(tx, [jnp.stack([a, b]) for a, b in zip(seat0, seat1)], (2, 3))
  alone0 = _two_adam_steps(tx, [a[None] for a in seat0], (1, 3))[0]
  alone1 = _two_adam_steps(tx, [b[None] for b in seat1], (1, 3))[0]
  np.testing.assert_allclose(both[0], alone0, rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(both[1], alone1, rtol=1e-6, atol=1e-9)
  # Self-play has one learner and no seat axis: the usual global-norm clip over all its parameters.
  sp = train_lib.make_optimizers(tiny(grad_clip=10.0, play='self_play'))[0]
  g = {'a': jnp.array([30.0, 40.0]), 'b': jnp.array([0.0, 0.0, 0.0])}
  clipped, _ = sp.update(g, sp.init(g), g)
  ref, _ = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(config.actor_lr)).update(g, sp.init(g), g)
  np.testing.assert_array_equal(clipped['a'], ref['a'])


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
import json, sys
import jax, numpy as np
from common import config as config_lib
from opponent_shaping import agents as agents_lib, train as train_lib
config = config_lib.load_config('opponent_shaping/configs/default.py:smoke,seeds=2', lock=False)
config.num_envs = 16
config.batch_shards = int(sys.argv[1])
train_lib.validate(config)
game = train_lib.make_game(config)
agent = agents_lib.make_agent(config.arch, game)
mesh = train_lib.make_mesh(config)
chunk = train_lib.make_train_chunk(config, game, agent, mesh)
betas = jax.numpy.ones((2,))
plain = train_lib.init_states(config, game, agent)['advantage_alignment']
sharded = train_lib.shard_seeds(train_lib.init_states(config, game, agent)['advantage_alignment'], mesh)
devices = sorted({d.id for d in sharded.actor['logits'].sharding.device_set})
hlo = chunk.lower(sharded, betas, 5).compile().as_text()
out_plain, _ = train_lib.make_train_chunk(config, game, agent)(plain, betas, 5)
out_sharded, _ = chunk(sharded, betas, 5)
diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in
           zip(jax.tree.leaves(out_plain), jax.tree.leaves(out_sharded)))
print(json.dumps({'devices': devices, 'diff': diff, 'all_reduces': hlo.count('all-reduce('),
                  'out_spec': list(out_sharded.actor['logits'].sharding.spec)}))
"""


@pytest.mark.parametrize('num_devices,batch_shards', [(2, 1), (4, 2)])
def test_seeds_and_environment_batches_shard_over_a_device_mesh(num_devices, batch_shards):
  # (2, 1): the two seeds on two devices, no communication. (4, 2): a 2 x 2 mesh, each seed's 16
  # environments split over two devices, whose gradients are then summed (all-reduce); the same numbers.
  import subprocess
  import sys

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(
    os.environ,
    XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices}',
    JAX_PLATFORMS='cpu',
    PYTHONPATH=root,
  )
  proc = subprocess.run(
    [sys.executable, '-c', SHARDED_SCRIPT, str(batch_shards)],
    cwd=root,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  found = json.loads(proc.stdout.strip().splitlines()[-1])
  assert found['devices'] == list(range(num_devices)) and found['out_spec'] == ['seeds']
  assert found['diff'] < 1e-5
  assert (found['all_reduces'] > 0) == (batch_shards > 1)


def test_batch_shards_that_do_not_divide_are_one_line_errors():
  config = tiny()
  config.batch_shards = 4
  with pytest.raises(ConfigError, match='positive divisor of the 6 devices, got 4'):
    train_lib.validate_batch_shards(config, 6)
  config.batch_shards = 2
  config.num_envs = 5
  with pytest.raises(ConfigError, match='must divide num_envs 5'):
    train_lib.validate_batch_shards(config, 4)


# Self-play against a buffer of past selves (`config.past_selves`).


def past_config(size=3, every=2, frac=0.5, **overrides):
  """Tabular IPD in self-play: the smallest program to compile."""
  config = tiny(play='self_play', num_envs=16, **overrides)
  config.past_selves.update({'size': size, 'every': every, 'frac': frac})
  return config


def test_past_selves_ring_buffer_wraps_and_samples_filled_slots():
  buf = train_lib.init_past_selves({'w': jnp.zeros(2)}, {'v': jnp.zeros(())}, 3)
  for k in range(5):
    buf = train_lib.add_past_self(buf, {'w': jnp.full(2, k + 1.0)}, {'v': jnp.array(-(k + 1.0))})
  assert int(buf.count) == 5
  np.testing.assert_array_equal(buf.actor['w'][:, 0], [4.0, 5.0, 3.0])  # Snapshots 4, 5 overwrote 1, 2.
  np.testing.assert_array_equal(buf.critic['v'], [-4.0, -5.0, -3.0])
  same = train_lib.add_past_self(buf, {'w': jnp.full(2, 9.0)}, {'v': jnp.array(9.0)}, do=jnp.array(False))
  jax.tree.map(np.testing.assert_array_equal, same, buf)

  empty = train_lib.init_past_selves({'w': jnp.zeros(2)}, {'v': jnp.zeros(())}, 4)
  _, _, is_past = train_lib.sample_past_selves(empty, jax.random.PRNGKey(0), 8, 8)
  assert not is_past.any()  # Nothing to sample from yet.
  two = train_lib.add_past_self(
    train_lib.add_past_self(empty, {'w': jnp.ones(2)}, {'v': 1.0}), {'w': 2 * jnp.ones(2)}, {'v': 2.0}
  )
  actor, critic, is_past = train_lib.sample_past_selves(two, jax.random.PRNGKey(1), 1000, 600)
  np.testing.assert_array_equal(is_past, np.arange(1000) < 600)
  drawn = np.asarray(actor['w'][:600, 0])
  assert set(np.unique(drawn)) == {1.0, 2.0} and 0.4 < (drawn == 1.0).mean() < 0.6  # Uniform, filled only.
  np.testing.assert_array_equal(critic['v'][:600], drawn)  # Actor and critic of the same snapshot.
  again = train_lib.sample_past_selves(two, jax.random.PRNGKey(1), 1000, 600)
  jax.tree.map(np.testing.assert_array_equal, again, (actor, critic, is_past))  # A function of the key.


def one_seed_update(config):
  """(the initial state of seed 0, the jitted update of one seed): smaller to compile than a chunk."""
  game = train_lib.make_game(config)
  agent = agents_lib.make_agent(config.arch, game)
  state = jax.tree.map(lambda x: x[0], train_lib.init_states(config, game, agent)['advantage_alignment'])
  return state, jax.jit(train_lib.make_update(config, game, agent, jnp.array(1.0)))


def test_past_selves_off_is_unchanged():
  """size 0 adds nothing to the state; frac 0 (buffer on, nobody plays it) trains as with the buffer off,
  up to the order of float sums (the on path reduces the losses with weights). The off path is the code
  from before the buffer (checked bit-identical against it when it was added, see the README)."""
  off, update_off = one_seed_update(past_config(size=0, num_seeds=1))
  assert off.past is None
  on, update_on = one_seed_update(past_config(size=3, every=1, frac=0.0, num_seeds=1))
  for _ in range(3):
    off, stats_off = update_off(off, None)
    on, stats_on = update_on(on, None)
  assert int(on.past.count) == 3 and float(stats_on['past_self_fraction']) == 0.0
  for a, b in [(off.actor, on.actor), (off.critic, on.critic), (stats_off, stats_on)]:
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5), a, {k: b[k] for k in a})


def test_frozen_past_self_plays_seat_one_and_is_not_trained():
  """A learner that always cooperates against a buffer of always-defectors (frac 1): seat 1 defects in every
  environment, and neither the learner's actor nor its critic moves on the states only seat 1 visits (DC)."""
  state, update = one_seed_update(past_config(size=2, every=1000, frac=1.0, num_seeds=1))
  cooperate = jnp.tile(jnp.array([[8.0, -8.0]]), (5, 1))
  buf = train_lib.PastSelves(
    {'logits': jnp.stack([-cooperate, -cooperate])},
    jax.tree.map(lambda x: jnp.stack([x, x]), state.critic),
    jnp.array(2),
  )
  state = state.replace(step=jnp.array(1), actor={'logits': cooperate}, past=buf)
  new, stats = update(state, None)
  assert float(stats['past_self_fraction']) == 1.0
  np.testing.assert_allclose(stats['cooperation'], 0.5, atol=0.01)  # Seat 0 cooperates, seat 1 defects.
  np.testing.assert_allclose(stats['return_per_step'], -1.5, atol=0.03)  # (CD: -3, 0) on nearly every step.
  jax.tree.map(np.testing.assert_array_equal, new.past, buf)  # No snapshot (every 1000), no gradient.
  dc = ipd.MEMORY1_STATES.index('DC')
  assert np.any(new.actor['logits'][2] != cooperate[2])  # CD: the learner's own state, trained.
  np.testing.assert_array_equal(new.actor['logits'][dc], cooperate[dc])
  np.testing.assert_array_equal(new.critic['values'][:, dc], state.critic['values'][:, dc])


def test_past_selves_resume_equals_uninterrupted(tmp_path):
  """The buffer is part of the checkpointed train state: the state after 5 updates (the ring wrapped: size 2,
  a snapshot every 2 updates) comes back from an Orbax checkpoint bit for bit, buffer, count, step and key
  included, so training on from it equals training on without the interruption (the jitted chunk is a
  function of its inputs; the loop-level resume is `test_resume_equals_uninterrupted`)."""
  config = past_config(size=2, every=2, frac=0.5)
  game = train_lib.make_game(config)
  agent = agents_lib.make_agent(config.arch, game)
  init = train_lib.init_states(config, game, agent)['advantage_alignment']
  half, _ = train_lib.make_train_chunk(config, game, agent)(init, jnp.ones((config.num_seeds,)), 5)
  assert int(half.past.count[0]) == 3  # Snapshots at updates 0, 2, 4: slot 0 was overwritten.
  with checkpoint.Checkpointer(str(tmp_path), every=1) as ckpt:
    ckpt.save(5, {'aa': half}, force=True)
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    restored = ckpt.restore({'aa': jax.tree.map(jnp.zeros_like, half)}, step=5)['aa']
  assert jax.tree.structure(restored) == jax.tree.structure(half)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(half)):
    assert a.dtype == b.dtype and a.weak_type == b.weak_type
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
  'past,play,fragment',
  [
    ({'size': -1}, 'self_play', 'past_selves.size must be an integer >= 0'),
    ({'size': 4, 'every': 0}, 'self_play', 'past_selves.every must be an integer >= 1'),
    ({'size': 4, 'frac': 1.5}, 'self_play', r'past_selves.frac must be in \[0, 1\]'),
    ({'size': 4}, 'independent', "needs play 'self_play'"),
  ],
)
def test_bad_past_selves_fail_before_compiling(past, play, fragment, tmp_path):
  config = tiny(play=play)
  config.past_selves.update(past)
  with pytest.raises(ConfigError, match=fragment):
    train_lib.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path)
