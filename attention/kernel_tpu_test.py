"""Tests of the Pallas TPU stick-breaking kernel, run in TPU interpret mode on CPU.

The kernel (forward, dq and dk/dv kernels) is compared with ``stick_breaking_attention_reference`` and its
``jax.vjp`` (random cotangents on both ``o`` and ``rem``), with the float64 brute force, and with the
backward formula written densely in ``jnp`` (which is itself checked against autodiff first). Shapes are
tiny and blocks small (8 to 32) so several key and query blocks, padding and GQA are exercised within the
CPU budget; each configuration is one jit (forward with residuals plus both backward kernels).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention import kernel_tpu, ops
from attention.reference import (
  AttentionInputError,
  pair_mask,
  softplus,
  stick_breaking_attention_reference,
  stick_breaking_bruteforce,
)

BS = kernel_tpu.BlockSizes


def _inputs(seed, b, t, n, kh, d, dtype=jnp.float32):
  kq, kk, kv, ko, kr = jax.random.split(jax.random.PRNGKey(seed), 5)
  q = jax.random.normal(kq, (b, t, n, d), jnp.float32)
  k = jax.random.normal(kk, (b, t, kh, d), jnp.float32)
  v = jax.random.normal(kv, (b, t, kh, d), jnp.float32)
  cto = jax.random.normal(ko, (b, t, n, d), jnp.float32)
  ctr = jax.random.normal(kr, (b, t, n), jnp.float32)
  return q.astype(dtype), k.astype(dtype), v.astype(dtype), cto, ctr


def _vjp_fn(fn):
  """Jitted ``(q, k, v, cto, ctr) -> (o, rem, dq, dk, dv)`` of ``fn`` with cotangents on ``(o, rem)``."""

  def run(q, k, v, cto, ctr):
    (o, rem), pull = jax.vjp(fn, q, k, v)
    return (o, rem, *pull((cto.astype(o.dtype), ctr)))

  return jax.jit(run)


def _value_and_vjp(fn, q, k, v, cto, ctr):
  return _vjp_fn(fn)(q, k, v, cto, ctr)


def _kernel_fn(block_sizes, segment_ids=None, scale=None):
  return lambda q, k, v: kernel_tpu.stick_breaking_attention_tpu(
    q, k, v, segment_ids=segment_ids, scale=scale, block_sizes=block_sizes, interpret=True
  )


def _reference_fn(segment_ids=None, scale=None):
  return lambda q, k, v: stick_breaking_attention_reference(q, k, v, segment_ids=segment_ids, scale=scale)


def _f32(xs):
  return [np.asarray(jnp.asarray(x, jnp.float32)) for x in xs]


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def _formula_vjp(q, k, v, cto, ctr, segment_ids=None, scale=None):
  """The kernels' backward written densely: ``a = A (g - dr)``, ``dz = a - beta * P`` with ``P`` the
  inclusive prefix of ``a`` over keys farther from the query. Float32, one kv head per query head."""
  b, t, n, d = q.shape
  grp = n // k.shape[2]
  scale = 1.0 / np.sqrt(d) if scale is None else scale
  hi = jax.lax.Precision.HIGHEST
  kf, vf = jnp.repeat(k, grp, axis=2), jnp.repeat(v, grp, axis=2)
  z = jnp.einsum('bjnd,bind->bnji', q, kf, precision=hi) * scale
  mask = pair_mask(t, t, segment_ids=segment_ids)
  log1mb = jnp.where(mask, -softplus(z), 0.0)
  suffix = jnp.flip(jnp.cumsum(jnp.flip(log1mb, -1), -1), -1)
  a_w = jnp.where(mask, jnp.exp(jnp.where(mask, z + suffix, -jnp.inf)), 0.0)
  g = jnp.einsum('bjnd,bind->bnji', cto, vf, precision=hi)
  a = a_w * (g - jnp.transpose(ctr, (0, 2, 1))[..., None])
  p = jnp.cumsum(a, axis=-1)
  dz = jnp.where(mask, a - jax.nn.sigmoid(z) * p, 0.0)
  dq = scale * jnp.einsum('bnji,bind->bjnd', dz, kf, precision=hi)
  dk = scale * jnp.einsum('bnji,bjnd->bind', dz, q, precision=hi)
  dv = jnp.einsum('bnji,bjnd->bind', a_w, cto, precision=hi)
  fold = lambda x: x.reshape(b, t, k.shape[2], grp, d).sum(3)  # noqa: E731
  return dq, fold(dk), fold(dv)


def test_backward_formula_matches_autodiff():
  q, k, v, cto, ctr = _inputs(0, 2, 12, 4, 2, 8)
  seg = jnp.array([[0] * 5 + [1] * 7, [3] * 12], jnp.int32)
  for s in (None, seg):
    want = _value_and_vjp(_reference_fn(s), q, k, v, cto, ctr)[2:]
    got = jax.jit(_formula_vjp)(q, k, v, cto, ctr, segment_ids=s)
    for name, x, y in zip('qkv', got, want):
      np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-5, err_msg=f'd{name}')


# (batch, length, q heads, kv heads, head dim, dtype, block sizes): lengths not a multiple of the
# blocks, key blocks taller and shorter than query blocks, head dims padded to 128 lanes, GQA.
CONFIGS = {
  'fp32_gqa_bq16_bk32': (2, 40, 4, 2, 32, jnp.float32, BS(16, 32, 16)),
  'fp32_d48_bq32_bk16': (1, 40, 2, 1, 48, jnp.float32, BS(32, 16, 32)),
  'bf16_d64_group4': (1, 64, 4, 1, 64, jnp.bfloat16, BS(32, 32, 16)),
}


@pytest.mark.parametrize('name', list(CONFIGS))
def test_matches_reference(name):
  b, t, n, kh, d, dtype, bs = CONFIGS[name]
  q, k, v, cto, ctr = _inputs(1, b, t, n, kh, d, dtype)
  kernel_vjp = _vjp_fn(_kernel_fn(bs))
  got = kernel_vjp(q, k, v, cto, ctr)
  assert got[0].dtype == dtype and got[1].dtype == jnp.float32 and got[0].shape == q.shape
  assert got[1].shape == (b, t, n)
  assert all(g.dtype == x.dtype for g, x in zip(got[2:], (q, k, v)))
  # The truth: the reference (and its vjp) on the same values in float32.
  q32, k32, v32 = (x.astype(jnp.float32) for x in (q, k, v))
  want = _value_and_vjp(_reference_fn(), q32, k32, v32, cto, ctr)
  got, want = _f32(got), _f32(want)
  names = ('o', 'rem', 'dq', 'dk', 'dv')
  # First position: no keys, empty output, full stick.
  np.testing.assert_array_equal(got[0][:, 0], 0.0)
  np.testing.assert_array_equal(got[1][:, 0], 1.0)
  if dtype == jnp.float32:
    np.testing.assert_allclose(got[0], want[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got[1], want[1], atol=1e-5, rtol=0)
    for nm, x, y in zip(names[2:], got[2:], want[2:]):
      np.testing.assert_allclose(x, y, atol=5e-5, rtol=1e-5, err_msg=nm)
    # The dense jnp backward formula agrees as well, and the float64 brute force for the forward.
    for nm, x, y in zip(names[2:], got[2:], jax.jit(_formula_vjp)(q, k, v, cto, ctr)):
      np.testing.assert_allclose(x, y, atol=5e-5, rtol=1e-5, err_msg=nm)
    o64, rem64 = stick_breaking_bruteforce(q, k, v)
    np.testing.assert_allclose(got[0], o64, atol=1e-5)
    np.testing.assert_allclose(got[1], rem64, atol=1e-5)
  else:
    for nm, x, y in zip(names, got, want):
      assert _rel(x, y) < 2e-2, (nm, _rel(x, y))
  # Deterministic backward (no atomics): a second run is bitwise identical.
  again = _f32(kernel_vjp(q, k, v, cto, ctr))
  for nm, x, y in zip(names, got, again):
    np.testing.assert_array_equal(x, y, err_msg=nm)


def test_segment_ids_packed_equals_separate():
  """Packed documents: equals each document run alone; a query that starts its document (including a
  one-token document) gets o = 0 and rem = 1; gradients match the reference with segment ids."""
  lengths = ((13, 1, 26), (20, 20))
  t = 40
  seg = jnp.array([np.repeat(np.arange(len(ls)) * 3 + r, ls) for r, ls in enumerate(lengths)], jnp.int32)
  q, k, v, cto, ctr = _inputs(2, 2, t, 2, 1, 32)
  bs = BS(16, 16, 16)
  o, rem = jax.jit(
    lambda q, k, v, s: ops.stick_breaking_attention(
      q, k, v, segment_ids=s, implementation='tpu', block_sizes=bs, interpret=True
    )
  )(q, k, v, seg)
  for row, ls in enumerate(lengths):
    start = 0
    for ln in ls:
      piece = (x[row : row + 1, start : start + ln] for x in (q, k, v))
      o_ref, rem_ref = stick_breaking_attention_reference(*piece)
      np.testing.assert_allclose(o[row : row + 1, start : start + ln], o_ref, atol=1e-5)
      np.testing.assert_allclose(rem[row : row + 1, start : start + ln], rem_ref, atol=1e-5)
      np.testing.assert_array_equal(o[row, start], 0.0)  # fully masked row
      np.testing.assert_array_equal(rem[row, start], 1.0)
      start += ln
  got = _f32(_value_and_vjp(_kernel_fn(bs, seg), q, k, v, cto, ctr))
  want = _f32(_value_and_vjp(_reference_fn(seg), q, k, v, cto, ctr))
  for nm, x, y in zip(('o', 'rem', 'dq', 'dk', 'dv'), got, want):
    np.testing.assert_allclose(x, y, atol=5e-5, rtol=1e-5, err_msg=nm)


def test_extreme_logits_are_finite():
  """Logits of +-60 (softplus past its threshold, sticks of e^-60): finite and equal to the reference."""
  t, d = 24, 32
  signs = jax.random.rademacher(jax.random.PRNGKey(3), (2, t), jnp.float32)
  basis = jnp.zeros((d,)).at[0].set(np.sqrt(60.0))
  q = (signs[0][:, None] * basis)[None, :, None, :]
  k = (signs[1][:, None] * basis)[None, :, None, :]
  v = jax.random.normal(jax.random.PRNGKey(4), (1, t, 1, d))
  cto = jax.random.normal(jax.random.PRNGKey(5), q.shape)
  ctr = jax.random.normal(jax.random.PRNGKey(6), (1, t, 1))
  got = _f32(_value_and_vjp(_kernel_fn(BS(8, 8, 8), scale=1.0), q, k, v, cto, ctr))
  want = _f32(_value_and_vjp(_reference_fn(scale=1.0), q, k, v, cto, ctr))
  for nm, x, y in zip(('o', 'rem', 'dq', 'dk', 'dv'), got, want):
    assert np.all(np.isfinite(x)), nm
    np.testing.assert_allclose(x, y, atol=1e-4, rtol=1e-5, err_msg=nm)


def test_float16_forward_default_blocks():
  """float16 (computed in float32) with the default block sizes (one tile) and the plain forward."""
  q, k, v, _, _ = _inputs(7, 1, 16, 2, 1, 32, jnp.float16)
  o, rem = jax.jit(lambda q, k, v: kernel_tpu.stick_breaking_attention_tpu(q, k, v, interpret=True))(q, k, v)
  o_ref, rem_ref = stick_breaking_attention_reference(q, k, v)
  assert o.dtype == jnp.float16 and rem.dtype == jnp.float32
  np.testing.assert_allclose(np.float32(o), np.float32(o_ref), atol=2e-3)
  np.testing.assert_allclose(rem, rem_ref, atol=1e-5)


@pytest.mark.parametrize(
  'shapes, seg_shape, block_sizes, needle',
  [
    (((2, 8, 2), (2, 8, 1, 32), (2, 8, 1, 32)), None, None, 'q must be 4-D'),
    (((2, 8, 2, 16), (2, 8, 1, 16), (2, 8, 1, 16)), None, None, 'head_dim 16'),
    (((2, 8, 2, 264), (2, 8, 1, 264), (2, 8, 1, 264)), None, None, 'head_dim 264'),
    (((2, 8, 3, 32), (2, 8, 2, 32), (2, 8, 2, 32)), None, None, 'must divide q heads'),
    (((2, 8, 2, 32), (2, 8, 1, 32), (2, 8, 1, 32)), (2, 9), None, 'segment_ids'),
    (((2, 8, 2, 32), (2, 8, 1, 32), (2, 8, 1, 32)), None, BS(12, 16, 16), 'block_sizes.block_q'),
    (((2, 8, 2, 32), (2, 9, 1, 32), (2, 9, 1, 32)), None, None, 'k length'),
  ],
)
def test_bad_inputs_raise(shapes, seg_shape, block_sizes, needle):
  q, k, v = (jnp.zeros(s, jnp.float32) for s in shapes)
  seg = None if seg_shape is None else jnp.zeros(seg_shape, jnp.int32)
  with pytest.raises(AttentionInputError, match=needle):
    kernel_tpu.stick_breaking_attention_tpu(q, k, v, segment_ids=seg, block_sizes=block_sizes, interpret=True)


def test_bad_dtype_raises():
  x = jnp.zeros((1, 8, 1, 32), jnp.int32)
  with pytest.raises(AttentionInputError, match='q has dtype int32'):
    kernel_tpu.stick_breaking_attention_tpu(x, x, x, interpret=True)


def test_block_sizes_for_head_dim():
  for d in (32, 64, 128, 256):
    bs = BS.for_head_dim(d)
    assert bs.block_k % 128 == 0 and bs.block_q % 8 == 0 and bs.block_q_bwd % 8 == 0
  lo, hi = kernel_tpu.HEAD_DIMS
  assert (lo, hi) == (32, 256)


@pytest.mark.parametrize('dtype, with_seg', [(jnp.bfloat16, True), (jnp.float32, False)])
def test_lowers_for_tpu(dtype, with_seg):
  """Forward and both backward kernels pass JAX's Mosaic TPU lowering (block-shape rules, supported
  primitives) with the default block sizes. This is lowering only: libtpu's compiler is not run here."""
  b, t, n, kh, d = 1, 300, 4, 2, 64
  q = jax.ShapeDtypeStruct((b, t, n, d), dtype)
  kv = jax.ShapeDtypeStruct((b, t, kh, d), dtype)
  seg = jax.ShapeDtypeStruct((b, t), jnp.int32)

  def loss(q, k, v, s):
    o, rem = kernel_tpu.stick_breaking_attention_tpu(q, k, v, segment_ids=s if with_seg else None)
    return jnp.sum(o.astype(jnp.float32)) + jnp.sum(rem)

  lowered = (
    jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, kv, kv, seg).lower(lowering_platforms=('tpu',))
  )
  assert lowered.as_text().count('tpu_custom_call') == 3
