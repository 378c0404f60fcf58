"""Tests of the LIO-style differentiable incentive manager (`lio.py`, the 'lio' variant of the supply chain)."""

import functools
import os

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from common import config as config_lib
from common import ppo
from common.errors import ConfigError
from mediator import lio
from mediator import sequential_train
from mediator import supply_chain
from mediator import train

CONFIG = os.path.join(os.path.dirname(__file__), 'configs', 'supply_chain_lost.py')
CHAIN = supply_chain.SupplyChain(
  num_factories=3, episode_length=4, max_order=2, max_inventory=8, excess_a='lost'
)
ENVS = 4
KAPPA = 1e3  # A payout weight so large that paying anything costs more than any change it could buy.


def tiny_config(**overrides):
  config = config_lib.load_config(CONFIG + ':smoke', lock=False)
  config.update({'num_envs': ENVS, 'eval_envs': ENVS, 'hidden': 8, 'ppo_epochs': 1, 'manager_every': 1})
  config.update(overrides)
  return config


def x64():
  return jax.enable_x64(True)


def tiny_problem(rng):
  """A linear-softmax factory policy, a linear incentive function and a random batch, all float64."""
  t, e, n, x_dim, actions, g_dim = 3, 2, 2, 3, 4, 5
  k = jax.random.split(jax.random.PRNGKey(rng), 8)
  f64 = jnp.float64
  theta = {'w': jax.random.normal(k[0], (x_dim, actions), f64), 'b': jax.random.normal(k[1], (actions,), f64)}
  eta = {'w': jax.random.normal(k[2], (g_dim, n), f64), 'b': jax.random.normal(k[3], (n,), f64)}
  x = jax.random.normal(k[4], (t, e, n, x_dim), f64)
  gs = jax.random.normal(k[5], (t, e, g_dim), f64)
  acts = jax.random.randint(k[6], (t, e, n), 0, actions)
  adv_k = jax.random.split(k[7], 3)

  def logp_fn(th):
    return ppo.categorical_logp(x @ th['w'] + th['b'], acts)

  kwargs = dict(
    bonus_fn=lambda p: lio.incentive(lambda q, s: s @ q['w'] + q['b'], p, gs, 0.5),
    theta=theta,
    logp_fn=logp_fn,
    logp_old=logp_fn(theta),
    factory_env_adv=jax.random.normal(adv_k[0], (t, e, n), f64),
    manager_adv=jax.random.normal(adv_k[1], (t, e), f64),
    units_b=jax.random.randint(adv_k[2], (t, e, n), 0, 4).astype(f64),
    kappa=0.3,
    scale=1.0,
    discount=0.9,
  )
  return eta, kwargs


def test_meta_gradient_through_the_lookahead_matches_finite_differences():
  with x64():
    eta, kwargs = tiny_problem(0)
    objective = jax.jit(functools.partial(lio.meta_objective, **kwargs, lr=2.0))
    grad = jax.grad(objective)(eta)
    direct = jax.grad(functools.partial(lio.meta_objective, **kwargs, lr=0.0))(eta)
    flat_grad, unravel = jax.flatten_util.ravel_pytree(grad)
    flat_eta, _ = jax.flatten_util.ravel_pytree(eta)
    h = 1e-6
    fd = np.array(
      [
        (objective(unravel(flat_eta + h * e)) - objective(unravel(flat_eta - h * e))) / (2 * h)
        for e in np.eye(flat_eta.size)
      ]
    )
    np.testing.assert_allclose(flat_grad, fd, rtol=1e-6, atol=1e-8)
    # The look-ahead's path (through θ') is a real part of the gradient, not a rounding error of the payout's.
    through = flat_grad - jax.flatten_util.ravel_pytree(direct)[0]
    assert np.linalg.norm(through) > 0.05 * np.linalg.norm(flat_grad)


def test_objective_value_and_the_payout_counted_once():
  with x64():
    eta, kwargs = tiny_problem(1)
    # With α = 0, θ' = θ and every ratio is 1: J = N·mean(Â^m) − κ·mean_t Σ_i b_i·units_b_i.
    value = lio.meta_objective(eta, **kwargs, lr=0.0)
    pay = kwargs['bonus_fn'](eta) * kwargs['units_b']
    n = pay.shape[-1]
    expected = n * kwargs['manager_adv'].mean() - kwargs['kappa'] * pay.sum(-1).mean()
    np.testing.assert_allclose(value, expected, rtol=1e-12)


def test_incentive_to_go_is_the_derivative_of_gae():
  """Â(η) adds Σ_{u>=t} (γλ)^(u−t)·p_u: GAE's advantage of the rewards p with a zero critic."""
  rewards = jax.random.normal(jax.random.PRNGKey(2), (6,))
  ours = lio.discounted_to_go(rewards, 0.99 * 0.95)
  adv, _ = ppo.gae(rewards, jnp.zeros(6), jnp.zeros(()), gamma=0.99, lam=0.95)
  np.testing.assert_allclose(ours, adv, rtol=1e-5, atol=1e-6)
  loop = [sum((0.99 * 0.95) ** (u - t) * float(rewards[u]) for u in range(t, 6)) for t in range(6)]
  np.testing.assert_allclose(ours, loop, rtol=1e-5, atol=1e-6)
  # So removing the incentive's part from GAE of (raw + pay) leaves GAE of raw, whatever the critic.
  raw, values = jax.random.normal(jax.random.PRNGKey(3), (2, 6))
  with_pay, _ = ppo.gae(raw + rewards, values, jnp.ones(()), gamma=0.99, lam=0.95)
  without, _ = ppo.gae(raw, values, jnp.ones(()), gamma=0.99, lam=0.95)
  np.testing.assert_allclose(lio.env_advantage(with_pay, rewards, 0.99 * 0.95), without, rtol=1e-5, atol=1e-5)
  bonus = lio.incentive(lambda p, s: s * p, 100.0, jnp.array([-1.0, 0.0, 1.0]), 0.4)
  np.testing.assert_allclose(bonus, [0.0, 0.2, 0.4], atol=1e-6)


@functools.cache
def compiled():
  """(initial state, jitted update, jitted rollout) of 'lio' at κ = KAPPA, compiled once for the module."""
  config = tiny_config(kappa=KAPPA, manager_lr=1e-2)
  init, update, rollout = sequential_train.make_sequential(config, CHAIN, lio.NAME)
  return config, init(jax.random.PRNGKey(0)), jax.jit(update), jax.jit(rollout, static_argnums=2)


def mean_incentive(config, state, gs):
  actor = sequential_train.common_nn.MLP((config.hidden, config.hidden, CHAIN.num_factories))
  return float(lio.incentive(actor.apply, state.manager['actor'], gs, config.lio_max_bonus).mean())


def test_incentives_are_counted_once_in_every_reward():
  config, state, _, rollout = compiled()
  batch = rollout(state, jax.random.PRNGKey(1), ENVS)
  obs_dim = CHAIN.obs_dim
  assert batch.x.shape[-1] == obs_dim + 1  # The factory sees its own bonus as one column, nothing else new.
  actor = sequential_train.common_nn.MLP((config.hidden, config.hidden, CHAIN.num_factories))
  bonus = lio.incentive(actor.apply, state.manager['actor'], batch.gs, config.lio_max_bonus)  # [T, E, N]
  np.testing.assert_allclose(batch.x[..., obs_dim], bonus / config.lio_max_bonus, rtol=1e-5, atol=1e-6)
  assert 0.0 < float(bonus.min()) and float(bonus.max()) < config.lio_max_bonus
  units_b = CHAIN.decode_actions(batch.actions)[1]
  payout = (bonus * units_b).sum(-1)
  assert float(payout.sum()) > 0
  stats = batch.stats
  np.testing.assert_allclose(stats['payout'], payout, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(stats['agents'], stats['raw'] + payout, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(batch.reward.sum(-1), stats['agents'], rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(batch.m_reward, stats['raw'] - KAPPA * payout, rtol=1e-5, atol=1e-2)
  np.testing.assert_allclose(stats['bonus'], bonus.mean(-1), rtol=1e-6)
  np.testing.assert_array_equal(batch.bonus, 0)
  np.testing.assert_array_equal(batch.m_logp, 0.0)  # A deterministic incentive: no log-probability.


def test_a_huge_payout_weight_lowers_the_bonus():
  config, state, update, rollout = compiled()
  gs = rollout(state, jax.random.PRNGKey(1), ENVS).gs
  new, metrics = update(state, None)
  assert np.isfinite(float(metrics['manager_loss'])) and float(metrics['mean_bonus']) > 0
  before = mean_incentive(config, state, gs)
  after = mean_incentive(config, new, gs)
  assert after < before - 1e-3, (before, after)
  for a, b in zip(jax.tree.leaves(new.factory), jax.tree.leaves(state.factory)):
    assert not np.array_equal(a, b)  # The factories learn (PPO) in the same update.
  critic = jax.tree.map(lambda a, b: not np.array_equal(a, b), new.manager['critic'], state.manager['critic'])
  assert all(jax.tree.leaves(critic))


@pytest.mark.parametrize(
  'overrides,fragment',
  [
    ({'lio_max_bonus': 0.0}, '`lio_max_bonus` must be a finite number > 0.0, got 0.0'),
    ({'lio_lookahead_lr': -1.0}, '`lio_lookahead_lr` must be a finite number >= 0.0, got -1.0'),
    ({'lio_max_bonus': float('nan')}, '`lio_max_bonus` must be a finite number > 0.0'),
  ],
)
def test_bad_lio_settings_fail_before_compiling(overrides, fragment, tmp_path):
  config = tiny_config(managers=('none', lio.NAME), claim_manager=lio.NAME, **overrides)
  with pytest.raises(ConfigError, match=fragment):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path)
