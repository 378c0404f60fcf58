r"""Token-level losses for PPO-style LLM RL (PPO, VinePPO, GRPO and RLOO share them; only advantages differ).

Inputs are [B, T] arrays over response tokens with a bool `mask` (True = a generated response token that is
trained on; prompt and padding are False). Token t's log-probability comes from the logits at the position
that predicts it (the caller shifts; `token_logprobs`).

Token averaging. Every loss here is a MASKED MEAN OVER ALL VALID TOKENS OF THE BATCH,

    L = Σ_{b,t} m_{b,t} ℓ_{b,t} / Σ_{b,t} m_{b,t},

so a long response weighs more than a short one. This is the official VinePPO trainer's convention for the
policy and value losses ("masked mean over response tokens", research note `../shared/research/llm.md`
§1.3, from `src/treetune/trainers/ppo_trainer.py`). The KL term there is summed over each sequence's tokens
and averaged over sequences (llm.md §1.3); `kl_penalty(reduction='sequence_sum')` gives that, while the
default here is the token mean like the other terms.

Policy loss (Schulman et al. 2017, eq. 7), per token, via `common.ppo.ppo_clipped_loss`:

    ρ_t = exp(clip(log π_θ − log π_old, ±m)),   ℓ_t = −min(ρ_t Â_t, clip(ρ_t, 1 − ε, 1 + ε) Â_t),  ε = 0.2.

KL to the reference as a loss term (not reward shaping; llm.md §1.3, `kl_penalty_loss_type:
control_variate`), with x_t = log π_ref − log π_θ on tokens sampled from π_θ (Schulman 2020, "Approximating
KL divergence"):

    k1 = −x,   k2 = x²/2,   k3 = exp(x) − x − 1  (≥ 0, unbiased for KL(π_θ ‖ π_ref) like k1).

The official run clamps k3 to [0, 10] and uses β = 1e-4 (`refKl0.0001.jsonnet`); `total_loss` defaults to
both. Value loss (critic PPO only): 0.5 (V − G)², optionally clipped around the old values with ε_V = 0.2
(`cliprange_value`, llm.md §1.3).

Total: L = L_policy + β · KL − c_H · H, all token-averaged.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

from common import ppo
from common.errors import ConfigError

__all__ = [
  'KL_ESTIMATORS',
  'KL_REDUCTIONS',
  'kl_penalty',
  'masked_mean',
  'policy_loss',
  'token_logprobs',
  'total_loss',
  'value_loss',
]

KL_ESTIMATORS = ('k1', 'k2', 'k3')
KL_REDUCTIONS = ('token_mean', 'sequence_sum')


def _float(x) -> jax.Array:
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def masked_mean(x, mask) -> jax.Array:
  """Σ m·x / max(Σ m, 1): the mean over valid entries (0 when none is valid)."""
  x, mask = _float(x), jnp.asarray(mask).astype(bool)
  chex.assert_equal_shape([x, mask])
  m = mask.astype(x.dtype)
  return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(m), 1.0)


def _check_tokens(*arrays) -> None:
  chex.assert_rank(list(arrays), 2)
  chex.assert_equal_shape(list(arrays))


def token_logprobs(logits, tokens) -> jax.Array:
  r"""log softmax(logits)[token] in float32: logits[b, t, tokens[b, t]] − logsumexp(logits[b, t]).

  logits[b, t] must be the distribution that generated tokens[b, t] (for a decoder fed the prompt and
  response, the logits one position earlier). Only the chosen entry and the logsumexp are formed, not the
  full [B, T, V] log-softmax.

  Args:
    logits: [B, T, V] (any float dtype; computed in float32 or wider).
    tokens: [B, T] int.

  Returns:
    [B, T] log-probabilities.
  """
  logits, tokens = jnp.asarray(logits), jnp.asarray(tokens)
  chex.assert_rank([logits, tokens], [3, 2])
  chex.assert_equal_shape_prefix([logits, tokens], 2)
  logits = _float(logits)
  chosen = jnp.take_along_axis(logits, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return chosen - jax.nn.logsumexp(logits, axis=-1)


def policy_loss(
  logp_new,
  logp_old,
  advantages,
  mask,
  *,
  clip_eps=0.2,
  max_log_ratio: float = 10.0,
  ratio_threshold: float | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  r"""PPO's clipped surrogate, token-averaged over the batch's valid tokens (module docstring).

  Each token's term is `common.ppo.ppo_clipped_loss` applied to that token alone (vmapped), so the
  log-ratio clamp at ±`max_log_ratio` and the stop-gradients on `logp_old` and `advantages` are the shared
  ones; the masked mean then replaces its plain mean. Masked entries may hold anything (even NaN): they
  are replaced before any arithmetic, so they reach neither the loss nor its gradient.

  Ratio guard (official `ratio_threshold`, llm.md §1.3): when given and the masked mean ratio exceeds it,
  the loss is multiplied by 0 (the minibatch is skipped) and `stats['skipped']` is 1.

  Args:
    logp_new: [B, T] log π_θ of the sampled tokens (differentiated).
    logp_old: [B, T] log π_old at sampling time (constant).
    advantages: [B, T] (constant).
    mask: [B, T] bool.
    clip_eps: ε > 0; may be traced.
    max_log_ratio: clamp on the log-ratio before exp.
    ratio_threshold: skip threshold on the mean ratio, or None.

  Returns:
    (loss, stats) with stop-gradiented scalars `clip_fraction` (share of valid tokens with
    |ρ − 1| > ε), `approx_kl` (k3 estimate of KL(π_old ‖ π_θ)), `ratio_mean` and `skipped`.
  """
  logp_new, logp_old, advantages = _float(logp_new), _float(logp_old), _float(advantages)
  mask = jnp.asarray(mask).astype(bool)
  _check_tokens(logp_new, logp_old, advantages, mask)
  logp_new = jnp.where(mask, logp_new, 0.0)
  logp_old = jnp.where(mask, logp_old, 0.0)
  advantages = jnp.where(mask, advantages, 0.0)

  per_token = functools.partial(ppo.ppo_clipped_loss, clip_eps=clip_eps, max_log_ratio=max_log_ratio)
  losses, diag = jax.vmap(jax.vmap(per_token))(logp_new, logp_old, advantages)
  loss = masked_mean(losses, mask)
  stats = {name: jax.lax.stop_gradient(masked_mean(diag[name], mask)) for name in diag}
  skipped = jnp.zeros((), loss.dtype)
  if ratio_threshold is not None:
    skipped = (stats['ratio_mean'] > ratio_threshold).astype(loss.dtype)
    loss = loss * (1.0 - skipped)
  stats['skipped'] = skipped
  return loss, stats


def kl_penalty(
  logp_policy,
  logp_ref,
  mask,
  *,
  estimator: str = 'k3',
  max_value: float | None = None,
  reduction: str = 'token_mean',
  max_log_ratio: float = 20.0,
) -> jax.Array:
  r"""Sampled estimate of KL(π_θ ‖ π_ref) on the policy's own tokens, as a differentiable loss term.

  With x = clip(sg(log π_ref) − log π_θ, ±`max_log_ratio`) per token (the clamp only keeps exp(x) finite):

      'k1': −x,    'k2': x² / 2,    'k3': exp(x) − x − 1

  k1 and k3 are unbiased for KL(π_θ ‖ π_ref) when tokens are drawn from π_θ; k3 is ≥ 0 per token and has
  low variance; k2 is biased but ≥ 0 (Schulman 2020). `max_value` clamps each token's value to
  [0, max_value] (k1 to [−max_value, max_value]); the official run uses k3 clamped to [0, 10].

  Args:
    logp_policy: [B, T] log π_θ of the sampled tokens (differentiated).
    logp_ref: [B, T] log π_ref of the same tokens (constant).
    mask: [B, T] bool.
    estimator: 'k1', 'k2' or 'k3'.
    max_value: per-token clamp, or None.
    reduction: 'token_mean' (Σ m·k / Σ m) or 'sequence_sum' (Σ_t m·k per sequence, mean over the B rows:
      the official aggregation).
    max_log_ratio: clamp on |x|.

  Returns:
    The scalar penalty.
  """
  if estimator not in KL_ESTIMATORS:
    raise ConfigError(f'unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}')
  if reduction not in KL_REDUCTIONS:
    raise ConfigError(f'unknown KL reduction {reduction!r}; expected one of {KL_REDUCTIONS}')
  logp_policy, logp_ref = _float(logp_policy), _float(logp_ref)
  mask = jnp.asarray(mask).astype(bool)
  _check_tokens(logp_policy, logp_ref, mask)
  logp_policy = jnp.where(mask, logp_policy, 0.0)
  logp_ref = jnp.where(mask, jax.lax.stop_gradient(logp_ref), 0.0)
  x = jnp.clip(logp_ref - logp_policy, -max_log_ratio, max_log_ratio)
  if estimator == 'k1':
    k = -x
  elif estimator == 'k2':
    k = 0.5 * jnp.square(x)
  else:
    k = jnp.expm1(x) - x  # exp(x) − 1 − x, accurate near x = 0.
  if max_value is not None:
    k = jnp.clip(k, -max_value if estimator == 'k1' else 0.0, max_value)
  if reduction == 'token_mean':
    return masked_mean(k, mask)
  return jnp.mean(jnp.sum(jnp.where(mask, k, 0.0), axis=1))


def value_loss(
  values,
  returns,
  mask,
  *,
  values_old=None,
  clip_eps: float | None = None,
  kind: str = 'mse',
) -> tuple[jax.Array, dict[str, jax.Array]]:
  r"""The critic's regression loss, token-averaged, optionally clipped as in PPO (llm.md §1.3).

      unclipped: ℓ_t = h(V_t − G_t)
      clipped:   ℓ_t = max(h(V_t − G_t), h(V_old,t + clip(V_t − V_old,t, ±ε_V) − G_t))

  with h the per-token `common.ppo.value_loss` (0.5 x² for 'mse', Huber for 'huber').

  Args:
    values: [B, T] critic predictions (differentiated).
    returns: [B, T] targets G_t (constant), e.g. from `advantages.critic_token_advantages`.
    mask: [B, T] bool.
    values_old: [B, T] predictions at sampling time (constant); needed when `clip_eps` is set.
    clip_eps: ε_V (the official 0.2), or None for the unclipped loss.
    kind: 'mse' or 'huber'.

  Returns:
    (loss, stats) with `clip_fraction`: share of valid tokens where the clipped term is the larger.
  """
  values, returns = _float(values), _float(returns)
  mask = jnp.asarray(mask).astype(bool)
  _check_tokens(values, returns, mask)
  values = jnp.where(mask, values, 0.0)
  returns = jnp.where(mask, returns, 0.0)
  per_token = jax.vmap(jax.vmap(functools.partial(ppo.value_loss, kind=kind)))
  losses = per_token(values, returns)
  clip_fraction = jnp.zeros((), values.dtype)
  if clip_eps is not None:
    if values_old is None:
      raise ValueError('value_loss with clip_eps needs values_old')
    values_old = jnp.where(mask, jax.lax.stop_gradient(_float(values_old)), 0.0)
    _check_tokens(values, values_old)
    clipped = values_old + jnp.clip(values - values_old, -clip_eps, clip_eps)
    clipped_losses = per_token(clipped, returns)
    clip_fraction = masked_mean((clipped_losses > losses).astype(values.dtype), mask)
    losses = jnp.maximum(losses, clipped_losses)
  return masked_mean(losses, mask), {'clip_fraction': jax.lax.stop_gradient(clip_fraction)}


def total_loss(
  logits,
  tokens,
  logp_old,
  advantages,
  mask,
  *,
  logp_ref=None,
  clip_eps=0.2,
  kl_coef=1e-4,
  kl_estimator: str = 'k3',
  kl_max: float | None = 10.0,
  kl_reduction: str = 'token_mean',
  entropy_coef=0.0,
  ratio_threshold: float | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  r"""The policy's loss: L = L_policy + β · KL(π_θ ‖ π_ref) − c_H · H(π_θ), all token-averaged.

  The critic (PPO only) is a separate model with its own `value_loss`. With the ratio guard triggered the
  whole loss is multiplied by 0.

  Args:
    logits: [B, T, V] policy logits predicting `tokens` (differentiated).
    tokens: [B, T] sampled response tokens.
    logp_old: [B, T] log π_old of `tokens` at sampling time.
    advantages: [B, T] per-token advantages (already whitened if wanted).
    mask: [B, T] bool.
    logp_ref: [B, T] log π_ref of `tokens`, or None (no KL term).
    clip_eps: PPO ε.
    kl_coef: β (official 1e-4).
    kl_estimator, kl_max, kl_reduction: see `kl_penalty` (defaults: k3 clamped to [0, 10], token mean).
    entropy_coef: c_H (0 in the official configs).
    ratio_threshold: see `policy_loss`.

  Returns:
    (loss, stats): `loss`, `policy_loss`, `kl`, `entropy` and `policy_loss`'s stats, stop-gradiented.
  """
  logp_new = token_logprobs(logits, tokens)
  mask = jnp.asarray(mask).astype(bool)
  pg_loss, stats = policy_loss(
    logp_new, logp_old, advantages, mask, clip_eps=clip_eps, ratio_threshold=ratio_threshold
  )
  if logp_ref is None:
    kl = jnp.zeros((), pg_loss.dtype)
  else:
    kl = kl_penalty(
      logp_new, logp_ref, mask, estimator=kl_estimator, max_value=kl_max, reduction=kl_reduction
    )
  entropy = masked_mean(ppo.entropy_of_logits(logits), mask)
  loss = (pg_loss + kl_coef * kl - entropy_coef * entropy) * (1.0 - stats['skipped'])
  sg = jax.lax.stop_gradient
  stats = {**stats, 'loss': sg(loss), 'policy_loss': sg(pg_loss), 'kl': sg(kl), 'entropy': sg(entropy)}
  return loss, stats
