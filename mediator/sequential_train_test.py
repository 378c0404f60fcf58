"""Tests of the manager's signal in the sequential supply chain (tiny shapes, CPU, seconds)."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import config as config_lib
from common import nn as common_nn
from common.errors import ConfigError
from mediator import sequential_train
from mediator import supply_chain
from mediator import train

CONFIG = os.path.join(os.path.dirname(__file__), 'configs', 'supply_chain.py')
CHAIN = supply_chain.SupplyChain(num_factories=3, episode_length=4, max_order=2, max_inventory=8)
ENVS = 2


def tiny_config(**overrides):
  config = config_lib.load_config(CONFIG + ':smoke', lock=False)
  config.update({'num_envs': ENVS, 'eval_envs': ENVS, 'hidden': 8, 'ppo_epochs': 1, 'manager_every': 1})
  config.update(overrides)
  return config


@functools.cache
def compiled(manager):
  """(initial state, jitted update, jitted rollout) of `manager`, compiled once for the whole module."""
  init, update, rollout = sequential_train.make_sequential(tiny_config(), CHAIN, manager)
  return init(jax.random.PRNGKey(0)), jax.jit(update), jax.jit(rollout, static_argnums=2)


def build(manager, bias=None):
  """(state, update, rollout) with the manager's last-layer bias replaced by `bias` (kernel zeroed) if given,
  which makes its choices deterministic and known."""
  state, update, rollout = compiled(manager)
  if bias is not None:
    actor = jax.tree.map(lambda x: x, state.manager['actor'])
    last = actor['params']['dense_2']
    last['kernel'] = jnp.zeros_like(last['kernel'])
    last['bias'] = jnp.asarray(bias, jnp.float32)
    state = state.replace(manager={**state.manager, 'actor': actor})
  return state, update, rollout


def one_hot_bias(n, width, choice):
  """Last-layer bias [n·width]: factory i strongly prefers value choice[i]."""
  return (20.0 * np.eye(width)[np.asarray(choice)]).reshape(-1)


def test_signal_reaches_exactly_its_factory_at_the_same_step():
  n, levels, sig = CHAIN.num_factories, len(CHAIN.bonus_levels), sequential_train.num_signals(CHAIN)
  assert sig == CHAIN.max_order + 1
  state, _, rollout = build('both')
  batch = rollout(state, jax.random.PRNGKey(1), ENVS)
  obs_dim, t_len = CHAIN.obs_dim, CHAIN.episode_length
  assert batch.x.shape == (t_len, ENVS, n, obs_dim + levels + sig)
  # The columns of row (t, e, i) after the observation are the one-hots of the bonus and the signal the
  # manager drew for factory i at step t ...
  np.testing.assert_array_equal(batch.x[..., obs_dim : obs_dim + levels], jax.nn.one_hot(batch.bonus, levels))
  np.testing.assert_array_equal(batch.x[..., obs_dim + levels :], jax.nn.one_hot(batch.signal, sig))
  assert len(np.unique(np.asarray(batch.signal))) > 1  # (a random manager: rows differ, so a swap would show)
  # ... row i is factory i's own observation (agent id) at step t (time feature) ...
  agent_id = CHAIN.pipeline_len + 4  # After inventory, pipeline, last demand, last orders (A, B).
  np.testing.assert_array_equal(
    batch.x[..., agent_id : agent_id + n], np.broadcast_to(np.eye(n), batch.signal.shape + (n,))
  )
  time = np.broadcast_to((np.arange(t_len) / t_len)[:, None, None], batch.signal.shape)
  np.testing.assert_allclose(batch.x[..., obs_dim - 1], time)
  # ... and both were drawn from the manager's policy on the global state of the same step t.
  out = common_nn.MLP((8, 8, n * (levels + sig))).apply(state.manager['actor'], batch.gs)
  b_logp = jax.nn.log_softmax(out[..., : n * levels].reshape(batch.bonus.shape + (levels,)))
  s_logp = jax.nn.log_softmax(out[..., n * levels :].reshape(batch.signal.shape + (sig,)))
  expected = jnp.take_along_axis(b_logp, batch.bonus[..., None], -1)[..., 0].sum(-1)
  expected += jnp.take_along_axis(s_logp, batch.signal[..., None], -1)[..., 0].sum(-1)
  np.testing.assert_allclose(batch.m_logp, expected, rtol=1e-5, atol=1e-5)
  # A deterministic manager recommending 2, 0, 1 units from A to factories 0, 1, 2 (bonus level 0).
  bias = np.concatenate([one_hot_bias(n, levels, [0] * n), one_hot_bias(n, sig, [2, 0, 1])])
  state, _, rollout = build('both', bias)
  batch = rollout(state, jax.random.PRNGKey(1), ENVS)
  np.testing.assert_array_equal(batch.signal, np.broadcast_to([2, 0, 1], batch.signal.shape))
  expected_x = np.broadcast_to(np.eye(sig)[[2, 0, 1]], (t_len, ENVS, n, sig))
  np.testing.assert_array_equal(batch.x[..., obs_dim + levels :], expected_x)


def test_signal_manager_pays_nothing_and_learns():
  state, update, _ = build('signal')
  new, metrics = update(state, None)
  assert metrics['payout'] == 0.0 and 0.0 <= metrics['signal_followed'] <= 1.0
  assert metrics['agents_reward'] == metrics['raw_reward']
  np.testing.assert_allclose(metrics['manager_reward'], metrics['raw_reward'], rtol=1e-6)
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), new.manager['actor'], state.manager['actor'])
  assert all(jax.tree.leaves(changed))  # manager_every = 1: the signal-only manager learns at step 0.
  init, _, rollout = sequential_train.make_sequential(tiny_config(), CHAIN, 'signal')
  shapes = jax.eval_shape(lambda: rollout(init(jax.random.PRNGKey(0)), jax.random.PRNGKey(4), ENVS))
  assert shapes.x.shape[-1] == CHAIN.obs_dim + len(CHAIN.bonus_levels) + sequential_train.num_signals(CHAIN)


def test_both_pays_and_signals():
  n, levels, sig = CHAIN.num_factories, len(CHAIN.bonus_levels), sequential_train.num_signals(CHAIN)
  top = levels - 1  # Every factory gets the largest bonus; signals 1, 1, 0.
  bias = np.concatenate([one_hot_bias(n, levels, [top] * n), one_hot_bias(n, sig, [1, 1, 0])])
  state, update, rollout = build('both', bias)
  batch = rollout(state, jax.random.PRNGKey(3), ENVS)
  np.testing.assert_array_equal(batch.bonus, top)
  np.testing.assert_array_equal(batch.signal, np.broadcast_to([1, 1, 0], batch.signal.shape))
  obs_dim = CHAIN.obs_dim
  np.testing.assert_array_equal(batch.x[..., obs_dim : obs_dim + levels], jax.nn.one_hot(batch.bonus, levels))
  np.testing.assert_array_equal(batch.x[..., obs_dim + levels :], jax.nn.one_hot(batch.signal, sig))
  payout = CHAIN.bonus_levels[top] * batch.stats['units_b']
  assert payout.sum() > 0
  np.testing.assert_allclose(batch.stats['payout'], payout, rtol=1e-6)
  np.testing.assert_allclose(batch.stats['agents'], batch.stats['raw'] + payout, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(batch.m_reward, batch.stats['raw'] - payout, rtol=1e-5, atol=1e-5)
  # The update traces with both heads (compiling an update is left to the 'signal' test).
  _, metrics = jax.eval_shape(update, state, None)
  assert set(metrics) >= {'payout', 'signal_followed', 'manager_loss'}


def test_incentives_and_none_have_no_signal_columns():
  for manager in ('none', 'incentives'):
    init, _, rollout = sequential_train.make_sequential(tiny_config(), CHAIN, manager)
    batch = jax.eval_shape(lambda: rollout(init(jax.random.PRNGKey(0)), jax.random.PRNGKey(4), ENVS))
    assert batch.x.shape[-1] == CHAIN.obs_dim + len(CHAIN.bonus_levels)


@pytest.mark.parametrize(
  'overrides,fragment',
  [
    ({'managers': ('none', 'signals')}, "manager 'signals' is not available in the supply chain"),
    ({'managers': ('none', 'incentives'), 'claim_manager': 'both'}, "claim_manager 'both'"),
  ],
)
def test_bad_signal_settings_fail_before_compiling(overrides, fragment, tmp_path):
  with pytest.raises(ConfigError, match=fragment):
    train.train_and_evaluate(tiny_config(**overrides), str(tmp_path))
  assert not os.listdir(tmp_path)
  with pytest.raises(ConfigError, match="manager 'Both' is not available"):
    sequential_train.make_sequential(tiny_config(), CHAIN, 'Both')


@pytest.mark.parametrize('manager', ['none', 'incentives', 'lio'])
def test_update_has_no_data_dependent_loop_or_callback(manager):
  """The jitted update's program has only fixed-length loops (scans) and no host callbacks: a while_loop
  (e.g. jax.random.poisson's) syncs the GPU with the host once per iteration."""
  state, _, _ = compiled(manager)
  _, update, _ = sequential_train.make_sequential(tiny_config(), CHAIN, manager)
  jaxpr = str(jax.make_jaxpr(update)(state, None))
  assert 'scan[' in jaxpr
  for primitive in ('while[', 'callback'):
    assert primitive not in jaxpr


def test_team_factories_share_the_mean_raw_profit():
  # 'team' (a diagnostic): no manager, no payout; every factory's reward is the mean raw profit of all.
  state, update, rollout = build('team')
  batch = rollout(state, jax.random.PRNGKey(5), ENVS)
  raw = batch.stats['raw']  # [T, E]: the sum over factories.
  np.testing.assert_allclose(
    batch.reward, np.broadcast_to((raw / CHAIN.num_factories)[..., None], batch.reward.shape), rtol=1e-6
  )
  assert float(np.abs(batch.stats['payout']).max()) == 0.0
  np.testing.assert_array_equal(batch.bonus, 0)
  # The factories' rewards differ from their own profits (else the test would not tell the variants apart).
  none_batch = build('none')[2](state, jax.random.PRNGKey(5), ENVS)
  assert not np.allclose(none_batch.reward, batch.reward)
  _, metrics = update(state, None)
  assert np.isfinite(float(metrics['factory_loss'])) and float(metrics['payout']) == 0.0


def test_fixed_pays_constant_bonuses_and_never_learns():
  config = tiny_config(fixed_bonus=(0.3, 0.0, 0.1))
  init, update, rollout = sequential_train.make_sequential(config, CHAIN, 'fixed')
  state = init(jax.random.PRNGKey(0))
  batch = jax.jit(rollout, static_argnums=2)(state, jax.random.PRNGKey(6), ENVS)
  levels = np.asarray(CHAIN.bonus_levels)
  np.testing.assert_array_equal(
    levels[np.asarray(batch.bonus)], np.broadcast_to([0.3, 0.0, 0.1], batch.bonus.shape)
  )
  # Every step's payout is the bonuses times the units each factory bought from B (counted once).
  units_b = np.asarray(batch.stats['units_b'])  # [T, E]: the sum over factories
  assert units_b.sum() > 0
  np.testing.assert_allclose(
    batch.stats['payout'], batch.stats['agents'] - batch.stats['raw'], rtol=1e-5, atol=1e-5
  )
  new_state, metrics = jax.jit(update)(state, None)
  for a, b in zip(jax.tree.leaves(new_state.manager), jax.tree.leaves(state.manager)):
    np.testing.assert_array_equal(a, b)
  assert float(metrics['manager_loss']) == 0.0 and float(metrics['mean_bonus']) == pytest.approx(0.4 / 3)
  with pytest.raises(ConfigError, match=r'fixed_bonus \(0.25, 0.0, 0.0\) must give each of the 3 factories'):
    sequential_train.make_sequential(tiny_config(fixed_bonus=(0.25, 0.0, 0.0)), CHAIN, 'fixed')
  with pytest.raises(ConfigError, match='must give each of the 3 factories'):
    sequential_train.make_sequential(tiny_config(fixed_bonus=(0.1, 0.1)), CHAIN, 'fixed')
