"""The decoder LM of the stick-breaking experiments: three attention variants on one Llama-style body.

* ``softmax_rope``    softmax attention (:func:`common.nn.softmax_attention`, cuDNN on GPU) with RoPE;
* ``softmax_nope``    the same without any positional encoding (NoPE);
* ``stick_breaking``  :class:`StickBreakingAttention` (Tan et al., arXiv 2410.17980), no positional encoding.

Everything else (pre-norm RMSNorm blocks, SwiGLU/GELU MLP, tied embeddings, KV-cache decoding) is the
shared :class:`common.nn.DecoderLM`; :func:`make_lm` builds it from a config.

What the stick-breaking head does with the leftover stick. Stick-breaking weights of a query sum to
``1 - rem`` rather than 1 (``rem`` = the stick no key took). The kernel returns ``o = sum_i A_ij v_i``
and ``rem`` separately; the paper's model code (IBM lm-engine) then adds ``rem * h`` with a learned,
zero-initialised per-head vector ``h`` and applies a per-head GroupNorm (``num_groups = num_heads``
over the concatenated heads) before the output projection. The official unit tests instead give the
leftover to the query's own value (``o + rem * v_j``). Both are available (``rem_mode``), plus none.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from attention import ops
from common import nn as common_nn
from common.config import unknown_name_message
from common.errors import ConfigError

Array = jax.Array

VARIANTS = ('softmax_rope', 'softmax_nope', 'stick_breaking')
REM_MODES = ('head_bias', 'current_value', 'none')
NORMS = ('group', 'none')
SOFTMAX_IMPLEMENTATIONS = ('auto', 'xla', 'cudnn')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def _check_choice(what: str, value: Any, allowed) -> None:
  """Raises a one-line ConfigError when ``value`` is not one of ``allowed``."""
  if value not in allowed:
    raise ConfigError(unknown_name_message(what, str(value), allowed))


class StickBreakingAttention(nn.Module):
  """Stick-breaking attention as an attention module for :class:`common.nn.TransformerBlock`.

  Follows the :data:`common.nn.AttentionFn` protocol (``q [B, T, N, D]``, ``k, v [B, S, K, D]``):

  1. ``o, rem = attention.ops.stick_breaking_attention(q, k, v, ...)``: causal, query ``j`` uses keys
     ``i < j``; no positional encoding is needed (the stick favours the nearest keys).
  2. Leftover stick, ``rem_mode``:

     * ``'head_bias'`` (the paper's model, lm-engine): ``o + rem[..., None] * h`` with a learned per-head
       vector ``h`` (param ``'head_bias'``, ``[N, D]``, zero-initialised: at init this is ``o``);
     * ``'current_value'`` (the official unit tests): ``o + rem * v_j``, the value of the query's own
       position ``j`` (with GQA the query head's kv head ``n // (N // K)``);
     * ``'none'``: ``o`` unchanged.

  3. Per-head normalisation, ``norm``:

     * ``'group'``: GroupNorm with ``num_groups = N`` over the concatenated heads, i.e. each head's
       ``D``-vector is normalised to zero mean and unit (biased) variance with ``epsilon`` = 1e-5,
       then scaled and shifted by learned ``'norm_scale'`` (ones) and ``'norm_bias'`` (zeros), both
       ``[N, D]`` (torch's GroupNorm ``weight``/``bias`` ``[N*D]`` reshaped);
     * ``'none'``.

  Steps 2-3 are computed in float32; the result is returned in ``q.dtype``. Parameters: ``N*D`` for
  ``'head_bias'`` plus ``2*N*D`` for ``'group'``, i.e. ``3*d_model`` per layer when ``N*D = d_model``.

  Decoding against a KV cache (``q_offset``/``kv_length`` given) always uses the ``'xla'`` path, whatever
  ``implementation`` says: the Pallas kernels do not take cache offsets.

  Attributes:
    implementation: ``None`` (auto: Triton on GPU, TPU kernel on TPU, XLA elsewhere), ``'xla'``,
      ``'triton'`` or ``'tpu'``; see :mod:`attention.ops`.
    interpret: Run a Pallas kernel in interpret mode (CPU tests).
    block_sizes: Kernel block-size dataclass, or None for the per-head-dim default.
    rem_mode: ``'head_bias'``, ``'current_value'`` or ``'none'`` (above).
    norm: ``'group'`` or ``'none'`` (above).
    norm_epsilon: GroupNorm epsilon.
    scale: Logit scale; default ``1/sqrt(D)``.
    param_dtype: Dtype of the parameters.
  """

  implementation: Optional[str] = None
  interpret: bool = False
  block_sizes: Any = None
  rem_mode: str = 'head_bias'
  norm: str = 'group'
  norm_epsilon: float = 1e-5
  scale: Optional[float] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self,
    q: Array,
    k: Array,
    v: Array,
    *,
    causal: bool = True,
    segment_ids: Optional[Array] = None,
    q_offset: Union[int, Array, None] = None,
    kv_length: Union[int, Array, None] = None,
  ) -> Array:
    """Attends ``q [B, T, N, D]`` to ``k, v [B, S, K, D]``; returns ``[B, T, N, D]`` in ``q.dtype``.

    Args:
      q: Queries.
      k: Keys (``K`` divides ``N``).
      v: Values.
      causal: Must be True: stick-breaking attention is causal by construction.
      segment_ids: Optional int ``[B, T]`` document ids (packed sequences); the stick restarts at each.
      q_offset: Position of query 0 when decoding against a cache (int scalar or ``[B]``).
      kv_length: Number of valid cache entries (int scalar or ``[B]``).
    """
    _check_choice('StickBreakingAttention.rem_mode', self.rem_mode, REM_MODES)
    _check_choice('StickBreakingAttention.norm', self.norm, NORMS)
    if not causal:
      raise ConfigError('stick-breaking attention is causal only; use it in a block with causal=True.')
    decoding = q_offset is not None or kv_length is not None
    o, rem = ops.stick_breaking_attention(
      q,
      k,
      v,
      segment_ids=segment_ids,
      scale=self.scale,
      implementation=None if decoding else self.implementation,
      block_sizes=None if decoding else self.block_sizes,
      interpret=False if decoding else self.interpret,
      q_offset=q_offset,
      kv_length=kv_length,
    )
    b, t, n, d = q.shape
    out = o.astype(jnp.float32)
    rem = rem.astype(jnp.float32)[..., None]  # [B, T, N, 1]
    if self.rem_mode == 'head_bias':
      h = self.param('head_bias', nn.initializers.zeros, (n, d), self.param_dtype)
      out = out + rem * h.astype(jnp.float32)
    elif self.rem_mode == 'current_value':
      out = out + rem * _own_value(v, t, n, q_offset).astype(jnp.float32)
    if self.norm == 'group':
      scale = self.param('norm_scale', nn.initializers.ones, (n, d), self.param_dtype)
      bias = self.param('norm_bias', nn.initializers.zeros, (n, d), self.param_dtype)
      mean = jnp.mean(out, axis=-1, keepdims=True)
      var = jnp.mean(jnp.square(out - mean), axis=-1, keepdims=True)
      out = (out - mean) * jax.lax.rsqrt(var + self.norm_epsilon)
      out = out * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return out.astype(q.dtype)


def _own_value(v: Array, t: int, num_heads: int, q_offset: Union[int, Array, None]) -> Array:
  """The value at each query's own position, per query head: ``[B, T, N, D]``.

  Query ``t`` sits at position ``q_offset + t`` (0 + t without an offset); query head ``n`` reads kv head
  ``n // (N // K)``.
  """
  b, s, kh, _ = v.shape
  if q_offset is None:
    if s < t:
      raise ValueError(f"rem_mode='current_value' needs S >= T without q_offset, got S={s}, T={t}.")
    own = v[:, :t]
  else:
    off = jnp.reshape(jnp.asarray(q_offset, jnp.int32), (-1,))
    pos = jnp.broadcast_to(off[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :], (b, t))
    own = v[jnp.arange(b)[:, None], pos]  # [B, T, K, D]
  return jnp.repeat(own, num_heads // kh, axis=2)


_REQUIRED = (
  'variant',
  'vocab_size',
  'num_layers',
  'd_model',
  'num_heads',
  'num_kv_heads',
  'mlp_dim',
  'head_dim',
  'mlp_activation',
  'dtype',
  'sb_rem_mode',
  'sb_norm',
  'sb_implementation',
  'softmax_implementation',
  'rope_theta',
  'remat',
)


def make_lm(config: ml_collections.ConfigDict, *, decode: bool = False) -> common_nn.DecoderLM:
  """Builds the :class:`common.nn.DecoderLM` of one variant from a config.

  Config fields: ``variant`` (one of :data:`VARIANTS`), ``vocab_size``, ``num_layers``, ``d_model``,
  ``num_heads``, ``num_kv_heads`` (0: ``num_heads``, plain multi-head; else it must divide
  ``num_heads``), ``mlp_dim``,
  ``head_dim`` (0: ``d_model // num_heads``), ``mlp_activation`` (``'swiglu'``/``'gelu'``), ``dtype``
  (``'float32'``/``'bfloat16'``; parameters stay float32), ``sb_rem_mode`` and ``sb_norm`` (see
  :class:`StickBreakingAttention`), ``sb_implementation`` (``''`` = auto), ``softmax_implementation``
  (``'auto'``: cuDNN on GPU for 16-bit inputs, else XLA; ``'xla'``; ``'cudnn'``), ``rope_theta``
  (softmax_rope only), ``remat``.

  Parameter counts: the three variants share every weight except the stick-breaking head's, which adds
  ``3 * num_heads * head_dim`` (= ``3 * d_model`` by default) per layer with the defaults
  ``sb_rem_mode='head_bias'`` and ``sb_norm='group'`` (``h`` plus the norm's scale and bias); see
  :func:`count_params`.

  Args:
    config: The model config (fields above).
    decode: Build the KV-cache decoding model (same parameters; see :class:`common.nn.DecoderLM`).

  Raises:
    ConfigError: a missing field or an unknown choice, in one line.
  """
  missing = [name for name in _REQUIRED if name not in config]
  if missing:
    raise ConfigError(f'model config is missing {", ".join(missing)} (needed by attention.model.make_lm).')
  _check_choice('config.variant', config.variant, VARIANTS)
  _check_choice('config.dtype', config.dtype, DTYPES)
  _check_choice('config.mlp_activation', config.mlp_activation, ('swiglu', 'gelu'))
  if config.variant == 'stick_breaking':
    _check_choice('config.sb_rem_mode', config.sb_rem_mode, REM_MODES)
    _check_choice('config.sb_norm', config.sb_norm, NORMS)
    if config.sb_implementation not in ('',) + ops.IMPLEMENTATIONS:
      raise ConfigError(
        f'unknown config.sb_implementation {config.sb_implementation!r} '
        f"(valid: '' for auto, {', '.join(ops.IMPLEMENTATIONS)})"
      )
    attention_fn = StickBreakingAttention(
      implementation=config.sb_implementation or None, rem_mode=config.sb_rem_mode, norm=config.sb_norm
    )
  else:
    _check_choice('config.softmax_implementation', config.softmax_implementation, SOFTMAX_IMPLEMENTATIONS)
    attention_fn = functools.partial(
      common_nn.softmax_attention, implementation=config.softmax_implementation
    )
  if config.d_model <= 0 or config.num_heads <= 0:
    raise ConfigError(
      f'config.d_model ({config.d_model}) and config.num_heads ({config.num_heads}) must be > 0.'
    )
  if not config.head_dim and config.d_model % config.num_heads:
    raise ConfigError(
      f'config.d_model={config.d_model} is not divisible by config.num_heads={config.num_heads}; '
      'set config.head_dim.'
    )
  if config.num_kv_heads and config.num_heads % config.num_kv_heads:
    raise ConfigError(
      f'config.num_kv_heads={config.num_kv_heads} must divide config.num_heads={config.num_heads}.'
    )
  return common_nn.DecoderLM(
    vocab_size=config.vocab_size,
    num_layers=config.num_layers,
    d_model=config.d_model,
    num_heads=config.num_heads,
    mlp_dim=config.mlp_dim,
    num_kv_heads=config.num_kv_heads or None,
    head_dim=config.head_dim or None,
    mlp_activation=config.mlp_activation,
    attention_fn=attention_fn,
    use_rope=config.variant == 'softmax_rope',
    rope_theta=float(config.rope_theta),
    tie_embeddings=True,
    dtype=DTYPES[config.dtype],
    param_dtype=jnp.float32,
    decode=decode,
    remat=bool(config.remat),
  )


def count_params(params: Any) -> int:
  """Number of scalars in a parameter tree (e.g. ``variables['params']``).

  The ``stick_breaking`` variant (``sb_rem_mode='head_bias'``, ``sb_norm='group'``) has exactly
  ``3 * num_heads * head_dim`` (= ``3 * d_model`` by default) more per layer than the softmax variants:
  the leftover-stick vector ``h`` and the per-head GroupNorm's scale and bias.
  """
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


__all__ = ['StickBreakingAttention', 'make_lm', 'count_params', 'VARIANTS', 'REM_MODES', 'NORMS']
