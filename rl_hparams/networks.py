"""The Q-network of the sweeps, with the network hyper-parameters as options: activation, normalisation,
width and depth.

For MinAtar's ``[10, 10, C]`` frames (Young & Tian, 2019): ``conv_layers`` x Conv(16, 3x3, SAME) and ``depth``
x Dense(``width``), each followed by the normalisation (none, LayerNorm or RMSNorm over the features) and the
activation, then the dueling (and, for DER, C51) head of ``common.rl.networks.QNetwork``. For Atari frames
``[84, 84, 4]`` the torso is Dopamine's Nature CNN (32 8x8/4, 64 4x4/2, 64 3x3/1) with the same dense part
(width 512 there). The network sees ONE observation (the agent vmaps it), so BatchNorm, which needs a batch
and running statistics, is not offered.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.errors import ConfigError
from common.rl import networks

ACTIVATIONS = {
  'relu': nn.relu,
  'gelu': nn.gelu,
  'silu': nn.silu,
  'tanh': jnp.tanh,
  'elu': nn.elu,
  'leaky_relu': nn.leaky_relu,
  'sigmoid': nn.sigmoid,
}
NORMALIZATIONS = ('none', 'layer_norm', 'rms_norm')


class Torso(nn.Module):
  """Conv layers then dense layers, each followed by the normalisation and the activation.

  Attributes:
    conv: ``(features, kernel, stride)`` of each conv layer (SAME padding).
    width: units of each dense layer.
    depth: number of dense layers.
    activation: a key of ``ACTIVATIONS``.
    normalization: 'none', 'layer_norm' or 'rms_norm' (over the last axis, after each layer).
    conv_impl: 'matmul' (``common.rl.networks.MatmulConv``) or 'xla' (``nn.Conv``); the same function.
  """

  conv: Sequence[Sequence[int]] = ((16, 3, 1),)
  width: int = 128
  depth: int = 1
  activation: str = 'relu'
  normalization: str = 'none'
  conv_impl: str = 'matmul'

  def _norm(self, x, name):
    if self.normalization == 'layer_norm':
      return nn.LayerNorm(name=name)(x)
    if self.normalization == 'rms_norm':
      return nn.RMSNorm(name=name)(x)
    return x

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    act = ACTIVATIONS[self.activation]
    x = obs.astype(jnp.float32)
    if obs.dtype == jnp.uint8:  # Atari pixels, scaled to [0, 1] as Dopamine does.
      x = x / 255.0
    for i, (features, kernel, stride) in enumerate(self.conv):
      if self.conv_impl == 'matmul':
        x = networks.MatmulConv(features, kernel, stride, name=f'conv{i}')(x)
      else:
        x = nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding='SAME', name=f'conv{i}')(x)
      x = act(self._norm(x, f'conv_norm{i}'))
    x = x.reshape(-1)
    for i in range(self.depth):
      x = act(self._norm(nn.Dense(self.width, name=f'dense{i}')(x), f'dense_norm{i}'))
    return x


MINATAR_CNN = ((16, 3, 1),)


def make_network(
  obs_shape: Sequence[int],
  num_actions: int,
  *,
  num_atoms: int = 1,
  activation: str = 'relu',
  normalization: str = 'none',
  width: int = 128,
  depth: int = 1,
  conv_impl: str = 'matmul',
) -> networks.QNetwork:
  """The dueling Q-network for frames ``obs_shape``: the MinAtar torso for 10x10 frames, the Nature CNN for
  larger ones (Atari 84x84)."""
  if activation not in ACTIVATIONS:
    raise ConfigError(f'unknown activation {activation!r}: choose from {", ".join(ACTIVATIONS)}')
  if normalization not in NORMALIZATIONS:
    raise ConfigError(f'unknown normalization {normalization!r}: choose from {", ".join(NORMALIZATIONS)}')
  if len(obs_shape) != 3:
    raise ConfigError(f'the Q-network needs [H, W, C] frames, got shape {tuple(obs_shape)}')
  if width < 1 or depth < 1:
    raise ConfigError(f'width and depth must be >= 1, got {width} and {depth}')
  if conv_impl not in ('matmul', 'xla'):
    raise ConfigError(f'conv_impl must be "matmul" or "xla", got {conv_impl!r}')
  conv = MINATAR_CNN if max(obs_shape[:2]) <= 16 else networks.NATURE_CNN_LAYERS
  torso = Torso(
    conv=conv,
    width=width,
    depth=depth,
    activation=activation,
    normalization=normalization,
    conv_impl=conv_impl,
  )
  return networks.QNetwork(torso=torso, num_actions=num_actions, num_atoms=num_atoms, dueling=True)
