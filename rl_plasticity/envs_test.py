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


def test_playground_cheetah_run_truncates_and_auto_resets():
  # MuJoCo Playground's DM Control cheetah-run on MJX's JAX implementation (2026-11-28): our time limit
  # applies (Playground's raw tasks have none), the auto-reset keeps the true final observation, and
  # reset and step share one signature (Playground's step returns weak types: `strong` fixes that).
  env = envs.make('cheetah_run', episode_length=2)
  assert (env.obs_dim, env.act_dim, env.episode_length) == (17, 6, 2)
  obs, state = jax.jit(env.reset)(jax.random.PRNGKey(0))
  step = jax.jit(env.step)
  rewards = []
  for t in range(2):
    obs, state, reward, term, trunc, final = step(jax.random.PRNGKey(t), state, jnp.ones(6))
    rewards.append(float(reward))
  assert not bool(term) and bool(trunc) and int(state[1]) == 0
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
