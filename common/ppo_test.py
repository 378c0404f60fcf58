"""Tests for common/ppo.py: GAE against a Python loop and hand values, losses against hand values and
their gradients (stop-gradients, the PPO/PG agreement at ratio 1, the log-ratio clamp)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import ppo
from common.errors import ConfigError, UsageError


def _gae_loop(rewards, values, bootstrap, gamma, lam, dones=None):
  """Plain Python GAE, float64: the textbook recursion written out step by step."""
  T = len(rewards)
  dones = np.zeros(T) if dones is None else np.asarray(dones, np.float64)
  adv = np.zeros(T)
  next_adv = 0.0
  for t in reversed(range(T)):
    next_value = bootstrap if t == T - 1 else values[t + 1]
    cont = 1.0 - dones[t]
    delta = rewards[t] + gamma * cont * next_value - values[t]
    next_adv = delta + gamma * lam * cont * next_adv
    adv[t] = next_adv
  return adv, adv + np.asarray(values)


# --------------------------------------------------------------------------- #
# GAE.
# --------------------------------------------------------------------------- #


def test_gae_hand_computed_three_steps():
  # r = (1, 0, 2), V = (0.5, 1, -1), V(s_3) = 4, gamma = 0.5, lam = 0.5 (gamma * lam = 0.25).
  # delta_0 = 1 + 0.5 * 1 - 0.5 = 1;  delta_1 = 0 + 0.5 * (-1) - 1 = -1.5;  delta_2 = 2 + 0.5 * 4 + 1 = 5.
  # A_2 = 5;  A_1 = -1.5 + 0.25 * 5 = -0.25;  A_0 = 1 + 0.25 * (-0.25) = 0.9375.
  adv, ret = ppo.gae(jnp.array([1.0, 0.0, 2.0]), jnp.array([0.5, 1.0, -1.0]), 4.0, gamma=0.5, lam=0.5)
  np.testing.assert_allclose(adv, [0.9375, -0.25, 5.0], rtol=1e-6)
  np.testing.assert_allclose(ret, [1.4375, 0.75, 4.0], rtol=1e-6)
  # With dones[1] = 1 the bootstrap after step 1 is cut: delta_1 = 0 - 1 = -1, A_1 = -1, A_0 = 0.75.
  adv, _ = ppo.gae(
    jnp.array([1.0, 0.0, 2.0]), jnp.array([0.5, 1.0, -1.0]), 4.0, gamma=0.5, lam=0.5, dones=[0, 1, 0]
  )
  np.testing.assert_allclose(adv, [0.75, -1.0, 5.0], rtol=1e-6)


@pytest.mark.parametrize('gamma,lam', [(0.99, 0.95), (0.9, 0.0), (0.5, 1.0), (1.0, 0.7), (0.0, 0.5)])
@pytest.mark.parametrize('with_dones', [False, True])
@pytest.mark.parametrize('bootstrap', [0.0, 1.7])
def test_gae_matches_python_loop(gamma, lam, with_dones, bootstrap):
  rng = np.random.default_rng(int(100 * gamma + 10 * lam) + 7 * with_dones)
  T = 23
  rewards = rng.standard_normal(T)
  values = rng.standard_normal(T)
  dones = (rng.random(T) < 0.2).astype(np.float64) if with_dones else None
  want_adv, want_ret = _gae_loop(rewards, values, bootstrap, gamma, lam, dones)
  adv, ret = ppo.gae(
    jnp.asarray(rewards, jnp.float32),
    jnp.asarray(values, jnp.float32),
    jnp.float32(bootstrap),
    gamma=gamma,
    lam=lam,
    dones=None if dones is None else jnp.asarray(dones > 0),
  )
  assert adv.shape == (T,) and ret.shape == (T,) and adv.dtype == jnp.float32
  np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ret, want_ret, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ret, adv + values, rtol=1e-5, atol=1e-5)


def test_gae_lam_one_is_monte_carlo_return_minus_value():
  rng = np.random.default_rng(1)
  T, gamma, bootstrap = 12, 0.9, 0.8
  rewards, values = rng.standard_normal(T), rng.standard_normal(T)
  mc = np.array(
    [sum(gamma ** (k - t) * rewards[k] for k in range(t, T)) + gamma ** (T - t) * bootstrap for t in range(T)]
  )
  adv, ret = ppo.gae(
    jnp.asarray(rewards, jnp.float32), jnp.asarray(values, jnp.float32), bootstrap, gamma=gamma, lam=1.0
  )
  np.testing.assert_allclose(adv, mc - values, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ret, mc, rtol=1e-5, atol=1e-5)


def test_gae_lam_zero_is_td0_error():
  rng = np.random.default_rng(2)
  T, gamma, bootstrap = 9, 0.8, -0.3
  rewards, values = rng.standard_normal(T), rng.standard_normal(T)
  next_values = np.append(values[1:], bootstrap)
  adv, _ = ppo.gae(
    jnp.asarray(rewards, jnp.float32), jnp.asarray(values, jnp.float32), bootstrap, gamma=gamma, lam=0.0
  )
  np.testing.assert_allclose(adv, rewards + gamma * next_values - values, rtol=1e-5, atol=1e-5)


def test_gae_jit_with_traced_gamma_lam_equals_eager_and_vmaps():
  rng = np.random.default_rng(3)
  rewards = jnp.asarray(rng.standard_normal((6, 4)), jnp.float32)  # [T, B]
  values = jnp.asarray(rng.standard_normal((6, 4)), jnp.float32)
  dones = jnp.asarray(rng.random((6, 4)) < 0.3)
  eager = [
    ppo.gae(rewards[:, b], values[:, b], 0.5, gamma=0.95, lam=0.9, dones=dones[:, b]) for b in range(4)
  ]

  @jax.jit
  def batched(r, v, d, gamma, lam):
    fn = lambda r, v, d: ppo.gae(r, v, jnp.float32(0.5), gamma=gamma, lam=lam, dones=d)
    return jax.vmap(fn, in_axes=(1, 1, 1), out_axes=1)(r, v, d)

  adv, ret = batched(rewards, values, dones, 0.95, 0.9)
  np.testing.assert_allclose(adv, np.stack([a for a, _ in eager], 1), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ret, np.stack([r for _, r in eager], 1), rtol=1e-6, atol=1e-6)


def test_gae_outputs_are_constants():
  r, v = jnp.array([1.0, -1.0, 0.5]), jnp.array([0.2, 0.1, 0.0])

  def total(v, bootstrap):
    adv, ret = ppo.gae(r, v, bootstrap, gamma=0.9, lam=0.9)
    return adv.sum() + ret.sum()

  g_v, g_b = jax.grad(total, argnums=(0, 1))(v, 1.0)
  np.testing.assert_array_equal(g_v, 0.0)
  assert float(g_b) == 0.0


def test_gae_bad_arguments():
  r = jnp.zeros(3)
  with pytest.raises(ConfigError, match='gamma'):
    ppo.gae(r, r, 0.0, gamma=1.5, lam=0.9)
  with pytest.raises(ValueError, match='lam'):
    ppo.gae(r, r, 0.0, gamma=0.9, lam=-0.1)
  with pytest.raises(AssertionError):  # chex: values of another length.
    ppo.gae(r, jnp.zeros(4), 0.0, gamma=0.9, lam=0.9)
  with pytest.raises(AssertionError):  # chex: bootstrap must be a scalar.
    ppo.gae(r, r, jnp.zeros(1), gamma=0.9, lam=0.9)


# --------------------------------------------------------------------------- #
# normalize.
# --------------------------------------------------------------------------- #


def test_normalize_hand_values_and_axis():
  x = jnp.array([1.0, 2.0, 3.0, 4.0])  # mean 2.5, population std sqrt(1.25).
  want = np.array([-1.5, -0.5, 0.5, 1.5]) / math.sqrt(1.25)
  np.testing.assert_allclose(ppo.normalize(x), want, rtol=1e-6)
  np.testing.assert_allclose(ppo.normalize(x, eps=0.0), want, rtol=1e-6)
  m = jnp.array([[1.0, 10.0], [3.0, 30.0]])
  np.testing.assert_allclose(ppo.normalize(m, axis=0), [[-1.0, -1.0], [1.0, 1.0]], rtol=1e-6)
  np.testing.assert_allclose(ppo.normalize(m, axis=1), [[-1.0, 1.0], [-1.0, 1.0]], rtol=1e-6)


def test_normalize_zero_std_is_finite_with_finite_gradient():
  np.testing.assert_array_equal(ppo.normalize(jnp.full(5, 3.0)), 0.0)
  y = ppo.normalize(jnp.full(7, 0.1))  # The mean may round away from 0.1: still finite and small.
  assert np.all(np.isfinite(y)) and np.all(np.abs(y) <= 1.0)
  g = jax.grad(lambda x: (ppo.normalize(x) * jnp.arange(4.0)).sum())(jnp.full(4, 2.0))
  assert np.all(np.isfinite(g))


# --------------------------------------------------------------------------- #
# Actor losses.
# --------------------------------------------------------------------------- #


def test_policy_gradient_loss_value_and_gradients():
  logp = jnp.array([-1.0, -2.0, -0.5])
  adv = jnp.array([2.0, -1.0, 4.0])
  # -mean(-2, 2, -2) = 2/3.
  assert float(ppo.policy_gradient_loss(logp, adv)) == pytest.approx(2.0 / 3.0)
  g_logp, g_adv = jax.grad(ppo.policy_gradient_loss, argnums=(0, 1))(logp, adv)
  np.testing.assert_allclose(g_logp, -adv / 3.0, rtol=1e-6)
  np.testing.assert_array_equal(g_adv, 0.0)


EPS = 0.2
# (ratio, advantage, surrogate min(r A, clip(r) A), d surrogate / d logp):
CASES = [
  (1.1, 2.0, 2.2, 1.1 * 2.0),  # inside the clip: unclipped, gradient r A.
  (1.5, 2.0, 2.4, 0.0),  # above 1 + eps, A > 0: clipped at 1.2 * 2, no gradient.
  (1.5, -2.0, -3.0, 1.5 * -2.0),  # above 1 + eps, A < 0: the unclipped -3 is smaller, gradient r A.
  (0.5, 2.0, 1.0, 0.5 * 2.0),  # below 1 - eps, A > 0: the unclipped 1 is smaller, gradient r A.
  (0.5, -2.0, -1.6, 0.0),  # below 1 - eps, A < 0: clipped at 0.8 * -2, no gradient.
]


def test_ppo_clipped_loss_hand_values_and_gradients():
  ratio = jnp.array([c[0] for c in CASES])
  adv = jnp.array([c[1] for c in CASES])
  logp_old = jnp.array([-1.0, -0.3, -2.0, -0.7, -1.2])
  logp = logp_old + jnp.log(ratio)
  loss, diag = ppo.ppo_clipped_loss(logp, logp_old, adv, clip_eps=EPS)
  assert float(loss) == pytest.approx(-np.mean([c[2] for c in CASES]), rel=1e-5)  # = -0.2
  assert float(loss) == pytest.approx(-0.2, rel=1e-5)
  g = jax.grad(lambda lp: ppo.ppo_clipped_loss(lp, logp_old, adv, clip_eps=EPS)[0])(logp)
  np.testing.assert_allclose(g, [-c[3] / len(CASES) for c in CASES], rtol=1e-5, atol=1e-7)
  assert float(diag['clip_fraction']) == pytest.approx(0.8)
  r = np.array([c[0] for c in CASES])
  assert float(diag['approx_kl']) == pytest.approx(np.mean(r - 1 - np.log(r)), rel=1e-4)
  assert float(diag['ratio_mean']) == pytest.approx(r.mean(), rel=1e-5)


def test_ppo_gradient_at_ratio_one_equals_policy_gradient_surrogate():
  rng = np.random.default_rng(4)
  logp = jnp.asarray(rng.standard_normal(11) - 1.0, jnp.float32)
  adv = jnp.asarray(rng.standard_normal(11), jnp.float32)
  g_ppo = jax.grad(lambda lp: ppo.ppo_clipped_loss(lp, logp, adv, clip_eps=0.1)[0])(logp)
  g_pg = jax.grad(lambda lp: -jnp.mean(jnp.exp(lp - jax.lax.stop_gradient(lp)) * adv))(logp)
  np.testing.assert_allclose(g_ppo, g_pg, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(g_ppo, jax.grad(ppo.policy_gradient_loss)(logp, adv), rtol=1e-6, atol=1e-7)


def test_ppo_no_gradient_into_advantages_or_old_logp():
  logp = jnp.array([-1.0, -0.5, -2.0])
  logp_old = jnp.array([-1.1, -0.2, -2.0])
  adv = jnp.array([1.0, -2.0, 0.5])
  g_old, g_adv = jax.grad(lambda lo, a: ppo.ppo_clipped_loss(logp, lo, a, clip_eps=0.2)[0], argnums=(0, 1))(
    logp_old, adv
  )
  np.testing.assert_array_equal(g_old, 0.0)
  np.testing.assert_array_equal(g_adv, 0.0)


def test_ppo_log_ratio_is_clamped():
  logp_old = jnp.array([-101.0, -1.0])
  logp = jnp.array([-1.0, -1.0])  # log-ratio 100 and 0.
  adv = jnp.array([-1.0, 1.0])
  loss, diag = ppo.ppo_clipped_loss(logp, logp_old, adv, clip_eps=0.2)
  g = jax.grad(lambda lp: ppo.ppo_clipped_loss(lp, logp_old, adv, clip_eps=0.2)[0])(logp)
  assert (
    np.isfinite(float(loss)) and np.all(np.isfinite(g)) and all(np.isfinite(float(v)) for v in diag.values())
  )
  # Ratio clamped to e^10: min(-e^10, -1.2) = -e^10; step 1: 1.  loss = -(-e^10 + 1) / 2.
  assert float(loss) == pytest.approx((math.exp(10.0) - 1.0) / 2.0, rel=1e-5)
  assert float(g[0]) == 0.0  # Beyond the clamp no gradient flows.
  assert float(
    ppo.ppo_clipped_loss(logp, logp_old, adv, clip_eps=0.2, max_log_ratio=1.0)[0]
  ) == pytest.approx((math.e - 1.0) / 2.0, rel=1e-5)


def test_ppo_accepts_batched_shapes_and_traced_clip():
  rng = np.random.default_rng(5)
  logp, logp_old, adv = (jnp.asarray(rng.standard_normal((5, 3)), jnp.float32) for _ in range(3))
  eager = ppo.ppo_clipped_loss(logp, logp_old, adv, clip_eps=0.2)[0]
  jitted = jax.jit(lambda eps: ppo.ppo_clipped_loss(logp, logp_old, adv, clip_eps=eps)[0])(0.2)
  np.testing.assert_allclose(jitted, eager, rtol=1e-6)


def test_ppo_bad_arguments():
  x = jnp.zeros(3)
  with pytest.raises(ConfigError, match='clip_eps'):
    ppo.ppo_clipped_loss(x, x, x, clip_eps=0.0)
  with pytest.raises(AssertionError):
    ppo.ppo_clipped_loss(x, jnp.zeros(4), x, clip_eps=0.2)


# --------------------------------------------------------------------------- #
# Value loss and entropy.
# --------------------------------------------------------------------------- #


def test_value_loss_mse_and_huber_hand_values():
  v = jnp.array([1.0, 0.0, 3.0])
  target = jnp.array([1.5, 0.0, 0.0])  # errors -0.5, 0, 3
  assert float(ppo.value_loss(v, target)) == pytest.approx(0.5 * (0.25 + 9.0) / 3.0)
  # Huber, delta 1: 0.5 * 0.25, 0, 1 * (3 - 0.5).
  assert float(ppo.value_loss(v, target, kind='huber')) == pytest.approx((0.125 + 2.5) / 3.0)
  # delta 4: every error is quadratic, so it equals the mse loss.
  assert float(ppo.value_loss(v, target, kind='huber', huber_delta=4.0)) == pytest.approx(
    float(ppo.value_loss(v, target))
  )
  for kind in ppo.VALUE_LOSSES:
    g_v, g_t = jax.grad(lambda a, b: ppo.value_loss(a, b, kind=kind), argnums=(0, 1))(v, target)
    np.testing.assert_array_equal(g_t, 0.0)
    assert np.all(np.isfinite(g_v))


def test_value_loss_unknown_kind_suggests_nearest():
  with pytest.raises(ConfigError, match="did you mean 'huber'") as info:
    ppo.value_loss(jnp.zeros(2), jnp.zeros(2), kind='hubber')
  assert isinstance(info.value, ValueError) and isinstance(info.value, UsageError)
  assert 'mse' in str(info.value)


def test_categorical_logp_picks_the_chosen_log_probability():
  logits = jnp.array([[0.0, math.log(3.0)], [2.0, 2.0]])
  np.testing.assert_allclose(
    ppo.categorical_logp(logits, jnp.array([1, 0])), [math.log(0.75), math.log(0.5)], rtol=1e-6
  )


def test_entropy_of_logits_hand_values():
  assert float(ppo.entropy_of_logits(jnp.zeros(4))) == pytest.approx(math.log(4.0), rel=1e-6)
  assert float(ppo.entropy_of_logits(jnp.full(7, 3.3))) == pytest.approx(math.log(7.0), rel=1e-6)
  p = np.array([0.5, 0.25, 0.25])
  assert float(ppo.entropy_of_logits(jnp.log(jnp.asarray(p)))) == pytest.approx(1.5 * math.log(2.0), rel=1e-6)
  rows = ppo.entropy_of_logits(jnp.array([[0.0, 0.0], [0.0, 50.0]]))
  assert rows.shape == (2,)
  np.testing.assert_allclose(rows, [math.log(2.0), 0.0], atol=1e-6)
  batched = ppo.entropy_of_logits(jnp.zeros((3, 2, 5)))
  assert batched.shape == (3, 2)
  np.testing.assert_allclose(batched, math.log(5.0), rtol=1e-6)


def test_entropy_with_masked_actions_is_finite():
  logits = jnp.array([0.0, 0.0, -jnp.inf])
  assert float(ppo.entropy_of_logits(logits)) == pytest.approx(math.log(2.0), rel=1e-6)
  g = jax.grad(ppo.entropy_of_logits)(jnp.array([0.3, -0.2, -jnp.inf]))
  assert np.all(np.isfinite(g))
