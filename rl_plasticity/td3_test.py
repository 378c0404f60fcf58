import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl_plasticity import envs
from rl_plasticity import ne
from rl_plasticity import td3
from rl_plasticity.envs_test import toy_env


def test_review_samples_the_oldest_30_percent_after_the_ring_wraps():
  buf = td3.buffer_init(10, 1, 1)
  for start in (0, 5, 10):  # 13 rows in batches of 5, 5, 3: rows 0-2 are overwritten by 10-12.
    n = min(5, 13 - start)
    r = jnp.arange(start, start + n, dtype=jnp.float32)
    buf = td3.buffer_add(buf, r[:, None], r[:, None], r, r[:, None], jnp.ones(n))
  assert int(buf.ptr) == 3 and int(buf.size) == 10
  key = jax.random.PRNGKey(0)
  old = buf.reward[td3.sample_indices(buf, key, 500, True, 0.3)]
  assert set(np.asarray(old).tolist()) == {3.0, 4.0, 5.0}  # The three oldest transitions still stored.
  every = buf.reward[td3.sample_indices(buf, key, 500, False, 0.3)]
  assert set(np.asarray(every).tolist()) == set(range(3, 13))
  # Before the wrap the oldest rows are the first ones.
  small = td3.buffer_add(
    td3.buffer_init(10, 1, 1),
    jnp.zeros((4, 1)),
    jnp.zeros((4, 1)),
    jnp.arange(4.0),
    jnp.zeros((4, 1)),
    jnp.ones(4),
  )
  assert set(np.asarray(small.reward[td3.sample_indices(small, key, 100, True, 0.5)]).tolist()) == {0.0, 1.0}


def test_running_observation_statistics():
  x = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32) * 2 + 1
  norm = td3.ObsNorm(jnp.asarray(1e-4), jnp.zeros(3), jnp.ones(3))
  for i in range(0, 30, 7):
    norm = td3.norm_update(norm, jnp.asarray(x[i : i + 7]))
  np.testing.assert_allclose(norm.mean, x.mean(0), atol=1e-4)
  np.testing.assert_allclose(norm.var, x.var(0), atol=1e-3)


@pytest.fixture(scope='module')
def tiny():
  env = envs.make('pendulum', episode_length=10)
  cfg = td3.Config(
    num_envs=2,
    buffer_capacity=24,
    batch_size=8,
    learning_starts=8,
    replay_ratio=0.5,  # One update per vector step: the loop checks after every update.
    actor_hidden=(8,),
    critic_hidden=(8, 8),
    learning_rate=1e-2,
    review=True,
    review_awaken=0.99,  # Fires: review draws from the oldest 30 %.
    batch_halving=True,
    eval_episodes=2,
  )
  agent = td3.TD3(env, cfg, sparse=(0.3, 1.0))
  # One jitted chunk (16 iterations) and one jitted iteration shared by the tests: each compiles once.
  run = jax.jit(lambda s: agent.run_chunk(s, jnp.int32(0), 16))
  return agent, agent.init(jax.random.PRNGKey(3)), run, jax.jit(agent.iteration)


def _violations(state):
  bad = 0
  for net in (state.actor, state.critic):
    for tree in (net.params, net.target, net.opt.mu, net.opt.nu):
      for x, m in zip(jax.tree.leaves(tree), jax.tree.leaves(net.mask)):
        bad += int(np.sum((np.asarray(m) == 0) & (np.asarray(x) != 0)))
  return bad


def test_scanned_loop_equals_python_loop_and_masks_hold_after_every_update(tiny):
  agent, state0, run, step = tiny
  n = 16  # 4 warm-up iterations, then 12 updates; the ring (24 rows) wraps after 12 vector steps.
  scanned, out = run(state0)
  looped = state0
  reviews = []
  for i in range(n):
    looped, per = step(looped, jnp.int32(i))
    assert _violations(looped) == 0, f'masked entry nonzero after iteration {i}'
    reviews.append(float(per['review']))
  for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(looped)):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-5, atol=1e-6)
  assert int(looped.buffer.size) == 24 and int(looped.buffer.ptr) == 8  # Wrapped.
  assert any(r > 0 for r in reviews)  # Experience review fired at least once.
  assert np.isfinite(float(out['critic_loss']))
  assert step._cache_size() == 1


def test_topology_step_grows_zero_weights_and_masks_stay_zero_after_updates(tiny):
  agent, state0, run, step = tiny
  state, _ = run(state0)
  cfg = ne.NEConfig(0.3, 1.0, grow_steps=4, prune_ratio=0.4, prune_by='dormant', tau=0.1, zeta=0.0)
  hook = jax.jit(ne.make_hook(agent, cfg, total_steps=8, actor_every=1))
  new, stats = hook(state, jnp.int32(1), jax.random.PRNGKey(9))
  assert int(stats['critic_grown']) > 0 and int(stats['critic_pruned']) > 0
  for before, after in ((state.critic, new.critic), (state.actor, new.actor)):
    for m0, m1, w, t, mu, nu in zip(
      *(
        jax.tree.leaves(x)
        for x in (before.mask, after.mask, after.params, after.target, after.opt.mu, after.opt.nu)
      )
    ):
      grown = (np.asarray(m0) == 0) & (np.asarray(m1) == 1)
      for x in (w, t, mu, nu):  # Grown connections start at zero, with zero moments.
        assert np.all(np.asarray(x)[grown] == 0)
  assert _violations(new) == 0
  for i in range(16, 20):
    new, _ = step(new, jnp.int32(i))
    assert _violations(new) == 0
  assert step._cache_size() == 1


def test_topology_step_keeps_moments_at_pruned_positions_only_with_the_code_switch(tiny):
  agent, state0, run, _ = tiny
  state, _ = run(state0)
  cfg = ne.NEConfig(0.3, 1.0, grow_steps=4, prune_ratio=0.4, prune_by='dormant', tau=0.1, zeta=0.0)
  key = jax.random.PRNGKey(9)
  agents = {  # The same networks and state; only the optimizer's moment handling differs.
    False: agent,
    True: td3.TD3(agent.env, dataclasses.replace(agent.cfg, stale_moments=True), sparse=agent.sparse),
  }
  hooks = {stale: jax.jit(ne.make_hook(a, cfg, total_steps=8, actor_every=1)) for stale, a in agents.items()}
  out = {stale: hook(state, jnp.int32(1), key)[0] for stale, hook in hooks.items()}
  pruned_with_moments = 0
  for m0, m1, mu0, mu_plain, mu_stale in zip(
    *(jax.tree.leaves(x) for x in (state.critic.mask, out[False].critic.mask, state.critic.opt.mu,
                                   out[False].critic.opt.mu, out[True].critic.opt.mu))
  ):  # fmt: skip
    pruned = (np.asarray(m0) == 1) & (np.asarray(m1) == 0)
    assert np.all(np.asarray(mu_plain)[pruned] == 0)
    np.testing.assert_array_equal(np.asarray(mu_stale)[pruned], np.asarray(mu0)[pruned])
    pruned_with_moments += int(np.sum(np.asarray(mu0)[pruned] != 0))
  assert pruned_with_moments > 0  # The check above is not vacuous.
  np.testing.assert_array_equal(  # The switch changes the moments only, not the topology.
    np.concatenate([np.ravel(x) for x in jax.tree.leaves(out[True].critic.mask)]),
    np.concatenate([np.ravel(x) for x in jax.tree.leaves(out[False].critic.mask)]),
  )


def test_evaluate_and_probe(tiny):
  agent, state, _, _ = tiny
  ret = jax.jit(agent.evaluate)(state, jax.random.PRNGKey(0))
  assert np.isfinite(float(ret)) and float(ret) < 0  # Pendulum rewards are <= 0.
  probe = jax.jit(agent.probe)(state, jax.random.PRNGKey(0))
  assert 0.0 <= float(probe['critic_dormant_0.1']) <= 1.0
  assert 0.0 < float(probe['critic_density']) < 1.0


def test_training_loop_with_synchronised_resets_equals_the_per_step_auto_reset():
  # The loop resets a synchronised-reset env with the keys the per-step auto-reset would have used, so the
  # two runs are the same run: 12 vector steps of 4-step episodes (three per env), updates from step 4 on.
  cfg = td3.Config(
    num_envs=2,
    buffer_capacity=32,
    batch_size=4,
    learning_starts=8,
    replay_ratio=0.5,
    actor_hidden=(8,),
    critic_hidden=(8,),
  )
  final = {}
  for synced in (False, True):
    agent = td3.TD3(toy_env(synced), cfg)
    state, out = jax.jit(lambda s, agent=agent: agent.run_chunk(s, jnp.int32(0), 12))(
      agent.init(jax.random.PRNGKey(0))
    )
    assert float(out['episodes']) == 3 * 2 and float(out['updates']) == 8
    final[synced] = state
  for a, b in zip(jax.tree.leaves(final[False]), jax.tree.leaves(final[True])):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-6, atol=1e-7)
