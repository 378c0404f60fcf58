"""Q-network heads for the value-based agents: plain, dueling and distributional (C51), over any torso.

The agents in `common.rl.dqn` call the network on ONE observation at a time (they `jax.vmap` it over batches,
as Dopamine does), so a torso that tokenizes its input (SoftMoE) never mixes samples. A network maps one
observation to Q-values `[A]`, or to atom logits `[A, K]` for a distributional agent (`num_atoms = K > 1`).
Any Flax module with that contract works; `QNetwork` builds one from a torso (encoder and penultimate layers,
e.g. `common.nn.MLP(..., activate_final=True)` or a CNN followed by a SoftMoE block) and a head.
"""

from __future__ import annotations

import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ['NATURE_CNN_LAYERS', 'MatmulConv', 'NOISE', 'NoisyDense', 'QNetwork']

NOISE = 'noise'
"""The Flax RNG stream that turns on the noise of `NoisyDense` (`apply(..., rngs={NOISE: key})`)."""

NATURE_CNN_LAYERS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
"""Dopamine's Nature CNN for 84x84 Atari frames, (features, kernel, stride) per layer; with SAME padding the
feature map is 11x11x64 (research note rl_value_based.md §6 item 7)."""


class QNetwork(nn.Module):
  """`torso` followed by a linear Q head: plain, dueling (Wang et al., 2016), and/or C51 atoms.

  Output: `[A]` Q-values when `num_atoms == 1`, else `[A, num_atoms]` atom logits (the agent applies the
  softmax and the support). The dueling head combines a value stream and an advantage stream as
  `V + A - mean_a A` (per atom, as Dopamine's Rainbow does). With `noisy=True` the head's layers are
  `NoisyDense` (NoisyNet, Fortunato et al., 2018): noisy when applied with a `NOISE` key, their mean
  weights without one (evaluation); the torso stays as given.

  Attributes:
    torso: maps one observation to a feature vector (its output is flattened); None uses the flattened
      observation itself.
    num_actions: number of discrete actions `A`.
    num_atoms: `K`; 1 for a scalar Q-value.
    dueling: use a dueling head.
    noisy: factorised-Gaussian noisy linear layers in the head.
    noisy_sigma0: `NoisyDense.sigma0` of the noisy head layers: 0.5 (default) is Fortunato et al.'s and
      Rainbow's; DER (van Hasselt et al., 2019) and Dopamine's JAX `NoisyNetwork` (its DER and Rainbow
      agents) use 0.1.
  """

  torso: Optional[nn.Module]
  num_actions: int
  num_atoms: int = 1
  dueling: bool = False
  noisy: bool = False
  noisy_sigma0: float = 0.5

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    """Q-values `[A]` (or logits `[A, K]`) of one observation."""
    x = obs if self.torso is None else self.torso(obs)
    x = jnp.reshape(x, (-1,)).astype(jnp.float32)
    shape = (self.num_actions,) if self.num_atoms == 1 else (self.num_actions, self.num_atoms)
    dense = functools.partial(NoisyDense, sigma0=self.noisy_sigma0) if self.noisy else nn.Dense
    advantage = dense(self.num_actions * self.num_atoms, name='advantage' if self.dueling else 'q')(x)
    advantage = advantage.reshape(shape)
    if not self.dueling:
      return advantage
    value = dense(self.num_atoms, name='value')(x).reshape((1,) + shape[1:])
    return value + advantage - jnp.mean(advantage, axis=0, keepdims=True)


class NoisyDense(nn.Module):
  """A linear layer with factorised Gaussian parameter noise (NoisyNet, Fortunato et al., 2018, §3).

  `y = (mu_w + sigma_w * (f(e_in) f(e_out)^T)) x + mu_b + sigma_b * f(e_out)`, `f(e) = sign(e) sqrt(|e|)`,
  with `e_in ~ N(0, I_p)` and `e_out ~ N(0, I_q)` drawn from the `NOISE` RNG stream at every call. Without
  that stream (`apply` with no `NOISE` key) the noise is off: `y = mu_w x + mu_b`, the evaluation network.
  Initialisation as in the paper's factorised case: `mu ~ U[-1/sqrt(p), 1/sqrt(p)]`, `sigma = sigma0 /
  sqrt(p)` for `p` inputs.

  Attributes:
    features: outputs `q`.
    sigma0: the noise scale of the initialisation (0.5 in the paper).
  """

  features: int
  sigma0: float = 0.5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    p, q = x.shape[-1], self.features
    bound = 1.0 / float(p) ** 0.5

    def uniform(key, shape, dtype=jnp.float32):
      return jax.random.uniform(key, shape, dtype, -bound, bound)

    sigma = nn.initializers.constant(self.sigma0 * bound)
    mu_w = self.param('mu_kernel', uniform, (p, q))
    mu_b = self.param('mu_bias', uniform, (q,))
    sigma_w = self.param('sigma_kernel', sigma, (p, q))
    sigma_b = self.param('sigma_bias', sigma, (q,))
    if not self.has_rng(NOISE):
      return x @ mu_w + mu_b
    key_in, key_out = jax.random.split(self.make_rng(NOISE))

    def f(e):
      return jnp.sign(e) * jnp.sqrt(jnp.abs(e))

    e_in, e_out = f(jax.random.normal(key_in, (p,))), f(jax.random.normal(key_out, (q,)))
    # (mu_w + sigma_w * outer(e_in, e_out)) x, without forming the noisy matrix.
    return x @ mu_w + ((x * e_in) @ sigma_w) * e_out + mu_b + sigma_b * e_out


class MatmulConv(nn.Module):
  """A SAME convolution of one ``[H, W, C]`` image (or of each of ``[B, H, W, C]``) written as patches times a
  matrix: the same parameters (``kernel`` ``[k, k, C, F]``, ``bias`` ``[F]``), initialisation and output as
  ``nn.Conv(F, (k, k), strides=(s, s), padding='SAME')``.

  Why: the agents ``vmap`` the network over seeds and hyper-parameters (~100 runs in a sweep), each with its
  own parameters; XLA turns a vmapped ``nn.Conv`` into a grouped convolution (one group per run), which cuDNN
  runs slowly (about 4x slower per env step on an H200, ``rl_hparams/README.md``) and the CPU slower still,
  while the patch matrix product becomes one batched matmul. Stride 1 gathers the k*k shifted copies by
  slicing (tiny on MinAtar's 10x10 frames); other strides use ``lax.conv_general_dilated_patches``, which has
  no parameters, so vmapping it only grows its batch.
  """

  features: int
  kernel: int = 3
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, c, f = self.kernel, x.shape[-1], self.features
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (k, k, c, f), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (f,), jnp.float32)

    def one(image):
      if self.stride == 1:
        lo = (k - 1) // 2  # SAME padding, as nn.Conv (the extra row/column goes after for even k).
        padded = jnp.pad(image, ((lo, k - 1 - lo), (lo, k - 1 - lo), (0, 0)))
        h, w = image.shape[0], image.shape[1]
        patches = jnp.stack([padded[i : i + h, j : j + w] for i in range(k) for j in range(k)], axis=2)
        return patches.reshape(h, w, k * k * c) @ kernel.reshape(k * k * c, f) + bias
      patches = jax.lax.conv_general_dilated_patches(
        image[None], (k, k), (self.stride, self.stride), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
      )[0]  # Features ordered (C, kh, kw).
      return patches @ jnp.transpose(kernel, (2, 0, 1, 3)).reshape(c * k * k, f) + bias

    return jax.vmap(one)(x) if x.ndim == 4 else one(x)  # [B, H, W, C] (common.nn.ImpalaCNN's) or one image.
