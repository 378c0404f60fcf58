"""Tests of the zero-shot prompt-ensemble classifier, WiSE-FT and the masked fine-tuning step (every kind)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clip_saft import baselines
from clip_saft import saft
from common import clip

TOK = clip.WordTokenizer(['a', 'photo', 'sketch', 'of', 'circle', 'square', 'star'])
CONFIG = clip.CLIPConfig(
  image_size=8, patch_size=4, vision_width=8, vision_layers=1, vision_heads=2, embed_dim=8,
  context_length=8, vocab_size=TOK.vocab_size, text_width=8, text_layers=1, text_heads=2,
)  # fmt: skip
MODEL = clip.CLIP(CONFIG)
CLASSES = ['circle', 'square', 'star']
TEMPLATES = ['a photo of a {}', 'a sketch of a {}', 'a {}']


@pytest.fixture(scope='module')
def params():
  return clip.init_params(CONFIG, jax.random.PRNGKey(0))


def test_prompt_ensemble_head_is_the_normalised_mean_of_normalised_prompts(params):
  tokens = baselines.prompt_tokens(TOK, CLASSES, TEMPLATES, 8)
  assert tokens.shape == (9, 8) and TOK.decode(tokens[4]) == 'a sketch of a square'
  encode, head_fn = baselines.make_encoders(MODEL)
  head = np.asarray(head_fn(params, tokens, 3))
  encode_text = jax.jit(lambda p, t: MODEL.apply({'params': p}, t, method=clip.CLIP.encode_text))
  for c, name in enumerate(CLASSES):
    feats = [np.asarray(encode_text(params, jnp.asarray(TOK([t.format(name)], 8))))[0] for t in TEMPLATES]
    mean = np.mean([f / np.linalg.norm(f) for f in feats], axis=0)
    np.testing.assert_allclose(head[c], mean / np.linalg.norm(mean), atol=1e-5)
  feats = np.asarray(encode(params, jax.random.normal(jax.random.PRNGKey(1), (5, 8, 8, 3))))
  np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
  labels = np.argmax(feats @ head.T, axis=1)  # The zero-shot prediction: nearest class embedding.
  assert baselines.accuracy(feats, head, labels) == 1.0
  assert baselines.accuracy(feats, head, labels, classes=[labels[0]]) == np.mean(labels == labels[0])


def test_wise_ft_ends_are_exact(params):
  other = jax.tree.map(lambda x: x + 1.0, params)
  for alpha, target in ((0.0, params), (1.0, other)):
    mixed = baselines.wise(params, other, alpha)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), mixed, target)
  half = baselines.wise(params, other, 0.5)
  np.testing.assert_allclose(half['logit_scale'], params['logit_scale'] + 0.5)


@pytest.mark.slow  # One compilation per kind (~10 s each); the 'text' kind also runs in train_test's smoke.
@pytest.mark.parametrize('kind', ['text', 'head', 'flyp'])
def test_finetune_moves_only_masked_entries(params, kind):
  tokens = baselines.prompt_tokens(TOK, CLASSES, TEMPLATES, 8)
  head0 = baselines.class_embeddings(MODEL, params, tokens, 3)
  start = {'clip': params, 'head': head0}
  eligible = saft.eligible_tree(params, 'image' if kind == 'head' else 'both')
  scores = jax.tree.map(
    lambda x: jnp.abs(jnp.sin(jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape))), params
  )
  mask = {'clip': saft.top_k_mask(scores, eligible, 0.05), 'head': np.full(head0.shape, kind == 'head')}
  finetune = baselines.make_finetune(MODEL, kind=kind, optimizer='adamw', weight_decay=0.3, clip_norm=1.0, steps=6,
                                     batch_size=4, num_classes=3, warmup_steps=1)  # fmt: skip
  images = jax.random.normal(jax.random.PRNGKey(2), (12, 8, 8, 3))
  labels = jnp.arange(12) % 3
  tuned, losses = finetune(start, mask, images, labels, tokens, jnp.float32(0.05), jax.random.PRNGKey(3))
  assert losses.shape == (6,) and np.all(np.isfinite(losses))
  moved = 0
  for new, old, m in zip(jax.tree.leaves(tuned), jax.tree.leaves(start), jax.tree.leaves(mask)):
    new, old = np.asarray(new), np.asarray(old)
    np.testing.assert_array_equal(new.view(np.uint32)[~m], old.view(np.uint32)[~m])
    moved += int(np.sum(new[m] != old[m]))
  assert moved > 0
