"""The MinAtar value network of the experiment: conv encoder -> penultimate variant, as a `QNetwork` torso.

Research note §5 (``../shared/research/rl_value_based.md``): ``Conv(16, 3x3, SAME) -> ReLU`` repeated
``num_layers`` times (2 in the note; the MinAtar DQN baseline has one 3x3 conv, VALID there), giving a
``[10, 10, 16]`` feature map on MinAtar's 10x10 frames, then one of :data:`rl_softmoe.softmoe.VARIANTS`
(flatten -> Dense(H), or tokens -> SoftMoE) and the linear Q head of :class:`common.rl.networks.QNetwork`.

The agents of :mod:`common.rl.dqn` apply the network to ONE observation; the torso adds and removes the
batch axis the penultimate layer expects, so tokens of different samples never mix.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.errors import ConfigError
from common.rl import networks
from rl_softmoe import softmoe


class ConvEncoder(nn.Module):
  """``num_layers`` x (Conv(``features``, ``kernel`` x ``kernel``, SAME) -> ReLU) on one ``[H, W, C]`` frame.

  Attributes:
    features: Output channels of every conv layer.
    num_layers: Number of conv layers.
    kernel: Square kernel size.
  """

  features: int = 16
  num_layers: int = 2
  kernel: int = 3

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    """``[H, W, C]`` -> ``[H, W, features]``."""
    x = obs.astype(jnp.float32)
    for i in range(self.num_layers):
      # nn.Conv's function and parameters, as a patch matmul: vmapped over seeds, nn.Conv would become a
      # grouped convolution, about 4x slower on an H200 (rl_hparams/README.md, Throughput).
      x = networks.MatmulConv(self.features, self.kernel, name=f'conv{i}')(x)
      x = nn.relu(x)
    return x


class Torso(nn.Module):
  """Encoder then penultimate layer, for one observation: ``[H, W, C]`` -> ``[F]``.

  Attributes:
    encoder: Maps ``[H, W, C]`` to a feature map ``[h, w, c]``.
    penultimate: A :class:`rl_softmoe.softmoe.Penultimate` (``[B, h, w, c]`` -> ``[B, F]``).
  """

  encoder: nn.Module
  penultimate: nn.Module

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    features = self.encoder(obs)
    return self.penultimate(features[None])[0]


def feature_shape(obs_shape: Sequence[int], features: int = 16) -> Tuple[int, int, int]:
  """The encoder's per-sample feature map for frames of ``obs_shape`` (SAME padding keeps ``H, W``)."""
  if len(obs_shape) != 3:
    raise ConfigError(f'the MinAtar encoder needs [H, W, C] observations, got shape {tuple(obs_shape)}')
  return (int(obs_shape[0]), int(obs_shape[1]), int(features))


def make_network(
  variant: str,
  obs_shape: Sequence[int],
  num_actions: int,
  *,
  conv_features: int = 16,
  conv_layers: int = 2,
  hidden: int = 128,
  scale: int = 4,
  penultimate_options: Optional[Mapping[str, Any]] = None,
) -> networks.QNetwork:
  """The Q-network of ``variant`` (a name or id V0-V6) for frames ``obs_shape`` and ``num_actions``.

  The variant is checked against the encoder's feature map here (pure Python, before any tracing).
  """
  if conv_layers < 1 or conv_features < 1:
    raise ConfigError(f'conv_layers and conv_features must be >= 1, got {conv_layers}, {conv_features}')
  shape = feature_shape(obs_shape, conv_features)
  pen = softmoe.penultimate(
    variant, hidden=hidden, scale=scale, feature_shape=shape, **dict(penultimate_options or {})
  )
  torso = Torso(encoder=ConvEncoder(features=conv_features, num_layers=conv_layers), penultimate=pen)
  return networks.QNetwork(torso=torso, num_actions=num_actions)
