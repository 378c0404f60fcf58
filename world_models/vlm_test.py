"""The tiny video-language model: tokenizer errors, shapes, contrastive loss with repeated captions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from common.errors import ConfigError
from world_models import vlm

CONFIG = ConfigDict(
  {'env': {'name': 'arm', 'image_size': 16}, 'vlm': {'width': 4, 'embed_dim': 6, 'n_frames': 2}}
)


def test_tokenizer_rejects_unknown_words_in_one_line():
  tokens = vlm.Tokenizer().encode(['arm pointing up', 'Arm folded'])
  assert tokens.shape == (2, vlm.MAX_WORDS) and tokens[1, 2] == 0
  with pytest.raises(ConfigError, match="'arm dancing'") as info:
    vlm.Tokenizer().encode(['arm dancing'])
  assert '\n' not in str(info.value)


def test_embeddings_are_unit_vectors_and_video_shape_is_checked():
  params = jax.jit(lambda r: vlm.init(CONFIG, r))(jax.random.PRNGKey(0))
  frames = jax.random.uniform(jax.random.PRNGKey(1), (3, 2, 16, 16, 3))
  tokens = jnp.asarray(vlm.Tokenizer().encode(['arm folded']))
  video, text = jax.jit(lambda p, f, t: (vlm.embed_video(CONFIG, p, f), vlm.embed_text(CONFIG, p, t)))(
    params, frames, tokens
  )
  np.testing.assert_allclose(jnp.linalg.norm(video, axis=-1), 1.0, rtol=1e-4)
  assert text.shape == (1, 6)
  vlm.check_video(frames, CONFIG)
  with pytest.raises(ConfigError, match='video prompt has shape'):
    vlm.check_video(frames[:, :1], CONFIG)


def test_contrastive_loss_soft_targets():
  emb = jnp.eye(3)
  same = jnp.eye(3)
  low = vlm.contrastive_loss(emb, emb, same, 0.1)
  high = vlm.contrastive_loss(emb, emb[::-1], same, 0.1)
  assert float(low) < float(high)
  # Two clips with one caption: the target is split between them, so the loss stays finite and symmetric.
  same = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  assert np.isfinite(float(vlm.contrastive_loss(emb, emb, same, 0.1)))


def _write_gif(path, colours, size=8):
  from PIL import Image

  frames = [Image.new('RGB', (size, size), tuple(c)) for c in colours]
  frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)


def test_read_video_spreads_frames_and_errors_name_the_file(tmp_path):
  colours = [(10 * i, 0, 255 - 10 * i) for i in range(7)]
  path = str(tmp_path / 'arm_folded.gif')
  _write_gif(path, colours)
  assert vlm.video_file(str(tmp_path), 'arm folded') == path
  clip = vlm.read_video(path, 3, 16)
  assert clip.shape == (1, 3, 16, 16, 3) and clip.dtype == np.float32
  # Frames 0, 3 and 6 of 7 (first and last kept), resized, in [0, 1]; GIF palettes keep these colours.
  np.testing.assert_allclose(clip[0, :, 5, 5, 0] * 255, [0, 30, 60], atol=2)
  np.testing.assert_allclose(clip[0, :, 5, 5, 2] * 255, [255, 225, 195], atol=2)
  vlm.check_video(jnp.asarray(vlm.read_video(path, 2, 16)), CONFIG)
  for bad, match in (
    (str(tmp_path / 'missing.gif'), 'does not exist'),
    (path, 'has 7 frames; it needs at least 9'),
  ):
    with pytest.raises(ConfigError, match=match) as info:
      vlm.read_video(bad, 9 if bad == path else 2, 16)
    assert bad in str(info.value) and '\n' not in str(info.value)
  (tmp_path / 'text.gif').write_text('not an image')
  with pytest.raises(ConfigError, match='cannot be read'):
    vlm.read_video(str(tmp_path / 'text.gif'), 2, 16)


def test_augment_clips_changes_each_clip_one_way_for_all_its_frames():
  rng = np.random.default_rng(0)
  frame = rng.uniform(size=(1, 1, 6, 6, 3)).astype(np.float32)
  frames = jnp.asarray(np.tile(frame, (64, 4, 1, 1, 1)))  # 64 clips of one repeated frame.
  out = vlm.augment_clips(jax.random.PRNGKey(0), frames)
  assert out.shape == frames.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  np.testing.assert_array_equal(out, jnp.repeat(out[:, :1], 4, axis=1))  # Same change over a clip's frames.
  assert len({np.asarray(c[0]).tobytes() for c in out}) == 64  # Each clip its own change.
  black = vlm.augment_clips(jax.random.PRNGKey(1), jnp.zeros((64, 2, 4, 4, 3)))
  inverted = np.asarray(black.mean(axis=(1, 2, 3, 4))) > 0.3  # 1 * gain + offset >= 0.4; else <= 0.2.
  assert 15 <= inverted.sum() <= 49
