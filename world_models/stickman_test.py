"""MJX stickman: model shape, physics sanity, rasteriser, pose rewards and captions, expert vs random.

MJX compiles slowly on CPU, so every rollout goes through one jitted function (`_rollout`, its policy chosen
by a traced mode) and the hand-built poses through one vmapped `set_pose`; `collect` is only traced.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.errors import ConfigError
from world_models import stickman

LENGTH, ENVS = 60, 4
ZERO, RANDOM, EXPERT = 0, 1, 2


@jax.jit
def _rollout(rng, task, mode):
  """ENVS episodes of LENGTH steps from standing starts under zero, random or expert actions."""

  def episode(rng):
    def body(state, t):
      random_a = jax.random.uniform(jax.random.fold_in(rng, t), (stickman.ACTION_DIM,), minval=-1, maxval=1)
      action = jnp.where(
        mode == ZERO, 0.0, jnp.where(mode == RANDOM, random_a, stickman.expert_action(task, state))
      )
      state = stickman.step(state, action)
      a, b = stickman.segments(state)
      lowest = jnp.min(jnp.minimum(a[:, 1], b[:, 1]) - jnp.asarray(stickman._RADIUS))
      return state, (stickman.task_rewards(state), state.qpos[1], lowest)

    final, (rewards, root_z, lowest) = jax.lax.scan(body, stickman.reset(rng), jnp.arange(LENGTH))
    return dict(
      time=final.time, finite=jnp.all(jnp.isfinite(final.qpos)), rewards=rewards, root_z=root_z, lowest=lowest
    )

  return jax.vmap(episode)(jax.random.split(rng, ENVS))


def _pose(**joints):
  qpos = np.array(stickman.MJ_MODEL.qpos0, np.float32)
  for name, value in joints.items():
    qpos[stickman.qpos_index(name)] = value
  return qpos


POSES = {
  'standing': _pose(),
  'lying': _pose(rootz=0.12 - stickman.STAND_Z, rooty=np.pi / 2),
  'one leg': _pose(hip_l=1.5, knee_l=1.6),
  'arms up': _pose(shoulder_r=3.1, shoulder_l=3.1),
}


@pytest.fixture(scope='module')
def poses():
  states = jax.jit(jax.vmap(stickman.set_pose))(jnp.asarray(np.stack(list(POSES.values()))))
  return {name: jax.tree.map(lambda x, i=i: x[i], states) for i, name in enumerate(POSES)}


@pytest.fixture(scope='module')
def rollouts():
  rng = jax.random.PRNGKey(0)
  runs = {prompt: _rollout(rng, stickman.check_prompt(prompt), EXPERT) for prompt in stickman.TASKS}
  runs['zero'] = _rollout(rng, 0, ZERO)
  runs['random'] = _rollout(rng, 0, RANDOM)  # Rewards of every task are recorded: one random run serves all.
  return runs


def test_model_loads_with_designed_joints():
  m = stickman.MJ_MODEL
  assert m.nu == stickman.ACTION_DIM == 8 and m.njnt == 11 and m.nq == 11 and m.nv == 11
  assert stickman.JOINTS[:3] == ('rootx', 'rootz', 'rooty')
  np.testing.assert_array_equal(m.actuator_ctrlrange, np.tile([-1.0, 1.0], (8, 1)))
  assert 0.025 <= stickman.FRAME_SKIP * m.opt.timestep <= 0.05


def test_step_advances_time_and_stays_finite(rollouts):
  for run in rollouts.values():
    assert bool(jnp.all(run['finite']))
    np.testing.assert_allclose(
      run['time'], LENGTH * stickman.FRAME_SKIP * stickman.MJ_MODEL.opt.timestep, rtol=1e-4
    )


def test_gravity_without_action(rollouts):
  run = rollouts['zero']
  assert float(run['root_z'].max()) <= 0.01  # Starts at 0 (standing): it sags or falls, never rises.
  assert float(run['root_z'][:, -1].mean()) < -0.05  # Unpowered, it does go down.
  for name, r in rollouts.items():  # The body stays on the floor, within contact softness.
    assert float(r['lowest'].min()) > -0.05, name


def test_render(poses):
  render = jax.jit(stickman.render, static_argnums=(1, 2))
  standing, arms = render(poses['standing'], 32), render(poses['arms up'], 32)
  assert standing.shape == (32, 32, 3) and standing.dtype == jnp.float32
  assert float(standing.min()) >= 0 and float(standing.max()) <= 1
  np.testing.assert_array_equal(standing, render(poses['standing'], 32))
  other = render(poses['standing'], 32, stickman.VLM_LOOK)
  assert float(jnp.abs(other - standing).mean()) > 0.2
  # The frame's top is at 2.05 m and a row is 7.5 cm: the head's top (1.74 m) is in row 4 (its soft edge
  # reaches row 2), raised forearms (up to 1.99 m) are drawn in rows 0-1.
  assert float(jnp.abs(arms[:2] - standing[:2]).max()) > 0.3
  assert float(jnp.abs(standing[:2] - jnp.asarray(stickman.AGENT_LOOK.background)).max()) < 0.05
  # The floor band fills the bottom rows (z < 0 below row 11.3 of 32 from the bottom).
  assert float(jnp.abs(standing[-2] - jnp.asarray(stickman.AGENT_LOOK.background)).max(-1).min()) > 0.1
  assert render(poses['lying'], 64).shape == (64, 64, 3)


def test_task_rewards_prefer_matching_poses(poses):
  rewards = {name: np.asarray(stickman.task_rewards(state)) for name, state in poses.items()}
  for r in rewards.values():
    assert np.all((r >= 0) & (r <= 1))
  matches = {
    'standing': 'stickman standing',
    'lying': 'stickman lying down',
    'one leg': 'stickman standing on one leg',
    'arms up': 'stickman arms up',
  }
  for pose, prompt in matches.items():
    task = stickman.check_prompt(prompt)
    assert rewards[pose][task] > 0.9, (pose, rewards[pose])
    other = 'lying' if pose != 'lying' else 'standing'
    assert rewards[other][task] < 0.2, (pose, other, rewards[other])
    assert float(stickman.task_reward(task, poses[pose])) == pytest.approx(float(rewards[pose][task]))


def test_captions(poses):
  caption = {name: stickman.CAPTIONS[int(stickman.caption_index(state))] for name, state in poses.items()}
  assert caption == {
    'standing': 'stickman standing',
    'lying': 'stickman lying down',
    'one leg': 'stickman standing on one leg',
    'arms up': 'stickman arms up',
  }


# Measured (PRNGKeys 0-4, 4 envs x 60 steps): expert - random mean reward was 0.30-0.46 standing, 0.29-0.43
# lying down (random also collapses, just later), 0.17-0.39 one leg, 0.48-0.65 arms up. Margins: about half
# the smallest gap.
MARGINS = {
  'stickman standing': 0.15,
  'stickman lying down': 0.12,
  'stickman standing on one leg': 0.08,
  'stickman arms up': 0.25,
}


def test_expert_beats_random(rollouts):
  for prompt, margin in MARGINS.items():
    task = stickman.check_prompt(prompt)
    expert = float(rollouts[prompt]['rewards'][..., task].mean())
    random = float(rollouts['random']['rewards'][..., task].mean())
    assert expert > random + margin, (prompt, expert, random)
  # And the lying expert really ends up lying (its last quarter), not just falling earlier than random.
  lying = stickman.check_prompt('stickman lying down')
  assert float(rollouts['stickman lying down']['rewards'][:, -LENGTH // 4 :, lying].mean()) > 0.8


def test_check_prompt():
  assert stickman.check_prompt('stickman arms up') == 3
  with pytest.raises(ConfigError, match='unknown stickman task prompt'):
    stickman.check_prompt('dance')


def test_clip_start_rests_on_the_floor_and_covers_the_captions():
  keys = jax.random.split(jax.random.PRNGKey(0), 64)
  states = jax.jit(jax.vmap(stickman.clip_start))(keys, jax.random.split(jax.random.PRNGKey(1), 64))
  a, b = jax.vmap(stickman.segments)(states)
  lowest = jnp.min(jnp.minimum(a[..., 1], b[..., 1]) - jnp.asarray(stickman._RADIUS), -1)
  np.testing.assert_allclose(lowest, 0.0, atol=1e-4)
  assert bool(jnp.all(jnp.isfinite(states.qvel))) and float(jnp.abs(states.qvel[:, :3]).max()) == 0.0
  # Random poses give the VLM more than reset's standing start: most captions occur already at the start.
  captions = set(np.asarray(jax.vmap(stickman.caption_index)(states)).tolist())
  assert len(captions) >= 4, [stickman.CAPTIONS[i] for i in captions]


def test_collect_shapes():
  shapes = jax.eval_shape(
    lambda r: stickman.collect(r, num_envs=2, length=3, size=16, scripted_fraction=0.5), jax.random.PRNGKey(0)
  )
  assert shapes['frames'].shape == (2, 3, 16, 16, 3) and shapes['frames'].dtype == jnp.uint8
  assert shapes['actions'].shape == (2, 3, 8)
  assert shapes['q'].shape == (2, 3, 11) and shapes['qd'].shape == (2, 3, 11)
