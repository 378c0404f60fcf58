"""Connector: the KL target is stop-gradiented; imagination shapes."""

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from world_models import connector as connector_lib

CONFIG = ConfigDict(
  {'wm': {'deter': 8, 'hidden': 8, 'stoch': 3, 'classes': 4, 'unimix': 0.01}, 'vlm': {'embed_dim': 6}}
)


def test_connector_target_is_stop_gradiented_and_imagine_shapes():
  conn = connector_lib.make_connector(CONFIG)
  time, batch = 4, 2
  params = jax.jit(conn.init)(jax.random.PRNGKey(0), jnp.zeros((batch, 6)))['params']
  post_logits = jax.random.normal(jax.random.PRNGKey(1), (time, batch, 3, 4))
  post_stoch = jax.nn.one_hot(jnp.argmax(post_logits, -1), 4)
  embeds = jax.random.normal(jax.random.PRNGKey(2), (time, batch, 6))

  def loss(params, stoch, logits):
    return connector_lib.connector_loss(conn, params, stoch, logits, embeds)[0]

  (value, (g_params, g_stoch, g_logits)) = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))(
    params, post_stoch, post_logits
  )
  assert float(jnp.abs(g_stoch).max()) == 0.0 and float(jnp.abs(g_logits).max()) == 0.0
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_params)) > 0
  value = float(value)
  assert np.isfinite(value) and value >= 0
  stoch = jax.jit(lambda p: connector_lib.imagine(conn, p, embeds))(params)
  assert stoch.shape == (time, batch, 3, 4)
  np.testing.assert_allclose(stoch.sum(-1), 1.0, rtol=1e-6)


def test_connector_kl_puts_the_connector_first_as_the_paper_and_official_code():
  """Paper: L_conn = sum_t KL(p_conn(s_t | s_{t-1}, e) || sg(q(s_t | x_t))); official `connector_kl: forward:
  True` in a DreamerV2-style `kl_loss` is the same. 'posterior_first' is the earlier (reversed) loss."""
  from world_models import rssm

  conn = connector_lib.make_connector(CONFIG)
  time, batch = 3, 2
  params = jax.jit(conn.init)(jax.random.PRNGKey(0), jnp.zeros((batch, 6)))['params']
  post_logits = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (time, batch, 3, 4))
  post_stoch = jax.nn.one_hot(jnp.argmax(post_logits, -1), 4)
  embeds = jax.random.normal(jax.random.PRNGKey(2), (time, batch, 6))
  # The connector's logits by hand: initial state, then GRU steps from the posterior stoch at t - 1.
  deter, logits = conn.apply({'params': params}, embeds[0], method=connector_lib.Connector.initial)
  conn_logits = [logits]
  for t in range(1, time):
    deter, logits = conn.apply(
      {'params': params}, deter, post_stoch[t - 1], embeds[t], method=connector_lib.Connector.step
    )
    conn_logits.append(logits)
  conn_logits = jnp.stack(conn_logits)
  paper = float(jnp.mean(rssm.categorical_kl(conn_logits, post_logits)))
  reverse = float(jnp.mean(rssm.categorical_kl(post_logits, conn_logits)))
  assert abs(paper - reverse) > 1e-2  # The two directions differ on these inputs.

  def loss(**kw):
    return float(connector_lib.connector_loss(conn, params, post_stoch, post_logits, embeds, **kw)[0])

  np.testing.assert_allclose(loss(), paper, rtol=1e-5)
  np.testing.assert_allclose(loss(direction='posterior_first'), reverse, rtol=1e-5)
  # Either way no gradient reaches the (detached) posterior.
  grad = jax.grad(
    lambda lg: connector_lib.connector_loss(
      conn, params, post_stoch, lg, embeds, direction='posterior_first'
    )[0]
  )(post_logits)
  assert float(jnp.abs(grad).max()) == 0.0
