"""Stick-breaking attention in plain ``jnp``: the ground truth every kernel is tested against.

For query ``j`` and an earlier key ``i`` (``i < j``; ``i <= j`` with ``attend_current``):

    z_ij = scale * q_j . k_i,      beta_ij = sigmoid(z_ij)
    A_ij = beta_ij * prod_{i < k < j} (1 - beta_kj)           (the nearest key breaks the stick first)
    o_j  = sum_i A_ij v_i,          rem_j = 1 - sum_i A_ij = prod_i (1 - beta_ij)

Evaluated in log space, never in probability space (a product of thousands of factors underflows):

    log A_ij = z_ij + sum_{i <= k < j} log(1 - beta_kj),   log(1 - beta) = -softplus(z)

i.e. the logit plus the *inclusive* suffix sum of ``log(1 - beta)`` from the key up to the query, a
reverse cumulative sum along keys. Masked pairs (future keys, other documents, padding) contribute 0 to
the log-stick and get ``A = 0``. ``rem = exp(total log-stick)``.

Layout follows ``jax.nn.dot_product_attention``: ``q [B, T, N, D]``, ``k, v [B, S, K, D]`` with ``K``
dividing ``N`` (grouped-query attention: query head ``n`` reads kv head ``n // (N // K)``).
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

SUPPORTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


class AttentionInputError(ValueError):
  """Bad arguments to stick-breaking attention; the message names the argument."""


def check_inputs(
  q: Array,
  k: Array,
  v: Array,
  segment_ids: Optional[Array] = None,
  *,
  allow_float64: bool = True,
  head_dims: Optional[Tuple[int, int]] = None,
  self_attention: bool = False,
) -> None:
  """Validates shapes and dtypes before anything is traced into a kernel.

  Args:
    q: ``[B, T, N, D]``.
    k: ``[B, S, K, D]``.
    v: ``[B, S, K, D]``.
    segment_ids: Optional int ``[B, T]`` (self-attention only: ``S == T``).
    allow_float64: Accept float64 (the reference does; kernels do not).
    head_dims: Inclusive ``(lo, hi)`` range of supported head dims, or None for any.
    self_attention: Require equal q and k lengths (the causal kernels).

  Raises:
    AttentionInputError: naming the offending argument.
  """
  for name, x in (('q', q), ('k', k), ('v', v)):
    if getattr(x, 'ndim', None) != 4:
      raise AttentionInputError(
        f'{name} must be 4-D [batch, length, heads, head_dim], got shape {getattr(x, "shape", None)}.'
      )
    ok = set(SUPPORTED_DTYPES) | ({jnp.dtype(jnp.float64)} if allow_float64 else set())
    if jnp.dtype(x.dtype) not in ok:
      raise AttentionInputError(
        f'{name} has dtype {x.dtype}; supported: {", ".join(sorted(str(d) for d in ok))}.'
      )
  if not (q.dtype == k.dtype == v.dtype):
    raise AttentionInputError(f'q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}; cast them to one.')
  if k.shape != v.shape:
    raise AttentionInputError(f'k and v shapes differ: k {k.shape} vs v {v.shape}.')
  if q.shape[0] != k.shape[0]:
    raise AttentionInputError(f'batch sizes differ: q {q.shape[0]} vs k {k.shape[0]}.')
  if q.shape[3] != k.shape[3]:
    raise AttentionInputError(f'head_dim differs: q {q.shape[3]} vs k {k.shape[3]}.')
  if k.shape[2] == 0 or q.shape[2] % k.shape[2]:
    raise AttentionInputError(
      f'k/v heads ({k.shape[2]}) must divide q heads ({q.shape[2]}) for grouped-query attention.'
    )
  if head_dims is not None and not head_dims[0] <= q.shape[3] <= head_dims[1]:
    raise AttentionInputError(
      f'head_dim {q.shape[3]} of q is not supported by this kernel; supported {head_dims[0]}..{head_dims[1]}.'
    )
  if self_attention and k.shape[1] != q.shape[1]:
    raise AttentionInputError(
      f'k length {k.shape[1]} differs from q length {q.shape[1]}: the kernel is causal self-attention.'
    )
  if segment_ids is not None:
    if getattr(segment_ids, 'ndim', None) != 2 or tuple(segment_ids.shape) != (q.shape[0], q.shape[1]):
      raise AttentionInputError(
        f'segment_ids must be [batch, length] = {(q.shape[0], q.shape[1])}, '
        f'got {getattr(segment_ids, "shape", None)}.'
      )
    if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
      raise AttentionInputError(f'segment_ids must be integers, got {segment_ids.dtype}.')
    if k.shape[1] != q.shape[1]:
      raise AttentionInputError(
        f'segment_ids need self-attention (equal lengths), got q length {q.shape[1]}, k length {k.shape[1]}.'
      )


def softplus(x: Array) -> Array:
  """``log(1 + exp(x))`` without overflow: ``x`` itself above 20 (exact to float32 there)."""
  return jnp.where(x > 20.0, x, jnp.log1p(jnp.exp(jnp.minimum(x, 20.0))))


def pair_mask(
  t: int,
  s: int,
  *,
  segment_ids: Optional[Array] = None,
  q_offset: Union[int, Array, None] = None,
  kv_length: Union[int, Array, None] = None,
  attend_current: bool = False,
) -> Array:
  """Boolean ``[B or 1, 1, T, S]``: True where query ``t`` may use key ``s``.

  Query ``t`` sits at position ``q_offset + t`` (``q_offset`` scalar or ``[B]``, default 0); key ``s`` at
  position ``s``. Key visible iff ``s < pos`` (``<=`` with ``attend_current``), ``s < kv_length`` and,
  with ``segment_ids``, both carry the same id.
  """
  off = (
    jnp.zeros((1,), jnp.int32) if q_offset is None else jnp.reshape(jnp.asarray(q_offset, jnp.int32), (-1,))
  )
  qpos = off[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :]  # [B or 1, T]
  kpos = jnp.arange(s, dtype=jnp.int32)
  vis = (
    (kpos[None, None, :] <= qpos[:, :, None]) if attend_current else (kpos[None, None, :] < qpos[:, :, None])
  )
  if kv_length is not None:
    kvl = jnp.reshape(jnp.asarray(kv_length, jnp.int32), (-1,))
    vis = vis & (kpos[None, None, :] < kvl[:, None, None])
  if segment_ids is not None:
    vis = vis & (segment_ids[:, :, None] == segment_ids[:, None, :])
  return vis[:, None]


def stick_breaking_attention_reference(
  q: Array,
  k: Array,
  v: Array,
  *,
  segment_ids: Optional[Array] = None,
  scale: Optional[float] = None,
  q_offset: Union[int, Array, None] = None,
  kv_length: Union[int, Array, None] = None,
  attend_current: bool = False,
) -> Tuple[Array, Array]:
  """Stick-breaking attention, log space, differentiable (O(T*S) memory per head: tests and decoding).

  Args:
    q: Queries ``[B, T, N, D]``.
    k: Keys ``[B, S, K, D]``, ``K`` dividing ``N``.
    v: Values ``[B, S, K, D]``.
    segment_ids: Optional int ``[B, T]`` for packed sequences: the stick restarts at every document.
    scale: Logit scale, default ``1/sqrt(D)``.
    q_offset: Position of query 0 (scalar or ``[B]``); for decoding against a cache. Default 0.
    kv_length: Keys at positions ``>= kv_length`` (scalar or ``[B]``) are ignored (cache padding).
    attend_current: Let the key at the query's own position take part (the paper's default: no).

  Returns:
    ``(o, rem)``: ``o [B, T, N, D]`` in ``q.dtype`` (only ``sum_i A_ij v_i``; the leftover stick is not
    folded in) and ``rem [B, T, N]`` float32 (float64 for float64 inputs), the stick left over.
  """
  check_inputs(q, k, v, segment_ids if (q_offset is None and kv_length is None) else None)
  b, t, n, d = q.shape
  s, kh = k.shape[1], k.shape[2]
  g = n // kh
  ct = jnp.promote_types(q.dtype, jnp.float32)
  scale = float(1.0 / np.sqrt(d)) if scale is None else scale
  hi = jax.lax.Precision.HIGHEST
  qg = q.astype(ct).reshape(b, t, kh, g, d)
  z = jnp.einsum('btkgd,bskd->bkgts', qg, k.astype(ct), precision=hi).reshape(b, n, t, s) * scale
  mask = pair_mask(
    t, s, segment_ids=segment_ids, q_offset=q_offset, kv_length=kv_length, attend_current=attend_current
  )
  log1mb = jnp.where(mask, -softplus(z), 0.0)
  # inclusive suffix sum along keys: S_i = sum_{k >= i} log(1 - beta_k) (masked terms are 0)
  suffix = jnp.flip(jnp.cumsum(jnp.flip(log1mb, -1), axis=-1), -1)
  a = jnp.where(mask, jnp.exp(jnp.where(mask, z + suffix, -jnp.inf)), 0.0)
  rem = jnp.exp(suffix[..., 0])  # [B, N, T]
  o = jnp.einsum('bkgts,bskd->btkgd', a.reshape(b, kh, g, t, s), v.astype(ct), precision=hi)
  return o.reshape(b, t, n, d).astype(q.dtype), jnp.transpose(rem, (0, 2, 1))


def stick_breaking_bruteforce(
  q: np.ndarray,
  k: np.ndarray,
  v: np.ndarray,
  *,
  segment_ids: Optional[np.ndarray] = None,
  scale: Optional[float] = None,
  attend_current: bool = False,
) -> Tuple[np.ndarray, np.ndarray]:
  """Float64 NumPy loops that multiply the stick explicitly (tests only; tiny shapes).

  Walks keys from the query backwards, handing each key ``beta`` of what is left of the stick.
  """
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  b, t, n, d = q.shape
  g = n // k.shape[2]
  scale = 1.0 / np.sqrt(d) if scale is None else scale
  o = np.zeros((b, t, n, d))
  rem = np.ones((b, t, n))
  for bi in range(b):
    for h in range(n):
      for j in range(t):
        left = 1.0
        last = j if attend_current else j - 1
        for i in range(last, -1, -1):
          if segment_ids is not None and segment_ids[bi, i] != segment_ids[bi, j]:
            continue
          z = scale * float(q[bi, j, h] @ k[bi, i, h // g])
          beta = 1.0 / (1.0 + np.exp(-z))
          o[bi, j, h] += left * beta * v[bi, i, h // g]
          left *= 1.0 - beta
        rem[bi, j, h] = left
  return o, rem
