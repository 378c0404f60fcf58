"""Behaviour: lambda-returns against a Python loop; imagination shapes; the actor's gradient comes only
through the dynamics; data-free start states."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from world_models import behaviour
from world_models import rssm

CONFIG = ConfigDict(
  {
    'env': {'image_size': 8},
    'wm': {
      'deter': 8,
      'hidden': 8,
      'stoch': 3,
      'classes': 4,
      'depth': 4,
      'unimix': 0.01,
      'single_obs_posterior': True,
    },
    'behaviour': {'horizon': 3, 'gamma': 0.9, 'lam': 0.8},
  }
)


@functools.cache
def world_model():
  """The tiny world model and its parameters, built once for this file's tests."""
  wm = rssm.make_world_model(CONFIG)
  return wm, jax.jit(wm.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 2)))['params']


def test_lambda_returns_against_python_loop():
  rng = np.random.default_rng(0)
  rewards, values = rng.normal(size=(6, 3)), rng.normal(size=(7, 3))
  gamma, lam = 0.9, 0.7
  expected = np.zeros((6, 3))
  nxt = values[-1]
  for t in reversed(range(6)):
    nxt = rewards[t] + gamma * ((1 - lam) * values[t + 1] + lam * nxt)
    expected[t] = nxt
  got = behaviour.lambda_returns(jnp.asarray(rewards), jnp.asarray(values), gamma, lam)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # lambda = 0: one-step TD targets.
  got = behaviour.lambda_returns(jnp.asarray(rewards), jnp.asarray(values), gamma, 0.0)
  np.testing.assert_allclose(got, rewards + gamma * values[1:], rtol=1e-5)


def test_imagination_shapes_and_actor_gradient_only_through_dynamics():
  wm, wm_params = world_model()
  batch = 3
  feat_dim = 8 + 3 * 4
  actor, critic = behaviour.Actor(8, 1), behaviour.Critic(8, 1)
  actor_params = actor.init(jax.random.PRNGKey(1), jnp.zeros((1, feat_dim)))['params']
  critic_params = critic.init(jax.random.PRNGKey(2), jnp.zeros((1, feat_dim)))['params']
  start = behaviour.uniform_prior_states(wm, jax.random.PRNGKey(3), batch)
  target = jax.random.normal(jax.random.PRNGKey(4), (feat_dim,))

  def reward_fn(states):
    return jnp.tanh(rssm.feature(states) @ target)

  def loss(params, dynamics_grad):
    return behaviour.actor_loss(
      params,
      wm=wm,
      wm_params=wm_params,
      actor=actor,
      critic=critic,
      critic_params=critic_params,
      start=start,
      reward_fn=reward_fn,
      scale=1.0,
      config=CONFIG,
      rng=jax.random.PRNGKey(5),
      dynamics_grad=dynamics_grad,
    )

  (value, aux), grad = jax.jit(jax.value_and_grad(lambda p: loss(p, True), has_aux=True))(actor_params)
  assert aux['states']['deter'].shape == (4, batch, 8) and aux['states']['stoch'].shape == (4, batch, 3, 4)
  assert aux['rewards'].shape == aux['returns'].shape == (3, batch)
  assert np.isfinite(float(value)) and float(optax_norm(grad)) > 0
  # Detaching the actions where they enter the dynamics leaves no path: the gradient is exactly zero.
  grad = jax.jit(jax.grad(lambda p: loss(p, False)[0]))(actor_params)
  assert float(optax_norm(grad)) == 0.0


def optax_norm(tree):
  return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(tree)))


def test_data_free_starts_shapes_and_warmup():
  wm, wm_params = world_model()

  def connector_latents(rng, batch):
    return jax.nn.one_hot(jnp.zeros((batch, 3), jnp.int32), 4)

  starts = jax.jit(
    lambda rng: behaviour.data_free_starts(
      rng,
      wm=wm,
      wm_params=wm_params,
      connector_latents=connector_latents,
      actor_policy=lambda s, r: jnp.zeros((s['deter'].shape[0], 2)),
      batch=6,
      warmup=2,
      video_prob=0.5,
    )
  )(jax.random.PRNGKey(1))
  assert starts['deter'].shape == (6, 8) and starts['stoch'].shape == (6, 3, 4)
  assert float(jnp.abs(starts['deter']).sum()) > 0  # The warm-up moved the GRU state off zero.


def test_return_scale_is_at_least_one():
  state, scale = behaviour.update_return_scale(jnp.zeros(2), jnp.linspace(0, 0.1, 50), 0.5)
  assert float(scale) == 1.0
  state, scale = behaviour.update_return_scale(jnp.zeros(2), jnp.linspace(0, 100, 101), 1.0)
  np.testing.assert_allclose(scale, 90.0, rtol=1e-4)


def test_twohot_encodes_inside_the_range_and_clips_outside():
  bins = 255
  centres = np.asarray(behaviour.twohot_bins(bins))
  y = jnp.asarray([-25.0, -20.0, -3.3, 0.0, 0.05, 7.77, 20.0, 31.0])
  w = np.asarray(behaviour.twohot(y, bins))
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
  assert ((w > 0).sum(-1) <= 2).all() and (w >= 0).all()
  np.testing.assert_allclose(w @ centres, np.clip(np.asarray(y), -20, 20), atol=1e-5)
  # The two weights sit on neighbouring centres around y.
  inside = np.asarray(y)[3]
  nz = np.flatnonzero(w[3])
  assert centres[nz[0]] <= inside <= centres[nz[-1]] and nz[-1] - nz[0] <= 1


def test_twohot_critic_starts_at_zero_and_fits_a_target():
  """A two-hot critic reads 0 at initialisation (zero logits), and a few Adam steps of `critic_loss` on one
  state move its value from 0 toward a return of 50 (symlog space makes the large target easy)."""
  import optax

  feat_dim = 8 + 3 * 4
  critic = behaviour.Critic(8, 1, bins=255)
  start = behaviour.uniform_prior_states(world_model()[0], jax.random.PRNGKey(3), 2)
  states = jax.tree.map(lambda x: jnp.stack([x] * (CONFIG.behaviour.horizon + 1)), start)
  params = critic.init(jax.random.PRNGKey(2), jnp.zeros((1, feat_dim)))['params']
  assert float(jnp.abs(critic.apply({'params': params}, rssm.feature(start))).max()) < 1e-6
  targets = jnp.full((CONFIG.behaviour.horizon, 2), 50.0)
  tx = optax.adam(3e-2)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt):
    loss, grad = jax.value_and_grad(behaviour.critic_loss)(
      params, critic=critic, states=states, targets=targets, config=CONFIG
    )
    updates, opt = tx.update(grad, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  losses = []
  for _ in range(60):
    params, opt, loss = step(params, opt)
    losses.append(float(loss))
  value = np.asarray(critic.apply({'params': params}, rssm.feature(start)))
  assert losses[-1] < 0.5 * losses[0]
  np.testing.assert_allclose(value, 50.0, rtol=0.2)
