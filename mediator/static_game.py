"""The one-shot capacity game of the mediator specification (research note multiagent.md §5.4).

Rules:

- N factories (`num_agents`) each source D units (`demand`). Agent i's action a_i ∈ {0..D} is the number of
  units ordered from supplier A (cheap, total capacity K = `capacity`); the other D − a_i units come from
  supplier B (dear, unlimited).
- A fills the same fraction of every A order:
      f = min(1, K / Σ_j a_j),   f = 1 when Σ_j a_j = 0.
  Unfilled A units are lost sales: each costs the penalty s and is not paid for.
- Raw (environment) profit, with price p and unit costs c_A, c_B:
      r_i = (p − c_A)·a_i·f − s·a_i·(1 − f) + (p − c_B)·(D − a_i).
  Welfare is Σ_i r_i.
- The manager pays agent i the per-unit bonus b_i ≥ 0 for every unit ordered from B:
      payout_i = b_i·(D − a_i).
  Rewards, with the incentive counted exactly once in each:
      agent_i = r_i + payout_i,
      manager = Σ_i r_i − κ·Σ_i payout_i.

With the defaults (N = 4, D = 4, K = 5, c_A = 1, c_B = 2.5, s = 2, p = 3) every pure Nash equilibrium has
welfare 13.0 (e.g. a = (1, 1, 2, 2), f = 5/6), the social optimum is 15.5 (A used exactly to capacity, e.g.
(0, 0, 1, 4)), a uniform bonus b ≤ 0.15 changes no equilibrium, and b = 0.2 makes every pure equilibrium
optimal (raw 15.5, payout 2.2, agents 17.7, manager 13.3 at κ = 1).

The jnp functions (`fill`, `raw_profits`, `payouts`, `rewards`) are jit/vmap-able with the game as a static
argument (the dataclass is frozen and hashable). The NumPy functions (`welfare`, `pure_nash_equilibria`,
`social_optimum`, `best_uniform_bonus`, `best_targeted_bonus`) brute-force all (D+1)^N joint actions in
float64 and are meant for tests and for reference values in reports.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError
from mediator import checks

# Payoff ties within this tolerance count as equal (float64 brute force; payoffs are O(10)).
_TOL = 1e-9


@dataclasses.dataclass(frozen=True)
class CapacityGame:
  """One-shot capacity game (rules in the module docstring).

  Attributes:
    num_agents: N, the number of factories; >= 2.
    demand: D, the units each factory must source; an integer >= 1. Actions are a_i ∈ {0..D}.
    capacity: K, supplier A's total capacity in units; > 0.
    cost_a: c_A, unit cost at supplier A; >= 0.
    cost_b: c_B, unit cost at supplier B; >= 0.
    lost_sale: s, penalty per unfilled A unit; >= 0.
    price: p, selling price per unit delivered; >= 0.
    bonus_levels: the manager's per-agent, per-B-unit bonus choices; non-negative and sorted ascending.
  """

  num_agents: int = 4
  demand: int = 4
  capacity: float = 5
  cost_a: float = 1.0
  cost_b: float = 2.5
  lost_sale: float = 2.0
  price: float = 3.0
  bonus_levels: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5)

  def __post_init__(self):
    checks.check_int('CapacityGame', 'num_agents', self.num_agents, 2)
    checks.check_int('CapacityGame', 'demand', self.demand, 1)
    checks.check_real('CapacityGame', 'capacity', self.capacity, 0.0, strict=True)
    checks.check_real('CapacityGame', 'cost_a', self.cost_a, 0.0)
    checks.check_real('CapacityGame', 'cost_b', self.cost_b, 0.0)
    checks.check_real('CapacityGame', 'lost_sale', self.lost_sale, 0.0)
    checks.check_real('CapacityGame', 'price', self.price, 0.0)
    levels = self.bonus_levels
    if isinstance(levels, (str, bytes)) or not hasattr(levels, '__len__') or len(levels) == 0:
      raise ConfigError(
        f'CapacityGame: `bonus_levels` must be a non-empty sequence of numbers >= 0, got {levels!r}'
      )
    for level in levels:
      checks.check_real('CapacityGame', 'bonus_levels', level, 0.0)
    if any(b < a for a, b in zip(levels, levels[1:])):
      raise ConfigError(f'CapacityGame: `bonus_levels` must be sorted ascending, got {tuple(levels)!r}')
    # A list would make the game unhashable (it is a static jit argument): store a tuple of floats.
    object.__setattr__(self, 'bonus_levels', tuple(float(b) for b in levels))

  @property
  def num_actions(self) -> int:
    """D + 1 actions per agent: a_i ∈ {0..D} units from A."""
    return self.demand + 1

  # ---------------------------------------------------------------------------------------------------
  # jnp (jit / vmap-able)

  def fill(self, actions: jax.Array) -> jax.Array:
    """A's fill fraction f = min(1, K / Σ a) (1 when Σ a = 0), float32 scalar, for actions int[N]."""
    total = jnp.sum(jnp.asarray(actions, jnp.float32), axis=-1)
    return jnp.where(total > 0, jnp.minimum(1.0, self.capacity / jnp.maximum(total, 1e-9)), 1.0).astype(
      jnp.float32
    )

  def raw_profits(self, actions: jax.Array) -> jax.Array:
    """r_i = (p − c_A)·a_i·f − s·a_i·(1 − f) + (p − c_B)·(D − a_i), float32[N]."""
    a = jnp.asarray(actions, jnp.float32)
    f = self.fill(actions)
    return (
      (self.price - self.cost_a) * a * f
      - self.lost_sale * a * (1.0 - f)
      + (self.price - self.cost_b) * (self.demand - a)
    ).astype(jnp.float32)

  def payouts(self, actions: jax.Array, bonuses: jax.Array) -> jax.Array:
    """payout_i = b_i·(D − a_i), float32[N]: the bonus b_i on each of agent i's B units."""
    a = jnp.asarray(actions, jnp.float32)
    return (jnp.asarray(bonuses, jnp.float32) * (self.demand - a)).astype(jnp.float32)

  def rewards(self, actions: jax.Array, bonuses: jax.Array, kappa: float | jax.Array = 1.0) -> dict:
    """All rewards of one joint action, each incentive counted exactly once.

    Args:
      actions: int[N], units each agent orders from A.
      bonuses: float[N], the manager's per-B-unit bonus b_i for each agent.
      kappa: κ, the weight of the payout in the manager's reward.

    Returns:
      dict with 'raw' f32[N] = r_i; 'agents' f32[N] = r_i + b_i·(D − a_i); 'manager' f32 = Σ r_i − κ·Σ payout;
      'payout' f32 = Σ_i b_i·(D − a_i); 'oversubscribed' bool = Σ a > K.
    """
    raw = self.raw_profits(actions)
    pay = self.payouts(actions, bonuses)
    total_pay = jnp.sum(pay)
    return {
      'raw': raw,
      'agents': raw + pay,
      'manager': jnp.sum(raw) - jnp.asarray(kappa, jnp.float32) * total_pay,
      'payout': total_pay,
      'oversubscribed': jnp.sum(jnp.asarray(actions, jnp.float32)) > self.capacity,
    }

  # ---------------------------------------------------------------------------------------------------
  # NumPy brute force (float64)

  def joint_actions(self) -> np.ndarray:
    """int64[(D+1)^N, N]: every joint action, in lexicographic order."""
    return _joint_actions(self.num_agents, self.demand)

  def _actions_np(self, actions) -> np.ndarray:
    a = np.asarray(actions)
    if a.shape[-1:] != (self.num_agents,) or np.any(a < 0) or np.any(a > self.demand):
      raise ConfigError(
        f'CapacityGame: `actions` must have last axis {self.num_agents} with entries in 0..{self.demand}, '
        f'got shape {a.shape}'
      )
    return a.astype(np.float64)

  def _bonuses_np(self, bonuses) -> np.ndarray:
    """float64[N] from None (no bonus), a scalar (uniform) or N values; each must be >= 0."""
    b = np.zeros(self.num_agents) if bonuses is None else np.asarray(bonuses, dtype=np.float64)
    b = np.broadcast_to(b, (self.num_agents,)) if b.ndim == 0 else b
    if b.shape != (self.num_agents,) or not np.all(np.isfinite(b)) or np.any(b < 0):
      raise ConfigError(
        f'CapacityGame: `bonuses` must be None, a number >= 0 or {self.num_agents} numbers >= 0, '
        f'got {bonuses!r}'
      )
    return b

  def raw_profits_np(self, actions) -> np.ndarray:
    """float64[..., N]: the raw profits r_i of joint actions int[..., N] (same rule as `raw_profits`)."""
    a = self._actions_np(actions)
    total = a.sum(axis=-1, keepdims=True)
    f = np.where(total > 0, np.minimum(1.0, self.capacity / np.maximum(total, 1e-9)), 1.0)
    return (
      (self.price - self.cost_a) * a * f
      - self.lost_sale * a * (1.0 - f)
      + (self.price - self.cost_b) * (self.demand - a)
    )

  def welfare(self, actions) -> float | np.ndarray:
    """Σ_i r_i of a joint action int[N] (a float), or of a batch int[..., N] (float64[...])."""
    w = self.raw_profits_np(actions).sum(axis=-1)
    return float(w) if np.ndim(w) == 0 else w

  def pure_nash_equilibria(self, bonuses=None) -> list[tuple[int, ...]]:
    """All pure Nash equilibria of the agents' game with bonuses, sorted lexicographically.

    a is an equilibrium iff for every agent i and every a'_i ∈ {0..D}:
        r_i(a) + b_i·(D − a_i) >= r_i(a'_i, a_−i) + b_i·(D − a'_i)     (up to 1e-9).

    Args:
      bonuses: None (no bonus), a number (the same bonus for every agent) or N per-agent bonuses.
    """
    b = self._bonuses_np(bonuses)
    joint = self.joint_actions()
    utility = self.raw_profits_np(joint) + b * (self.demand - joint)
    utility = utility.reshape((self.num_actions,) * self.num_agents + (self.num_agents,))
    stable = np.ones(utility.shape[:-1], dtype=bool)
    for i in range(self.num_agents):
      best = utility[..., i].max(axis=i, keepdims=True)
      stable &= utility[..., i] >= best - _TOL
    return [tuple(int(x) for x in a) for a in np.argwhere(stable)]

  def social_optimum(self) -> tuple[float, list[tuple[int, ...]]]:
    """(max welfare, every joint action attaining it up to 1e-9, sorted lexicographically)."""
    joint = self.joint_actions()
    w = self.welfare(joint)
    best = float(w.max())
    return best, [tuple(int(x) for x in a) for a in joint[w >= best - _TOL]]

  def manager_value(self, bonuses, kappa: float = 1.0) -> float | None:
    """min over the pure equilibria under `bonuses` of Σ r_i − κ·Σ b_i·(D − a_i); None if there are none."""
    b = self._bonuses_np(bonuses)
    equilibria = self.pure_nash_equilibria(b)
    if not equilibria:
      return None
    a = np.asarray(equilibria, dtype=np.float64)
    return float(np.min(self.welfare(a) - kappa * np.sum(b * (self.demand - a), axis=-1)))

  def best_uniform_bonus(self, kappa: float = 1.0) -> tuple[float, float]:
    """(b, value): the level paid to every agent that maximises `manager_value`; ties go to the smaller b.

    Levels under which no pure equilibrium exists are skipped.
    """
    best = None
    for level in self.bonus_levels:
      value = self.manager_value(level, kappa)
      if value is not None and (best is None or value > best[1] + _TOL):
        best = (level, value)
    return best

  def best_targeted_bonus(self, kappa: float = 1.0) -> tuple[tuple[float, ...], float]:
    """(b, value): per-agent bonus levels in bonus_levels^N maximising `manager_value`.

    Ties go to the first vector in lexicographic order of the levels; vectors without a pure equilibrium are
    skipped. Cost: |levels|^N brute-force equilibrium searches (625 for the defaults, well under a second).
    """
    best = None
    for levels in itertools.product(self.bonus_levels, repeat=self.num_agents):
      value = self.manager_value(levels, kappa)
      if value is not None and (best is None or value > best[1] + _TOL):
        best = (tuple(levels), value)
    return best


@functools.lru_cache(maxsize=None)
def _joint_actions(num_agents: int, demand: int) -> np.ndarray:
  joint = np.array(list(itertools.product(range(demand + 1), repeat=num_agents)), dtype=np.int64)
  joint.setflags(write=False)
  return joint
