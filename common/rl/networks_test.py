"""Shapes and the dueling identity of `QNetwork`; `MatmulConv` equals `nn.Conv`."""

import flax.linen as nn
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


@pytest.mark.parametrize('kernel, stride, size', [(3, 1, 10), (2, 1, 10), (8, 4, 84), (4, 2, 21), (3, 1, 11)])
def test_matmul_conv_equals_flax_conv(kernel, stride, size):
  x = jax.random.normal(jax.random.key(0), (size, size, 4))
  conv = networks.MatmulConv(16, kernel, stride)
  params = conv.init(jax.random.key(1), x)
  flax_conv = nn.Conv(16, (kernel, kernel), strides=(stride, stride), padding='SAME')
  out = conv.apply(params, x)
  expected = flax_conv.apply(params, x)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  # Same parameter shapes as nn.Conv, so checkpoints and parameter counts are interchangeable.
  flax_params = flax_conv.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, flax_params)


def test_noisy_dense_is_factorised_and_off_without_a_key():
  """NoisyDense: the mean layer without a `NOISE` key; with one, `W = mu + sigma * outer(f(e_in), f(e_out))`
  (rank one in the noise), a function of the key only."""
  p, q = 5, 3
  layer = networks.NoisyDense(q)
  params = layer.init(jax.random.key(0), jnp.ones((p,)))
  w = params['params']
  assert np.all(np.abs(w['mu_kernel']) <= 1 / np.sqrt(p)) and np.all(np.abs(w['mu_bias']) <= 1 / np.sqrt(p))
  np.testing.assert_allclose(w['sigma_kernel'], 0.5 / np.sqrt(p))
  x = jax.random.normal(jax.random.key(1), (p,))
  np.testing.assert_allclose(layer.apply(params, x), x @ w['mu_kernel'] + w['mu_bias'], rtol=1e-6)

  def noisy(key, inputs):
    return layer.apply(params, inputs, rngs={networks.NOISE: key})

  key = jax.random.key(2)
  bias = noisy(key, jnp.zeros((p,)))
  kernel = jax.vmap(lambda row: noisy(key, row))(jnp.eye(p)) - bias  # Row i: input unit i.
  noise = (kernel - w['mu_kernel']) / w['sigma_kernel']
  assert np.linalg.matrix_rank(np.asarray(noise), tol=1e-4) == 1
  np.testing.assert_array_equal(noisy(key, x), noisy(key, x))
  assert not np.allclose(noisy(key, x), noisy(jax.random.key(3), x))


def test_noisy_q_network_head():
  """`noisy=True` swaps the head's Dense layers for NoisyDense; the default keeps the plain parameters."""
  torso = common_nn.MLP((8,), activate_final=True)
  obs = jnp.ones((4,))
  plain = networks.QNetwork(torso, num_actions=3, num_atoms=5, dueling=True).init(jax.random.key(0), obs)
  assert set(plain['params']['value']) == {'kernel', 'bias'}
  net = networks.QNetwork(torso, num_actions=3, num_atoms=5, dueling=True, noisy=True)
  params = net.init(jax.random.key(0), obs)
  assert set(params['params']['value']) == {'mu_kernel', 'mu_bias', 'sigma_kernel', 'sigma_bias'}
  assert net.apply(params, obs, rngs={networks.NOISE: jax.random.key(1)}).shape == (3, 5)


def test_noisy_q_network_sigma0():
  """`noisy_sigma0` sets the head's initial noise scale, sigma = sigma0 / sqrt(fan-in); the default stays
  Fortunato et al.'s 0.5 (DER and Dopamine's NoisyNetwork use 0.1)."""
  torso = common_nn.MLP((8,), activate_final=True)
  obs = jnp.ones((4,))
  for sigma0, kwargs in ((0.5, {}), (0.1, {'noisy_sigma0': 0.1})):
    net = networks.QNetwork(torso, num_actions=3, num_atoms=5, dueling=True, noisy=True, **kwargs)
    params = net.init(jax.random.key(0), obs)['params']
    for layer in ('value', 'advantage'):
      np.testing.assert_allclose(params[layer]['sigma_kernel'], sigma0 / np.sqrt(8))
      np.testing.assert_allclose(params[layer]['sigma_bias'], sigma0 / np.sqrt(8))
