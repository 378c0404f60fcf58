"""Targets and losses of value-based agents: n-step returns, double-DQN bootstraps, TD losses, C51 projection.

Conventions:
  * Window functions take the window on the LAST axis (`[..., N]`, step `k` of the window at index `k`) and
    return one value per window (`[...]`), so they serve one sample or a batch alike.
  * `gamma` and `n` may be traced (vmapped over a sweep): `n` only masks a window of static length `N >= n`,
    and every step is added in the same order whatever `N` is, so a window of `N = 10` masked to `n = 3` gives
    the same result as a window of length 3 (bitwise on CPU when both are jitted: eager op-by-op execution
    rounds differently from fused code, which may contract multiply-adds).
  * Targets are plain values; the losses apply `lax.stop_gradient` to them, so no gradient reaches the target.

References:
  * Mnih et al. (2015), "Human-level control through deep reinforcement learning" (DQN, Huber loss).
  * van Hasselt, Guez, Silver (2016), "Deep Reinforcement Learning with Double Q-learning".
  * Sutton & Barto (2018), §7.1 (n-step returns).
  * Bellemare, Dabney, Munos (2017), "A Distributional Perspective on Reinforcement Learning" (C51, eq. 7).
  * Hessel et al. (2018), "Rainbow"; van Hasselt, Hessel, Aslanides (2019), "When to use parametric models in
    reinforcement learning?" (DER: Rainbow tuned for 100k steps).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

__all__ = [
  'NStep',
  'categorical_loss',
  'categorical_projection',
  'double_dqn_target',
  'n_step_return',
  'n_step_window',
  'select_bootstrap_action',
  'td_loss',
]


class NStep(NamedTuple):
  """A multi-step window reduced to what the target needs: `target = reward + discount * V(next_obs[last])`.

  Attributes:
    reward: the discounted sum of the rewards inside the window, `sum_k gamma**k r_k`.
    discount: `gamma ** (steps used)`, or 0 when the last step used was terminal.
    last: int32 index of the last step used; its `next_obs` is the state to bootstrap from.
  """

  reward: jax.Array
  discount: jax.Array
  last: jax.Array


def n_step_window(
  rewards: jax.Array,
  dones: jax.Array,
  terminals: jax.Array,
  gamma: Any,
  n: Any,
  in_range: Optional[jax.Array] = None,
) -> NStep:
  """Reduces windows of `N` consecutive transitions to n-step targets, cut at episode ends and the write head.

  Step `k` of the window is used when `k < n`, `in_range[k]` holds, and no earlier step of the window ended
  an episode (`dones[j]` for `j < k`): a done step is the last one used, since the next step belongs to the
  next episode. Step 0 is always used. The bootstrap discount is `gamma ** (steps used)`, or 0 when the last
  used step is terminal (terminated rather than truncated: a truncated episode still bootstraps from its
  true final observation).

  Args:
    rewards: `[..., N]` float rewards.
    dones: `[..., N]` bool, the episode ended at this step (terminated or truncated).
    terminals: `[..., N]` bool, the episode terminated at this step (no bootstrap).
    gamma: discount in [0, 1] (may be traced).
    n: horizon, `1 <= n <= N` (may be traced).
    in_range: `[..., N]` bool, the step holds data of this window (`common.rl.replay.window_rows`); default
      all True.

  Returns:
    `NStep` of `[...]` arrays.
  """
  rewards = jnp.asarray(rewards)
  size = rewards.shape[-1]
  dtype = rewards.dtype if jnp.issubdtype(rewards.dtype, jnp.floating) else jnp.float32
  gamma = jnp.asarray(gamma, dtype)
  dones = jnp.asarray(dones, bool)
  terminals = jnp.asarray(terminals, bool)
  if in_range is None:
    in_range = jnp.ones(rewards.shape, bool)
  batch = rewards.shape[:-1]
  total = jnp.zeros(batch, dtype)
  discount = jnp.ones(batch, dtype)
  last = jnp.zeros(batch, jnp.int32)
  terminal = jnp.zeros(batch, bool)
  alive = jnp.ones(batch, bool)  # No done before step k.
  for k in range(size):  # N is static and small; a Python loop keeps the order of additions fixed.
    use = alive & in_range[..., k] & (k < n) if k else alive
    total = jnp.where(use, total + discount * rewards[..., k].astype(dtype), total)
    discount = jnp.where(use, discount * gamma, discount)
    last = jnp.where(use, k, last)
    terminal = jnp.where(use, terminals[..., k], terminal)
    alive = use & ~dones[..., k]
  return NStep(total, jnp.where(terminal, jnp.zeros_like(discount), discount), last)


def n_step_return(
  rewards: jax.Array,
  dones: jax.Array,
  terminals: jax.Array,
  next_values: jax.Array,
  gamma: Any,
  n: Any,
  in_range: Optional[jax.Array] = None,
) -> jax.Array:
  """The n-step return `sum_{k<=L} gamma**k r_k + gamma**(L+1) (1 - terminal_L) V(s_{L+1})`.

  `L` is the last step used (see `n_step_window`); `next_values[..., k]` is the value of the observation that
  followed step `k`, so the bootstrap is `next_values[..., L]`. Shapes `[..., N]` in, `[...]` out.
  """
  window = n_step_window(rewards, dones, terminals, gamma, n, in_range)
  bootstrap = jnp.take_along_axis(jnp.asarray(next_values), window.last[..., None], axis=-1)[..., 0]
  return window.reward + window.discount * bootstrap


def select_bootstrap_action(q_next_target: jax.Array, q_next_online: Optional[jax.Array] = None) -> jax.Array:
  """The greedy next action: argmax of the online network (double DQN) or of the target network (DQN).
  `[..., A]` in, int32 `[...]` out."""
  q = q_next_target if q_next_online is None else q_next_online
  return jnp.argmax(q, axis=-1).astype(jnp.int32)


def double_dqn_target(
  reward: jax.Array,
  discount: jax.Array,
  q_next_target: jax.Array,
  q_next_online: Optional[jax.Array] = None,
) -> jax.Array:
  """`reward + discount * Q_target(s', argmax_a Q_online(s', a))` (van Hasselt et al., 2016).

  With `q_next_online=None` it is the DQN target `reward + discount * max_a Q_target(s', a)`. `reward` and
  `discount` are `[...]` (e.g. from `n_step_window`), the Q-values `[..., A]`. The result is a constant
  (`stop_gradient`).
  """
  action = select_bootstrap_action(q_next_target, q_next_online)
  value = jnp.take_along_axis(q_next_target, action[..., None], axis=-1)[..., 0]
  return jax.lax.stop_gradient(reward + discount * value)


def td_loss(prediction: jax.Array, target: jax.Array, mse: Any = False, delta: Any = 1.0) -> jax.Array:
  """Elementwise TD loss, Huber (default) or squared error; `mse` may be a traced bool (a sweep over both).

  Huber with threshold `delta`: `0.5 x**2` for `|x| <= delta`, else `delta (|x| - 0.5 delta)` (DQN's loss).
  Squared error: `x**2` without the 1/2 (Dopamine's `mse_loss`, the default of its MoE agents), so in the
  quadratic region its gradient is twice Huber's. `x = target - prediction`; the target gets no gradient.
  """
  x = jax.lax.stop_gradient(target) - prediction
  abs_x = jnp.abs(x)
  quadratic = jnp.minimum(abs_x, delta)
  huber = 0.5 * quadratic**2 + delta * (abs_x - quadratic)
  return jnp.where(jnp.asarray(mse, bool), x**2, huber)


def categorical_projection(target_support: jax.Array, probs: jax.Array, support: jax.Array) -> jax.Array:
  """Projects the distribution with atoms `target_support` and masses `probs` onto the fixed `support` (C51).

  Every target atom is clipped into `[support[0], support[-1]]` and split between its two neighbouring atoms
  of `support` in proportion to closeness (Bellemare et al., 2017, eq. 7): the mass on atom `i` is
  `sum_j probs_j * clip(1 - |clip(Tz_j) - z_i| / dz, 0, 1)`. The support must be evenly spaced.

  Args:
    target_support: `[..., K]` target atoms `r + discount * z`.
    probs: `[..., K]` their probabilities.
    support: `[K]` the fixed atoms `z` (may be traced, e.g. `linspace(v_min, v_max, K)`).

  Returns:
    `[..., K]` projected probabilities (they sum to the input mass).
  """
  v_min, v_max = support[0], support[-1]
  # 1 / atom spacing, multiplied rather than divided by: a division by a broadcast scalar is rewritten by XLA
  # in some programs and not others, which would break bitwise equality of vmapped and single runs.
  inv_delta = (support.shape[-1] - 1) / (v_max - v_min)
  clipped = jnp.clip(target_support, v_min, v_max)
  distance = jnp.abs(clipped[..., None, :] - support[:, None])  # [..., i, j]
  weights = jnp.clip(1.0 - distance * inv_delta, 0.0, 1.0)
  return jnp.sum(weights * probs[..., None, :], axis=-1)


def categorical_loss(logits: jax.Array, target_probs: jax.Array) -> jax.Array:
  """Cross-entropy `-sum_i m_i log p_i` of the predicted atom logits `[..., K]` against a target distribution
  `[..., K]` (a constant: `stop_gradient`)."""
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jax.lax.stop_gradient(target_probs) * log_probs, axis=-1)
