"""The sequential supply chain of the mediator specification (research note multiagent.md §5.4).

N factories (`num_factories`) sell to Poisson demand and buy from two suppliers: A is cheap with a per-step
capacity shared pro rata by all factories (its excess arrives late), B is dear, unlimited and on time. The
manager's bonus is paid per unit ordered from B.

Action of a factory: an integer a ∈ [0, 2·(M+1)) with M = `max_order`:
    qty = a mod (M+1),   supplier = a div (M+1)   (0 = A, 1 = B);
out-of-range actions are clipped to [0, 2·(M+1) − 1].

State: `t`, per-factory `inventory` I_i, the `pipeline` P[i, k] = units arriving at the start of step t + k
(k = 0 is due now; width L = max(lead_a + late_delay_a, lead_b)), `last_demand` and `last_orders`
(units from A and from B ordered in the previous step).

One step at time t, in this order:

1. Deliveries: I_i ← min(I_i + P[i, 0], I_max); the overflow I_i + P[i, 0] − I_max (if positive) is
   discarded (it was already paid for).
2. Demand d_i ~ Poisson(`demand_rate`), independent per factory: sales_i = min(I_i, d_i),
   lost_i = d_i − sales_i, I_i ← I_i − sales_i.
3. Orders: units_a_i = qty_i if supplier_i = A else 0, units_b_i = qty_i if supplier_i = B else 0.
   A's total X = Σ_i units_a_i is filled on time in the fraction f = min(1, K_A / X) (f = 1 when X = 0):
   units_a_i·f arrive after `lead_a` steps, the rest units_a_i·(1 − f) after `lead_a + late_delay_a`
   steps; units_b_i arrive after `lead_b` steps. Quantities are float32, so pro-rata parts may be
   fractional. An order placed at step t with lead ℓ arrives at the start of step t + ℓ (ℓ >= 1, since
   orders are placed after the step's deliveries).
4. Payment at order time for every unit ordered, on time or late:
       cost_i = c_A·units_a_i + c_B·units_b_i.
   Raw profit, with I_i the inventory at the end of the step:
       r_i = p·sales_i − cost_i − h·I_i − s·lost_i.

The pipeline then shifts by one (P[:, k] ← P[:, k + 1], the last column ← 0) and t ← t + 1. Episodes have a
fixed length (`episode_length`): the trainer scans that many steps from `reset`; there are no done flags.

Incentives (manager): payout_i = b_i·units_b_i for the per-agent bonus b_i (a level of `bonus_levels`);
agents get r_i + payout_i and the manager Σ r_i − κ·Σ payout_i (`rewards`).
"""

from __future__ import annotations

import dataclasses
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError
from mediator import checks

SUPPLIER_NAMES = ('A', 'B')
EXCESS_A = ('late', 'lost')
# jax.random.poisson draws rates below this with Knuth's algorithm (above it, transformed rejection).
_KNUTH_MAX_RATE = 10.0
# `poisson_knuth` runs until a draw this far in the tail could still be unfinished.
_KNUTH_TAIL = 1e-15


def knuth_iterations(rate: float) -> int:
  """The fewest iterations n with P(Poisson(rate) >= n) < _KNUTH_TAIL (a draw of k needs k + 1)."""
  n, pmf, cdf = 0, math.exp(-rate), 0.0
  while 1.0 - cdf >= _KNUTH_TAIL and pmf > 0.0:
    cdf += pmf
    n += 1
    pmf *= rate / n
  return n + 1


def poisson_knuth(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
  """int32 Poisson(rate) draws for rate < 10, equal to `jax.random.poisson(key, rate, shape)`.

  The same algorithm and keys as jax's Knuth sampler, but a fixed number of iterations
  (`knuth_iterations`) instead of a `while_loop` that runs until every draw has finished: XLA knows the
  trip count, so on GPU no iteration waits on a device-to-host copy of the loop condition (jax's loop
  did, about 15 times per environment step, inside the rollout's scan). A draw is final once its running
  log-product falls to -rate, so iterations past that change nothing; draws that would need more than
  `knuth_iterations(rate)` (probability below 1e-15 each) are cut there.
  """
  neg_rate = jnp.float32(-rate)

  def body(carry, _):
    k, rng, log_prod = carry
    rng, subkey = jax.random.split(rng)
    k = jnp.where(log_prod > neg_rate, k + 1, k)
    return (k, rng, log_prod + jnp.log(jax.random.uniform(subkey, shape, jnp.float32))), None

  init = (jnp.zeros(shape, jnp.int32), key, jnp.zeros(shape, jnp.float32))
  (k, _, _), _ = jax.lax.scan(body, init, None, length=knuth_iterations(rate))
  return k - 1


@flax.struct.dataclass
class SupplyChainState:
  """Step counter, inventories, scheduled arrivals and the previous step's demand and orders."""

  t: jax.Array  # int32 scalar
  inventory: jax.Array  # float32[N]
  pipeline: jax.Array  # float32[N, L]: P[i, k] arrives at the start of step t + k
  last_demand: jax.Array  # float32[N]
  last_orders: jax.Array  # float32[N, 2]: (units from A, units from B) ordered in the previous step


@dataclasses.dataclass(frozen=True)
class SupplyChain:
  """Sequential supply chain (rules in the module docstring); frozen and hashable, a static jit argument.

  Attributes:
    num_factories: N, the number of factories (agents); >= 1.
    episode_length: T, steps per episode; >= 1.
    max_inventory: I_max, inventory cap per factory; an integer >= max_order.
    demand_rate: mean of the Poisson demand per factory and step; > 0.
    max_order: M, the largest order quantity; >= 1. Actions: 2·(M+1).
    capacity_a: K_A, supplier A's on-time units per step across all factories; > 0.
    lead_a: steps until A's on-time units arrive; >= 1.
    late_delay_a: extra steps for A's unfilled excess (it arrives after lead_a + late_delay_a); >= 0.
    lead_b: steps until B's units arrive; >= 1.
    holding: h, cost per unit of end-of-step inventory; >= 0.
    lost_sale: s, penalty per unit of unmet demand; >= 0.
    price: p, revenue per unit sold; >= 0.
    cost_a: c_A, unit cost at A, paid at order time; >= 0.
    cost_b: c_B, unit cost at B, paid at order time; >= 0.
    bonus_levels: the manager's per-B-unit bonus choices; non-empty, non-negative, sorted ascending.
    initial_inventory: every factory's inventory at reset; in [0, max_inventory]. Not in the §5.4 note:
      one period's mean demand, so the first step is not a forced stock-out.
    excess_a: what happens to A's unfilled excess: 'late' (the §5.4 note: delivered late_delay_a steps
      later, paid at order time) or 'lost' (as in the static capacity game: never delivered, not paid,
      and each unit costs the penalty `lost_sale`), which makes over-using A costly to every factory.
    full_global_state: what the manager observes (`global_state`). True (default): the whole state, so
      the manager sees everything any factory sees (the paper: the manager observes the global state),
      including each factory's last demand and its last order from A and from B. False: the summary used
      before 2026-11-28 (inventories, pipelines, total last A order, time), which cannot tell which
      factory ordered from B last step; kept to reproduce the README's earlier GPU rows.
  """

  num_factories: int = 4
  episode_length: int = 50
  max_inventory: int = 20
  demand_rate: float = 4.0
  max_order: int = 6
  capacity_a: float = 5
  lead_a: int = 1
  late_delay_a: int = 2
  lead_b: int = 1
  holding: float = 0.1
  lost_sale: float = 1.0
  price: float = 3.0
  cost_a: float = 1.0
  cost_b: float = 2.5
  bonus_levels: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5)
  initial_inventory: float = 4.0
  excess_a: str = 'late'
  full_global_state: bool = True

  def __post_init__(self):
    if self.excess_a not in EXCESS_A:
      raise ConfigError(f'excess_a must be one of {", ".join(EXCESS_A)}, got {self.excess_a!r}')
    if not isinstance(self.full_global_state, (bool, np.bool_)):
      raise ConfigError(
        f'SupplyChain: `full_global_state` must be True or False, got {self.full_global_state!r}'
      )
    checks.check_int('SupplyChain', 'num_factories', self.num_factories, 1)
    checks.check_int('SupplyChain', 'episode_length', self.episode_length, 1)
    checks.check_int('SupplyChain', 'max_order', self.max_order, 1)
    checks.check_int(
      'SupplyChain',
      'max_inventory',
      self.max_inventory,
      self.max_order,
      'a full order must fit: >= max_order',
    )
    checks.check_real('SupplyChain', 'demand_rate', self.demand_rate, 0.0, strict=True)
    checks.check_real('SupplyChain', 'capacity_a', self.capacity_a, 0.0, strict=True)
    reason = 'orders are placed after the step deliveries, so they arrive at the earliest next step'
    checks.check_int('SupplyChain', 'lead_a', self.lead_a, 1, reason)
    checks.check_int('SupplyChain', 'late_delay_a', self.late_delay_a, 0)
    checks.check_int('SupplyChain', 'lead_b', self.lead_b, 1, reason)
    for name in ('holding', 'lost_sale', 'price', 'cost_a', 'cost_b'):
      checks.check_real('SupplyChain', name, getattr(self, name), 0.0)
    checks.check_real(
      'SupplyChain', 'initial_inventory', self.initial_inventory, 0.0, maximum=self.max_inventory
    )
    levels = self.bonus_levels
    if isinstance(levels, (str, bytes)) or not hasattr(levels, '__len__') or len(levels) == 0:
      raise ConfigError(
        f'SupplyChain: `bonus_levels` must be a non-empty sequence of numbers >= 0, got {levels!r}'
      )
    for level in levels:
      checks.check_real('SupplyChain', 'bonus_levels', level, 0.0)
    if any(b < a for a, b in zip(levels, levels[1:])):
      raise ConfigError(f'SupplyChain: `bonus_levels` must be sorted ascending, got {tuple(levels)!r}')
    # A list would make the environment unhashable (it is a static jit argument): store a tuple of floats.
    object.__setattr__(self, 'bonus_levels', tuple(float(b) for b in levels))

  # ---------------------------------------------------------------------------------------------------
  # Sizes

  @property
  def num_agents(self) -> int:
    """The factories are the agents."""
    return self.num_factories

  @property
  def num_actions(self) -> int:
    """2·(M+1): order quantity 0..M from A or from B."""
    return 2 * (self.max_order + 1)

  @property
  def pipeline_len(self) -> int:
    """L = max(lead_a + late_delay_a, lead_b): columns of the pipeline (arrivals due in 0..L−1 steps)."""
    return max(self.lead_a + self.late_delay_a, self.lead_b)

  @property
  def obs_dim(self) -> int:
    """1 (inventory) + L (pipeline) + 1 (last demand) + 2 (last order A, B) + N (agent id) + 1 (time)."""
    return self.pipeline_len + self.num_factories + 5

  @property
  def global_state_dim(self) -> int:
    """N (inventories) + N·L (pipelines) + 1 (last total A order) + 1 (time), then with
    `full_global_state` N (last demands) + 2N (last orders from A and from B)."""
    extra = 3 * self.num_factories if self.full_global_state else 0
    return self.num_factories * (1 + self.pipeline_len) + 2 + extra

  # ---------------------------------------------------------------------------------------------------
  # Actions

  def encode_action(self, qty, supplier) -> jax.Array:
    """int32 action for `qty` ∈ {0..M} units from `supplier` (0 = A, 1 = B): supplier·(M+1) + qty."""
    return (jnp.asarray(supplier) * (self.max_order + 1) + jnp.asarray(qty)).astype(jnp.int32)

  def decode_actions(self, actions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(units_a f32[N], units_b f32[N]) of int actions[N]; out-of-range actions are clipped first."""
    a = jnp.clip(jnp.asarray(actions, jnp.int32), 0, self.num_actions - 1)
    qty = (a % (self.max_order + 1)).astype(jnp.float32)
    to_b = a // (self.max_order + 1) == 1
    return jnp.where(to_b, 0.0, qty), jnp.where(to_b, qty, 0.0)

  # ---------------------------------------------------------------------------------------------------
  # Dynamics

  def reset(self, key: jax.Array) -> SupplyChainState:
    """t = 0, inventory = initial_inventory, empty pipeline, last demand = demand_rate, no last orders.

    Deterministic; `key` is accepted for the common environment interface.
    """
    del key
    n = self.num_factories
    return SupplyChainState(
      t=jnp.zeros((), jnp.int32),
      inventory=jnp.full((n,), self.initial_inventory, jnp.float32),
      pipeline=jnp.zeros((n, self.pipeline_len), jnp.float32),
      last_demand=jnp.full((n,), self.demand_rate, jnp.float32),
      last_orders=jnp.zeros((n, 2), jnp.float32),
    )

  def sample_demand(self, key: jax.Array) -> jax.Array:
    """float32[N]: d_i ~ Poisson(demand_rate), independent; the numbers of `jax.random.poisson`."""
    if self.demand_rate >= _KNUTH_MAX_RATE:
      return jax.random.poisson(key, self.demand_rate, (self.num_factories,)).astype(jnp.float32)
    return poisson_knuth(key, self.demand_rate, (self.num_factories,)).astype(jnp.float32)

  def step(
    self, state: SupplyChainState, actions: jax.Array, key: jax.Array
  ) -> tuple[SupplyChainState, jax.Array, dict[str, jax.Array]]:
    """One step with Poisson demand drawn from `key`; see `transition`."""
    return self.transition(state, actions, self.sample_demand(key))

  def transition(
    self, state: SupplyChainState, actions: jax.Array, demand: jax.Array
  ) -> tuple[SupplyChainState, jax.Array, dict[str, jax.Array]]:
    """One step with the given demand (the rules, steps 1-4, are in the module docstring).

    Args:
      state: current state.
      actions: int32[N], a = supplier·(max_order + 1) + qty.
      demand: float32[N], this step's demand per factory.

    Returns:
      (next state, raw profit float32[N], info) where info holds float32[N] 'units_a', 'units_b' (ordered
      this step), 'sales', 'lost', 'demand', 'arrivals' (delivered this step, before the cap), 'overflow'
      (discarded by the cap), 'late_a' (A units pushed back by late_delay_a), 'purchase_cost', and the
      float32 scalar 'fill_a' (f, A's on-time fraction this step).
    """
    demand = jnp.asarray(demand, jnp.float32)
    # 1. Deliveries, capped.
    arrivals = state.pipeline[:, 0]
    stock = state.inventory + arrivals
    inventory = jnp.minimum(stock, float(self.max_inventory))
    overflow = stock - inventory
    # 2. Demand.
    sales = jnp.minimum(inventory, demand)
    lost = demand - sales
    inventory = inventory - sales
    # 3. Orders.
    units_a, units_b = self.decode_actions(actions)
    total_a = jnp.sum(units_a)
    fill_a = jnp.where(
      total_a > 0, jnp.minimum(1.0, self.capacity_a / jnp.maximum(total_a, 1e-9)), 1.0
    ).astype(jnp.float32)
    on_time_a = units_a * fill_a
    late_a = units_a - on_time_a
    # Shift: column k of the next state is due at step t + 1 + k, so lead ℓ goes to column ℓ − 1.
    pipeline = jnp.concatenate([state.pipeline[:, 1:], jnp.zeros_like(state.pipeline[:, :1])], axis=1)
    pipeline = pipeline.at[:, self.lead_a - 1].add(on_time_a)
    if self.excess_a == 'late':
      pipeline = pipeline.at[:, self.lead_a + self.late_delay_a - 1].add(late_a)
      paid_a, excess_penalty = units_a, jnp.zeros_like(units_a)
    else:  # 'lost': the unfilled excess is never delivered nor paid, and is penalised like a lost sale.
      paid_a, excess_penalty = on_time_a, self.lost_sale * late_a
    pipeline = pipeline.at[:, self.lead_b - 1].add(units_b)
    # 4. Payment at order time and profit.
    purchase_cost = self.cost_a * paid_a + self.cost_b * units_b
    profit = (
      self.price * sales - purchase_cost - self.holding * inventory - self.lost_sale * lost - excess_penalty
    )
    next_state = SupplyChainState(
      t=state.t + 1,
      inventory=inventory,
      pipeline=pipeline,
      last_demand=demand,
      last_orders=jnp.stack([units_a, units_b], axis=-1),
    )
    info = {
      'units_a': units_a,
      'units_b': units_b,
      'fill_a': fill_a,
      'sales': sales,
      'lost': lost,
      'demand': demand,
      'arrivals': arrivals,
      'overflow': overflow,
      'late_a': late_a,
      'purchase_cost': purchase_cost,
    }
    return next_state, profit.astype(jnp.float32), info

  # ---------------------------------------------------------------------------------------------------
  # Observations

  def observe(self, state: SupplyChainState) -> jax.Array:
    """float32[N, obs_dim]; row i = [I_i/I_max, P[i, :]/M, last d_i/rate, last (A, B) order of i/M,
    one-hot(i) over N, t/T]."""
    n = self.num_factories
    time = jnp.broadcast_to(state.t.astype(jnp.float32) / self.episode_length, (n, 1))
    return jnp.concatenate(
      [
        state.inventory[:, None] / self.max_inventory,
        state.pipeline / self.max_order,
        state.last_demand[:, None] / self.demand_rate,
        state.last_orders / self.max_order,
        jnp.eye(n, dtype=jnp.float32),
        time,
      ],
      axis=-1,
    ).astype(jnp.float32)

  def global_state(self, state: SupplyChainState) -> jax.Array:
    """float32[global_state_dim] for the manager: [I/I_max (N), P/M flattened row-major (N·L),
    Σ_i last units_a_i / K_A, t/T], then with `full_global_state` [last d/rate (N), last (A, B) orders/M
    flattened row-major (2N)]: every field of the state, so each factory's observation (less its id) is
    a function of the manager's."""
    parts = [
      state.inventory / self.max_inventory,
      jnp.reshape(state.pipeline / self.max_order, (-1,)),
      jnp.sum(state.last_orders[:, 0], keepdims=True) / self.capacity_a,
      jnp.reshape(state.t.astype(jnp.float32) / self.episode_length, (1,)),
    ]
    if self.full_global_state:
      parts += [state.last_demand / self.demand_rate, jnp.reshape(state.last_orders / self.max_order, (-1,))]
    return jnp.concatenate(parts).astype(jnp.float32)

  # ---------------------------------------------------------------------------------------------------
  # Incentives

  def payouts(self, info: dict[str, jax.Array], bonuses: jax.Array) -> jax.Array:
    """float32[N]: payout_i = b_i·units_b_i, the bonus on every unit ordered from B this step."""
    return (jnp.asarray(bonuses, jnp.float32) * info['units_b']).astype(jnp.float32)

  def rewards(
    self,
    raw_profit: jax.Array,
    info: dict[str, jax.Array],
    bonuses: jax.Array,
    kappa: float | jax.Array = 1.0,
  ) -> dict[str, jax.Array]:
    """Rewards of one step, each incentive counted exactly once.

    Returns:
      dict with 'raw' f32[N] = r_i, 'agents' f32[N] = r_i + b_i·units_b_i, 'payout' f32 = Σ_i b_i·units_b_i
      and 'manager' f32 = Σ_i r_i − κ·payout.
    """
    pay = self.payouts(info, bonuses)
    total_pay = jnp.sum(pay)
    return {
      'raw': raw_profit,
      'agents': raw_profit + pay,
      'payout': total_pay,
      'manager': jnp.sum(raw_profit) - jnp.asarray(kappa, jnp.float32) * total_pay,
    }
