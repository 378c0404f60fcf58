"""Tests for llm_rl/losses.py: hand values on tiny arrays, clipping on both sides for both advantage signs,
KL estimators on known categorical distributions, masks (padding never contributes, even as NaN), finite
gradients and jit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.errors import ConfigError
from llm_rl import losses


def test_token_logprobs_hand_values_and_float32():
  logits = jnp.array([[[0.0, 0.0], [math.log(3.0), 0.0]]], jnp.bfloat16)
  lp = losses.token_logprobs(logits, jnp.array([[1, 0]]))
  assert lp.dtype == jnp.float32 and lp.shape == (1, 2)
  np.testing.assert_allclose(lp, [[math.log(0.5), math.log(0.75)]], rtol=1e-2)
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((2, 5, 7)).astype(np.float32)
  tokens = rng.integers(0, 7, (2, 5))
  want = np.take_along_axis(jax.nn.log_softmax(logits, -1), tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(jax.jit(losses.token_logprobs)(logits, tokens), want, rtol=1e-5, atol=1e-6)


def test_policy_loss_hand_values_and_token_mean():
  # Token ratios 1.5, 0.5, 1.1 with advantages +1, −1, +2; the 4th token is padding (masked).
  # ε = 0.2: min(1.5·1, 1.2·1) = 1.2;  min(0.5·(−1), 0.8·(−1)) = −0.8;  min(1.1·2, 1.1·2) = 2.2.
  # Loss = −(1.2 − 0.8 + 2.2) / 3 (mean over the 3 valid tokens of the batch, not per row).
  logp_old = jnp.zeros((2, 2))
  logp_new = jnp.log(jnp.array([[1.5, 0.5], [1.1, 7.0]]))
  adv = jnp.array([[1.0, -1.0], [2.0, 50.0]])
  mask = jnp.array([[True, True], [True, False]])
  loss, stats = losses.policy_loss(logp_new, logp_old, adv, mask, clip_eps=0.2)
  np.testing.assert_allclose(loss, -(1.2 - 0.8 + 2.2) / 3, rtol=1e-6)
  np.testing.assert_allclose(stats['clip_fraction'], 2 / 3, rtol=1e-6)
  np.testing.assert_allclose(stats['ratio_mean'], (1.5 + 0.5 + 1.1) / 3, rtol=1e-6)
  k3 = [r - 1 - math.log(r) for r in (1.5, 0.5, 1.1)]
  np.testing.assert_allclose(stats['approx_kl'], np.mean(k3), rtol=1e-5)
  assert float(stats['skipped']) == 0.0


@pytest.mark.parametrize(
  'ratio,advantage,clipped',
  [
    (1.5, 1.0, True),  # A > 0, ratio above 1 + ε: flat (no gradient).
    (0.5, 1.0, False),  # A > 0, ratio below 1 − ε: the unclipped term is the min, gradient flows.
    (1.5, -1.0, False),  # A < 0, ratio above 1 + ε: the unclipped term is the min, gradient flows.
    (0.5, -1.0, True),  # A < 0, ratio below 1 − ε: flat.
    (1.1, 1.0, False),
    (0.9, -1.0, False),
  ],
)
def test_policy_loss_clipping_both_sides(ratio, advantage, clipped):
  def f(logp):
    return losses.policy_loss(logp, jnp.zeros((1, 1)), jnp.full((1, 1), advantage), jnp.ones((1, 1), bool))[0]

  logp = jnp.full((1, 1), math.log(ratio))
  grad = jax.grad(f)(logp)
  if clipped:
    np.testing.assert_allclose(grad, 0.0)
    want = -np.clip(ratio, 0.8, 1.2) * advantage
  else:
    np.testing.assert_allclose(grad, [[-advantage * ratio]], rtol=1e-5)  # d(−ρA)/d log ρ = −ρA.
    want = -ratio * advantage
  np.testing.assert_allclose(f(logp), want, rtol=1e-5)


def test_policy_loss_ratio_guard_skips():
  logp_new = jnp.full((1, 3), math.log(12.0))
  loss, stats = losses.policy_loss(
    logp_new, jnp.zeros((1, 3)), jnp.ones((1, 3)), jnp.ones((1, 3), bool), ratio_threshold=10.0
  )
  assert float(loss) == 0.0 and float(stats['skipped']) == 1.0


def test_padding_never_contributes_even_nan():
  rng = np.random.default_rng(1)
  B, T = 3, 6
  logp_new = jnp.asarray(-rng.random((B, T)), jnp.float32)
  logp_old = jnp.asarray(-rng.random((B, T)), jnp.float32)
  logp_ref = jnp.asarray(-rng.random((B, T)), jnp.float32)
  adv = jnp.asarray(rng.standard_normal((B, T)), jnp.float32)
  mask = jnp.asarray(np.arange(T)[None] < np.array([[6], [3], [1]]))
  garbage = jnp.where(mask, 0.0, jnp.nan)

  def everything(lnew, lold, lref, a):
    pl = losses.policy_loss(lnew, lold, a, mask)[0]
    kl = losses.kl_penalty(lnew, lref, mask)
    kl_seq = losses.kl_penalty(lnew, lref, mask, reduction='sequence_sum')
    vl = losses.value_loss(lnew, a, mask, values_old=lold, clip_eps=0.2)[0]
    return pl + kl + kl_seq + vl

  clean = everything(logp_new, logp_old, logp_ref, adv)
  dirty_args = [x + garbage for x in (logp_new, logp_old, logp_ref, adv)]
  np.testing.assert_allclose(everything(*dirty_args), clean, rtol=1e-6)
  grad = jax.grad(everything)(*dirty_args)
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(np.asarray(grad)[~np.asarray(mask)], 0.0)
  np.testing.assert_allclose(grad, jax.grad(everything)(logp_new, logp_old, logp_ref, adv), rtol=1e-6)


# --------------------------------------------------------------------------- #
# KL estimators.
# --------------------------------------------------------------------------- #


def test_kl_estimators_hand_values():
  # log π = log 0.5, log π_ref = log 0.25: x = log(0.5) = −log 2.
  # k1 = log 2,  k2 = (log 2)² / 2,  k3 = 0.5 + log 2 − 1.
  lp, lr = jnp.full((1, 2), math.log(0.5)), jnp.full((1, 2), math.log(0.25))
  mask = jnp.array([[True, False]])
  ln2 = math.log(2.0)
  for est, want in [('k1', ln2), ('k2', 0.5 * ln2**2), ('k3', 0.5 + ln2 - 1.0)]:
    np.testing.assert_allclose(losses.kl_penalty(lp, lr, mask, estimator=est), want, rtol=1e-6)
  # Sequence sum: row sums, mean over rows.
  two_rows = jnp.array([[True, True], [True, False]])
  np.testing.assert_allclose(
    losses.kl_penalty(
      jnp.full((2, 2), math.log(0.5)),
      jnp.full((2, 2), math.log(0.25)),
      two_rows,
      estimator='k1',
      reduction='sequence_sum',
    ),
    (2 * ln2 + ln2) / 2,
    rtol=1e-6,
  )
  # The clamp: k3 of a huge log-ratio is capped at max_value and its gradient is 0 there.
  big = jnp.array([[-30.0]])
  np.testing.assert_allclose(
    losses.kl_penalty(big, jnp.zeros((1, 1)), jnp.ones((1, 1), bool), max_value=10.0), 10.0
  )
  g = jax.grad(lambda x: losses.kl_penalty(x, jnp.zeros((1, 1)), jnp.ones((1, 1), bool), max_value=10.0))(big)
  np.testing.assert_array_equal(g, 0.0)
  with pytest.raises(ConfigError):
    losses.kl_penalty(lp, lr, mask, estimator='k4')
  with pytest.raises(ConfigError):
    losses.kl_penalty(lp, lr, mask, reduction='sum')


def test_kl_estimators_sampled_on_known_distributions():
  p = np.array([0.5, 0.2, 0.2, 0.1])
  q = np.array([0.3, 0.3, 0.3, 0.1])
  exact = float(np.sum(p * np.log(p / q)))
  n = 200_000
  samples = jax.random.categorical(jax.random.key(0), jnp.log(jnp.asarray(p)), shape=(1, n))
  lp, lq = jnp.log(jnp.asarray(p))[samples], jnp.log(jnp.asarray(q))[samples]
  mask = jnp.ones((1, n), bool)
  x = np.asarray(lq - lp)
  assert np.all(np.expm1(x) - x >= 0)  # k3 ≥ 0 per token.
  for est in ('k1', 'k3'):  # Unbiased: within 5 standard errors.
    per = -x if est == 'k1' else np.expm1(x) - x
    value = float(losses.kl_penalty(lp, lq, mask, estimator=est))
    assert abs(value - exact) < 5 * per.std() / math.sqrt(n), (est, value, exact)
  k2 = float(losses.kl_penalty(lp, lq, mask, estimator='k2'))
  assert k2 >= 0 and abs(k2 - exact) < 0.3 * exact  # Biased, but close for nearby distributions.
  # The same distribution gives exactly 0 for every estimator.
  for est in ('k1', 'k2', 'k3'):
    assert float(losses.kl_penalty(lp, lp, mask, estimator=est)) == 0.0


# --------------------------------------------------------------------------- #
# Value loss.
# --------------------------------------------------------------------------- #


def test_value_loss_hand_values_clipped_and_unclipped():
  values = jnp.array([[0.5, 1.0, 9.0]])
  returns = jnp.array([[1.0, 0.0, 0.0]])
  old = jnp.array([[0.0, 0.9, 0.0]])
  mask = jnp.array([[True, True, False]])
  loss, stats = losses.value_loss(values, returns, mask)
  np.testing.assert_allclose(loss, (0.5 * 0.25 + 0.5 * 1.0) / 2, rtol=1e-6)
  assert float(stats['clip_fraction']) == 0.0
  # Clipped, ε = 0.2: token 0: V_clip = 0.2, losses 0.125 vs 0.32 -> 0.32 (clip binds).
  # Token 1: V_clip = 1.0 (within ε of 0.9) -> 0.5 both.
  loss, stats = losses.value_loss(values, returns, mask, values_old=old, clip_eps=0.2)
  np.testing.assert_allclose(loss, (0.32 + 0.5) / 2, rtol=1e-6)
  np.testing.assert_allclose(stats['clip_fraction'], 0.5)
  huber, _ = losses.value_loss(jnp.array([[3.0]]), jnp.zeros((1, 1)), jnp.ones((1, 1), bool), kind='huber')
  np.testing.assert_allclose(huber, 2.5)
  with pytest.raises(ValueError, match='values_old'):
    losses.value_loss(values, returns, mask, clip_eps=0.2)


# --------------------------------------------------------------------------- #
# Total loss.
# --------------------------------------------------------------------------- #


def test_total_loss_combines_terms_jits_and_has_finite_grads():
  rng = np.random.default_rng(2)
  B, T, V = 2, 5, 11
  logits = jnp.asarray(rng.standard_normal((B, T, V)), jnp.float32)
  tokens = jnp.asarray(rng.integers(0, V, (B, T)))
  logp = losses.token_logprobs(logits, tokens)
  logp_old = logp + jnp.asarray(0.1 * rng.standard_normal((B, T)), jnp.float32)
  logp_ref = logp + jnp.asarray(0.3 * rng.standard_normal((B, T)), jnp.float32)
  adv = jnp.asarray(rng.standard_normal((B, T)), jnp.float32)
  mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], bool)

  fn = jax.jit(losses.total_loss, static_argnames=('kl_estimator', 'kl_reduction'))
  loss, stats = fn(logits, tokens, logp_old, adv, mask, logp_ref=logp_ref, kl_coef=0.5, entropy_coef=0.01)
  pl, _ = losses.policy_loss(logp, logp_old, adv, mask)
  kl = losses.kl_penalty(logp, logp_ref, mask, max_value=10.0)
  ent = losses.masked_mean(-jnp.sum(jax.nn.softmax(logits) * jax.nn.log_softmax(logits), -1), mask)
  np.testing.assert_allclose(loss, pl + 0.5 * kl - 0.01 * ent, rtol=1e-5)
  np.testing.assert_allclose(stats['kl'], kl, rtol=1e-5)
  np.testing.assert_allclose(stats['entropy'], ent, rtol=1e-5)
  for name in ('loss', 'policy_loss', 'kl', 'entropy', 'clip_fraction', 'approx_kl', 'ratio_mean', 'skipped'):
    assert np.isfinite(stats[name]), name

  grad = jax.jit(
    jax.grad(lambda lg: losses.total_loss(lg, tokens, logp_old, adv, mask, logp_ref=logp_ref)[0])
  )(logits)
  assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).sum()) > 0
  np.testing.assert_array_equal(np.asarray(grad)[~np.asarray(mask)], 0.0)  # Padding positions get nothing.
  # Without a reference the KL term is absent.
  loss0, stats0 = losses.total_loss(logits, tokens, logp_old, adv, mask)
  np.testing.assert_allclose(loss0, pl, rtol=1e-5)
  assert float(stats0['kl']) == 0.0
