import jax
import jax.numpy as jnp
import numpy as np
import pytest
import optax

from rl_plasticity import ne


def test_er_densities_hand_computed():
  # Equal shapes: equal densities at the global target.
  np.testing.assert_allclose(ne.er_densities([(10, 10), (10, 10)], 0.5), [0.5, 0.5])
  # (4, 64): raw 68/256 = 0.2656; (64, 64): 0.03125; (64, 1): 65/64 > 1 -> dense.
  # Sizes 256, 4096, 64; budget 0.2 * 4416 - 64 = 819.2 = eps (0.2656 * 256 + 0.03125 * 4096) -> eps = 4.0
  d = ne.er_densities([(4, 64), (64, 64), (64, 1)], 0.2)
  assert d[2] == 1.0
  # eps * 0.2656 = 1.06 > 1: the first layer is dense too; then eps = (883.2 - 320) / 128 = 4.4.
  np.testing.assert_allclose(d, [1.0, 4.4 * 0.03125, 1.0], rtol=1e-9)
  sizes = np.array([256, 4096, 64])
  np.testing.assert_allclose(np.dot(d, sizes) / sizes.sum(), 0.2, rtol=1e-9)


def test_select_lowest_with_traced_count_compiles_once():
  score = jnp.array([[3.0, 1.0, 2.0], [0.5, 5.0, 4.0]])
  eligible = jnp.array([[True, True, False], [True, True, True]])
  f = jax.jit(ne.select_lowest)
  np.testing.assert_array_equal(f(score, eligible, 2), [[False, True, False], [True, False, False]])
  np.testing.assert_array_equal(f(score, eligible, 3), [[True, True, False], [True, False, False]])
  np.testing.assert_array_equal(f(score, eligible, 0), np.zeros((2, 3), bool))
  np.testing.assert_array_equal(f(score, eligible, 9), eligible)  # Never picks ineligible entries.
  assert f._cache_size() == 1


def test_grow_prune_picks_largest_potential_gradient_and_lowest_score():
  w = jnp.array([[0.5, -0.1, 0.0], [0.0, 2.0, 0.0]])
  mask = jnp.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
  grad = jnp.array([[9.0, 9.0, 0.3], [-0.7, 9.0, 0.1]])
  new, grown, pruned = ne.grow_prune(w, mask, grad, jnp.abs(w), 1, 2)
  # Pruned: (0, 1) (|w| 0.1, lowest active). Candidates: (0, 1) grad 9, (0, 2) 0.3, (1, 0) 0.7, (1, 2) 0.1.
  np.testing.assert_array_equal(new, [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
  assert int(grown) == 2 and int(pruned) == 1


def test_prune_score_dormant_first():
  w = jnp.array([[5.0, 0.1], [4.0, 0.2]])
  units = jnp.array([0.0, 2.0])  # Unit 0 is dormant.
  s = ne.prune_score(w, units, 0.1, 'dormant')
  # Connections into unit 0 (large |w|) rank below those into unit 1.
  assert float(jnp.max(s[:, 0])) < float(jnp.min(s[:, 1]))
  np.testing.assert_allclose(ne.prune_score(w, units, 0.1, 'magnitude'), jnp.abs(w) / 5.0)


def test_schedule_counts_reach_the_final_count():
  layer = ne.Layer(('x', 'dense_0', 'kernel'), 1000, 200, 750)
  active, counts = 200, []
  for k in range(1, 13):
    n_prune, n_grow = ne.schedule_counts(
      k, jnp.int32(active), layer, grow_steps=10, end_step=20, prune_ratio=0.4, zeta=0.0
    )
    counts.append((int(n_prune), int(n_grow)))
    active += int(n_grow) - int(n_prune)
    if k <= 10:
      assert active == 200 + (550 * k) // 10
  assert active == 750
  assert counts[0] == (36, 91)  # net 55; prune floor(55 * 0.4 / 0.6) = 36.
  assert counts[-1] == (0, 0)  # Zeta 0: no churn after growth.
  n_prune, n_grow = ne.schedule_counts(
    11, jnp.int32(750), layer, grow_steps=10, end_step=20, prune_ratio=0.4, zeta=0.2
  )
  assert int(n_prune) == int(n_grow) == int(np.floor(0.1 * (1 + np.cos(np.pi / 10)) * 750))


def test_schedule_target_is_exact_under_jit():
  # The growth target is an integer formula: floor((final - initial) k / G) exactly, also compiled. The float
  # fraction k / G it replaced came out as 0.99999994 at k = G = 165 under jit, so a 256 x 256 kernel grown
  # to full density ended one connection short (the H200 run of 2026-11-29).
  for size, initial, g in ((65536, 16384, 165), (65536, 13107, 165), (5888, 1500, 82), (1000, 200, 10)):
    layer = ne.Layer(('x', 'dense_0', 'kernel'), size, initial, size)
    f = jax.jit(
      lambda k, layer=layer, g=g: ne.schedule_counts(
        k, jnp.int32(0), layer, grow_steps=g, end_step=2 * g, prune_ratio=0.0, zeta=0.0
      )[1]
    )
    for k in range(1, g + 1):
      assert int(f(k)) == initial + ((size - initial) * k) // g, (size, g, k)


def test_masked_adam_matches_adam_on_active_entries_and_zeroes_the_rest():
  params = {'w': jnp.array([1.0, 2.0, 0.0]), 'b': jnp.array([0.5])}
  masks = {'w': jnp.array([1.0, 1.0, 0.0]), 'b': jnp.array([1.0])}
  tx, ref = ne.masked_adam(0.1), optax.adam(0.1)
  s, r = tx.init(params), ref.init(params)
  for g in (
    {'w': jnp.array([0.3, -1.0, 5.0]), 'b': jnp.array([2.0])},
    {'w': jnp.array([1.0, 1.0, 1.0]), 'b': jnp.array([0.0])},
  ):
    u, s = tx.update(g, s, params, masks=masks)
    ru, r = ref.update(g, r, params)
    np.testing.assert_allclose(u['w'][:2], ru['w'][:2], rtol=1e-6)
    np.testing.assert_allclose(u['b'], ru['b'], rtol=1e-6)
    assert float(u['w'][2]) == 0.0 and float(s.mu['w'][2]) == 0.0 and float(s.nu['w'][2]) == 0.0
  cleared = ne.mask_opt_state(s, {'w': jnp.array([0.0, 1.0, 1.0]), 'b': jnp.array([1.0])})
  assert (
    float(cleared.mu['w'][0]) == 0.0 and float(cleared.nu['w'][0]) == 0.0 and int(cleared.count['w']) == 2
  )


def test_stale_moments_decay_under_the_mask_and_feed_a_regrown_connection():
  # The NE code's Adam (switch `stale_adam_moments`): a masked position's moments are not zeroed but decay
  # by b1 and b2 per step; its update stays zero; once regrown, its first update uses what is left.
  params = {'w': jnp.array([1.0, 2.0])}
  on, off = {'w': jnp.array([1.0, 1.0])}, {'w': jnp.array([1.0, 0.0])}
  g = {'w': jnp.array([1.0, 1.0])}
  stale, plain = ne.masked_adam(0.1, stale_moments=True), ne.masked_adam(0.1)
  s, p = stale.init(params), plain.init(params)
  _, s = stale.update(g, s, masks=on)
  _, p = plain.update(g, p, masks=on)
  m1, v1 = float(s.mu['w'][1]), float(s.nu['w'][1])  # 0.1 and 0.001 after one step of gradient 1.
  for _ in range(3):
    u, s = stale.update(g, s, masks=off)
    assert float(u['w'][1]) == 0.0
  np.testing.assert_allclose(
    [float(s.mu['w'][1]), float(s.nu['w'][1])], [m1 * 0.9**3, v1 * 0.999**3], rtol=1e-6
  )
  p = ne.mask_opt_state(p, off)  # What the paper variant's topology step does at a pruned position.
  for _ in range(3):
    _, p = plain.update(g, p, masks=off)
  assert float(p.mu['w'][1]) == 0.0 and float(p.nu['w'][1]) == 0.0
  us, _ = stale.update(g, s, masks=on)
  up, _ = plain.update(g, p, masks=on)
  assert float(us['w'][1]) != pytest.approx(float(up['w'][1]), rel=1e-3)  # The stale start differs.
  np.testing.assert_allclose(us['w'][0], up['w'][0], rtol=1e-6)  # Never-masked entries: the same Adam.


def test_count_reset_restarts_bias_correction_of_one_matrix():
  params = {'params': {'pi': {'dense_0': {'kernel': jnp.ones((1, 2)), 'bias': jnp.zeros(2)}}}}
  masks = jax.tree.map(jnp.ones_like, params)
  tx = ne.masked_adam(0.1)
  s = tx.init(params)
  g = jax.tree.map(jnp.ones_like, params)
  for _ in range(5):
    _, s = tx.update(g, s, masks=masks)
  s = ne.reset_counts(s, [('pi', 'dense_0', 'kernel')], jnp.asarray(True))
  assert (
    int(s.count['params']['pi']['dense_0']['kernel']) == 0
    and int(s.count['params']['pi']['dense_0']['bias']) == 5
  )
  u, _ = tx.update(g, s, masks=masks)
  # Kernel: moments of 6 equal gradients with count 1 -> m/(1-b1) = (1 - 0.9^6)/0.1, v/(1-b2) = (1 - 0.999^6)/0.001.
  m_hat, v_hat = (1 - 0.9**6) / 0.1, (1 - 0.999**6) / 0.001
  np.testing.assert_allclose(u['params']['pi']['dense_0']['kernel'], -0.1 * m_hat / np.sqrt(v_hat), rtol=1e-4)
  np.testing.assert_allclose(u['params']['pi']['dense_0']['bias'], -0.1, rtol=1e-4)  # Unreset: plain Adam.


def test_initial_masks_keep_the_largest_weights():
  params = {
    'params': {'pi': {'dense_0': {'kernel': jnp.array([[0.1, -3.0], [2.0, 0.5]]), 'bias': jnp.zeros(2)}}}
  }
  layer = ne.Layer(('pi', 'dense_0', 'kernel'), 4, 2, 4)
  m = ne.initial_masks(params, [layer])
  np.testing.assert_array_equal(m['params']['pi']['dense_0']['kernel'], [[0.0, 1.0], [1.0, 0.0]])
  np.testing.assert_array_equal(m['params']['pi']['dense_0']['bias'], [1.0, 1.0])
