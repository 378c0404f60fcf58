"""Tests of the scanned value-based agent on a tiny toy environment (CPU, a handful of compiled programs).

* The scanned loop against a plain Python loop (numpy replay, Python-level update and target-sync schedule, as
  Dopamine's agent does it): same parameters, target syncs at exactly the same steps.
* Chunking: N iterations in one scan == N chunks of one iteration, bitwise.
* `jit(vmap(train))` over seeds *and* hyper-parameters (learning rate, discount, n-step, update period, target
  period, epsilon, loss) == each run made alone, bitwise on CPU (the logged loss to float32 rounding).
* A batch size masked within a larger static batch == the smaller static batch (to float32 rounding).
* The DER/DrQ parts (C51, dueling, prioritized replay, augmentation) vmapped over two hyper-parameter sets ==
  the runs made alone, bitwise.
"""

import dataclasses
import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
import pytest

from common import nn as common_nn
from common.errors import ConfigError
from common.rl import dqn
from common.rl import networks


class Discrete:
  def __init__(self, n):
    self.n = n


@flax.struct.dataclass
class ChainState:
  pos: jax.Array
  time: jax.Array


class Chain:
  """A gymnax-1.0-style chain: states 0..length-1, start at 0; action 1 moves right and 0 left, each slipping
  to the other direction with probability 0.2; reward 1 and termination at the right end; truncation after
  `max_steps`. Auto-resets, with the true last observation in `info['final_observation']`. Observations are
  one-hot `[length]`, or `[1, length, 1]` images with `image=True`."""

  def __init__(self, length=4, max_steps=6, image=False):
    self.length, self.max_steps, self.image = length, max_steps, image

  def action_space(self, params):
    return Discrete(2)

  def _obs(self, state):
    obs = jax.nn.one_hot(state.pos, self.length)
    return obs.reshape(1, self.length, 1) if self.image else obs

  def reset(self, key, params):
    state = ChainState(jnp.int32(0), jnp.int32(0))
    return self._obs(state), state

  def step(self, key, state, action, params):
    slip = jax.random.uniform(key) < 0.2
    move = jnp.where((action == 1) ^ slip, 1, -1)
    moved = ChainState(jnp.clip(state.pos + move, 0, self.length - 1), state.time + 1)
    terminated = moved.pos == self.length - 1
    truncated = (moved.time >= self.max_steps) & ~terminated
    done = terminated | truncated
    start = ChainState(jnp.int32(0), jnp.int32(0))
    new = jax.tree.map(lambda a, b: jnp.where(done, a, b), start, moved)
    reward = terminated.astype(jnp.float32)
    return self._obs(new), new, reward, terminated, truncated, {'final_observation': self._obs(moved)}


ENV = Chain()
NET = networks.QNetwork(common_nn.MLP((8,), activate_final=True), num_actions=2)
# 2 envs, 8 rows (wraps in the 30 iterations), n-step 3, two update slots per vector step.
CONFIG = dqn.Config(
  num_envs=2,
  total_env_steps=60,
  buffer_capacity=16,
  batch_size=4,
  max_n_step=3,
  max_updates_per_step=2,
)
ITERATIONS = CONFIG.total_env_steps // CONFIG.num_envs
HP = dqn.HParams(
  learning_rate=1e-2,
  gamma=0.9,
  n_step=3,
  eps_start=1.0,
  eps_end=0.1,
  eps_decay_steps=20,
  learning_starts=7,  # Not a multiple of num_envs: updates start mid vector step.
  update_period=1,
  target_update_period=5,  # Not a multiple of num_envs either.
)


@pytest.fixture(scope='module')
def agent():
  return dqn.make_train(ENV, None, NET, CONFIG)


@pytest.fixture(scope='module')
def compiled(agent):
  """The unbatched programs, shared by the tests (one compile each)."""
  return {
    'init': jax.jit(agent.init),
    'chunk_all': jax.jit(functools.partial(agent.run_chunk, num_iterations=ITERATIONS)),
    'chunk_one': jax.jit(functools.partial(agent.run_chunk, num_iterations=1)),
  }


def _assert_trees_equal(a, b):
  flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
  flat_b = jax.tree.leaves(b)
  for (path, x), y in zip(flat_a, flat_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


def _key_data(state):
  return state.replace(rng=jax.random.key_data(state.rng))


# --------------------------------------------------------------------------- #
# A Python reference: Dopamine's loop, one env step at a time, numpy replay.
# --------------------------------------------------------------------------- #


def _reference_run(state, hp, iterations):
  """Runs `iterations` vector steps from `state` with Python control flow; returns per-iteration records."""
  e, rows, batch, n = CONFIG.num_envs, CONFIG.buffer_capacity // CONFIG.num_envs, CONFIG.batch_size, hp.n_step
  apply = jax.jit(lambda p, o: jax.vmap(lambda x: NET.apply(p, x))(o))
  env_step = jax.jit(jax.vmap(ENV.step, in_axes=(0, 0, 0, None)), static_argnums=())

  @jax.jit
  def grad_step(params, target, opt_state, obs, action, ret, disc, next_obs):
    def loss_fn(p):
      q = jax.vmap(lambda x: NET.apply(p, x))(obs)[jnp.arange(batch), action]
      next_online = jax.vmap(lambda x: NET.apply(p, x))(next_obs)
      next_target = jax.vmap(lambda x: NET.apply(target, x))(next_obs)
      best = jnp.argmax(next_online, axis=1)
      y = jax.lax.stop_gradient(ret + disc * next_target[jnp.arange(batch), best])
      x = jnp.abs(y - q)
      return jnp.mean(jnp.where(x <= 1.0, 0.5 * x**2, x - 0.5))

    grads = jax.grad(loss_fn)(params)
    return dqn.adam_update(params, opt_state, grads, hp.learning_rate, hp.adam_eps)

  params, target, opt_state = state.params, state.target_params, state.opt_state
  obs, env_state = state.obs, state.env_state
  store = {k: [None] * rows for k in ('obs', 'action', 'reward', 'done', 'terminal', 'next_obs')}
  pos = count = 0
  records = []
  for it in range(iterations):
    before = it * e
    eps = hp.eps_start + (hp.eps_end - hp.eps_start) * min(
      max((before - hp.learning_starts) / hp.eps_decay_steps, 0), 1
    )
    key_act = jax.random.fold_in(jax.random.fold_in(state.rng, 0), it)
    key_random, key_explore = jax.random.split(key_act)
    greedy = np.argmax(np.asarray(apply(params, obs)), axis=1)
    random_action = np.asarray(jax.random.randint(key_random, (e,), 0, 2, dtype=jnp.int32))
    explore = np.asarray(jax.random.uniform(key_explore, (e,))) < np.float32(eps)
    action = np.where(explore, random_action, greedy).astype(np.int32)
    key_env = jax.random.fold_in(jax.random.fold_in(state.rng, 1), it)
    next_obs, env_state, reward, terminated, truncated, info = env_step(
      jax.random.split(key_env, e), env_state, jnp.asarray(action), None
    )
    for name, value in (
      ('obs', obs),
      ('action', action),
      ('reward', reward),
      ('done', terminated | truncated),
      ('terminal', terminated),
      ('next_obs', info['final_observation']),
    ):
      store[name][pos] = np.asarray(value)
    pos, count = (pos + 1) % rows, min(count + 1, rows)
    obs = next_obs
    changed = False
    for s in range(before + 1, before + e + 1):  # Dopamine: train, then sync, at every env step.
      if s % hp.update_period == 0 and s > hp.learning_starts:
        key = jax.random.fold_in(jax.random.fold_in(state.rng, 2), s)
        flat = np.asarray(
          jax.random.randint(jax.random.split(key)[0], (batch,), 0, count * e, dtype=jnp.int32)
        )
        b_obs, b_action, b_ret, b_disc, b_next = [], [], [], [], []
        for row, env in zip(flat // e, flat % e):
          ret, disc, last = np.float32(0), np.float32(1), row
          newest_distance = (pos - row - 1) % rows + 1  # Rows from the start up to the newest one.
          for k in range(min(n, newest_distance)):
            r = (row + k) % rows
            ret = np.float32(ret + disc * store['reward'][r][env])
            disc = np.float32(disc * np.float32(hp.gamma))
            last = r
            if store['done'][r][env]:
              disc = np.float32(0) if store['terminal'][r][env] else disc
              break
          b_obs.append(store['obs'][row][env])
          b_action.append(store['action'][row][env])
          b_ret.append(ret)
          b_disc.append(disc)
          b_next.append(store['next_obs'][last][env])
        params, opt_state = grad_step(
          params, target, opt_state, *map(np.stack, (b_obs, b_action, b_ret, b_disc, b_next))
        )
      if s % hp.target_update_period == 0:
        changed = changed or not all(
          np.array_equal(a, b) for a, b in zip(jax.tree.leaves(target), jax.tree.leaves(params))
        )
        target = params
    records.append({'params': params, 'target': target, 'target_changed': changed})
  return records


def test_scan_matches_python_loop_and_target_syncs(agent, compiled):
  state0 = compiled['init'](jax.random.key(3), HP)
  reference = _reference_run(state0, HP, ITERATIONS)
  # One iteration per call, to see the target network after every vector step.
  state, changed = state0, []
  for it in range(ITERATIONS):
    new, metrics = compiled['chunk_one'](state, HP)
    changed.append(
      not all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(state.target_params), jax.tree.leaves(new.target_params))
      )
    )
    state = new
    np.testing.assert_allclose(
      ravel_pytree(state.params)[0],
      ravel_pytree(reference[it]['params'])[0],
      atol=1e-6,
    )
    np.testing.assert_allclose(
      ravel_pytree(state.target_params)[0],
      ravel_pytree(reference[it]['target'])[0],
      atol=1e-6,
    )
  assert changed == [r['target_changed'] for r in reference]
  # Updates start at env step 8 (> learning_starts = 7), so the first effective sync is at step 10
  # (iteration 4, env steps 9-10); then every 5 env steps: 15 (it. 7), 20 (it. 9), 25 (it. 12), ...
  assert [i for i, c in enumerate(changed) if c] == [4, 7, 9, 12, 14, 17, 19, 22, 24, 27, 29]
  assert int(state.updates) == CONFIG.total_env_steps - HP.learning_starts
  # Chunking does not change the run: one scan of 30 iterations == 30 scans of one, bitwise.
  whole, summary = compiled['chunk_all'](state0, HP)
  _assert_trees_equal(_key_data(whole), _key_data(state))
  assert int(summary['env_steps']) == CONFIG.total_env_steps
  assert int(summary['updates']) == 53 and int(summary['target_syncs']) == 12  # Syncs at 5, 10, ..., 60.
  assert int(summary['episodes']) > 0 and np.isfinite(float(summary['loss']))


def test_vmap_over_seeds_and_hparams_is_bitwise_the_single_runs(agent, compiled):
  other = HP.replace(
    learning_rate=3e-2,
    gamma=0.8,
    n_step=2,
    update_period=3,
    target_update_period=4,
    eps_end=0.3,
    mse_loss=True,
    max_grad_norm=0.5,
  )
  runs = [(0, HP), (1, HP), (0, other)]
  seeds = jnp.stack([jax.random.key(seed) for seed, _ in runs])
  swept, metrics = jax.jit(jax.vmap(agent.train))(seeds, dqn.stack([hp for _, hp in runs]))
  finals = []
  for i, (seed, hp) in enumerate(runs):
    alone, alone_metrics = compiled['chunk_all'](compiled['init'](jax.random.key(seed), hp), hp)
    _assert_trees_equal(_key_data(alone), jax.tree.map(lambda x: x[i], _key_data(swept)))
    # The logged loss is a forward value the gradient does not use: XLA may reduce its batch in another order
    # when vmapped, so it is equal to float32 rounding; the state above (the run itself) is bitwise equal.
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6),
      alone_metrics,
      jax.tree.map(lambda x: x[i], metrics),
    )
    finals.append(ravel_pytree(alone.params)[0])
  assert not np.array_equal(finals[0], finals[1]) and not np.array_equal(finals[0], finals[2])
  # Greedy evaluation of the last run on fresh environments.
  evaluation = jax.jit(agent.evaluate, static_argnums=2)(alone, other, 20, jax.random.key(9))
  assert int(evaluation['episodes']) >= 2 * 20 // Chain().max_steps
  assert 0.0 <= float(evaluation['episode_return']) <= 1.0


def test_der_parts_vmapped_are_bitwise_the_single_runs():
  """C51 + dueling + double + prioritized replay + random-shift augmentation, swept over two settings."""
  env = Chain(image=True)
  torso = common_nn.MLP((8,), activate_final=True)
  net = networks.QNetwork(torso, num_actions=2, num_atoms=5, dueling=True)
  config = dqn.Config(
    num_envs=1,
    total_env_steps=24,
    buffer_capacity=16,
    batch_size=4,
    max_n_step=3,
    num_atoms=5,
    prioritized=True,
    augment_pad=1,
    obs_storage_dtype='uint8',
  )
  agent = dqn.make_train(env, None, net, config)
  base = HP.replace(learning_starts=4, target_update_period=3, v_min=-2.0, v_max=2.0)
  sweep = [base, base.replace(learning_rate=3e-3, v_max=3.0, priority_exponent=1.0, importance_exponent=0.0)]
  swept, metrics = jax.jit(jax.vmap(agent.train))(jnp.stack([jax.random.key(7)] * 2), dqn.stack(sweep))
  train = jax.jit(agent.train)
  for i, hp in enumerate(sweep):
    alone, alone_metrics = train(jax.random.key(7), hp)
    _assert_trees_equal(_key_data(alone), jax.tree.map(lambda x: x[i], _key_data(swept)))
    assert np.isfinite(float(alone_metrics['loss'])) and int(alone_metrics['updates']) == 20
    # Priorities moved away from the initial max priority 1 and observations were stored as uint8.
    assert len(np.unique(np.asarray(alone.buffer.priorities))) > 2
    assert alone.buffer.data['obs'].dtype == jnp.uint8
  q = agent.q_values(alone.params, sweep[1], jnp.ones((3, 1, 4, 1)))
  assert q.shape == (3, 2) and np.all(np.abs(np.asarray(q)) <= 3.0)


def test_noisy_nets_follow_the_seed_and_step():
  """Noisy nets (C51, dueling): a run cut into chunks equals the uninterrupted run bitwise (noise keys are
  functions of the seed and step), the noise scales learn, evaluation has no noise, and a network without
  NoisyDense layers (or a noisy one without `Config.noisy`) is refused."""
  net = networks.QNetwork(common_nn.MLP((8,), activate_final=True), 2, num_atoms=5, dueling=True, noisy=True)
  config = dqn.Config(
    num_envs=1, total_env_steps=12, buffer_capacity=16, batch_size=4, max_n_step=3, num_atoms=5,
    prioritized=True, noisy=True,
  )  # fmt: skip
  agent = dqn.make_train(ENV, None, net, config)
  hp = HP.replace(learning_starts=2, target_update_period=3, v_min=-2.0, v_max=2.0)
  chunk = jax.jit(agent.run_chunk, static_argnums=2)
  init = jax.jit(agent.init)(jax.random.key(7), hp)
  whole, metrics = chunk(init, hp, 12)
  state, _ = chunk(chunk(init, hp, 6)[0], hp, 6)
  _assert_trees_equal(_key_data(whole), _key_data(state))
  assert np.isfinite(float(metrics['loss'])) and int(metrics['updates']) == 10
  sigma = lambda s: s.params['params']['value']['sigma_kernel']  # noqa: E731
  assert not np.allclose(sigma(whole), sigma(init))
  obs = jnp.eye(4)  # q_values, which evaluation acts on: the mean weights.
  mean_q = jnp.sum(
    jax.nn.softmax(jax.vmap(lambda o: net.apply(whole.params, o))(obs), -1) * jnp.linspace(-2, 2, 5), -1
  )
  np.testing.assert_allclose(agent.q_values(whole.params, hp, obs), mean_q, rtol=1e-6)
  with pytest.raises(ConfigError, match='has NoisyDense layers'):
    dqn.make_train(ENV, None, net, dataclasses.replace(config, noisy=False))
  with pytest.raises(ConfigError, match='has no NoisyDense layers'):
    dqn.make_train(ENV, None, NET, dqn.Config(noisy=True))


@pytest.mark.parametrize('der', [False, True], ids=['uniform', 'der'])
def test_masked_batch_size_equals_the_unmasked_batch(der):
  """`HParams.batch_size=4` inside a static batch of 8 == a static batch of 4: the same samples (prefix
  draws), the same updates to float32 rounding, with uniform replay and with DER's prioritized replay,
  augmentation and C51 (where the strata and the importance-weight maximum must follow the mask)."""
  if der:
    env = Chain(image=True)
    net = networks.QNetwork(
      common_nn.MLP((8,), activate_final=True), num_actions=2, num_atoms=5, dueling=True
    )
    extra = dict(num_atoms=5, prioritized=True, augment_pad=1, num_envs=1, max_updates_per_step=1)
    hp = HP.replace(learning_starts=4, target_update_period=3, v_min=-2.0, v_max=2.0)
  else:
    env, net, extra, hp = ENV, NET, {}, HP
  base = dict(
    num_envs=CONFIG.num_envs,
    total_env_steps=24,
    buffer_capacity=16,
    max_n_step=3,
    max_updates_per_step=CONFIG.max_updates_per_step,
  )
  base.update(extra)
  big = dqn.make_train(env, None, net, dqn.Config(batch_size=8, **base))
  small = dqn.make_train(env, None, net, dqn.Config(batch_size=4, **base))
  masked, masked_metrics = jax.jit(big.train)(jax.random.key(5), hp.replace(batch_size=4))
  plain, plain_metrics = jax.jit(small.train)(jax.random.key(5), hp)
  np.testing.assert_allclose(
    ravel_pytree(masked.params)[0], ravel_pytree(plain.params)[0], rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(float(masked_metrics['loss']), float(plain_metrics['loss']), rtol=1e-5)
  assert int(masked_metrics['updates']) == int(plain_metrics['updates']) > 0
  if der:
    np.testing.assert_allclose(masked.buffer.priorities, plain.buffer.priorities, rtol=1e-5)
  # And the full static batch of 8 is a different run (the mask is not a no-op).
  full, _ = jax.jit(big.train)(jax.random.key(5), hp)
  assert not np.allclose(ravel_pytree(full.params)[0], ravel_pytree(plain.params)[0], atol=1e-6)
  with pytest.raises(ConfigError, match='batch_size must be in'):
    dqn.check_hparams(big.config, hp.replace(batch_size=9))


def test_adam_update_matches_optax_adamw():
  params = {'w': jnp.array([1.0, -2.0, 3.0])}
  grads = {'w': jnp.array([0.1, 0.2, -0.3])}
  optimizer = optax.adamw(1e-2, eps=1e-3, weight_decay=0.1)
  opt_state = optimizer.init(params)
  state = optax.scale_by_adam().init(params)
  expected, ours = params, params
  for _ in range(3):
    updates, opt_state = optimizer.update(grads, opt_state, expected)
    expected = optax.apply_updates(expected, updates)
    ours, state = dqn.adam_update(ours, state, grads, 1e-2, 1e-3, 0.1)
  np.testing.assert_allclose(ours['w'], expected['w'], rtol=1e-6)


def test_epsilon_schedule():
  hp = dqn.HParams(eps_start=1.0, eps_end=0.1, eps_decay_steps=100, learning_starts=50)
  got = [float(dqn.epsilon(hp, s)) for s in (0, 50, 100, 150, 1000)]
  np.testing.assert_allclose(got, [1.0, 1.0, 0.55, 0.1, 0.1], rtol=1e-6)


def test_random_shift_is_a_crop_of_the_padded_image():
  obs = jnp.arange(9.0).reshape(3, 3, 1)
  padded = np.pad(np.asarray(obs), ((1, 1), (1, 1), (0, 0)), mode='edge')
  crops = {padded[dy : dy + 3, dx : dx + 3].tobytes() for dy in range(3) for dx in range(3)}
  seen = set()
  for i in range(40):
    out = np.asarray(dqn.random_shift(jax.random.key(i), obs, 1))
    assert out.tobytes() in crops
    seen.add(out.tobytes())
  assert len(seen) > 4


def test_user_errors_are_config_errors(agent):
  with pytest.raises(ConfigError, match='multiple of num_envs'):
    dqn.Config(num_envs=3, buffer_capacity=10, total_env_steps=9)
  with pytest.raises(ConfigError, match='batch_size must be an integer >= 1'):
    dqn.Config(batch_size=0)
  with pytest.raises(ConfigError, match='raise max_n_step'):
    dqn.check_hparams(CONFIG, HP.replace(n_step=4))
  with pytest.raises(ConfigError, match='max_updates_per_step to 2'):
    dqn.check_hparams(
      dqn.Config(num_envs=4, total_env_steps=8, buffer_capacity=8), dqn.HParams(update_period=2)
    )
  with pytest.raises(ConfigError, match='gamma'):  # A batched sweep is checked entry by entry.
    dqn.check_hparams(CONFIG, dqn.stack([HP, HP.replace(gamma=1.5)]))
  with pytest.raises(ConfigError, match='expected \\(2, 51\\)'):
    dqn.make_train(ENV, None, NET, dqn.Config(num_atoms=51))
  with pytest.raises(ConfigError, match='augment_pad needs'):
    dqn.make_train(ENV, None, NET, dqn.Config(augment_pad=1))
  with pytest.raises(ConfigError, match='eps_decay_steps'):
    agent.init(jax.random.key(0), HP.replace(eps_decay_steps=0))
  dqn.check_hparams(CONFIG, dqn.stack([HP, HP.replace(max_grad_norm=math.inf)]))  # Fine.


def test_presets_are_valid():
  for preset in (dqn.dqn_preset, dqn.der_preset, dqn.drq_eps_preset):
    config, hparams = preset()
    dqn.check_hparams(config, hparams)
  config, hparams = dqn.der_preset(num_envs=2, total_env_steps=1000, buffer_capacity=1000)
  assert config.num_atoms == 51 and config.prioritized and hparams.n_step == 10


def test_gymnax_breakout_minatar_smoke():
  """A few hundred steps of DQN on gymnax Breakout-MinAtar with a tiny conv net."""
  try:
    import gymnax
  except ImportError as e:  # gymnax 1.0.1 imports `six` without depending on it.
    pytest.skip(f'gymnax does not import here: {e}')
  env, env_params = gymnax.make('Breakout-MinAtar')
  torso = common_nn.MLP((16,), activate_final=True)
  net = networks.QNetwork(torso, num_actions=env.action_space(env_params).n)
  config = dqn.Config(
    num_envs=4, total_env_steps=400, buffer_capacity=200, batch_size=8, obs_storage_dtype='uint8'
  )
  agent = dqn.make_train(env, env_params, net, config)
  hp = dqn.HParams(learning_starts=40, update_period=4, target_update_period=40, eps_decay_steps=200)
  state, metrics = jax.jit(agent.train)(jax.random.key(0), hp)
  assert state.buffer.data['obs'].shape == (50, 4, 10, 10, 4)
  assert int(metrics['updates']) == 90 and np.isfinite(float(metrics['loss']))


# --------------------------------------------------------------------------- #
# Evaluation: the fixed window and `Config.eval_first_episode`.
# --------------------------------------------------------------------------- #


class HostChain(Chain):
  """`Chain` whose every step also passes through a host callback, as `common.rl.atari`'s emulators do: each
  env has an id and a tick (steps taken) on the host, and a step given a tick that is not the host's current
  one is stale (a state stepped twice: the Atari pool would restart the emulator). The reward goes through the
  callback, so XLA cannot drop it."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.ticks, self.steps, self.stale = {}, 0, 0

  def _reset_host(self, seed):
    ids = np.arange(len(self.ticks), len(self.ticks) + np.size(seed), dtype=np.int32)
    self.ticks.update({int(i): 0 for i in ids})
    return ids.reshape(np.shape(seed))

  def _step_host(self, ids, ticks, reward):
    ids, ticks = np.asarray(ids), np.asarray(ticks)
    for i, t in zip(ids.reshape(-1), ticks.reshape(-1)):
      if self.ticks[int(i)] == int(t):
        self.ticks[int(i)] += 1
        self.steps += 1
      else:
        self.stale += 1
    return np.asarray(ticks + 1, np.int32), np.asarray(reward, np.float32)

  def reset(self, key, params):
    obs, state = super().reset(key, params)
    i32 = jax.ShapeDtypeStruct((), jnp.int32)
    seed = jax.random.randint(key, (), 0, 2**30)  # Batched like the keys (a constant would not be).
    ids = jax.pure_callback(self._reset_host, i32, seed, vmap_method='broadcast_all')
    return obs, (state, ids, jnp.int32(0))

  def step(self, key, state, action, params):
    chain, ids, tick = state
    obs, chain, reward, terminated, truncated, info = super().step(key, chain, action, params)
    shapes = (jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((), jnp.float32))
    tick, reward = jax.pure_callback(self._step_host, shapes, ids, tick, reward, vmap_method='broadcast_all')
    return obs, (chain, ids, tick), reward, terminated, truncated, info


def _reference_evaluation(params, hp, num_envs, iterations, rng):
  """`Agent.evaluate` as a Python loop (the same keys and actions, each env's episodes tracked on the host):
  the returns of all episodes that end within `iterations` vector steps, and each env's first return."""
  apply = jax.jit(lambda p, o: jax.vmap(lambda x: NET.apply(p, x))(o))
  step = jax.jit(jax.vmap(ENV.step, in_axes=(0, 0, 0, None)))
  obs, env_state = jax.vmap(ENV.reset, in_axes=(0, None))(
    jax.random.split(jax.random.fold_in(rng, 1), num_envs), None
  )
  running = np.zeros(num_envs, np.float32)
  ended, first = [], [None] * num_envs
  for it in range(iterations):
    key_random, key_explore = jax.random.split(jax.random.fold_in(jax.random.fold_in(rng, 0), it))
    greedy = np.argmax(np.asarray(apply(params, obs)), axis=1)
    random_action = np.asarray(jax.random.randint(key_random, (num_envs,), 0, 2, dtype=jnp.int32))
    explore = np.asarray(jax.random.uniform(key_explore, (num_envs,))) < np.float32(hp.eps_eval)
    action = jnp.asarray(np.where(explore, random_action, greedy), jnp.int32)
    keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(rng, 3), it), num_envs)
    obs, env_state, reward, terminated, truncated, _ = step(keys, env_state, action, None)
    running += np.asarray(reward)
    for i in np.flatnonzero(np.asarray(terminated | truncated)):
      ended.append(float(running[i]))
      first[i] = float(running[i]) if first[i] is None else first[i]
      running[i] = 0.0
  return ended, first


def test_evaluation_window_and_first_episodes_match_a_python_loop(compiled):
  """Off (default): every episode ending in the window; on: each env's first episode only, and no episode
  when the window is shorter than any episode (returns NaN). Both against the Python loop above."""
  params = compiled['init'](jax.random.key(3), HP).params
  hp, rng, envs, window = HP.replace(eps_eval=0.5), jax.random.key(11), 6, 20
  ended, first = _reference_evaluation(params, hp, envs, window, rng)
  assert None not in first and 0 < np.mean(first) < 1 and len(ended) > envs  # The cases differ.
  assert not np.isclose(np.mean(first), np.mean(ended))
  state = dqn.TrainState(*([None] * 12)).replace(params=params)
  for first_only in (False, True):
    config = dataclasses.replace(CONFIG, eval_first_episode=first_only)
    evaluate = jax.jit(dqn.make_evaluator(ENV, None, NET, config, envs).evaluate, static_argnums=2)
    out = evaluate(state, hp, window, rng)
    expected = first if first_only else ended
    assert int(out['episodes']) == len(expected)
    np.testing.assert_allclose(float(out['episode_return']), np.mean(expected), rtol=1e-6)
  short = evaluate(state, hp, 2, rng)  # The shortest Chain episode takes 3 steps.
  assert int(short['episodes']) == 0 and np.isnan(float(short['episode_return']))


def test_first_episode_evaluation_stops_early_and_vmaps_over_host_envs(compiled):
  """The first-episode loop stops when every env has ended an episode (host steps counted), gives each run
  of a vmap its own numbers, and, with `axis_name`, never steps a stale host state."""
  params = compiled['init'](jax.random.key(3), HP).params
  env, envs, window, hp = HostChain(max_steps=20), 3, 50, HP.replace(eps_eval=1.0)
  evaluator = dqn.make_evaluator(env, None, NET, dataclasses.replace(CONFIG, eval_first_episode=True), envs)
  state = dqn.TrainState(*([None] * 12)).replace(params=params)
  rngs = [jax.random.key(0), jax.random.key(4)]
  alone, lengths = [], []
  for rng in rngs:
    before = env.steps
    alone.append(jax.jit(evaluator.evaluate, static_argnums=2)(state, hp, window, rng))
    lengths.append((env.steps - before) // envs)
  assert env.stale == 0 and max(lengths) <= env.max_steps < window and lengths[0] != lengths[1]
  assert [int(a['episodes']) for a in alone] == [envs, envs]
  states = jax.tree.map(lambda x: jnp.stack([x, x]), state)
  for axis_name in ('runs', None):
    evaluate = jax.vmap(
      lambda s, r: evaluator.evaluate(s, hp, window, r, axis_name=axis_name), axis_name='runs'
    )
    before, stale = env.steps, env.stale
    out = jax.jit(evaluate)(states, jnp.stack(rngs))
    for i, a in enumerate(alone):
      _assert_trees_equal(a, jax.tree.map(lambda x: x[i], out))
    if axis_name:  # Both runs step until the longer one is done.
      assert env.stale == stale and env.steps - before == 2 * envs * max(lengths)
    else:  # vmap freezes the run that is done (its first extra step is dropped): stale ticks after it.
      assert env.stale - stale == envs * (abs(lengths[0] - lengths[1]) - 1)
