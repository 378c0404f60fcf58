"""A LIO-style differentiable incentive manager (Yang et al. 2020, "Learning to Incentivize Other Learning
Agents", arXiv 2006.06051, §3), the 'lio' variant of `sequential_train.py` (issue #9's stronger baseline).

The manager's incentive function r_η(s) ∈ [0, b_max]^N maps the global state to one bonus per factory,
paid per unit the factory orders from supplier B (b_max = `config.lio_max_bonus`):

    b_i(s; η) = b_max · sigmoid(f_η(s)_i)                                    (continuous, smooth, bounded)

Factories learn (in the trainer, by PPO) on r_i + b_i·units_b_i. The manager updates η through one
simulated policy-gradient step of the factories (LIO §3.1, eq. 3-5):

    θ'(η) = θ + α ∇_θ mean_k[ log π_θ(a_k | x_k) · Â_k(η) ]                  (α = `config.lio_lookahead_lr`)

where Â_k(η) is the factories' GAE advantage of the incentive-inclusive reward, differentiable in η: GAE is
linear in the rewards, ∂Â_t/∂r_u = (γλ)^(u−t) for u >= t, so Â_t(η) = Â_t^env + Σ_{u>=t} (γλ)^(u−t)·p_u(η)
with p_u = b(s_u; η)·units_b_u and Â^env the trainer's advantage less its incentive part (at the current η
the value is the trainer's advantage, and the gradient is exact).

The manager's objective, raw reward − κ·payout, is estimated under θ' on the SAME batch with importance
ratios ρ_{t,i}(θ') = π_θ'(a_{t,i}|x_{t,i}) / π_θ(a_{t,i}|x_{t,i}) (our choice, the cheap first-order
variant; LIO itself estimates it on new trajectories of the updated recipients, which would need a second
rollout per update or the previous batch in the train state, so it is not offered):

    J(η) = mean_t[ Σ_i ρ_{t,i}(θ'(η)) · Â^m_t ] − κ · mean_t[ Σ_i b_i(s_t; η)·units_b_{t,i} ]

Â^m is the manager critic's GAE advantage of its reward Σ r − κ·payout (a constant); the payout term is
differentiated directly in η. Σ_i ρ_i is the first-order form of the joint ratio Π_i ρ_i (equal gradient
at θ' = θ). Caveat of the same-batch estimate: the samples that move θ' also score it, so the meta-gradient
has a self term Σ_k Â^m_k·‖∇ log π(a_k)‖²·∂Â_k/∂η that new trajectories would not have (it favours paying
for the very actions the manager's advantage liked).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from mediator import checks

NAME = 'lio'


def check_config(config) -> None:
  """One-line ConfigErrors for the 'lio' keys, raised before compiling."""
  checks.check_real('config', 'lio_max_bonus', config.lio_max_bonus, 0.0, strict=True)
  checks.check_real('config', 'lio_lookahead_lr', config.lio_lookahead_lr, 0.0)


def incentive(apply_fn: Callable, eta, global_state: jax.Array, max_bonus: float) -> jax.Array:
  """b(s; η) = b_max · sigmoid(f_η(s)): [..., N] bonuses per unit from B, in [0, b_max]."""
  return max_bonus * jax.nn.sigmoid(apply_fn(eta, global_state))


def discounted_to_go(x: jax.Array, discount) -> jax.Array:
  """y_t = Σ_{u>=t} discount^(u−t)·x_u along axis 0 (one reverse `lax.scan`); differentiable in x."""

  def step(carry, x_t):
    carry = x_t + discount * carry
    return carry, carry

  _, out = jax.lax.scan(step, jnp.zeros_like(x[0]), x, reverse=True)
  return out


def lookahead(theta, logp_fn: Callable, advantages: jax.Array, lr):
  """θ' = θ + α ∇_θ mean[log π_θ(a|x) · Â]: one plain policy-gradient ascent step (LIO eq. 3)."""
  grads = jax.grad(lambda p: jnp.mean(logp_fn(p) * advantages))(theta)
  return jax.tree.map(lambda p, g: p + lr * g, theta, grads)


def env_advantage(factory_adv: jax.Array, pay: jax.Array, discount) -> jax.Array:
  """Â^env = Â − Σ_{u>=t} (γλ)^(u−t)·p_u: GAE's advantage of the incentive-inclusive reward less the
  incentive's part (exact, GAE being linear in the rewards); `pay` [T, ...] in the advantages' units."""
  return factory_adv - discounted_to_go(pay, discount)


def meta_objective(
  eta,
  *,
  bonus_fn: Callable,
  theta,
  logp_fn: Callable,
  logp_old: jax.Array,
  factory_env_adv: jax.Array,
  manager_adv: jax.Array,
  units_b: jax.Array,
  kappa,
  scale,
  discount,
  lr,
) -> jax.Array:
  """J(η) of the module docstring (to be maximised); every reward term in units of `scale`·profit.

  Args:
    eta: the incentive function's parameters.
    bonus_fn: η -> b [T, E, N], the bonuses at the batch's global states.
    theta: the factories' actor parameters that sampled the batch.
    logp_fn: θ -> log π_θ(a|x) [T, E, N] of the batch's actions.
    logp_old: [T, E, N] the batch's log-probabilities (under θ).
    factory_env_adv: [T, E, N] Â^env, the factories' (unnormalised) GAE advantages less their incentive part
      (`env_advantage`).
    manager_adv: [T, E] the manager's GAE advantages of Σ r − κ·payout.
    units_b: [T, E, N] units ordered from B.
    kappa: the payout weight κ.
    scale: the reward scale of the advantages.
    discount: γλ, GAE's weight of later rewards.
    lr: α, the look-ahead step.
  """
  pay = scale * bonus_fn(eta) * units_b
  adv = jax.lax.stop_gradient(factory_env_adv) + discounted_to_go(pay, discount)
  theta_new = lookahead(theta, logp_fn, adv, lr)
  ratio = jnp.exp(logp_fn(theta_new) - jax.lax.stop_gradient(logp_old))
  through_factories = jnp.mean(ratio.sum(-1) * jax.lax.stop_gradient(manager_adv))
  return through_factories - kappa * jnp.mean(pay.sum(-1))
