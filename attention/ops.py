"""The one entry point: ``stick_breaking_attention(q, k, v) -> (o, rem)``, dispatched to a kernel.

Implementations:
  ``'xla'``     the log-space ``jnp`` reference (any backend; O(T*S) memory per head);
  ``'triton'``  the Pallas GPU kernel (Pallas:Triton lowering; forward and deterministic backward);
  ``'mosaic'``  the Pallas Mosaic GPU kernels (Hopper: wgmma, TMA, warp specialisation): forward and dk/dv
                on Mosaic GPU, dq on Triton (``kernel_mgpu.MosaicBlockSizes``); inputs they do not take
                (segment ids, head dims other than 64 and 128, float32) go to ``'triton'``;
  ``'tpu'``     the Pallas TPU kernel (Mosaic TPU; forward and backward);
  ``None``      ``'mosaic'`` on Hopper GPUs, ``'triton'`` on other GPUs, ``'tpu'`` on TPU, ``'xla'``
                elsewhere; and ``'xla'`` whenever ``q_offset``/``kv_length`` are given (decoding against a
                cache), which kernels do not take.

``interpret=True`` runs a Pallas kernel in interpret mode on any backend (this is how CPU CI tests them).
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import jax

from attention import reference
from attention.reference import AttentionInputError

Array = jax.Array

IMPLEMENTATIONS = ('xla', 'triton', 'mosaic', 'tpu')


def _is_hopper(device) -> bool:
  """sm_90: the Mosaic GPU kernels use wgmma, which only Hopper has (Blackwell's tensor cores differ)."""
  return str(getattr(device, 'compute_capability', '')).startswith('9.')


def default_implementation() -> str:
  backend = jax.default_backend()
  if backend in ('gpu', 'cuda', 'rocm'):
    return 'mosaic' if _is_hopper(jax.devices()[0]) else 'triton'
  if backend == 'tpu':
    return 'tpu'
  return 'xla'


def stick_breaking_attention(
  q: Array,
  k: Array,
  v: Array,
  *,
  segment_ids: Optional[Array] = None,
  scale: Optional[float] = None,
  implementation: Optional[str] = None,
  block_sizes=None,
  interpret: bool = False,
  q_offset: Union[int, Array, None] = None,
  kv_length: Union[int, Array, None] = None,
) -> Tuple[Array, Array]:
  """Causal stick-breaking attention (Tan et al., 2024), no positional encoding needed.

  Args:
    q: Queries ``[B, T, N, D]`` (float32, bfloat16 or float16).
    k: Keys ``[B, S, K, D]``, ``K`` dividing ``N`` (grouped-query attention).
    v: Values ``[B, S, K, D]``.
    segment_ids: Optional int ``[B, T]``: packed documents; the stick restarts at each one.
    scale: Logit scale, default ``1/sqrt(D)``.
    implementation: ``None``, ``'xla'``, ``'triton'``, ``'mosaic'`` or ``'tpu'`` (module docstring).
    block_sizes: The kernel's block-size dataclass (``kernel_gpu.BlockSizes``,
      ``kernel_mgpu.MosaicBlockSizes``, ``kernel_tpu.BlockSizes``); default: per head dim.
    interpret: Run the Pallas kernel in interpret mode (CPU tests).
    q_offset: Position of query 0 when decoding against a cache (scalar or ``[B]``).
    kv_length: Number of valid cache entries (scalar or ``[B]``).

  Returns:
    ``(o, rem)``: ``o [B, T, N, D]`` in ``q.dtype`` holding ``sum_i A_ij v_i``, and ``rem [B, T, N]``
    float32, the stick left over (``1 - sum_i A_ij``).

  Raises:
    AttentionInputError: bad shapes, dtypes, head counts or head dims, before anything is launched.
  """
  if implementation is not None and implementation not in IMPLEMENTATIONS:
    raise AttentionInputError(
      f'implementation={implementation!r} is not one of {", ".join(IMPLEMENTATIONS)} (or None).'
    )
  decoding = q_offset is not None or kv_length is not None
  if decoding:
    if implementation not in (None, 'xla'):
      raise AttentionInputError(
        f'implementation={implementation!r} takes no q_offset/kv_length; decoding uses the xla path.'
      )
    implementation = 'xla'
  impl = implementation or default_implementation()
  if impl == 'xla':
    return reference.stick_breaking_attention_reference(
      q, k, v, segment_ids=segment_ids, scale=scale, q_offset=q_offset, kv_length=kv_length
    )
  if impl == 'triton':
    from attention import kernel_gpu

    return kernel_gpu.stick_breaking_attention_gpu(
      q, k, v, segment_ids=segment_ids, scale=scale, block_sizes=block_sizes, interpret=interpret
    )
  if impl == 'mosaic':
    if interpret:
      raise AttentionInputError("implementation='mosaic' has no interpret mode (use 'triton' on CPU).")
    from attention import kernel_mgpu

    return kernel_mgpu.stick_breaking_attention_mosaic(
      q, k, v, segment_ids=segment_ids, scale=scale, block_sizes=block_sizes
    )
  from attention import kernel_tpu

  return kernel_tpu.stick_breaking_attention_tpu(
    q, k, v, segment_ids=segment_ids, scale=scale, block_sizes=block_sizes, interpret=interpret
  )


__all__ = ['stick_breaking_attention', 'AttentionInputError', 'default_implementation', 'IMPLEMENTATIONS']
