import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.errors import ConfigError
from rl_plasticity import envs


def test_unknown_environment_is_a_one_line_error_listing_the_choices():
  with pytest.raises(ConfigError) as e:
    envs.make('cartpole')
  assert 'valid: ant, cheetah_run, halfcheetah, hopper, hopper_hop, humanoid' in str(e.value)
  assert '\n' not in str(e.value)


def test_pendulum_scales_actions_and_auto_resets_with_the_true_final_observation():
  env = envs.make('pendulum', episode_length=3)
  assert (env.obs_dim, env.act_dim, env.episode_length) == (3, 1, 3)
  obs, state = env.reset(jax.random.PRNGKey(0))
  step = jax.jit(env.step)
  for t in range(3):
    prev = state
    obs, state, reward, term, trunc, final = step(jax.random.PRNGKey(t), state, jnp.ones(1))
    assert not bool(term)
  assert bool(trunc) and int(state.time) == 0  # Reset after the time limit.
  assert float(prev.last_u) == pytest.approx(2.0)  # Action +1 maps to the maximum torque, 2.
  assert not np.allclose(final, obs)  # The transition's next observation is not the reset one.
  assert float(state.last_u) == 0.0 and float(reward) < 0
  assert step._cache_size() == 1  # Reset and step states share one signature (no weak types).


@pytest.mark.slow
def test_brax_hopper_interface():
  env = envs.make('hopper', backend='mjx', episode_length=5)
  assert (env.obs_dim, env.act_dim) == (11, 3)
  # Reset under jit, as the training loop does (eager MJX reset commits some arrays to the device).
  obs, state = jax.jit(env.reset)(jax.random.PRNGKey(0))
  step = jax.jit(env.step)
  for t in range(6):
    obs, state, reward, term, trunc, final = step(jax.random.PRNGKey(t), state, jnp.zeros(3))
  assert obs.shape == (11,) and np.isfinite(float(reward))
  assert step._cache_size() == 1


def test_mjx_line_search_cap_is_applied_only_when_asked(monkeypatch):
  # 2026-11-28: Brax's tasks ship MuJoCo's 50 line-search iterations, a fixed-length scan in MJX that is
  # sequential latency on a GPU; `mjx_ls_iterations` caps it (no compile needed to check the setting).
  from brax import envs as brax_envs

  made = []
  original = brax_envs.get_environment
  monkeypatch.setattr(
    brax_envs, 'get_environment', lambda *a, **k: made.append(original(*a, **k)) or made[-1]
  )
  envs.make('halfcheetah', backend='mjx')
  envs.make('halfcheetah', backend='mjx', mjx_ls_iterations=6, mjx_iterations=1)
  assert [e.sys.opt.ls_iterations for e in made] == [50, 6]
  assert made[0].sys.opt.iterations > 1 and made[1].sys.opt.iterations == 1


def test_playground_cheetah_run_truncates_and_resets():
  # MuJoCo Playground's DM Control cheetah-run on MJX's JAX implementation (2026-11-28): our time limit
  # applies (Playground's raw tasks have none), the reset keeps the true final observation, and reset and
  # step share one signature (Playground's step returns weak types: `strong` fixes that). Its episodes end
  # only at the time limit, so by default the caller resets (synchronised resets, 2026-11-29); with
  # `sync_resets=False` the step auto-resets itself.
  for synced in (True, False):
    env = envs.make('cheetah_run', episode_length=2, sync_resets=synced)
    assert (env.obs_dim, env.act_dim, env.episode_length, env.synced_resets) == (17, 6, 2, synced)
    obs, state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    rewards = []
    for t in range(2):
      obs, state, reward, term, trunc, final = step(jax.random.PRNGKey(t), state, jnp.ones(6))
      rewards.append(float(reward))
    assert not bool(term) and bool(trunc)
    if synced:  # Not reset by the step; `sync_reset` after the last step of the episode resets it.
      assert int(state[1]) == 2 and np.allclose(final, obs)
      batch = jax.tree.map(lambda x: x[None], (obs, state))
      obs, state = jax.tree.map(lambda x: x[0], envs.sync_reset(env, 1, jax.random.PRNGKey(5)[None], *batch))
    assert int(state[1]) == 0
    assert not np.allclose(final, obs)  # The reset observation is not the transition's next one.
    assert all(0.0 <= r <= 1.0 for r in rewards)  # DM Control rewards lie in [0, 1].
    assert step._cache_size() == 1


def test_playground_solver_cap_is_applied_only_when_asked_and_the_task_keeps_its_length(monkeypatch):
  from mujoco_playground import registry

  made = []
  original = registry.load
  monkeypatch.setattr(registry, 'load', lambda *a, **k: made.append(original(*a, **k)) or made[-1])
  assert envs.make('cheetah_run').episode_length == 1000  # The task's own length when not given.
  envs.make('cheetah_run', mjx_ls_iterations=3, mjx_iterations=1)
  assert [e.mjx_model.opt.ls_iterations for e in made] == [8, 3]  # cheetah.xml ships 8.
  assert [e.mjx_model.opt.iterations for e in made] == [4, 1]


@flax.struct.dataclass
class _ToyState:  # A Brax-style state: .obs, .reward, .done.
  obs: jax.Array
  reward: jax.Array
  done: jax.Array


def _toy_reset(key):  # A random start, so which key resets which env shows in the trajectory.
  return _ToyState(jax.random.normal(key, (2,)), jnp.zeros(()), jnp.zeros(()))


def _toy_step(state, action):  # No termination: episodes end only at the time limit.
  return _ToyState(0.9 * state.obs + 0.1 * jnp.sum(action), -jnp.sum(state.obs**2), jnp.zeros(()))


def toy_env(synced: bool, episode_length: int = 4) -> envs.Env:
  """A fixed-length task through the Brax/Playground wrapper, with or without synchronised resets."""
  return envs._auto_reset('toy', 1, episode_length, _toy_reset, _toy_step, synced)  # pylint: disable=protected-access


def test_synchronised_resets_give_the_per_step_trajectory_and_reset_inside_a_branch():
  per, syn = toy_env(False), toy_env(True)
  assert syn.synced_resets and not per.synced_resets

  def run_step(env, it, keys, state, action):
    """One vector step as the training loop takes it: (state, (obs, reward, terminated, truncated, final))."""
    obs, state, reward, term, trunc, final = jax.vmap(env.step)(keys, state, action)
    obs, state = envs.sync_reset(env, it, keys, obs, state)
    return state, (obs, reward, term, trunc, final)

  step = {env: jax.jit(lambda it, k, s, a, env=env: run_step(env, it, k, s, a)) for env in (per, syn)}
  keys0 = jax.random.split(jax.random.PRNGKey(0), 3)
  states = {env: jax.vmap(env.reset)(keys0)[1] for env in (per, syn)}
  truncations = 0
  for it in range(10):
    keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(1), it), 3)
    action = jnp.full((3, 1), 0.5 * it)
    out = {}
    for env in (per, syn):
      states[env], out[env] = step[env](it, keys, states[env], action)
    for a, b in zip(out[per], out[syn]):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    trunc = out[syn][3]
    assert bool(jnp.all(trunc == envs.reset_due(syn, it)))  # Truncation exactly when the reset is due.
    truncations += int(jnp.sum(trunc))
  assert truncations == 2 * 3  # After steps 3 and 7, every env.
  # Vmapped over seeds as in the training loop, the synchronised reset stays a `cond` (computed only when
  # due); the per-step auto-reset has no branch: its reset is computed at every step.
  seeds = jax.random.split(jax.random.PRNGKey(2), 2 * 3).reshape(2, 3, 2)
  batch = jax.vmap(jax.vmap(syn.reset))(seeds)[1]
  for env, has_cond in ((syn, True), (per, False)):
    one = jax.vmap(lambda k, s, env=env: run_step(env, jnp.int32(5), k, s, jnp.ones((3, 1))))
    jaxpr = jax.make_jaxpr(one)(seeds, batch)
    assert ('cond' in str(jaxpr)) == has_cond


def test_sync_resets_only_for_tasks_without_termination(monkeypatch):
  made = []
  monkeypatch.setattr(envs, '_brax', lambda name, length, backend, opt, synced: made.append((name, synced)))
  monkeypatch.setattr(envs, '_playground', lambda name, length, opt, synced: made.append((name, synced)))
  envs.make('halfcheetah')
  envs.make('hopper')
  envs.make('cheetah_run')
  envs.make('halfcheetah', sync_resets=False)
  assert made == [('halfcheetah', True), ('hopper', False), ('cheetah_run', True), ('halfcheetah', False)]
