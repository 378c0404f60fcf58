"""Hand-computed values for n-step returns, double-DQN targets, TD losses and the C51 projection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.rl import targets

REWARDS = jnp.array([1.0, 2.0, 3.0])
NO = jnp.array([False, False, False])


@pytest.mark.parametrize(
  'dones, terminals, in_range, n, expected',
  [
    # 1 + 0.5 * 2 + 0.25 * 3, bootstrap gamma**3 from step 2.
    (NO, NO, None, 3, (2.75, 0.125, 2)),
    # Terminated at step 1: the next step is another episode, no bootstrap.
    ([False, True, False], [False, True, False], None, 3, (2.0, 0.0, 1)),
    # Truncated at step 1: bootstrap from its true final observation with gamma**2.
    ([False, True, False], NO, None, 3, (2.0, 0.25, 1)),
    # Done at step 2 (the last one used) does not matter for what came before.
    ([False, False, True], [False, False, True], None, 3, (2.75, 0.0, 2)),
    # The write head cuts the window after two steps.
    (NO, NO, [True, True, False], 3, (2.0, 0.25, 1)),
    # Traced horizon n = 1 and n = 2 inside the length-3 window.
    (NO, NO, None, 1, (1.0, 0.5, 0)),
    (NO, NO, None, 2, (2.0, 0.25, 1)),
  ],
)
def test_n_step_window_hand_values(dones, terminals, in_range, n, expected):
  in_range = None if in_range is None else jnp.array(in_range)
  got = targets.n_step_window(REWARDS, jnp.array(dones), jnp.array(terminals), 0.5, n, in_range)
  np.testing.assert_allclose(got.reward, expected[0])
  np.testing.assert_allclose(got.discount, expected[1])
  assert int(got.last) == expected[2]


def test_n_step_return_bootstraps_from_last_used_step():
  next_values = jnp.array([10.0, 20.0, 30.0])
  got = targets.n_step_return(REWARDS, NO, NO, next_values, 0.5, 3)
  np.testing.assert_allclose(got, 2.75 + 0.125 * 30.0)
  truncated = targets.n_step_return(REWARDS, jnp.array([False, True, False]), NO, next_values, 0.5, 3)
  np.testing.assert_allclose(truncated, 2.0 + 0.25 * 20.0)


def test_masked_horizon_is_bitwise_a_shorter_window():
  """n = 3 inside a window of 10 equals a window of 3, bitwise (jitted, on CPU), also with n traced under vmap."""
  key_r, key_d, key_t = jax.random.split(jax.random.key(0), 3)
  rewards = jax.random.normal(key_r, (64, 10))
  dones = jax.random.uniform(key_d, (64, 10)) < 0.2
  terminals = dones & (jax.random.uniform(key_t, (64, 10)) < 0.5)
  gamma = jnp.float32(0.97)
  short = jax.jit(targets.n_step_window)(rewards[:, :3], dones[:, :3], terminals[:, :3], gamma, 3)
  masked = jax.jit(targets.n_step_window)(rewards, dones, terminals, gamma, jnp.int32(3))
  for a, b in zip(short, masked):
    np.testing.assert_array_equal(a, b)
  # Jitted like the agent: eager op-by-op execution rounds differently from fused code (FMA contraction).
  swept = jax.jit(jax.vmap(targets.n_step_window, in_axes=(None, None, None, None, 0)))(
    rewards, dones, terminals, gamma, jnp.array([1, 3])
  )
  for a, b in zip(short, swept):
    np.testing.assert_array_equal(a, b[1])


def test_double_dqn_target():
  q_online = jnp.array([[1.0, 3.0, 2.0]])
  q_target = jnp.array([[10.0, 20.0, 30.0]])
  reward, discount = jnp.array([1.0]), jnp.array([0.5])
  np.testing.assert_allclose(targets.double_dqn_target(reward, discount, q_target, q_online), [11.0])
  np.testing.assert_allclose(targets.double_dqn_target(reward, discount, q_target), [16.0])  # Plain DQN: max.
  np.testing.assert_allclose(targets.double_dqn_target(reward, jnp.array([0.0]), q_target, q_online), [1.0])


def test_td_losses():
  prediction = jnp.array([0.0, 0.0, 0.0])
  target = jnp.array([0.5, -2.0, 1.0])
  np.testing.assert_allclose(targets.td_loss(prediction, target), [0.125, 1.5, 0.5])
  np.testing.assert_allclose(targets.td_loss(prediction, target, mse=True), [0.25, 4.0, 1.0])
  swept = jax.vmap(targets.td_loss, in_axes=(None, None, 0))(prediction, target, jnp.array([False, True]))
  np.testing.assert_allclose(swept, [[0.125, 1.5, 0.5], [0.25, 4.0, 1.0]])
  grad = jax.grad(lambda p: jnp.sum(targets.td_loss(p, target)))(prediction)
  np.testing.assert_allclose(grad, [-0.5, 1.0, -1.0])  # -clip(x, -1, 1); no gradient into the target.


def test_categorical_projection_hand_values():
  support = jnp.array([-1.0, 0.0, 1.0])
  # Atoms 0.5 (mass 0.2 + 0.3, split evenly between 0 and 1) and 2.0 (clipped to 1).
  got = targets.categorical_projection(jnp.array([0.5, 0.5, 2.0]), jnp.array([0.2, 0.3, 0.5]), support)
  np.testing.assert_allclose(got, [0.0, 0.25, 0.75], atol=1e-7)
  # An atom on the grid keeps its mass; one below v_min goes to v_min.
  got = targets.categorical_projection(jnp.array([-3.0, 0.0, 1.0]), jnp.array([0.1, 0.6, 0.3]), support)
  np.testing.assert_allclose(got, [0.1, 0.6, 0.3], atol=1e-7)


def test_categorical_projection_conserves_mass_and_mean():
  support = jnp.linspace(-10.0, 10.0, 51)
  probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (8, 51)))
  target_atoms = 0.3 + 0.9 * support  # Inside the support: the projection keeps the mean exactly.
  got = targets.categorical_projection(jnp.broadcast_to(target_atoms, (8, 51)), probs, support)
  np.testing.assert_allclose(jnp.sum(got, -1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(got @ support, probs @ target_atoms, rtol=1e-4, atol=1e-5)


def test_categorical_loss_is_cross_entropy():
  logits = jnp.array([0.0, 1.0, 2.0])
  target = jnp.array([0.2, 0.3, 0.5])
  expected = -np.sum(np.array(target) * np.array(jax.nn.log_softmax(logits)))
  np.testing.assert_allclose(targets.categorical_loss(logits, target), expected, rtol=1e-6)
