"""The value network of the experiments: conv encoder -> penultimate variant, as a `QNetwork` torso.

Research note §5 (``../shared/research/rl_value_based.md``): ``Conv(16, 3x3, SAME) -> ReLU`` repeated
``num_layers`` times (2 in the note; the MinAtar DQN baseline has one 3x3 conv, VALID there), giving a
``[10, 10, 16]`` feature map on MinAtar's 10x10 frames, then one of :data:`rl_softmoe.softmoe.VARIANTS`
(flatten -> Dense(H), or tokens -> SoftMoE) and the linear Q head of :class:`common.rl.networks.QNetwork`.
On 84x84 Atari frames the encoder is Dopamine's Nature CNN (``encoder='nature'``, an 11x11x64 map) or the
Impala CNN (``encoder='impala'``, an 11x11x32 map, the paper's Rainbow-Impala).

The agents of :mod:`common.rl.dqn` apply the network to ONE observation; the torso adds and removes the
batch axis the penultimate layer expects, so tokens of different samples never mix.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from common import nn as common_nn
from common.errors import ConfigError
from common.rl import networks
from rl_softmoe import softmoe


def encoder_layers(name: str, conv_features: int = 16, conv_layers: int = 2):
  """The conv layers ((features, kernel, stride), ...) of encoder ``name``: 'minatar' (``conv_layers`` x
  Conv(``conv_features``, 3x3)), 'nature' or 'impala' (its stacks; both ignore the two sizes)."""
  if name == 'minatar':
    if conv_layers < 1 or conv_features < 1:
      raise ConfigError(f'conv_layers and conv_features must be >= 1, got {conv_layers}, {conv_features}')
    return ((conv_features, 3, 1),) * conv_layers
  if name == 'nature':  # An 11x11x64 map on 84x84 frames: 121 PerConv tokens.
    return networks.NATURE_CNN_LAYERS
  if name == 'impala':  # An 11x11x32 map on 84x84 frames: 121 PerConv tokens of 32.
    return IMPALA_LAYERS
  raise ConfigError(f'unknown encoder {name!r}: choose "minatar", "nature" or "impala"')


def _frames(obs: jax.Array) -> jax.Array:
  """Float32 frames; uint8 Atari pixels are scaled to [0, 1]."""
  x = obs.astype(jnp.float32)
  return x / 255.0 if obs.dtype == jnp.uint8 else x


IMPALA_LAYERS = ((16, 3, 2), (32, 3, 2), (32, 3, 2))
"""The Impala CNN's stacks as ``(features, kernel, stride)`` for `feature_shape`: each stack's 3x3 conv, then
a 3x3 max pool of stride 2 (the stride here) and two residual blocks (`impala_encoder`)."""


def _matmul_conv3(features: int, name: str) -> nn.Module:
  return networks.MatmulConv(features, 3, 1, name=name)


def impala_encoder(layers=IMPALA_LAYERS) -> nn.Module:
  """The Impala CNN (Espeholt et al., 2018) on one ``[H, W, C]`` frame, as the paper's Rainbow-Impala uses it
  (research note §1.1.2): `common.nn.ImpalaCNN` (per stack Conv 3x3 -> MaxPool 3x3 stride 2 -> two residual
  blocks; a final ReLU) with its convolutions as `MatmulConv` (see `ConvEncoder`). 84x84 frames give an
  11x11x32 map."""
  return common_nn.ImpalaCNN(channels=tuple(f for f, _, _ in layers), flatten=False, conv=_matmul_conv3)


class ConvEncoder(nn.Module):
  """(Conv(features, kernel x kernel, stride, SAME) -> ReLU) per layer, on one ``[H, W, C]`` frame (uint8
  Atari pixels are scaled to [0, 1]).

  Attributes:
    layers: ``(features, kernel, stride)`` per conv layer.
  """

  layers: Sequence[Tuple[int, int, int]] = ((16, 3, 1), (16, 3, 1))

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    """``[H, W, C]`` -> ``[h, w, features]``."""
    x = _frames(obs)
    for i, (features, kernel, stride) in enumerate(self.layers):
      # nn.Conv's function and parameters, as a patch matmul: vmapped over seeds, nn.Conv would become a
      # grouped convolution, about 4x slower on an H200 (rl_hparams/README.md, Throughput).
      x = networks.MatmulConv(features, kernel, stride, name=f'conv{i}')(x)
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


def feature_shape(obs_shape: Sequence[int], layers) -> Tuple[int, int, int]:
  """The encoder's per-sample feature map for frames ``obs_shape`` (SAME padding: ``ceil(H / stride)``)."""
  if len(obs_shape) != 3:
    raise ConfigError(f'the conv encoder needs [H, W, C] observations, got shape {tuple(obs_shape)}')
  h, w = int(obs_shape[0]), int(obs_shape[1])
  for _, _, stride in layers:
    h, w = -(-h // stride), -(-w // stride)
  return (h, w, int(layers[-1][0]))


def make_network(
  variant: str,
  obs_shape: Sequence[int],
  num_actions: int,
  *,
  encoder: str = 'minatar',
  conv_features: int = 16,
  conv_layers: int = 2,
  hidden: int = 128,
  scale: int = 4,
  penultimate_options: Optional[Mapping[str, Any]] = None,
  num_atoms: int = 1,
  dueling: bool = False,
  noisy: bool = False,
  noisy_sigma0: float = 0.5,
) -> networks.QNetwork:
  """The Q-network of ``variant`` (a name or id V0-V6) for frames ``obs_shape`` and ``num_actions``.

  The head is :class:`common.rl.networks.QNetwork`'s on the penultimate output: ``[A]`` Q-values, or
  ``[A, num_atoms]`` C51 logits (DER/Rainbow, with ``dueling=True``), with NoisyNet layers if ``noisy``
  (the head only: Dopamine's noisy SoftMoE experts are not reproduced) whose initial noise scale is
  ``noisy_sigma0`` (``NoisyDense.sigma0``: 0.1 in DER and Dopamine, 0.5 in Fortunato et al. and Rainbow;
  `config.der.noisy_sigma0`). The variant is checked against the
  encoder's feature map here (pure Python, before any tracing).
  """
  layers = encoder_layers(encoder, conv_features, conv_layers)
  shape = feature_shape(obs_shape, layers)
  pen = softmoe.penultimate(
    variant, hidden=hidden, scale=scale, feature_shape=shape, **dict(penultimate_options or {})
  )
  conv = impala_encoder(layers) if encoder == 'impala' else ConvEncoder(layers=layers)
  torso = Torso(encoder=conv, penultimate=pen)
  return networks.QNetwork(
    torso=torso,
    num_actions=num_actions,
    num_atoms=num_atoms,
    dueling=dueling,
    noisy=noisy,
    noisy_sigma0=noisy_sigma0,
  )
