"""The Advantage Alignment term of Duque, Aghajohari et al., "Advantage Alignment Algorithms"
(arXiv:2406.14662, ICLR 2025), for one trajectory of agent 1 (time on axis 0; callers vmap over batch).

Paper form (README of the official code; "Algorithm 1 Advantage Alignment"; research note §2.1):

    A*_t = A¹_t + β · γ · ( Σ_{k<t} γ^{t−k} A¹_k ) · A²_t,        t = 0 gets no term,

with A¹ agent 1's own advantages and A² the opponent's advantages at the same steps (A²_t must depend on
agent 1's action a_t: the opponent's critic on the opponent's view, research note §7 pitfall 4). A* replaces
A¹ in the policy gradient (Advantage Alignment) or in PPO's clipped surrogate ("Algorithm 2 Proximal
Advantage Alignment", PAA). With several opponents, pass A² = Σ_{j≠i} A^j_t (the Melting Pot code's
(1 − I) mixing, note §2.2 item 3).

The official code implements three different "past" aggregates and a positivity mask (note §2.2–2.4,
§7 pitfall 2); each is one switch here, so ablations are one flag and no variant is silently substituted:

  past='discounted'            paper:  β · γ · (Σ_{k<t} γ^{t−k} A¹_k) · A²_t
  past='running_mean'          Melting Pot code (`train.py::aa_terms`, `integrated_aa`):
                                       β · ((1/t) Σ_{k<t} A¹_k) · A²_t            (no γ factors)
  past='inclusive_discounted'  Coin Game code (`MiladInk/loqa`, `coin_train.py`, method `loaded-ios`):
                                       β · (Σ_{k≤t} d^{t−k} A¹_k) · A²_t,  d = past_discount (default 0.9·γ)
                               (the sum includes k = t, i.e. a same-step A¹_t·A²_t term; that is the code,
                               not the paper, cf. pitfall 5).

  mask='none'                  the term as above (paper, Melting Pot code, negotiation code).
  mask='opp_positive'          the term only where A²_t > 0: A²_t → max(A²_t, 0) ("help the opponent only
                               where it is helped", the "+" half of the Coin Game code's masking).
  mask='opp_positive_past'     own past advantages counted only where the opponent's advantage was
                               positive: A¹_k → [A²_k > 0]·A¹_k inside the sum, A²_t unmasked. This is
                               where the Coin Game code's mask actually lands: its loss
                               −mean_t[[A²_t > 0]·A¹_t·A²_t] with a loaded-DiCE A² has the gradient
                               −Σ_j ∇log π(a_j)·A²_j·Σ_{t≤j} (0.9γ)^{j−t}[A²_t > 0]·A¹_t (note §2.4), so
                               `past='inclusive_discounted', mask='opp_positive_past', beta=1` reproduces
                               that gradient. 'opp_positive' is the simpler current-step variant.

Scale: β values are not interchangeable between variants (β = 1 in Melting Pot with normalised
advantages, 0.035 in the negotiation code, 1.0 in the Coin Game code). Normalise A¹ and A² before calling
(`common.ppo.normalize`): any bias in the critic makes the past sums one-signed, and the term then rewards
hurting the opponent (note §6.1, §7 pitfalls 1 and 12).

Everything here treats A¹ and A² as constants (`lax.stop_gradient`): no gradient reaches either critic or
the opponent through these functions (pitfall 3). The differentiable (loaded-DiCE) opponent advantage of
the Coin Game code is not implemented; its gradient is what the formulas above reproduce. The discounted
sums are computed with one O(T) `lax.scan`.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp

from common import config as config_lib
from common import ppo
from common.errors import ConfigError

__all__ = [
  'MASKS',
  'PAST_MODES',
  'aligned_advantages',
  'aligned_pg_loss',
  'alignment_term',
  'proximal_aligned_loss',
  'validate_options',
]

PAST_MODES = ('discounted', 'running_mean', 'inclusive_discounted')
MASKS = ('none', 'opp_positive', 'opp_positive_past')
# Coin Game code: `differentiable_opponent.discount` = 0.9 times the reward discount γ (note §2.4).
DEFAULT_INCLUSIVE_FACTOR = 0.9


def validate_options(
  *,
  past: str = 'discounted',
  mask: str = 'none',
  beta: Any = None,
  gamma: Any = None,
  past_discount: Any = None,
) -> None:
  """Eager checks of the switches and (when concrete) the numbers; call it before anything compiles.

  Raises:
    ConfigError (a ValueError): an unknown `past` or `mask` (with the nearest valid name), beta < 0,
      gamma or past_discount outside [0, 1], or `past_discount` given with a `past` that ignores it.
  """
  if past not in PAST_MODES:
    raise ConfigError(config_lib.unknown_name_message('alignment past', str(past), PAST_MODES))
  if mask not in MASKS:
    raise ConfigError(config_lib.unknown_name_message('alignment mask', str(mask), MASKS))
  if beta is not None:
    ppo.check_range('beta', beta, low=0.0)
  if gamma is not None:
    ppo.check_range('gamma', gamma, low=0.0, high=1.0)
  if past_discount is not None:
    if past != 'inclusive_discounted':
      raise ConfigError(
        f"past_discount only applies to past='inclusive_discounted', got past='{past}'; set it to None"
      )
    ppo.check_range('past_discount', past_discount, low=0.0, high=1.0)


def _discounted_prefix_sum(x: jax.Array, discount: jax.Array, *, inclusive: bool) -> jax.Array:
  r"""S_t = Σ_{k<t} d^{t−k} x_k (exclusive) or Σ_{k≤t} d^{t−k} x_k (inclusive), by one forward scan.

  Exclusive: S_0 = 0, S_{t+1} = d · (S_t + x_t).   Inclusive: S_t = x_t + d · S_{t−1}.
  """

  def step(carry, x_t):
    if inclusive:
      carry = discount * carry + x_t
      return carry, carry
    return discount * (carry + x_t), carry

  _, sums = jax.lax.scan(step, jnp.zeros((), x.dtype), x)
  return sums


def _past_and_weight(own, opp, *, beta, gamma, past, mask, past_discount):
  """(P_t, A²_t as used, c) with term_t = c · P_t · A²_t; all constants."""
  validate_options(past=past, mask=mask, beta=beta, gamma=gamma, past_discount=past_discount)
  own, opp = jnp.asarray(own), jnp.asarray(opp)
  chex.assert_rank([own, opp], 1)
  chex.assert_equal_shape([own, opp])
  dtype = jnp.promote_types(jnp.result_type(own, opp), jnp.float32)
  own = jax.lax.stop_gradient(own.astype(dtype))
  opp = jax.lax.stop_gradient(opp.astype(dtype))
  beta = jnp.asarray(beta, dtype)
  gamma = jnp.asarray(gamma, dtype)

  if mask == 'opp_positive_past':
    own = jnp.where(opp > 0, own, 0.0)
  if mask == 'opp_positive':
    opp = jnp.where(opp > 0, opp, 0.0)

  if past == 'discounted':
    past_sum = _discounted_prefix_sum(own, gamma, inclusive=False)
    weight = beta * gamma
  elif past == 'running_mean':
    steps = jnp.arange(own.shape[0], dtype=dtype)
    past_sum = _discounted_prefix_sum(own, jnp.ones((), dtype), inclusive=False) / jnp.maximum(steps, 1.0)
    weight = beta
  else:  # 'inclusive_discounted'
    if past_discount is None:
      discount = DEFAULT_INCLUSIVE_FACTOR * gamma
    else:
      discount = jnp.asarray(past_discount, dtype)
    past_sum = _discounted_prefix_sum(own, discount, inclusive=True)
    weight = beta
  return jax.lax.stop_gradient(past_sum), opp, jax.lax.stop_gradient(weight)


def alignment_term(
  own, opp, beta, *, gamma, past: str = 'discounted', mask: str = 'none', past_discount=None
) -> jax.Array:
  r"""Only the added term, A*_t − A¹_t (see the module docstring for every `past`/`mask` variant).

  Paper (§ "Advantage Alignment", Algorithm 1): β · γ · (Σ_{k<t} γ^{t−k} A¹_k) · A²_t, zero at t = 0.

  Args:
    own: [T] agent 1's advantages A¹_t (constants).
    opp: [T] the opponent's advantages A²_t at the same steps (constants).
    beta: β >= 0, the alignment weight; may be traced (e.g. vmapped over methods). Positional or keyword.
    gamma: γ in [0, 1]; may be traced.
    past: 'discounted' (paper), 'running_mean' (Melting Pot code), 'inclusive_discounted' (Coin Game code).
    mask: 'none', 'opp_positive' or 'opp_positive_past'.
    past_discount: d for 'inclusive_discounted' (default 0.9·γ); must be None for the other `past` modes.

  Returns:
    [T] term, stop-gradiented.

  Raises:
    ConfigError (a ValueError): bad names, or (when concrete) beta < 0 or gamma/past_discount outside [0, 1].
  """
  past_sum, opp_used, weight = _past_and_weight(
    own, opp, beta=beta, gamma=gamma, past=past, mask=mask, past_discount=past_discount
  )
  return jax.lax.stop_gradient(weight * past_sum * opp_used)


def aligned_advantages(
  own, opp, beta, *, gamma, past: str = 'discounted', mask: str = 'none', past_discount=None
) -> jax.Array:
  r"""A*_t = A¹_t + `alignment_term`(...)_t, the advantages Advantage Alignment substitutes for A¹.

  Paper form: A*_t = A¹_t + β · γ · (Σ_{k<t} γ^{t−k} A¹_k) · A²_t. β = 0 returns A¹ exactly. Arguments
  as in `alignment_term`; returns [T], stop-gradiented.
  """
  term = alignment_term(own, opp, beta, gamma=gamma, past=past, mask=mask, past_discount=past_discount)
  return jax.lax.stop_gradient(jnp.asarray(own).astype(term.dtype)) + term


def aligned_pg_loss(
  logp, own, opp, *, beta, gamma, past: str = 'discounted', mask: str = 'none', past_discount=None
) -> jax.Array:
  r"""Advantage Alignment's policy-gradient loss (Algorithm 1): −mean_t[ log π(a_t|s_t) · sg(A*_t) ].

  Its gradient w.r.t. logp is −A*_t / T; none reaches `own` or `opp`.

  Args:
    logp: [T] log π_θ(a_t|s_t) of agent 1's actions.
    own, opp, beta, gamma, past, mask, past_discount: as in `alignment_term`.

  Returns:
    The scalar loss.
  """
  aligned = aligned_advantages(own, opp, beta, gamma=gamma, past=past, mask=mask, past_discount=past_discount)
  return ppo.policy_gradient_loss(logp, aligned)


def proximal_aligned_loss(
  logp,
  logp_old,
  own,
  opp,
  *,
  beta,
  gamma,
  clip_eps,
  past: str = 'discounted',
  mask: str = 'none',
  past_discount=None,
  max_log_ratio=10.0,
) -> tuple[jax.Array, dict]:
  r"""Proximal Advantage Alignment (Algorithm 2): PPO's clipped surrogate on the aligned advantages.

      ρ_t = exp(clip(log π_θ − sg(log π_old), ±m)),
      L = −mean_t[ min(ρ_t · A*_t, clip(ρ_t, 1 − ε, 1 + ε) · A*_t) ]

  (= `common.ppo.ppo_clipped_loss(logp, logp_old, aligned_advantages(...))`; the Melting Pot code's
  `integrated_aa` mode, note §2.2 item 4, with clip 0.1 and m = 10 there.)

  Args:
    logp, logp_old: [T] log-probabilities under the current and the behaviour policy.
    own, opp, beta, gamma, past, mask, past_discount: as in `alignment_term`.
    clip_eps, max_log_ratio: as in `common.ppo.ppo_clipped_loss`.

  Returns:
    (loss, diagnostics): `ppo_clipped_loss`'s diagnostics plus `aa_term_mean` and `aa_term_abs_mean`
    (mean and mean |·| of the added term) and `aa_past_mean` (mean of the aggregated past own advantages
    P_t over the steps that can carry a term, t >= 1 for the exclusive sums: persistently one-signed values
    flag the critic bias of pitfall 1).
  """
  past_sum, opp_used, weight = _past_and_weight(
    own, opp, beta=beta, gamma=gamma, past=past, mask=mask, past_discount=past_discount
  )
  term = jax.lax.stop_gradient(weight * past_sum * opp_used)
  aligned = jax.lax.stop_gradient(jnp.asarray(own).astype(term.dtype)) + term
  loss, diagnostics = ppo.ppo_clipped_loss(
    logp, logp_old, aligned, clip_eps=clip_eps, max_log_ratio=max_log_ratio
  )
  diagnostics = dict(diagnostics)
  diagnostics['aa_term_mean'] = jnp.mean(term)
  diagnostics['aa_term_abs_mean'] = jnp.mean(jnp.abs(term))
  later = past_sum[1:] if past != 'inclusive_discounted' else past_sum
  diagnostics['aa_past_mean'] = jnp.mean(later) if later.shape[0] else jnp.zeros((), term.dtype)
  return loss, diagnostics
