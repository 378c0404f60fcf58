"""Continuous-control environments behind one functional interface (gymnax Pendulum, Brax/MJX tasks, MuJoCo
Playground's DM Control suite on MJX).

Every environment acts in [-1, 1]^act_dim (rescaled to the task's bounds inside) and auto-resets:

    obs, state = env.reset(key)
    obs, state, reward, terminated, truncated, final_obs = env.step(key, state, action)

`obs` is the observation to act on next (the reset one after an episode ends); `final_obs` is the true
next observation of the transition, the one a TD target bootstraps from on truncation.

Synchronised resets (`Env.synced_resets`, since 2026-11-29). An auto-reset under `vmap` computes a fresh
reset at every step and keeps it only where an episode ended (a `cond` on a batched flag becomes a select).
For Brax's halfcheetah that is one extra `forward`; for the DM Control tasks of Playground it is 201 physics
steps, since their reset lets the body settle for 200 steps: a cheetah-run step cost 170 ms at 160 envs on
an H200, 26x Brax's halfcheetah. Tasks whose episodes end only at the time limit (`FIXED_LENGTH`) end them
at the same step in every env, so there `step` does not reset, and the caller resets every env together
after each `episode_length`-th vector step, under a `cond` on its unbatched step index (`sync_reset`). With
the same per-env keys this is the same trajectory as the per-step auto-reset (tested);
`make(..., sync_resets=False)` keeps the per-step one. Playground flags a NaN physics state as done; with
synchronised resets such an env stays NaN until the next common reset (the run's divergence check reports
its seed), where the per-step auto-reset restarted it at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from common import config as config_lib
from common.errors import ConfigError

GYMNAX = {'pendulum': 'Pendulum-v1'}
BRAX = ('halfcheetah', 'hopper', 'walker2d', 'ant', 'humanoid')
# MuJoCo Playground (PyPI `playground`), its DM Control suite on MJX's JAX implementation (its default,
# 'warp', needs a GPU and is slow on CPU). Its XMLs ship in the wheel, so nothing is downloaded. Our names
# use '_' where dm_control uses '-' (cheetah-run is `cheetah_run`).
PLAYGROUND = {
  'cheetah_run': 'CheetahRun',
  'walker_walk': 'WalkerWalk',
  'walker_run': 'WalkerRun',
  'hopper_hop': 'HopperHop',
  'humanoid_walk': 'HumanoidWalk',
  'humanoid_run': 'HumanoidRun',
}
CHOICES = tuple(GYMNAX) + BRAX + tuple(PLAYGROUND)
# Episodes end only at the time limit (no termination): Brax's halfcheetah, and every Playground DM Control
# task (done only on a NaN state). Brax's hopper, walker2d, ant and humanoid terminate when unhealthy.
FIXED_LENGTH = ('halfcheetah',) + tuple(PLAYGROUND)
BRAX_EPISODE_LENGTH = 1000  # Brax's tasks have no limit of their own; ours when `episode_length` is 0.


@dataclasses.dataclass(frozen=True)
class Env:
  name: str
  obs_dim: int
  act_dim: int
  episode_length: int
  reset: Callable[[jax.Array], tuple[jax.Array, Any]]
  step: Callable[..., tuple]
  # `step` never resets; the caller resets every env at once after each `episode_length`-th step
  # (`sync_reset`, module docstring).
  synced_resets: bool = False


def reset_due(env: Env, it):
  """Whether the envs of a synchronised-reset `env` reset after vector step `it` (0-based, counted from
  the first reset; unbatched, so a `cond` on it stays a branch under `vmap`)."""
  return (it + 1) % env.episode_length == 0


def sync_reset(env: Env, it, keys, obs, state):
  """After vector step `it` of a batch of envs (`keys`, `obs` and `state` batched over them): every env
  reset with its key when `reset_due`, else unchanged; a no-op for an env without synchronised resets."""
  if not env.synced_resets:
    return obs, state
  return jax.lax.cond(reset_due(env, it), lambda: jax.vmap(env.reset)(keys), lambda: (obs, state))


def strong(tree):
  """The tree with weak types made strong, so reset and step states have one type signature (a weakly
  typed leaf from reset would compile a jitted loop twice)."""
  return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


def check_name(name: str) -> None:
  if name not in CHOICES:
    raise ConfigError(config_lib.unknown_name_message('environment', name, CHOICES))


def make(
  name: str,
  *,
  episode_length: int = 0,
  backend: str = 'mjx',
  mjx_ls_iterations: int = 0,
  mjx_iterations: int = 0,
  sync_resets: bool = True,
) -> Env:
  """The environment `name` (see CHOICES); `episode_length` 0 keeps the task's own limit.
  `mjx_ls_iterations` > 0 caps the MJX solver's line search (Brax's tasks ship MuJoCo's 50; the JAX line
  search is a fixed-length scan, so all 50 run every solver iteration: on a GPU a latency-bound loop), and
  `mjx_iterations` > 0 its Newton iterations; 0 keeps the task's value. Playground's tasks always run on
  MJX (`backend` is for Brax's) and ship their own, smaller solver settings (e.g. cheetah-run 4 iterations
  and 8 line-search steps). `sync_resets` gives the tasks of `FIXED_LENGTH` synchronised resets (module
  docstring)."""
  check_name(name)
  if name in GYMNAX:
    return _gymnax(name, episode_length)
  opt = solver_caps(mjx_ls_iterations, mjx_iterations)
  synced = sync_resets and name in FIXED_LENGTH
  if name in PLAYGROUND:
    return _playground(name, episode_length, opt, synced)
  return _brax(name, episode_length or BRAX_EPISODE_LENGTH, backend, opt, synced)


def _gymnax(name: str, episode_length: int) -> Env:
  import gymnax

  env, params = gymnax.make(GYMNAX[name])
  if episode_length:
    params = params.replace(max_steps_in_episode=episode_length)
  space = env.action_space(params)
  low, high = jnp.asarray(space.low, jnp.float32), jnp.asarray(space.high, jnp.float32)
  act_dim = int(space.shape[0]) if space.shape else 1

  def reset(key):
    return strong(env.reset(key, params))

  def step(key, state, action):
    scaled = low + (action + 1.0) * 0.5 * (high - low)
    obs, state, reward, terminated, truncated, info = env.step(
      key, state, scaled.reshape(space.shape), params
    )
    return (
      obs,
      strong(state),
      jnp.asarray(reward, jnp.float32),
      jnp.asarray(terminated, bool),
      jnp.asarray(truncated, bool),
      info['final_observation'],
    )

  obs_dim = int(env.observation_space(params).shape[0])
  return Env(name, obs_dim, act_dim, int(params.max_steps_in_episode), reset, step)


def _auto_reset(name, act_dim, episode_length, env_reset, env_step, synced: bool = False) -> Env:
  """An Env from a Brax-style task (`env_reset(key) -> state`, `env_step(state, action) -> state`, states
  with .obs, .reward, .done): a time limit of `episode_length` steps (truncation) and an auto-reset. The
  observation size comes from `reset`'s abstract evaluation: Brax's `observation_size` runs `reset`
  eagerly, on MJX about a thousand op-by-op compiles (30 s on two CPU cores, minutes on a GPU)."""
  obs_dim = int(jax.eval_shape(env_reset, jax.random.PRNGKey(0)).obs.shape[-1])

  def reset(key):
    state = strong(env_reset(key))
    return state.obs, (state, jnp.zeros((), jnp.int32))

  def step(key, state, action):
    inner, t = state
    nxt = env_step(inner, action)
    t = t + 1
    terminated = nxt.done > 0.5
    truncated = jnp.logical_and(t >= episode_length, jnp.logical_not(terminated))
    if synced:  # The caller resets (`sync_reset`).
      return nxt.obs, strong((nxt, t)), jnp.asarray(nxt.reward, jnp.float32), terminated, truncated, nxt.obs
    done = jnp.logical_or(terminated, truncated)
    obs_re, (state_re, t_re) = reset(key)
    new_inner = jax.tree.map(lambda a, b: jnp.where(done, a, b), state_re, nxt)
    obs = jnp.where(done, obs_re, nxt.obs)
    new_state = strong((new_inner, jnp.where(done, t_re, t)))
    return obs, new_state, jnp.asarray(nxt.reward, jnp.float32), terminated, truncated, nxt.obs

  return Env(name, obs_dim, act_dim, episode_length, reset, step, synced)


def solver_caps(mjx_ls_iterations: int = 0, mjx_iterations: int = 0) -> dict:
  """MJX solver options to override (`make`'s arguments of the same names; 0 keeps the task's)."""
  opt = {'opt.ls_iterations': mjx_ls_iterations, 'opt.iterations': mjx_iterations}
  return {k: int(v) for k, v in opt.items() if v > 0}


def brax_task(name: str, backend: str, opt: dict):
  """Brax's own environment `name` on `backend` with the MJX solver options `opt` (`solver_caps`; other
  backends ignore them), unwrapped: `make` wraps it, and `bench.py` hands it to rejax, so both time the same
  physics."""
  from brax import envs as brax_envs

  env = brax_envs.get_environment(name, backend=backend)
  if opt and backend == 'mjx':
    env.sys = env.sys.tree_replace(opt)
  return env


def _brax(name: str, episode_length: int, backend: str, opt: dict, synced: bool) -> Env:
  env = brax_task(name, backend, opt)
  return _auto_reset(name, int(env.action_size), episode_length, env.reset, env.step, synced)


def _playground(name: str, episode_length: int, opt: dict, synced: bool) -> Env:
  from mujoco_playground import registry

  env = registry.load(PLAYGROUND[name], config_overrides={'impl': 'jax'})
  if opt:
    env._mjx_model = env.mjx_model.tree_replace(opt)  # pylint: disable=protected-access  # No setter.
  # Playground's tasks have no time limit of their own (its training wrappers add one): ours applies.
  # Their actions are MuJoCo controls in [-1, 1] already.
  return _auto_reset(
    name,
    int(env.action_size),
    episode_length or int(env._config.episode_length),  # pylint: disable=protected-access
    env.reset,
    env.step,
    synced,
  )
