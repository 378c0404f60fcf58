"""Tests for the sequential supply chain: lead times, pro-rata fill of A with late excess, the inventory cap,
lost sales and costs by hand, payouts, observations, and a vmapped + scanned random rollout."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.errors import ConfigError
from mediator.supply_chain import SupplyChain
from mediator.supply_chain import SupplyChainState

ENV = SupplyChain()
# Two factories, empty at the start, B slower than A's on-time units: lead_a = 1, late = 2, lead_b = 2.
SMALL = SupplyChain(num_factories=2, initial_inventory=0.0, lead_b=2)
NONE = 0  # 0 units from A.

# The environment is hashable, so it is a static argument: one compile per (function, environment).
_jit_transition = jax.jit(SupplyChain.transition, static_argnums=0)
_jit_observe = jax.jit(SupplyChain.observe, static_argnums=0)
_jit_global = jax.jit(SupplyChain.global_state, static_argnums=0)


def _state(env, inventory, pipeline=None, t=0):
  n = env.num_factories
  pipeline = np.zeros((n, env.pipeline_len)) if pipeline is None else pipeline
  return SupplyChainState(
    t=jnp.array(t, jnp.int32),
    inventory=jnp.asarray(inventory, jnp.float32),
    pipeline=jnp.asarray(pipeline, jnp.float32),
    last_demand=jnp.full((n,), env.demand_rate, jnp.float32),
    last_orders=jnp.zeros((n, 2), jnp.float32),
  )


def _a(env, qty):
  return qty  # qty units from A


def _b(env, qty):
  return env.max_order + 1 + qty  # qty units from B


def _run(env, state, action_seq, demand=None):
  """Applies each joint action in turn with the given demand (zero by default); returns states and infos."""
  demand = jnp.zeros(env.num_factories) if demand is None else jnp.asarray(demand, jnp.float32)
  states, profits, infos = [], [], []
  for actions in action_seq:
    state, profit, info = _jit_transition(env, state, jnp.asarray(actions, jnp.int32), demand)
    states.append(state)
    profits.append(profit)
    infos.append(info)
  return states, profits, infos


def test_sizes_and_action_coding():
  assert ENV.num_actions == 14 and ENV.pipeline_len == 3
  assert ENV.obs_dim == 1 + 3 + 1 + 2 + 4 + 1 == 12
  assert ENV.global_state_dim == 4 + 4 * 3 + 2 + 4 + 4 * 2 == 30
  units_a, units_b = ENV.decode_actions(jnp.array([0, 6, 7, 13]))
  np.testing.assert_array_equal(units_a, [0, 6, 0, 0])
  np.testing.assert_array_equal(units_b, [0, 0, 0, 6])
  np.testing.assert_array_equal(ENV.encode_action(jnp.array([3, 3]), jnp.array([0, 1])), [3, 10])
  # Out-of-range actions are clipped: -1 -> 0 (nothing), 99 -> 13 (6 from B).
  units_a, units_b = ENV.decode_actions(jnp.array([-1, 99]))
  np.testing.assert_array_equal(units_a, [0, 0])
  np.testing.assert_array_equal(units_b, [0, 6])


def test_b_order_arrives_exactly_lead_b_steps_later():
  # Factory 0 orders 5 from B at t = 0 (lead_b = 2): it arrives at the start of step 2.
  states, _, infos = _run(SMALL, _state(SMALL, [0, 0]), [[_b(SMALL, 5), NONE], [NONE, NONE], [NONE, NONE]])
  np.testing.assert_array_equal(states[0].pipeline, [[0, 5, 0], [0, 0, 0]])
  np.testing.assert_array_equal(states[1].pipeline, [[5, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal([float(s.inventory[0]) for s in states], [0, 0, 5])
  np.testing.assert_array_equal([float(i['arrivals'][0]) for i in infos], [0, 0, 5])
  np.testing.assert_array_equal(infos[0]['units_b'], [5, 0])
  assert float(infos[0]['fill_a']) == 1.0  # nobody ordered from A


def test_b_order_with_default_lead_arrives_next_step():
  env = SupplyChain(initial_inventory=0.0)
  states, _, _ = _run(env, _state(env, [0] * 4), [[_b(env, 2), NONE, NONE, _b(env, 6)], [NONE] * 4])
  np.testing.assert_array_equal(states[1].inventory, [2, 0, 0, 6])


def test_a_within_capacity_arrives_after_lead_a():
  # 3 + 2 = 5 = capacity: f = 1, everything on time after lead_a = 1 step, nothing late.
  states, _, infos = _run(SMALL, _state(SMALL, [0, 0]), [[_a(SMALL, 3), _a(SMALL, 2)], [NONE, NONE]])
  assert float(infos[0]['fill_a']) == 1.0
  np.testing.assert_array_equal(infos[0]['late_a'], [0, 0])
  np.testing.assert_array_equal(states[0].pipeline, [[3, 0, 0], [2, 0, 0]])
  np.testing.assert_array_equal(states[1].inventory, [3, 2])


def test_a_over_capacity_is_split_pro_rata_with_late_excess():
  # 6 + 4 = 10 > 5: f = 1/2. On time 3 and 2 after lead_a = 1; late 3 and 2 after 1 + 2 = 3 steps.
  actions = [[_a(SMALL, 6), _a(SMALL, 4)]] + [[NONE, NONE]] * 3
  states, _, infos = _run(SMALL, _state(SMALL, [0, 0]), actions)
  assert float(infos[0]['fill_a']) == pytest.approx(0.5)
  np.testing.assert_allclose(infos[0]['late_a'], [3, 2])
  np.testing.assert_allclose(states[0].pipeline, [[3, 0, 3], [2, 0, 2]])
  np.testing.assert_allclose(np.stack([s.inventory for s in states]), [[0, 0], [3, 2], [3, 2], [6, 4]])
  # Fractional pro-rata parts: 4 + 2 = 6 > 5, f = 5/6: on time 10/3 and 5/3.
  _, _, infos = _run(SMALL, _state(SMALL, [0, 0]), [[_a(SMALL, 4), _a(SMALL, 2)]])
  np.testing.assert_allclose(infos[0]['late_a'], [4 / 6, 2 / 6], rtol=1e-6)
  assert float(infos[0]['fill_a']) == pytest.approx(5 / 6)


def test_inventory_cap_discards_overflow_that_was_paid_for():
  env = SupplyChain(num_factories=2, max_inventory=8, initial_inventory=0.0)
  # Factory 0 has 6 in stock and 5 arriving now: 11 -> capped at 8, 3 discarded. No orders: no cost.
  state = _state(env, [6, 1], pipeline=[[5, 0, 0], [2, 0, 0]])
  next_state, profit, info = _jit_transition(env, state, jnp.array([NONE, NONE]), jnp.zeros(2))
  np.testing.assert_array_equal(next_state.inventory, [8, 3])
  np.testing.assert_array_equal(info['overflow'], [3, 0])
  np.testing.assert_array_equal(info['purchase_cost'], [0, 0])
  # Profit is only holding: −0.1·8 and −0.1·3.
  np.testing.assert_allclose(profit, [-0.8, -0.3], rtol=1e-6)


def test_lost_sales_costs_and_profit_by_hand():
  state = _state(ENV, [3, 10, 0, 4])
  actions = jnp.array([_a(ENV, 4), _b(ENV, 2), NONE, _b(ENV, 6)])
  demand = jnp.array([5.0, 2.0, 3.0, 4.0])
  next_state, profit, info = _jit_transition(ENV, state, actions, demand)
  np.testing.assert_array_equal(info['sales'], [3, 2, 0, 4])
  np.testing.assert_array_equal(info['lost'], [2, 0, 3, 0])
  np.testing.assert_array_equal(next_state.inventory, [0, 8, 0, 0])
  np.testing.assert_allclose(info['purchase_cost'], [4.0, 5.0, 0.0, 15.0])
  # r = 3·sales − cost − 0.1·I_end − 1·lost:
  #   0: 9 − 4 − 0 − 2 = 3;   1: 6 − 5 − 0.8 − 0 = 0.2;   2: 0 − 0 − 0 − 3 = −3;   3: 12 − 15 − 0 − 0 = −3.
  np.testing.assert_allclose(profit, [3.0, 0.2, -3.0, -3.0], rtol=1e-6)
  np.testing.assert_array_equal(next_state.last_demand, demand)
  np.testing.assert_array_equal(next_state.last_orders, [[4, 0], [0, 2], [0, 0], [0, 6]])
  assert int(next_state.t) == 1


def test_payouts_and_rewards_count_incentives_once():
  state = _state(ENV, [4, 4, 4, 4])
  actions = jnp.array([_b(ENV, 3), _b(ENV, 1), _a(ENV, 5), NONE])
  _, profit, info = _jit_transition(ENV, state, actions, jnp.full(4, 4.0))
  bonuses = jnp.array([0.5, 0.2, 0.3, 0.1])
  # payout_i = b_i·units_b_i = (1.5, 0.2, 0, 0): the A order and the empty order earn nothing.
  np.testing.assert_allclose(ENV.payouts(info, bonuses), [1.5, 0.2, 0.0, 0.0], rtol=1e-6)
  # Sales 4 each, no holding, no loss: r = 12 − cost = (12 − 7.5, 12 − 2.5, 12 − 5, 12).
  np.testing.assert_allclose(profit, [4.5, 9.5, 7.0, 12.0], rtol=1e-6)
  out = ENV.rewards(profit, info, bonuses, kappa=2.0)
  np.testing.assert_allclose(out['agents'], [6.0, 9.7, 7.0, 12.0], rtol=1e-6)
  assert float(out['payout']) == pytest.approx(1.7)
  assert float(out['manager']) == pytest.approx(33.0 - 2.0 * 1.7, rel=1e-6)
  np.testing.assert_array_equal(out['raw'], profit)


def test_reset_observation_and_global_state():
  state = ENV.reset(jax.random.key(0))
  assert int(state.t) == 0
  np.testing.assert_array_equal(state.inventory, [4.0] * 4)
  assert state.pipeline.shape == (4, 3) and state.last_orders.shape == (4, 2)
  obs = _jit_observe(ENV, state)
  assert obs.shape == (4, ENV.obs_dim) and obs.dtype == jnp.float32
  # Row 2 at reset: [4/20, 0, 0, 0, 4/4, 0, 0, one-hot(2), 0/50].
  np.testing.assert_allclose(obs[2], [0.2, 0, 0, 0, 1.0, 0, 0, 0, 0, 1, 0, 0], rtol=1e-6)
  # After one hand-built step: factory 1 ordered 6 from A alone (f = 5/6), demand 2 everywhere.
  actions = jnp.array([NONE, _a(ENV, 6), NONE, _b(ENV, 3)])
  state, _, _ = _jit_transition(ENV, state, actions, jnp.full(4, 2.0))
  assert int(state.t) == 1
  obs = _jit_observe(ENV, state)
  # Row 1: inventory 2/20; pipeline (5, 0, 1)/6; demand 2/4; last order (6, 0)/6; one-hot(1); t = 1/50.
  np.testing.assert_allclose(
    obs[1], [0.1, 5 / 6, 0, 1 / 6, 0.5, 1.0, 0, 0, 1, 0, 0, 0.02], rtol=1e-5, atol=1e-7
  )
  g = _jit_global(ENV, state)
  assert g.shape == (ENV.global_state_dim,)
  np.testing.assert_allclose(g[:4], [0.1] * 4, rtol=1e-6)
  np.testing.assert_allclose(g[4:16].reshape(4, 3), np.asarray(state.pipeline) / 6, rtol=1e-6)
  # Total A ordered last step 6 over capacity 5; t/T = 1/50.
  np.testing.assert_allclose(g[16:18], [6 / 5, 0.02], rtol=1e-6)
  # Then every factory's last demand (2/4) and its last (A, B) order over M = 6.
  np.testing.assert_allclose(g[18:22], [0.5] * 4, rtol=1e-6)
  np.testing.assert_allclose(g[22:].reshape(4, 2), [[0, 0], [1, 0], [0, 0], [0, 0.5]], rtol=1e-6)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _rollout(env, num_envs, num_steps, key, all_max_a):
  """`num_envs` episodes of `num_steps` vmapped + scanned; uniform random actions, or everyone ordering
  max_order from A when `all_max_a` (traced, so one compile serves both policies)."""
  key_reset, key_loop = jax.random.split(key)
  states = jax.vmap(env.reset)(jax.random.split(key_reset, num_envs))

  def body(states, key):
    key_act, key_step = jax.random.split(key)
    random_actions = jax.random.randint(key_act, (num_envs, env.num_factories), 0, env.num_actions)
    actions = jnp.where(all_max_a, env.max_order, random_actions)
    obs = jax.vmap(env.observe)(states)
    g = jax.vmap(env.global_state)(states)
    states, profit, info = jax.vmap(env.step)(states, actions, jax.random.split(key_step, num_envs))
    out = dict(info, profit=profit, obs_sum=jnp.sum(obs), global_sum=jnp.sum(g))
    return states, out

  final, traj = jax.lax.scan(body, states, jax.random.split(key_loop, num_steps))
  return final, traj


@pytest.mark.parametrize('all_max_a', [False, True])
def test_vmapped_scanned_rollout(all_max_a):
  final, traj = _rollout(ENV, 256, 50, jax.random.key(1), all_max_a)
  assert traj['profit'].shape == (50, 256, 4)
  for name, value in traj.items():
    assert np.all(np.isfinite(np.asarray(value))), name
  np.testing.assert_array_equal(final.t, np.full(256, 50))
  assert np.all(np.asarray(final.inventory) >= 0) and np.all(np.asarray(final.inventory) <= 20)
  # Poisson(4): the mean of 51 200 draws is within 0.05 of 4 (std ≈ 0.009).
  assert abs(float(jnp.mean(traj['demand'])) - 4.0) < 0.05
  # Conservation: initial + delivered = sold + discarded + final, and ordered = delivered + still in transit.
  delivered = traj['arrivals'].sum(0)
  np.testing.assert_allclose(
    4.0 + delivered, traj['sales'].sum(0) + traj['overflow'].sum(0) + final.inventory, rtol=1e-4, atol=1e-3
  )
  ordered = (traj['units_a'] + traj['units_b']).sum(0)
  np.testing.assert_allclose(ordered, delivered + final.pipeline.sum(-1), rtol=1e-4, atol=1e-3)
  fill = float(jnp.mean(traj['fill_a']))
  if all_max_a:
    # Everyone orders 6 from A: X = 24, f = 5/24 every step.
    assert fill == pytest.approx(5 / 24, rel=1e-5)
  else:
    # Random: E[X] = 4 factories · 1/2 · 3 = 6 > 5, so A is often over-subscribed.
    assert 0.5 < fill < 1.0


@pytest.mark.parametrize(
  'kwargs,match',
  [
    (dict(num_factories=0), 'num_factories'),
    (dict(episode_length=0), 'episode_length'),
    (dict(max_order=0), 'max_order'),
    (dict(max_inventory=5), 'max_inventory'),
    (dict(demand_rate=0.0), 'demand_rate'),
    (dict(demand_rate=float('nan')), 'demand_rate'),
    (dict(capacity_a=0), 'capacity_a'),
    (dict(lead_a=0), 'lead_a'),
    (dict(late_delay_a=-1), 'late_delay_a'),
    (dict(lead_b=0), 'lead_b'),
    (dict(lead_b=1.0), 'lead_b'),
    (dict(holding=-0.1), 'holding'),
    (dict(lost_sale=-1.0), 'lost_sale'),
    (dict(price=-1.0), 'price'),
    (dict(cost_a=-1.0), 'cost_a'),
    (dict(cost_b=-1.0), 'cost_b'),
    (dict(initial_inventory=21.0), 'initial_inventory'),
    (dict(bonus_levels=(0.0, -0.1)), 'bonus_levels'),
    (dict(bonus_levels=(0.3, 0.1)), 'sorted'),
    (dict(bonus_levels=()), 'bonus_levels'),
  ],
)
def test_config_errors(kwargs, match):
  with pytest.raises(ConfigError, match=match) as err:
    SupplyChain(**kwargs)
  assert isinstance(err.value, ValueError) and '\n' not in str(err.value)


def test_environment_is_hashable_and_levels_become_a_tuple():
  env = SupplyChain(bonus_levels=[0, 1])
  assert env.bonus_levels == (0.0, 1.0) and hash(env) == hash(SupplyChain(bonus_levels=(0.0, 1.0)))


def test_lost_excess_is_not_delivered_not_paid_and_penalised():
  """excess_a='lost' (the static game's rule): 6 + 4 > 5 fills half; the other half never arrives, costs
  nothing to buy and lost_sale per unit."""
  lost = SupplyChain(num_factories=2, initial_inventory=0.0, lead_b=2, excess_a='lost')
  actions = [[_a(lost, 6), _a(lost, 4)]] + [[NONE, NONE]] * 3
  states, profits, infos = _run(lost, _state(lost, [0, 0]), actions)
  np.testing.assert_allclose(infos[0]['late_a'], [3, 2])
  np.testing.assert_allclose(states[0].pipeline, [[3, 0, 0], [2, 0, 0]])
  np.testing.assert_allclose(np.stack([s.inventory for s in states]), [[0, 0], [3, 2], [3, 2], [3, 2]])
  # Profit at the order step: pay c_A for the 3 and 2 on-time units only, penalty s = 1 per lost unit.
  np.testing.assert_allclose(profits[0], [-1.0 * 3 - 1.0 * 3, -1.0 * 2 - 1.0 * 2])
  # Within capacity nothing changes between the two rules.
  _, p_late, _ = _run(SMALL, _state(SMALL, [0, 0]), [[_a(SMALL, 3), _a(SMALL, 2)]])
  _, p_lost, _ = _run(lost, _state(lost, [0, 0]), [[_a(lost, 3), _a(lost, 2)]])
  np.testing.assert_allclose(p_late[0], p_lost[0])


def test_unknown_excess_rule():
  with pytest.raises(ConfigError, match='excess_a must be one of late, lost'):
    SupplyChain(excess_a='refund')


@pytest.mark.parametrize('rate', [0.5, 4.0, 9.5])
def test_demand_is_jax_poisson_without_a_while_loop(rate):
  """`sample_demand` gives exactly the draws of jax.random.poisson (Knuth for rates below 10) through a
  fixed-length scan: jax's while_loop, whose trip count depends on the draws, costs one device-to-host
  copy of the loop condition per iteration on GPU, inside every environment step."""
  env = SupplyChain(demand_rate=rate)
  keys = jax.random.split(jax.random.PRNGKey(7), 4096)
  ours = jax.jit(jax.vmap(env.sample_demand))(keys)
  theirs = jax.vmap(lambda k: jax.random.poisson(k, rate, (env.num_factories,)))(keys)
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs, np.float32))
  np.testing.assert_array_equal(
    np.asarray(env.sample_demand(jax.random.key(3))),
    jax.random.poisson(jax.random.key(3), rate, (env.num_factories,)),
  )
  states = jax.vmap(env.reset)(keys[:8])
  jaxpr = str(jax.make_jaxpr(jax.vmap(env.step))(states, jnp.zeros((8, 4), jnp.int32), keys[:8]))
  assert 'while[' not in jaxpr
  assert 'while[' in str(jax.make_jaxpr(jax.vmap(lambda k: jax.random.poisson(k, rate, (4,))))(keys[:8]))


def test_manager_sees_every_factory_observation():
  """The paper's manager observes the global state: any two states that some factory observes differently
  must give the manager different inputs (its id aside). Before 2026-11-28 the manager saw only the total
  last order from A, so it could not tell which factory had ordered from B, nor the last demands."""
  base = ENV.reset(jax.random.key(0))
  swapped = base.replace(last_orders=jnp.array([[3.0, 0.0], [0.0, 2.0], [0.0, 0.0], [0.0, 0.0]]))
  moved = base.replace(last_orders=jnp.array([[0.0, 2.0], [3.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
  demand = moved.replace(last_demand=jnp.array([1.0, 4.0, 4.0, 4.0]))
  pairs = [(swapped, moved), (moved, demand)]
  for a, b in pairs:
    assert not np.array_equal(_jit_observe(ENV, a), _jit_observe(ENV, b))
    assert not np.array_equal(_jit_global(ENV, a), _jit_global(ENV, b))
  # The earlier summary (`full_global_state=False`) keeps its old size and cannot separate them.
  summary = SupplyChain(full_global_state=False)
  assert summary.global_state_dim == ENV.global_state_dim - 3 * ENV.num_factories == 18
  for a, b in pairs:
    np.testing.assert_array_equal(_jit_global(summary, a), _jit_global(summary, b))
    np.testing.assert_array_equal(_jit_global(summary, a), _jit_global(ENV, a)[:18])
  with pytest.raises(ConfigError, match='full_global_state'):
    SupplyChain(full_global_state='yes')
