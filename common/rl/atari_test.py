"""Tests of the ale-py environment behind the gymnax API (CPU, real emulators, a few compiled programs).

* The score tables, game-name resolution and the errors (unknown game, ale-py missing, bad options).
* The exact area resize against hand-computed values (cv2 is not installed here; the module docstring gives
  the comparison with opencv).
* Observations, rewards and info: shapes and dtypes, reward clipping, the frame stack, `final_observation`.
* Life loss is terminal without an emulator reset; truncation at a tiny `max_episode_frames`.
* The host callback under `jit(vmap(vmap(scan)))`: one callback per vector step for the whole 2x2 batch, four
  distinct emulators with distinct seeds, same keys -> same observations, a vmapped run == the same run alone.
* In-process chunks == the uninterrupted run; a stale or foreign state restarts its emulator (truncated).
* Host workers: the same outputs as in process (rollout with new games, restarted states), ids per worker,
  worker errors raised here, `close()` and a dead worker.
* `common.rl.dqn.make_train` runs DrQ(eps) on Pong under `jit(vmap(train))`.
"""

import functools
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip('ale_py')

from common.errors import ConfigError
from common.rl import atari
from common.rl import dqn
from common.rl import networks


def _rollout(env, num_steps, action=None):
  """`run(key) -> (obs0, state0, final_state, per-step outputs)`: reset, then `num_steps` steps with uniformly
  random actions (or the fixed `action`), all in one scan."""

  def run(key):
    key_reset, key_steps = jax.random.split(key)
    obs0, state0 = env.reset(key_reset, env.default_params)
    return (obs0, state0) + _steps(env, state0, key_steps, num_steps, action)

  return run


def _steps(env, state, key, num_steps, action=None):
  def body(state, key):
    key_act, key_env = jax.random.split(key)
    a = env.action_space().sample(key_act) if action is None else jnp.int32(action)
    obs, state, reward, terminated, truncated, info = env.step(key_env, state, a, env.default_params)
    return state, {
      'obs': obs,
      'state': state,
      'reward': reward,
      'terminated': terminated,
      'truncated': truncated,
      **info,
    }

  return jax.lax.scan(body, state, jax.random.split(key, num_steps))


def _fresh(frame):
  """The frame stack of a new episode: zeros, then `frame`."""
  return np.concatenate([np.zeros(frame.shape + (3,), np.uint8), frame[..., None]], axis=-1)


@pytest.fixture(scope='module')
def pong():
  return atari.make('Pong')[0]


# --------------------------------------------------------------------------- #
# Tables, names, errors, resize.
# --------------------------------------------------------------------------- #


def test_score_tables():
  assert list(atari.ATARI_100K_GAMES) == sorted(atari.ATARI_100K_GAMES) and len(atari.ATARI_100K_GAMES) == 26
  assert set(atari.HUMAN_SCORES) == set(atari.RANDOM_SCORES) == set(atari.ATARI_100K_GAMES)
  assert (atari.RANDOM_SCORES['Pong'], atari.HUMAN_SCORES['Pong']) == (-20.7, 14.6)
  assert (atari.RANDOM_SCORES['Breakout'], atari.HUMAN_SCORES['Breakout']) == (1.7, 30.5)
  assert all(atari.HUMAN_SCORES[g] > atari.RANDOM_SCORES[g] for g in atari.ATARI_100K_GAMES)
  assert atari.human_normalized_score('Pong', 14.6) == pytest.approx(1.0)
  assert atari.human_normalized_score('Breakout', 1.7) == pytest.approx(0.0)


def test_every_atari_100k_rom_ships_with_ale_py():
  roms = set(sys.modules['ale_py'].roms.get_all_rom_ids())
  assert set(atari.ATARI_100K_GAMES.values()) <= roms


def test_game_names_and_errors(pong):
  assert pong.name == 'Pong' and pong.num_actions == 6 and pong.action_space().n == 6
  assert pong.observation_space().shape == (84, 84, 4) and pong.observation_space().dtype == jnp.uint8
  assert atari._resolve_game('ms_pacman') == ('MsPacman', 'ms_pacman')
  assert atari._resolve_game('UpNDown') == ('UpNDown', 'up_n_down')
  with pytest.raises(ConfigError, match="unknown Atari game 'Pongg'; did you mean 'Pong'"):
    atari.make('Pongg')
  with pytest.raises(ConfigError, match='MsPacman'):
    atari.human_normalized_score('MsPacmann', 0.0)
  with pytest.raises(ConfigError, match='frame_skip must be an integer >= 1'):
    atari.AtariEnv('Pong', frame_skip=0)
  with pytest.raises(ConfigError, match='max_episode_frames'):
    atari.AtariEnv('Pong', max_episode_frames=2)


def test_missing_ale_py_is_a_config_error(monkeypatch):
  monkeypatch.setitem(sys.modules, 'ale_py', None)  # `import ale_py` now raises ImportError.
  with pytest.raises(ConfigError, match=r"pip install -e '\.\[atari\]'"):
    atari.make('Pong')


def test_area_resize_hand_computed():
  # 5 -> 2: output 0 covers source [0, 2.5) (weights 1, 1, 0.5), output 1 covers [2.5, 5).
  rows = np.array([10, 20, 30, 40, 50], np.uint8)
  image = np.repeat(rows[:, None], 5, axis=1)
  expected = np.array([[18, 18], [42, 42]])  # (10 + 20 + 15) / 2.5, (15 + 40 + 50) / 2.5.
  np.testing.assert_array_equal(atari.area_resize(image, 2), expected)
  # Integer factor: the 2x2 block mean, rounded half to even (1.5 -> 2, 2.5 -> 2).
  image = np.array([[1, 2, 2, 3], [1, 2, 2, 3]], np.uint8)
  np.testing.assert_array_equal(atari.area_resize(image[None], 2)[0, 0], [2, 2])
  frames = np.random.default_rng(0).integers(0, 256, (3, 168, 168), dtype=np.uint8)
  block_mean = frames.reshape(3, 84, 2, 84, 2).astype(np.float64).mean(axis=(2, 4))
  np.testing.assert_array_equal(atari.area_resize(frames, 84), np.round(block_mean))  # np.round: half even.
  np.testing.assert_array_equal(atari.area_resize(np.full((210, 160), 77, np.uint8), 84), 77)
  # Batch-independent: one frame alone == the same frame in a batch.
  np.testing.assert_array_equal(atari.area_resize(frames[1], 84), atari.area_resize(frames, 84)[1])


# --------------------------------------------------------------------------- #
# Observations, rewards, terminations.
# --------------------------------------------------------------------------- #


def test_reset_step_shapes_clipping_and_frame_stack():
  env = atari.AtariEnv('Alien')  # Eats 10-point dots at once: raw rewards above 1.
  obs0, state0, _, out = jax.jit(_rollout(env, 40))(jax.random.key(0))
  assert obs0.shape == (84, 84, 4) and obs0.dtype == jnp.uint8
  assert not np.any(np.asarray(obs0)[..., :3]) and np.any(np.asarray(obs0)[..., 3])
  assert out['obs'].shape == (40, 84, 84, 4) and out['obs'].dtype == jnp.uint8
  assert out['reward'].dtype == jnp.float32 and out['terminated'].dtype == jnp.bool_
  assert out['final_observation'].shape == (40, 84, 84, 4) and out['final_observation'].dtype == jnp.uint8
  raw = np.asarray(out['raw_reward'])
  assert raw.max() > 1, 'Alien should score a 10-point dot within 40 steps'
  np.testing.assert_array_equal(out['reward'], np.clip(raw, -1, 1))
  # Without an episode end the observation is the final observation, shifted by one frame each step.
  obs = np.concatenate([np.asarray(obs0)[None], np.asarray(out['obs'])])
  assert not np.any(out['terminated'] | out['truncated'])
  np.testing.assert_array_equal(out['final_observation'], obs[1:])
  np.testing.assert_array_equal(obs[1:, ..., :3], obs[:-1, ..., 1:])
  np.testing.assert_array_equal(out['state'].tick, np.arange(1, 41))
  # clip_rewards=False returns the raw reward.
  raw_env = atari.AtariEnv('Alien', clip_rewards=False)
  _, _, _, raw_out = jax.jit(_rollout(raw_env, 40))(jax.random.key(0))
  np.testing.assert_array_equal(raw_out['reward'], raw)
  np.testing.assert_array_equal(raw_out['obs'], out['obs'])


def test_life_loss_is_terminal_without_emulator_reset():
  # Breakout with FIRE every step: the paddle never moves and the ball is lost every 25 steps.
  life_env = atari.AtariEnv('Breakout')
  game_env = atari.AtariEnv('Breakout', terminal_on_life_loss=False)
  _, state0, _, out = jax.jit(_rollout(life_env, 130, action=1))(jax.random.key(0))
  _, _, _, game_out = jax.jit(_rollout(game_env, 25, action=1))(jax.random.key(0))
  assert int(state0.lives) == 5
  lives = np.asarray(out['lives'])
  first = int(np.argmax(np.asarray(out['terminated'])))
  assert lives[first] == 4 and lives[first - 1] == 5
  assert not out['game_over'][first] and not out['truncated'][first]
  assert int(out['state'].episode_step[first]) == first + 1  # The game goes on: no emulator reset.
  assert float(out['discount'][first]) == 0.0
  final = np.asarray(out['final_observation'][first])
  np.testing.assert_array_equal(out['obs'][first], _fresh(final[..., -1]))  # A new agent episode.
  # Without life-loss termination the same step loses the life but is not terminal.
  assert not np.any(game_out['terminated']) and int(game_out['lives'][first]) == 4
  # The fifth life loss is the game over: the emulator resets (5 lives, step count 0).
  over = np.nonzero(np.asarray(out['game_over']))[0]
  assert len(over) == 1 and out['terminated'][over[0]] and lives[over[0]] == 5
  assert int(out['state'].episode_step[over[0]]) == 0
  assert int(np.sum(np.asarray(out['terminated']))) == 5


def test_truncation():
  env = atari.AtariEnv('Pong', max_episode_frames=40)  # 10 agent steps.
  _, _, _, out = jax.jit(_rollout(env, 25))(jax.random.key(1))
  np.testing.assert_array_equal(np.nonzero(np.asarray(out['truncated']))[0], [9, 19])
  np.testing.assert_array_equal(out['game_over'], out['truncated'])
  assert not np.any(out['terminated'])
  np.testing.assert_array_equal(out['state'].episode_step[:11], [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
  assert not np.any(np.asarray(out['obs'][9])[..., :3])
  assert np.all(np.asarray(out['final_observation'][9])[..., :3].any(axis=(0, 1)))


def test_noop_starts_follow_the_key():
  env = atari.AtariEnv('MsPacman', noop_max=30)
  plain = atari.AtariEnv('MsPacman')
  keys = jax.random.split(jax.random.key(0), 4)
  obs = np.asarray(jax.jit(jax.vmap(env.reset))(keys)[0])
  again = np.asarray(jax.jit(jax.vmap(env.reset))(keys)[0])
  plain_obs = np.asarray(jax.jit(jax.vmap(plain.reset))(keys)[0])
  np.testing.assert_array_equal(obs, again)
  assert any(not np.array_equal(obs[0], obs[i]) for i in range(1, 4))
  assert all(np.array_equal(plain_obs[0], plain_obs[i]) for i in range(1, 4))


# --------------------------------------------------------------------------- #
# The host callback under jit / vmap / scan.
# --------------------------------------------------------------------------- #


def test_vmapped_scan_one_callback_per_step_distinct_emulators_deterministic(pong):
  steps = 20
  run = _rollout(pong, steps)
  batched = jax.jit(jax.vmap(jax.vmap(run)))
  keys = jax.random.split(jax.random.key(3), 4).reshape(2, 2)
  before = pong.host_stats()
  obs0, state0, final, out = jax.block_until_ready(batched(keys))
  after = pong.host_stats()
  # One reset callback and one step callback per vector step, each for the whole 2x2 batch.
  assert after['reset_calls'] - before['reset_calls'] == 1
  assert after['step_calls'] - before['step_calls'] == steps
  assert after['steps'] - before['steps'] == 4 * steps and after['restarts'] == before['restarts']
  ids = np.asarray(state0.emulator).ravel()
  assert len(set(ids.tolist())) == 4 and np.all(np.asarray(final.emulator).ravel() == ids)
  np.testing.assert_array_equal(final.tick, np.full((2, 2), steps))
  seeds = pong.emulator_seeds()
  assert len({seeds[i] for i in ids.tolist()}) == 4
  # Same keys: the same observations from four new emulators; different keys: different games.
  obs0_again, state_again, _, out_again = batched(keys)
  assert not set(np.asarray(state_again.emulator).ravel().tolist()) & set(ids.tolist())
  np.testing.assert_array_equal(obs0_again, obs0)
  for name in ('obs', 'raw_reward', 'terminated', 'truncated', 'final_observation'):
    np.testing.assert_array_equal(out_again[name], out[name], err_msg=name)
  assert not np.array_equal(out['obs'][0, 0], out['obs'][0, 1])
  # A vmapped run == the same run alone.
  _, _, _, alone = jax.jit(run)(keys[1, 0])
  np.testing.assert_array_equal(alone['obs'], out['obs'][1, 0])


def test_chunks_equal_uninterrupted_and_stale_states_restart(pong):
  step = jax.jit(lambda state, key: _steps(pong, state, key, 10))
  reset = jax.jit(pong.reset)
  key_steps = jax.random.split(jax.random.key(5), 2)
  _, start = reset(jax.random.key(4))
  middle, first = step(start, key_steps[0])
  end, second = step(middle, key_steps[1])
  _, start_again = reset(jax.random.key(4))
  middle_again, first_again = step(start_again, key_steps[0])
  end_again, second_again = step(middle_again, key_steps[1])
  np.testing.assert_array_equal(second_again['obs'], second['obs'])
  np.testing.assert_array_equal(end_again.frames, end.frames)
  # Stepping `middle` again (already stepped): a new emulator for it, the episode truncated.
  restarts = pong.host_stats()['restarts']
  obs, state, reward, terminated, truncated, info = jax.jit(pong.step)(jax.random.key(0), middle, 0)
  assert bool(truncated) and not bool(terminated) and float(reward) == 0.0
  assert int(state.emulator) not in (int(middle.emulator), int(end.emulator)) and int(state.tick) == 0
  assert not np.any(np.asarray(obs)[..., :3])
  assert pong.host_stats()['restarts'] == restarts + 1
  # The live branch is untouched: `end` continues (its tick is current).
  _, cont, _, _, cont_truncated, _ = jax.jit(pong.step)(jax.random.key(0), end, 0)
  assert int(cont.emulator) == int(end.emulator) and int(cont.tick) == 21 and not bool(cont_truncated)
  # A state of another env (a restored checkpoint, in a new process) restarts too.
  other = atari.AtariEnv('Pong')
  _, foreign, _, _, foreign_truncated, _ = jax.jit(other.step)(jax.random.key(0), cont, 0)
  assert bool(foreign_truncated) and int(foreign.pool) != int(cont.pool)
  assert other.host_stats()['restarts'] == 1


# --------------------------------------------------------------------------- #
# Host workers.
# --------------------------------------------------------------------------- #

_OUTPUTS = (
  'obs',
  'final_observation',
  'reward',
  'raw_reward',
  'terminated',
  'truncated',
  'game_over',
  'lives',
)


def _assert_same_outputs(out, expected):
  for name in _OUTPUTS:
    np.testing.assert_array_equal(out[name], expected[name], err_msg=name)
  for name in ('tick', 'episode_step', 'lives', 'frames'):
    np.testing.assert_array_equal(getattr(out['state'], name), getattr(expected['state'], name), err_msg=name)


@pytest.fixture(scope='module')
def short_pong():
  """`{host_workers: env}`: Pong with 10-step games (truncation and new games within a short rollout), in
  process and with 2 host workers."""
  envs = {w: atari.AtariEnv('Pong', max_episode_frames=40, host_workers=w) for w in (0, 2)}
  yield envs
  for env in envs.values():
    env.close()


def test_host_workers_match_in_process(short_pong):
  keys = jax.random.split(jax.random.key(7), 4)
  runs = {
    w: jax.block_until_ready(jax.jit(jax.vmap(_rollout(env, 30)))(keys)) for w, env in short_pong.items()
  }
  (obs0, _, final, out), (w_obs0, w_state0, w_final, w_out) = runs[0], runs[2]
  np.testing.assert_array_equal(w_obs0, obs0)
  np.testing.assert_array_equal(w_final.frames, final.frames)
  _assert_same_outputs(w_out, out)
  # Games ended (truncated every 10 steps) and new ones started in the rollout.
  np.testing.assert_array_equal(np.nonzero(np.asarray(out['truncated'])[0])[0], [9, 19, 29])
  assert not np.any(np.asarray(out['obs'])[:, 9, ..., :3])
  # Ids: the reset's batch split in two contiguous halves, worker w numbering w, w + 2, ...; all share the
  # pool's token, and the emulators keep their ids.
  env = short_pong[2]
  ids = np.asarray(w_state0.emulator)
  np.testing.assert_array_equal(ids % 2, [0, 0, 1, 1])
  assert len(set(ids.tolist())) == 4 and np.all(np.asarray(w_final.emulator) == ids)
  assert np.all(np.asarray(w_final.pool) == env._pool.token)
  stats = env.host_stats()
  assert stats == dict(reset_calls=1, step_calls=30, steps=120, created=4, restarts=0, emulators=4)
  assert set(env.emulator_seeds()) == set(ids.tolist())
  # The workers import no JAX.
  modules = env._pool._ask({0: ('modules', ()), 1: ('modules', ())})
  assert all('jax' not in m and 'common.rl.ale_host' in m for m in modules.values())


def test_host_workers_restart_foreign_and_stale_states(short_pong):
  other = atari.AtariEnv('Pong', max_episode_frames=40)
  _, foreign = jax.jit(jax.vmap(other.reset))(jax.random.split(jax.random.key(8), 4))
  keys = jax.random.split(jax.random.key(9), 4)
  runs = {}
  for w, env in short_pong.items():
    steps = jax.jit(jax.vmap(functools.partial(_steps, env, num_steps=6)))
    restarts = env.host_stats()['restarts']
    end, out = steps(foreign, keys)  # Another pool's states: each restarted at a fresh emulator.
    stale = jax.tree.map(lambda x: x[:, 2], out['state'])  # Already stepped: restarted too.
    stale_end, stale_out = steps(stale, keys)
    assert env.host_stats()['restarts'] == restarts + 8
    runs[w] = end, out, stale_end, stale_out
  (end, out, stale_end, stale_out), (w_end, w_out, w_stale_end, w_stale_out) = runs[0], runs[2]
  assert np.all(np.asarray(out['truncated'])[:, 0]) and not np.any(np.asarray(out['reward'])[:, 0])
  np.testing.assert_array_equal(end.tick, np.full(4, 5))  # Restarted at tick 0, then stepped 5 times.
  _assert_same_outputs(w_out, out)
  _assert_same_outputs(w_stale_out, stale_out)
  assert np.all(np.asarray(w_stale_out['truncated'])[:, 0])
  # New ids, unique, each on the worker that made it (foreign states: worker `row % 2`).
  token = short_pong[2]._pool.token
  ids = np.asarray(w_end.emulator)
  stale_ids = np.asarray(w_stale_end.emulator)
  np.testing.assert_array_equal(ids % 2, [0, 1, 0, 1])
  # A stale state goes to the worker that owns its id, which restarts it there.
  np.testing.assert_array_equal(np.asarray(stale.emulator), ids)
  np.testing.assert_array_equal(stale_ids % 2, ids % 2)
  assert len(set(ids.tolist()) | set(stale_ids.tolist())) == 8
  assert np.all(np.asarray(w_end.pool) == token) and np.all(np.asarray(w_stale_end.pool) == token)


def test_host_worker_errors_and_close():
  env = atari.AtariEnv('Pong', host_workers=2)
  pool = env._pool
  seed, noops = np.arange(4, dtype=np.int32), np.zeros(4, np.int32)
  ids, token, tick, _, _, _ = pool.reset(seed, noops)
  # Row 2 (id 1) is on worker 1: its error comes back with the worker's traceback; the workers go on.
  with pytest.raises(
    atari.HostWorkerError, match=r'(?s)host worker 1 failed.*Atari action 9 is out of range'
  ):
    pool.step(ids, token, tick, np.array([0, 0, 9, 0], np.int32), seed, noops)
  processes = [p for p, _ in pool._workers]
  assert all(p.is_alive() for p in processes) and env.num_emulators == 4
  # close() stops the workers; the next callback starts new ones, which restart the old states (new ids).
  env.close()
  assert not any(p.is_alive() for p in processes) and env.num_emulators == 0
  out = pool.step(ids, token, tick + 1, np.zeros(4, np.int32), seed, noops)
  assert np.all(out[9]) and not set(out[0].tolist()) & set(ids.tolist())
  # A worker that dies: the call raises, the workers stop, and the next call starts new ones.
  # Killed before the call's send (the pipe is broken) or during it (its answer never comes): either way.
  pool._workers[0][0].kill()
  with pytest.raises(atari.HostWorkerError, match='host worker 0 (exited|is gone)'):
    pool.step(out[0], token, out[2], np.zeros(4, np.int32), seed, noops)
  assert not pool._workers
  again = pool.step(out[0], token, out[2], np.zeros(4, np.int32), seed, noops)
  assert np.all(again[9]) and env.host_stats()['restarts'] == 8
  env.close()


@pytest.mark.parametrize('workers', [-1, 1.5, True, '2'])
def test_bad_host_workers_is_a_config_error(workers):
  with pytest.raises(ConfigError, match='host_workers must be an integer >= 0'):
    atari.AtariEnv('Pong', host_workers=workers)


# --------------------------------------------------------------------------- #
# End to end with the value-based agent.
# --------------------------------------------------------------------------- #


class TinyTorso(nn.Module):
  """A cheap conv torso for the smoke test: one 8x8 stride-8 conv on the scaled frames."""

  @nn.compact
  def __call__(self, obs):
    x = obs.astype(jnp.float32) / 255.0
    x = nn.relu(nn.Conv(4, (8, 8), strides=(8, 8))(x))
    return nn.relu(nn.Dense(16)(x.reshape(-1)))


def test_drq_trains_on_pong_under_jit_vmap():
  env, env_params = atari.make('Pong')
  config, hparams = dqn.drq_eps_preset(
    num_envs=2,
    total_env_steps=64,
    buffer_capacity=64,
    batch_size=4,
    max_n_step=3,
    augment_pad=4,
    obs_storage_dtype='uint8',
  )
  # One update per vector step of 2 envs (one compiled update slot: a smaller program).
  hparams = hparams.replace(learning_starts=16, n_step=3, eps_decay_steps=16, update_period=2)
  dqn.check_hparams(config, hparams)  # Inside jit(vmap) the check cannot run.
  network = networks.QNetwork(TinyTorso(), num_actions=env.action_space(env_params).n, dueling=True)
  agent = dqn.make_train(env, env_params, network, config)
  before = env.host_stats()
  seeds = jax.random.split(jax.random.key(0), 2)
  state, metrics = jax.block_until_ready(jax.jit(jax.vmap(agent.train))(seeds, dqn.stack([hparams, hparams])))
  stats = env.host_stats()
  assert stats['step_calls'] - before['step_calls'] == 32 and stats['steps'] - before['steps'] == 128
  assert stats['restarts'] == 0
  np.testing.assert_array_equal(metrics['updates'], [24, 24])  # Env steps 18, 20, ..., 64.
  assert np.all(np.isfinite(np.asarray(metrics['loss']))) and np.all(np.asarray(metrics['grad_norm']) > 0)
  assert state.buffer.data['obs'].dtype == jnp.uint8 and state.obs.shape == (2, 2, 84, 84, 4)
  np.testing.assert_array_equal(state.env_state.tick, np.full((2, 2), 32))
