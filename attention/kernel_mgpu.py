"""Stick-breaking attention as Pallas Mosaic GPU kernels (Hopper: wgmma, TMA, warp specialisation).

The maths is that of :mod:`attention.kernel_gpu` (base 2, fp32 carries). Per ``[BQ, BK]`` tile, with
``spm`` the softplus on visible pairs and 0 on masked ones (masked pairs use no stick):

    log2 A = s - softplus2(s) + (carry - rowsum(spm)) + prefix(spm)

``carry`` is the log2-stick used by all key blocks nearer to the query (visited first). The inclusive prefix
sum along keys runs on the tensor cores: ``spm`` split into ``scan_parts`` float16 parts (one part: about
2^-11 relative per addend, below bfloat16's own rounding; two: about 2^-22; the official Triton kernel uses
one bfloat16 part, about 2^-8) times a 0/1 upper-triangular ``[BK, BK]`` matrix kept in shared memory,
accumulated onto the rest of ``log2 A`` by wgmma. So a tile costs three (four with 2 parts) tensor-core
products and three special-function operations per score (``ex2``/``lg2`` for the softplus, ``ex2`` for
``A``) against softmax's two and one.

Layout of one program (CTA): ``compute_wgs`` (2 or 3) compute warpgroups of ``block_q`` = 64 query rows each
and one memory warpgroup that streams K and V blocks by TMA through a ``stages``-deep ring, from the highest
key block down to block 0 (the stick is broken nearest key first). All compute warpgroups consume the same
stream; the lower ones wait through the blocks above their rows. The causal mask is applied only on the
band of key blocks that overlap a warpgroup's rows. CTAs are launched longest rows first.

Outputs: ``o [B, T, N, D]`` (input dtype), ``rem [B, N, T]`` float32 = 2^carry, and, when a gradient is
needed, ``carry_snap [B, N, T // BK, T]``: the carry before each key block, the residual the deterministic
backward of :mod:`attention.kernel_gpu` consumes (same layout). Constraints (checked by :func:`supported`):
float16/bfloat16, head dim 64 or 128, no segment ids, ``T`` a multiple of ``compute_wgs * 64`` and
``block_k`` (callers pad). Mosaic GPU needs an sm_90 GPU: there is no CPU interpret mode, so CPU tests
lower the kernel for CUDA (``jax.jit(...).trace(...).lower(lowering_platforms=('cuda',))``) and check its
structure, and the ``gpu``-marked tests compare it with the reference on the device.

Backward (:func:`stick_breaking_attention_mosaic`'s VJP): the deterministic scheme of
:mod:`attention.kernel_gpu` (no atomics): a dq kernel over query blocks that also writes the P snapshots,
then a dk/dv kernel over key blocks that rebuilds each tile from both snapshots. dk/dv runs on Mosaic GPU
(:func:`_dkv_call`, ``dkv_mosaic=1``) and dq (:func:`_dq_call`, ``dq_mosaic=1``) both run on Mosaic GPU by
default (PERF.md v4, v5); either can be switched back to its Triton kernel.
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
from jax.experimental.pallas import mosaic_gpu as plgpu

Array = jax.Array

LOG2E = 1.4426950408889634
SOFTPLUS2_LINEAR_ABOVE = 24.0  # as in kernel_gpu: beyond this softplus2(s) == s in fp32
HEAD_DIMS = (64, 128)  # 256 would need the K/V ring and the fp32 output tile to shrink (SMEM, registers)


@dataclasses.dataclass(frozen=True)
class MosaicBlockSizes:
  """Tile sizes of the Mosaic GPU forward. ``block_k`` is also the snapshot granularity, so the backward
  that consumes the snapshots must use the same ``block_k``."""

  block_q: int = 64  # query rows per compute warpgroup
  block_k: int = 64  # keys per streamed K/V block (64 or 128)
  stages: int = 2  # K/V ring depth
  # float16 parts of the in-tile prefix sum: 1 (~2^-11 relative per addend; below bfloat16's own 2^-8),
  # 2 (~2^-22, float32-like); 0 = 1 for bfloat16 inputs and 2 for float16 ones
  scan_parts: int = 0
  compute_wgs: int = 2  # compute warpgroups per CTA (2 or 3; 3 leaves each 152 registers, not 232)
  # 1: the two compute warpgroups take turns on the tensor cores (one runs its elementwise part while the
  # other's QK^T and PV products run), through a shared two-arrival barrier, as FlashAttention-3 does
  pingpong: int = 0
  # 1: A = 2^x by a cubic polynomial on the FMA pipe (relative error 7.5e-5, below bfloat16's rounding of A
  # before the PV product) instead of the special-function unit, which the softplus already loads with two
  # operations per score (attention/PERF.md, v3)
  exp2_fma: int = 0
  # 1: dk/dv by the Mosaic GPU kernel (`_dkv_call`; PERF.md v4); 0: by the Triton kernel
  dkv_mosaic: int = 1
  # 1: dq and the P snapshots by the Mosaic GPU kernel (`_dq_call`; PERF.md v5); 0: by the Triton kernel
  dq_mosaic: int = 1

  def __post_init__(self):
    if self.block_q != 64:
      raise ValueError(f'MosaicBlockSizes.block_q={self.block_q}: wgmma tiles of one warpgroup are 64 rows.')
    if self.block_k not in (64, 128):
      raise ValueError(f'MosaicBlockSizes.block_k={self.block_k} must be 64 or 128.')
    if not 2 <= self.stages <= 4:
      raise ValueError(f'MosaicBlockSizes.stages={self.stages} must be in [2, 4].')
    if self.scan_parts not in (0, 1, 2):
      raise ValueError(f'MosaicBlockSizes.scan_parts={self.scan_parts} must be 0 (auto), 1 or 2.')
    if self.compute_wgs not in (2, 3):
      raise ValueError(f'MosaicBlockSizes.compute_wgs={self.compute_wgs} must be 2 or 3.')
    for name in ('dkv_mosaic', 'dq_mosaic'):  # both apply with block_k=64 only (else: the Triton kernels)
      if getattr(self, name) not in (0, 1):
        raise ValueError(f'MosaicBlockSizes.{name}={getattr(self, name)} must be 0 or 1.')
    if self.exp2_fma not in (0, 1):
      raise ValueError(f'MosaicBlockSizes.exp2_fma={self.exp2_fma} must be 0 or 1.')
    if self.pingpong not in (0, 1) or (self.pingpong and self.compute_wgs != 2):
      raise ValueError(f'MosaicBlockSizes.pingpong={self.pingpong} must be 0 or 1 (1 needs compute_wgs=2).')

  @classmethod
  def parse(cls, spec: str) -> 'MosaicBlockSizes':
    """``'scan_parts=1,stages=3'`` -> the defaults with those (integer) fields."""
    return cls(**{k: int(v) for k, v in (kv.split('=') for kv in spec.split(',') if kv)})

  @property
  def registers(self) -> Tuple[int, int]:
    """``setmaxnreg`` per thread of a compute and of the memory warpgroup: 232/40 leave room for two compute
    warpgroups of 128 threads in 64k registers, 152/40 for three."""
    return (232, 40) if self.compute_wgs == 2 else (152, 40)

  @property
  def rows(self) -> int:
    """Query rows per CTA (the sequence is padded to a multiple of this)."""
    return self.compute_wgs * self.block_q

  def parts(self, dtype) -> int:
    return self.scan_parts or (2 if jnp.dtype(dtype) == jnp.float16 else 1)


def supported(q: Array, k: Array, segment_ids=None) -> Optional[str]:
  """None when the Mosaic forward takes these inputs, else why not (the caller falls back to Triton)."""
  if segment_ids is not None:
    return 'segment ids are not supported by the Mosaic GPU kernel'
  if q.dtype not in (jnp.bfloat16, jnp.float16) or k.dtype != q.dtype:
    return f'dtype {q.dtype} (the Mosaic GPU kernel takes bfloat16/float16)'
  d = q.shape[-1]
  if d not in HEAD_DIMS:
    return f'head dim {d} (the Mosaic GPU kernel takes {" or ".join(map(str, HEAD_DIMS))})'
  return None


def _swizzle(cols: int, dtype) -> Tuple[plgpu.TilingTransform, plgpu.SwizzleTransform]:
  """SMEM transforms for a 2-D operand whose rows are ``cols`` elements (swizzle = row bytes, <= 128)."""
  row_bytes = min(128, cols * jnp.dtype(dtype).itemsize)
  elems = row_bytes // jnp.dtype(dtype).itemsize
  return plgpu.TilingTransform((8, elems)), plgpu.SwizzleTransform(row_bytes)


def _log2(x: Array) -> Array:
  """``lg2`` itself where JAX has a log2 primitive (0.11+); before that ``jnp.log2`` divides by ``log(2)``,
  a full-precision division per element, so multiply by the reciprocal instead."""
  if hasattr(lax, 'log2'):
    return lax.log2(x)
  return lax.log(x) * (1.0 / 0.6931471805599453)


def _softplus2(s: Array) -> Array:
  return jnp.where(
    s > SOFTPLUS2_LINEAR_ABOVE, s, _log2(1.0 + jnp.exp2(jnp.minimum(s, SOFTPLUS2_LINEAR_ABOVE)))
  )


_ROUND = 12582912.0  # 1.5 * 2^23: x + _ROUND holds round(x) in its low mantissa bits (|x| < 2^22)
_EXP2_POLY = (0.99992817, 0.69326095, 0.2426095, 0.055171)  # 2^f on [-1/2, 1/2], max relative error 7.5e-5


def exp2_fma(x: Array) -> Array:
  """2^x for float32 ``x <= 0`` (A's range) with adds, multiplies and integer ops only: x = n + f with
  n = round(x), a cubic for 2^f, and n added to the exponent bits. Below about 2^-125 the result is a
  denormal of that size or smaller, not 2^x (as good as zero for A)."""
  x = jnp.maximum(x, -126.0)  # keeps n + the exponent of 2^f >= 0: no wrap into the sign bit
  y = x + _ROUND
  f = x - (y - _ROUND)
  c0, c1, c2, c3 = _EXP2_POLY
  p = ((c3 * f + c2) * f + c1) * f + c0
  bits = lax.bitcast_convert_type(p, jnp.int32) + lax.shift_left(lax.bitcast_convert_type(y, jnp.int32), 23)
  return lax.bitcast_convert_type(bits, jnp.float32)


def _row(x: Array, shape) -> Array:
  return lax.broadcast_in_dim(x, shape, [0])


def _row_vector(ref) -> Array:
  """A ``[64]`` float32 shared-memory row (one value per query row) in the wgmma row layout."""
  return plgpu.load(ref, (), layout=plgpu.Layout.WGMMA.reduce(1))


def _prefix_product(init: Array, x: Array, tri, part_dtype, nparts: int) -> Array:
  """``init + prefix(x)`` along keys: ``x`` split into ``nparts`` parts of ``part_dtype`` times the 0/1
  triangle ``tri`` (shared memory, same dtype), accumulated by wgmma onto ``init``."""
  hi = x.astype(part_dtype)
  lo = (x - hi.astype(jnp.float32)).astype(part_dtype) if nparts == 2 else None

  def scan(acc_ref):
    plgpu.wgmma(acc_ref, hi, tri)
    if lo is not None:
      plgpu.wgmma(acc_ref, lo, tri)

  return pl.run_state(scan)(plgpu.ACC.init(init))


def _producer(fetch, count, stages: int, free_bars) -> None:
  """The TMA warpgroup's loop: fill the ring's first ``stages`` slots, then refill each slot with step ``i``
  once its consumers have arrived on every barrier of ``free_bars`` for the step before."""
  for i in range(stages):
    pl.when(i < count)(functools.partial(fetch, i, i))

  @pl.loop(stages, count)
  def _stream(i):
    slot = lax.rem(i, stages)
    for bar in free_bars:
      plgpu.barrier_wait(bar.at[slot])
    fetch(i, slot)


def _triangle(n: int, dtype) -> Array:
  """The 0/1 upper-triangular ``[n, n]`` matrix: ``x @ T`` is the inclusive prefix sum of ``x``'s rows."""
  return (jnp.arange(n)[:, None] <= jnp.arange(n)[None, :]).astype(dtype)


def _store_row(buf, value: Array, dst) -> None:
  """TMA-stores the row vector ``value`` through ``buf`` (step i's half of a ``[2, 64]`` float32 shared-memory
  pair, ``i % 2``) to ``dst``, after the store issued from that buffer two steps ago has read it."""
  plgpu.wait_smem_to_gmem(1, wait_read_only=True)
  buf[...] = value
  plgpu.commit_smem()
  plgpu.copy_smem_to_gmem(buf, dst)


def _pass_through(load_bar, free_bar, stages: int):
  """A consumer's step for a ring slot it has no use for: wait for the load (which keeps this warpgroup's
  barrier phases in step) and free the slot."""

  def step(i, _):
    slot = lax.rem(i, stages)
    plgpu.barrier_wait(load_bar.at[slot])
    plgpu.barrier_arrive(free_bar.at[slot])

  return step


def _wgmma_iota(shape, dim: int) -> Array:
  return plgpu.broadcasted_iota(jnp.int32, shape, dim, layout=plgpu.Layout.WGMMA)


def _backward_tile(s, dov, carry, dr, p_before, *, masked, q0, k0, tri16, trib, parts,
                   iota=_wgmma_iota, prefix=_prefix_product):  # fmt: skip
  """One ``[64 queries, 64 keys]`` tile of the backward, shared by the dq and dk/dv kernels.

  Args: ``s`` the base-2 logits; ``dov()`` issuing the ``dO v^T`` product; ``carry()``, ``dr()`` and
  ``p_before()`` reading, per query row (wgmma row layout), the carry before this key block, drem and P
  before this key block. Each is called where its value is first needed (the order the dk/dv kernel was
  measured with). ``masked`` for the diagonal block, whose first query and key positions are ``q0`` and
  ``k0``. ``iota`` and ``prefix`` default to the Mosaic GPU primitives; the CPU tests pass ``jnp``
  stand-ins to check this arithmetic against the reference. Returns ``(A, a, dz)`` with
  ``a = A (dO.v - drem)`` and ``dz = a - beta (P + prefix(a))``, masked pairs zero."""
  shape = s.shape
  sp = _softplus2(s)
  visible = None
  if masked:
    qpos = iota(shape, 0) + q0
    kpos = iota(shape, 1) + k0
    visible = kpos < qpos
  spm = sp if visible is None else jnp.where(visible, sp, 0.0)
  carry = carry()
  rest = s - sp + _row(carry - spm.sum(axis=1), shape)
  w = jnp.exp2(prefix(rest, spm, tri16, jnp.float16, parts))
  gv = dov()
  beta = jnp.exp2(s - sp)
  if visible is not None:
    w = jnp.where(visible, w, 0.0)
    beta = jnp.where(visible, beta, 0.0)
  a = w * (gv - _row(dr(), shape))
  dz = a - beta * prefix(_row(p_before(), shape), a, trib, jnp.bfloat16, 2)
  if visible is not None:
    dz = jnp.where(visible, dz, 0.0)
  return w, a, dz


# The three kernel calls are jitted with their settings static, so that a model calling them once per layer
# lowers one copy of each kernel per shape instead of one per call site (PERF.md, v5: 18 layers).
@functools.partial(jax.jit, static_argnames=('scale', 'bs', 'save_snap'))
def _forward_call(q, k, v, *, scale: float, bs: MosaicBlockSizes, save_snap: bool):
  """Unpadded-geometry kernel call: ``T`` a multiple of ``bs.rows``. Returns (o, rem, carry_snap | None)."""
  b, t, n, d = q.shape
  kh = k.shape[2]
  g = n // kh
  bq, bk, stages, wgs = bs.block_q, bs.block_k, bs.stages, bs.compute_wgs
  dtype = q.dtype
  scale2 = float(scale) * LOG2E
  num_q_tiles = t // bs.rows
  parts = bs.parts(dtype)
  regs_compute, regs_memory = bs.registers
  num_kb = t // bk
  tri = _triangle(bk, jnp.float16)

  def kernel(q_ref, k_ref, v_ref, tri_ref, o_ref, rem_ref, snap_ref, scratch):
    (qo_smem2, k_smem, v_smem, tri_smem2, rem_smem2, snap_smem2), barriers = scratch
    k_bar, v_bar, q_bar, tri_bar, k_free, v_free, sched = barriers
    pingpong = bool(bs.pingpong)

    def rendezvous():  # both compute warpgroups pass here together
      plgpu.barrier_arrive(sched)
      plgpu.barrier_wait(sched)

    def before_pv(slot):  # pingpong: hand the tensor cores over, then take them back for PV
      if pingpong:
        plgpu.barrier_arrive(sched)
      plgpu.barrier_wait(v_bar.at[slot])
      if pingpong:
        plgpu.barrier_wait(sched)

    bi = lax.axis_index('batch')
    h = lax.axis_index('heads')
    qi = num_q_tiles - 1 - lax.axis_index('q_seq')  # longest rows first: less idle tail
    wg = lax.axis_index('wg')
    cta_rows_end = (qi + 1) * bs.rows
    ntot = lax.div(cta_rows_end + bk - 1, bk)  # key blocks the CTA streams (the top one first)

    @pl.when(wg < wgs)
    def _compute():
      plgpu.set_max_registers(regs_compute, action='increase')
      qo_smem, tri_smem, rem_smem = qo_smem2.at[wg], tri_smem2.at[wg], rem_smem2.at[wg]
      r0 = qi * bs.rows + wg * bq
      plgpu.copy_gmem_to_smem(q_ref.at[bi, pl.ds(r0, bq), h], qo_smem, q_bar.at[wg])
      plgpu.copy_gmem_to_smem(tri_ref, tri_smem, tri_bar.at[wg])
      plgpu.barrier_wait(q_bar.at[wg])
      plgpu.barrier_wait(tri_bar.at[wg])

      need = lax.div(r0 + bq + bk - 1, bk)  # key blocks this warpgroup's rows can see
      skip = ntot - need  # blocks streamed for the other warpgroup only
      band = need - lax.div(r0, bk)  # blocks overlapping these rows: causal mask needed

      def pass_through(i, _):
        slot = lax.rem(i, stages)
        plgpu.barrier_wait(k_bar.at[slot])  # keeps this warpgroup's barrier phases in step
        plgpu.barrier_arrive(k_free.at[slot])
        if pingpong:
          rendezvous()
        before_pv(slot)
        plgpu.barrier_arrive(v_free.at[slot])

      def step(i, state, masked):
        acc, carry = state
        slot = lax.rem(i, stages)
        kb = ntot - 1 - i
        plgpu.barrier_wait(k_bar.at[slot])

        def qk(acc_ref):
          plgpu.wgmma(acc_ref, qo_smem, k_smem.at[slot].transpose((1, 0)))
          if pingpong:
            rendezvous()
          return acc_ref[...]

        s = pl.run_scoped(qk, plgpu.ACC((bq, bk), jnp.float32)) * scale2
        plgpu.barrier_arrive(k_free.at[slot])
        sp = _softplus2(s)
        if masked:
          qpos = _wgmma_iota((bq, bk), 0) + r0
          kpos = _wgmma_iota((bq, bk), 1) + kb * bk
          visible = kpos < qpos
          spm = jnp.where(visible, sp, 0.0)
        else:
          spm = sp
        if save_snap:
          _store_row(snap_smem2.at[wg, lax.rem(i, 2)], carry, snap_ref.at[bi, h, kb, pl.ds(r0, bq)])
        carry_out = carry - spm.sum(axis=1)
        rest = s - sp + _row(carry_out, (bq, bk))
        log2a = _prefix_product(rest, spm, tri_smem, jnp.float16, parts)
        p = exp2_fma(log2a) if bs.exp2_fma else jnp.exp2(log2a)
        if masked:
          p = jnp.where(visible, p, 0.0)
        p = p.astype(dtype)
        before_pv(slot)

        def pv(acc_ref):
          plgpu.wgmma(acc_ref, p, v_smem.at[slot])

        acc = pl.run_state(pv)(plgpu.ACC.init(acc))
        plgpu.barrier_arrive(v_free.at[slot])
        return acc, carry_out

      acc = plgpu.layout_cast(jnp.zeros((bq, d), jnp.float32), plgpu.Layout.WGMMA)
      carry = plgpu.layout_cast(jnp.zeros((bq,), jnp.float32), plgpu.Layout.WGMMA.reduce(1))
      if pingpong:
        pl.when(wg == 1)(rendezvous)  # warpgroup 1 starts half a step behind
      lax.fori_loop(0, skip, pass_through, None)
      state = lax.fori_loop(skip, skip + band, functools.partial(step, masked=True), (acc, carry))
      acc, carry = lax.fori_loop(skip + band, ntot, functools.partial(step, masked=False), state)
      if pingpong:
        pl.when(wg == 0)(rendezvous)  # ... and warpgroup 0 ends with the rendezvous it is owed
      if save_snap:
        plgpu.wait_smem_to_gmem(0, wait_read_only=True)
      qo_smem[...] = acc.astype(dtype)
      rem_smem[...] = jnp.exp2(carry)
      plgpu.commit_smem()
      plgpu.copy_smem_to_gmem(qo_smem, o_ref.at[bi, pl.ds(r0, bq), h])
      plgpu.copy_smem_to_gmem(rem_smem, rem_ref.at[bi, h, pl.ds(r0, bq)])
      plgpu.wait_smem_to_gmem(0)

    @pl.when(wg == wgs)
    def _memory():
      plgpu.set_max_registers(regs_memory, action='decrease')
      kvh = lax.div(h, g)

      def fetch(i, slot):
        rows = (bi, pl.ds((ntot - 1 - i) * bk, bk), kvh)
        plgpu.copy_gmem_to_smem(k_ref.at[rows], k_smem.at[slot], k_bar.at[slot])
        plgpu.copy_gmem_to_smem(v_ref.at[rows], v_smem.at[slot], v_bar.at[slot])

      _producer(fetch, ntot, stages, (k_free, v_free))

  def entry(q_ref, k_ref, v_ref, tri_ref, *outs):
    o_ref, rem_ref = outs[:2]
    snap_ref = outs[2] if save_snap else None
    qk_t = _swizzle(d, dtype)
    tri_t = _swizzle(bk, jnp.float16)
    smem = (
      plgpu.SMEM((wgs, bq, d), dtype, transforms=qk_t),
      plgpu.SMEM((stages, bk, d), dtype, transforms=qk_t),
      plgpu.SMEM((stages, bk, d), dtype, transforms=qk_t),
      plgpu.SMEM((wgs, bk, bk), jnp.float16, transforms=tri_t),
      plgpu.SMEM((wgs, bq), jnp.float32),
      plgpu.SMEM((wgs, 2, bq), jnp.float32) if save_snap else None,
    )
    barriers = (
      plgpu.Barrier(num_barriers=stages),
      plgpu.Barrier(num_barriers=stages),
      plgpu.Barrier(num_barriers=wgs),
      plgpu.Barrier(num_barriers=wgs),
      plgpu.Barrier(num_arrivals=wgs, num_barriers=stages),
      plgpu.Barrier(num_arrivals=wgs, num_barriers=stages),
      plgpu.Barrier(num_arrivals=wgs),
    )
    pl.run_scoped(
      lambda *scratch: kernel(q_ref, k_ref, v_ref, tri_ref, o_ref, rem_ref, snap_ref, scratch),
      smem,
      barriers,
      collective_axes='wg',
    )

  out_type = [jax.ShapeDtypeStruct(q.shape, dtype), jax.ShapeDtypeStruct((b, n, t), jnp.float32)]
  if save_snap:
    out_type.append(jax.ShapeDtypeStruct((b, n, num_kb, t), jnp.float32))
  outs = plgpu.kernel(
    entry,
    out_type=out_type,
    grid=(n, num_q_tiles, b),
    grid_names=('heads', 'q_seq', 'batch'),
    num_threads=wgs + 1,
    thread_name='wg',
    compiler_params=plgpu.CompilerParams(approx_math=True),
  )(q, k, v, tri)
  return outs[0], outs[1], (outs[2] if save_snap else None)


def forward(q, k, v, *, scale: float, block_sizes: Optional[MosaicBlockSizes] = None, save_snap=False):
  """``q [B, T, N, D]``, ``k, v [B, T, K, D]`` (``T`` a multiple of 128) -> o, ``rem [B, N, T]``, snaps."""
  bs = block_sizes or MosaicBlockSizes()
  t = q.shape[1]
  if t % bs.rows or t % bs.block_k:
    raise ValueError(f'T={t} must be a multiple of {bs.rows} and {bs.block_k} (pad first).')
  why = supported(q, k)
  if why:
    raise ValueError(why)
  return _forward_call(q, k, v, scale=scale, bs=bs, save_snap=save_snap)


# ----------------------------------------------------------------------------------------------------------
# backward: dq (with the P snapshots) and dk, dv on Mosaic GPU; `dq_mosaic`/`dkv_mosaic` choose per kernel


@functools.partial(jax.jit, static_argnames=('scale', 'bs'))
def _dq_call(q, k, v, do, dr, csnap, *, scale: float, bs: MosaicBlockSizes):
  """dq ``[B, T, N, D]`` and the P snapshots ``[B, N, T // 64, T]`` (P = sum of ``a`` over the key blocks
  before each block) for :func:`_dkv_call`; the layout of the forward (``compute_wgs`` warpgroups of 64
  query rows and a TMA warpgroup), with key blocks streamed from 0 upwards: farthest first, as P runs."""
  b, t, n, d = q.shape
  kh = k.shape[2]
  g = n // kh
  bq = bk = 64
  wgs, stages = bs.compute_wgs, bs.stages
  dtype = q.dtype
  scale2 = float(scale) * LOG2E
  num_q_tiles = t // bs.rows
  num_kb = t // bk
  parts = bs.parts(dtype)
  tri16, trib = _triangle(bk, jnp.float16), _triangle(bk, jnp.bfloat16)

  def kernel(q_ref, k_ref, v_ref, do_ref, dr_ref, cs_ref, tri_ref, trib_ref, dq_ref, ps_ref, scratch):
    smem, barriers = scratch
    q_smem2, do_smem2, dr_smem2, k_smem, v_smem, cs_smem, tri_smem2, trib_smem2, snap_smem2 = smem
    load_bar, free_bar, own_bar = barriers
    bi = lax.axis_index('batch')
    h = lax.axis_index('heads')
    qi = num_q_tiles - 1 - lax.axis_index('q_seq')  # longest rows first
    wg = lax.axis_index('wg')
    ntot = lax.div((qi + 1) * bs.rows + bk - 1, bk)

    @pl.when(wg < wgs)
    def _compute():
      plgpu.set_max_registers(bs.registers[0], action='increase')
      q_smem, do_smem, dr_smem = q_smem2.at[wg], do_smem2.at[wg], dr_smem2.at[wg]
      tri_smem, trib_smem, snap_smem_w = tri_smem2.at[wg], trib_smem2.at[wg], snap_smem2.at[wg]
      r0 = qi * bs.rows + wg * bq
      rows = (bi, pl.ds(r0, bq), h)
      bar = own_bar.at[wg]
      plgpu.copy_gmem_to_smem(q_ref.at[rows], q_smem, bar)
      plgpu.copy_gmem_to_smem(do_ref.at[rows], do_smem, bar)
      plgpu.copy_gmem_to_smem(dr_ref.at[bi, h, pl.ds(r0, bq)], dr_smem, bar)
      plgpu.copy_gmem_to_smem(tri_ref, tri_smem, bar)
      plgpu.copy_gmem_to_smem(trib_ref, trib_smem, bar)
      plgpu.barrier_wait(bar)
      dr = _row_vector(dr_smem)
      need = lax.div(r0 + bq + bk - 1, bk)
      first_band = lax.div(r0, bk)

      pass_through = _pass_through(load_bar, free_bar, stages)

      def step(kb, state, masked):
        dq, p_run = state
        slot = lax.rem(kb, stages)
        plgpu.barrier_wait(load_bar.at[slot])

        def qk(acc_ref):
          plgpu.wgmma(acc_ref, q_smem, k_smem.at[slot].transpose((1, 0)))
          return acc_ref[...]

        s = pl.run_scoped(qk, plgpu.ACC((bq, bk), jnp.float32)) * scale2

        def dov_acc(acc_ref):
          plgpu.wgmma(acc_ref, do_smem, v_smem.at[slot].transpose((1, 0)))
          return acc_ref[...]

        def dov():
          return pl.run_scoped(dov_acc, plgpu.ACC((bq, bk), jnp.float32))

        rows = (lambda: _row_vector(cs_smem.at[slot, wg]), lambda: dr, lambda: p_run)
        tiles = dict(tri16=tri_smem, trib=trib_smem, parts=parts)
        _, a, dz = _backward_tile(s, dov, *rows, masked=masked, q0=r0, k0=kb * bk, **tiles)
        _store_row(snap_smem_w.at[lax.rem(kb, 2)], p_run, ps_ref.at[bi, h, kb, pl.ds(r0, bq)])

        def dq_step(acc_ref):
          plgpu.wgmma(acc_ref, dz.astype(dtype), k_smem.at[slot])

        dq = pl.run_state(dq_step)(plgpu.ACC.init(dq))
        plgpu.barrier_arrive(free_bar.at[slot])
        return dq, p_run + a.sum(axis=1)

      dq = plgpu.layout_cast(jnp.zeros((bq, d), jnp.float32), plgpu.Layout.WGMMA)
      p_run = plgpu.layout_cast(jnp.zeros((bq,), jnp.float32), plgpu.Layout.WGMMA.reduce(1))
      state = lax.fori_loop(0, first_band, functools.partial(step, masked=False), (dq, p_run))
      dq, _ = lax.fori_loop(first_band, need, functools.partial(step, masked=True), state)
      lax.fori_loop(need, ntot, pass_through, None)
      plgpu.wait_smem_to_gmem(0, wait_read_only=True)
      q_smem[...] = (dq * scale).astype(dtype)
      plgpu.commit_smem()
      plgpu.copy_smem_to_gmem(q_smem, dq_ref.at[rows])
      plgpu.wait_smem_to_gmem(0)

    @pl.when(wg == wgs)
    def _memory():
      plgpu.set_max_registers(bs.registers[1], action='decrease')
      kvh = lax.div(h, g)

      def fetch(kb, slot):
        keys = (bi, pl.ds(kb * bk, bk), kvh)
        bar = load_bar.at[slot]
        plgpu.copy_gmem_to_smem(k_ref.at[keys], k_smem.at[slot], bar)
        plgpu.copy_gmem_to_smem(v_ref.at[keys], v_smem.at[slot], bar)
        for w in range(wgs):
          qrows = pl.ds(qi * bs.rows + w * bq, bq)
          plgpu.copy_gmem_to_smem(cs_ref.at[bi, h, kb, qrows], cs_smem.at[slot, w], bar)

      _producer(fetch, ntot, stages, (free_bar,))

  def entry(q_ref, k_ref, v_ref, do_ref, dr_ref, cs_ref, tri_ref, trib_ref, dq_ref, ps_ref):
    op_t = _swizzle(d, dtype)
    tri_t = _swizzle(bk, jnp.float16)
    smem = (
      plgpu.SMEM((wgs, bq, d), dtype, transforms=op_t),
      plgpu.SMEM((wgs, bq, d), dtype, transforms=op_t),
      plgpu.SMEM((wgs, bq), jnp.float32),
      plgpu.SMEM((stages, bk, d), dtype, transforms=op_t),
      plgpu.SMEM((stages, bk, d), dtype, transforms=op_t),
      plgpu.SMEM((stages, wgs, bq), jnp.float32),
      plgpu.SMEM((wgs, bk, bk), jnp.float16, transforms=tri_t),
      plgpu.SMEM((wgs, bk, bk), jnp.bfloat16, transforms=tri_t),
      plgpu.SMEM((wgs, 2, bq), jnp.float32),
    )
    barriers = (
      plgpu.Barrier(num_arrivals=2 + wgs, num_barriers=stages),
      plgpu.Barrier(num_arrivals=wgs, num_barriers=stages),
      plgpu.Barrier(num_arrivals=5, num_barriers=wgs),
    )
    refs = (q_ref, k_ref, v_ref, do_ref, dr_ref, cs_ref, tri_ref, trib_ref, dq_ref, ps_ref)
    pl.run_scoped(lambda *scratch: kernel(*refs, scratch), smem, barriers, collective_axes='wg')

  dq, psnap = plgpu.kernel(
    entry,
    out_type=[jax.ShapeDtypeStruct(q.shape, dtype), jax.ShapeDtypeStruct((b, n, num_kb, t), jnp.float32)],
    grid=(n, num_q_tiles, b),
    grid_names=('heads', 'q_seq', 'batch'),
    num_threads=wgs + 1,
    thread_name='wg',
    compiler_params=plgpu.CompilerParams(approx_math=True),
  )(q, k, v, do, dr, csnap, tri16, trib)
  return dq, psnap


@functools.partial(jax.jit, static_argnames=('scale', 'bs'))
def _dkv_call(q, k, v, do, dr, csnap, psnap, *, scale: float, bs: MosaicBlockSizes):
  """dk, dv ``[B, T, K, D]`` from the snapshots of the forward (carry) and of the dq kernel (P).

  One CTA owns ``compute_wgs`` key blocks of 64 keys of one query head (a warpgroup each) and streams the
  query blocks at or after its diagonal; per tile (queries x keys, as in the forward) it rebuilds
  ``log2 A`` from the carry snapshot and the in-tile prefix product, forms ``a = A (dO.v - drem)``,
  ``dz = a - beta (P + prefix(a))`` (the prefix of ``a`` in two bfloat16 parts: ``a`` has no float16-safe
  range), stages ``A`` and ``dz`` in shared memory and accumulates ``dv += A^T dO`` and ``dk += dz^T q`` with
  transposed wgmma operands. Grouped-query heads are summed after the kernel (in float32, from the
  per-query-head results rounded to the input dtype)."""
  b, t, n, d = q.shape
  kh = k.shape[2]
  g = n // kh
  bq = bk = 64
  wgs, stages = bs.compute_wgs, bs.stages
  dtype = q.dtype
  scale2 = float(scale) * LOG2E
  num_kt = t // (wgs * bk)
  num_qb = t // bq
  parts = bs.parts(dtype)
  tri16, trib = _triangle(bk, jnp.float16), _triangle(bk, jnp.bfloat16)
  loads_per_step = 3 + 2 * wgs  # q, dO, drem, and per warpgroup its carry and P snapshot rows

  def kernel(q_ref, k_ref, v_ref, do_ref, dr_ref, cs_ref, ps_ref, tri_ref, trib_ref, dk_ref, dv_ref, scratch):
    smem, barriers = scratch
    k_smem2, v_smem2, q_smem, do_smem, dr_smem, cs_smem, ps_smem, tri_smem2, trib_smem2, a_st2, z_st2 = smem
    load_bar, free_bar, kv_bar, tri_bar = barriers
    bi = lax.axis_index('batch')
    h = lax.axis_index('heads')
    kt = lax.axis_index('k_seq')  # key tiles near the start see the most queries: launched first
    wg = lax.axis_index('wg')
    kc = kt * (wgs * bk)
    qb0 = lax.div(kc, bq)
    nsteps = num_qb - qb0

    @pl.when(wg < wgs)
    def _compute():
      plgpu.set_max_registers(bs.registers[0], action='increase')
      k_smem, v_smem, tri_smem, trib_smem = (
        k_smem2.at[wg],
        v_smem2.at[wg],
        tri_smem2.at[wg],
        trib_smem2.at[wg],
      )
      a_st, z_st = a_st2.at[wg], z_st2.at[wg]
      k0 = kc + wg * bk
      rows = (bi, pl.ds(k0, bk), lax.div(h, g))
      plgpu.copy_gmem_to_smem(k_ref.at[rows], k_smem, kv_bar.at[wg])
      plgpu.copy_gmem_to_smem(v_ref.at[rows], v_smem, kv_bar.at[wg])
      plgpu.copy_gmem_to_smem(tri_ref, tri_smem, tri_bar.at[wg])
      plgpu.copy_gmem_to_smem(trib_ref, trib_smem, tri_bar.at[wg])
      plgpu.barrier_wait(kv_bar.at[wg])
      plgpu.barrier_wait(tri_bar.at[wg])
      skip = lax.div(k0, bq) - qb0  # query blocks before this warpgroup's diagonal

      pass_through = _pass_through(load_bar, free_bar, stages)

      def step(i, state, masked):
        dk, dv = state
        slot = lax.rem(i, stages)
        qb = qb0 + i
        plgpu.barrier_wait(load_bar.at[slot])

        def qk(acc_ref):
          plgpu.wgmma(acc_ref, q_smem.at[slot], k_smem.transpose((1, 0)))
          return acc_ref[...]

        s = pl.run_scoped(qk, plgpu.ACC((bq, bk), jnp.float32)) * scale2

        def dov_acc(acc_ref):
          plgpu.wgmma(acc_ref, do_smem.at[slot], v_smem.transpose((1, 0)))
          return acc_ref[...]

        def dov():
          return pl.run_scoped(dov_acc, plgpu.ACC((bq, bk), jnp.float32))

        refs = (cs_smem.at[slot, wg], dr_smem.at[slot], ps_smem.at[slot, wg])
        rows = (functools.partial(_row_vector, ref) for ref in refs)
        w, _, dz = _backward_tile(
          s, dov, *rows, masked=masked, q0=qb * bq, k0=k0, tri16=tri_smem, trib=trib_smem, parts=parts
        )
        a_st[...] = w.astype(dtype)
        z_st[...] = dz.astype(dtype)
        plgpu.commit_smem()

        def grads(refs):
          dv_ref_acc, dk_ref_acc = refs
          plgpu.wgmma(dv_ref_acc, a_st.transpose((1, 0)), do_smem.at[slot])
          plgpu.wgmma(dk_ref_acc, z_st.transpose((1, 0)), q_smem.at[slot])

        dv, dk = pl.run_state(grads)((plgpu.ACC.init(dv), plgpu.ACC.init(dk)))
        plgpu.barrier_arrive(free_bar.at[slot])
        return dk, dv

      zeros = plgpu.layout_cast(jnp.zeros((bk, d), jnp.float32), plgpu.Layout.WGMMA)
      lax.fori_loop(0, skip, pass_through, None)
      state = step(skip, (zeros, zeros), masked=True)  # the diagonal block: the only one with masked pairs
      dk, dv = lax.fori_loop(skip + 1, nsteps, functools.partial(step, masked=False), state)
      k_smem[...] = (dk * scale).astype(dtype)
      v_smem[...] = dv.astype(dtype)
      plgpu.commit_smem()
      out_rows = (bi, pl.ds(k0, bk), h)
      plgpu.copy_smem_to_gmem(k_smem, dk_ref.at[out_rows])
      plgpu.copy_smem_to_gmem(v_smem, dv_ref.at[out_rows])
      plgpu.wait_smem_to_gmem(0)

    @pl.when(wg == wgs)
    def _memory():
      plgpu.set_max_registers(bs.registers[1], action='decrease')

      def fetch(i, slot):
        qrows = pl.ds((qb0 + i) * bq, bq)
        bar = load_bar.at[slot]
        plgpu.copy_gmem_to_smem(q_ref.at[bi, qrows, h], q_smem.at[slot], bar)
        plgpu.copy_gmem_to_smem(do_ref.at[bi, qrows, h], do_smem.at[slot], bar)
        plgpu.copy_gmem_to_smem(dr_ref.at[bi, h, qrows], dr_smem.at[slot], bar)
        for w in range(wgs):
          kb = lax.div(kc, bk) + w
          plgpu.copy_gmem_to_smem(cs_ref.at[bi, h, kb, qrows], cs_smem.at[slot, w], bar)
          plgpu.copy_gmem_to_smem(ps_ref.at[bi, h, kb, qrows], ps_smem.at[slot, w], bar)

      _producer(fetch, nsteps, stages, (free_bar,))

  def entry(q_ref, k_ref, v_ref, do_ref, dr_ref, cs_ref, ps_ref, tri_ref, trib_ref, dk_ref, dv_ref):
    op_t = _swizzle(d, dtype)
    tile_t = _swizzle(bk, dtype)
    tri_t = _swizzle(bk, jnp.float16)
    smem = (
      plgpu.SMEM((wgs, bk, d), dtype, transforms=op_t),
      plgpu.SMEM((wgs, bk, d), dtype, transforms=op_t),
      plgpu.SMEM((stages, bq, d), dtype, transforms=op_t),
      plgpu.SMEM((stages, bq, d), dtype, transforms=op_t),
      plgpu.SMEM((stages, bq), jnp.float32),
      plgpu.SMEM((stages, wgs, bq), jnp.float32),
      plgpu.SMEM((stages, wgs, bq), jnp.float32),
      plgpu.SMEM((wgs, bk, bk), jnp.float16, transforms=tri_t),
      plgpu.SMEM((wgs, bk, bk), jnp.bfloat16, transforms=tri_t),
      plgpu.SMEM((wgs, bq, bk), dtype, transforms=tile_t),
      plgpu.SMEM((wgs, bq, bk), dtype, transforms=tile_t),
    )
    barriers = (
      plgpu.Barrier(num_arrivals=loads_per_step, num_barriers=stages),
      plgpu.Barrier(num_arrivals=wgs, num_barriers=stages),
      plgpu.Barrier(num_arrivals=2, num_barriers=wgs),
      plgpu.Barrier(num_arrivals=2, num_barriers=wgs),
    )
    refs = (q_ref, k_ref, v_ref, do_ref, dr_ref, cs_ref, ps_ref, tri_ref, trib_ref, dk_ref, dv_ref)
    pl.run_scoped(lambda *scratch: kernel(*refs, scratch), smem, barriers, collective_axes='wg')

  per_head = jax.ShapeDtypeStruct((b, t, n, d), dtype)
  dk, dv = plgpu.kernel(
    entry,
    out_type=[per_head, per_head],
    grid=(n, num_kt, b),
    grid_names=('heads', 'k_seq', 'batch'),
    num_threads=wgs + 1,
    thread_name='wg',
    compiler_params=plgpu.CompilerParams(approx_math=True),
  )(q, k, v, do, dr, csnap, psnap, tri16, trib)
  if g > 1:
    group = lambda x: x.reshape(b, t, kh, g, d).astype(jnp.float32).sum(3).astype(dtype)  # noqa: E731
    dk, dv = group(dk), group(dv)
  return dk, dv


# ----------------------------------------------------------------------------------------------------------
# the differentiable entry point: Mosaic GPU forward, the deterministic Pallas:Triton backward


def backward_block_sizes(head_dim: int, bs: MosaicBlockSizes):
  """The Triton backward's block sizes for this forward: its defaults with the snapshot granularity."""
  from attention import kernel_gpu

  return dataclasses.replace(kernel_gpu.BlockSizes.for_head_dim(head_dim), block_k=bs.block_k)


def _padded_length(t: int, bs: MosaicBlockSizes, bwd) -> int:
  mult = math.lcm(bs.rows, bwd.block_q_dq, bwd.block_q_dkv, bs.block_k)
  return -(-t // mult) * mult


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _sb(q, k, v, scale, bs):
  out, _ = _sb_fwd(q, k, v, scale, bs, save_snap=False)
  return out


def _sb_fwd(q, k, v, scale, bs, save_snap=True):
  from attention import kernel_gpu

  t, d = q.shape[1], q.shape[3]
  tp = _padded_length(t, bs, backward_block_sizes(d, bs))
  qp, kp, vp = (kernel_gpu._pad(x, tp, d) for x in (q, k, v))
  o, rem, csnap = forward(qp, kp, vp, scale=scale, block_sizes=bs, save_snap=save_snap)
  out = (o[:, :t], jnp.transpose(rem[:, :, :t], (0, 2, 1)))
  return out, (qp, kp, vp, csnap)


def _sb_vjp_fwd(q, k, v, scale, bs):
  return _sb_fwd(q, k, v, scale, bs, save_snap=True)


def _sb_vjp_bwd(scale, bs, res, cts):
  from attention import kernel_gpu

  qp, kp, vp, csnap = res
  do, drem = cts
  t, d = do.shape[1], do.shape[3]
  tp = qp.shape[1]
  dop = kernel_gpu._pad(do.astype(qp.dtype), tp, d)
  dr = jnp.pad(jnp.transpose(drem.astype(jnp.float32), (0, 2, 1)), ((0, 0), (0, 0), (0, tp - t)))
  bwd = backward_block_sizes(d, bs)
  dq_mosaic, dkv_mosaic = (bs.block_k == 64 and x for x in (bs.dq_mosaic, bs.dkv_mosaic))
  if dkv_mosaic or dq_mosaic:
    if dq_mosaic:
      dq, psnap = _dq_call(qp, kp, vp, dop, dr, csnap, scale=scale, bs=bs)
    else:
      dq, psnap = kernel_gpu._dq_call(
        qp, kp, vp, None, dop, dr, csnap, scale=scale, bs=bwd, seq_len=t, interpret=False
      )
    if dkv_mosaic:
      dk, dv = _dkv_call(qp, kp, vp, dop, dr, csnap, psnap, scale=scale, bs=bs)
    else:
      dk, dv = kernel_gpu._dkv_call(
        qp, kp, vp, None, dop, dr, csnap, psnap, scale=scale, bs=bwd, seq_len=t, interpret=False
      )
  else:
    dq, dk, dv = kernel_gpu._backward(
      qp, kp, vp, None, dop, dr, csnap, scale=scale, bs=bwd, seq_len=t, interpret=False
    )
  return dq[:, :t], dk[:, :t], dv[:, :t]


_sb.defvjp(_sb_vjp_fwd, _sb_vjp_bwd)


def stick_breaking_attention_mosaic(
  q: Array,
  k: Array,
  v: Array,
  *,
  segment_ids: Optional[Array] = None,
  scale: Optional[float] = None,
  block_sizes: Optional[MosaicBlockSizes] = None,
) -> Tuple[Array, Array]:
  """Causal stick-breaking attention: Mosaic GPU forward and backward (same results as
  :func:`attention.kernel_gpu.stick_breaking_attention_gpu`, which it calls for inputs the Mosaic kernel
  does not take: see :func:`supported`).

  Returns:
    ``(o [B, T, N, D] in q.dtype, rem [B, T, N] float32)``.
  """
  from attention import kernel_gpu
  from attention.reference import check_inputs

  check_inputs(q, k, v, segment_ids, allow_float64=False, head_dims=kernel_gpu.HEAD_DIMS, self_attention=True)
  d = q.shape[3]
  scale = float(d**-0.5) if scale is None else float(scale)
  if supported(q, k, segment_ids) is not None:
    return kernel_gpu.stick_breaking_attention_gpu(q, k, v, segment_ids=segment_ids, scale=scale)
  return _sb(q, k, v, scale, block_sizes or MosaicBlockSizes())
