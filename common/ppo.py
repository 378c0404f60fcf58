"""Policy-gradient maths shared by the RL projects: GAE, advantage normalisation and actor/critic losses.

Conventions:
  * The maths is written for ONE trajectory with time on axis 0 (`gae` takes [T] arrays); callers `jax.vmap`
    over batch, agent or seed axes. The losses only average, so they accept any shape as long as their
    inputs agree (e.g. [T] or [T, B]).
  * Advantages, returns and targets are constants of the losses: every loss applies `lax.stop_gradient`
    to them itself, so no gradient reaches a critic through an actor loss (research note §7, pitfall 3).
  * Hyper-parameters (`gamma`, `lam`, `clip_eps`, ...) may be traced (scheduled or vmapped over a sweep);
    when they are concrete numbers they are range-checked eagerly and a bad value raises
    `common.errors.ConfigError` (a `ValueError`), which `common.app` prints as one line.

References:
  * Schulman, Moritz, Levine, Jordan, Abbeel (2016), "High-Dimensional Continuous Control Using Generalized
    Advantage Estimation", arXiv:1506.02438, §3 (GAE), §4 (γ, λ as bias/variance knobs).
  * Schulman, Wolski, Dhariwal, Radford, Klimov (2017), "Proximal Policy Optimization Algorithms",
    arXiv:1707.06347, §3 (clipped surrogate, eq. 7), §5 (advantage normalisation is implementation
    practice, not in the paper).
  * Williams (1992), REINFORCE, for the plain policy-gradient surrogate.
"""

from __future__ import annotations

import math
from typing import Any

import chex
import jax
import jax.numpy as jnp

from common import config as config_lib
from common.errors import ConfigError

__all__ = [
  'VALUE_LOSSES',
  'check_range',
  'concrete_float',
  'entropy_of_logits',
  'gae',
  'normalize',
  'policy_gradient_loss',
  'ppo_clipped_loss',
  'value_loss',
]

VALUE_LOSSES = ('mse', 'huber')


# --------------------------------------------------------------------------- #
# Eager checks of (possibly traced) hyper-parameters.
# --------------------------------------------------------------------------- #


def concrete_float(name: str, value: Any) -> float | None:
  """`value` as a Python float, or None when it is traced (inside jit/vmap/grad) and cannot be checked.

  Raises:
    ConfigError: `value` is not a scalar.
  """
  if jnp.ndim(value) != 0:
    raise ConfigError(f'{name} must be a scalar, got shape {jnp.shape(value)}')
  try:
    return float(value)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError, TypeError):
    return None


def check_range(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False) -> None:
  """Raises ConfigError when a concrete `value` is NaN or outside [low, high] ((low, high] if `low_open`)."""
  v = concrete_float(name, value)
  if v is None:
    return
  ok = (v > low if low_open else v >= low) and v <= high
  if not ok:  # Also catches NaN.
    bracket = '(' if low_open else '['
    upper = 'inf)' if math.isinf(high) else f'{high:g}]'
    raise ConfigError(f'{name} must be in {bracket}{low:g}, {upper}, got {v:g}')


def _float_dtype(*xs) -> jnp.dtype:
  """The floating dtype to compute in: the inputs' promoted dtype, at least the default float."""
  return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


# --------------------------------------------------------------------------- #
# Advantages.
# --------------------------------------------------------------------------- #


def gae(rewards, values, bootstrap_value, *, gamma, lam, dones=None) -> tuple[jax.Array, jax.Array]:
  r"""Generalized advantage estimation over one trajectory (Schulman et al. 2016, §3, eq. 16).

  With V(s_T) = `bootstrap_value` and c_t = 1 − dones[t] (1 when `dones` is None):

      δ_t = r_t + γ · c_t · V(s_{t+1}) − V(s_t)
      Â_t = δ_t + γ · λ · c_t · Â_{t+1},      Â_T = 0
      R_t = Â_t + V(s_t)                        (the λ-return, the critic's target)

  computed backwards with one `lax.scan` (O(T)). λ = 1 gives discounted Monte-Carlo returns minus values;
  λ = 0 gives the TD(0) errors δ_t. `dones[t] = 1` means the episode ended after step t: neither V(s_{t+1})
  nor any later advantage flows back into step t (an environment that auto-resets inside the trajectory).
  For a finished fixed-length episode pass `bootstrap_value=0`; for a truncated one pass V(s_T).

  Args:
    rewards: [T] rewards r_t.
    values: [T] critic values V(s_t) for t < T.
    bootstrap_value: scalar V(s_T).
    gamma: discount γ in [0, 1]; may be traced.
    lam: GAE λ in [0, 1]; may be traced.
    dones: optional [T] bool/0-1 array; dones[t] = 1 cuts the bootstrap after step t.

  Returns:
    (advantages [T], returns [T]), both constants (stop-gradiented).
  """
  rewards, values, bootstrap_value = jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(bootstrap_value)
  chex.assert_rank([rewards, values, bootstrap_value], [1, 1, 0])
  chex.assert_equal_shape([rewards, values])
  check_range('gamma', gamma, low=0.0, high=1.0)
  check_range('lam', lam, low=0.0, high=1.0)
  dtype = _float_dtype(rewards, values, bootstrap_value)
  rewards, values = rewards.astype(dtype), jax.lax.stop_gradient(values.astype(dtype))
  bootstrap_value = jax.lax.stop_gradient(bootstrap_value.astype(dtype))
  if dones is None:
    not_done = jnp.ones_like(rewards)
  else:
    dones = jnp.asarray(dones)
    chex.assert_equal_shape([rewards, dones])
    not_done = 1.0 - dones.astype(dtype)
  gamma = jnp.asarray(gamma, dtype)
  lam = jnp.asarray(lam, dtype)

  next_values = jnp.concatenate([values[1:], bootstrap_value[None]])
  deltas = rewards + gamma * not_done * next_values - values

  def step(next_advantage, x):
    delta, cont = x
    advantage = delta + gamma * lam * cont * next_advantage
    return advantage, advantage

  _, advantages = jax.lax.scan(step, jnp.zeros((), dtype), (deltas, not_done), reverse=True)
  advantages = jax.lax.stop_gradient(advantages)
  return advantages, advantages + values


def normalize(x, *, axis=None, eps: float = 1e-8) -> jax.Array:
  r"""(x − mean(x)) / (std(x) + eps) over `axis` (all axes when None).

  The standard PPO implementation practice for advantages (not in Schulman et al. 2017; see the research
  note §2.2: the official Proximal Advantage Alignment code normalises over the whole batch × agents
  tensor, and §7 pitfall 12: the scope of the statistics changes the effective β).

  Finite when std = 0 (all entries equal): the result is then ≈ 0, and its gradient is finite too (the
  square root is guarded, so jax.grad never sees d√v/dv at v = 0).
  """
  x = jnp.asarray(x)
  x = x.astype(_float_dtype(x))
  mean = jnp.mean(x, axis=axis, keepdims=True)
  centred = x - mean
  var = jnp.mean(jnp.square(centred), axis=axis, keepdims=True)
  positive = var > 0
  std = jnp.where(positive, jnp.sqrt(jnp.where(positive, var, 1.0)), 0.0)
  return centred / (std + eps)


# --------------------------------------------------------------------------- #
# Actor losses.
# --------------------------------------------------------------------------- #


def policy_gradient_loss(logp, advantages) -> jax.Array:
  r"""The REINFORCE / vanilla policy-gradient surrogate (Williams 1992; Schulman et al. 2017, §2.1, eq. 2).

      L(θ) = −mean_t[ log π_θ(a_t | s_t) · sg(Â_t) ]

  whose gradient is −mean_t[ ∇ log π_θ(a_t|s_t) · Â_t ]; sg = `lax.stop_gradient`.

  Args:
    logp: log π_θ(a_t|s_t), any shape ([T] for one trajectory).
    advantages: Â_t, the same shape as `logp`.

  Returns:
    The scalar loss.
  """
  logp, advantages = jnp.asarray(logp), jnp.asarray(advantages)
  chex.assert_equal_shape([logp, advantages])
  return -jnp.mean(logp * jax.lax.stop_gradient(advantages))


def ppo_clipped_loss(logp, logp_old, advantages, *, clip_eps, max_log_ratio=10.0) -> tuple[jax.Array, dict]:
  r"""PPO's clipped surrogate objective, negated (Schulman et al. 2017, §3, eq. 7).

      ρ_t = exp(clip(log π_θ(a_t|s_t) − sg(log π_old(a_t|s_t)), −m, m))      (m = `max_log_ratio`)
      L(θ) = −mean_t[ min(ρ_t · sg(Â_t), clip(ρ_t, 1 − ε, 1 + ε) · sg(Â_t)) ]

  The log-ratio is clamped before exponentiating, as in the official Advantage Alignment code (research
  note §2.2 item 4, §7 pitfall 6), so a stale or very unlikely action cannot overflow ρ; beyond ±m the
  gradient is zero, like the clipped branch. At ρ = 1 the gradient equals the policy-gradient surrogate's.

  Args:
    logp: log π_θ(a_t|s_t) under the parameters being optimised, any shape ([T] for one trajectory).
    logp_old: log-probabilities under the behaviour policy, same shape (treated as constants).
    advantages: Â_t, same shape (treated as constants).
    clip_eps: ε > 0; may be traced.
    max_log_ratio: m > 0, the clamp on the log-ratio.

  Returns:
    (loss, diagnostics) where diagnostics (all stop-gradiented scalars) holds
      `clip_fraction`: mean[|ρ_t − 1| > ε], the share of samples whose gradient the clip removes or would;
      `approx_kl`: mean[(ρ_t − 1) − log ρ_t], the low-variance, non-negative estimator of KL(π_old ‖ π_θ)
        (Schulman, "Approximating KL divergence", 2020, k3);
      `ratio_mean`: mean[ρ_t].
  """
  logp, logp_old, advantages = jnp.asarray(logp), jnp.asarray(logp_old), jnp.asarray(advantages)
  chex.assert_equal_shape([logp, logp_old, advantages])
  check_range('clip_eps', clip_eps, low=0.0, low_open=True)
  check_range('max_log_ratio', max_log_ratio, low=0.0, low_open=True)
  advantages = jax.lax.stop_gradient(advantages)
  log_ratio = jnp.clip(logp - jax.lax.stop_gradient(logp_old), -max_log_ratio, max_log_ratio)
  ratio = jnp.exp(log_ratio)
  unclipped = ratio * advantages
  clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
  loss = -jnp.mean(jnp.minimum(unclipped, clipped))
  sg_ratio, sg_log_ratio = jax.lax.stop_gradient(ratio), jax.lax.stop_gradient(log_ratio)
  diagnostics = {
    'clip_fraction': jnp.mean((jnp.abs(sg_ratio - 1.0) > clip_eps).astype(sg_ratio.dtype)),
    'approx_kl': jnp.mean((sg_ratio - 1.0) - sg_log_ratio),
    'ratio_mean': jnp.mean(sg_ratio),
  }
  return loss, diagnostics


# --------------------------------------------------------------------------- #
# Critic loss and entropy.
# --------------------------------------------------------------------------- #


def value_loss(values, targets, *, kind: str = 'mse', huber_delta: float = 1.0) -> jax.Array:
  r"""Critic regression loss towards constant targets (e.g. the λ-returns of `gae`).

      'mse':    L = 0.5 · mean_t[(V_t − sg(G_t))²]
      'huber':  L = mean_t[ h_δ(V_t − sg(G_t)) ],  h_δ(x) = 0.5 x²  if |x| ≤ δ,  δ(|x| − 0.5 δ) otherwise

  (Huber 1964; the Coin Game critic of the research note §3.2 uses Huber with δ = 1.) Both agree for
  errors within δ.

  Args:
    values: V_t, any shape ([T] for one trajectory).
    targets: G_t, the same shape (treated as constants).
    kind: 'mse' or 'huber'.
    huber_delta: δ > 0, used by 'huber'.

  Returns:
    The scalar loss.
  """
  if kind not in VALUE_LOSSES:
    raise ConfigError(config_lib.unknown_name_message('value loss kind', kind, VALUE_LOSSES))
  values, targets = jnp.asarray(values), jnp.asarray(targets)
  chex.assert_equal_shape([values, targets])
  error = values - jax.lax.stop_gradient(targets)
  if kind == 'mse':
    return 0.5 * jnp.mean(jnp.square(error))
  check_range('huber_delta', huber_delta, low=0.0, low_open=True)
  abs_error = jnp.abs(error)
  quadratic = jnp.minimum(abs_error, huber_delta)
  linear = abs_error - quadratic  # = max(|x| − δ, 0) without a second gradient path.
  return jnp.mean(0.5 * jnp.square(quadratic) + huber_delta * linear)


def categorical_logp(logits, actions) -> jax.Array:
  r"""log softmax(logits)[a] over the last axis: the log-probability of each chosen category.

  Args:
    logits: [..., n] unnormalised log-probabilities.
    actions: [...] integer categories in [0, n).

  Returns:
    [...] log-probabilities.
  """
  return jnp.take_along_axis(jax.nn.log_softmax(logits), actions[..., None], -1)[..., 0]


def entropy_of_logits(logits) -> jax.Array:
  r"""Entropy of the categorical distribution softmax(logits) over the last axis, one value per row.

      H(p) = −Σ_i p_i log p_i,   p = softmax(logits)

  Uniform logits over n actions give log n. Masked actions (logits = −inf) contribute 0, and the
  gradient stays finite.

  Args:
    logits: [..., n] unnormalised log-probabilities.

  Returns:
    [...] entropies.
  """
  logits = jnp.asarray(logits)
  if logits.ndim < 1:
    raise ValueError(f'logits must have at least one axis (the categories), got shape {logits.shape}')
  logp = jax.nn.log_softmax(logits.astype(_float_dtype(logits)), axis=-1)
  p = jnp.exp(logp)
  safe_logp = jnp.where(p > 0, logp, 0.0)
  return -jnp.sum(p * safe_logp, axis=-1)
