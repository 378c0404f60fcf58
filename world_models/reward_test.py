"""Reward: max-cosine on crafted inputs; temporal alignment picks the best offset."""

import jax
import jax.numpy as jnp
import numpy as np

from world_models import reward


def test_max_cosine_crafted():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 5))
  np.testing.assert_allclose(reward.max_cosine(x, x), 1.0, rtol=1e-6)
  np.testing.assert_allclose(reward.max_cosine(x, 2 * x), 0.5, rtol=1e-6)
  np.testing.assert_allclose(reward.max_cosine(x, -x), -1.0, rtol=1e-6)
  np.testing.assert_allclose(reward.cosine(x, 2 * x), 1.0, rtol=1e-6)  # Plain cosine ignores the norm.


def test_temporal_alignment_picks_the_best_offset():
  # The agent reaches the target motion after 3 steps: agent[3 + k] == target[k].
  target = jax.nn.one_hot(jnp.arange(8), 8)
  agent = jnp.concatenate([jnp.full((3, 8), 0.01), target, target[-1:]], 0)  # 12 steps.
  rewards, best = reward.aligned_reward(agent, target, window=4)
  assert int(best) == 3
  np.testing.assert_array_equal(reward.aligned_indices(3, 12, 8), [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 7])
  np.testing.assert_allclose(rewards[3:11], 1.0, rtol=1e-6)
  assert float(rewards[:3].max()) < 0.1
  # Without alignment the same agent scores much lower.
  unaligned = reward.genrl_reward(agent[:, None], target, 4, align=False)
  batched = reward.genrl_reward(agent[:, None], target, 4, align=True)
  assert batched.shape == (12, 1)
  np.testing.assert_allclose(batched[:, 0], rewards, rtol=1e-6)
  assert float(unaligned.mean()) < float(batched.mean())


def test_window_scores_on_a_crafted_matrix():
  matrix = jnp.full((7, 4), 0.1).at[2, 0].set(1.0).at[3, 1].set(1.0).at[4, 2].set(1.0)
  scores = reward.window_scores(matrix, 3)
  assert scores.shape == (5,) and int(jnp.argmax(scores)) == 2
  np.testing.assert_allclose(scores[2], 1.0, rtol=1e-6)


def test_pearson_crafted():
  x = jnp.arange(12.0).reshape(3, 4)
  np.testing.assert_allclose(reward.pearson(x, 3 * x + 1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(reward.pearson(x, -0.5 * x), -1.0, rtol=1e-6)
  y = jnp.array([1.0, -1.0, -1.0, 1.0])  # Orthogonal to the centred ramp 0, 1, 2, 3.
  np.testing.assert_allclose(reward.pearson(jnp.arange(4.0), y), 0.0, atol=1e-6)
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=50), rng.normal(size=50)
  np.testing.assert_allclose(reward.pearson(a, b), np.corrcoef(a, b)[0, 1], rtol=1e-5)
  assert np.isnan(reward.pearson(jnp.ones(5), jnp.arange(5.0)))  # A constant reward has no correlation.
