"""Tests of the SAFT mask (exact k, ties, determinism, eligibility) and of the masked optimizers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clip_saft import baselines
from clip_saft import saft
from common.errors import ConfigError


def tree(values):
  """A CLIP-shaped toy tree: visual / text / logit_scale."""
  return {
    'logit_scale': jnp.asarray(values[0]),
    'text': {'w': jnp.asarray(values[1])},
    'visual': {'a': jnp.asarray(values[2]), 'b': jnp.asarray(values[3])},
  }


def count(mask):
  return int(sum(np.sum(m) for m in jax.tree.leaves(mask)))


def test_top_k_is_exact_with_ties_broken_by_flat_index():
  # Flat order (leaves sorted by key): logit_scale, text/w (3), visual/a (4), visual/b (2).
  scores = tree([9.0, [1.0, 2.0, 2.0], [2.0, 2.0, 0.0, 5.0], [2.0, 0.0]])
  params = jax.tree.map(jnp.zeros_like, scores)
  mask = saft.top_k_mask(scores, saft.eligible_tree(params, 'both'), 0.3)  # 9 eligible -> k = 3.
  assert count(mask) == 3
  assert not mask['logit_scale']  # Never eligible, whatever its score.
  np.testing.assert_array_equal(mask['visual']['a'], [False, False, False, True])  # 5.0 first,
  np.testing.assert_array_equal(mask['text']['w'], [False, True, True])  # then the first two tied 2.0s.
  np.testing.assert_array_equal(mask['visual']['b'], [False, False])
  again = saft.top_k_mask(scores, saft.eligible_tree(params, 'both'), 0.3)
  jax.tree.map(np.testing.assert_array_equal, mask, again)


def test_many_exact_zeros_do_not_inflate_the_mask():
  scores = tree([0.0, np.zeros(50), np.zeros(30), [1.0, 0.0]])
  params = jax.tree.map(jnp.zeros_like, scores)
  for density in (0.01, 0.05, 0.5, 1.0):
    mask = saft.top_k_mask(scores, saft.eligible_tree(params), density)
    assert count(mask) == saft.num_selected(82, density) == int(np.ceil(density * 82))
    assert mask['visual']['b'][0]  # The only positive score is always in.


def test_image_eligibility_and_bad_values():
  scores = tree([1.0, [5.0, 5.0], [1.0, 2.0], [3.0]])
  mask = saft.top_k_mask(scores, saft.eligible_tree(scores, 'image'), 1.0)
  assert count(mask) == 3 and not mask['text']['w'].any()
  for density in (0.0, -0.1, 1.5, float('nan')):
    with pytest.raises(ConfigError, match='density'):
      saft.top_k_mask(scores, saft.eligible_tree(scores), density)
  with pytest.raises(ConfigError, match='eligibility'):
    saft.eligible_tree(scores, 'text')


def test_scores_signed_sum_versus_abs_sum():
  grads = [np.array([1.0, -2.0]), np.array([-1.0, 1.0])]
  fn = lambda p, g: {'x': jnp.asarray(g)}  # noqa: E731
  signed = saft.accumulate_scores(fn, {'x': jnp.zeros(2)}, grads, 'signed_sum')
  absolute = saft.accumulate_scores(fn, {'x': jnp.zeros(2)}, grads, 'abs_sum')
  np.testing.assert_array_equal(signed['x'], [0.0, 1.0])
  np.testing.assert_array_equal(absolute['x'], [2.0, 3.0])
  with pytest.raises(ConfigError):
    saft.accumulate_scores(fn, {'x': jnp.zeros(2)}, grads, 'mean')


def test_random_and_magnitude_masks_have_exactly_k():
  rng = np.random.default_rng(0)
  params = tree([1.0, rng.normal(size=40), rng.normal(size=30), rng.normal(size=30)])
  eligible = saft.eligible_tree(params)
  r1 = saft.random_mask(jax.random.PRNGKey(1), params, eligible, 0.1)
  r2 = saft.random_mask(jax.random.PRNGKey(1), params, eligible, 0.1)
  assert count(r1) == 10
  jax.tree.map(np.testing.assert_array_equal, r1, r2)
  mag = saft.magnitude_mask(params, eligible, 0.1)
  flat = np.abs(
    np.concatenate([np.ravel(params['text']['w'])] + [np.ravel(params['visual'][k]) for k in 'ab'])
  )
  chosen = np.concatenate([np.ravel(mag['text']['w'])] + [np.ravel(mag['visual'][k]) for k in 'ab'])
  assert count(mag) == 10 and flat[chosen].min() >= np.sort(flat)[-10]


OPTIMIZERS = {
  'finetune adamw (clip, wd)': lambda: baselines.make_direction('adamw', weight_decay=0.5, clip_norm=1.0),
  'finetune sgd (momentum, wd)': lambda: baselines.make_direction('sgd', weight_decay=0.5, clip_norm=1.0),
  'optax.adamw': lambda: optax.adamw(0.1, weight_decay=0.5),
  'pretraining chain': lambda: optax.chain(
    optax.clip_by_global_norm(1.0), optax.adamw(0.1, weight_decay=0.1)
  ),
}


@pytest.mark.parametrize('name', list(OPTIMIZERS))
def test_frozen_entries_stay_bit_identical_under_every_optimizer(name):
  rng = np.random.default_rng(3)
  params = tree([2.0, rng.normal(size=6), rng.normal(size=5), np.array([-0.0, 1.0])])
  mask = saft.top_k_mask(jax.tree.map(jnp.abs, params), saft.eligible_tree(params), 0.3)
  tx = saft.masked(OPTIMIZERS[name](), mask)
  state = tx.init(params)
  p = params
  loss = lambda q: sum(jnp.sum((x - 3.0) ** 2) for x in jax.tree.leaves(q))  # noqa: E731
  for _ in range(5):
    grads = jax.grad(loss)(p)
    updates, state = tx.update(grads, state, p)
    updates = jax.tree.map(lambda u: -0.1 * u, updates) if name.startswith('finetune') else updates
    p = saft.apply_updates(p, updates, mask)
  for new, old, m in zip(jax.tree.leaves(p), jax.tree.leaves(params), jax.tree.leaves(mask)):
    new, old = np.asarray(new), np.asarray(old)
    np.testing.assert_array_equal(new.view(np.uint32)[~m], old.view(np.uint32)[~m])  # Bits, even -0.0.
    assert np.all(new[m] != old[m])


def test_sparse_delta_restores_the_model_bit_for_bit():
  rng = np.random.default_rng(4)
  params0 = tree([1.0, rng.normal(size=5), rng.normal(size=4), rng.normal(size=2)])
  mask = saft.top_k_mask(jax.tree.map(jnp.abs, params0), saft.eligible_tree(params0), 0.4)
  tuned = jax.tree.map(lambda p, m: jnp.where(m, p + 0.123, p), params0, mask)
  indices, values = saft.sparse_delta(tuned, mask)
  assert len(indices) == count(mask)
  back = saft.apply_sparse_delta(params0, indices, values)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), back, tuned)
