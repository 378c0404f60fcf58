"""A tiny video-language model trained here (research note section 3.3), behind a small interface.

GenRL uses a frozen InternVideo2; offline we train our own: a frame encoder (a small CNN) whose features are
averaged over the frames of a clip, and a bag-of-words text encoder, contrastively aligned (symmetric InfoNCE
with soft targets, since captions repeat in a batch) on clips of the environment (`config.env.name`: the arm
or the stickman) drawn in its `VLM_LOOK` with rule-generated captions. After training it is frozen; the world
model never sees a caption. The tokenizer's words are the environment's `VOCAB` (`tokenizer(config)`).

Interface used by the rest of the project (any VLM with these four functions could replace it, e.g. the
in-repo CLIP of `common/clip.py` once its API is settled):
  `Tokenizer(vocab).encode(prompts)`, `init(config, rng)`, `embed_video(params, frames)`,
  `embed_text(params, tokens)`; embeddings are unit vectors of size `embed_dim`.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from common.errors import ConfigError
from world_models import env_select
from world_models import envs

VOCAB = envs.VOCAB  # The arm's words: the default tokenizer's.
MAX_WORDS = 6


class Tokenizer:
  """Whitespace word tokenizer over a fixed vocabulary; an unknown word is a one-line ConfigError."""

  def __init__(self, vocab=VOCAB, max_words: int = MAX_WORDS):
    self.vocab = tuple(vocab)
    self.index = {w: i for i, w in enumerate(self.vocab)}
    self.max_words = max_words

  def encode(self, prompts) -> np.ndarray:
    out = np.zeros((len(prompts), self.max_words), np.int32)
    for row, prompt in enumerate(prompts):
      words = prompt.lower().split()
      unknown = [w for w in words if w not in self.index]
      if unknown or not words or len(words) > self.max_words:
        raise ConfigError(
          f"prompt '{prompt}' cannot be encoded by the VLM tokenizer (unknown words {unknown}, "
          f'{len(words)} words, at most {self.max_words}): use words from {list(self.vocab[1:])}'
        )
      out[row, : len(words)] = [self.index[w] for w in words]
    return out


def tokenizer(config) -> Tokenizer:
  """The tokenizer over the words of the config's environment."""
  return Tokenizer(env_select.module(config.env.name).VOCAB)


def normalize(x, axis=-1):
  return x / (jnp.linalg.norm(x, axis=axis, keepdims=True) + 1e-6)


class FrameEncoder(nn.Module):
  width: int
  embed_dim: int

  @nn.compact
  def __call__(self, frames):  # (..., S, S, 3) in [0, 1]
    lead = frames.shape[:-3]
    x = frames.reshape((-1,) + frames.shape[-3:]) - 0.5
    for mult in (1, 2, 2):
      x = nn.silu(nn.Conv(self.width * mult, (4, 4), strides=(2, 2))(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.embed_dim)(nn.silu(nn.Dense(2 * self.width)(x)))
    return x.reshape(lead + (self.embed_dim,))


class TextEncoder(nn.Module):
  vocab_size: int
  width: int
  embed_dim: int

  @nn.compact
  def __call__(self, tokens):  # (B, W) int, 0 = padding
    mask = (tokens > 0).astype(jnp.float32)[..., None]
    words = nn.Embed(self.vocab_size, self.width)(tokens)
    pooled = jnp.sum(words * mask, -2) / jnp.maximum(jnp.sum(mask, -2), 1.0)
    return nn.Dense(self.embed_dim)(nn.silu(nn.Dense(2 * self.width)(pooled)))


class VideoLanguageModel(nn.Module):
  width: int
  embed_dim: int
  vocab_size: int = len(VOCAB)

  def setup(self):
    self.frame_encoder = FrameEncoder(self.width, self.embed_dim)
    self.text_encoder = TextEncoder(self.vocab_size, self.width, self.embed_dim)

  def video(self, frames):  # (B, F, S, S, 3) -> (B, E): frame features averaged over time.
    return normalize(jnp.mean(self.frame_encoder(frames), -2))

  def text(self, tokens):
    return normalize(self.text_encoder(tokens))

  def __call__(self, frames, tokens):
    return self.video(frames), self.text(tokens)


def make_model(config) -> VideoLanguageModel:
  vocab_size = len(env_select.module(config.env.name).VOCAB)
  return VideoLanguageModel(width=config.vlm.width, embed_dim=config.vlm.embed_dim, vocab_size=vocab_size)


def init(config, rng):
  size, n = config.env.image_size, config.vlm.n_frames
  return make_model(config).init(rng, jnp.zeros((1, n, size, size, 3)), jnp.zeros((1, MAX_WORDS), jnp.int32))[
    'params'
  ]


def check_video(frames, config):
  want = (config.vlm.n_frames, config.env.image_size, config.env.image_size, 3)
  if frames.ndim != 5 or tuple(frames.shape[1:]) != want:
    raise ConfigError(
      f'video prompt has shape {tuple(frames.shape)}; expected (batch,) + {want} frames in [0, 1]'
    )


def video_file(directory: str, prompt: str) -> str:
  """The file of `prompt`'s video prompt in `directory`: its words joined by '_', e.g. 'arm_folded.gif'."""
  return os.path.join(directory, '_'.join(prompt.split()) + '.gif')


def read_video(path: str, n_frames: int, size: int) -> np.ndarray:
  """A video prompt from an animated image file (GIF, or any multi-frame format Pillow reads): every frame as
  RGB, resized to `size` x `size`, and `n_frames` of them evenly spaced over the clip (first and last kept).
  Returns float32 (1, n_frames, size, size, 3) in [0, 1]; a missing, unreadable or too short file is a
  one-line ConfigError naming it."""
  from PIL import Image, ImageSequence, UnidentifiedImageError

  try:
    with Image.open(path) as image:
      frames = [f.convert('RGB').resize((size, size), Image.BILINEAR) for f in ImageSequence.Iterator(image)]
  except FileNotFoundError:
    raise ConfigError(f'video prompt {path!r} does not exist') from None
  except (UnidentifiedImageError, OSError) as e:
    raise ConfigError(f'video prompt {path!r} cannot be read as an image sequence ({e})') from None
  if len(frames) < n_frames:
    raise ConfigError(f'video prompt {path!r} has {len(frames)} frames; it needs at least {n_frames}')
  picks = np.round(np.linspace(0, len(frames) - 1, n_frames)).astype(int)
  clip = np.stack([np.asarray(frames[i], np.float32) / 255.0 for i in picks])
  return clip[None]


def embed_video(config, params, frames):
  return make_model(config).apply({'params': params}, frames, method=VideoLanguageModel.video)


def embed_text(config, params, tokens):
  return make_model(config).apply({'params': params}, tokens, method=VideoLanguageModel.text)


def contrastive_loss(video, text, same, temperature):
  """Symmetric InfoNCE with soft targets: `same[i, j]` is 1 where clips i and j share a caption."""
  logits = video @ text.T / temperature
  targets = same / jnp.sum(same, -1, keepdims=True)
  loss_v = optax.softmax_cross_entropy(logits, targets)
  loss_t = optax.softmax_cross_entropy(logits.T, targets)
  return jnp.mean(loss_v + loss_t) / 2


def sample_clips(rng, config, look=None):
  """A batch of captioned clips of the config's environment: random start poses and velocities
  (`clip_start`), random actions, caption of the last frame's pose (rendered in `look`, default the
  environment's VLM_LOOK)."""
  env = env_select.module(config.env.name)
  look = env.VLM_LOOK if look is None else look
  n, size, batch = config.vlm.n_frames, config.env.image_size, config.vlm.batch_size

  def clip(rng):
    rng_pose, rng_vel, rng_a = jax.random.split(rng, 3)
    state = env.clip_start(rng_pose, rng_vel)
    actions = jax.random.uniform(rng_a, (n, env.ACTION_DIM), minval=-1, maxval=1)

    def body(s, a):
      return env.step(s, a), (env.render(s, size, look), s)

    _, (frames, states) = jax.lax.scan(body, state, actions)
    return frames, env.caption_index(jax.tree.map(lambda x: x[-1], states))

  return jax.vmap(clip)(jax.random.split(rng, batch))


def augment_clips(rng, frames):
  """Random appearance changes per clip (frames (B, F, S, S, 3) in [0, 1]), the same for every frame of a
  clip: contrast inversion with probability 1/2, a random permutation of the colour channels, and a
  per-channel gain in [0.6, 1.2] and offset in [-0.2, 0.2], clipped to [0, 1]. Ours (2026-11-28), not the
  paper's: GenRL's InternVideo2 was trained on web video and recognises the DMC bodies in any colours; a VLM
  trained on one appearance alone does not carry over to the agent's (agent-look caption accuracy near
  chance, and text targets that rank random episodes above the expert's), so it learns captions under
  varied appearances instead, never seeing the agent's exact look."""

  def one(rng, clip):
    k_inv, k_perm, k_gain, k_off = jax.random.split(rng, 4)
    clip = jnp.where(jax.random.bernoulli(k_inv), 1.0 - clip, clip)
    clip = clip[..., jax.random.permutation(k_perm, 3)]
    gain = jax.random.uniform(k_gain, (3,), minval=0.6, maxval=1.2)
    offset = jax.random.uniform(k_off, (3,), minval=-0.2, maxval=0.2)
    return jnp.clip(clip * gain + offset, 0.0, 1.0)

  return jax.vmap(one)(jax.random.split(rng, frames.shape[0]), frames)


def make_train_chunk(config):
  model = make_model(config)
  tx = optax.adam(config.vlm.lr)
  caption_tokens = jnp.asarray(tokenizer(config).encode(env_select.module(config.env.name).CAPTIONS))

  def loss_fn(params, frames, captions):
    video, text = model.apply({'params': params}, frames, caption_tokens[captions])
    same = (captions[:, None] == captions[None, :]).astype(jnp.float32)
    return contrastive_loss(video, text, same, config.vlm.temperature)

  def train_step(carry, step):
    params, opt_state, rng = carry
    key = jax.random.fold_in(rng, step)
    frames, captions = sample_clips(key, config)
    if config.vlm.augment:
      frames = augment_clips(jax.random.fold_in(key, 1), frames)
    loss, grad = jax.value_and_grad(loss_fn)(params, frames, captions)
    updates, opt_state = tx.update(grad, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, rng), loss

  @jax.jit
  def train(params, rng):
    opt_state = tx.init(params)
    (params, _, _), losses = jax.lax.scan(train_step, (params, opt_state, rng), jnp.arange(config.vlm.steps))
    return params, losses

  return train


def caption_accuracy(config, params, rng, look=None):
  """Zero-shot caption retrieval accuracy on fresh clips drawn in `look` (default the agent's appearance)."""
  env = env_select.module(config.env.name)
  frames, captions = sample_clips(rng, config, env.AGENT_LOOK if look is None else look)
  video = embed_video(config, params, frames)
  text = embed_text(config, params, jnp.asarray(tokenizer(config).encode(env.CAPTIONS)))
  return jnp.mean(jnp.argmax(video @ text.T, -1) == captions)
