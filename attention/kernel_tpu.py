"""Causal stick-breaking attention as Pallas TPU (Mosaic) kernels: forward and deterministic backward.

Maths (``attention/reference.py`` has the ground truth). For query ``j`` and an earlier key ``i < j`` of
the same segment, ``z_ij = scale * q_j . k_i`` and

    log A_ij = z_ij + sum_{i <= k < j} log(1 - beta_kj),     log(1 - beta) = -softplus(z)
    o_j = sum_i A_ij v_i,                                     rem_j = exp(sum_{i < j} log(1 - beta_ij))

The nearest key breaks the stick first, so the forward walks key blocks **nearest-first** and keeps a
per-row fp32 ``carry``: the sum of ``log(1 - beta)`` over all keys nearer than the current block.

Layout inside the kernels: heads before time, ``q [B, N, Tp, Dp]`` and ``k, v [B, K, Tp, Dp]``, where
``Tp`` is the length padded to a block multiple (padded keys are masked by position) and ``Dp`` the head
dim padded to a multiple of 128 lanes when it is not one already (zero padding along D is exact). The
wrapper transposes and pads; autodiff through the wrapper's pads, slices and transposes is plain JAX.

Kernels (all fp32 accumulation, also for bf16 inputs; fp16 inputs are computed in fp32):

* ``_fwd_kernel``, grid ``(B, N, Tp/bq, Tp/bk)``; the last axis is "arbitrary" and is mapped in
  **reverse** by the index maps (``kb = nk - 1 - kk``), so key blocks arrive diagonal-first. Blocks above
  the diagonal are skipped with ``pl.when`` and their index maps are clamped to the diagonal block, so no
  DMA is issued for them. VMEM scratch: ``acc (bq, Dp)`` and ``carry (bq, 1)``, fp32. Per tile:
  ``b = where(mask, -softplus(z), 0)``; the inclusive in-tile suffix sum of ``b`` is a matmul with a
  constant upper-triangular 0/1 matrix in fp32 (``Precision.HIGHEST``: rounding ``b`` to bf16 there is the
  official kernel's accuracy shortcut, avoided here); ``A = exp(z + suffix + carry)`` masked to 0;
  ``acc += A v``; ``carry += rowsum(b)``. Output ``stats [B, N, Tp, W]`` fp32: the last column is
  ``rem = exp(carry)``; when the forward runs for autodiff (``W = nk + 1``) column ``kb`` also holds the
  carry *before* key block ``kb`` (the snapshot the backward needs to rebuild ``A`` exactly, with no
  un-accumulation). The snapshot block stays resident in VMEM across the key axis and column ``kb`` is
  written by a lane select, so it costs one lane-dense write per query block.

* Backward, with ``g_ij = dO_j . v_i``, ``dr_j`` the cotangent of ``rem_j``, ``a_ij = A_ij (g_ij - dr_j)``
  and ``P_ij = sum_{i' <= i} a_i'j`` (inclusive prefix over keys *farther* from the query):

      dz_ij = a_ij - beta_ij P_ij,   dq_j = scale sum_i dz_ij k_i,   dk_i = scale sum_j dz_ij q_j,
      dv_i = sum_j A_ij dO_j.

  ``_dq_kernel``, grid ``(B, N, Tp/bq', Tp/bk)``: walks key blocks **far-first** (block 0 upward), reads
  the carry snapshot of each block, keeps the running ``P`` in scratch (in-tile prefix again a triangular
  fp32 matmul), accumulates ``dq`` in a ``(bq', Dp)`` fp32 scratch and writes ``psnap [B, N, Tp, nk]``,
  the ``P`` before each key block.
  ``_dkv_kernel``, grid ``(B, K, Tp/bk, G, Tp/bq')``: owns one key block of one kv head and loops over
  the ``G = N/K`` query heads of its group and over the query blocks at or after the diagonal (earlier
  ones are skipped, their index maps clamped), rebuilding each tile from the two snapshots; ``dk`` and
  ``dv`` accumulate in ``(bk, Dp)`` fp32 scratch. No atomics: the result is deterministic.

Residual memory (saved by the forward for the backward, beyond ``q, k, v``): ``stats``, fp32
``B * N * Tp * (Tp/bk + 1)`` values; the backward adds the transient ``psnap`` of the same size. For
``T = 8192``, ``bk = 128`` that is 260 bytes per (row, head), about the size of a bf16 ``o`` with
``D = 128``. The saved ``q, k, v`` are the padded head-major copies (``Dp/D`` times the inputs' size
when ``D`` is not a multiple of 128). Neither ``o`` nor a softmax-style ``delta`` is needed: the ``g - dr`` form uses
only ``dO`` and ``dr``.

Per-row values (``rem``, its cotangent, query segment ids) travel as ``[..., rows, 1]`` arrays; key
segment ids as ``[B, Tp/bk, 1, bk]``, so every block obeys Mosaic's rule (last two block dims divisible
by (8, 128) or equal to the array's) for any block size that is a multiple of 8.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from attention.reference import AttentionInputError, check_inputs

Array = jax.Array

HEAD_DIMS = (32, 256)
_LANES = 128
_SUBLANES = 8
_SOFTPLUS_THRESHOLD = 20.0


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tile sizes (all multiples of 8).

  Attributes:
    block_q: Query rows per forward tile.
    block_k: Keys per tile, forward and backward (the carry snapshots are per forward key block, so the
      backward must use the same key blocking). Any multiple of 8 lowers; on a real TPU a multiple of
      128 (the MXU and lane width) avoids padded tiles.
    block_q_bwd: Query rows per tile of both backward kernels.
  """

  block_q: int = 128
  block_k: int = 128
  block_q_bwd: int = 128

  @classmethod
  def for_head_dim(cls, d: int) -> 'BlockSizes':
    """Defaults: 128 keys (one MXU-wide triangular matmul per tile for the in-tile sums); 256-row forward
    query tiles for heads up to 128 wide (fewer K/V re-reads), 128 rows for wider heads (VMEM)."""
    if d <= 128:
      return cls(block_q=256, block_k=128, block_q_bwd=128)
    return cls(block_q=128, block_k=128, block_q_bwd=128)


class _Config(NamedTuple):
  """Static configuration shared by the custom-vjp core and the kernels (hashable)."""

  scale: float
  t_valid: int  # true sequence length; keys at or past it are masked
  block_q: int
  block_k: int
  block_q_bwd: int
  groups: int  # G = N // K
  interpret: object


def _idiv(x, d: int):
  """Integer division of a non-negative traced int32 scalar by a static positive int."""
  return lax.div(x, jnp.int32(d))


def _last_key_block(i, bq: int, bk: int):
  """Last key block that query block ``i`` needs (keys strictly before its last row)."""
  return _idiv(i * bq + (bq - 2), bk)


def _first_query_block(kb, bq: int, bk: int):
  """First query block that needs key block ``kb`` (inverse of ``_last_key_block``)."""
  return _idiv(kb * bk + 1, bq)


def _softplus(x):
  return jnp.where(x > _SOFTPLUS_THRESHOLD, x, jnp.log1p(jnp.exp(jnp.minimum(x, _SOFTPLUS_THRESHOLD))))


def _precision(dtype):
  return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else lax.Precision.DEFAULT


def _dot(a, b, *, trans_a=False, trans_b=False, precision=None):
  """fp32-accumulating matmul, optionally contracting a's rows or b's columns (no explicit transpose)."""
  dims = (((0,) if trans_a else (1,), (1,) if trans_b else (0,)), ((), ()))
  return lax.dot_general(a, b, dims, precision=precision, preferred_element_type=jnp.float32)


def _tile_mask(i, kb, bq, bk, t_valid, qs_ref, ks_ref):
  """Boolean ``(bq, bk)``: causal (key < query), key not padding, same segment."""
  rows = i * bq + lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
  cols = kb * bk + lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
  mask = (cols < rows) & (cols < t_valid)
  if qs_ref is not None:
    mask = mask & (qs_ref[0] == ks_ref[0, 0])  # (bq, 1) == (1, bk)
  return mask


def _stick_tile(q, k, carry, mask, scale):
  """Rebuilds one tile of the stick: returns ``(z, log1mb, A)``, all fp32 ``(bq, bk)``.

  ``log1mb = where(mask, -softplus(z), 0)``; ``A = exp(z + inclusive suffix of log1mb + carry)``, 0 where
  masked. The in-tile suffix is ``log1mb @ U`` with ``U[c, a] = 1 if c >= a``, in full fp32.
  """
  bk = k.shape[0]
  z = _dot(q, k, trans_b=True, precision=_precision(q.dtype)) * scale
  log1mb = jnp.where(mask, -_softplus(z), 0.0)
  upper = (
    lax.broadcasted_iota(jnp.int32, (bk, bk), 0) >= lax.broadcasted_iota(jnp.int32, (bk, bk), 1)
  ).astype(jnp.float32)
  suffix = _dot(log1mb, upper, precision=lax.Precision.HIGHEST)
  log_a = jnp.where(mask, z + suffix + carry, -jnp.inf)
  return z, log1mb, jnp.exp(log_a)


def _column(x, col):
  """Column ``col`` (traced) of a lane-dense fp32 ``(rows, W)`` value, as ``(rows, 1)`` (exact)."""
  lanes = lax.broadcasted_iota(jnp.int32, x.shape, 1)
  return jnp.sum(jnp.where(lanes == col, x, 0.0), axis=1, keepdims=True)


def _dz_tile(z, a_pre, mask, p_before):
  """``dz = a - beta * (P_before + inclusive in-tile prefix of a)``; returns ``(dz, rowsum(a))``."""
  bk = a_pre.shape[1]
  lower = (
    lax.broadcasted_iota(jnp.int32, (bk, bk), 0) <= lax.broadcasted_iota(jnp.int32, (bk, bk), 1)
  ).astype(jnp.float32)
  prefix = _dot(a_pre, lower, precision=lax.Precision.HIGHEST)
  beta = jnp.exp(z - _softplus(z))  # sigmoid(z) via log-sigmoid, no overflow
  dz = jnp.where(mask, a_pre - beta * (p_before + prefix), 0.0)
  return dz, jnp.sum(a_pre, axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------------------
# Forward


def _fwd_kernel(*refs, cfg: _Config, nk: int, save: bool, has_seg: bool):
  """One (batch, head, query block) row of tiles; key blocks arrive nearest-first."""
  if has_seg:
    q_ref, k_ref, v_ref, qs_ref, ks_ref, o_ref, st_ref, acc_ref, carry_ref = refs
  else:
    q_ref, k_ref, v_ref, o_ref, st_ref, acc_ref, carry_ref = refs
    qs_ref = ks_ref = None
  bq, bk = cfg.block_q, cfg.block_k
  i, kk = pl.program_id(2), pl.program_id(3)
  kb = nk - 1 - kk

  @pl.when(kk == 0)
  def _init():
    acc_ref[...] = jnp.zeros_like(acc_ref)
    carry_ref[...] = jnp.zeros_like(carry_ref)
    st_ref[...] = jnp.zeros_like(st_ref)

  @pl.when(kb <= _last_key_block(i, bq, bk))
  def _body():
    carry = carry_ref[...]
    if save:  # snapshot: the carry before this key block
      st = st_ref[0, 0]
      st_ref[0, 0] = jnp.where(lax.broadcasted_iota(jnp.int32, st.shape, 1) == kb, carry, st)
    mask = _tile_mask(i, kb, bq, bk, cfg.t_valid, qs_ref, ks_ref)
    v = v_ref[0, 0]
    _, log1mb, a = _stick_tile(q_ref[0, 0], k_ref[0, 0], carry, mask, cfg.scale)
    acc_ref[...] += _dot(a.astype(v.dtype), v, precision=_precision(v.dtype))
    carry_ref[...] = carry + jnp.sum(log1mb, axis=1, keepdims=True)

  @pl.when(kk == nk - 1)
  def _finish():
    o_ref[0, 0] = acc_ref[...].astype(o_ref.dtype)
    st = st_ref[0, 0]
    last = lax.broadcasted_iota(jnp.int32, st.shape, 1) == st.shape[1] - 1
    st_ref[0, 0] = jnp.where(last, jnp.exp(carry_ref[...]), st)


def _fwd_call(q, k, v, qs, ks, cfg: _Config, save: bool):
  """Runs the forward kernel; returns ``(o [B, N, Tp, Dp], stats [B, N, Tp, W])``."""
  b, n, tp, dp = q.shape
  bq, bk, g = cfg.block_q, cfg.block_k, cfg.groups
  nq, nk = tp // bq, tp // bk
  width = nk + 1 if save else 1

  def kv_block(bi, ni, i, kk):
    return jnp.minimum(nk - 1 - kk, _last_key_block(i, bq, bk))

  in_specs = [
    pl.BlockSpec((1, 1, bq, dp), lambda bi, ni, i, kk: (bi, ni, i, 0)),
    pl.BlockSpec((1, 1, bk, dp), lambda bi, ni, i, kk: (bi, _idiv(ni, g), kv_block(bi, ni, i, kk), 0)),
    pl.BlockSpec((1, 1, bk, dp), lambda bi, ni, i, kk: (bi, _idiv(ni, g), kv_block(bi, ni, i, kk), 0)),
  ]
  args = [q, k, v]
  if qs is not None:
    in_specs += [
      pl.BlockSpec((1, bq, 1), lambda bi, ni, i, kk: (bi, i, 0)),
      pl.BlockSpec((1, 1, 1, bk), lambda bi, ni, i, kk: (bi, kv_block(bi, ni, i, kk), 0, 0)),
    ]
    args += [qs, ks]
  kernel = functools.partial(_fwd_kernel, cfg=cfg, nk=nk, save=save, has_seg=qs is not None)
  return pl.pallas_call(
    kernel,
    grid=(b, n, nq, nk),
    in_specs=in_specs,
    out_specs=[
      pl.BlockSpec((1, 1, bq, dp), lambda bi, ni, i, kk: (bi, ni, i, 0)),
      pl.BlockSpec((1, 1, bq, width), lambda bi, ni, i, kk: (bi, ni, i, 0)),
    ],
    out_shape=[
      jax.ShapeDtypeStruct((b, n, tp, dp), q.dtype),
      jax.ShapeDtypeStruct((b, n, tp, width), jnp.float32),
    ],
    scratch_shapes=[pltpu.VMEM((bq, dp), jnp.float32), pltpu.VMEM((bq, 1), jnp.float32)],
    compiler_params=pltpu.CompilerParams(
      dimension_semantics=('parallel', 'parallel', 'parallel', 'arbitrary')
    ),
    interpret=cfg.interpret,
  )(*args)


# --------------------------------------------------------------------------------------------------------
# Backward: dq (and the P snapshots), then dk/dv


def _dq_kernel(*refs, cfg: _Config, nk: int, has_seg: bool):
  """One (batch, head, query block) row of tiles; key blocks arrive far-first (block 0 upward)."""
  if has_seg:
    (q_ref, k_ref, v_ref, do_ref, dr_ref, st_ref, qs_ref, ks_ref, dq_ref, ps_ref, dq_acc, p_run) = refs
  else:
    q_ref, k_ref, v_ref, do_ref, dr_ref, st_ref, dq_ref, ps_ref, dq_acc, p_run = refs
    qs_ref = ks_ref = None
  bq, bk = cfg.block_q_bwd, cfg.block_k
  i, kb = pl.program_id(2), pl.program_id(3)

  @pl.when(kb == 0)
  def _init():
    dq_acc[...] = jnp.zeros_like(dq_acc)
    p_run[...] = jnp.zeros_like(p_run)
    ps_ref[...] = jnp.zeros_like(ps_ref)

  @pl.when(kb <= _last_key_block(i, bq, bk))
  def _body():
    p_before = p_run[...]
    ps = ps_ref[0, 0]
    ps_ref[0, 0] = jnp.where(lax.broadcasted_iota(jnp.int32, ps.shape, 1) == kb, p_before, ps)
    mask = _tile_mask(i, kb, bq, bk, cfg.t_valid, qs_ref, ks_ref)
    q, k, v, do = q_ref[0, 0], k_ref[0, 0], v_ref[0, 0], do_ref[0, 0]
    z, _, a = _stick_tile(q, k, _column(st_ref[0, 0], kb), mask, cfg.scale)
    g = _dot(do, v, trans_b=True, precision=_precision(v.dtype))
    dz, a_sum = _dz_tile(z, a * (g - dr_ref[0, 0]), mask, p_before)
    dq_acc[...] += _dot(dz.astype(k.dtype), k, precision=_precision(k.dtype))
    p_run[...] = p_before + a_sum

  @pl.when(kb == nk - 1)
  def _finish():
    dq_ref[0, 0] = (dq_acc[...] * cfg.scale).astype(dq_ref.dtype)


def _dkv_kernel(*refs, cfg: _Config, nq: int, has_seg: bool):
  """One (batch, kv head, key block); loops over the group's query heads and the query blocks."""
  if has_seg:
    (q_ref, k_ref, v_ref, do_ref, dr_ref, st_ref, ps_ref, qs_ref, ks_ref, dk_ref, dv_ref, dk_acc, dv_acc) = (
      refs
    )
  else:
    q_ref, k_ref, v_ref, do_ref, dr_ref, st_ref, ps_ref, dk_ref, dv_ref, dk_acc, dv_acc = refs
    qs_ref = ks_ref = None
  bq, bk, groups = cfg.block_q_bwd, cfg.block_k, cfg.groups
  kb, gi, i = pl.program_id(2), pl.program_id(3), pl.program_id(4)

  @pl.when((gi == 0) & (i == 0))
  def _init():
    dk_acc[...] = jnp.zeros_like(dk_acc)
    dv_acc[...] = jnp.zeros_like(dv_acc)

  @pl.when(i >= _first_query_block(kb, bq, bk))
  def _body():
    mask = _tile_mask(i, kb, bq, bk, cfg.t_valid, qs_ref, ks_ref)
    q, k, v, do = q_ref[0, 0], k_ref[0, 0], v_ref[0, 0], do_ref[0, 0]
    z, _, a = _stick_tile(q, k, _column(st_ref[0, 0], kb), mask, cfg.scale)
    g = _dot(do, v, trans_b=True, precision=_precision(v.dtype))
    dz, _ = _dz_tile(z, a * (g - dr_ref[0, 0]), mask, _column(ps_ref[0, 0], kb))
    dv_acc[...] += _dot(a.astype(do.dtype), do, trans_a=True, precision=_precision(do.dtype))
    dk_acc[...] += _dot(dz.astype(q.dtype), q, trans_a=True, precision=_precision(q.dtype))

  @pl.when((gi == groups - 1) & (i == nq - 1))
  def _finish():
    dk_ref[0, 0] = (dk_acc[...] * cfg.scale).astype(dk_ref.dtype)
    dv_ref[0, 0] = dv_acc[...].astype(dv_ref.dtype)


def _bwd_calls(q, k, v, qs, ks, stats, do, dr, cfg: _Config):
  """Runs the dq and dk/dv kernels; returns ``(dq, dk, dv)`` in the padded layout."""
  b, n, tp, dp = q.shape
  kh = k.shape[1]
  bq, bk, g = cfg.block_q_bwd, cfg.block_k, cfg.groups
  nq, nk = tp // bq, tp // bk
  width = stats.shape[-1]
  has_seg = qs is not None
  sem4 = ('parallel', 'parallel', 'parallel', 'arbitrary')

  # dq: grid (b, n, i, kb), key blocks far-first; blocks past the diagonal clamp to the last needed one.
  def kv_block(bi, ni, i, kb):
    return jnp.minimum(kb, _last_key_block(i, bq, bk))

  def row(cols):
    return pl.BlockSpec((1, 1, bq, cols), lambda bi, ni, i, kb: (bi, ni, i, 0))

  kv_spec = pl.BlockSpec((1, 1, bk, dp), lambda bi, ni, i, kb: (bi, _idiv(ni, g), kv_block(bi, ni, i, kb), 0))
  in_specs = [row(dp), kv_spec, kv_spec, row(dp), row(1), row(width)]
  args = [q, k, v, do, dr, stats]
  if has_seg:
    in_specs += [
      pl.BlockSpec((1, bq, 1), lambda bi, ni, i, kb: (bi, i, 0)),
      pl.BlockSpec((1, 1, 1, bk), lambda bi, ni, i, kb: (bi, kv_block(bi, ni, i, kb), 0, 0)),
    ]
    args += [qs, ks]
  dq, psnap = pl.pallas_call(
    functools.partial(_dq_kernel, cfg=cfg, nk=nk, has_seg=has_seg),
    grid=(b, n, nq, nk),
    in_specs=in_specs,
    out_specs=[row(dp), row(nk)],
    out_shape=[
      jax.ShapeDtypeStruct((b, n, tp, dp), q.dtype),
      jax.ShapeDtypeStruct((b, n, tp, nk), jnp.float32),
    ],
    scratch_shapes=[pltpu.VMEM((bq, dp), jnp.float32), pltpu.VMEM((bq, 1), jnp.float32)],
    compiler_params=pltpu.CompilerParams(dimension_semantics=sem4),
    interpret=cfg.interpret,
  )(*args)

  # dk/dv: grid (b, kv head h, kb, group member gi, i); query blocks before the diagonal clamp forward.
  def q_block(bi, h, kb, gi, i):
    return jnp.maximum(i, _first_query_block(kb, bq, bk))

  def qrow(cols):
    return pl.BlockSpec(
      (1, 1, bq, cols), lambda bi, h, kb, gi, i: (bi, h * g + gi, q_block(bi, h, kb, gi, i), 0)
    )

  kspec = pl.BlockSpec((1, 1, bk, dp), lambda bi, h, kb, gi, i: (bi, h, kb, 0))
  in_specs = [qrow(dp), kspec, kspec, qrow(dp), qrow(1), qrow(width), qrow(nk)]
  args = [q, k, v, do, dr, stats, psnap]
  if has_seg:
    in_specs += [
      pl.BlockSpec((1, bq, 1), lambda bi, h, kb, gi, i: (bi, q_block(bi, h, kb, gi, i), 0)),
      pl.BlockSpec((1, 1, 1, bk), lambda bi, h, kb, gi, i: (bi, kb, 0, 0)),
    ]
    args += [qs, ks]
  dk, dv = pl.pallas_call(
    functools.partial(_dkv_kernel, cfg=cfg, nq=nq, has_seg=has_seg),
    grid=(b, kh, nk, g, nq),
    in_specs=in_specs,
    out_specs=[kspec, kspec],
    out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
    scratch_shapes=[pltpu.VMEM((bk, dp), jnp.float32), pltpu.VMEM((bk, dp), jnp.float32)],
    compiler_params=pltpu.CompilerParams(
      dimension_semantics=('parallel', 'parallel', 'parallel', 'arbitrary', 'arbitrary')
    ),
    interpret=cfg.interpret,
  )(*args)
  return dq, dk, dv


# --------------------------------------------------------------------------------------------------------
# custom_vjp core on the padded, head-major layout


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _core(q, k, v, qs, ks, cfg: _Config):
  """``(o [B, N, Tp, Dp], rem [B, N, Tp, 1])`` on padded head-major inputs."""
  o, stats = _fwd_call(q, k, v, qs, ks, cfg, save=False)
  return o, stats


def _core_fwd(q, k, v, qs, ks, cfg: _Config):
  o, stats = _fwd_call(q, k, v, qs, ks, cfg, save=True)
  return (o, stats[..., -1:]), (q, k, v, qs, ks, stats)


def _core_bwd(cfg: _Config, res, cts):
  q, k, v, qs, ks, stats = res
  do, drem = cts
  dq, dk, dv = _bwd_calls(q, k, v, qs, ks, stats, do.astype(q.dtype), drem.astype(jnp.float32), cfg)
  return dq, dk, dv, None, None


_core.defvjp(_core_fwd, _core_bwd)


# --------------------------------------------------------------------------------------------------------
# Public entry point


def _resolve_blocks(bs: BlockSizes, t: int) -> Tuple[int, int, int, int]:
  """Validated ``(block_q, block_k, block_q_bwd, padded length)``.

  When the whole (8-rounded) sequence fits in every block, all blocks shrink to it (one tile per row);
  otherwise the length is padded to a common multiple of the three block sizes.
  """
  blocks = (bs.block_q, bs.block_k, bs.block_q_bwd)
  for name, x in zip(('block_q', 'block_k', 'block_q_bwd'), blocks):
    if not isinstance(x, (int, np.integer)) or x <= 0 or x % _SUBLANES:
      raise AttentionInputError(f'block_sizes.{name} must be a positive multiple of {_SUBLANES}, got {x!r}.')
  t8 = -(-t // _SUBLANES) * _SUBLANES
  if t8 <= min(blocks):
    return t8, t8, t8, t8
  step = math.lcm(*blocks)
  return (*blocks, -(-t // step) * step)


def stick_breaking_attention_tpu(
  q: Array,
  k: Array,
  v: Array,
  *,
  segment_ids: Optional[Array] = None,
  scale: Optional[float] = None,
  block_sizes: Optional[BlockSizes] = None,
  interpret=False,
) -> Tuple[Array, Array]:
  """Causal stick-breaking attention (key ``i`` visible to query ``j`` iff ``i < j``), Pallas TPU.

  Args:
    q: Queries ``[B, T, N, D]`` (float32, bfloat16 or float16; float16 is computed in float32).
    k: Keys ``[B, T, K, D]``, ``K`` dividing ``N`` (query head ``n`` reads kv head ``n // (N // K)``).
    v: Values ``[B, T, K, D]``.
    segment_ids: Optional int ``[B, T]``; keys of another segment are masked (the stick restarts).
    scale: Logit scale, default ``1/sqrt(D)``.
    block_sizes: ``BlockSizes``; default ``BlockSizes.for_head_dim(D)``.
    interpret: Run the kernels in Pallas TPU interpret mode on any backend (CPU tests). ``True`` means
      ``pltpu.InterpretParams()``: TPU semantics simulated (output blocks written back only when their
      block index changes, fresh buffers filled with NaN, out-of-bounds reads raise); a
      ``pltpu.InterpretParams`` instance is passed through.

  Returns:
    ``(o, rem)``: ``o [B, T, N, D]`` in ``q.dtype`` (``sum_i A_ij v_i``) and ``rem [B, T, N]`` float32.
    Differentiable in ``q, k, v`` (through both outputs) with a deterministic custom VJP.
  """
  check_inputs(q, k, v, segment_ids, allow_float64=False, head_dims=HEAD_DIMS, self_attention=True)
  b, t, n, d = q.shape
  kh = k.shape[2]
  bs = BlockSizes.for_head_dim(d) if block_sizes is None else block_sizes
  if not isinstance(bs, BlockSizes):
    raise AttentionInputError(f'block_sizes must be kernel_tpu.BlockSizes, got {type(bs).__name__}.')
  bq, bk, bq_bwd, tp = _resolve_blocks(bs, t)
  scale = float(1.0 / np.sqrt(d)) if scale is None else float(scale)
  interp = pltpu.InterpretParams() if interpret is True else (interpret or False)
  cfg = _Config(scale, t, bq, bk, bq_bwd, n // kh, interp)

  out_dtype = q.dtype
  cdtype = jnp.float32 if q.dtype == jnp.float16 else q.dtype  # no fp16 MXU path on TPU: run in fp32
  dp = -(-d // _LANES) * _LANES

  def prep(x):  # [B, T, H, D] -> [B, H, Tp, Dp]
    x = jnp.transpose(x.astype(cdtype), (0, 2, 1, 3))
    return jnp.pad(x, ((0, 0), (0, 0), (0, tp - t), (0, dp - d)))

  qs = ks = None
  if segment_ids is not None:
    seg = jnp.pad(segment_ids.astype(jnp.int32), ((0, 0), (0, tp - t)), constant_values=-1)
    qs = seg[:, :, None]
    ks = seg.reshape(b, tp // bk, 1, bk)
  o, rem = _core(prep(q), prep(k), prep(v), qs, ks, cfg)
  o = jnp.transpose(o[:, :, :t, :d], (0, 2, 1, 3)).astype(out_dtype)
  rem = jnp.transpose(rem[:, :, :t, 0], (0, 2, 1))
  return o, rem


__all__ = ['stick_breaking_attention_tpu', 'BlockSizes', 'HEAD_DIMS']
