"""WM-CLIP, GenRL's model-based baseline (arXiv 2406.18043; research note section 2.7, recalled, not checked
against the paper): the same world model with a learned head from its latent to the VLM's embedding space,
and a behaviour reward that is a cosine in that space. The official code (`mazpie/genrl@4cd8394`) has no
WM-CLIP, so the details below are ours.

Head: an MLP f_psi from the world model's feature [deter, flattened stoch] (`rssm.feature`, the actor's input)
to R^E (Linear-LayerNorm-SiLU x `layers`, then Linear), trained after the world model, which stays frozen, on
the posterior features of replay sequences:

    L(psi) = mean over t >= n - 1 of  1 - cos(f_psi(sg(feat_t)), e_t)
    e_t = normalize(mean_{k = t-n+1..t} phi(x_k))   the frozen VLM's video embedding of the n = vlm.n_frames
                                                   frames ending at step t (phi: its frame encoder)

The window ends at t, so the target holds nothing the latent at t cannot know (the official data stores per
step the embedding of the 8-frame window ending there); the first n - 1 steps of a sequence have no full
window and are left out, which also skips the posterior's first steps from a zero state. The loss is the
aligner's (1 - cos against a unit target): the reward reads only the direction of f_psi.

Reward in imagination: r_t = cos(f_psi(feat(s_t)), e_prompt), the prompt's VLM embedding as it is (text, or a
video prompt's), without the aligner: the VLM was trained to compare text with video embeddings by this very
cosine, as the VLM-reward baseline does on decoded frames. Unlike that baseline nothing is decoded and no
gradient passes through the VLM: the actor's gradient flows through the head and the imagined dynamics only.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from world_models import behaviour
from world_models import reward as reward_lib
from world_models.vlm import normalize


class EmbeddingHead(nn.Module):
  """f_psi: feature (..., F) -> predicted VLM embedding (..., embed_dim), not normalised."""

  hidden: int
  layers: int
  embed_dim: int

  @nn.compact
  def __call__(self, feat):
    x = behaviour.hidden_layers(feat, self.hidden, self.layers)  # Before the output layer: Dense_0.. first.
    return nn.Dense(self.embed_dim)(x)


def window_embeddings(frame_features, n_frames):
  """Time-major frame features (T, ..., E) of the VLM's frame encoder -> the video embedding of every window
  of `n_frames` frames ending at step t = n_frames - 1 .. T - 1: (T - n_frames + 1, ..., E), unit vectors
  (`VideoLanguageModel.video` of those frames: their features averaged, then normalised)."""
  steps = frame_features.shape[0]
  windows = jnp.arange(steps - n_frames + 1)[:, None] + jnp.arange(n_frames)[None, :]
  return normalize(jnp.mean(frame_features[windows], 1))


def head_loss(head, params, feat, targets):
  """mean(1 - cos(f_psi(feat), target)) over every leading axis; feat (..., F), targets (..., E)."""
  return jnp.mean(1.0 - reward_lib.cosine(head.apply({'params': params}, feat), targets))


def reward(head, params, feat, prompt_embed):
  """r = cos(f_psi(feat), e_prompt): feat (..., F), prompt_embed (E,) -> (...)."""
  return reward_lib.cosine(head.apply({'params': params}, feat), prompt_embed)
