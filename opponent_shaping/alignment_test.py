"""Tests for opponent_shaping/alignment.py: hand-checked 4-step values for every variant, an O(T²)
double-loop reference, stop-gradients, beta = 0, and the Coin Game code's gradient."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import ppo
from common.errors import ConfigError, UsageError
from opponent_shaping import alignment

# The 4-step trajectory of the hand checks.
OWN = jnp.array([1.0, 2.0, -1.0, 0.5])
OPP = jnp.array([0.5, -1.0, 2.0, 1.0])
GAMMA, BETA = 0.5, 2.0

# Hand-computed terms (A*_t - A1_t). Opponent positive at t = 0, 2, 3, so with 'opp_positive_past' the own
# advantages entering the past sums are (1, 0, -1, 0.5).
#
# discounted, beta*gamma = 1: S_t = sum_{k<t} 0.5^(t-k) A1_k
#   S = (0, 0.5*1, 0.25*1 + 0.5*2, 0.125*1 + 0.25*2 + 0.5*(-1)) = (0, 0.5, 1.25, 0.125)
#   term = S * A2 = (0, -0.5, 2.5, 0.125)
#   past masked: S = (0, 0.5, 0.25 + 0, 0.125 + 0 - 0.5) = (0, 0.5, 0.25, -0.375) -> (0, -0.5, 0.5, -0.375)
# running_mean, weight beta = 2: M_t = (1/t) sum_{k<t} A1_k = (0, 1/1, 3/2, 2/3)
#   term = 2 * M * A2 = (0, -2, 6, 4/3)
#   past masked: M = (0, 1, 1/2, 0/3) -> (0, -2, 2, 0)
# inclusive_discounted, d = 0.9*gamma = 0.45, weight beta = 2: I_t = A1_t + 0.45 I_{t-1}
#   I = (1, 2 + 0.45, -1 + 0.45*2.45, 0.5 + 0.45*0.1025) = (1, 2.45, 0.1025, 0.546125)
#   term = 2 * I * A2 = (1, -4.9, 0.41, 1.09225)
#   past masked: I = (1, 0.45, -1 + 0.2025, 0.5 - 0.45*0.7975) = (1, 0.45, -0.7975, 0.141125)
#     -> (1, -0.9, -3.19, 0.28225)
# 'opp_positive' zeroes the term where A2_t <= 0, i.e. at t = 1.
HAND_TERMS = {
  ('discounted', 'none'): [0.0, -0.5, 2.5, 0.125],
  ('discounted', 'opp_positive'): [0.0, 0.0, 2.5, 0.125],
  ('discounted', 'opp_positive_past'): [0.0, -0.5, 0.5, -0.375],
  ('running_mean', 'none'): [0.0, -2.0, 6.0, 4.0 / 3.0],
  ('running_mean', 'opp_positive'): [0.0, 0.0, 6.0, 4.0 / 3.0],
  ('running_mean', 'opp_positive_past'): [0.0, -2.0, 2.0, 0.0],
  ('inclusive_discounted', 'none'): [1.0, -4.9, 0.41, 1.09225],
  ('inclusive_discounted', 'opp_positive'): [1.0, 0.0, 0.41, 1.09225],
  ('inclusive_discounted', 'opp_positive_past'): [1.0, -0.9, -3.19, 0.28225],
}
VARIANTS = list(itertools.product(alignment.PAST_MODES, alignment.MASKS))
EXCLUSIVE = ('discounted', 'running_mean')


def test_hand_table_covers_every_variant():
  assert set(HAND_TERMS) == set(VARIANTS)


@pytest.mark.parametrize('past,mask', VARIANTS)
def test_hand_checked_four_steps(past, mask):
  term = alignment.alignment_term(OWN, OPP, BETA, gamma=GAMMA, past=past, mask=mask)
  np.testing.assert_allclose(term, HAND_TERMS[past, mask], rtol=1e-6, atol=1e-7)
  aligned = alignment.aligned_advantages(OWN, OPP, beta=BETA, gamma=GAMMA, past=past, mask=mask)
  np.testing.assert_allclose(
    aligned, np.asarray(OWN) + np.array(HAND_TERMS[past, mask]), rtol=1e-6, atol=1e-7
  )


def test_paper_form_aligned_advantages_by_hand():
  # A* = A1 + (0, -0.5, 2.5, 0.125) = (1, 1.5, 1.5, 0.625): the paper's default switches.
  aligned = alignment.aligned_advantages(OWN, OPP, BETA, gamma=GAMMA)
  np.testing.assert_allclose(aligned, [1.0, 1.5, 1.5, 0.625], rtol=1e-6)


def test_inclusive_with_explicit_past_discount():
  # d = 0.5: I = (1, 2.5, 0.25, 0.625); term = 2 * I * A2 = (1, -5, 1, 1.25).
  term = alignment.alignment_term(OWN, OPP, BETA, gamma=GAMMA, past='inclusive_discounted', past_discount=0.5)
  np.testing.assert_allclose(term, [1.0, -5.0, 1.0, 1.25], rtol=1e-6)


def _double_loop_term(own, opp, beta, gamma, past, mask, past_discount=None):
  """O(T^2) reference, float64, straight from the formulas in the module docstring."""
  own, opp = np.asarray(own, np.float64), np.asarray(opp, np.float64)
  T = len(own)
  if mask == 'opp_positive_past':
    own = np.where(opp > 0, own, 0.0)
  term = np.zeros(T)
  for t in range(T):
    if past == 'discounted':
      agg = beta * gamma * sum(gamma ** (t - k) * own[k] for k in range(t))
    elif past == 'running_mean':
      agg = beta * (sum(own[k] for k in range(t)) / t if t > 0 else 0.0)
    else:
      d = 0.9 * gamma if past_discount is None else past_discount
      agg = beta * sum(d ** (t - k) * own[k] for k in range(t + 1))
    a2 = max(opp[t], 0.0) if mask == 'opp_positive' else opp[t]
    term[t] = agg * a2
  return term


@pytest.mark.parametrize('past,mask', VARIANTS)
def test_scan_matches_double_loop_reference(past, mask):
  rng = np.random.default_rng(100 + VARIANTS.index((past, mask)))
  T = 17
  own, opp = rng.standard_normal(T), rng.standard_normal(T)
  beta, gamma = 0.7, 0.93
  term = alignment.alignment_term(
    jnp.asarray(own, jnp.float32), jnp.asarray(opp, jnp.float32), beta, gamma=gamma, past=past, mask=mask
  )
  np.testing.assert_allclose(term, _double_loop_term(own, opp, beta, gamma, past, mask), rtol=2e-5, atol=2e-6)
  if past == 'inclusive_discounted':
    term = alignment.alignment_term(
      jnp.asarray(own, jnp.float32),
      jnp.asarray(opp, jnp.float32),
      beta,
      gamma=gamma,
      past=past,
      mask=mask,
      past_discount=0.6,
    )
    want = _double_loop_term(own, opp, beta, gamma, past, mask, past_discount=0.6)
    np.testing.assert_allclose(term, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize('past', EXCLUSIVE)
@pytest.mark.parametrize('mask', alignment.MASKS)
def test_first_step_gets_no_term(past, mask):
  rng = np.random.default_rng(6)
  own, opp = (jnp.asarray(rng.standard_normal(9) + 3.0, jnp.float32) for _ in range(2))
  term = alignment.alignment_term(own, opp, 5.0, gamma=0.99, past=past, mask=mask)
  assert float(term[0]) == 0.0
  assert np.all(np.asarray(term[1:]) != 0.0)  # ... but every later step does (all inputs positive here).


@pytest.mark.parametrize('past,mask', VARIANTS)
def test_term_is_zero_when_opponent_advantages_are_zero(past, mask):
  own = jnp.asarray(np.random.default_rng(7).standard_normal(8), jnp.float32)
  term = alignment.alignment_term(own, jnp.zeros(8), 3.0, gamma=0.9, past=past, mask=mask)
  np.testing.assert_array_equal(term, 0.0)
  np.testing.assert_array_equal(
    alignment.aligned_advantages(own, jnp.zeros(8), 3.0, gamma=0.9, past=past, mask=mask), own
  )


@pytest.mark.parametrize('past,mask', VARIANTS)
def test_beta_zero_gives_exactly_the_plain_losses(past, mask):
  rng = np.random.default_rng(8)
  logp, logp_old, own, opp = (jnp.asarray(rng.standard_normal(10), jnp.float32) for _ in range(4))
  np.testing.assert_array_equal(
    alignment.aligned_advantages(own, opp, 0.0, gamma=0.9, past=past, mask=mask), own
  )
  pg = alignment.aligned_pg_loss(logp, own, opp, beta=0.0, gamma=0.9, past=past, mask=mask)
  assert float(pg) == float(ppo.policy_gradient_loss(logp, own))
  loss, diag = alignment.proximal_aligned_loss(
    logp, logp_old, own, opp, beta=0.0, gamma=0.9, clip_eps=0.2, past=past, mask=mask
  )
  plain, plain_diag = ppo.ppo_clipped_loss(logp, logp_old, own, clip_eps=0.2)
  assert float(loss) == float(plain)
  for key, value in plain_diag.items():
    assert float(diag[key]) == float(value)
  assert float(diag['aa_term_abs_mean']) == 0.0


@pytest.mark.parametrize('past,mask', VARIANTS)
def test_gradients_flow_only_into_logp(past, mask):
  rng = np.random.default_rng(9)
  logp, own, opp = (jnp.asarray(rng.standard_normal(6), jnp.float32) for _ in range(3))
  kwargs = dict(beta=1.5, gamma=0.9, past=past, mask=mask)
  aligned = alignment.aligned_advantages(own, opp, **kwargs)

  g_logp, g_own, g_opp = jax.grad(
    lambda lp, a1, a2: alignment.aligned_pg_loss(lp, a1, a2, **kwargs), argnums=(0, 1, 2)
  )(logp, own, opp)
  np.testing.assert_allclose(g_logp, -np.asarray(aligned) / 6, rtol=1e-6)
  np.testing.assert_array_equal(g_own, 0.0)
  np.testing.assert_array_equal(g_opp, 0.0)

  # PAA at ratio 1 (logp = logp_old): the same gradient; nothing into logp_old, own or opp.
  grads = jax.grad(
    lambda lp, lo, a1, a2: alignment.proximal_aligned_loss(lp, lo, a1, a2, clip_eps=0.1, **kwargs)[0],
    argnums=(0, 1, 2, 3),
  )(logp, logp, own, opp)
  np.testing.assert_allclose(grads[0], -np.asarray(aligned) / 6, rtol=1e-6)
  for g in grads[1:]:
    np.testing.assert_array_equal(g, 0.0)

  # The term and the aligned advantages themselves are constants.
  for fn in (alignment.alignment_term, alignment.aligned_advantages):
    g_own, g_opp = jax.grad(lambda a1, a2: fn(a1, a2, **kwargs).sum(), argnums=(0, 1))(own, opp)
    np.testing.assert_array_equal(g_own, 0.0)
    np.testing.assert_array_equal(g_opp, 0.0)


def test_proximal_equals_ppo_on_aligned_advantages_and_diagnostics():
  rng = np.random.default_rng(10)
  logp, logp_old, own, opp = (jnp.asarray(rng.standard_normal(12), jnp.float32) for _ in range(4))
  kwargs = dict(beta=0.8, gamma=0.95, past='running_mean', mask='opp_positive')
  aligned = alignment.aligned_advantages(own, opp, **kwargs)
  loss, diag = alignment.proximal_aligned_loss(logp, logp_old, own, opp, clip_eps=0.15, **kwargs)
  want, want_diag = ppo.ppo_clipped_loss(logp, logp_old, aligned, clip_eps=0.15)
  assert float(loss) == pytest.approx(float(want), rel=1e-6)
  assert float(diag['clip_fraction']) == float(want_diag['clip_fraction'])
  term = np.asarray(aligned) - np.asarray(own)
  assert float(diag['aa_term_mean']) == pytest.approx(term.mean(), rel=1e-5, abs=1e-6)
  assert float(diag['aa_term_abs_mean']) == pytest.approx(np.abs(term).mean(), rel=1e-5)
  running_mean = np.cumsum(np.asarray(own))[:-1] / np.arange(1, 12)
  assert float(diag['aa_past_mean']) == pytest.approx(running_mean.mean(), rel=1e-5, abs=1e-6)


def test_coin_game_gradient_is_inclusive_with_past_mask():
  """The Coin Game code's opponent loss -mean_t[[A2_t > 0] A1_t A2~_t], with A2~ a loaded-DiCE opponent
  advantage (forward value A2_t; gradient sum_{j>=t} d^{j-t} A2_j grad log pi(a_j), d = 0.9 gamma), has the
  gradient of -mean_t[log pi(a_t) * term_t] for past='inclusive_discounted', mask='opp_positive_past'."""
  rng = np.random.default_rng(11)
  T, gamma = 13, 0.96
  logp = jnp.asarray(rng.standard_normal(T) - 1.0, jnp.float32)
  own, opp = (jnp.asarray(rng.standard_normal(T), jnp.float32) for _ in range(2))
  d = 0.9 * gamma

  def coin_game_opponent_loss(lp):
    score = lp - jax.lax.stop_gradient(lp)  # 0 forward, grad log pi backward.
    weights = d ** jnp.maximum(jnp.arange(T)[None, :] - jnp.arange(T)[:, None], 0)  # [t, j]
    future = jnp.triu(weights) @ (opp * score)  # sum_{j>=t} d^{j-t} A2_j score_j, value 0.
    loaded_opp = opp + future
    mask = (opp > 0).astype(lp.dtype)
    return -jnp.mean(mask * own * loaded_opp)

  def alignment_only_loss(lp):
    term = alignment.alignment_term(
      own, opp, 1.0, gamma=gamma, past='inclusive_discounted', mask='opp_positive_past'
    )
    return ppo.policy_gradient_loss(lp, term)

  np.testing.assert_allclose(
    jax.grad(coin_game_opponent_loss)(logp), jax.grad(alignment_only_loss)(logp), rtol=1e-5, atol=1e-6
  )


def test_jit_and_vmap_with_traced_beta_match_eager():
  rng = np.random.default_rng(12)
  own, opp = (jnp.asarray(rng.standard_normal((7, 3)), jnp.float32) for _ in range(2))  # [T, B]
  align = functools.partial(
    alignment.aligned_advantages, gamma=0.9, past='discounted', mask='none', past_discount=None
  )
  batched = jax.jit(jax.vmap(align, in_axes=(1, 1, None), out_axes=1))(own, opp, 1.3)  # As train.py calls it.
  eager = np.stack([align(own[:, b], opp[:, b], 1.3) for b in range(3)], 1)
  np.testing.assert_allclose(batched, eager, rtol=1e-6, atol=1e-7)
  over_betas = jax.vmap(lambda b: alignment.alignment_term(own[:, 0], opp[:, 0], b, gamma=0.9))(
    jnp.array([0.0, 2.0])
  )
  np.testing.assert_array_equal(over_betas[0], 0.0)
  np.testing.assert_allclose(
    over_betas[1], alignment.alignment_term(own[:, 0], opp[:, 0], 2.0, gamma=0.9), rtol=1e-6
  )


def test_bad_names_list_valid_options_with_nearest_match():
  with pytest.raises(ValueError, match="did you mean 'discounted'") as info:
    alignment.aligned_advantages(OWN, OPP, 1.0, gamma=0.9, past='discounted_sum')
  assert isinstance(info.value, UsageError)
  for name in alignment.PAST_MODES:
    assert name in str(info.value)
  with pytest.raises(ValueError, match="did you mean 'opp_positive'") as info:
    alignment.alignment_term(OWN, OPP, 1.0, gamma=0.9, mask='opp_pos')
  assert 'none' in str(info.value)
  with pytest.raises(ConfigError, match='running_mean'):
    alignment.validate_options(past='runing_mean')
  alignment.validate_options(
    past='inclusive_discounted', mask='opp_positive_past', beta=0.0, gamma=1.0, past_discount=0.5
  )


def test_bad_numbers():
  with pytest.raises(ValueError, match='beta'):
    alignment.aligned_advantages(OWN, OPP, -0.1, gamma=0.9)
  with pytest.raises(ValueError, match='beta'):
    alignment.aligned_pg_loss(OWN, OWN, OPP, beta=float('nan'), gamma=0.9)
  with pytest.raises(ValueError, match='beta'):
    alignment.proximal_aligned_loss(OWN, OWN, OWN, OPP, beta=-1, gamma=0.9, clip_eps=0.2)
  with pytest.raises(ValueError, match='gamma'):
    alignment.alignment_term(OWN, OPP, 1.0, gamma=1.2)
  with pytest.raises(ValueError, match='past_discount only applies'):
    alignment.alignment_term(OWN, OPP, 1.0, gamma=0.9, past='discounted', past_discount=0.8)
  with pytest.raises(ValueError, match='past_discount'):
    alignment.alignment_term(OWN, OPP, 1.0, gamma=0.9, past='inclusive_discounted', past_discount=-0.5)
  with pytest.raises(AssertionError):  # chex: one trajectory, equal lengths.
    alignment.alignment_term(OWN, OPP[:3], 1.0, gamma=0.9)
  with pytest.raises(AssertionError):
    alignment.alignment_term(OWN[None], OPP[None], 1.0, gamma=0.9)
