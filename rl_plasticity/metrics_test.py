import jax.numpy as jnp
import numpy as np
import pytest

from rl_plasticity import metrics


def test_dormant_scores_against_hand_computed_activations():
  # Units' mean |h| over the batch: [1, 3, 0, 0.2]; layer mean 1.05.
  h = jnp.array([[2.0, 3.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.4]])
  s = np.asarray(metrics.dormant_scores(h))
  np.testing.assert_allclose(s, np.array([1.0, 3.0, 0.0, 0.2]) / 1.05, rtol=1e-6)
  # tau=0.1: unit 2 (0) only; 0.2/1.05 = 0.19 > 0.1. tau=0.025: unit 2 only. Over two layers (4 + 2 units):
  # Scores [1.98, 0.0198]: the second unit is dormant at 0.1 and at 0.025.
  other = jnp.array([[1.0, 0.01], [1.0, 0.01]])
  acts = {'a': h, 'b': other}
  assert float(metrics.dormant_ratio(acts, 0.1)) == pytest.approx(2 / 6)
  assert float(metrics.dormant_ratio(acts, 0.025)) == pytest.approx(2 / 6)
  assert float(metrics.dormant_ratio(acts, 0.2)) == pytest.approx(3 / 6)  # 0.19 <= 0.2 joins.


def test_silent_layer_is_all_dormant_and_fau_counts_pairs():
  h = jnp.zeros((3, 5))
  assert float(metrics.dormant_ratio({'x': h}, 0.0)) == 1.0
  acts = {'a': jnp.array([[1.0, 0.0], [0.0, 0.0]]), 'b': jnp.array([[2.0, 3.0], [0.0, 1.0]])}
  assert float(metrics.active_fraction(acts)) == 4 / 8


def test_densities():
  masks = {'params': {'l': {'dense_0': {'kernel': jnp.array([[1.0, 0.0], [0.0, 0.0]]), 'bias': jnp.ones(2)}}}}
  paths = [('l', 'dense_0', 'kernel')]
  assert float(metrics.global_density(masks, paths)) == 0.25
  assert float(metrics.layer_densities(masks, paths)['l/dense_0']) == 0.25
