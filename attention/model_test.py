"""Tests for attention/model.py: the three LM variants, the stick-breaking head, decoding, configs.

Tiny models (2 layers, d_model 32, 2 heads, vocab 11, T <= 16, float32, XLA attention) so that the file
runs in well under a minute on 2 CPU cores; every jitted function is compiled once per variant
(module-scoped fixtures).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from attention import model as sb_model
from attention import reference
from common import nn as common_nn
from common.errors import ConfigError

VARIANTS = sb_model.VARIANTS
D_MODEL, NUM_LAYERS, VOCAB = 32, 2, 11


@pytest.fixture(scope='module', autouse=True)
def _full_precision():
  # Module scope so that it is also active while module-scoped fixtures compile (GPUs default to TF32).
  with jax.default_matmul_precision('float32'):
    yield


def _config(variant, **overrides):
  config = ml_collections.ConfigDict(
    dict(
      variant=variant,
      vocab_size=VOCAB,
      num_layers=NUM_LAYERS,
      d_model=D_MODEL,
      num_heads=2,
      num_kv_heads=0,
      mlp_dim=64,
      head_dim=0,
      mlp_activation='swiglu',
      dtype='float32',
      sb_rem_mode='head_bias',
      sb_norm='group',
      sb_implementation='xla',
      softmax_implementation='xla',
      rope_theta=10000.0,
      remat=False,
    )
  )
  config.update(overrides)
  return config


def _tokens(seed, batch, length):
  return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, size=(batch, length)), jnp.int32)


def _perturb(params, seed, scale=0.2):
  """Adds noise to every parameter (so that zero-initialised ones, like ``h``, matter)."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda p: p + scale * rng.standard_normal(p.shape).astype(p.dtype), params)


def _loss(model, params, tokens):
  logits = model.apply({'params': params}, tokens)
  return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()


@pytest.fixture(scope='module', params=VARIANTS)
def lm(request):
  """One variant: its model, initial params and jitted forward/train/decode functions."""
  variant = request.param
  model = sb_model.make_lm(_config(variant))
  decoder = sb_model.make_lm(_config(variant), decode=True)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), _tokens(0, 1, 4))['params']
  optimizer = optax.adam(1e-2)

  @jax.jit
  def train_step(params, opt_state, tokens):
    loss, grads = jax.value_and_grad(lambda p: _loss(model, p, tokens))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def decode_step(params, cache, tokens):
    logits, mutated = decoder.apply({'params': params, 'cache': cache}, tokens, mutable=['cache'])
    return logits, mutated['cache']

  return dict(
    variant=variant,
    model=model,
    decoder=decoder,
    params=params,
    optimizer=optimizer,
    train_step=train_step,
    forward=jax.jit(lambda p, t: model.apply({'params': p}, t)),
    decode_step=decode_step,
  )


def test_make_lm_variants():
  rope = sb_model.make_lm(_config('softmax_rope'))
  nope = sb_model.make_lm(_config('softmax_nope'))
  sb = sb_model.make_lm(_config('stick_breaking', remat=True, dtype='bfloat16'))
  assert rope.use_rope and not nope.use_rope and not sb.use_rope
  assert rope.attention_fn.func is common_nn.softmax_attention
  assert rope.attention_fn.keywords == {'implementation': 'xla'}
  assert isinstance(sb.attention_fn, sb_model.StickBreakingAttention)
  assert sb.attention_fn.implementation == 'xla' and sb.attention_fn.rem_mode == 'head_bias'
  assert sb.remat and sb.dtype == jnp.bfloat16 and sb.param_dtype == jnp.float32
  assert sb_model.make_lm(_config('stick_breaking', sb_implementation='')).attention_fn.implementation is None
  gqa = sb_model.make_lm(_config('softmax_rope', num_kv_heads=1, head_dim=8))
  assert gqa.num_kv_heads == 1 and gqa.head_dim == 8
  assert rope.num_kv_heads is None and rope.head_dim is None


def test_param_counts():
  tokens = _tokens(0, 1, 4)
  counts = {}
  for variant in VARIANTS:
    model = sb_model.make_lm(_config(variant))
    counts[variant] = sb_model.count_params(
      jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)['params']
    )
  assert counts['softmax_rope'] == counts['softmax_nope']
  # h [N, D] plus the per-head GroupNorm's scale and bias: 3 * d_model per layer.
  assert counts['stick_breaking'] - counts['softmax_rope'] == 3 * D_MODEL * NUM_LAYERS
  # By hand: tied embedding, final norm, per layer 2 norms + q, k, v, o + SwiGLU.
  per_layer = 2 * D_MODEL + 4 * D_MODEL * D_MODEL + 3 * D_MODEL * 64
  assert counts['softmax_rope'] == VOCAB * D_MODEL + D_MODEL + NUM_LAYERS * per_layer
  params = jax.eval_shape(sb_model.make_lm(_config('stick_breaking')).init, jax.random.PRNGKey(0), tokens)
  sb_params = params['params']['layers_1']['attention_fn']
  assert {k: v.shape for k, v in sb_params.items()} == {
    'head_bias': (2, 16),
    'norm_scale': (2, 16),
    'norm_bias': (2, 16),
  }


def test_forward_and_training_reduce_loss(lm):
  tokens = _tokens(1, 4, 16)
  logits = lm['forward'](lm['params'], tokens)
  assert logits.shape == (4, 16, VOCAB) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()
  params, opt_state = lm['params'], lm['optimizer'].init(lm['params'])
  losses = []
  for _ in range(5):
    params, opt_state, loss = lm['train_step'](params, opt_state, tokens)
    losses.append(float(loss))
  assert np.isfinite(losses).all()
  assert losses[-1] < losses[0] - 0.05, losses
  if lm['variant'] == 'stick_breaking':  # The zero-initialised h receives gradient.
    assert np.abs(params['layers_0']['attention_fn']['head_bias']).max() > 0


def test_decode_matches_full_forward(lm):
  params = _perturb(lm['params'], seed=2)
  tokens = _tokens(3, 2, 10)
  full = lm['forward'](params, tokens)
  cache = lm['decoder'].init_cache(2, 12)
  # One token at a time.
  step_cache, outs = cache, []
  for i in range(10):
    logits, step_cache = lm['decode_step'](params, step_cache, tokens[:, i : i + 1])
    outs.append(logits)
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, rtol=1e-4, atol=1e-4)
  # A 7-token prefill, then one token at a time.
  logits, step_cache = lm['decode_step'](params, cache, tokens[:, :7])
  outs = [logits]
  for i in range(7, 10):
    logits, step_cache = lm['decode_step'](params, step_cache, tokens[:, i : i + 1])
    outs.append(logits)
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, rtol=1e-4, atol=1e-4)
  assert int(step_cache['layers_0']['cache_index']) == 10


# ----------------------------------------------------------------------------
# The stick-breaking head on its own
# ----------------------------------------------------------------------------


def _qkv(seed, b=2, t=6, n=4, kh=2, d=8, s=None):
  rng = np.random.default_rng(seed)
  s = t if s is None else s
  f = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)  # noqa: E731
  return f(b, t, n, d), f(b, s, kh, d), f(b, s, kh, d)


def _head(**kwargs):
  return sb_model.StickBreakingAttention(implementation='xla', **kwargs)


def _apply(module, params, *args, **kwargs):
  return module.apply({'params': params}, *args, **kwargs)


def test_rem_current_value_is_o_plus_rem_times_own_value():
  q, k, v = _qkv(4)  # GQA: 4 query heads, 2 kv heads.
  o, rem = reference.stick_breaking_attention_reference(q, k, v)
  own = jnp.repeat(v, 2, axis=2)  # head n reads kv head n // 2 at the query's own position
  expected = o + rem[..., None] * own
  module = _head(rem_mode='current_value', norm='none')
  assert jax.eval_shape(module.init, jax.random.PRNGKey(0), q, k, v) == {}
  out = _apply(module, {}, q, k, v)
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
  assert np.asarray(rem).min() > 1e-3  # The leftover is visible (the first row keeps all of it).
  np.testing.assert_allclose(out[:, 0], own[:, 0], rtol=1e-6, atol=1e-6)
  # Decoding: queries 3..5 against a 9-entry cache (junk past kv_length) read their own cached value.
  junk = jnp.full((2, 3, 2, 8), 7.0)
  k_cache, v_cache = jnp.concatenate([k, junk], 1), jnp.concatenate([v, junk], 1)
  dec = _apply(module, {}, q[:, 3:], k_cache, v_cache, causal=True, segment_ids=None, q_offset=3, kv_length=6)
  np.testing.assert_allclose(dec, expected[:, 3:], rtol=1e-5, atol=1e-5)


def test_rem_head_bias_and_group_norm():
  q, k, v = _qkv(5)
  o, rem = reference.stick_breaking_attention_reference(q, k, v)
  module = _head(rem_mode='head_bias', norm='none')
  params = jax.jit(module.init)(jax.random.PRNGKey(0), q, k, v)['params']
  np.testing.assert_array_equal(params['head_bias'], np.zeros((4, 8)))
  np.testing.assert_allclose(_apply(module, params, q, k, v), o, rtol=1e-6, atol=1e-6)  # h = 0: just o
  h = jnp.asarray(np.random.default_rng(6).standard_normal((4, 8)), jnp.float32)
  with_h = o + rem[..., None] * h
  np.testing.assert_allclose(_apply(module, {'head_bias': h}, q, k, v), with_h, rtol=1e-6, atol=1e-6)
  # Per-head GroupNorm (num_groups = num_heads over the concatenated heads), by hand in float64.
  rng = np.random.default_rng(7)
  scale, bias = rng.standard_normal((4, 8)), rng.standard_normal((4, 8))
  x = np.asarray(with_h, np.float64)
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  expected = (x - mean) / np.sqrt(var + 1e-5) * scale + bias
  grouped = _head(rem_mode='head_bias', norm='group')
  gparams = {
    'head_bias': h,
    'norm_scale': jnp.asarray(scale, jnp.float32),
    'norm_bias': jnp.asarray(bias, jnp.float32),
  }
  np.testing.assert_allclose(_apply(grouped, gparams, q, k, v), expected, rtol=1e-4, atol=1e-4)
  # rem_mode='none': o itself; the output keeps the input dtype.
  none = _apply(_head(rem_mode='none', norm='none'), {}, q, k, v)
  np.testing.assert_allclose(none, o, rtol=1e-6, atol=1e-6)
  assert _apply(
    _head(rem_mode='none', norm='none'), {}, *(a.astype(jnp.bfloat16) for a in (q, k, v))
  ).dtype == (jnp.bfloat16)


def test_segment_ids_pass_through():
  q, k, v = _qkv(8, b=1, t=8)
  seg = jnp.asarray([[0, 0, 0, 1, 1, 1, 1, 1]])
  module = _head(rem_mode='current_value', norm='group')
  params = _perturb(jax.jit(module.init)(jax.random.PRNGKey(0), q, k, v)['params'], seed=9)
  out = _apply(module, params, q, k, v, causal=True, segment_ids=seg)
  # Each document on its own: the stick restarts at the document boundary.
  np.testing.assert_allclose(
    out[:, :3], _apply(module, params, q[:, :3], k[:, :3], v[:, :3]), rtol=1e-5, atol=1e-5
  )
  np.testing.assert_allclose(
    out[:, 3:], _apply(module, params, q[:, 3:], k[:, 3:], v[:, 3:]), rtol=1e-5, atol=1e-5
  )
  assert not np.allclose(out, _apply(module, params, q, k, v), atol=1e-3)


# ----------------------------------------------------------------------------
# Config errors
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
  'overrides, match',
  [
    (dict(variant='softmax'), 'config.variant'),
    (dict(variant='stick_breaking', sb_rem_mode='value'), 'config.sb_rem_mode'),
    (dict(variant='stick_breaking', sb_norm='layer'), 'config.sb_norm'),
    (dict(variant='stick_breaking', sb_implementation='cuda'), 'config.sb_implementation'),
    (dict(softmax_implementation='flash'), 'config.softmax_implementation'),
    (dict(dtype='float16'), 'config.dtype'),
    (dict(mlp_activation='relu'), 'config.mlp_activation'),
    (dict(d_model=30, num_heads=4), 'set config.head_dim'),
    (dict(num_kv_heads=3), 'config.num_kv_heads'),
  ],
)
def test_bad_config_raises_config_error(overrides, match):
  config = _config('softmax_rope')
  config.update(overrides)
  with pytest.raises(ConfigError, match=match) as info:
    sb_model.make_lm(config)
  assert '\n' not in str(info.value)


def test_missing_field_and_bad_module_modes():
  config = _config('softmax_rope')
  del config['sb_norm']
  with pytest.raises(ConfigError, match='missing sb_norm'):
    sb_model.make_lm(config)
  q, k, v = _qkv(10)
  with pytest.raises(ConfigError, match="rem_mode 'sideways'.*current_value, head_bias, none"):
    jax.eval_shape(_head(rem_mode='sideways').init, jax.random.PRNGKey(0), q, k, v)
  with pytest.raises(ConfigError, match='norm'):
    jax.eval_shape(_head(norm='rms').init, jax.random.PRNGKey(0), q, k, v)
  with pytest.raises(ConfigError, match='causal'):
    jax.eval_shape(lambda: _head().init(jax.random.PRNGKey(0), q, k, v, causal=False))
