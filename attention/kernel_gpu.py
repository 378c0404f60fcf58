"""Stick-breaking attention as Pallas GPU kernels (Pallas:Triton lowering), forward and backward.

The maths is in :mod:`attention.reference`; here it is tiled. Everything runs in base 2
(``s = z * log2(e)``), with fp32 accumulators whatever the input dtype. Per tile of ``[BQ queries, BK keys]``:

    sp   = softplus2(s) = log2(1 + 2^s)                         (s itself above 24: exact in fp32)
    b    = -sp on visible pairs, 0 elsewhere                     (log2(1 - beta); masked pairs use no stick)
    cp   = inclusive prefix sum of b along keys (a true fp32 scan, not a bf16 triangular matmul)
    log2 A = (s - sp) + (carry + rowsum(b)) - cp                 (log beta + the stick used by nearer keys)

where ``carry`` is the log2-stick consumed by all key blocks nearer to the query. The identity
``suffix_inclusive = rowsum - cp + b`` turns the reverse cumulative sum of the paper into a forward one.

Kernels (grid axes in brackets; no atomics, no locks, so the backward is deterministic):

* forward ``[B, N, query blocks]``: walks key blocks from the diagonal down to 0 (nearest first, as the
  stick is broken), accumulating ``o`` and ``carry``; ``rem = 2^carry``. When a gradient is needed it also
  writes ``carry_snap[b, n, key_block, row]``: the carry *before* each key block.
* dq ``[B, N, query blocks]``: walks key blocks from 0 upwards (farthest first) and rebuilds each tile from
  the carry snapshots; keeps the running ``P_ij = sum_{i' <= i} a_i'j`` (``a = A (dO.v - drem)``), forms
  ``dz = a - beta * P`` and ``dq = scale * dz k``; writes ``P_snap`` (P before each key block).
* dk/dv ``[B, K, key blocks]``: one program owns one key block of one kv head, loops over the query heads
  of its GQA group and the query blocks at or after the diagonal, rebuilds each tile from both snapshots,
  and accumulates ``dv = A^T dO`` and ``dk = scale * dz^T q`` in fp32 registers.

Memory: no T x T buffer. Residuals are q, k, v and the two fp32 snapshots of ``B*N*T*ceil(T/BK)`` values
each (T=4096, BK=64: 2 MiB per head each), i.e. O(T^2/BK) as in FLA's deterministic backward.

Inputs are padded (length to a block multiple, head dim to a power of two) and the padding masked, so
any length and head dims 32..256 work. ``interpret=True`` runs the same kernels on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from attention.reference import check_inputs

Array = jax.Array

HEAD_DIMS = (32, 256)
LOG2E = 1.4426950408889634
SOFTPLUS2_LINEAR_ABOVE = 24.0  # log2(1 + 2^24) - 24 < 1e-7: beyond this softplus2(s) == s in fp32


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tile sizes (powers of two). ``block_k`` is shared by all kernels: it is the snapshot granularity."""

  block_q: int = 64
  block_k: int = 64
  block_q_dq: int = 64
  block_q_dkv: int = 64
  num_warps: int = 4
  num_stages: int = 2
  num_warps_bwd: int = 4
  num_stages_bwd: int = 2
  # in-tile prefix sums: 'cumsum' (an fp32 scan) or 'matmul' (hi/lo bf16 split times a 0/1 triangle on the
  # tensor cores; error ~2^-16 relative, where the official kernel's single bf16 matmul has ~2^-8);
  # 'matmul3' adds a third bf16 part (~2^-24: fp32 accuracy)
  scan: str = 'cumsum'

  @classmethod
  def for_head_dim(cls, head_dim: int) -> 'BlockSizes':
    """Defaults per (padded) head dim, from ``python -m attention.bench --tune=...`` on an H200 (bf16,
    T=4096; README). Narrow key blocks for wide heads keep the dk/dv accumulators in registers."""
    d = pl.next_power_of_2(head_dim)
    if d <= 64:
      return cls(block_q=64, block_k=64, block_q_dq=64, block_q_dkv=64, num_warps=4, num_warps_bwd=4,
                 num_stages=3, num_stages_bwd=3, scan='matmul')  # fmt: skip
    if d <= 128:
      return cls(block_q=64, block_k=32, block_q_dq=64, block_q_dkv=64, num_warps=4, num_warps_bwd=4,
                 num_stages=2, num_stages_bwd=2, scan='matmul')  # fmt: skip
    return cls(block_q=32, block_k=32, block_q_dq=32, block_q_dkv=32, num_warps=4, num_warps_bwd=8,
               num_stages=2, num_stages_bwd=2, scan='matmul')  # fmt: skip

  def __post_init__(self):
    if self.scan not in ('cumsum', 'matmul', 'matmul3'):
      raise ValueError(f"BlockSizes.scan={self.scan!r} must be 'cumsum', 'matmul' or 'matmul3'.")
    for f in ('block_q', 'block_k', 'block_q_dq', 'block_q_dkv'):
      x = getattr(self, f)
      if x < 16 or x & (x - 1):
        raise ValueError(f'BlockSizes.{f}={x} must be a power of two >= 16.')

  def fit(self, length: int) -> 'BlockSizes':
    """Shrinks blocks for short sequences (no point padding 20 tokens to 64)."""
    cap = max(16, pl.next_power_of_2(length))
    return dataclasses.replace(
      self,
      block_q=min(self.block_q, cap),
      block_k=min(self.block_k, cap),
      block_q_dq=min(self.block_q_dq, cap),
      block_q_dkv=min(self.block_q_dkv, cap),
    )


def _softplus2(s: Array) -> Array:
  return jnp.where(
    s > SOFTPLUS2_LINEAR_ABOVE, s, jnp.log2(1.0 + jnp.exp2(jnp.minimum(s, SOFTPLUS2_LINEAR_ABOVE)))
  )


def _dot(a: Array, b: Array, *, trans_a: bool = False, trans_b: bool = False) -> Array:
  """fp32-accumulated matmul of two tiles (``a^T`` / ``b^T`` folded into the contraction)."""
  dims = (((0,) if trans_a else (1,), (1,) if trans_b else (0,)), ((), ()))
  return lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


def _prefix(x: Array, scan: str) -> Array:
  """Inclusive prefix sum along axis 1 of an fp32 tile."""
  if scan == 'cumsum':
    return jnp.cumsum(x, axis=1)
  n = x.shape[1]
  tri = (jnp.arange(n, dtype=jnp.int32)[:, None] <= jnp.arange(n, dtype=jnp.int32)[None, :]).astype(
    jnp.bfloat16
  )
  out = None
  for _ in range(3 if scan == 'matmul3' else 2):  # x = hi + mid (+ lo), each part exact in bf16
    part = x.astype(jnp.bfloat16)
    x = x - part.astype(jnp.float32)
    out = _dot(part, tri) if out is None else out + _dot(part, tri)
  return out


def _tile(q, k, qpos, kpos, seq_len, scale2, seg_q, seg_k, causal):
  """Base-2 logits, visibility mask, softplus and log2(1 - beta) of one [BQ, BK] tile.

  ``causal=False`` is for tiles wholly below the diagonal (every key precedes every query): no position
  mask is built there (the mask is None without segment ids), which saves the integer work on most tiles.
  """
  s = _dot(q, k, trans_b=True) * scale2
  mask = None
  if causal:
    mask = (kpos[None, :] < qpos[:, None]) & (kpos[None, :] < seq_len)
  if seg_q is not None:
    same = seg_q[:, None] == seg_k[None, :]
    mask = same if mask is None else mask & same
  sp = _softplus2(s)
  b = _masked(mask, -sp)
  return s, mask, sp, b


def _masked(mask, x):
  return x if mask is None else jnp.where(mask, x, 0.0)


def _log2_weights(s, sp, b, carry_before, scan):
  """log2 A for a tile given the log2-stick used by nearer key blocks; also returns the tile's rowsum."""
  rs = jnp.sum(b, axis=1)
  cp = _prefix(b, scan)
  return (s - sp) + (carry_before + rs)[:, None] - cp, rs


def _key_block(kb, block_k, k_ref, v_ref, segk_ref):
  """Keys, values, positions and segment ids of key block ``kb`` (refs hold the whole sequence)."""
  start = kb * block_k
  ks = pl.ds(pl.multiple_of(start, block_k), block_k)
  kpos = start + jnp.arange(block_k, dtype=jnp.int32)
  seg_k = None if segk_ref is None else plgpu.load(segk_ref.at[ks])
  return plgpu.load(k_ref.at[ks, :]), plgpu.load(v_ref.at[ks, :]), kpos, seg_k


def _row_geometry(qi, block_q, block_k, num_kb):
  """Query positions of block ``qi``, how many key blocks it needs, and the first one on the diagonal band."""
  qpos = qi * block_q + jnp.arange(block_q, dtype=jnp.int32)
  nk = jnp.minimum(lax.div((qi + 1) * block_q + block_k - 1, block_k), num_kb)
  return qpos, nk, lax.div(qi * block_q, block_k)


# ----------------------------------------------------------------------------------------------------------
# forward


def _fwd_kernel(*refs, scale2, block_q, block_k, seq_len, num_kb, has_seg, save_snap, scan):
  q_ref, k_ref, v_ref = refs[:3]
  i = 3
  segq_ref = segk_ref = None
  if has_seg:
    segq_ref, segk_ref = refs[3], refs[4]
    i = 5
  o_ref, rem_ref = refs[i], refs[i + 1]
  snap_ref = refs[i + 2] if save_snap else None

  q = plgpu.load(q_ref)
  seg_q = plgpu.load(segq_ref) if has_seg else None
  # key blocks from kb_band on overlap this query block's rows and need the causal mask; those below do not
  qpos, nk, kb_band = _row_geometry(pl.program_id(2), block_q, block_k, num_kb)

  def body(it, state, causal):
    acc, carry = state
    kb = nk - 1 - it
    k, v, kpos, seg_k = _key_block(kb, block_k, k_ref, v_ref, segk_ref)
    s, mask, sp, b = _tile(q, k, qpos, kpos, seq_len, scale2, seg_q, seg_k, causal)
    if save_snap:
      plgpu.store(snap_ref.at[kb, :], carry)
    log2a, rs = _log2_weights(s, sp, b, carry, scan)
    a = _masked(mask, jnp.exp2(log2a))
    acc = acc + _dot(a.astype(v.dtype), v)
    return acc, carry + rs

  acc0 = jnp.zeros((block_q, q.shape[-1]), jnp.float32)
  carry0 = jnp.zeros((block_q,), jnp.float32)
  state = lax.fori_loop(0, nk - kb_band, functools.partial(body, causal=True), (acc0, carry0))
  acc, carry = lax.fori_loop(nk - kb_band, nk, functools.partial(body, causal=False), state)
  plgpu.store(o_ref, acc.astype(o_ref.dtype))
  plgpu.store(rem_ref, jnp.exp2(carry))


def _forward(q, k, v, seg, *, scale, bs: BlockSizes, seq_len, interpret, save_snap):
  """Padded inputs ``[B, Tp, N|K, Dp]`` -> o ``[B, Tp, N, Dp]``, rem ``[B, N, Tp]``, carry snapshots."""
  b, tp, n, dp = q.shape
  kh = k.shape[2]
  g = n // kh
  bq, bk = bs.block_q, bs.block_k
  num_kb = tp // bk
  has_seg = seg is not None
  kernel = functools.partial(
    _fwd_kernel,
    scale2=scale * LOG2E,
    block_q=bq,
    block_k=bk,
    seq_len=seq_len,
    num_kb=num_kb,
    has_seg=has_seg,
    save_snap=save_snap,
    scan=bs.scan,
  )
  in_specs = [
    pl.BlockSpec((None, bq, None, dp), lambda bi, h, i: (bi, i, h, 0)),
    pl.BlockSpec((None, tp, None, dp), lambda bi, h, i: (bi, 0, h // g, 0)),
    pl.BlockSpec((None, tp, None, dp), lambda bi, h, i: (bi, 0, h // g, 0)),
  ]
  args = [q, k, v]
  if has_seg:
    in_specs += [
      pl.BlockSpec((None, bq), lambda bi, h, i: (bi, i)),
      pl.BlockSpec((None, tp), lambda bi, h, i: (bi, 0)),
    ]
    args += [seg, seg]
  out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, n, tp), jnp.float32)]
  out_specs = [
    pl.BlockSpec((None, bq, None, dp), lambda bi, h, i: (bi, i, h, 0)),
    pl.BlockSpec((None, None, bq), lambda bi, h, i: (bi, h, i)),
  ]
  if save_snap:
    out_shape.append(jax.ShapeDtypeStruct((b, n, num_kb, tp), jnp.float32))
    out_specs.append(pl.BlockSpec((None, None, num_kb, bq), lambda bi, h, i: (bi, h, 0, i)))
  outs = pl.pallas_call(
    kernel,
    grid=(b, n, tp // bq),
    in_specs=in_specs,
    out_specs=out_specs,
    out_shape=out_shape,
    compiler_params=plgpu.CompilerParams(num_warps=bs.num_warps, num_stages=bs.num_stages),
    interpret=interpret,
    name='stick_breaking_fwd',
  )(*args)
  if save_snap:
    return outs[0], outs[1], outs[2]
  return outs[0], outs[1], None


# ----------------------------------------------------------------------------------------------------------
# backward: dq (+ P snapshots)


def _dq_kernel(*refs, scale, scale2, block_q, block_k, seq_len, num_kb, has_seg, scan):
  q_ref, k_ref, v_ref, do_ref, dr_ref, csnap_ref = refs[:6]
  i = 6
  segq_ref = segk_ref = None
  if has_seg:
    segq_ref, segk_ref = refs[6], refs[7]
    i = 8
  dq_ref, psnap_ref = refs[i], refs[i + 1]

  q = plgpu.load(q_ref)
  do = plgpu.load(do_ref)
  dr = plgpu.load(dr_ref)
  seg_q = plgpu.load(segq_ref) if has_seg else None
  qpos, nk, kb_band = _row_geometry(pl.program_id(2), block_q, block_k, num_kb)

  def body(kb, state, causal):
    dq, p = state
    k, v, kpos, seg_k = _key_block(kb, block_k, k_ref, v_ref, segk_ref)
    s, mask, sp, b = _tile(q, k, qpos, kpos, seq_len, scale2, seg_q, seg_k, causal)
    log2a, _ = _log2_weights(s, sp, b, plgpu.load(csnap_ref.at[kb, :]), scan)
    a = _masked(mask, jnp.exp2(log2a))
    a = a * (_dot(do, v, trans_b=True) - dr[:, None])
    beta = _masked(mask, jnp.exp2(s - sp))
    dz = a - beta * (p[:, None] + _prefix(a, scan))
    plgpu.store(psnap_ref.at[kb, :], p)
    dq = dq + _dot(dz.astype(k.dtype), k)
    return dq, p + jnp.sum(a, axis=1)

  dq0 = jnp.zeros((block_q, q.shape[-1]), jnp.float32)
  p0 = jnp.zeros((block_q,), jnp.float32)
  state = lax.fori_loop(0, kb_band, functools.partial(body, causal=False), (dq0, p0))
  dq, _ = lax.fori_loop(kb_band, nk, functools.partial(body, causal=True), state)
  plgpu.store(dq_ref, (dq * scale).astype(dq_ref.dtype))


# ----------------------------------------------------------------------------------------------------------
# backward: dk, dv (one program per key block and kv head; loops over the GQA group and query blocks)


def _dkv_kernel(*refs, scale, scale2, block_q, block_k, seq_len, num_qb, groups, has_seg, scan):
  q_ref, k_ref, v_ref, do_ref, dr_ref, csnap_ref, psnap_ref = refs[:7]
  i = 7
  segq_ref = segk_ref = None
  if has_seg:
    segq_ref, segk_ref = refs[7], refs[8]
    i = 9
  dk_ref, dv_ref = refs[i], refs[i + 1]

  kb = pl.program_id(2)
  start = kb * block_k
  k = plgpu.load(k_ref)
  v = plgpu.load(v_ref)
  kpos = start + jnp.arange(block_k, dtype=jnp.int32)
  seg_k = plgpu.load(segk_ref) if has_seg else None
  first_qb = lax.div(start, block_q)
  dk = jnp.zeros(k.shape, jnp.float32)
  dv = jnp.zeros(v.shape, jnp.float32)

  # query blocks overlapping this key block need the causal mask; later ones do not
  qb_band_end = jnp.minimum(lax.div((kb + 1) * block_k + block_q - 1, block_q), num_qb)

  for hh in range(groups):

    def body(qb, state, causal, hh=jnp.int32(hh)):
      dk, dv = state
      qs = pl.ds(pl.multiple_of(qb * block_q, block_q), block_q)
      q = plgpu.load(q_ref.at[qs, hh, :])
      do = plgpu.load(do_ref.at[qs, hh, :])
      dr = plgpu.load(dr_ref.at[hh, qs])
      qpos = qb * block_q + jnp.arange(block_q, dtype=jnp.int32)
      seg_q = plgpu.load(segq_ref.at[qs]) if has_seg else None
      s, mask, sp, b = _tile(q, k, qpos, kpos, seq_len, scale2, seg_q, seg_k, causal)
      log2a, _ = _log2_weights(s, sp, b, plgpu.load(csnap_ref.at[hh, kb, qs]), scan)
      w = _masked(mask, jnp.exp2(log2a))
      a = w * (_dot(do, v, trans_b=True) - dr[:, None])
      beta = _masked(mask, jnp.exp2(s - sp))
      # on the band, snapshots of rows that never reach this key block are unwritten (garbage): only
      # masked pairs read them, and the final select drops those
      p = plgpu.load(psnap_ref.at[hh, kb, qs])[:, None]
      dz = _masked(mask, a - beta * (p + _prefix(a, scan)))
      dv = dv + _dot(w.astype(do.dtype), do, trans_a=True)
      dk = dk + _dot(dz.astype(q.dtype), q, trans_a=True)
      return dk, dv

    state = lax.fori_loop(first_qb, qb_band_end, functools.partial(body, causal=True), (dk, dv))
    dk, dv = lax.fori_loop(qb_band_end, num_qb, functools.partial(body, causal=False), state)
  plgpu.store(dk_ref, (dk * scale).astype(dk_ref.dtype))
  plgpu.store(dv_ref, dv.astype(dv_ref.dtype))


def _backward(q, k, v, seg, do, dr, csnap, *, scale, bs: BlockSizes, seq_len, interpret):
  dq, psnap = _dq_call(q, k, v, seg, do, dr, csnap, scale=scale, bs=bs, seq_len=seq_len, interpret=interpret)
  dk, dv = _dkv_call(
    q, k, v, seg, do, dr, csnap, psnap, scale=scale, bs=bs, seq_len=seq_len, interpret=interpret
  )
  return dq, dk, dv


def _dq_call(q, k, v, seg, do, dr, csnap, *, scale, bs: BlockSizes, seq_len, interpret):
  """dq and the P snapshots: grid (B, N, query blocks)."""
  b, tp, n, dp = q.shape
  g = n // k.shape[2]
  bk = bs.block_k
  num_kb = tp // bk
  has_seg = seg is not None
  params = plgpu.CompilerParams(num_warps=bs.num_warps_bwd, num_stages=bs.num_stages_bwd)
  bq = bs.block_q_dq
  in_specs = [
    pl.BlockSpec((None, bq, None, dp), lambda bi, h, i: (bi, i, h, 0)),
    pl.BlockSpec((None, tp, None, dp), lambda bi, h, i: (bi, 0, h // g, 0)),
    pl.BlockSpec((None, tp, None, dp), lambda bi, h, i: (bi, 0, h // g, 0)),
    pl.BlockSpec((None, bq, None, dp), lambda bi, h, i: (bi, i, h, 0)),
    pl.BlockSpec((None, None, bq), lambda bi, h, i: (bi, h, i)),
    pl.BlockSpec((None, None, num_kb, bq), lambda bi, h, i: (bi, h, 0, i)),
  ]
  args = [q, k, v, do, dr, csnap]
  if has_seg:
    in_specs += [
      pl.BlockSpec((None, bq), lambda bi, h, i: (bi, i)),
      pl.BlockSpec((None, tp), lambda bi, h, i: (bi, 0)),
    ]
    args += [seg, seg]
  dq, psnap = pl.pallas_call(
    functools.partial(
      _dq_kernel,
      scale=scale,
      scale2=scale * LOG2E,
      block_q=bq,
      block_k=bk,
      seq_len=seq_len,
      num_kb=num_kb,
      has_seg=has_seg,
      scan=bs.scan,
    ),
    grid=(b, n, tp // bq),
    in_specs=in_specs,
    out_specs=[
      pl.BlockSpec((None, bq, None, dp), lambda bi, h, i: (bi, i, h, 0)),
      pl.BlockSpec((None, None, num_kb, bq), lambda bi, h, i: (bi, h, 0, i)),
    ],
    out_shape=[
      jax.ShapeDtypeStruct(q.shape, q.dtype),
      jax.ShapeDtypeStruct((b, n, num_kb, tp), jnp.float32),
    ],
    compiler_params=params,
    interpret=interpret,
    name='stick_breaking_bwd_dq',
  )(*args)
  return dq, psnap


def _dkv_call(q, k, v, seg, do, dr, csnap, psnap, *, scale, bs: BlockSizes, seq_len, interpret):
  """dk, dv: grid (B, K, key blocks); each program sees the g query heads of its kv head."""
  b, tp, n, dp = q.shape
  kh = k.shape[2]
  g = n // kh
  bk = bs.block_k
  num_kb = tp // bk
  has_seg = seg is not None
  params = plgpu.CompilerParams(num_warps=bs.num_warps_bwd, num_stages=bs.num_stages_bwd)
  bq = bs.block_q_dkv
  in_specs = [
    pl.BlockSpec((None, tp, g, dp), lambda bi, h, j: (bi, 0, h, 0)),
    pl.BlockSpec((None, bk, None, dp), lambda bi, h, j: (bi, j, h, 0)),
    pl.BlockSpec((None, bk, None, dp), lambda bi, h, j: (bi, j, h, 0)),
    pl.BlockSpec((None, tp, g, dp), lambda bi, h, j: (bi, 0, h, 0)),
    pl.BlockSpec((None, g, tp), lambda bi, h, j: (bi, h, 0)),
    pl.BlockSpec((None, g, num_kb, tp), lambda bi, h, j: (bi, h, 0, 0)),
    pl.BlockSpec((None, g, num_kb, tp), lambda bi, h, j: (bi, h, 0, 0)),
  ]
  args = [q, k, v, do, dr, csnap, psnap]
  if has_seg:
    in_specs += [
      pl.BlockSpec((None, tp), lambda bi, h, j: (bi, 0)),
      pl.BlockSpec((None, bk), lambda bi, h, j: (bi, j)),
    ]
    args += [seg, seg]
  dk, dv = pl.pallas_call(
    functools.partial(
      _dkv_kernel,
      scale=scale,
      scale2=scale * LOG2E,
      block_q=bq,
      block_k=bk,
      seq_len=seq_len,
      num_qb=tp // bq,
      groups=g,
      has_seg=has_seg,
      scan=bs.scan,
    ),
    grid=(b, kh, num_kb),
    in_specs=in_specs,
    out_specs=[
      pl.BlockSpec((None, bk, None, dp), lambda bi, h, j: (bi, j, h, 0)),
      pl.BlockSpec((None, bk, None, dp), lambda bi, h, j: (bi, j, h, 0)),
    ],
    out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
    compiler_params=params,
    interpret=interpret,
    name='stick_breaking_bwd_dkv',
  )(*args)
  return dk, dv


# ----------------------------------------------------------------------------------------------------------
# padding and custom_vjp


def _pad(x: Array, tp: int, dp: int) -> Array:
  t, d = x.shape[1], x.shape[3]
  if t == tp and d == dp:
    return x
  return jnp.pad(x, ((0, 0), (0, tp - t), (0, 0), (0, dp - d)))


def _geometry(t: int, d: int, bs: BlockSizes) -> Tuple[int, int]:
  mult = max(bs.block_q, bs.block_k, bs.block_q_dq, bs.block_q_dkv)
  return -(-t // mult) * mult, max(16, pl.next_power_of_2(d))


def _pad_seg(seg, t, tp):
  if seg is None:
    return None
  seg = seg.astype(jnp.int32)
  return seg if t == tp else jnp.pad(seg, ((0, 0), (0, tp - t)), constant_values=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _sb(q, k, v, seg, scale, bs, interpret):
  out, _ = _sb_fwd(q, k, v, seg, scale, bs, interpret, save_snap=False)
  return out


def _sb_fwd(q, k, v, seg, scale, bs, interpret, save_snap=True):
  t, d = q.shape[1], q.shape[3]
  tp, dp = _geometry(t, d, bs)
  qp, kp, vp, segp = _pad(q, tp, dp), _pad(k, tp, dp), _pad(v, tp, dp), _pad_seg(seg, t, tp)
  o, rem, csnap = _forward(
    qp, kp, vp, segp, scale=scale, bs=bs, seq_len=t, interpret=interpret, save_snap=save_snap
  )
  out = (o[:, :t, :, :d], jnp.transpose(rem[:, :, :t], (0, 2, 1)))
  return out, (qp, kp, vp, segp, csnap)


def _sb_vjp_fwd(q, k, v, seg, scale, bs, interpret):
  return _sb_fwd(q, k, v, seg, scale, bs, interpret, save_snap=True)


def _sb_vjp_bwd(scale, bs, interpret, res, cts):
  qp, kp, vp, segp, csnap = res
  do, drem = cts
  t, d = do.shape[1], do.shape[3]
  tp, dp = qp.shape[1], qp.shape[3]
  dop = _pad(do.astype(qp.dtype), tp, dp)
  dr = jnp.transpose(drem.astype(jnp.float32), (0, 2, 1))
  dr = jnp.pad(dr, ((0, 0), (0, 0), (0, tp - t)))
  dq, dk, dv = _backward(qp, kp, vp, segp, dop, dr, csnap, scale=scale, bs=bs, seq_len=t, interpret=interpret)
  unpad = lambda x: x[:, :t, :, :d]  # noqa: E731
  dseg = None if segp is None else jnp.zeros((segp.shape[0], t), jax.dtypes.float0)
  return unpad(dq), unpad(dk), unpad(dv), dseg


_sb.defvjp(_sb_vjp_fwd, _sb_vjp_bwd)


def stick_breaking_attention_gpu(
  q: Array,
  k: Array,
  v: Array,
  *,
  segment_ids: Optional[Array] = None,
  scale: Optional[float] = None,
  block_sizes: Optional[BlockSizes] = None,
  interpret: bool = False,
) -> Tuple[Array, Array]:
  """Causal stick-breaking attention with the Pallas GPU kernels (see the module docstring).

  Args:
    q: ``[B, T, N, D]`` float32 / bfloat16 / float16, ``32 <= D <= 256``.
    k: ``[B, T, K, D]``, ``K`` dividing ``N``.
    v: ``[B, T, K, D]``.
    segment_ids: Optional int ``[B, T]``; the stick restarts at each document.
    scale: Logit scale, default ``1/sqrt(D)``.
    block_sizes: :class:`BlockSizes`; default ``BlockSizes.for_head_dim(D)``, shrunk for short sequences.
    interpret: Run in Pallas interpret mode (CPU).

  Returns:
    ``(o [B, T, N, D] in q.dtype, rem [B, T, N] float32)``.
  """
  check_inputs(q, k, v, segment_ids, allow_float64=False, head_dims=HEAD_DIMS, self_attention=True)
  d = q.shape[3]
  bs = (block_sizes or BlockSizes.for_head_dim(d)).fit(q.shape[1])
  if bs.scan == 'matmul' and q.dtype == jnp.float32:
    bs = dataclasses.replace(bs, scan='matmul3')  # keep fp32 inputs at fp32 accuracy
  scale = float(1.0 / math.sqrt(d)) if scale is None else float(scale)
  if segment_ids is not None:
    segment_ids = segment_ids.astype(jnp.int32)
  return _sb(q, k, v, segment_ids, scale, bs, bool(interpret))
