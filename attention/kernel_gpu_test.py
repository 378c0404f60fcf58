"""The Pallas GPU kernel against the reference: interpret mode on CPU, compiled under the `gpu` marker."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention import kernel_gpu
from attention.reference import AttentionInputError, stick_breaking_attention_reference

SMALL = kernel_gpu.BlockSizes(block_q=16, block_k=16, block_q_dq=16, block_q_dkv=32)
ON_GPU = jax.default_backend() in ('gpu', 'cuda')
# fp32 on GPU: tensor-core dots may round to tf32 inside the kernel; the reference runs at HIGHEST.
TOL = {'float32': 2e-3 if ON_GPU else 2e-5, 'bfloat16': 2.5e-2, 'float16': 1e-2}


def _inputs(b, t, n, kh, d, dtype, seed=0, logit_scale=2.0):
  r = np.random.default_rng(seed)
  q = jnp.asarray(r.normal(size=(b, t, n, d)) * logit_scale, dtype)
  k = jnp.asarray(r.normal(size=(b, t, kh, d)) * logit_scale, dtype)
  v = jnp.asarray(r.normal(size=(b, t, kh, d)), dtype)
  cto = jnp.asarray(r.normal(size=(b, t, n, d)), jnp.float32)
  ctr = jnp.asarray(r.normal(size=(b, t, n)), jnp.float32)
  return q, k, v, cto, ctr


def _value_and_grads(fn, q, k, v, cto, ctr):
  def loss(q, k, v):
    o, rem = fn(q, k, v)
    return jnp.sum(o.astype(jnp.float32) * cto) + jnp.sum(rem * ctr), (o, rem)

  (_, (o, rem)), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
  return (o, rem) + tuple(grads)


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _compare(b, t, n, kh, d, dtype, *, seg=None, bs=SMALL, interpret=True, seed=0):
  def kernel(q, k, v):
    return kernel_gpu.stick_breaking_attention_gpu(
      q, k, v, segment_ids=seg, block_sizes=bs, interpret=interpret
    )

  return _compare_fn(kernel, b, t, n, kh, d, dtype, seg=seg, seed=seed)


def _compare_fn(kernel, b, t, n, kh, d, dtype, *, seg=None, seed=0):
  """``kernel(q, k, v) -> (o, rem)`` against the fp32 reference: outputs and all gradients."""
  q, k, v, cto, ctr = _inputs(b, t, n, kh, d, dtype, seed)

  def ref(q, k, v):
    # the reference sees the same rounded inputs, computes in fp32
    o, rem = stick_breaking_attention_reference(
      q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), segment_ids=seg
    )
    return o, rem

  got = jax.jit(lambda q, k, v: _value_and_grads(kernel, q, k, v, cto, ctr))(q, k, v)
  want = jax.jit(lambda q, k, v: _value_and_grads(ref, q, k, v, cto, ctr))(q, k, v)
  tol = TOL[jnp.dtype(dtype).name]
  for name, a, w in zip(('o', 'rem', 'dq', 'dk', 'dv'), got, want):
    assert np.all(np.isfinite(np.asarray(a, np.float32))), name
    assert _rel(a, w) < tol, (name, _rel(a, w))
  return got


@pytest.mark.parametrize(
  'b,t,n,kh,d,dtype',
  [
    (2, 40, 4, 2, 32, 'float32'),  # length not a block multiple, GQA 2:1
    (1, 33, 2, 1, 48, 'float32'),  # odd head dim (padded to 64), multi-query
    (1, 64, 2, 2, 64, 'bfloat16'),
  ],
)
def test_interpret_matches_reference(b, t, n, kh, d, dtype):
  _compare(b, t, n, kh, d, jnp.dtype(dtype))


def test_interpret_segments_equal_separate_sequences():
  t1, t2 = 13, 27
  seg = jnp.asarray(np.array([[0] * t1 + [1] * t2]), jnp.int32)
  q, k, v, cto, ctr = _inputs(1, t1 + t2, 2, 1, 32, jnp.float32, seed=3)
  got = _compare(1, t1 + t2, 2, 1, 32, jnp.float32, seg=seg, seed=3)
  for sl in (slice(0, t1), slice(t1, t1 + t2)):
    o, rem = kernel_gpu.stick_breaking_attention_gpu(
      q[:, sl], k[:, sl], v[:, sl], block_sizes=SMALL, interpret=True
    )
    np.testing.assert_allclose(got[0][:, sl], o, atol=1e-5)
    np.testing.assert_allclose(got[1][:, sl], rem, atol=1e-6)
  # the first token of each document sees nothing: o = 0, rem = 1 (a fully masked row)
  for first in (0, t1):
    np.testing.assert_allclose(got[0][:, first], 0.0, atol=1e-7)
    np.testing.assert_allclose(got[1][:, first], 1.0, atol=1e-7)


def test_interpret_extreme_logits_are_finite():
  q, k, v, cto, ctr = _inputs(1, 24, 2, 2, 32, jnp.float32, logit_scale=1.0)
  # logits of about +-60: rows of q and k scaled so that q.k / sqrt(d) = +-60
  q = q / jnp.linalg.norm(q, axis=-1, keepdims=True) * np.sqrt(60.0 * np.sqrt(32))
  k = k / jnp.linalg.norm(k, axis=-1, keepdims=True) * np.sqrt(60.0 * np.sqrt(32))
  k = k.at[:, ::2].multiply(-1.0)
  got = _value_and_grads(
    lambda q, k, v: kernel_gpu.stick_breaking_attention_gpu(q, k, v, block_sizes=SMALL, interpret=True),
    q, k, v, cto, ctr,
  )  # fmt: skip
  want = _value_and_grads(stick_breaking_attention_reference, q, k, v, cto, ctr)
  for a, w in zip(got, want):
    assert np.all(np.isfinite(a))
    assert _rel(a, w) < 1e-4


def test_bad_inputs_name_the_argument():
  q = jnp.zeros((1, 8, 4, 32))
  with pytest.raises(AttentionInputError, match='k/v heads'):
    kernel_gpu.stick_breaking_attention_gpu(q, jnp.zeros((1, 8, 3, 32)), jnp.zeros((1, 8, 3, 32)))
  with pytest.raises(AttentionInputError, match='head_dim 16'):
    kernel_gpu.stick_breaking_attention_gpu(*(jnp.zeros((1, 8, 2, 16)),) * 3)
  with pytest.raises(AttentionInputError, match='dtype'):
    kernel_gpu.stick_breaking_attention_gpu(*(jnp.zeros((1, 8, 2, 32), jnp.int32),) * 3)
  with pytest.raises(AttentionInputError, match='k length 9 differs from q length 8'):
    kernel_gpu.stick_breaking_attention_gpu(q, jnp.zeros((1, 9, 2, 32)), jnp.zeros((1, 9, 2, 32)))
  with pytest.raises(AttentionInputError, match='segment_ids'):
    kernel_gpu.stick_breaking_attention_gpu(q, q, q, segment_ids=jnp.zeros((1, 7), jnp.int32))


def test_block_sizes_validate_and_fit():
  with pytest.raises(ValueError, match='power of two'):
    kernel_gpu.BlockSizes(block_q=48)
  assert kernel_gpu.BlockSizes.for_head_dim(256).block_q == 32
  assert kernel_gpu.BlockSizes().fit(20).block_k == 32


@pytest.mark.gpu
@pytest.mark.parametrize(
  'b,t,n,kh,d,dtype,seg',
  [
    (2, 1000, 4, 2, 64, 'bfloat16', False),
    (1, 777, 4, 4, 128, 'bfloat16', True),
    (1, 300, 2, 1, 96, 'float16', False),
    (1, 513, 2, 2, 256, 'bfloat16', False),
    (1, 256, 2, 2, 32, 'float32', True),
  ],
)
def test_gpu_matches_reference(b, t, n, kh, d, dtype, seg):
  seg_ids = None
  if seg:
    seg_ids = jnp.asarray((np.arange(t)[None, :] >= t // 3) + (np.arange(t)[None, :] >= t // 2), jnp.int32)
    seg_ids = jnp.repeat(seg_ids, b, axis=0)
  _compare(b, t, n, kh, d, jnp.dtype(dtype), seg=seg_ids, bs=None, interpret=False)


@pytest.mark.gpu
def test_gpu_backward_is_deterministic():
  q, k, v, cto, ctr = _inputs(2, 1024, 4, 2, 64, jnp.bfloat16)
  f = jax.jit(lambda q, k, v: _value_and_grads(kernel_gpu.stick_breaking_attention_gpu, q, k, v, cto, ctr))
  a, b = f(q, k, v), f(q, k, v)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


def test_interpret_matmul_scan_matches_reference():
  import dataclasses

  _compare(1, 40, 2, 1, 32, jnp.float32, bs=dataclasses.replace(SMALL, scan='matmul3'))
  _compare(1, 40, 2, 1, 32, jnp.bfloat16, bs=dataclasses.replace(SMALL, scan='matmul'))
