import jax
import jax.numpy as jnp
import numpy as np

from rl_plasticity import baselines
from rl_plasticity import envs
from rl_plasticity import ne
from rl_plasticity import networks
from rl_plasticity import td3


def _net():
  params = {
    'params': {
      'pi': {
        'dense_0': {'kernel': jnp.arange(6.0).reshape(2, 3) + 1, 'bias': jnp.ones(3)},
        'dense_1': {'kernel': jnp.ones((3, 1)), 'bias': jnp.ones(1)},
      }
    }
  }
  ones = jax.tree.map(jnp.ones_like, params)
  opt = ne.MaskedAdamState(jax.tree.map(lambda _: jnp.asarray(7), params), ones, ones)
  return td3.Net(params, params, opt, ones)


def test_redo_recycles_dormant_units_and_their_adam_moments():
  net = _net()
  fresh = jax.tree.map(lambda x: -9.0 * jnp.ones_like(x), net.params)
  # Unit 1 never fires; unit scores [1, 0, 2] / 1 -> only unit 1 is 0.1-dormant.
  acts = {'pi': {'dense_0': jnp.array([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0]])}}
  new, n = baselines.recycle_dormant(net, fresh, acts, 0.1)
  p = new.params['params']['pi']
  assert int(n) == 1
  np.testing.assert_array_equal(p['dense_0']['kernel'][:, 1], [-9.0, -9.0])  # Incoming re-drawn.
  np.testing.assert_array_equal(
    p['dense_0']['kernel'][:, [0, 2]], net.params['params']['pi']['dense_0']['kernel'][:, [0, 2]]
  )
  np.testing.assert_array_equal(p['dense_0']['bias'], [1.0, 0.0, 1.0])
  np.testing.assert_array_equal(p['dense_1']['kernel'][:, 0], [1.0, 0.0, 1.0])  # Outgoing zeroed.
  for moment in (new.opt.mu, new.opt.nu):
    m = moment['params']['pi']
    np.testing.assert_array_equal(m['dense_0']['kernel'][:, 1], [0.0, 0.0])
    np.testing.assert_array_equal(m['dense_0']['bias'], [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(m['dense_1']['kernel'][:, 0], [1.0, 0.0, 1.0])
  assert all(int(c) == 7 for c in jax.tree.leaves(new.opt.count))  # The Adam counts are kept.


def test_redo_weight_scaling_draws_at_the_other_units_norm():
  net = _net()
  fresh = jax.tree.map(lambda x: -9.0 * jnp.ones_like(x), net.params)
  acts = {'pi': {'dense_0': jnp.array([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0]])}}  # Unit 1 dormant.
  new, n = baselines.recycle_dormant(net, fresh, acts, 0.1, weight_scaling=True)
  col = new.params['params']['pi']['dense_0']['kernel'][:, 1]
  kept = (np.hypot(1.0, 4.0) + np.hypot(3.0, 6.0)) / 2  # Columns 0 and 2 of [[1, 2, 3], [4, 5, 6]].
  np.testing.assert_allclose(np.linalg.norm(col), kept, rtol=1e-6)
  np.testing.assert_allclose(col / np.linalg.norm(col), [-(0.5**0.5)] * 2, rtol=1e-6)  # Fresh direction.
  assert int(n) == 1


def _agent(injection):
  env = envs.make('pendulum')
  cfg = td3.Config(buffer_capacity=8, batch_size=4, actor_hidden=(8,), critic_hidden=(8,), learning_starts=4)
  agent = td3.TD3(env, cfg, injection=injection)
  return agent, agent.init(jax.random.PRNGKey(0))


def test_plasticity_injection_keeps_the_function_and_freezes_the_old_critic():
  agent, state = _agent(True)
  obs, act = jax.random.normal(jax.random.PRNGKey(1), (5, 3)), jnp.full((5, 1), 0.3)
  before = agent.critic_net.apply(state.critic.params, obs, act)[0]
  injected, stats = baselines.injection_hook(agent)(state, jnp.int32(1), jax.random.PRNGKey(2))
  after = agent.critic_net.apply(injected.critic.params, obs, act)[0]
  np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
  assert float(stats['injected']) == 1.0
  grads = jax.grad(lambda p: jnp.sum(agent.critic_net.apply(p, obs, act)[0]))(injected.critic.params)[
    'params'
  ]
  assert all(
    float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(grads['base']) + jax.tree.leaves(grads['init'])
  )
  assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads['new'])) > 0
  again, stats = baselines.injection_hook(agent)(injected, jnp.int32(2), jax.random.PRNGKey(3))
  assert float(stats['injected']) == 0.0  # Only the first call injects.
  for a, b in zip(jax.tree.leaves(again.critic), jax.tree.leaves(injected.critic)):
    np.testing.assert_array_equal(a, b)


def test_reset_draws_fresh_networks_and_keeps_the_buffer():
  agent, state = _agent(False)
  state = state.replace(buffer=state.buffer.replace(size=jnp.int32(5)))
  new, _ = baselines.reset_hook(agent)(state, jnp.int32(1), jax.random.PRNGKey(5))
  assert int(new.buffer.size) == 5
  k0 = state.critic.params['params']['q1']['dense_0']['kernel']
  k1 = new.critic.params['params']['q1']['dense_0']['kernel']
  assert not np.allclose(k0, k1)
  np.testing.assert_array_equal(new.critic.target['params']['q1']['dense_0']['kernel'], k1)


def _filled(state, key):
  """The state with a full replay ring of random transitions (Pendulum: obs 3, action 1)."""
  b = state.buffer
  ko, ka, kr, kn = jax.random.split(key, 4)
  n = b.reward.shape[0]
  return state.replace(
    buffer=b.replace(
      obs=jax.random.normal(ko, b.obs.shape),
      action=jax.random.uniform(ka, b.action.shape, minval=-1.0, maxval=1.0),
      reward=jax.random.normal(kr, (n,)),
      next_obs=jax.random.normal(kn, b.next_obs.shape),
      discount=jnp.ones(n),
      size=jnp.int32(n),
    )
  )


def _with_q1_layer(state, kernel, bias):
  params = jax.tree.map(lambda x: x, state.critic.params)  # A copy whose q1 first layer is replaced.
  params['params']['q1']['dense_0'] = {'kernel': kernel, 'bias': bias}
  return state.replace(critic=state.critic.replace(params=params))


def test_redo_hook_counts_recycled_units_that_stay_dormant():
  agent, state = _agent(False)
  state = _filled(state, jax.random.PRNGKey(4))
  layer = state.critic.params['params']['q1']['dense_0']
  kernel = layer['kernel'].at[:, 0].set(0.0)  # q1's unit 0 never fires: 0.1-dormant.
  bias = layer['bias'].at[0].set(-1.0)
  hook = jax.jit(baselines.redo_hook(agent, 0.1))
  _, stats = hook(_with_q1_layer(state, kernel, bias), jnp.int32(1), jax.random.PRNGKey(6))
  assert int(stats['critic_recycled']) >= 1
  # Its fresh incoming weights make it fire on the same batch: it no longer scores as dormant.
  assert int(stats['critic_recycled_still_dormant']) < int(stats['critic_recycled'])
  # With the other units' weights 1000 times larger, a fresh unit scores far under 0.1 of the layer mean.
  scale = jnp.where(jnp.arange(kernel.shape[1]) == 0, 1.0, 1000.0)
  _, big = hook(_with_q1_layer(state, kernel * scale, bias * scale), jnp.int32(1), jax.random.PRNGKey(6))
  assert int(big['critic_recycled_still_dormant']) > int(stats['critic_recycled_still_dormant'])
  # ReDo's weight scaling draws the fresh unit at the other units' norm: it fires at their scale again.
  scaled = jax.jit(baselines.redo_hook(agent, 0.1, weight_scaling=True))
  _, sc = scaled(_with_q1_layer(state, kernel * scale, bias * scale), jnp.int32(1), jax.random.PRNGKey(6))
  assert int(sc['critic_recycled_still_dormant']) < int(big['critic_recycled_still_dormant'])


def test_plasticity_injection_frozen_parts_stay_put_under_training():
  agent, state = _agent(True)
  state = _filled(state, jax.random.PRNGKey(4))
  update = jax.jit(agent.update)
  for u in range(3):  # Momentum from before the injection must not move the frozen parts afterwards.
    state, _ = update(state, jnp.int32(u), jax.random.PRNGKey(10 + u))
  injected, _ = baselines.injection_hook(agent)(state, jnp.int32(1), jax.random.PRNGKey(2))
  trained = injected
  for u in range(3, 7):  # Actor and Polyak steps at u = 4 and 6.
    trained, _ = update(trained, jnp.int32(u), jax.random.PRNGKey(10 + u))
  p0, p1 = injected.critic.params['params'], trained.critic.params['params']
  for part in ('base', 'init'):
    for a, b in zip(jax.tree.leaves(p0[part]), jax.tree.leaves(p1[part])):
      np.testing.assert_array_equal(a, b)
  t0, t1 = injected.critic.target['params'], trained.critic.target['params']
  for a, b in zip(jax.tree.leaves(t0['init']), jax.tree.leaves(t1['init'])):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # Polyak toward an identical copy: ulps only.
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p0['new']), jax.tree.leaves(p1['new'])))


def test_injected_critic_dormancy_counts_only_the_units_in_use():
  agent, state = _agent(True)
  state = _filled(state, jax.random.PRNGKey(4))
  obs, act = state.buffer.obs, state.buffer.action
  acts = agent.critic_net.apply(state.critic.params, obs, act)[2]
  for a, b in zip(jax.tree.leaves(acts['new']), jax.tree.leaves(acts['base'])):
    np.testing.assert_array_equal(a, b)  # Before injection `new` is not part of the function.
  injected, _ = baselines.injection_hook(agent)(state, jnp.int32(1), jax.random.PRNGKey(2))
  acts = agent.critic_net.apply(injected.critic.params, obs, act)[2]
  new = networks.Critic(agent.cfg.critic_hidden).apply(
    {'params': injected.critic.params['params']['new']}, obs, act
  )[2]
  for a, b in zip(jax.tree.leaves(acts['new']), jax.tree.leaves(new)):
    np.testing.assert_array_equal(a, b)
