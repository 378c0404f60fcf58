"""Tests for common/nn.py (run on CPU in well under a minute)."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import nn as blocks


@pytest.fixture(autouse=True)
def _full_precision():
  # On GPUs float32 matmuls may default to TF32; compare at full precision.
  with jax.default_matmul_precision('float32'):
    yield


def _rng(seed=0):
  return np.random.default_rng(seed)


def _randn(rng, *shape):
  return rng.standard_normal(shape).astype(np.float32)


def _unfreeze(params):
  return flax.core.unfreeze(params) if isinstance(params, flax.core.FrozenDict) else params


def _np_params(module, *args, seed=0, **kwargs):
  """Random numpy params with the structure of ``module.init(...)['params']``.

  Only abstract evaluation of ``init`` is used: on CPU, compiling JAX's PRNG
  initializers for every new shape dominates test time. Kernels are
  N(0, 1/fan_in), biases N(0, 0.3^2), norm scales 1 + N(0, 0.3^2), so that
  every parameter influences the output non-trivially.
  """
  rng = _rng(seed + 1000)
  abstract = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args, **kwargs)

  def make(path, leaf):
    name = path[-1].key
    shape = leaf.shape
    if name == 'kernel':
      return _randn(rng, *shape) / np.sqrt(np.prod(shape[:-1]))
    if name == 'scale':
      return 1.0 + 0.3 * _randn(rng, *shape)
    return 0.3 * _randn(rng, *shape)

  return jax.tree_util.tree_map_with_path(make, _unfreeze(abstract)['params'])


# ----------------------------------------------------------------------------
# MLP
# ----------------------------------------------------------------------------


def test_mlp_hand_value():
  rng = _rng(1)
  w0, b0 = _randn(rng, 4, 3), _randn(rng, 3)
  w1, b1 = _randn(rng, 3, 2), _randn(rng, 2)
  params = {'params': {'dense_0': {'kernel': w0, 'bias': b0}, 'dense_1': {'kernel': w1, 'bias': b1}}}
  x = _randn(rng, 5, 4)

  hidden = np.maximum(x @ w0 + b0, 0.0)
  expected = hidden @ w1 + b1
  # Shapes of our params must match the ones the module creates.
  init = blocks.MLP((3, 2)).init(jax.random.PRNGKey(0), x)
  assert jax.tree_util.tree_map(np.shape, _unfreeze(init)) == jax.tree_util.tree_map(np.shape, params)

  out = blocks.MLP((3, 2)).apply(params, x)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  assert (expected < 0).any()  # So activate_final is visible below.
  out_final = blocks.MLP((3, 2), activate_final=True).apply(params, x)
  np.testing.assert_allclose(out_final, np.maximum(expected, 0), rtol=1e-5, atol=1e-5)
  out_tanh = blocks.MLP((3, 2), activation=jnp.tanh).apply(params, x)
  np.testing.assert_allclose(out_tanh, np.tanh(x @ w0 + b0) @ w1 + b1, rtol=1e-5, atol=1e-5)


def test_mlp_no_bias_and_leading_dims():
  x = jnp.ones((2, 3, 4))
  variables = {'params': _np_params(blocks.MLP((8, 5), use_bias=False), x)}
  assert set(variables['params']['dense_0']) == {'kernel'}
  out = blocks.MLP((8, 5), use_bias=False).apply(variables, x)
  assert out.shape == (2, 3, 5)


# ----------------------------------------------------------------------------
# Encoders
# ----------------------------------------------------------------------------


def _shape(module, x, variables=None):
  """Output shape via abstract evaluation (no FLOPs)."""
  if variables is None:
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
  return jax.eval_shape(module.apply, variables, x).shape


def test_nature_cnn_shapes():
  x = np.zeros((2, 84, 84, 4), np.uint8)
  # VALID: 84 -> (84-8)//4+1=20 -> (20-4)//2+1=9 -> (9-3)//1+1=7.
  model = blocks.NatureCNN()
  variables = {'params': _np_params(model, x[:1])}
  out = model.apply(variables, x)
  assert out.shape == (2, 7 * 7 * 64)
  assert out.dtype == jnp.float32
  assert _shape(blocks.NatureCNN(flatten=False), x, variables) == (2, 7, 7, 64)
  # Unbatched and multi-batch inputs.
  assert _shape(model, x[0], variables) == (3136,)
  assert _shape(model, np.zeros((3, 2, 84, 84, 4), np.uint8), variables) == (3, 2, 3136)
  # SAME (Dopamine): 84 -> ceil(84/4)=21 -> ceil(21/2)=11 -> 11.
  assert _shape(blocks.NatureCNN(padding='SAME', flatten=False), x) == (2, 11, 11, 64)
  kernels = {k: v['kernel'].shape for k, v in variables['params'].items()}
  assert kernels == {'conv_0': (8, 8, 4, 32), 'conv_1': (4, 4, 32, 64), 'conv_2': (3, 3, 64, 64)}


def test_nature_cnn_scale_input():
  rng = _rng(2)
  x_u8 = rng.integers(0, 256, size=(1, 36, 36, 2)).astype(np.uint8)
  model = blocks.NatureCNN()
  variables = {'params': _np_params(model, x_u8)}
  out_u8 = model.apply(variables, x_u8)
  out_f = model.apply(variables, x_u8.astype(np.float32) / 255.0)
  np.testing.assert_allclose(out_u8, out_f, rtol=1e-5, atol=1e-6)
  unscaled = blocks.NatureCNN(scale_input=False).apply(variables, x_u8)
  np.testing.assert_allclose(unscaled, model.apply(variables, x_u8.astype(np.float32)), rtol=1e-5)
  assert not np.allclose(unscaled, out_u8)


def test_impala_cnn_shapes():
  x = np.zeros((2, 64, 64, 3), np.uint8)
  model = blocks.ImpalaCNN()
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  # 64 -> 32 -> 16 -> 8 (SAME max-pool, stride 2).
  assert _shape(model, x, variables) == (2, 8 * 8 * 32)
  assert _shape(blocks.ImpalaCNN(flatten=False), x, variables) == (2, 8, 8, 32)
  params = variables['params']
  assert params['stage_0_conv']['kernel'].shape == (3, 3, 3, 16)
  assert params['stage_2_block_1']['conv_1']['kernel'].shape == (3, 3, 32, 32)
  assert len(params) == 3 * (1 + 2)
  # Odd sizes round up: 84 -> 42 -> 21 -> 11; unbatched input.
  odd = np.zeros((84, 84, 4), np.uint8)
  small = blocks.ImpalaCNN(channels=(4, 4, 4), num_blocks=1, flatten=False)
  assert _shape(small, odd) == (11, 11, 4)
  # One real forward pass.
  out = model.apply({'params': _np_params(model, x[:1])}, x[:1])
  assert out.shape == (1, 2048) and np.isfinite(out).all()


def _np_conv3x3_same(x, w, b):
  """x [H, W, Cin], w [3, 3, Cin, Cout] (cross-correlation, as in lax)."""
  h, wd, _ = x.shape
  xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
  out = np.zeros((h, wd, w.shape[-1]), np.float64)
  for i in range(h):
    for j in range(wd):
      out[i, j] = np.einsum('abc,abcd->d', xp[i : i + 3, j : j + 3], w)
  return out + b


def _np_maxpool3x3_s2_same(x):
  h, wd, c = x.shape
  oh, ow = -(-h // 2), -(-wd // 2)
  pad_h = max((oh - 1) * 2 + 3 - h, 0)
  pad_w = max((ow - 1) * 2 + 3 - wd, 0)
  xp = np.pad(
    x, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)), constant_values=-np.inf
  )
  out = np.zeros((oh, ow, c))
  for i in range(oh):
    for j in range(ow):
      out[i, j] = xp[2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(0, 1))
  return out


def test_impala_cnn_hand_value():
  rng = _rng(3)
  x = _randn(rng, 1, 5, 6, 2)
  model = blocks.ImpalaCNN(channels=(3,), num_blocks=1, flatten=False)
  params = _np_params(model, x)
  out = model.apply({'params': params}, x)

  stem = params['stage_0_conv']
  h = _np_conv3x3_same(x[0], stem['kernel'], stem['bias'])
  h = _np_maxpool3x3_s2_same(h)
  blk = params['stage_0_block_0']
  y = _np_conv3x3_same(np.maximum(h, 0), blk['conv_0']['kernel'], blk['conv_0']['bias'])
  y = _np_conv3x3_same(np.maximum(y, 0), blk['conv_1']['kernel'], blk['conv_1']['bias'])
  expected = np.maximum(h + y, 0)
  assert out.shape == (1, 3, 3, 3)
  np.testing.assert_allclose(out[0], expected, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------
# RMSNorm
# ----------------------------------------------------------------------------


def test_rmsnorm_hand_value():
  x = jnp.array([[3.0, 4.0], [1.0, -1.0]])
  params = {'params': {'scale': jnp.array([2.0, 0.5])}}
  out = blocks.RMSNorm(epsilon=1e-6).apply(params, x)
  expected = np.array(
    [
      [3 / np.sqrt(12.5 + 1e-6) * 2, 4 / np.sqrt(12.5 + 1e-6) * 0.5],
      [1 / np.sqrt(1 + 1e-6) * 2, -1 / np.sqrt(1 + 1e-6) * 0.5],
    ]
  )
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  # Default init: unit scale, and the norm of each row becomes sqrt(dim).
  variables = blocks.RMSNorm().init(jax.random.PRNGKey(0), x)
  np.testing.assert_array_equal(variables['params']['scale'], np.ones(2))
  # Large epsilon is visible.
  out_eps = blocks.RMSNorm(epsilon=1.0).apply(params, x)
  np.testing.assert_allclose(out_eps[1], [2 / np.sqrt(2.0), -0.5 / np.sqrt(2.0)], rtol=1e-6)


def test_rmsnorm_dtype():
  x = (jnp.arange(8.0).reshape(2, 4) * 1000).astype(jnp.bfloat16)
  module = blocks.RMSNorm()
  variables = module.init(jax.random.PRNGKey(0), x)
  out = module.apply(variables, x)
  assert out.dtype == jnp.bfloat16
  assert variables['params']['scale'].dtype == jnp.float32
  x32 = np.asarray(x.astype(jnp.float32))
  expected = x32 / np.sqrt((x32**2).mean(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(out.astype(jnp.float32), expected, rtol=1e-2)
  assert blocks.RMSNorm(dtype=jnp.float32).apply(variables, x).dtype == jnp.float32


# ----------------------------------------------------------------------------
# RoPE
# ----------------------------------------------------------------------------


def test_rope_frequencies():
  np.testing.assert_allclose(blocks.rope_frequencies(4, 10000.0), [1.0, 0.01], rtol=1e-6)
  np.testing.assert_allclose(blocks.rope_frequencies(6, 64.0), [1.0, 0.25, 1 / 16], rtol=1e-6)
  with pytest.raises(ValueError):
    blocks.rope_frequencies(3)


@pytest.mark.parametrize('interleaved', [False, True])
def test_rope_hand_value_d2(interleaved):
  # D=2: one pair, frequency 1 -> plain 2-D rotation by angle = position.
  a, b = 0.3, -1.2
  x = jnp.array([a, b]).reshape(1, 1, 2)  # [T=1, H=1, D=2]
  for p in [0, 1, 5]:
    out = blocks.apply_rope(x, jnp.array([p]), interleaved=interleaved)
    expected = [a * np.cos(p) - b * np.sin(p), b * np.cos(p) + a * np.sin(p)]
    np.testing.assert_allclose(out.reshape(2), expected, rtol=1e-5, atol=1e-6)


def test_rope_hand_value_pairing_d4():
  e0 = jnp.eye(4)[0].reshape(1, 1, 4)
  e1 = jnp.eye(4)[1].reshape(1, 1, 4)
  p = 3.0
  pos = jnp.array([p])
  c, s = np.cos(p), np.sin(p)
  c2, s2 = np.cos(p * 0.01), np.sin(p * 0.01)
  # Rotate-half: pairs (0, 2) [freq 1] and (1, 3) [freq 0.01].
  np.testing.assert_allclose(blocks.apply_rope(e0, pos).reshape(4), [c, 0, s, 0], atol=1e-6)
  np.testing.assert_allclose(blocks.apply_rope(e1, pos).reshape(4), [0, c2, 0, s2], atol=1e-6)
  # Interleaved: pairs (0, 1) [freq 1] and (2, 3) [freq 0.01].
  np.testing.assert_allclose(blocks.apply_rope(e0, pos, interleaved=True).reshape(4), [c, s, 0, 0], atol=1e-6)
  np.testing.assert_allclose(
    blocks.apply_rope(e1, pos, interleaved=True).reshape(4), [-s, c, 0, 0], atol=1e-6
  )


@pytest.mark.parametrize('interleaved', [False, True])
def test_rope_norm_preserving_and_identity_at_zero(interleaved):
  rng = _rng(4)
  x = jnp.asarray(_randn(rng, 2, 5, 3, 8))
  positions = jnp.asarray(rng.integers(0, 1000, size=(2, 5)))
  out = blocks.apply_rope(x, positions, interleaved=interleaved)
  assert out.shape == x.shape and out.dtype == x.dtype
  np.testing.assert_allclose(jnp.linalg.norm(out, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
  assert not np.allclose(out, x)
  zero = blocks.apply_rope(x, jnp.zeros((2, 5), jnp.int32), interleaved=interleaved)
  np.testing.assert_allclose(zero, x, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('interleaved', [False, True])
def test_rope_relative_position(interleaved):
  rng = _rng(5)
  q = jnp.asarray(_randn(rng, 1, 1, 16))
  k = jnp.asarray(_randn(rng, 1, 1, 16))

  def score(m, n):
    rq = blocks.apply_rope(q, jnp.array([m]), interleaved=interleaved)
    rk = blocks.apply_rope(k, jnp.array([n]), interleaved=interleaved)
    return float(jnp.sum(rq * rk))

  base = score(7, 3)
  for m, n in [(4, 0), (10, 6), (107, 103)]:
    np.testing.assert_allclose(score(m, n), base, rtol=1e-4, atol=1e-4)
  assert abs(score(3, 7) - base) > 1e-3  # Depends on the sign of m - n.
  assert abs(score(8, 3) - base) > 1e-3


def test_rope_conventions_agree_after_permutation():
  rng = _rng(6)
  d = 8
  x = jnp.asarray(_randn(rng, 2, 4, 3, d))
  positions = jnp.arange(4)[None] + jnp.array([[0], [11]])
  perm = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])
  half = blocks.apply_rope(x[..., perm], positions, interleaved=False)
  inter = blocks.apply_rope(x, positions, interleaved=True)
  np.testing.assert_allclose(half, inter[..., perm], rtol=1e-5, atol=1e-6)
  assert not np.allclose(blocks.apply_rope(x, positions), inter)


def test_rope_broadcast_positions_and_dtype():
  x = jnp.ones((2, 3, 4, 6), jnp.bfloat16)
  out_1d = blocks.apply_rope(x, jnp.arange(3))
  out_2d = blocks.apply_rope(x, jnp.tile(jnp.arange(3), (2, 1)))
  assert out_1d.dtype == jnp.bfloat16
  np.testing.assert_array_equal(out_1d.astype(jnp.float32), out_2d.astype(jnp.float32))


# ----------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------


def _qkv(seed, b=2, t=6, n=4, kv=2, d=8, s=None):
  rng = _rng(seed)
  s = t if s is None else s
  return (
    jnp.asarray(_randn(rng, b, t, n, d)),
    jnp.asarray(_randn(rng, b, s, kv, d)),
    jnp.asarray(_randn(rng, b, s, kv, d)),
  )


SEGMENTS = jnp.array([[0, 0, 0, 1, 1, 1], [3, 3, 5, 5, 5, 7]])


@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize('use_segments', [False, True])
@pytest.mark.parametrize('kv_heads', [1, 2, 4])
def test_softmax_attention_matches_reference(causal, use_segments, kv_heads):
  q, k, v = _qkv(7, kv=kv_heads)
  seg = SEGMENTS if use_segments else None
  out = blocks.softmax_attention(q, k, v, causal=causal, segment_ids=seg)
  ref = blocks.softmax_attention_reference(q, k, v, causal=causal, segment_ids=seg)
  assert out.shape == q.shape
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  auto = blocks.softmax_attention(q, k, v, causal=causal, segment_ids=seg, implementation='auto')
  np.testing.assert_allclose(auto, ref, rtol=1e-5, atol=1e-5)


def test_softmax_attention_reference_hand_value():
  # Single head, D=1, T=2, scale 1: check the masked softmax by hand.
  q = jnp.array([1.0, 2.0]).reshape(1, 2, 1, 1)
  k = jnp.array([0.5, -1.0]).reshape(1, 2, 1, 1)
  v = jnp.array([10.0, 20.0]).reshape(1, 2, 1, 1)
  out = blocks.softmax_attention_reference(q, k, v, causal=True).reshape(2)
  w = np.exp([2 * 0.5, 2 * -1.0])
  w = w / w.sum()
  np.testing.assert_allclose(out, [10.0, w @ [10.0, 20.0]], rtol=1e-6)
  out_nc = blocks.softmax_attention(q, k, v, causal=False).reshape(2)
  w0 = np.exp([0.5, -1.0])
  w0 = w0 / w0.sum()
  np.testing.assert_allclose(out_nc, [w0 @ [10.0, 20.0], w @ [10.0, 20.0]], rtol=1e-5)


def test_softmax_attention_gqa_head_mapping():
  # Query head n must use kv head n // (N // K): compare to explicit MHA.
  q, k, v = _qkv(8, n=6, kv=2)
  out = blocks.softmax_attention(q, k, v, causal=True)
  idx = np.arange(6) // 3
  mha = blocks.softmax_attention(q, k[:, :, idx], v[:, :, idx], causal=True)
  np.testing.assert_allclose(out, mha, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('fn', [blocks.softmax_attention, blocks.softmax_attention_reference])
@pytest.mark.parametrize('causal', [True, False])
def test_attention_segment_isolation(fn, causal):
  q, k, v = _qkv(9, b=1)
  seg = SEGMENTS[:1]  # [0, 0, 0, 1, 1, 1]
  out = fn(q, k, v, causal=causal, segment_ids=seg)
  # Perturb segment 1 only: segment 0 outputs unchanged (and vice versa).
  q2, k2, v2 = (a.at[:, 3:].add(1.0) for a in (q, k, v))
  out2 = fn(q2, k2, v2, causal=causal, segment_ids=seg)
  np.testing.assert_allclose(out2[:, :3], out[:, :3], rtol=1e-6, atol=1e-6)
  assert not np.allclose(out2[:, 3:], out[:, 3:])
  # Segment 0 attends only to itself: same as running it alone.
  alone = fn(q[:, :3], k[:, :3], v[:, :3], causal=causal)
  np.testing.assert_allclose(out[:, :3], alone, rtol=1e-5, atol=1e-6)


def test_attention_rejects_bad_shapes():
  q, k, v = _qkv(10, n=4, kv=3)
  with pytest.raises(ValueError):
    blocks.softmax_attention(q, k, v)
  q, k, v = _qkv(10, t=6, s=4)
  with pytest.raises(ValueError):
    blocks.softmax_attention(q, k, v, causal=False, segment_ids=SEGMENTS)


# ----------------------------------------------------------------------------
# TransformerBlock
# ----------------------------------------------------------------------------

D_MODEL = 16


def _block(**kwargs):
  defaults = dict(num_heads=4, num_kv_heads=2, mlp_dim=24)
  defaults.update(kwargs)
  return blocks.TransformerBlock(**defaults)


def _init_block(module, x, seed=0):
  return _np_params(module, x, seed=seed)


def _np_rmsnorm(x, scale, eps):
  return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * scale


def _np_rope_rotate_half(x, positions, theta):
  # HF Llama formulation: x * cos + rotate_half(x) * sin, cos/sin duplicated.
  d = x.shape[-1]
  inv_freq = 1.0 / theta ** (np.arange(0, d, 2) / d)
  freqs = positions[..., None].astype(np.float64) * inv_freq  # [B, T, D/2]
  emb = np.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
  rot = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
  return x * np.cos(emb) + rot * np.sin(emb)


def _np_dense(p, x):
  y = x @ np.asarray(p['kernel'], np.float64)
  return y + np.asarray(p['bias'], np.float64) if 'bias' in p else y


def _np_block(
  params, x, *, num_heads, num_kv_heads, head_dim, positions, segment_ids, causal, mlp_activation, theta, eps
):
  """Independent float64 numpy forward of the Llama pre-norm block."""
  x = np.asarray(x, np.float64)
  b, t, _ = x.shape
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  h = _np_rmsnorm(x, p['input_norm']['scale'], eps)
  q = _np_dense(p['q_proj'], h).reshape(b, t, num_heads, head_dim)
  k = _np_dense(p['k_proj'], h).reshape(b, t, num_kv_heads, head_dim)
  v = _np_dense(p['v_proj'], h).reshape(b, t, num_kv_heads, head_dim)
  q = _np_rope_rotate_half(q, positions, theta)
  k = _np_rope_rotate_half(k, positions, theta)
  out = np.zeros_like(q)
  group = num_heads // num_kv_heads
  for bi in range(b):
    for n in range(num_heads):
      logits = q[bi, :, n] @ k[bi, :, n // group].T / np.sqrt(head_dim)
      allowed = np.ones((t, t), bool)
      if causal:
        allowed &= np.tril(np.ones((t, t), bool))
      if segment_ids is not None:
        seg = np.asarray(segment_ids[bi])
        allowed &= seg[:, None] == seg[None, :]
      logits = np.where(allowed, logits, -np.inf)
      w = np.exp(logits - logits.max(-1, keepdims=True))
      w /= w.sum(-1, keepdims=True)
      out[bi, :, n] = w @ v[bi, :, n // group]
  x = x + _np_dense(p['o_proj'], out.reshape(b, t, -1))
  h = _np_rmsnorm(x, p['post_attention_norm']['scale'], eps)
  if mlp_activation == 'swiglu':
    g = _np_dense(p['gate_proj'], h)
    h = g / (1 + np.exp(-g)) * _np_dense(p['up_proj'], h)
  else:
    u = _np_dense(p['up_proj'], h)
    h = 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u**3)))
  return x + _np_dense(p['down_proj'], h)


def test_transformer_block_param_names_and_shapes():
  x = jnp.zeros((1, 5, D_MODEL))
  params = jax.eval_shape(_block().init, jax.random.PRNGKey(0), x)['params']
  shapes = jax.tree_util.tree_map(np.shape, _unfreeze(params))
  assert shapes == {
    'input_norm': {'scale': (16,)},
    'q_proj': {'kernel': (16, 16)},
    'k_proj': {'kernel': (16, 8)},
    'v_proj': {'kernel': (16, 8)},
    'o_proj': {'kernel': (16, 16)},
    'post_attention_norm': {'scale': (16,)},
    'gate_proj': {'kernel': (16, 24)},
    'up_proj': {'kernel': (16, 24)},
    'down_proj': {'kernel': (24, 16)},
  }
  gelu = _block(mlp_activation='gelu', use_bias=True, head_dim=6, num_kv_heads=None)
  shapes = jax.tree_util.tree_map(np.shape, _unfreeze(jax.eval_shape(gelu.init, jax.random.PRNGKey(0), x)))
  assert 'gate_proj' not in shapes['params']
  assert shapes['params']['q_proj'] == {'kernel': (16, 24), 'bias': (24,)}
  assert shapes['params']['k_proj'] == {'kernel': (16, 24), 'bias': (24,)}
  assert shapes['params']['o_proj'] == {'kernel': (24, 16), 'bias': (16,)}
  with pytest.raises(ValueError):
    jax.eval_shape(_block(mlp_activation='relu6').init, jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError):
    jax.eval_shape(_block(num_kv_heads=3).init, jax.random.PRNGKey(0), x)


@pytest.mark.parametrize(
  'config',
  [
    dict(mlp_activation='swiglu', causal=True, use_segments=True, custom_positions=True),
    dict(mlp_activation='swiglu', causal=True, use_segments=False, custom_positions=False),
    dict(
      mlp_activation='gelu',
      causal=False,
      use_segments=True,
      custom_positions=False,
      use_bias=True,
      num_kv_heads=4,
    ),
  ],
)
def test_transformer_block_matches_numpy_forward(config):
  config = dict(config)
  use_segments = config.pop('use_segments')
  custom_positions = config.pop('custom_positions')
  theta, eps = 500.0, 1e-5
  module = _block(rope_theta=theta, norm_epsilon=eps, **config)
  rng = _rng(11)
  b, t = 2, 6
  x = jnp.asarray(_randn(rng, b, t, D_MODEL))
  seg = SEGMENTS if use_segments else None
  if custom_positions:
    positions = jnp.asarray(np.array([[0, 1, 2, 0, 1, 2], [0, 1, 0, 1, 2, 0]]))
  else:
    positions = None
  params = _init_block(module, x)
  out = module.apply({'params': params}, x, positions=positions, segment_ids=seg)
  np_positions = np.asarray(positions) if positions is not None else np.tile(np.arange(t), (b, 1))
  expected = _np_block(
    params,
    x,
    num_heads=4,
    num_kv_heads=module.num_kv_heads,
    head_dim=D_MODEL // 4,
    positions=np_positions,
    segment_ids=seg,
    causal=module.causal,
    mlp_activation=module.mlp_activation,
    theta=theta,
    eps=eps,
  )
  assert out.shape == (b, t, D_MODEL)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_transformer_block_causality():
  module = _block()
  rng = _rng(12)
  x = jnp.asarray(_randn(rng, 2, 8, D_MODEL))
  params = _init_block(module, x)
  apply = jax.jit(lambda x: module.apply({'params': params}, x))
  out = apply(x)
  x2 = x.at[:, 5:].set(jnp.asarray(_randn(rng, 2, 3, D_MODEL)))
  out2 = apply(x2)
  np.testing.assert_allclose(out2[:, :5], out[:, :5], rtol=1e-5, atol=1e-6)
  assert not np.allclose(out2[:, 5:], out[:, 5:])
  # Non-causal block: the future does leak into the past.
  nc = _block(causal=False)
  out_nc = nc.apply({'params': params}, x)
  out_nc2 = nc.apply({'params': params}, x2)
  assert not np.allclose(out_nc2[:, :5], out_nc[:, :5])


@pytest.mark.parametrize('causal', [True, False])
def test_transformer_block_segment_isolation(causal):
  module = _block(causal=causal)
  rng = _rng(13)
  x = jnp.asarray(_randn(rng, 2, 6, D_MODEL))
  params = _init_block(module, x)
  out = module.apply({'params': params}, x, segment_ids=SEGMENTS)
  # Change all tokens of segment 1 in row 0 (positions 3..5) and of segment 5
  # in row 1 (positions 2..4).
  x2 = x.at[0, 3:].add(1.0).at[1, 2:5].add(1.0)
  out2 = module.apply({'params': params}, x2, segment_ids=SEGMENTS)
  np.testing.assert_allclose(out2[0, :3], out[0, :3], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out2[1, :2], out[1, :2], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out2[1, 5:], out[1, 5:], rtol=1e-5, atol=1e-6)
  assert not np.allclose(out2[0, 3:], out[0, 3:])


def test_transformer_block_custom_attention_fn_is_called():
  calls = []

  def spy(q, k, v, *, causal, segment_ids):
    calls.append(dict(q=q.shape, k=k.shape, v=v.shape, causal=causal, has_segments=segment_ids is not None))
    return blocks.softmax_attention_reference(q, k, v, causal=causal, segment_ids=segment_ids)

  rng = _rng(14)
  x = jnp.asarray(_randn(rng, 2, 6, D_MODEL))
  default = _block()
  params = _init_block(default, x)
  expected = default.apply({'params': params}, x, segment_ids=SEGMENTS)
  spied = _block(attention_fn=spy)
  out = spied.apply({'params': params}, x, segment_ids=SEGMENTS)
  assert calls == [dict(q=(2, 6, 4, 4), k=(2, 6, 2, 4), v=(2, 6, 2, 4), causal=True, has_segments=True)]
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

  # The output of attention_fn really is what the block uses.
  def zero_attention(q, k, v, *, causal, segment_ids):
    del k, v, causal, segment_ids
    return jnp.zeros_like(q)

  zeroed = _block(attention_fn=zero_attention).apply({'params': params}, x)
  assert not np.allclose(zeroed, expected)
  # With zero attention output, the attention branch adds nothing.
  mlp_only = _block(attention_fn=zero_attention)
  h = x
  n2 = blocks.RMSNorm(epsilon=1e-6).apply({'params': params['post_attention_norm']}, h)
  gate = n2 @ params['gate_proj']['kernel']
  up = n2 @ params['up_proj']['kernel']
  manual = h + (jax.nn.silu(gate) * up) @ params['down_proj']['kernel']
  np.testing.assert_allclose(mlp_only.apply({'params': params}, x), manual, rtol=1e-5, atol=1e-5)

  # functools.partial of softmax_attention also fits the protocol.
  part = _block(attention_fn=functools.partial(blocks.softmax_attention, implementation='xla'))
  np.testing.assert_allclose(
    part.apply({'params': params}, x, segment_ids=SEGMENTS), expected, rtol=1e-5, atol=1e-5
  )


def test_transformer_block_rope_and_positions():
  rng = _rng(15)
  x = jnp.asarray(_randn(rng, 1, 6, D_MODEL))
  module = _block()
  params = _init_block(module, x)
  out = module.apply({'params': params}, x)
  explicit = module.apply({'params': params}, x, positions=jnp.arange(6)[None])
  np.testing.assert_allclose(out, explicit, rtol=1e-6, atol=1e-6)
  # RoPE is relative: shifting all positions does not change the output.
  shifted = module.apply({'params': params}, x, positions=jnp.arange(6)[None] + 37)
  np.testing.assert_allclose(out, shifted, rtol=1e-4, atol=1e-4)
  # Without RoPE the block ignores positions, and differs from the RoPE block.
  no_rope = _block(use_rope=False)
  a = no_rope.apply({'params': params}, x)
  b = no_rope.apply({'params': params}, x, positions=jnp.arange(6)[None] * 5)
  np.testing.assert_allclose(a, b, rtol=1e-6)
  assert not np.allclose(a, out)


def test_transformer_block_bf16():
  rng = _rng(16)
  x = jnp.asarray(_randn(rng, 2, 6, D_MODEL))
  module32 = _block()
  params = _init_block(module32, x)
  module16 = _block(dtype=jnp.bfloat16)
  out16 = module16.apply({'params': params}, x.astype(jnp.bfloat16))
  out32 = module32.apply({'params': params}, x)
  assert out16.dtype == jnp.bfloat16
  np.testing.assert_allclose(out16.astype(jnp.float32), out32, rtol=0.1, atol=0.1)


@pytest.mark.gpu
def test_cudnn_attention_matches_reference_on_gpu():
  """On a GPU, the cuDNN path of softmax_attention (bf16, causal, GQA, segments) equals the reference."""
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(2, 256, 8, 64)), jnp.bfloat16)
  k = jnp.asarray(rng.normal(size=(2, 256, 2, 64)), jnp.bfloat16)
  v = jnp.asarray(rng.normal(size=(2, 256, 2, 64)), jnp.bfloat16)
  segments = jnp.asarray(np.repeat([[0] * 100 + [1] * 156], 2, axis=0), jnp.int32)
  out = blocks.softmax_attention(q, k, v, causal=True, segment_ids=segments, implementation='cudnn')
  ref = blocks.softmax_attention_reference(
    q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), causal=True, segment_ids=segments
  )
  err = jnp.linalg.norm(out.astype(jnp.float32) - ref) / jnp.linalg.norm(ref)
  assert err < 2e-2


# ----------------------------------------------------------------------------
# Decoding against a KV cache: attention offsets, block cache, DecoderLM
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('fn', ['xla', 'cudnn', 'reference'])
def test_softmax_attention_q_offset_and_kv_length(fn):
  """Queries at positions [off, off+T) against a cache with junk past kv_length equal full causal rows."""
  if fn == 'reference':
    attend = blocks.softmax_attention_reference
  else:
    # 'cudnn' must be ignored (XLA path) when offsets are given, so this also runs on CPU.
    attend = functools.partial(blocks.softmax_attention, implementation=fn)
  q, k, v = _qkv(20, b=2, t=7, n=4, kv=2, d=8)
  full = blocks.softmax_attention_reference(q, k, v, causal=True)
  rng = _rng(21)
  junk = jnp.asarray(_randn(rng, 2, 3, 2, 8)) * 5.0
  k_cache, v_cache = jnp.concatenate([k, junk], 1), jnp.concatenate([v, -junk], 1)  # S = 10
  out = attend(q[:, 4:7], k_cache, v_cache, causal=True, segment_ids=None, q_offset=4, kv_length=7)
  np.testing.assert_allclose(out, full[:, 4:7], rtol=1e-5, atol=1e-5)
  # Per-row offsets [B]: row 0 has decoded 2 tokens, row 1 four; one new query each.
  off = jnp.array([2, 4])
  q1 = jnp.stack([q[0, 2], q[1, 4]])[:, None]
  out = attend(q1, k_cache, v_cache, causal=True, segment_ids=None, q_offset=off, kv_length=off + 1)
  np.testing.assert_allclose(out[:, 0], jnp.stack([full[0, 2], full[1, 4]]), rtol=1e-5, atol=1e-5)
  # kv_length alone, non-causal: plain attention over the first 7 keys.
  out = attend(q, k_cache, v_cache, causal=False, segment_ids=None, kv_length=7)
  expected = blocks.softmax_attention_reference(q, k, v, causal=False)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


class _GainAttention(flax.linen.Module):
  """Softmax attention times a learned per-head gain: an attention module with parameters."""

  init_value: float = 1.0

  @flax.linen.compact
  def __call__(self, q, k, v, *, causal, segment_ids, q_offset=None, kv_length=None):
    gain = self.param('gain', flax.linen.initializers.constant(self.init_value), (q.shape[2],))
    out = blocks.softmax_attention_reference(
      q, k, v, causal=causal, segment_ids=segment_ids, q_offset=q_offset, kv_length=kv_length
    )
    return out * gain[:, None]


def test_transformer_block_attention_module_is_a_child():
  rng = _rng(22)
  x = jnp.asarray(_randn(rng, 2, 6, D_MODEL))
  proto = _GainAttention(init_value=2.0)
  module = _block(attention_fn=proto)
  params = _unfreeze(jax.jit(module.init)(jax.random.PRNGKey(0), x)['params'])
  np.testing.assert_array_equal(params['attention_fn']['gain'], np.full(4, 2.0))
  # gain=1 gives the plain softmax block; gain=2 changes the attention branch.
  apply = jax.jit(lambda p: module.apply({'params': p}, x))
  ones = dict(params, attention_fn={'gain': jnp.ones(4)})
  plain = jax.jit(_block().apply)
  expected = plain({'params': {k: v for k, v in params.items() if k != 'attention_fn'}}, x)
  np.testing.assert_allclose(apply(ones), expected, rtol=1e-5, atol=1e-5)
  assert not np.allclose(apply(params), expected)

  # Linen's sharing rule: one instance given to two blocks of a model is one module (parameters under the
  # first block); separate instances (proto.clone()) give separate parameters.
  class TwoBlocks(flax.linen.Module):
    share: bool

    @flax.linen.compact
    def __call__(self, x):
      second = proto if self.share else proto.clone()
      x = _block(attention_fn=proto, name='block_0')(x)
      return _block(attention_fn=second, name='block_1')(x)

  shared = jax.eval_shape(TwoBlocks(share=True).init, jax.random.PRNGKey(0), x)['params']
  assert 'attention_fn' in shared['block_0'] and 'attention_fn' not in shared['block_1']
  separate = jax.eval_shape(TwoBlocks(share=False).init, jax.random.PRNGKey(0), x)['params']
  assert (
    separate['block_0']['attention_fn']['gain'].shape == separate['block_1']['attention_fn']['gain'].shape
  )


def _lm(**kwargs):
  defaults = dict(vocab_size=13, num_layers=2, d_model=16, num_heads=4, num_kv_heads=2, mlp_dim=24)
  defaults.update(kwargs)
  return blocks.DecoderLM(**defaults)


def test_decoder_lm_params_and_dtypes():
  tokens = jnp.zeros((2, 5), jnp.int32)
  shapes = jax.tree_util.tree_map(
    np.shape, _unfreeze(jax.eval_shape(_lm().init, jax.random.PRNGKey(0), tokens))
  )
  params = shapes['params']
  assert set(params) == {'embed_tokens', 'layers_0', 'layers_1', 'final_norm'}
  assert params['embed_tokens'] == {'embedding': (13, 16)}
  assert params['layers_1']['k_proj'] == {'kernel': (16, 8)}
  untied = jax.eval_shape(_lm(tie_embeddings=False).init, jax.random.PRNGKey(0), tokens)['params']
  assert untied['lm_head']['kernel'].shape == (16, 13)
  # A module prototype: every layer gets its own copy of its parameters; the prototype owns none.
  with_module = jax.eval_shape(_lm(attention_fn=_GainAttention()).init, jax.random.PRNGKey(0), tokens)
  assert with_module['params']['layers_0']['attention_fn']['gain'].shape == (4,)
  assert with_module['params']['layers_1']['attention_fn']['gain'].shape == (4,)
  assert 'attention_fn' not in with_module['params']
  # Embedding init N(0, 1/d_model); bf16 computation still gives float32 logits.
  model = _lm(d_model=64, num_heads=4, num_kv_heads=None, num_layers=1, vocab_size=512)
  big = jnp.zeros((1, 3), jnp.int32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), big)
  np.testing.assert_allclose(np.std(variables['params']['embed_tokens']['embedding']), 1 / 8, rtol=0.05)
  logits = jax.jit(model.clone(dtype=jnp.bfloat16).apply)(variables, big)
  assert logits.dtype == jnp.float32 and logits.shape == (1, 3, 512)


def test_decoder_lm_matches_blocks_by_hand():
  """Embedding -> blocks -> final norm -> tied head, recomputed with the public pieces."""
  rng = _rng(23)
  tokens = jnp.asarray(rng.integers(0, 13, size=(2, 6)))
  model = _lm()
  params = _np_params(model, tokens)
  logits = model.apply({'params': params}, tokens, segment_ids=SEGMENTS)
  x = params['embed_tokens']['embedding'][tokens]
  block = _block(num_heads=4, num_kv_heads=2, mlp_dim=24)
  for i in range(2):
    x = block.apply({'params': params[f'layers_{i}']}, x, segment_ids=SEGMENTS)
  x = blocks.RMSNorm().apply({'params': params['final_norm']}, x)
  np.testing.assert_allclose(logits, x @ params['embed_tokens']['embedding'].T, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope='module')
def decode_setup():
  """A GQA softmax+RoPE DecoderLM (with remat, so remat+cache is covered), its params and jitted calls."""
  model = _lm(remat=True, rope_theta=100.0)
  rng = _rng(24)
  tokens = jnp.asarray(rng.integers(0, 13, size=(2, 9)))
  params = _np_params(model, tokens)
  with jax.default_matmul_precision('float32'):  # The autouse fixture is not active in module fixtures.
    full = jax.jit(lambda p, t: model.apply({'params': p}, t))(params, tokens)
  decoder = model.clone(decode=True)

  @jax.jit
  def step(params, cache, tokens):
    logits, mutated = decoder.apply({'params': params, 'cache': cache}, tokens, mutable=['cache'])
    return logits, mutated['cache']

  return dict(model=model, decoder=decoder, params=params, tokens=tokens, full=full, step=step)


def test_decoder_lm_cache_layout(decode_setup):
  decoder = decode_setup['decoder']
  cache = decoder.init_cache(2, 12)
  assert set(cache) == {'layers_0', 'layers_1'}
  layer = cache['layers_0']
  assert layer['cached_key'].shape == layer['cached_value'].shape == (2, 12, 2, 4)
  assert layer['cache_index'].shape == () and layer['cache_index'].dtype == jnp.int32
  # Same structure as the usual Flax pattern: init the decoding model on [B, max_len] tokens.
  via_init = jax.eval_shape(decoder.init, jax.random.PRNGKey(0), jnp.zeros((2, 12), jnp.int32))
  assert jax.tree_util.tree_map(np.shape, _unfreeze(via_init)['cache']) == jax.tree_util.tree_map(
    np.shape, cache
  )
  # The decoding model has the same parameters as the training model.
  p_train = jax.eval_shape(decode_setup['model'].init, jax.random.PRNGKey(0), jnp.zeros((2, 12), jnp.int32))
  assert jax.tree_util.tree_map(np.shape, _unfreeze(via_init)['params']) == jax.tree_util.tree_map(
    np.shape, _unfreeze(p_train)['params']
  )


def test_decoder_lm_decode_token_by_token_matches_full_forward(decode_setup):
  s = decode_setup
  cache = s['decoder'].init_cache(2, 12)
  outs = []
  for i in range(s['tokens'].shape[1]):
    logits, cache = s['step'](s['params'], cache, s['tokens'][:, i : i + 1])
    outs.append(logits)
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), s['full'], rtol=1e-4, atol=1e-4)
  assert int(cache['layers_1']['cache_index']) == 9


def test_decoder_lm_prefill_then_steps_matches_full_forward(decode_setup):
  s = decode_setup
  cache = s['decoder'].init_cache(2, 12)
  logits, cache = s['step'](s['params'], cache, s['tokens'][:, :6])
  outs = [logits]
  for i in range(6, 9):
    logits, cache = s['step'](s['params'], cache, s['tokens'][:, i : i + 1])
    outs.append(logits)
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), s['full'], rtol=1e-4, atol=1e-4)
  # Keys are cached after RoPE, and nothing past the index is written.
  assert int(cache['layers_0']['cache_index']) == 9
  np.testing.assert_array_equal(cache['layers_0']['cached_key'][:, 9:], 0.0)
  with pytest.raises(ValueError, match='segment_ids'):
    s['decoder'].apply(
      {'params': s['params'], 'cache': cache},
      s['tokens'][:, :1],
      segment_ids=SEGMENTS[:, :1],
      mutable=['cache'],
    )


def test_decoder_lm_remat_same_loss_and_grads():
  rng = _rng(25)
  tokens = jnp.asarray(rng.integers(0, 13, size=(2, 6)))
  plain = _lm(num_layers=1)
  params = _np_params(plain, tokens)

  def loss(model):
    return jax.jit(jax.value_and_grad(lambda p: jnp.mean(model.apply({'params': p}, tokens) ** 2)))(params)

  (l0, g0), (l1, g1) = loss(plain), loss(plain.clone(remat=True))
  np.testing.assert_allclose(l0, l1, rtol=1e-6)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g0, g1)


# ----------------------------------------------------------------------------
# Left-padded batches (kv_start): batched generation of prompts of different lengths
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('fn', ['xla', 'reference'])
def test_softmax_attention_kv_start_hides_left_padding(fn):
  """Row 1 left-padded by 3 junk keys (kv_start=3) equals row 1 alone, in full and in cache-decoding form."""
  attend = blocks.softmax_attention_reference if fn == 'reference' else blocks.softmax_attention
  q, k, v = _qkv(30, b=2, t=7, n=4, kv=2, d=8)
  alone = blocks.softmax_attention_reference(q[1:, :4], k[1:, :4], v[1:, :4], causal=True)
  rng = _rng(31)
  junk = [jnp.asarray(_randn(rng, 1, 3, *x.shape[2:])) * 5.0 for x in (q, k, v)]
  qp, kp, vp = (jnp.concatenate([j, x[1:, :4]], 1) for j, x in zip(junk, (q, k, v)))
  qb, kb, vb = (jnp.concatenate([x[:1], y], 0) for x, y in zip((q, k, v), (qp, kp, vp)))
  start = jnp.array([0, 3])
  out = attend(qb, kb, vb, causal=True, segment_ids=None, kv_start=start)
  np.testing.assert_allclose(out[1, 3:], alone[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out[0], blocks.softmax_attention_reference(q[:1], k[:1], v[:1])[0], atol=1e-5)
  assert np.all(np.isfinite(out))  # Padding queries see no key: arbitrary but finite.
  # One decoding step at cache position 6 (the last real token) with the same padding.
  out = attend(qb[:, 6:], kb, vb, causal=True, segment_ids=None, q_offset=6, kv_length=7, kv_start=start)
  np.testing.assert_allclose(out[1, 0], alone[0, 3], rtol=1e-5, atol=1e-5)


def test_decoder_lm_left_padding_matches_each_sequence_alone(decode_setup):
  """A left-padded batch (full forward, and prefill + cached steps) gives each sequence's logits alone."""
  s = decode_setup
  model, decoder, params = s['model'], s['decoder'], s['params']
  long_seq, short_seq = s['tokens'][0], s['tokens'][1, :5]
  alone_long = s['full'][0]
  alone_short = model.apply({'params': params}, short_seq[None])[0]
  pad = 4
  batch = jnp.stack([long_seq, jnp.concatenate([jnp.full((pad,), 7, jnp.int32), short_seq])])
  start = jnp.array([0, pad])
  logits = model.apply({'params': params}, batch, kv_start=start)
  np.testing.assert_allclose(logits[0], alone_long, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logits[1, pad:], alone_short, rtol=1e-4, atol=1e-4)

  @jax.jit
  def step(params, cache, tokens):
    out, mutated = decoder.apply(
      {'params': params, 'cache': cache}, tokens, kv_start=start, mutable=['cache']
    )
    return out, mutated['cache']

  cache = decoder.init_cache(2, 12)
  prefill, cache = step(params, cache, batch[:, :6])
  outs = [prefill]
  for i in range(6, 9):
    out, cache = step(params, cache, batch[:, i : i + 1])
    outs.append(out)
  outs = jnp.concatenate(outs, axis=1)
  np.testing.assert_allclose(outs[0], alone_long, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(outs[1, pad:], alone_short, rtol=1e-4, atol=1e-4)
  # Without kv_start the padding leaks into the short sequence (the test would catch a dropped mask).
  leaky = model.apply({'params': params}, batch)
  assert np.max(np.abs(leaky[1, pad:] - alone_short)) > 1e-2


def test_attention_fn_without_kv_start_keyword_still_works():
  """kv_start is only passed when given: an attention function without the keyword still serves decoding."""

  def plain(q, k, v, *, causal, segment_ids, q_offset=None, kv_length=None):
    return blocks.softmax_attention_reference(
      q, k, v, causal=causal, segment_ids=segment_ids, q_offset=q_offset, kv_length=kv_length
    )

  model = _lm(num_layers=1, attention_fn=plain)
  tokens = jnp.asarray(_rng(32).integers(0, 13, size=(2, 5)))
  params = _np_params(model, tokens)
  full = model.apply({'params': params}, tokens)
  decoder = model.clone(decode=True)
  logits, _ = decoder.apply({'params': params, 'cache': decoder.init_cache(2, 8)}, tokens, mutable=['cache'])
  np.testing.assert_allclose(logits, full, rtol=1e-4, atol=1e-4)
  with pytest.raises(TypeError, match='kv_start'):
    model.apply({'params': params}, tokens, kv_start=jnp.zeros((2,), jnp.int32))


def test_decoder_return_hidden_gives_the_states_under_the_tied_head():
  model = blocks.DecoderLM(vocab_size=11, num_layers=1, d_model=8, num_heads=2, mlp_dim=16)
  tokens = jnp.array([[1, 2, 3, 4]])
  params = model.init(jax.random.PRNGKey(0), tokens)['params']
  hidden = model.clone(return_hidden=True).apply({'params': params}, tokens)
  logits = model.apply({'params': params}, tokens)
  assert hidden.shape == (1, 4, 8) and hidden.dtype == jnp.float32
  np.testing.assert_allclose(hidden @ params['embed_tokens']['embedding'].T, logits, rtol=1e-5, atol=1e-5)


def test_embed_casts_rows_and_scatters_in_param_dtype():
  """Forward equals flax's nn.Embed; the backward's scatter-add runs in float32, not bfloat16."""
  tokens = jnp.array([[0, 3, 3, 1], [4, 4, 4, 2]], jnp.int32)
  ours = blocks.Embed(5, 8, dtype=jnp.bfloat16)
  theirs = flax.linen.Embed(5, 8, dtype=jnp.bfloat16)
  params = ours.init(jax.random.PRNGKey(0), tokens)
  out = ours.apply(params, tokens)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(
    np.asarray(out, np.float32), np.asarray(theirs.apply(params, tokens), np.float32)
  )

  def loss(p, module):
    return jnp.sum(module.apply(p, tokens).astype(jnp.float32) ** 2)

  jaxpr = str(jax.make_jaxpr(jax.grad(loss), static_argnums=1)(params, ours))
  assert 'scatter-add' in jaxpr and not any(
    'scatter-add' in line and 'bf16[5,8]' in line for line in jaxpr.splitlines()
  ), jaxpr
  grad = jax.grad(loss)(params, ours)['params']['embedding']
  assert grad.dtype == jnp.float32
  # Row 4 appears three times: its gradient is the sum of the three cotangents (2 * row, in bf16 values).
  row4 = np.asarray(out[1, 0], np.float32)
  np.testing.assert_allclose(np.asarray(grad[4]), 3 * 2 * row4, rtol=1e-6)
  with pytest.raises(ValueError, match='integers'):
    ours.apply(params, tokens.astype(jnp.float32))
