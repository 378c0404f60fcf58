"""GenRL's aligner: a denoising MLP that maps noisy (or text) embeddings to the video-embedding region
(research note section 2.4).

Training, on video embeddings e only (no text):  e' = normalize((1 - lam) e + lam u), u a random unit vector,
lam = 0.5;  loss = 1 - cos(aligner(e'), e).  At inference a text prompt's embedding goes through the aligner,
which closes the modality gap between text and video embeddings.

The network is a small MLP U-Net: residual Linear-LayerNorm-SiLU blocks down to `hidden`, a middle block, and
an up path with skip connections, then a residual output.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from world_models.vlm import normalize


class Block(nn.Module):
  size: int

  @nn.compact
  def __call__(self, x):
    return nn.silu(nn.LayerNorm()(nn.Dense(self.size)(x)))


class Aligner(nn.Module):
  dim: int
  hidden: int
  layers: int = 2

  @nn.compact
  def __call__(self, x):
    sizes = [max(self.hidden, self.dim // 2 ** (i + 1)) for i in range(self.layers)]
    skips, h = [], x
    for size in sizes:
      h = Block(size)(h)
      skips.append(h)
    h = h + Block(sizes[-1])(h)
    for size, skip in zip(reversed(sizes), reversed(skips)):
      h = Block(size)(jnp.concatenate([h, skip], -1))
    return normalize(x + nn.Dense(self.dim)(h))


def make_aligner(config) -> Aligner:
  return Aligner(dim=config.vlm.embed_dim, hidden=config.aligner.hidden)


def add_noise(rng, embeds, lam):
  """LAFITE-style perturbation: normalize((1 - lam) e + lam u) with u uniform on the sphere."""
  u = normalize(jax.random.normal(rng, embeds.shape))
  return normalize((1 - lam) * embeds + lam * u)


def aligner_loss(model, params, embeds, rng, lam):
  noisy = add_noise(rng, embeds, lam)
  out = model.apply({'params': params}, noisy)
  return jnp.mean(1 - jnp.sum(out * normalize(embeds), -1))


def cosine_distance(a, b):
  return jnp.mean(1 - jnp.sum(normalize(a) * normalize(b), -1))
