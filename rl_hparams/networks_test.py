"""The sweep's Q-network: options change the network, both conv implementations agree, bad options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.errors import ConfigError
from rl_hparams import networks


def test_options_change_the_network_and_outputs_match_between_conv_impls():
  obs = (jax.random.uniform(jax.random.key(2), (10, 10, 4)) > 0.5).astype(jnp.float32)
  base = networks.make_network((10, 10, 4), 3, num_atoms=5)
  params = base.init(jax.random.key(0), obs)
  assert base.apply(params, obs).shape == (3, 5)
  xla = networks.make_network((10, 10, 4), 3, num_atoms=5, conv_impl='xla')
  np.testing.assert_allclose(xla.apply(params, obs), base.apply(params, obs), rtol=1e-5, atol=1e-5)
  for options in ({'width': 64}, {'depth': 2}, {'normalization': 'layer_norm'}, {'activation': 'tanh'}):
    net = networks.make_network((10, 10, 4), 3, **options)
    p = net.init(jax.random.key(0), obs)
    assert net.apply(p, obs).shape == (3,)
  sizes = {d: sum(x.size for x in jax.tree.leaves(networks.make_network((10, 10, 4), 3, depth=d).init(
    jax.random.key(0), obs))) for d in (1, 2)}  # fmt: skip
  assert sizes[2] == sizes[1] + 128 * 128 + 128


def test_bad_options():
  with pytest.raises(ConfigError, match='unknown activation'):
    networks.make_network((10, 10, 4), 3, activation='swish2')
  with pytest.raises(ConfigError, match='unknown normalization'):
    networks.make_network((10, 10, 4), 3, normalization='batch_norm')
  with pytest.raises(ConfigError, match='conv_impl'):
    networks.make_network((10, 10, 4), 3, conv_impl='cudnn')
