"""Environment rules, renderer determinism, caption rules, task scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.errors import ConfigError
from world_models import envs


def test_step_rule_and_wrap():
  state = envs.ArmState(q=jnp.array([3.1, 0.0]), qd=jnp.array([0.1, 0.0]))
  nxt = envs.step(state, jnp.array([1.0, -5.0]))  # The action is clipped to [-1, 1].
  np.testing.assert_allclose(nxt.qd, [0.8 * 0.1 + 0.25, -0.25], rtol=1e-6)
  assert -np.pi <= float(nxt.q[0]) < np.pi  # 3.1 + 0.33 wrapped.
  np.testing.assert_allclose(nxt.q[0], 3.1 + 0.33 - 2 * np.pi, rtol=1e-5)


def test_render_is_deterministic_and_draws_the_arm():
  state = envs.ArmState(q=jnp.array([np.pi / 2, 0.0]), qd=jnp.zeros(2))
  a, b = envs.render(state, 16), envs.render(state, 16)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (16, 16, 3) and float(a.min()) >= 0 and float(a.max()) <= 1
  # Pointing up: the column above the centre is drawn, the row below is background.
  assert float(jnp.abs(a[2, 8] - jnp.asarray(envs.AGENT_LOOK.background)).max()) > 0.3
  assert float(jnp.abs(a[13, 8] - jnp.asarray(envs.AGENT_LOOK.background)).max()) < 0.05
  other = envs.render(state, 16, envs.VLM_LOOK)
  assert float(jnp.abs(other - a).mean()) > 0.2


def test_caption_rules():
  def caption(q):
    return envs.CAPTIONS[int(envs.caption_index(envs.ArmState(q=jnp.asarray(q), qd=jnp.zeros(2))))]

  assert caption([np.pi / 2, 0.0]) == 'arm pointing up'
  assert caption([np.pi, 0.1]) == 'arm pointing left'
  assert caption([0.8, 1.2]) == 'arm bent up'  # Bent elbow, the tip above the shoulder.
  assert caption([0.3, 3.0]) == 'arm folded'


def test_task_rewards_and_expert():
  task = envs.check_prompt('arm pointing up')
  assert float(envs.task_reward(task, envs.ArmState(q=jnp.array([np.pi / 2, 0.0]), qd=jnp.zeros(2)))) == 1.0
  assert float(envs.task_reward(task, envs.ArmState(q=jnp.array([-np.pi / 2, 0.0]), qd=jnp.zeros(2)))) < 0.01
  state = envs.ArmState(q=jnp.array([-2.0, 1.5]), qd=jnp.zeros(2))
  for _ in range(60):
    state = envs.step(state, envs.expert_action(task, state))
  assert float(envs.task_reward(task, state)) > 0.95
  with pytest.raises(ConfigError, match='unknown task prompt'):
    envs.check_prompt('dance')


def test_collect_shapes():
  data = jax.jit(lambda r: envs.collect(r, num_envs=2, length=5, size=8, scripted_fraction=0.5))(
    jax.random.PRNGKey(0)
  )
  assert data['frames'].shape == (2, 5, 8, 8, 3) and data['frames'].dtype == jnp.uint8
  assert data['actions'].shape == (2, 5, 2) and float(jnp.abs(data['actions']).max()) <= 1


def test_block_target_is_held_for_a_block_and_changes_between_blocks():
  rng = jax.random.PRNGKey(3)
  b = envs.TARGET_BLOCK
  first = [envs.block_target(rng, t) for t in range(b)]
  for target in first[1:]:
    np.testing.assert_array_equal(target, first[0])
  assert not np.allclose(envs.block_target(rng, b), first[0])
