"""RSSM: scan against a Python loop, shapes, KL balancing and free bits on hand values, symlog."""

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from world_models import rssm

CONFIG = ConfigDict(
  {
    'env': {'image_size': 16},
    'wm': {
      'deter': 8,
      'hidden': 8,
      'stoch': 3,
      'classes': 4,
      'depth': 4,
      'unimix': 0.01,
      'single_obs_posterior': False,
    },
  }
)


def test_symlog_round_trip():
  x = jnp.array([-1e4, -3.0, -0.5, 0.0, 0.2, 7.0, 1e5])
  np.testing.assert_allclose(rssm.symexp(rssm.symlog(x)), x, rtol=1e-5)
  assert float(rssm.symlog(jnp.e - 1)) == 1.0


def test_kl_loss_free_bits_and_balance_on_hand_values():
  # Two groups of two classes: post = (0.9, 0.1) twice, prior = (0.5, 0.5) twice.
  post = jnp.log(jnp.array([[[0.9, 0.1], [0.9, 0.1]]]))
  prior = jnp.log(jnp.array([[[0.5, 0.5], [0.5, 0.5]]]))
  kl = 2 * (0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5))  # 0.736 nats
  np.testing.assert_allclose(rssm.categorical_kl(post, prior), [kl], rtol=1e-5)
  loss, raw = rssm.kl_loss(post, prior, free=0.0, dyn_scale=0.51, rep_scale=0.09)
  np.testing.assert_allclose([loss, raw], [0.6 * kl, kl], rtol=1e-5)
  # Under free bits the loss is the constant 0.6 * free and no gradient flows.
  loss, _ = rssm.kl_loss(post, prior, free=1.0, dyn_scale=0.51, rep_scale=0.09)
  np.testing.assert_allclose(loss, 0.6, rtol=1e-6)
  grads = jax.grad(lambda a, b: rssm.kl_loss(a, b, free=1.0, dyn_scale=0.51, rep_scale=0.09)[0], (0, 1))(
    post, prior
  )
  assert all(float(jnp.abs(g).max()) == 0.0 for g in grads)
  # Above free bits: the dyn term trains only the prior, the rep term only the posterior.
  g_post, g_prior = jax.grad(
    lambda a, b: rssm.kl_loss(a, b, free=0.0, dyn_scale=1.0, rep_scale=0.0)[0], (0, 1)
  )(post, prior)
  assert float(jnp.abs(g_post).max()) == 0.0 and float(jnp.abs(g_prior).max()) > 0
  g_post, g_prior = jax.grad(
    lambda a, b: rssm.kl_loss(a, b, free=0.0, dyn_scale=0.0, rep_scale=1.0)[0], (0, 1)
  )(post, prior)
  assert float(jnp.abs(g_prior).max()) == 0.0 and float(jnp.abs(g_post).max()) > 0


def test_unimix_and_straight_through():
  logits = rssm.unimix_logits(jnp.array([[100.0, 0.0, 0.0, 0.0]]), 0.01)
  probs = jnp.exp(logits)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
  assert float(probs.min()) >= 0.01 / 4 - 1e-7
  sample = rssm.sample_stoch(jax.random.PRNGKey(0), logits)
  np.testing.assert_allclose(sample.sum(-1), 1.0, rtol=1e-6)
  grad = jax.grad(lambda l: jnp.sum(rssm.sample_stoch(jax.random.PRNGKey(0), l) * jnp.arange(4.0)))(logits)
  assert float(jnp.abs(grad).max()) > 0  # Straight-through: gradients reach the logits.


def test_observe_scan_equals_python_loop_and_shapes():
  wm = rssm.make_world_model(CONFIG)
  time, batch = 5, 2
  frames = jax.random.uniform(jax.random.PRNGKey(1), (time, batch, 16, 16, 3))
  actions = jax.random.uniform(jax.random.PRNGKey(2), (time, batch, 2), minval=-1, maxval=1)
  params = jax.jit(wm.init)(jax.random.PRNGKey(0), frames[0], actions[0])['params']
  embeds = jax.jit(lambda p, f: wm.apply({'params': p}, f, method=rssm.WorldModel.encode))(params, frames)
  rng = jax.random.PRNGKey(3)
  posts, priors = jax.jit(lambda p, e, a: rssm.observe(wm, p, e, a, rng))(params, embeds, actions)
  assert posts['deter'].shape == (time, batch, 8)
  assert posts['stoch'].shape == priors.shape == (time, batch, 3, 4)
  state = wm.apply({'params': params}, batch, method=rssm.WorldModel.initial)
  for t in range(time):
    action = jnp.zeros_like(actions[0]) if t == 0 else actions[t]
    state, prior = wm.apply(
      {'params': params},
      state,
      action,
      embeds[t],
      jax.random.fold_in(rng, t),
      method=rssm.WorldModel.obs_step,
    )
    np.testing.assert_allclose(state['deter'], posts['deter'][t], atol=1e-5)
    np.testing.assert_allclose(state['stoch'], posts['stoch'][t], atol=1e-5)
    np.testing.assert_allclose(prior, priors[t], atol=1e-5)
  recon, proj = jax.jit(
    lambda p, s: (
      wm.apply({'params': p}, s, method=rssm.WorldModel.decode),
      wm.apply({'params': p}, s, method=rssm.WorldModel.project),
    )
  )(params, posts['stoch'])
  assert recon.shape == frames.shape and proj.shape[:2] == (time, batch)
