"""Tests for rl_softmoe/tokenizers.py: contents on hand-checked arrays, shapes on the three encoders, errors.

Encoder shapes come from `common.nn.NatureCNN` / `ImpalaCNN` (with ``flatten=False``) and a MinAtar-sized
conv through ``jax.eval_shape``, so no convolution on an 84x84 frame is ever run.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import nn as common_nn
from common.errors import ConfigError
from rl_softmoe import tokenizers as tk


def _arange(*shape):
  return jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)


def _shape_of(fn, shape):
  """Output shape of ``fn`` on a float32 input of ``shape``, without running it."""
  return tuple(jax.eval_shape(fn, jax.ShapeDtypeStruct(shape, jnp.float32)).shape)


def _encoder_map(encoder, frame_shape):
  """Per-sample feature-map shape of an (unflattened) encoder on one frame."""
  out = _shape_of(lambda x: encoder.init_with_output(jax.random.PRNGKey(0), x)[0], (1,) + frame_shape)
  return out[1:]


# --- contents -----------------------------------------------------------------------------------------


def test_per_conv_tokens_are_channel_vectors_in_row_major_order():
  x = _arange(2, 3, 4, 5)
  tokens = tk.per_conv(x)
  assert tokens.shape == (2, 12, 5)
  for b in range(2):
    for i in range(3):
      for j in range(4):
        np.testing.assert_array_equal(tokens[b, i * 4 + j], x[b, i, j])


def test_per_feat_tokens_are_flattened_channels():
  x = _arange(2, 3, 4, 5)
  tokens = tk.per_feat(x)
  assert tokens.shape == (2, 5, 12)
  for c in range(5):
    np.testing.assert_array_equal(tokens[1, c], np.asarray(x[1, :, :, c]).ravel())
  np.testing.assert_array_equal(tokens, np.swapaxes(np.asarray(tk.per_conv(x)), 1, 2))


def test_per_sample_is_one_flattened_token():
  x = _arange(2, 3, 4, 5)
  tokens = tk.per_sample(x)
  assert tokens.shape == (2, 1, 60)
  np.testing.assert_array_equal(tokens[:, 0], np.asarray(x).reshape(2, -1))


def test_per_patch_concat_and_mean_hold_the_patch():
  x = _arange(2, 4, 6, 3)
  concat = tk.per_patch(x, 2)
  mean = tk.per_patch(x, (2, 3), pool='mean')
  assert concat.shape == (2, 6, 12) and mean.shape == (2, 4, 3)
  xn = np.asarray(x)
  for gi in range(2):
    for gj in range(3):
      np.testing.assert_array_equal(
        concat[1, gi * 3 + gj], xn[1, 2 * gi : 2 * gi + 2, 2 * gj : 2 * gj + 2].ravel()
      )
  for gi in range(2):
    for gj in range(2):
      patch = xn[0, 2 * gi : 2 * gi + 2, 3 * gj : 3 * gj + 3]
      np.testing.assert_allclose(mean[0, gi * 2 + gj], patch.mean(axis=(0, 1)), rtol=1e-6)


def test_per_patch_drop_remainder_drops_the_last_rows_and_columns():
  x = _arange(1, 11, 11, 2)
  tokens = tk.per_patch(x, 3, drop_remainder=True)
  assert tokens.shape == (1, 9, 18)
  np.testing.assert_array_equal(tokens[0, 8], np.asarray(x[0, 6:9, 6:9]).ravel())
  with pytest.raises(ConfigError, match='does not divide the 11x11'):
    tk.per_patch(x, 3)


def test_tokenize_dispatches_and_token_shape_agrees():
  x = _arange(2, 4, 6, 3)
  cases = [
    ('per_conv', {}, tk.per_conv(x)),
    ('per_feat', {}, tk.per_feat(x)),
    ('per_sample', {}, tk.per_sample(x)),
    ('per_patch', {'patch_size': 2}, tk.per_patch(x, 2)),
    ('per_patch', {'patch_size': 2, 'pool': 'mean'}, tk.per_patch(x, 2, pool='mean')),
  ]
  for name, options, expected in cases:
    tokens = tk.tokenize(name, x, **options)
    np.testing.assert_array_equal(tokens, expected)
    assert tokens.shape[1:] == tk.token_shape(name, (4, 6, 3), **options)


def test_samples_stay_separate():
  x = _arange(3, 4, 4, 2)
  y = x.at[1].set(-7.0)
  for name, options in [
    ('per_conv', {}),
    ('per_feat', {}),
    ('per_sample', {}),
    ('per_patch', {'patch_size': 2}),
  ]:
    a, b = tk.tokenize(name, x, **options), tk.tokenize(name, y, **options)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])


def test_patch_embedding_equals_dopamines_patch_conv():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 6, 3))
  tokenizer = tk.Tokenizer(kind='per_patch', patch_size=2, embed_dim=5)
  variables = tokenizer.init(jax.random.PRNGKey(1), x)
  dense = variables['params']['patch_embed']
  assert dense['kernel'].shape == (12, 5)
  assert tokenizer.token_shape((4, 6, 3)) == (6, 5)
  conv = nn.Conv(5, kernel_size=(2, 2), strides=(2, 2), padding='VALID')
  conv_params = {'kernel': dense['kernel'].reshape(2, 2, 3, 5), 'bias': dense['bias']}
  expected = conv.apply({'params': conv_params}, x).reshape(2, 6, 5)
  np.testing.assert_allclose(tokenizer.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


# --- encoder geometry ---------------------------------------------------------------------------------


def test_nature_cnn_tokens():
  fmap = _encoder_map(common_nn.NatureCNN(flatten=False), (84, 84, 4))
  assert fmap == (7, 7, 64)  # VALID: 84 -> 20 -> 9 -> 7.
  assert tk.token_shape('per_conv', fmap) == (49, 64)
  assert tk.token_shape('per_feat', fmap) == (64, 49)
  assert tk.token_shape('per_sample', fmap) == (1, 3136)
  assert tk.token_shape('per_patch', fmap, patch_size=7) == (1, 3136)
  assert tk.token_shape('per_patch', fmap, patch_size=3, drop_remainder=True) == (4, 576)
  assert _shape_of(tk.per_conv, (2,) + fmap) == (2, 49, 64)
  # Dopamine's Nature CNN pads SAME: 84 -> 21 -> 11 -> 11, so PerConv gives 121 tokens, not 49.
  same = _encoder_map(common_nn.NatureCNN(flatten=False, padding='SAME'), (84, 84, 4))
  assert same == (11, 11, 64)
  assert tk.token_shape('per_conv', same) == (121, 64)


def test_impala_cnn_tokens():
  fmap = _encoder_map(common_nn.ImpalaCNN(flatten=False), (84, 84, 4))
  assert fmap == (11, 11, 32)  # 84 -> 42 -> 21 -> 11 (max-pool stride 2, SAME).
  assert tk.token_shape('per_conv', fmap) == (121, 32)
  assert tk.token_shape('per_feat', fmap) == (32, 121)
  assert tk.token_shape('per_sample', fmap) == (1, 3872)
  assert tk.token_shape('per_patch', fmap, patch_size=3, pool='mean', drop_remainder=True) == (9, 32)
  embed = tk.Tokenizer(kind='per_patch', patch_size=3, drop_remainder=True, embed_dim=32)
  assert embed.token_shape(fmap) == (9, 32)  # Dopamine's default PerPatch on Impala: 9 x 32.
  assert _shape_of(lambda x: embed.init_with_output(jax.random.PRNGKey(0), x)[0], (2,) + fmap) == (2, 9, 32)
  with pytest.raises(ConfigError, match='drop_remainder=True'):
    tk.token_shape('per_patch', fmap, patch_size=3)


def test_minatar_encoder_tokens():
  encoder = nn.Conv(16, kernel_size=(3, 3), padding='SAME')  # A MinAtar torso: 10x10xC -> 10x10x16.
  fmap = _encoder_map(encoder, (10, 10, 4))
  assert fmap == (10, 10, 16)
  assert tk.token_shape('per_conv', fmap) == (100, 16)
  assert tk.token_shape('per_feat', fmap) == (16, 100)
  assert tk.token_shape('per_sample', fmap) == (1, 1600)
  assert tk.token_shape('per_patch', fmap, patch_size=2) == (25, 64)
  assert tk.token_shape('per_patch', fmap, patch_size=2, pool='mean') == (25, 16)
  for name, options in [
    ('per_conv', {}),
    ('per_feat', {}),
    ('per_sample', {}),
    ('per_patch', {'patch_size': 5}),
  ]:
    expected = (3,) + tk.token_shape(name, fmap, **options)
    assert _shape_of(lambda x: tk.tokenize(name, x, **options), (3,) + fmap) == expected


# --- errors -------------------------------------------------------------------------------------------


def test_unknown_tokenizer_suggests_a_name():
  x = jnp.zeros((1, 2, 2, 3))
  with pytest.raises(ConfigError, match="did you mean 'per_conv'"):
    tk.tokenize('perconv', x)
  with pytest.raises(ConfigError, match='unknown tokeniser'):
    tk.token_shape('global_pool', (2, 2, 3))
  with pytest.raises(ConfigError, match='unknown tokeniser'):
    tk.Tokenizer(kind='pixels').token_shape((2, 2, 3))


@pytest.mark.parametrize('shape', [(2, 2, 3), (1, 1, 2, 2, 3), (4, 12)])
def test_input_must_be_a_batched_feature_map(shape):
  x = jnp.zeros(shape)
  for name in tk.TOKENIZERS:
    options = {'patch_size': 1} if name == 'per_patch' else {}
    with pytest.raises(ConfigError, match=r'\[batch, height, width, channels\]'):
      tk.tokenize(name, x, **options)


@pytest.mark.parametrize(
  'options, message',
  [
    ({}, 'needs patch_size'),
    ({'patch_size': 0}, 'positive int'),
    ({'patch_size': (2,)}, 'positive int'),
    ({'patch_size': 'two'}, 'positive int'),
    ({'patch_size': 5}, 'larger than the 4x6'),
    ({'patch_size': (1, 7), 'drop_remainder': True}, 'larger than the 4x6'),
    ({'patch_size': 4}, 'does not divide the 4x6'),
    ({'patch_size': 2, 'pool': 'max'}, 'unknown per_patch pool'),
    ({'patch_size': 2, 'stride': 1}, 'no option'),
  ],
)
def test_bad_patch_options(options, message):
  with pytest.raises(ConfigError, match=message):
    tk.tokenize('per_patch', jnp.zeros((1, 4, 6, 3)), **options)
  with pytest.raises(ConfigError, match=message):
    tk.token_shape('per_patch', (4, 6, 3), **options)


def test_bad_options_and_shapes():
  with pytest.raises(ConfigError, match="'per_conv' takes no option"):
    tk.tokenize('per_conv', jnp.zeros((1, 2, 2, 3)), patch_size=2)
  with pytest.raises(ConfigError, match='flatten=False'):
    tk.token_shape('per_conv', (3136,))
  with pytest.raises(ConfigError, match='flatten=False'):
    tk.token_shape('per_feat', (0, 4, 4))
  with pytest.raises(ConfigError, match='only apply to per_patch'):
    tk.Tokenizer(kind='per_conv', embed_dim=8).token_shape((2, 2, 3))
  with pytest.raises(ConfigError, match="pool='concat'"):
    tk.Tokenizer(kind='per_patch', patch_size=2, pool='mean', embed_dim=8).token_shape((2, 2, 3))


def test_errors_come_before_compiling():
  # Raised while tracing (shapes are static), so a jitted caller fails before XLA compiles anything.
  with pytest.raises(ConfigError, match='does not divide'):
    jax.jit(lambda x: tk.per_patch(x, 3)).lower(jax.ShapeDtypeStruct((2, 10, 10, 16), jnp.float32))
