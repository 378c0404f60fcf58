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
