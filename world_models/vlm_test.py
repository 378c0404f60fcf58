"""The tiny video-language model: tokenizer errors, shapes, contrastive loss with repeated captions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from common.errors import ConfigError
from world_models import vlm

CONFIG = ConfigDict({'env': {'image_size': 16}, 'vlm': {'width': 4, 'embed_dim': 6, 'n_frames': 2}})


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
