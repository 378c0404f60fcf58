"""Tokenisers: an encoder feature map ``[B, h, w, c]`` becomes a token set ``[B, m, d]``.

"Don't flatten, tokenize!" (arXiv 2410.01930) compares how the output of the convolutional encoder is cut
into the tokens that a SoftMoE layer routes. The four ways, under the paper's names (Dopamine's
``RoutingType`` names in brackets):

============  ==========================  =================================================================
name          tokens ``m`` x dim ``d``      what one token is
============  ==========================  =================================================================
per_conv      ``h*w`` x ``c``               the channel vector of one spatial position (``PER_PIXEL``)
per_feat      ``c`` x ``h*w``               one whole feature map (channel), flattened (``PER_FEATUREMAP``)
per_patch     ``(h/P)*(w/P)`` x ...         one non-overlapping ``P x P`` patch (``PER_PATCH``), see below
per_sample    ``1`` x ``h*w*c``             the flattened sample: "no tokenisation" (``PER_SAMPLE``)
============  ==========================  =================================================================

Token order is row-major over positions (``per_conv``, ``per_patch``) or channel order (``per_feat``); the
SoftMoE layer is permutation-equivariant, so the order only matters for the flatten before the head.

``per_patch`` has three token contents (``pool``):

* ``'concat'`` (default): the patch's ``P*P*c`` values, ordered ``(row, column, channel)``, as a ViT patch.
  The learned patch embedding of Dopamine (a ``Conv(E, kernel=stride=P, VALID)``) is exactly a Dense layer
  on these tokens: :class:`Tokenizer` with ``embed_dim=E`` adds that layer (its ``[P*P*c, E]`` kernel is the
  conv kernel ``[P, P, c, E]`` reshaped).
* ``'mean'``: the average over the patch, dim ``c`` (Dopamine's ``use_avg_pool_for_tokens``).

Dopamine's VALID patching silently drops the last rows/columns when ``P`` does not divide ``h`` or ``w``
(its default 3x3 patches on an 11x11 Impala map lose 2 rows and 2 columns). Here that is an error unless
``drop_remainder=True`` asks for it.

Every function works on a batch and treats samples independently (no token ever mixes two samples). Shape
problems raise :class:`common.errors.ConfigError` while the function is traced, before anything compiles;
:func:`token_shape` computes ``(m, d)`` from a shape alone, so configurations can be checked up front.
"""

from __future__ import annotations

import difflib
import numbers
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.errors import ConfigError

Array = jax.Array
PatchSize = Union[int, Sequence[int]]

TOKENIZERS = ('per_conv', 'per_feat', 'per_patch', 'per_sample')
PATCH_POOLS = ('concat', 'mean')
_OPTIONS = {
  'per_conv': (),
  'per_feat': (),
  'per_patch': ('patch_size', 'pool', 'drop_remainder'),
  'per_sample': (),
}


def _positive_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def check_name(name: str) -> None:
  """Raises ConfigError (with a "did you mean") unless ``name`` is one of :data:`TOKENIZERS`."""
  if name not in TOKENIZERS:
    close = difflib.get_close_matches(str(name).lower(), TOKENIZERS, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ''
    raise ConfigError(f'unknown tokeniser {name!r}: {hint}choose one of {", ".join(TOKENIZERS)}.')


def _check_options(name: str, options: Dict[str, Any]) -> None:
  unknown = sorted(set(options) - set(_OPTIONS[name]))
  if unknown:
    allowed = ', '.join(_OPTIONS[name]) or 'none'
    raise ConfigError(f'tokeniser {name!r} takes no option(s) {", ".join(unknown)} (its options: {allowed}).')


def _feature_dims(feature_shape: Sequence[int]) -> Tuple[int, int, int]:
  """Validates a per-sample feature-map shape ``(h, w, c)``."""
  shape = tuple(feature_shape)
  if len(shape) != 3 or not all(_positive_int(s) for s in shape):
    raise ConfigError(
      f'a tokeniser needs a feature map (height, width, channels) per sample, got {shape}; '
      'build the encoder with flatten=False.'
    )
  return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _check_batch(x: Array) -> Tuple[int, int, int]:
  if x.ndim != 4:
    raise ConfigError(
      f'tokenisers take an encoder feature map [batch, height, width, channels], got shape {tuple(x.shape)}; '
      'build the encoder with flatten=False and keep the batch axis.'
    )
  return _feature_dims(x.shape[1:])


def _patch_hw(patch_size: Optional[PatchSize]) -> Tuple[int, int]:
  if patch_size is None:
    raise ConfigError("tokeniser 'per_patch' needs patch_size (an int P or a pair (Ph, Pw)).")
  if isinstance(patch_size, numbers.Integral):
    sizes = (patch_size, patch_size)
  else:
    sizes = tuple(patch_size) if isinstance(patch_size, (tuple, list)) else (patch_size,)
  if len(sizes) != 2 or not all(_positive_int(s) for s in sizes):
    raise ConfigError(f'patch_size must be a positive int or a pair of positive ints, got {patch_size!r}.')
  return int(sizes[0]), int(sizes[1])


def _patch_grid(
  feature_shape: Sequence[int], patch_size: Optional[PatchSize], pool: str, drop_remainder: bool
) -> Tuple[int, int, int, int]:
  """``(grid_h, grid_w, patch_h, patch_w)`` of a patching, or a ConfigError saying why it cannot work."""
  h, w, _ = _feature_dims(feature_shape)
  ph, pw = _patch_hw(patch_size)
  if pool not in PATCH_POOLS:
    raise ConfigError(f'unknown per_patch pool {pool!r}: choose one of {", ".join(PATCH_POOLS)}.')
  if ph > h or pw > w:
    raise ConfigError(f'patch_size {ph}x{pw} is larger than the {h}x{w} feature map; use a smaller patch.')
  if not drop_remainder and (h % ph or w % pw):
    raise ConfigError(
      f'patch_size {ph}x{pw} does not divide the {h}x{w} feature map; pick a divisor, or set '
      'drop_remainder=True to drop the last rows/columns as Dopamine does.'
    )
  return h // ph, w // pw, ph, pw


def token_shape(name: str, feature_shape: Sequence[int], **options: Any) -> Tuple[int, int]:
  """Number of tokens ``m`` and token dim ``d`` that tokeniser ``name`` makes from one sample.

  Pure Python (no JAX): use it to check a configuration, or size a layer, before anything is traced.

  Args:
    name: One of :data:`TOKENIZERS`.
    feature_shape: The per-sample feature map ``(h, w, c)`` (no batch axis).
    **options: ``per_patch`` only: ``patch_size``, ``pool`` (``'concat'``), ``drop_remainder`` (False).

  Returns:
    ``(m, d)``.

  Raises:
    ConfigError: unknown name or option, or a shape the tokeniser cannot cut.
  """
  check_name(name)
  _check_options(name, options)
  h, w, c = _feature_dims(feature_shape)
  if name == 'per_conv':
    return h * w, c
  if name == 'per_feat':
    return c, h * w
  if name == 'per_sample':
    return 1, h * w * c
  pool = options.get('pool', 'concat')
  gh, gw, ph, pw = _patch_grid(
    (h, w, c), options.get('patch_size'), pool, options.get('drop_remainder', False)
  )
  return gh * gw, (ph * pw * c if pool == 'concat' else c)


def per_conv(x: Array) -> Array:
  """PerConv: ``[B, h, w, c] -> [B, h*w, c]``, one token per spatial position (its channel vector)."""
  b, (h, w, c) = x.shape[0], _check_batch(x)
  return x.reshape(b, h * w, c)


def per_feat(x: Array) -> Array:
  """PerFeat: ``[B, h, w, c] -> [B, c, h*w]``, one token per channel (its flattened feature map)."""
  b, (h, w, c) = x.shape[0], _check_batch(x)
  return jnp.swapaxes(x.reshape(b, h * w, c), 1, 2)


def per_sample(x: Array) -> Array:
  """PerSample: ``[B, h, w, c] -> [B, 1, h*w*c]``, the flattened sample as a single token."""
  b, (h, w, c) = x.shape[0], _check_batch(x)
  return x.reshape(b, 1, h * w * c)


def per_patch(
  x: Array, patch_size: Optional[PatchSize] = None, pool: str = 'concat', drop_remainder: bool = False
) -> Array:
  """PerPatch: non-overlapping ``Ph x Pw`` patches, row-major, as tokens.

  Args:
    x: Feature map ``[B, h, w, c]``.
    patch_size: ``P`` or ``(Ph, Pw)``.
    pool: ``'concat'``: token = the patch's values, ordered (row, column, channel), dim ``Ph*Pw*c``;
      ``'mean'``: token = the patch average, dim ``c``.
    drop_remainder: Drop the last ``h % Ph`` rows and ``w % Pw`` columns (Dopamine's VALID patching)
      instead of raising.

  Returns:
    ``[B, (h // Ph) * (w // Pw), d]``.
  """
  b = x.shape[0]
  gh, gw, ph, pw = _patch_grid(_check_batch(x), patch_size, pool, drop_remainder)
  c = x.shape[-1]
  x = x[:, : gh * ph, : gw * pw, :].reshape(b, gh, ph, gw, pw, c)
  x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))  # [B, gh, gw, ph, pw, c]
  if pool == 'mean':
    return jnp.mean(x, axis=(3, 4)).reshape(b, gh * gw, c)
  return x.reshape(b, gh * gw, ph * pw * c)


_FUNCTIONS: Dict[str, Callable[..., Array]] = {
  'per_conv': per_conv,
  'per_feat': per_feat,
  'per_patch': per_patch,
  'per_sample': per_sample,
}


def tokenize(name: str, x: Array, **options: Any) -> Array:
  """Applies tokeniser ``name`` (one of :data:`TOKENIZERS`) to ``x`` ``[B, h, w, c]`` -> ``[B, m, d]``.

  ``options`` are those of :func:`per_patch` (``patch_size``, ``pool``, ``drop_remainder``); the other
  tokenisers take none. Unknown names, unknown options and shapes that cannot be tokenised raise
  :class:`ConfigError`.
  """
  check_name(name)
  _check_options(name, options)
  return _FUNCTIONS[name](x, **options)


class Tokenizer(nn.Module):
  """A tokeniser as a Linen module, optionally with Dopamine's learned patch embedding.

  Without ``embed_dim`` it has no parameters and equals :func:`tokenize`. With ``embed_dim=E`` (only for
  ``per_patch`` with ``pool='concat'``) a Dense layer ``patch_embed`` maps each ``Ph*Pw*c`` patch to ``E``
  features: the same function, initialisation (LeCun normal, fan-in ``Ph*Pw*c``) and zero bias as
  Dopamine's ``Conv(E, kernel_size=P, strides=P, padding='VALID')`` patch embedding.

  Attributes:
    kind: Tokeniser name, one of :data:`TOKENIZERS` (``name`` is taken by Linen).
    patch_size: ``per_patch`` only: ``P`` or ``(Ph, Pw)``.
    pool: ``per_patch`` only: ``'concat'`` or ``'mean'``.
    drop_remainder: ``per_patch`` only: drop rows/columns that do not fill a patch.
    embed_dim: ``per_patch`` only: width ``E`` of the learned patch embedding (None: no embedding).
    embed_init: Kernel initialiser of the patch embedding.
  """

  kind: str = 'per_conv'
  patch_size: Optional[PatchSize] = None
  pool: str = 'concat'
  drop_remainder: bool = False
  embed_dim: Optional[int] = None
  embed_init: Callable[..., Array] = nn.initializers.lecun_normal()

  def _options(self) -> Dict[str, Any]:
    check_name(self.kind)
    if self.kind != 'per_patch':
      if self.patch_size is not None or self.embed_dim is not None:
        raise ConfigError(
          f'patch_size and embed_dim only apply to per_patch, not to {self.kind!r}; drop them.'
        )
      return {}
    if self.embed_dim is not None:
      if not _positive_int(self.embed_dim):
        raise ConfigError(f'embed_dim must be a positive int or None, got {self.embed_dim!r}.')
      if self.pool != 'concat':
        raise ConfigError("a patch embedding needs pool='concat' (it is a Dense layer on the raw patch).")
    return dict(patch_size=self.patch_size, pool=self.pool, drop_remainder=self.drop_remainder)

  @nn.nowrap
  def token_shape(self, feature_shape: Sequence[int]) -> Tuple[int, int]:
    """``(m, d)`` this tokeniser makes from a per-sample feature map ``(h, w, c)``; pure Python."""
    m, d = token_shape(self.kind, feature_shape, **self._options())
    return m, (self.embed_dim if self.embed_dim is not None else d)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Tokenises ``x`` ``[B, h, w, c]`` into ``[B, m, d]``."""
    tokens = tokenize(self.kind, x, **self._options())
    if self.embed_dim is not None:
      tokens = nn.Dense(self.embed_dim, kernel_init=self.embed_init, name='patch_embed')(tokens)
    return tokens
