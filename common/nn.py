"""Shared Flax Linen building blocks.

This module collects small, dependency-free neural-network pieces used by
several paper reproductions in this repository (RL agents, a Llama-style
decoder, a stick-breaking-attention language model):

* :class:`MLP` -- a plain multi-layer perceptron.
* :class:`NatureCNN` -- the DQN torso of Mnih et al. (2015).
* :class:`ImpalaCNN` -- the residual torso of Espeholt et al. (2018).
* :class:`RMSNorm` -- root-mean-square layer norm (Zhang & Sennrich, 2019).
* :func:`rope_frequencies` / :func:`apply_rope` -- rotary position
  embeddings (Su et al., 2021) in both the HF-Llama "rotate-half" and the
  original Meta/GPT-J "interleaved" conventions.
* :func:`softmax_attention` / :func:`softmax_attention_reference` --
  multi-head / grouped-query scaled dot-product attention.
* :class:`TransformerBlock` -- a pre-norm Llama-style decoder block with a
  pluggable attention function (a plain function or a Flax module with its
  own parameters) and optional KV-cache decoding.
* :class:`DecoderLM` -- a decoder-only language model (token embedding,
  a stack of :class:`TransformerBlock`, final RMSNorm, tied or separate
  output head) with KV-cache decoding; :meth:`DecoderLM.init_cache`.

Only Flax Linen (``flax.linen``) and stable public JAX APIs are used.

Shape conventions used throughout: ``B`` batch, ``T`` query length, ``S``
key/value length, ``N`` query heads, ``K`` key/value heads, ``D`` head
dimension.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]

AttentionFn = Callable[..., Array]
"""Protocol of the attention functions pluggable into :class:`TransformerBlock`.

An attention function is called as::

    out = fn(q, k, v, *, causal: bool, segment_ids: Optional[Array])                 # training / scoring
    out = fn(q, k, v, *, causal=True, segment_ids=None, q_offset=i, kv_length=i + T)  # KV-cache decoding

with

* ``q``: ``[B, T, N, D]`` queries (RoPE already applied if enabled),
* ``k``, ``v``: ``[B, S, K, D]`` keys/values, where ``K`` divides ``N``
  (grouped-query attention; query head ``n`` uses key/value head
  ``n // (N // K)``),
* ``causal``: if True, query ``t`` may only attend to keys ``s <= t``
  (``s <= q_offset + t`` when decoding),
* ``segment_ids``: ``None`` or an int ``[B, T]`` array (requires ``S == T``);
  tokens only attend to tokens with the same segment id,
* ``q_offset`` (optional keyword, only passed when decoding against a cache):
  int scalar or ``[B]``; query ``t`` sits at position ``q_offset + t`` while
  key ``s`` sits at position ``s``,
* ``kv_length`` (optional keyword, only passed when decoding): int scalar or
  ``[B]``; cache entries at positions ``>= kv_length`` are not yet written and
  must be ignored,
* ``kv_start`` (optional keyword, only passed when the caller gives one, e.g.
  left-padded batched generation): int ``[B]``; keys at positions
  ``< kv_start[b]`` are padding of sequence ``b`` and must be ignored,

and must return ``out`` of shape ``[B, T, N, D]`` in ``q.dtype``. The two
decoding keywords are only passed by :class:`TransformerBlock` with
``decode=True``, and ``kv_start`` only when given, so functions that do not
accept them keep working for training and scoring. :func:`softmax_attention` is the default implementation.

The attention "function" may also be a Flax ``nn.Module`` instance with the
same call signature, e.g. an attention with learned parameters (the
stick-breaking head of ``attention/model.py``). Passed as
``TransformerBlock(attention_fn=module)`` it is bound as a child of the block
named ``attention_fn`` (Linen adopts module-valued attributes), so its
parameters live under ``<block>/attention_fn/...``.
"""

default_kernel_init = nn.initializers.lecun_normal()


def _flatten_batch(x: Array, num_feature_dims: int) -> Tuple[Array, Tuple[int, ...]]:
  """Folds all leading dims into one batch dim (adds one if there is none).

  Args:
    x: Array of shape ``[*batch, *features]``.
    num_feature_dims: Number of trailing (non-batch) dimensions.

  Returns:
    ``(x_flat, batch_shape)`` with ``x_flat`` of shape
    ``[prod(batch), *features]``.
  """
  if x.ndim < num_feature_dims:
    raise ValueError(f'Expected at least {num_feature_dims} dims, got shape {x.shape}.')
  batch_shape = tuple(x.shape[: x.ndim - num_feature_dims])
  feature_shape = x.shape[x.ndim - num_feature_dims :]
  return x.reshape((int(np.prod(batch_shape)),) + tuple(feature_shape)), batch_shape


def _prepare_image(x: Array, scale_input: bool, dtype: Optional[Dtype]) -> Array:
  """Converts image input to a float dtype, scaling uint8 pixels to [0, 1]."""
  out_dtype = dtype if dtype is not None else jnp.float32
  if x.dtype == jnp.uint8 and scale_input:
    return x.astype(out_dtype) / jnp.asarray(255.0, out_dtype)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    return x.astype(out_dtype)
  return x if dtype is None else x.astype(dtype)


class MLP(nn.Module):
  """Multi-layer perceptron (a stack of ``nn.Dense`` layers).

  ``features[i]`` is the output width of layer ``i``. The activation is
  applied after every layer except the last one unless ``activate_final``.
  Dense layers are named ``dense_0``, ``dense_1``, ...

  Attributes:
    features: Output sizes of the successive Dense layers.
    activation: Elementwise nonlinearity (default ReLU).
    activate_final: Whether to apply ``activation`` after the last layer.
    kernel_init: Kernel initializer (Flax default, LeCun normal).
    use_bias: Whether Dense layers have a bias.
    dtype: Computation dtype (``None``: inferred from inputs and params).
    param_dtype: Parameter dtype.
  """

  features: Sequence[int]
  activation: Callable[[Array], Array] = nn.relu
  activate_final: bool = False
  kernel_init: Initializer = default_kernel_init
  use_bias: bool = True
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Applies the MLP to the last axis of ``x`` (any leading dims)."""
    n = len(self.features)
    for i, width in enumerate(self.features):
      x = nn.Dense(
        width,
        use_bias=self.use_bias,
        kernel_init=self.kernel_init,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name=f'dense_{i}',
      )(x)
      if i < n - 1 or self.activate_final:
        x = self.activation(x)
    return x


class NatureCNN(nn.Module):
  """DQN convolutional torso of Mnih et al. (2015), "Human-level control".

  Three conv layers, each followed by ReLU: 32 filters 8x8 stride 4, 64
  filters 4x4 stride 2, 64 filters 3x3 stride 1. The final 512-unit Dense
  layer of the paper is *not* included (projects add their own head).

  Padding: the default ``padding='VALID'`` follows the original Nature paper
  / DeepMind Lua code, giving a ``7x7x64`` map (3136 features) on
  ``84x84`` input. Dopamine's JAX agents use ``'SAME'`` (``11x11x64`` on
  ``84x84``); set ``padding='SAME'`` to reproduce those.

  Input is ``[*batch, H, W, C]`` (any number of batch dims, including none),
  ``uint8`` or float. With ``scale_input`` a ``uint8`` input is divided by
  255; float inputs are assumed to be scaled already and are not rescaled.
  Conv layers are named ``conv_0``, ``conv_1``, ``conv_2``.

  Attributes:
    flatten: If True return ``[*batch, h*w*c]``, else the feature map
      ``[*batch, h, w, c]`` (e.g. to tokenize it).
    padding: ``'VALID'`` (Nature DQN, default) or ``'SAME'`` (Dopamine).
    scale_input: Divide ``uint8`` input by 255.
    kernel_init: Conv kernel initializer.
    dtype: Computation dtype (``None``: float32 / inferred).
    param_dtype: Parameter dtype.
  """

  flatten: bool = True
  padding: str = 'VALID'
  scale_input: bool = True
  kernel_init: Initializer = default_kernel_init
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Encodes images ``[*batch, H, W, C]``."""
    x = _prepare_image(x, self.scale_input, self.dtype)
    x, batch_shape = _flatten_batch(x, 3)
    specs = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
    for i, (feat, kernel, stride) in enumerate(specs):
      x = nn.Conv(
        feat,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=self.padding,
        kernel_init=self.kernel_init,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name=f'conv_{i}',
      )(x)
      x = nn.relu(x)
    if self.flatten:
      return x.reshape(batch_shape + (-1,))
    return x.reshape(batch_shape + x.shape[1:])


def _impala_conv(module, features: int, name: str) -> nn.Module:
  """The 3x3, stride-1, SAME convolution of an IMPALA stage or block: ``module.conv(features, name)`` when
  given, else ``nn.Conv`` with the module's initializer and dtypes."""
  if module.conv is not None:
    return module.conv(features, name)
  return nn.Conv(
    features,
    (3, 3),
    strides=(1, 1),
    padding='SAME',
    kernel_init=module.kernel_init,
    dtype=module.dtype,
    param_dtype=module.param_dtype,
    name=name,
  )


class ImpalaResidualBlock(nn.Module):
  """IMPALA residual block (Espeholt et al., 2018): ``x + conv(relu(conv(relu(x))))``.

  Both convolutions are 3x3, stride 1, SAME padding, with ``x.shape[-1]``
  channels. Named ``conv_0`` and ``conv_1``.

  Attributes:
    kernel_init: Conv kernel initializer.
    dtype: Computation dtype.
    param_dtype: Parameter dtype.
    conv: Optional ``conv(features, name) -> module`` building each 3x3 SAME
      convolution (e.g. ``common.rl.networks.MatmulConv``, whose vmapped form
      is not a grouped convolution); None uses ``nn.Conv``.
  """

  kernel_init: Initializer = default_kernel_init
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  conv: Optional[Callable[[int, str], nn.Module]] = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Applies the block to ``[B, H, W, C]``."""
    channels = x.shape[-1]
    y = x
    for i in range(2):
      y = nn.relu(y)
      y = _impala_conv(self, channels, f'conv_{i}')(y)
    return x + y


class ImpalaCNN(nn.Module):
  """IMPALA "deep" residual torso of Espeholt et al. (2018).

  For each stage with ``c = channels[i]``: 3x3 conv (stride 1, SAME) with
  ``c`` channels -> 3x3 max-pool, stride 2, SAME -> ``num_blocks``
  :class:`ImpalaResidualBlock`\\ s. After the last stage a ReLU is applied.
  The final 256-unit Dense layer of the paper is *not* included.

  Each stage halves the spatial size (rounding up), e.g. ``64x64 -> 8x8``
  with three stages. Input and ``scale_input`` are as in :class:`NatureCNN`.
  Submodules are named ``stage_{i}_conv`` and ``stage_{i}_block_{j}``.

  Attributes:
    channels: Channels per stage (paper: ``(16, 32, 32)``).
    num_blocks: Residual blocks per stage (paper: 2).
    flatten: If True return ``[*batch, h*w*c]``, else ``[*batch, h, w, c]``.
    scale_input: Divide ``uint8`` input by 255.
    kernel_init: Conv kernel initializer.
    dtype: Computation dtype.
    param_dtype: Parameter dtype.
    conv: Optional builder of every 3x3 SAME convolution, as in
      :class:`ImpalaResidualBlock`; None uses ``nn.Conv``.
  """

  channels: Sequence[int] = (16, 32, 32)
  num_blocks: int = 2
  flatten: bool = True
  scale_input: bool = True
  kernel_init: Initializer = default_kernel_init
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  conv: Optional[Callable[[int, str], nn.Module]] = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Encodes images ``[*batch, H, W, C]``."""
    x = _prepare_image(x, self.scale_input, self.dtype)
    x, batch_shape = _flatten_batch(x, 3)
    for i, c in enumerate(self.channels):
      x = _impala_conv(self, c, f'stage_{i}_conv')(x)
      x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding='SAME')
      for j in range(self.num_blocks):
        x = ImpalaResidualBlock(
          kernel_init=self.kernel_init,
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          conv=self.conv,
          name=f'stage_{i}_block_{j}',
        )(x)
    x = nn.relu(x)
    if self.flatten:
      return x.reshape(batch_shape + (-1,))
    return x.reshape(batch_shape + x.shape[1:])


class RMSNorm(nn.Module):
  """Root-mean-square layer normalization (Zhang & Sennrich, 2019).

  ``y = x / sqrt(mean(x**2, axis=-1) + epsilon) * scale`` as in Llama / T5.
  The statistics, normalization and the multiplication by ``scale`` are
  computed in float32; the result is cast to ``dtype`` (or ``x.dtype`` if
  ``dtype`` is None). The learned gain is the parameter ``'scale'`` of shape
  ``[x.shape[-1]]``, initialized to ones (weight is ``scale`` itself, not
  ``1 + scale`` as in Gemma).

  Attributes:
    epsilon: Added to the mean square for numerical stability.
    dtype: Output dtype (``None``: same as input).
    param_dtype: Dtype of ``scale``.
    scale_init: Initializer of ``scale``.
  """

  epsilon: float = 1e-6
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  scale_init: Initializer = nn.initializers.ones

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Normalizes over the last axis of ``x``."""
    scale = self.param('scale', self.scale_init, (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    mean_sq = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(mean_sq + self.epsilon) * scale.astype(jnp.float32)
    return y.astype(self.dtype if self.dtype is not None else x.dtype)


def rope_frequencies(head_dim: int, theta: float = 10000.0) -> Array:
  """Rotary-embedding inverse frequencies (Su et al., 2021, "RoFormer").

  ``inv_freq[i] = theta ** (-2 i / head_dim)`` for ``i in [0, head_dim / 2)``,
  matching HF Llama's ``inv_freq`` (no scaling / extrapolation variants).

  Args:
    head_dim: Per-head dimension ``D`` (must be even).
    theta: RoPE base (10000 in the paper and Llama 1/2; 500000 in Llama 3).

  Returns:
    float32 array of shape ``[head_dim // 2]``.
  """
  if head_dim % 2:
    raise ValueError(f'head_dim must be even for RoPE, got {head_dim}.')
  exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
  return (1.0 / (theta**exponents)).astype(jnp.float32)


def apply_rope(x: Array, positions: Array, *, theta: float = 10000.0, interleaved: bool = False) -> Array:
  """Applies rotary position embeddings (Su et al., 2021) to ``x``.

  Each pair of features ``(a, b)`` of a token at position ``p`` is rotated by
  the angle ``p * inv_freq[i]``: ``(a cos - b sin, b cos + a sin)``. Which
  features form pair ``i`` depends on the convention:

  * ``interleaved=False`` (default): "rotate-half" convention of HF
    transformers' Llama, pairs ``(i, i + D/2)``.
  * ``interleaved=True``: original Meta Llama / GPT-J / RoFormer convention,
    pairs ``(2i, 2i + 1)``.

  The two conventions agree up to the permutation ``perm = [0, 2, 4, ...,
  1, 3, 5, ...]`` of the last axis:
  ``apply_rope(x[..., perm]) == apply_rope(x, interleaved=True)[..., perm]``.
  The computation is done in float32 and cast back to ``x.dtype``.

  Args:
    x: Array of shape ``[..., T, H, D]`` with ``D`` even.
    positions: Positions of shape ``[..., T]`` (int, or float), broadcastable
      against ``x.shape[:-2]``.
    theta: RoPE base.
    interleaved: Pairing convention, see above.

  Returns:
    Array with the same shape and dtype as ``x``.
  """
  d = x.shape[-1]
  inv_freq = rope_frequencies(d, theta)
  angles = jnp.asarray(positions).astype(jnp.float32)[..., None] * inv_freq  # [..., T, D/2]
  angles = angles[..., None, :]  # [..., T, 1, D/2], broadcasts over heads.
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  x32 = x.astype(jnp.float32)
  if interleaved:
    a, b = x32[..., 0::2], x32[..., 1::2]
  else:
    a, b = x32[..., : d // 2], x32[..., d // 2 :]
  ra = a * cos - b * sin
  rb = b * cos + a * sin
  if interleaved:
    out = jnp.stack([ra, rb], axis=-1).reshape(ra.shape[:-1] + (d,))
  else:
    out = jnp.concatenate([ra, rb], axis=-1)
  return out.astype(x.dtype)


def _segment_mask(segment_ids: Array, kv_len: int) -> Array:
  """Boolean mask ``[B, 1, T, T]``: True where query and key share a segment."""
  if segment_ids.ndim != 2:
    raise ValueError(f'segment_ids must be [B, T], got {segment_ids.shape}.')
  if segment_ids.shape[1] != kv_len:
    raise ValueError(
      f'segment_ids requires self-attention (S == T), got T={segment_ids.shape[1]}, S={kv_len}.'
    )
  return (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None, :, :]


def _check_qkv(q: Array, k: Array, v: Array) -> None:
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f'Expected 4-D q/k/v, got {q.shape}, {k.shape}, {v.shape}.')
  if k.shape != v.shape:
    raise ValueError(f'k and v shapes differ: {k.shape} vs {v.shape}.')
  if q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
    raise ValueError(f'Incompatible q {q.shape} and k {k.shape}.')
  if q.shape[2] % k.shape[2]:
    raise ValueError(f'num kv heads {k.shape[2]} must divide num heads {q.shape[2]}.')


def _position_mask(
  t: int,
  s: int,
  *,
  causal: bool,
  q_offset: Union[int, Array, None] = None,
  kv_length: Union[int, Array, None] = None,
  kv_start: Optional[Array] = None,
) -> Array:
  """Boolean mask ``[B or 1, 1, T, S]`` from token positions (decoding against a cache).

  Query ``t`` sits at position ``q_offset + t`` (``q_offset``: int scalar or ``[B]``, default 0) and key
  ``s`` at position ``s``. Key ``s`` is visible iff ``s <= q_offset + t`` (only if ``causal``),
  ``s < kv_length`` (only if ``kv_length`` is given; scalar or ``[B]``) and ``s >= kv_start`` (only if
  ``kv_start`` is given; ``[B]``: left padding).
  """
  off = (
    jnp.zeros((1,), jnp.int32) if q_offset is None else jnp.reshape(jnp.asarray(q_offset, jnp.int32), (-1,))
  )
  qpos = off[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :]  # [B or 1, T]
  kpos = jnp.arange(s, dtype=jnp.int32)[None, None, :]  # [1, 1, S]
  vis = jnp.ones((1, t, s), dtype=bool)
  if causal:
    vis = vis & (kpos <= qpos[:, :, None])
  if kv_length is not None:
    kvl = jnp.reshape(jnp.asarray(kv_length, jnp.int32), (-1,))
    vis = vis & (kpos < kvl[:, None, None])
  if kv_start is not None:
    kvs = jnp.reshape(jnp.asarray(kv_start, jnp.int32), (-1,))
    vis = vis & (kpos >= kvs[:, None, None])
  return vis[:, None]


def softmax_attention(
  q: Array,
  k: Array,
  v: Array,
  *,
  causal: bool = True,
  segment_ids: Optional[Array] = None,
  implementation: Optional[str] = None,
  scale: Optional[float] = None,
  q_offset: Union[int, Array, None] = None,
  kv_length: Union[int, Array, None] = None,
  kv_start: Optional[Array] = None,
) -> Array:
  """Scaled dot-product softmax attention (Vaswani et al., 2017) with GQA.

  Implements the :data:`AttentionFn` protocol by calling
  ``jax.nn.dot_product_attention``, which supports grouped-query attention
  (Ainslie et al., 2023) natively and can dispatch to cuDNN flash attention.

  Masking: with ``causal`` query ``t`` attends to keys ``s <= t`` (top-left
  aligned, i.e. intended for ``S == T``). With ``segment_ids`` (packed
  sequences) a token only attends to tokens with the same id; padding should
  get its own id. Both masks are combined.

  Decoding against a KV cache: with ``q_offset`` and/or ``kv_length`` query
  ``t`` sits at position ``q_offset + t`` and key ``s`` is visible iff
  ``s <= q_offset + t`` (if ``causal``) and ``s < kv_length``. This builds an
  explicit mask and always runs the XLA path (whatever ``implementation``
  says): cuDNN's ``is_causal`` is top-left aligned and cannot express the
  offset into the cache. ``kv_start`` (``[B]``, left-padded batches) hides
  keys ``s < kv_start[b]`` of sequence ``b`` and takes the same path.

  Args:
    q: Queries ``[B, T, N, D]``.
    k: Keys ``[B, S, K, D]`` with ``K`` dividing ``N``.
    v: Values ``[B, S, K, D]``.
    causal: Apply a causal mask.
    segment_ids: Optional int ``[B, T]`` segment ids (requires ``S == T``).
    implementation: ``None`` / ``'xla'`` / ``'cudnn'`` are forwarded to
      ``jax.nn.dot_product_attention`` (``None`` lets JAX choose, currently
      XLA). ``'auto'`` picks ``'cudnn'`` when running on GPU with a 16-bit
      dtype and a head dim that is a multiple of 8 and at most 128, else XLA.
    scale: Logit scale, default ``1 / sqrt(D)``.
    q_offset: Position of query 0 (int scalar or ``[B]``) when decoding
      against a cache; default 0.
    kv_length: Number of valid cache entries (int scalar or ``[B]``); keys at
      positions ``>= kv_length`` are ignored. Default: all ``S``.
    kv_start: Optional int ``[B]``: keys at positions ``< kv_start[b]`` are
      left padding of sequence ``b`` and are ignored. A query that sees no key
      (a padding query) gets an arbitrary finite output.

  Returns:
    ``[B, T, N, D]`` attention output in ``q.dtype``.
  """
  _check_qkv(q, k, v)
  mask = None
  if segment_ids is not None:
    mask = _segment_mask(segment_ids, k.shape[1])
  if q_offset is not None or kv_length is not None or kv_start is not None:
    pos_mask = _position_mask(
      q.shape[1], k.shape[1], causal=causal, q_offset=q_offset, kv_length=kv_length, kv_start=kv_start
    )
    mask = pos_mask if mask is None else mask & pos_mask
    return jax.nn.dot_product_attention(
      q, k, v, mask=mask, scale=scale, is_causal=False, implementation='xla'
    )
  if implementation == 'auto':
    d = q.shape[-1]
    on_gpu = jax.default_backend() in ('gpu', 'cuda')
    half = q.dtype in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    implementation = 'cudnn' if (on_gpu and half and d % 8 == 0 and d <= 128) else None
  return jax.nn.dot_product_attention(
    q, k, v, mask=mask, scale=scale, is_causal=causal, implementation=implementation
  )


def softmax_attention_reference(
  q: Array,
  k: Array,
  v: Array,
  *,
  causal: bool = True,
  segment_ids: Optional[Array] = None,
  scale: Optional[float] = None,
  q_offset: Union[int, Array, None] = None,
  kv_length: Union[int, Array, None] = None,
  kv_start: Optional[Array] = None,
) -> Array:
  """Plain-``jnp`` ground truth for :func:`softmax_attention`.

  Same arguments and semantics as :func:`softmax_attention`; key/value heads
  are explicitly repeated (head ``n`` uses kv head ``n // (N // K)``), and
  logits, softmax and the weighted sum are computed in float32 with
  ``HIGHEST`` matmul precision. Meant for tests, not for speed.

  Args:
    q: Queries ``[B, T, N, D]``.
    k: Keys ``[B, S, K, D]``.
    v: Values ``[B, S, K, D]``.
    causal: Apply a causal mask (key ``s`` visible to query ``t`` iff
      ``s <= q_offset + t``).
    segment_ids: Optional int ``[B, T]`` segment ids (requires ``S == T``).
    scale: Logit scale, default ``1 / sqrt(D)``.
    q_offset: Position of query 0 (int scalar or ``[B]``); default 0.
    kv_length: Keys at positions ``>= kv_length`` (int scalar or ``[B]``) are
      ignored; default: none.
    kv_start: Keys at positions ``< kv_start`` (``[B]``) are ignored; default:
      none.

  Returns:
    ``[B, T, N, D]`` attention output in ``q.dtype``.
  """
  _check_qkv(q, k, v)
  _, t, n, d = q.shape
  s, kh = k.shape[1], k.shape[2]
  groups = n // kh
  hi = jax.lax.Precision.HIGHEST
  q32 = q.astype(jnp.float32)
  k32 = jnp.repeat(k.astype(jnp.float32), groups, axis=2)
  v32 = jnp.repeat(v.astype(jnp.float32), groups, axis=2)
  scale = (1.0 / np.sqrt(d)) if scale is None else scale
  logits = jnp.einsum('btnd,bsnd->bnts', q32, k32, precision=hi) * scale
  mask = _position_mask(t, s, causal=causal, q_offset=q_offset, kv_length=kv_length, kv_start=kv_start)
  if segment_ids is not None:
    mask = mask & _segment_mask(segment_ids, s)
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum('bnts,bsnd->btnd', probs, v32, precision=hi)
  return out.astype(q.dtype)


def _default_positions(index: Array, t: int, kv_start: Optional[Array]) -> Array:
  """RoPE positions ``[1 or B, T]``: ``index + arange(T)``, minus ``kv_start`` (clipped at 0) if given."""
  positions = index + jnp.arange(t, dtype=jnp.int32)[None, :]
  if kv_start is None:
    return positions
  kvs = jnp.reshape(jnp.asarray(kv_start, jnp.int32), (-1, 1))
  return jnp.maximum(positions - kvs, 0)


class TransformerBlock(nn.Module):
  """Pre-norm decoder block in the Llama convention (Touvron et al., 2023).

  ::

      h = x + o_proj(attention_fn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1)))
          with n1 = input_norm(x)
      y = h + MLP(post_attention_norm(h))

  where ``MLP`` is ``down_proj(silu(gate_proj(z)) * up_proj(z))`` for
  ``mlp_activation='swiglu'`` (Shazeer, 2020; Llama) or
  ``down_proj(gelu(up_proj(z)))`` (tanh-approximate GELU, GPT-2 style) for
  ``'gelu'``. Norms are :class:`RMSNorm`. Submodule names follow HF Llama
  (``q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj,
  input_norm, post_attention_norm``) so that checkpoints can be mapped; note
  Flax kernels are ``[in, out]`` (the transpose of torch ``weight``), and
  head ``h`` of ``q_proj`` occupies output columns ``h*D:(h+1)*D`` as in HF.

  Attention with parameters: ``attention_fn`` may be a Flax module instance
  (see :data:`AttentionFn`). Linen adopts a module-valued attribute as a
  child named ``attention_fn``: its parameters appear under
  ``params['attention_fn']`` of this block. Linen's sharing rule applies: one
  instance given to several blocks of the same model is *one* shared module
  (its parameters live under the first block that calls it). For separate
  parameters give every block its own instance, e.g. ``proto.clone()``, as
  :class:`DecoderLM` does.

  KV-cache decoding (``decode=True``), the usual Flax pattern:

  1. ``variables = block.init(rng, x_max)`` with ``x_max`` of shape
     ``[B, max_len, d_model]`` creates ``params`` and a ``'cache'``
     collection holding ``cached_key``, ``cached_value`` (zeros,
     ``[B, max_len, K, D]``, in the computation dtype; keys are stored after
     RoPE) and ``cache_index`` (int32 scalar, 0). This first call runs an
     ordinary full forward and does not touch the cache.
  2. Every later call ``block.apply({'params': p, 'cache': c}, x,
     mutable=['cache'])`` with ``x`` of shape ``[B, T_new, d_model]``
     (``T_new >= 1``: a prompt chunk or one token) computes k/v for the new
     tokens, writes them at cache positions ``[i, i + T_new)`` where
     ``i = cache_index``, uses RoPE positions ``i + arange(T_new)`` (unless
     ``positions`` is passed), calls ``attention_fn(q, cached_key,
     cached_value, causal=True, segment_ids=None, q_offset=i,
     kv_length=i + T_new)`` and advances ``cache_index`` by ``T_new``.

  Prefilling a prompt and then feeding one token at a time therefore gives
  the same outputs as one full causal forward over the concatenation. Writing
  past ``max_len`` is not checked (``cache_index`` is traced):
  ``dynamic_update_slice`` would clamp the start and overwrite the last
  entries, so callers must keep ``i + T_new <= max_len``. Decoding requires
  ``causal=True`` and takes no ``segment_ids``.

  Left-padded batches (``kv_start``, int ``[B]``, decoding or not): sequence
  ``b``'s first real token sits at position ``kv_start[b]``. Default RoPE
  positions become ``max(0, p - kv_start[b])`` for position ``p`` (so each
  sequence's first real token has position 0) and ``kv_start=kv_start`` is
  passed to ``attention_fn``, which must hide keys ``s < kv_start[b]``
  (:func:`softmax_attention` does). Outputs at padding positions are
  arbitrary. Without ``kv_start`` nothing changes, and attention functions
  that do not accept it keep working.

  Attributes:
    num_heads: Number of query heads ``N``.
    mlp_dim: Hidden width of the MLP.
    num_kv_heads: Number of key/value heads ``K`` (GQA); default ``N``.
    head_dim: Per-head dim ``D``; default ``d_model // num_heads``.
    mlp_activation: ``'swiglu'`` or ``'gelu'``.
    attention_fn: Function or Flax module following the :data:`AttentionFn`
      protocol (default :func:`softmax_attention`), e.g. stick-breaking
      attention.
    use_rope: Apply rotary embeddings to q and k.
    rope_theta: RoPE base.
    rope_interleaved: RoPE pairing convention (see :func:`apply_rope`).
    causal: Passed to ``attention_fn``.
    dtype: Computation dtype (``None``: inferred).
    param_dtype: Parameter dtype.
    use_bias: Whether projections have biases (Llama: False).
    norm_epsilon: RMSNorm epsilon.
    kernel_init: Initializer of all projection kernels.
    decode: Use (and, on the first call, create) the KV cache; see above.
  """

  num_heads: int
  mlp_dim: int
  num_kv_heads: Optional[int] = None
  head_dim: Optional[int] = None
  mlp_activation: str = 'swiglu'
  attention_fn: Union[AttentionFn, nn.Module] = softmax_attention
  use_rope: bool = True
  rope_theta: float = 10000.0
  rope_interleaved: bool = False
  causal: bool = True
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  use_bias: bool = False
  norm_epsilon: float = 1e-6
  kernel_init: Initializer = default_kernel_init
  decode: bool = False

  def _dense(self, features: int, name: str) -> nn.Dense:
    return nn.Dense(
      features,
      use_bias=self.use_bias,
      kernel_init=self.kernel_init,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name=name,
    )

  def _norm(self, name: str) -> RMSNorm:
    return RMSNorm(epsilon=self.norm_epsilon, dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  def _rope(self, x: Array, positions: Array) -> Array:
    return apply_rope(x, positions, theta=self.rope_theta, interleaved=self.rope_interleaved)

  @nn.compact
  def __call__(
    self,
    x: Array,
    *,
    positions: Optional[Array] = None,
    segment_ids: Optional[Array] = None,
    kv_start: Optional[Array] = None,
  ) -> Array:
    """Applies the block.

    Args:
      x: Inputs ``[B, T, d_model]``.
      positions: Int positions ``[B, T]`` (or ``[T]``) for RoPE; default
        ``arange(T)`` (``cache_index + arange(T)`` when decoding), minus
        ``kv_start`` if given. Pass per-segment positions for packed sequences.
      segment_ids: Optional int ``[B, T]``, forwarded to ``attention_fn``
        (not allowed when decoding).
      kv_start: Optional int ``[B]``: left padding, see the class docstring.

    Returns:
      ``[B, T, d_model]``.
    """
    b, t, d_model = x.shape
    n = self.num_heads
    kh = self.num_kv_heads if self.num_kv_heads is not None else n
    if n % kh:
      raise ValueError(f'num_kv_heads={kh} must divide num_heads={n}.')
    if self.head_dim is not None:
      hd = self.head_dim
    else:
      if d_model % n:
        raise ValueError(f'd_model={d_model} not divisible by num_heads={n}; set head_dim.')
      hd = d_model // n
    # A cache step: decode=True and the cache already exists (the init call creates it instead).
    decoding = self.decode and self.has_variable('cache', 'cached_key')
    if self.decode and not self.causal:
      raise ValueError('decode=True needs a causal block (causal=True).')
    if decoding and segment_ids is not None:
      raise ValueError('segment_ids are not supported when decoding with a KV cache; pass None.')
    # Only given when the caller pads on the left: attention functions without the keyword keep working.
    pad_kw = {} if kv_start is None else {'kv_start': kv_start}

    # Attention sub-block.
    h = self._norm('input_norm')(x)
    q = self._dense(n * hd, 'q_proj')(h).reshape(b, t, n, hd)
    k = self._dense(kh * hd, 'k_proj')(h).reshape(b, t, kh, hd)
    v = self._dense(kh * hd, 'v_proj')(h).reshape(b, t, kh, hd)

    if decoding:
      cached_key = self.variable('cache', 'cached_key', jnp.zeros, k.shape, k.dtype)
      cached_value = self.variable('cache', 'cached_value', jnp.zeros, v.shape, v.dtype)
      cache_index = self.variable('cache', 'cache_index', lambda: jnp.zeros((), jnp.int32))
      index = cache_index.value
      if positions is None:
        positions = _default_positions(index, t, kv_start)
      if self.use_rope:
        q, k = self._rope(q, positions), self._rope(k, positions)
      start = (jnp.zeros((), jnp.int32), index, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
      cached_key.value = jax.lax.dynamic_update_slice(
        cached_key.value, k.astype(cached_key.value.dtype), start
      )
      cached_value.value = jax.lax.dynamic_update_slice(
        cached_value.value, v.astype(cached_value.value.dtype), start
      )
      cache_index.value = index + t
      attn = self.attention_fn(
        q,
        cached_key.value,
        cached_value.value,
        causal=True,
        segment_ids=None,
        q_offset=index,
        kv_length=index + t,
        **pad_kw,
      )
    else:
      if positions is None:
        positions = _default_positions(jnp.zeros((), jnp.int32), t, kv_start)
      if self.use_rope:
        q, k = self._rope(q, positions), self._rope(k, positions)
      if self.decode:  # The initialising call: create an empty cache of length T = max_len.
        self.variable('cache', 'cached_key', jnp.zeros, k.shape, k.dtype)
        self.variable('cache', 'cached_value', jnp.zeros, v.shape, v.dtype)
        self.variable('cache', 'cache_index', lambda: jnp.zeros((), jnp.int32))
      attn = self.attention_fn(q, k, v, causal=self.causal, segment_ids=segment_ids, **pad_kw)
    attn = attn.reshape(b, t, n * hd)
    x = x + self._dense(d_model, 'o_proj')(attn)

    # MLP sub-block.
    h = self._norm('post_attention_norm')(x)
    if self.mlp_activation == 'swiglu':
      gate = self._dense(self.mlp_dim, 'gate_proj')(h)
      up = self._dense(self.mlp_dim, 'up_proj')(h)
      h = nn.silu(gate) * up
    elif self.mlp_activation == 'gelu':
      h = nn.gelu(self._dense(self.mlp_dim, 'up_proj')(h), approximate=True)
    else:
      raise ValueError(f"Unknown mlp_activation {self.mlp_activation!r}; expected 'swiglu' or 'gelu'.")
    return x + self._dense(d_model, 'down_proj')(h)


class Embed(nn.Embed):
  """``nn.Embed`` that gathers rows from the parameter-dtype table and casts the rows, not the table.

  Flax's ``nn.Embed`` casts the whole table to ``dtype`` and gathers from it, so its backward scatter-adds
  the token gradients in that dtype. A bfloat16 scatter-add into a small vocabulary is pathological on GPU:
  on an H200, attention's flip-flop model (5 tokens, 16k tokens per step) spent 55-65 ms of an 88 ms step
  in that one scatter (``python -m attention.tools.step_time --trace_dir``). Gathering first gives the
  same forward values (a cast commutes with a gather) and keeps the scatter in the parameters' dtype.
  The parameter is the same (``embedding``), so checkpoints and converters are unchanged.
  """

  def __call__(self, inputs: Array) -> Array:
    if not jnp.issubdtype(inputs.dtype, jnp.integer):
      raise ValueError(f'Embed inputs must be integers, got {inputs.dtype}.')
    rows = jnp.take(self.embedding, inputs, axis=0)
    return rows.astype(self.dtype) if self.dtype is not None else rows


def _logits_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
  """``lax.dot_general`` accumulating and returning float32 (for the output head)."""
  del preferred_element_type
  return jax.lax.dot_general(
    lhs, rhs, dimension_numbers, precision=precision, preferred_element_type=jnp.float32, **kwargs
  )


class DecoderLM(nn.Module):
  """Decoder-only language model: embeddings, ``num_layers`` :class:`TransformerBlock`\\ s, RMSNorm, head.

  ::

      x = embed_tokens(tokens)                       # [B, T, d_model], N(0, 1/d_model) init
      x = layers_{L-1}( ... layers_0(x) ... )        # pre-norm Llama blocks
      logits = final_norm(x) @ embed_tokens.T        # tie_embeddings=True (else lm_head)

  Logits are always float32 (the head matmul accumulates in float32 even for
  bfloat16 computation). The embedding is not multiplied by ``sqrt(d_model)``;
  with its ``1/sqrt(d_model)`` standard deviation (Flax's default, matching
  the tied head's fan-in) the initial logits have unit scale.

  Attention per layer: ``attention_fn`` is either a plain function following
  :data:`AttentionFn` (shared by all layers; it has no parameters) or a Flax
  module instance used as a *prototype*: each layer receives its own
  ``clone`` of it, adopted as ``layers_{i}/attention_fn``, so every layer has
  its own copy of the module's parameters (e.g. the stick-breaking head's
  per-head vector and norm). The prototype itself is never called and owns no
  parameters.

  Decoding (``decode=True``) uses the KV cache of every block (see
  :class:`TransformerBlock`)::

      model = DecoderLM(..., decode=True)
      cache = model.init_cache(batch_size, max_len)       # or model.init(rng, tokens[B, max_len])['cache']
      logits, mut = model.apply({'params': params, 'cache': cache}, prompt, mutable=['cache'])
      logits, mut = model.apply({'params': params, 'cache': mut['cache']}, next_token, mutable=['cache'])

  Parameters of the decoding model are the same as those of the training
  model (``decode`` only adds the ``'cache'`` collection). Batches of prompts
  of different lengths are left-padded and pass ``kv_start`` (the index of
  each sequence's first real token) on every call; ``common.generate`` does.

  Attributes:
    vocab_size: Vocabulary size ``V``.
    num_layers: Number of blocks.
    d_model: Residual stream width.
    num_heads: Query heads per block.
    mlp_dim: MLP hidden width.
    num_kv_heads: Key/value heads (GQA); default ``num_heads``.
    head_dim: Per-head dim; default ``d_model // num_heads``.
    mlp_activation: ``'swiglu'`` or ``'gelu'``.
    attention_fn: Attention function or module prototype (see above).
    use_rope: Apply RoPE in every block (False: no positional encoding).
    rope_theta: RoPE base.
    rope_interleaved: RoPE pairing convention (see :func:`apply_rope`).
    tie_embeddings: Use the transposed token embedding as the output head;
      otherwise a separate bias-free ``lm_head`` Dense.
    dtype: Computation dtype (``None``: float32 from the parameters).
    param_dtype: Parameter dtype.
    norm_epsilon: RMSNorm epsilon of all norms.
    kernel_init: Initializer of the projection kernels (and ``lm_head``).
    embedding_init: Initializer of the token embedding ``[V, d_model]``.
    decode: KV-cache decoding (see above).
    remat: Rematerialise each block in the backward pass (``nn.remat``):
      saves activation memory for one extra forward.
    return_hidden: Return the final-normed hidden states ``[B, T, d_model]`` (float32) instead of
      logits, e.g. for a value head on a copy of the policy (llm_rl's critic).
  """

  vocab_size: int
  num_layers: int
  d_model: int
  num_heads: int
  mlp_dim: int
  num_kv_heads: Optional[int] = None
  head_dim: Optional[int] = None
  mlp_activation: str = 'swiglu'
  attention_fn: Union[AttentionFn, nn.Module] = softmax_attention
  use_rope: bool = True
  rope_theta: float = 10000.0
  rope_interleaved: bool = False
  tie_embeddings: bool = True
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  norm_epsilon: float = 1e-6
  kernel_init: Initializer = default_kernel_init
  embedding_init: Initializer = nn.initializers.variance_scaling(1.0, 'fan_in', 'normal', out_axis=0)
  decode: bool = False
  remat: bool = False
  return_hidden: bool = False

  def _layer_attention_fn(self) -> Union[AttentionFn, nn.Module]:
    """This layer's attention: the function itself, or a fresh unbound clone of the module prototype."""
    fn = self.attention_fn
    if isinstance(fn, nn.Module):
      # parent=None makes the clone "passed from outside": the block adopts it as its own child.
      return fn.clone(parent=None, name=None)
    return fn

  @nn.compact
  def __call__(
    self,
    tokens: Array,
    *,
    positions: Optional[Array] = None,
    segment_ids: Optional[Array] = None,
    kv_start: Optional[Array] = None,
  ) -> Array:
    """Computes next-token logits.

    Args:
      tokens: Int token ids ``[B, T]``.
      positions: Optional int positions ``[B, T]`` for RoPE (packed
        sequences); default ``arange(T)``, or ``cache_index + arange(T)`` when
        decoding.
      segment_ids: Optional int ``[B, T]`` document ids of packed sequences
        (tokens attend only within their document). Not allowed when decoding.
      kv_start: Optional int ``[B]`` for left-padded batches: sequence ``b``
        starts at position ``kv_start[b]``; earlier keys are hidden and RoPE
        positions count from its first real token (see
        :class:`TransformerBlock`). Logits at padding positions are arbitrary.

    Returns:
      float32 logits ``[B, T, vocab_size]``.
    """
    if tokens.ndim != 2:
      raise ValueError(f'tokens must be [batch, length], got shape {tokens.shape}.')
    embed = Embed(
      self.vocab_size,
      self.d_model,
      embedding_init=self.embedding_init,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='embed_tokens',
    )
    x = embed(tokens)
    block_cls = nn.remat(TransformerBlock) if self.remat else TransformerBlock
    for i in range(self.num_layers):
      x = block_cls(
        num_heads=self.num_heads,
        mlp_dim=self.mlp_dim,
        num_kv_heads=self.num_kv_heads,
        head_dim=self.head_dim,
        mlp_activation=self.mlp_activation,
        attention_fn=self._layer_attention_fn(),
        use_rope=self.use_rope,
        rope_theta=self.rope_theta,
        rope_interleaved=self.rope_interleaved,
        causal=True,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        norm_epsilon=self.norm_epsilon,
        kernel_init=self.kernel_init,
        decode=self.decode,
        name=f'layers_{i}',
      )(x, positions=positions, segment_ids=segment_ids, kv_start=kv_start)
    x = RMSNorm(epsilon=self.norm_epsilon, dtype=self.dtype, param_dtype=self.param_dtype, name='final_norm')(
      x
    )
    if self.return_hidden:
      return x.astype(jnp.float32)
    if self.tie_embeddings:
      table = embed.embedding.astype(x.dtype)
      return jnp.einsum('btd,vd->btv', x, table, preferred_element_type=jnp.float32).astype(jnp.float32)
    head = nn.Dense(
      self.vocab_size,
      use_bias=False,
      kernel_init=self.kernel_init,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      dot_general=_logits_dot_general,
      name='lm_head',
    )
    return head(x).astype(jnp.float32)

  @nn.nowrap
  def init_cache(self, batch_size: int, max_len: int) -> Any:
    """An empty KV cache (the ``'cache'`` collection) for ``batch_size`` sequences of ``max_len`` tokens.

    Equivalent to ``self.clone(decode=True).init(rng, zeros([batch_size, max_len]))['cache']`` but
    without running the forward or initialising parameters (shapes come from ``jax.eval_shape``). Call
    it on an unbound module.
    """
    model = self.clone(decode=True, parent=None)
    tokens = jax.ShapeDtypeStruct((batch_size, max_len), jnp.int32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), tokens)['cache']
    return jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
