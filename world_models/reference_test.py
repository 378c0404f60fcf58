"""The plain-JAX reference computes what the project's Flax model does: same parameter names and shapes, same
loss and gradients, same Adam update as optax's chain, same imagined rollout (tiny sizes)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from world_models import behaviour
from world_models import reference
from world_models import rssm
from world_models import train
from world_models.configs import default


def tiny_config(single_obs_posterior=True):
  c = default.get_config('smoke')
  c.env.image_size = 16
  c.wm.update(deter=8, hidden=8, stoch=3, classes=4, depth=4, single_obs_posterior=single_obs_posterior)
  c.behaviour.update(hidden=8, layers=2, horizon=3)
  return c


@functools.cache
def _model():
  """The tiny config, its parts and parameters (the reference's init: the same names and shapes as Flax's,
  checked below, and much cheaper to compile)."""
  c = tiny_config()
  return c, train.Parts(c), jax.jit(lambda r: reference.init(c, 2, r))(jax.random.PRNGKey(0))


def _batch(c, seed, steps=4, batch=2):
  rng = np.random.default_rng(seed)
  size = c.env.image_size
  return {
    'frames': jnp.asarray(rng.uniform(size=(steps, batch, size, size, 3)), jnp.float32),
    'actions': jnp.asarray(rng.uniform(-1, 1, size=(steps, batch, 2)), jnp.float32),
  }


def _close(a, b, rtol=1e-4, atol=1e-5):
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol), a, b
  )


@pytest.mark.parametrize('single', [True, False])
def test_same_parameter_names_and_shapes_as_flax(single):
  c = tiny_config(single)
  wm = train.Parts(c).wm
  size = c.env.image_size
  flax_shapes = jax.eval_shape(
    wm.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), jnp.zeros((1, 2))
  )
  ours = jax.eval_shape(lambda r: reference.init(c, 2, r), jax.random.PRNGKey(1))
  assert jax.tree.structure(ours) == jax.tree.structure(flax_shapes['params'])
  assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, flax_shapes['params'])


def test_loss_and_gradients_equal_the_project():
  c, parts, params = _model()
  batch, rng = _batch(c, 2), jax.random.PRNGKey(3)

  @jax.jit
  def both(params):
    project = jax.value_and_grad(lambda p: train.world_model_loss(p, parts, batch, rng)[0])(params)
    return project, jax.value_and_grad(lambda p: reference.world_model_loss(p, c, batch, rng))(params)

  (loss, grads), (ref_loss, ref_grads) = both(params)
  np.testing.assert_allclose(ref_loss, loss, rtol=1e-5)
  _close(ref_grads, grads, rtol=1e-3, atol=1e-4)


def test_adam_update_equals_optax_chain():
  c, parts, _ = _model()
  rng = np.random.default_rng(0)
  params = {'a': {'kernel': jnp.asarray(rng.normal(size=(3, 4)))}, 'b': jnp.asarray(rng.normal(size=(5,)))}
  grads = jax.tree.map(lambda x: 0.3 + 0.5 * x, params)
  w = c.wm

  @jax.jit
  def both(params, grads):
    opt, ref_opt, new, ref = parts.wm_tx.init(params), reference.adam_init(params), params, params
    for scale in (1.0, 5000.0, 2.0):  # The second step is clipped (global norm > wm.clip).
      g = jax.tree.map(lambda x: scale * x, grads)
      updates, opt = parts.wm_tx.update(g, opt, new)
      new = optax.apply_updates(new, updates)
      ref, ref_opt = reference.adam_update(ref, g, ref_opt, lr=w.lr, eps=w.eps, clip=w.clip)
    return new, ref

  new, ref = both(params, grads)
  _close(ref, new, rtol=1e-5, atol=1e-6)


def test_imagination_equals_the_project():
  c, parts, params = _model()
  feat = jnp.zeros((1, parts.feat_dim))
  actor_params = jax.jit(parts.actor.init)(jax.random.PRNGKey(4), feat)['params']
  n = 6
  rng_d, rng_s = jax.random.split(jax.random.PRNGKey(5))
  stoch = jax.nn.one_hot(jax.random.randint(rng_s, (n, c.wm.stoch), 0, c.wm.classes), c.wm.classes)
  start = {
    'deter': jax.random.normal(rng_d, (n, c.wm.deter)),
    'stoch': stoch,
    'logits': jnp.zeros_like(stoch),
  }
  rng = jax.random.PRNGKey(6)

  @jax.jit
  def both(params, actor_params, start):
    states, _ = behaviour.imagine(parts.wm, params, parts.actor, actor_params, start, 3, rng)
    frames = parts.wm.apply({'params': params}, states['stoch'], method=rssm.WorldModel.decode)
    ref = reference.imagine(c, params, actor_params, start, 3, rng)
    return states, frames, ref, reference.decode(c, params, ref['stoch'])

  states, frames, ref, ref_frames = both(params, actor_params, start)
  _close(ref, states)
  _close(ref_frames, frames)
