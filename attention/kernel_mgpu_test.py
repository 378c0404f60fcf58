"""The Mosaic GPU forward: lowered for CUDA on CPU (structure), compared with the reference under `gpu`."""

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from attention import kernel_mgpu, ops
from attention.kernel_gpu_test import _compare_fn, _rel
from attention.reference import AttentionInputError


def _lower(t, n, kh, d, save_snap, dtype=jnp.bfloat16, bs=None):
  q = jax.ShapeDtypeStruct((1, t, n, d), dtype)
  kv = jax.ShapeDtypeStruct((1, t, kh, d), dtype)

  def f(q, k, v):
    return kernel_mgpu.forward(q, k, v, scale=d**-0.5, save_snap=save_snap, block_sizes=bs)

  return jax.jit(f).trace(q, kv, kv).lower(lowering_platforms=('cuda',))


@pytest.mark.parametrize(
  'd,save_snap,bs',
  [
    (64, False, None),
    (128, True, None),
    (64, False, kernel_mgpu.MosaicBlockSizes(block_k=128, compute_wgs=3, stages=3, pingpong=0)),
    (128, False, kernel_mgpu.MosaicBlockSizes(pingpong=1, scan_parts=2, exp2_fma=1)),
  ],
)
def test_forward_lowers_for_cuda_as_one_mosaic_kernel(d, save_snap, bs):
  t = 384
  lowered = _lower(t, 4, 2, d, save_snap, bs=bs)
  text = lowered.as_text()
  assert text.count('custom_call @mosaic_gpu') == 1
  outs = jax.tree.leaves(lowered.out_info)
  assert [o.shape for o in outs] == [(1, t, 4, d), (1, 4, t)] + ([(1, 4, t // 64, t)] if save_snap else [])


@pytest.mark.parametrize('d,kh', [(64, 4), (128, 2)])
def test_backward_kernels_lower_for_cuda_as_one_mosaic_kernel_each(d, kh):
  t, n = 384, 4
  f32 = jnp.float32
  q = jax.ShapeDtypeStruct((1, t, n, d), jnp.bfloat16)
  kv = jax.ShapeDtypeStruct((1, t, kh, d), jnp.bfloat16)
  dr = jax.ShapeDtypeStruct((1, n, t), f32)
  snap = jax.ShapeDtypeStruct((1, n, t // 64, t), f32)
  bs = kernel_mgpu.MosaicBlockSizes(dkv_mosaic=1)

  def f(q, k, v, do, dr, cs, ps):
    return kernel_mgpu._dkv_call(q, k, v, do, dr, cs, ps, scale=d**-0.5, bs=bs)

  lowered = jax.jit(f).trace(q, kv, kv, q, dr, snap, snap).lower(lowering_platforms=('cuda',))
  assert lowered.as_text().count('custom_call @mosaic_gpu') == 1
  assert [o.shape for o in jax.tree.leaves(lowered.out_info)] == [(1, t, kh, d)] * 2

  def g(q, k, v, do, dr, cs):
    return kernel_mgpu._dq_call(q, k, v, do, dr, cs, scale=d**-0.5, bs=bs)

  lowered = jax.jit(g).trace(q, kv, kv, q, dr, snap).lower(lowering_platforms=('cuda',))
  assert lowered.as_text().count('custom_call @mosaic_gpu') == 1
  assert [o.shape for o in jax.tree.leaves(lowered.out_info)] == [(1, t, n, d), (1, n, t // 64, t)]


def test_chained_layers_lower_each_kernel_once():
  """A model calls the kernels once per layer: four layers' gradient holds as many Mosaic kernels as two
  layers' (one more than a single layer's three), not twice as many (PERF.md v5: per-call-site lowering
  cost an 18-layer model minutes)."""
  q = jax.ShapeDtypeStruct((1, 384, 2, 64), jnp.bfloat16)

  def kernels(layers):
    def loss(q, k, v):
      x = q
      for _ in range(layers):
        x = kernel_mgpu.stick_breaking_attention_mosaic(x, k, v)[0]
      return jnp.sum(x.astype(jnp.float32))

    lowered = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, q, q).lower(lowering_platforms=('cuda',))
    return lowered.as_text().count('custom_call @mosaic_gpu')

  two = kernels(2)
  assert two >= 3 and kernels(4) == two


def test_forward_rejects_what_it_cannot_take():
  with pytest.raises(ValueError, match='multiple of 128'):
    _lower(192, 2, 2, 64, False)
  with pytest.raises(ValueError, match='multiple of 192'):
    _lower(256, 2, 2, 64, False, bs=kernel_mgpu.MosaicBlockSizes(compute_wgs=3))
  with pytest.raises(ValueError, match='head dim 96'):
    _lower(256, 2, 2, 96, False)
  with pytest.raises(ValueError, match='dtype float32'):
    _lower(256, 2, 2, 64, False, jnp.float32)


def test_supported_and_block_sizes():
  q = jnp.zeros((1, 8, 2, 64), jnp.bfloat16)
  assert kernel_mgpu.supported(q, q) is None
  assert 'segment ids' in kernel_mgpu.supported(q, q, jnp.zeros((1, 8), jnp.int32))
  assert 'head dim 32' in kernel_mgpu.supported(q[..., :32], q[..., :32])
  with pytest.raises(ValueError, match='block_q'):
    kernel_mgpu.MosaicBlockSizes(block_q=128)
  with pytest.raises(ValueError, match='stages'):
    kernel_mgpu.MosaicBlockSizes(stages=5)
  with pytest.raises(ValueError, match='dkv_mosaic'):
    kernel_mgpu.MosaicBlockSizes(dkv_mosaic=3)
  with pytest.raises(ValueError, match='dq_mosaic'):
    kernel_mgpu.MosaicBlockSizes(dq_mosaic=2)
  with pytest.raises(ValueError, match='pingpong'):
    kernel_mgpu.MosaicBlockSizes(pingpong=1, compute_wgs=3)
  assert kernel_mgpu.MosaicBlockSizes().parts(jnp.bfloat16) == 1
  assert kernel_mgpu.MosaicBlockSizes().parts(jnp.float16) == 2
  assert kernel_mgpu.MosaicBlockSizes(compute_wgs=3).rows == 192
  assert kernel_mgpu.MosaicBlockSizes.parse('stages=3,scan_parts=1') == kernel_mgpu.MosaicBlockSizes(
    stages=3, scan_parts=1
  )
  assert kernel_mgpu.MosaicBlockSizes(compute_wgs=3).registers == (152, 40)
  with pytest.raises(ValueError, match='scan_parts'):
    kernel_mgpu.MosaicBlockSizes(scan_parts=3)
  bwd = kernel_mgpu.backward_block_sizes(128, kernel_mgpu.MosaicBlockSizes())
  assert bwd.block_k == 64  # the Triton backward reads snapshots at the forward's key-block granularity


def test_exp2_fma_is_within_its_error_bound():
  x = jnp.concatenate([jnp.linspace(-125.0, 0.25, 400_001), -jnp.logspace(-8, 0, 1001)]).astype(jnp.float32)
  got = np.asarray(kernel_mgpu.exp2_fma(x), np.float64)
  want = np.exp2(np.asarray(x, np.float64))
  assert np.max(np.abs(got / want - 1)) < 8e-5
  tiny = np.asarray(kernel_mgpu.exp2_fma(jnp.asarray([-126.0, -127.0, -200.0, -1e30], jnp.float32)))
  assert np.all((tiny >= 0) & (tiny < 2e-38)), tiny


def _emulated_backward(q, k, v, do, drem, scale):
  """The Mosaic backward's schedule in ``jnp`` for one head (``[T, D]`` float32 values of bf16 inputs): the
  carry snapshots the forward writes, the dq kernel (key blocks far-first, P running and snapshotted),
  then the dk/dv kernel (query blocks from the diagonal), each tile by the kernels' own `_backward_tile`
  with the float16/bfloat16 prefix parts and the bfloat16 operands of the wgmma products."""
  f32, bf16 = jnp.float32, jnp.bfloat16
  t, d = q.shape
  nb = t // 64
  scale2 = scale * kernel_mgpu.LOG2E
  s_all = (q @ k.T) * scale2
  visible = jnp.arange(t)[None, :] < jnp.arange(t)[:, None]  # [query, key]
  b = jnp.where(visible, -kernel_mgpu._softplus2(s_all), 0.0)
  per_block = b.reshape(t, nb, 64).sum(-1)  # [query, key block]
  csnap = (jnp.cumsum(per_block[:, ::-1], axis=1)[:, ::-1] - per_block).T  # carry before each key block
  tri = kernel_mgpu._triangle(64, f32)

  def prefix(init, x, _, dtype, nparts):
    hi = x.astype(dtype).astype(f32)
    out = init + hi @ tri
    return out + (x - hi).astype(dtype).astype(f32) @ tri if nparts == 2 else out

  def tile(qb, kb, carry, p_before):
    rows, keys = slice(64 * qb, 64 * qb + 64), slice(64 * kb, 64 * kb + 64)
    return kernel_mgpu._backward_tile(
      (q[rows] @ k[keys].T) * scale2, lambda: do[rows] @ v[keys].T,
      lambda: carry, lambda: drem[rows], lambda: p_before,
      masked=qb == kb, q0=64 * qb, k0=64 * kb, tri16=None, trib=None, parts=1,
      iota=lambda shape, dim: lax.broadcasted_iota(jnp.int32, shape, dim), prefix=prefix,
    )  # fmt: skip

  rnd = lambda x: x.astype(bf16).astype(f32)  # noqa: E731
  dq, psnap = jnp.zeros_like(q), jnp.zeros((nb, t), f32)
  for qb in range(nb):
    rows = slice(64 * qb, 64 * qb + 64)
    p_run, acc = jnp.zeros((64,), f32), jnp.zeros((64, d), f32)
    for kb in range(qb + 1):
      _, a, dz = tile(qb, kb, csnap[kb, rows], p_run)
      psnap = psnap.at[kb, rows].set(p_run)
      acc, p_run = acc + rnd(dz) @ k[64 * kb : 64 * kb + 64], p_run + a.sum(axis=1)
    dq = dq.at[rows].set(acc * scale)
  dk, dv = jnp.zeros_like(k), jnp.zeros_like(v)
  for kb in range(nb):
    keys = slice(64 * kb, 64 * kb + 64)
    for qb in range(kb, nb):
      rows = slice(64 * qb, 64 * qb + 64)
      w, _, dz = tile(qb, kb, csnap[kb, rows], psnap[kb, rows])
      dv = dv.at[keys].add(rnd(w).T @ do[rows])
      dk = dk.at[keys].add(rnd(dz).T @ q[rows] * scale)
  return dq, dk, dv


def test_backward_tile_arithmetic_and_schedule_match_the_reference():
  from attention.reference import stick_breaking_attention_reference

  r = np.random.default_rng(3)
  t, d = 192, 64
  q, k, v = (jnp.asarray(r.normal(size=(t, d)) * 2, jnp.bfloat16).astype(jnp.float32) for _ in range(3))
  do = jnp.asarray(r.normal(size=(t, d)), jnp.float32)
  drem = jnp.asarray(r.normal(size=(t,)), jnp.float32)

  def loss(q, k, v):
    o, rem = stick_breaking_attention_reference(q[None, :, None], k[None, :, None], v[None, :, None])
    return jnp.sum(o[0, :, 0] * do) + jnp.sum(rem[0, :, 0] * drem)

  want = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
  got = _emulated_backward(q, k, v, do, drem, d**-0.5)
  for name, g, w in zip(('dq', 'dk', 'dv'), got, want):
    assert _rel(g, w) < 1e-2, (name, _rel(g, w))


def test_ops_mosaic_has_no_interpret_mode():
  q = jnp.zeros((1, 8, 2, 64), jnp.bfloat16)
  with pytest.raises(AttentionInputError, match='no interpret mode'):
    ops.stick_breaking_attention(q, q, q, implementation='mosaic', interpret=True)


# (B, T, N, K, D, dtype): GQA, lengths that need padding, float16, a longer sequence
GPU_SHAPES = [
  (2, 1000, 4, 2, 64, 'bfloat16'),
  (1, 777, 4, 4, 128, 'bfloat16'),
  (1, 300, 2, 1, 64, 'float16'),
  (1, 2048, 2, 2, 128, 'bfloat16'),
]


@pytest.mark.gpu
@pytest.mark.parametrize('b,t,n,kh,d,dtype', GPU_SHAPES)
def test_gpu_matches_reference(b, t, n, kh, d, dtype):
  _compare_fn(kernel_mgpu.stick_breaking_attention_mosaic, b, t, n, kh, d, jnp.dtype(dtype))


@pytest.mark.gpu
@pytest.mark.parametrize('b,t,n,kh,d,dtype', GPU_SHAPES[:3])
@pytest.mark.parametrize('fields', [dict(dq_mosaic=0, dkv_mosaic=1), dict(dq_mosaic=1, dkv_mosaic=1)])
def test_gpu_mosaic_backward_matches_reference(b, t, n, kh, d, dtype, fields):
  bs = kernel_mgpu.MosaicBlockSizes(**fields)

  def kernel(q, k, v):
    return kernel_mgpu.stick_breaking_attention_mosaic(q, k, v, block_sizes=bs)

  _compare_fn(kernel, b, t, n, kh, d, jnp.dtype(dtype))


@pytest.mark.gpu
@pytest.mark.parametrize(
  'fields',
  [
    'compute_wgs=3',
    'block_k=128',
    'block_k=128,compute_wgs=3,stages=3',
    'scan_parts=2,pingpong=1',
    'exp2_fma=1',
  ],
)
def test_gpu_block_size_variants_match_reference(fields):
  bs = kernel_mgpu.MosaicBlockSizes.parse(fields)

  def fwd_only(q, k, v):  # block_k=128 snapshots have no Triton backward: check the forward
    o, rem, _ = kernel_mgpu.forward(q, k, v, scale=q.shape[-1] ** -0.5, block_sizes=bs)
    return o, jnp.transpose(rem, (0, 2, 1))

  r = np.random.default_rng(2)
  q, k, v = (jnp.asarray(r.normal(size=(2, 768, 4, 64)) * 2, jnp.bfloat16) for _ in range(3))
  o, rem = jax.jit(fwd_only)(q, k, v)
  from attention.reference import stick_breaking_attention_reference

  o_ref, rem_ref = stick_breaking_attention_reference(*(x.astype(jnp.float32) for x in (q, k, v)))
  assert _rel(o, o_ref) < 2.5e-2 and _rel(rem, rem_ref) < 2.5e-2, (_rel(o, o_ref), _rel(rem, rem_ref))


@pytest.mark.gpu
def test_gpu_snapshots_match_the_triton_forward():
  from attention import kernel_gpu

  r = np.random.default_rng(1)
  q, k, v = (jnp.asarray(r.normal(size=(1, 512, 2, 64)) * 2, jnp.bfloat16) for _ in range(3))
  _, rem_m, snap_m = kernel_mgpu.forward(q, k, v, scale=0.125, save_snap=True)
  bs = kernel_mgpu.backward_block_sizes(64, kernel_mgpu.MosaicBlockSizes())
  _, rem_t, snap_t = kernel_gpu._forward(
    q, k, v, None, scale=0.125, bs=bs, seq_len=512, interpret=False, save_snap=True
  )
  np.testing.assert_allclose(np.asarray(rem_m), np.asarray(rem_t), rtol=2e-3, atol=1e-6)
  # snapshot [kb, row] is written only where key block kb is visible to the row
  kb = np.arange(512 // 64)[:, None]
  rows = np.arange(512)[None, :]
  seen = np.broadcast_to(kb * 64 < rows, snap_m.shape)
  np.testing.assert_allclose(np.asarray(snap_m)[seen], np.asarray(snap_t)[seen], rtol=2e-3, atol=1e-3)
