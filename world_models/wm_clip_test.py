"""WM-CLIP's head: the reward is the cosine computed by hand; the window targets are the VLM's video embedding
of the frames ending at each step; the loss is 1 - cos."""

import jax
import jax.numpy as jnp
import numpy as np

from world_models import vlm
from world_models import wm_clip
from world_models.configs import default


def _cos(a, b):
  return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_reward_is_the_cosine_of_the_heads_output_with_the_prompt():
  # A head without hidden layers is the affine map feat @ W + b: the reward by hand in NumPy.
  head = wm_clip.EmbeddingHead(hidden=4, layers=0, embed_dim=5)
  feat = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (3, 2, 7)))
  params = head.init(jax.random.PRNGKey(1), feat)['params']
  prompt = np.asarray(vlm.normalize(jax.random.normal(jax.random.PRNGKey(2), (5,))))
  w, b = np.asarray(params['Dense_0']['kernel']), np.asarray(params['Dense_0']['bias'])
  expected = _cos(feat @ w + b, prompt)
  got = wm_clip.reward(head, params, feat, prompt)
  assert got.shape == (3, 2)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  # The loss against per-step targets is 1 - cos, averaged.
  targets = np.broadcast_to(prompt, (3, 2, 5))
  np.testing.assert_allclose(wm_clip.head_loss(head, params, feat, targets), np.mean(1 - expected), rtol=1e-5)


def test_window_embeddings_are_the_vlms_video_embedding_of_the_frames_ending_there():
  c = default.get_config('smoke')
  n, size = c.vlm.n_frames, c.env.image_size

  @jax.jit  # One compile instead of many eager convolutions.
  def both(rng):
    params = vlm.init(c, rng)
    frames = jax.random.uniform(rng, (n + 3, 2, size, size, 3))  # Time-major, 2 sequences.
    features = vlm.make_model(c).apply({'params': params}, frames, method=lambda m, x: m.frame_encoder(x))
    # Every window's clip, (4 windows x 2 sequences, n, S, S, 3), embedded as the VLM embeds a video.
    clips = jnp.stack([jnp.swapaxes(frames[t - n + 1 : t + 1], 0, 1) for t in range(n - 1, n + 3)])
    expected = vlm.embed_video(c, params, clips.reshape((8,) + clips.shape[2:])).reshape(4, 2, -1)
    return wm_clip.window_embeddings(features, n), expected

  windows, expected = both(jax.random.PRNGKey(0))
  assert windows.shape == (4, 2, c.vlm.embed_dim)
  np.testing.assert_allclose(windows, expected, atol=1e-5)
