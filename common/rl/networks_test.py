"""Shapes and the dueling identity of `QNetwork`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import nn as common_nn
from common.rl import networks


@pytest.mark.parametrize('atoms, dueling', [(1, False), (1, True), (5, False), (5, True)])
def test_q_network_shapes(atoms, dueling):
  net = networks.QNetwork(
    common_nn.MLP((8,), activate_final=True), num_actions=3, num_atoms=atoms, dueling=dueling
  )
  obs = jnp.ones((4,))
  params = net.init(jax.random.key(0), obs)
  out = net.apply(params, obs)
  assert out.shape == ((3,) if atoms == 1 else (3, atoms))
  assert ('value' in params['params']) == dueling


def test_dueling_head_mean_advantage_is_zero():
  """Q = V + A - mean_a A, so the mean over actions of Q is the value stream."""
  net = networks.QNetwork(None, num_actions=4, dueling=True)
  obs = jnp.arange(3.0)
  params = net.init(jax.random.key(1), obs)
  value = obs @ params['params']['value']['kernel'] + params['params']['value']['bias']
  np.testing.assert_allclose(jnp.mean(net.apply(params, obs)), value[0], rtol=1e-5)
