"""Tests for llm_rl/advantages.py: VinePPO step values and advantages (telescoping, cap filling, token
mapping, request deduplication), the critic's GAE against Python loops, GRPO/RLOO and whitening against
hand values, and the Monte-Carlo estimator on an analytic Bernoulli toy (pure NumPy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm_rl import advantages as adv_lib


def _vine_loop(values, rewards, num_steps):
  """Plain Python A_i = r_i + V(s_{i+1}) − V(s_i), γ = 1, V(s_n) = 0, reward on the last step."""
  out = np.zeros_like(np.asarray(values, np.float64))
  for b, n in enumerate(num_steps):
    for i in range(n):
      next_value = 0.0 if i == n - 1 else values[b][i + 1]
      r = rewards[b] if i == n - 1 else 0.0
      out[b, i] = r + next_value - values[b][i]
  return out


# --------------------------------------------------------------------------- #
# VinePPO values and advantages.
# --------------------------------------------------------------------------- #


def test_vine_step_values_mean_of_rollouts_and_mask():
  mc = jnp.array([[[1, 0, 1], [1, 1, 1], [0, 0, 0]], [[0, 0, 1], [5, 5, 5], [5, 5, 5]]], jnp.float32)
  mask = jnp.array([[True, True, False], [True, False, False]])
  v = adv_lib.vine_step_values(mc, mask)
  np.testing.assert_allclose(v, [[2 / 3, 1.0, 0.0], [1 / 3, 0.0, 0.0]], rtol=1e-6)


def test_vine_step_advantages_hand_values():
  # Trajectory 0: n = 3, V = (0.5, 0.25, 0.75), R = 1 -> A = (0.25 - 0.5, 0.75 - 0.25, 1 - 0.75).
  # Trajectory 1: n = 1, V(s_0) = 0.4, R = 0 -> A_0 = -0.4; padded slots are 0 whatever V holds there.
  values = jnp.array([[0.5, 0.25, 0.75, 9.0], [0.4, 7.0, 7.0, 7.0]])
  a = adv_lib.vine_step_advantages(values, jnp.array([1.0, 0.0]), jnp.array([3, 1]))
  np.testing.assert_allclose(a, [[-0.25, 0.5, 0.25, 0.0], [-0.4, 0.0, 0.0, 0.0]], rtol=1e-6)


def test_vine_step_advantages_match_loop_and_telescope():
  rng = np.random.default_rng(0)
  B, S = 64, 12
  values = rng.random((B, S)).astype(np.float32)
  rewards = (rng.random(B) < 0.5).astype(np.float32)
  num_steps = rng.integers(0, S + 1, B)
  a = np.asarray(jax.jit(adv_lib.vine_step_advantages)(values, rewards, num_steps))
  np.testing.assert_allclose(a, _vine_loop(values, rewards, num_steps), atol=1e-6)
  # Telescoping: Σ_i A_i = R − V(s_0) for every trajectory with at least one step; 0 for n = 0.
  want = np.where(num_steps > 0, rewards - values[:, 0], 0.0)
  np.testing.assert_allclose(a.sum(axis=1), want, atol=1e-5)


def test_fill_missing_values_backwards_and_capped_steps_get_zero_advantage():
  # n = 5, only s_0, s_1 estimated (cap 2): s_2..s_4 take the trajectory's own return R = 1.
  values = jnp.array([[0.3, 0.6, 0.0, 0.0, 0.0, 0.0]])
  mask = jnp.array([[True, True, False, False, False, False]])
  filled = adv_lib.fill_missing_values(values, mask, jnp.array([1.0]), jnp.array([5]))
  np.testing.assert_allclose(filled, [[0.3, 0.6, 1.0, 1.0, 1.0, 0.0]])
  a = adv_lib.vine_step_advantages(values, jnp.array([1.0]), jnp.array([5]), value_mask=mask)
  np.testing.assert_allclose(a, [[0.3, 0.4, 0.0, 0.0, 0.0, 0.0]], atol=1e-6)
  np.testing.assert_allclose(a.sum(), 1.0 - 0.3, atol=1e-6)
  # A hole before an estimate copies the next value (r_i = 0 for a middle step).
  filled = adv_lib.fill_missing_values(
    jnp.array([[0.2, 0.0, 0.7]]), jnp.array([[True, False, True]]), jnp.array([0.0]), jnp.array([3])
  )
  np.testing.assert_allclose(filled, [[0.2, 0.7, 0.7]])


def test_token_step_index_and_broadcast():
  # Steps end at 3, 5, 8 (the last includes EOS); T = 10 leaves two padding tokens.
  steps = adv_lib.token_step_index(jnp.array([[3, 5, 8, 0], [2, 0, 0, 0]]), jnp.array([3, 1]), 10)
  np.testing.assert_array_equal(
    steps, [[0, 0, 0, 1, 1, 2, 2, 2, -1, -1], [0, 0, -1, -1, -1, -1, -1, -1, -1, -1]]
  )
  step_adv = jnp.array([[0.1, -0.2, 0.3, 9.0], [0.5, 9.0, 9.0, 9.0]])
  tok = adv_lib.broadcast_to_tokens(step_adv, steps)
  np.testing.assert_allclose(
    tok, [[0.1, 0.1, 0.1, -0.2, -0.2, 0.3, 0.3, 0.3, 0, 0], [0.5, 0.5, 0, 0, 0, 0, 0, 0, 0, 0]], rtol=1e-6
  )
  # Out-of-range indices (≥ S) also give 0.
  np.testing.assert_allclose(adv_lib.broadcast_to_tokens(step_adv[:1], jnp.array([[4, 3, -1]])), [[0, 9, 0]])


# --------------------------------------------------------------------------- #
# MC rollout requests: deduplication and the map back to [B, S].
# --------------------------------------------------------------------------- #


def test_mc_rollout_requests_dedup_and_mapping():
  prompts = ['p', 'p', 'p', 'q']
  responses = ['a\nb\nc', 'a\nb\nd', 'x\ny', 'a\nb']
  step_ends = [[1, 3, 5], [1, 3, 5], [1, 3], [1, 3]]
  plan = adv_lib.mc_rollout_requests(prompts, responses, step_ends, num_rollouts=3)
  # States: traj 0: '', 'a', 'a\nb'; traj 1: the same three; traj 2: '', 'x'; traj 3 (prompt q): '', 'a'.
  assert plan.num_requested == 10
  assert len(plan.requests) == 6 <= plan.num_requested
  assert plan.num_samples == 18
  np.testing.assert_array_equal(plan.num_steps, [3, 3, 2, 2])
  np.testing.assert_array_equal(plan.index, [[0, 1, 2], [0, 1, 2], [0, 3, -1], [4, 5, -1]])
  assert plan.requests[2] == adv_lib.MCRequest(trajectory=0, step=2, prefix_length=3)
  assert plan.requests[3] == adv_lib.MCRequest(trajectory=2, step=1, prefix_length=1)
  assert plan.requests[5] == adv_lib.MCRequest(trajectory=3, step=1, prefix_length=1)
  # Every mapped slot's request reproduces the same prompt + prefix text.
  for b in range(4):
    for i in range(plan.index.shape[1]):
      g = plan.index[b, i]
      if g >= 0:
        req = plan.requests[g]
        prefix = 0 if i == 0 else step_ends[b][i - 1]
        assert prompts[req.trajectory] == prompts[b]
        assert responses[req.trajectory][: req.prefix_length] == responses[b][:prefix]

  # Shared returns: gathered [B, S, K] rows equal their group's row; unmapped slots are masked out.
  group_returns = jnp.arange(18, dtype=jnp.float32).reshape(6, 3)
  mc, step_mask = adv_lib.gather_mc_returns(group_returns, plan.index)
  assert mc.shape == (4, 3, 3)
  np.testing.assert_array_equal(step_mask, plan.index >= 0)
  np.testing.assert_allclose(mc[1, 2], group_returns[2])
  np.testing.assert_allclose(mc[2, 2], 0.0)
  v = adv_lib.vine_step_values(mc, step_mask)
  np.testing.assert_allclose(v[0], v[1])


def test_mc_rollout_requests_cap_token_ids_and_slots():
  prompts = [[1, 2], [1, 2], [1, 3]]
  responses = [[5, 6, 7, 8], [5, 6, 9, 9], [5, 6, 7, 8]]
  plan = adv_lib.mc_rollout_requests(
    prompts, responses, [[1, 2, 3, 4]] * 3, num_rollouts=9, max_steps=2, num_slots=6
  )
  assert plan.index.shape == (3, 6)
  np.testing.assert_array_equal(plan.index[:, 2:], -1)  # The cap: only s_0 and s_1 estimated.
  assert plan.num_requested == 6 and len(plan.requests) == 4  # Rows 0 and 1 share both states.
  with pytest.raises(ValueError, match='num_slots'):
    adv_lib.mc_rollout_requests(prompts, responses, [[1, 2, 3, 4]] * 3, num_rollouts=1, num_slots=3)
  with pytest.raises(ValueError, match='strictly increasing'):
    adv_lib.mc_rollout_requests(['p'], ['abc'], [[2, 2]], num_rollouts=1)
  with pytest.raises(ValueError, match='beyond the response'):
    adv_lib.mc_rollout_requests(['p'], ['abc'], [[2, 4]], num_rollouts=1)


# --------------------------------------------------------------------------- #
# PPO with a critic.
# --------------------------------------------------------------------------- #


def _gae_tokens_loop(values, rewards, mask, gamma, lam):
  """Plain Python per-token GAE: reward on the last valid token, V after it = 0."""
  adv = np.zeros_like(np.asarray(values, np.float64))
  for b in range(len(rewards)):
    idx = np.flatnonzero(mask[b])
    next_adv, next_value = 0.0, 0.0
    for j, t in enumerate(reversed(idx)):
      r = rewards[b] if j == 0 else 0.0
      delta = r + gamma * next_value - values[b, t]
      next_adv = delta + gamma * lam * next_adv
      adv[b, t] = next_adv
      next_value = values[b, t]
  return adv, np.where(mask, adv + values, 0.0)


def test_critic_token_advantages_lambda_one_hand_values():
  values = jnp.array([[0.2, 0.5, 0.9, 3.0], [0.1, 0.4, 3.0, 3.0]])
  mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  adv, ret = adv_lib.critic_token_advantages(values, jnp.array([1.0, 0.0]), mask)
  np.testing.assert_allclose(adv, [[0.8, 0.5, 0.1, 0.0], [-0.1, -0.4, 0.0, 0.0]], atol=1e-6)
  np.testing.assert_allclose(ret, [[1, 1, 1, 0], [0, 0, 0, 0]], atol=1e-6)


@pytest.mark.parametrize('gamma,lam', [(1.0, 1.0), (1.0, 0.95), (0.9, 0.5), (1.0, 0.0)])
def test_critic_token_advantages_match_loop(gamma, lam):
  rng = np.random.default_rng(3)
  B, T = 6, 11
  values = rng.standard_normal((B, T)).astype(np.float32)
  rewards = rng.random(B).astype(np.float32)
  lengths = rng.integers(1, T + 1, B)
  right = np.arange(T)[None] < lengths[:, None]
  mask = right.copy()
  mask[0] = right[0][::-1]  # One left-padded row.
  want_adv, want_ret = _gae_tokens_loop(values, rewards, mask, gamma, lam)
  adv, ret = adv_lib.critic_token_advantages(values, rewards, mask, gamma=gamma, lam=lam)
  np.testing.assert_allclose(adv, want_adv, atol=1e-5)
  np.testing.assert_allclose(ret, want_ret, atol=1e-5)


# --------------------------------------------------------------------------- #
# GRPO, RLOO and whitening.
# --------------------------------------------------------------------------- #


def test_grpo_hand_values_and_identical_group():
  rewards = jnp.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
  a = adv_lib.grpo_advantages(rewards, eps=1e-6)
  # Row 0: mean 0.5, population std 0.5 -> ±1. Row 1: all equal -> 0. Row 2: mean 0.25, std √3/4.
  s = np.sqrt(3) / 4
  want = [[1, -1, -1, 1], [0, 0, 0, 0], [-0.25 / s, -0.25 / s, -0.25 / s, 0.75 / s]]
  np.testing.assert_allclose(a, want, rtol=1e-5)
  assert np.all(np.isfinite(a))
  # Sample std (ddof = 1): row 0 std = √(1/3).
  a1 = adv_lib.grpo_advantages(rewards[:1], ddof=1)
  np.testing.assert_allclose(a1[0], np.array([1, -1, -1, 1]) * 0.5 * np.sqrt(3), rtol=1e-5)
  np.testing.assert_allclose(adv_lib.grpo_advantages(rewards, std_normalize=False)[2], [-0.25] * 3 + [0.75])
  with pytest.raises(ValueError):
    adv_lib.grpo_advantages(jnp.ones((2, 1)), ddof=1)


def test_rloo_hand_values():
  a = adv_lib.rloo_advantages(jnp.array([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0], [3.0, 0.0, 0.0, 0.0]]))
  # Row 0: 1 - 1/3, 0 - 2/3. Row 2: 3 - 0, 0 - 1.
  np.testing.assert_allclose(
    a, [[2 / 3, -2 / 3, -2 / 3, 2 / 3], [0, 0, 0, 0], [3, -1, -1, -1]], rtol=1e-6, atol=1e-7
  )
  with pytest.raises(ValueError):
    adv_lib.rloo_advantages(jnp.ones((3, 1)))


def test_normalize_advantages_masked_stats_and_untouched_padding():
  a = jnp.array([[1.0, 3.0, 100.0], [5.0, -7.0, -7.0]])
  mask = jnp.array([[True, True, False], [True, False, False]])
  out = jax.jit(adv_lib.normalize_advantages)(a, mask)
  # Valid: 1, 3, 5 -> mean 3, population var 8/3.
  np.testing.assert_allclose(out[mask], np.array([-2.0, 0.0, 2.0]) / np.sqrt(8 / 3 + 1e-8), rtol=1e-6)
  np.testing.assert_array_equal(out[~mask], a[~mask])
  np.testing.assert_allclose(jnp.mean(out[mask]), 0.0, atol=1e-6)
  np.testing.assert_allclose(jnp.std(out[mask]), 1.0, rtol=1e-5)
  # All-equal valid entries: 0, finite.
  out = adv_lib.normalize_advantages(jnp.array([2.0, 2.0, 9.0]), jnp.array([True, True, False]))
  np.testing.assert_allclose(out, [0.0, 0.0, 9.0])


# --------------------------------------------------------------------------- #
# Monte-Carlo estimator on analytic toys (pure NumPy).
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize('value', [0.2, 0.55])
@pytest.mark.parametrize('k', [1, 3, 9])
def test_mc_value_estimate_bernoulli_mean_and_std(k, value):
  n = 2_000
  rng = np.random.default_rng(1000 * k + int(100 * value))
  samples = (rng.random((n, k)) < value).astype(np.float64)
  estimates = adv_lib.mc_value_estimate(samples)
  assert isinstance(estimates, np.ndarray) and estimates.shape == (n,)
  assert abs(estimates.mean() - value) < 3 * np.sqrt(value * (1 - value) / (k * n))
  want_std = np.sqrt(value * (1 - value) / k)
  assert abs(estimates.std() - want_std) < 0.1 * want_std


def test_mc_values_on_analytic_chain_and_exact_advantages():
  # A chain of steps that each succeed with p_j (a failure ends with reward 0): V(s_i) = Π_{j≥i} p_j.
  p = np.array([0.9, 0.6, 0.8, 0.7])
  exact = np.array([np.prod(p[i:]) for i in range(len(p))])
  rng = np.random.default_rng(5)
  k, n = 9, 2_000
  # Rollouts from s_i: reward 1 iff every remaining step succeeds. [n, S, K] samples, as VinePPO draws them.
  rollouts = np.ones((n, len(p), k))
  for i in range(len(p)):
    rollouts[:, i] = np.all(rng.random((n, k, len(p) - i)) < p[i:], axis=-1)
  v_hat = adv_lib.mc_value_estimate(rollouts)  # [n, S]
  bound = 4 * np.sqrt(exact * (1 - exact) / (k * n))
  assert np.all(np.abs(v_hat.mean(axis=0) - exact) < bound)
  # With exact values a successful trajectory's advantages are V(s_{i+1}) − V(s_i) and 1 − V(s_last).
  a = adv_lib.vine_step_advantages(jnp.asarray(exact[None]), jnp.array([1.0]), jnp.array([len(p)]))
  np.testing.assert_allclose(a[0], np.append(exact[1:], 1.0) - exact, rtol=1e-5)
  np.testing.assert_allclose(jnp.sum(a), 1.0 - exact[0], rtol=1e-5)
  # The JAX path of the estimator agrees with the NumPy one.
  np.testing.assert_allclose(adv_lib.mc_value_estimate(jnp.asarray(rollouts[:3])), v_hat[:3], rtol=1e-6)


def test_vine_pipeline_jits_with_fixed_shapes():
  @jax.jit
  def pipeline(group_returns, index, rewards, num_steps, token_step):
    mc, step_mask = adv_lib.gather_mc_returns(group_returns, index)
    values = adv_lib.vine_step_values(mc, step_mask)
    step_adv = adv_lib.vine_step_advantages(values, rewards, num_steps, value_mask=step_mask)
    return adv_lib.broadcast_to_tokens(step_adv, token_step), values

  plan = adv_lib.mc_rollout_requests(['p', 'p'], ['ab', 'cb'], [[1, 2], [1, 2]], num_rollouts=2)
  token_step = adv_lib.token_step_index(jnp.array([[1, 2], [1, 2]]), jnp.asarray(plan.num_steps), 3)
  group_returns = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
  tok, values = pipeline(group_returns, plan.index, jnp.array([1.0, 0.0]), plan.num_steps, token_step)
  np.testing.assert_allclose(values, [[0.5, 1.0], [0.5, 0.0]])
  np.testing.assert_allclose(tok, [[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]])
