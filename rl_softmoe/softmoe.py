"""The SoftMoE penultimate layer of "Don't flatten, tokenize!" (arXiv 2410.01930) and its baselines.

In the paper's value networks the encoder's feature map ``[B, h, w, c]`` is either flattened into a Dense
layer (the baseline) or cut into tokens (:mod:`rl_softmoe.tokenizers`) that a Soft Mixture of Experts
(Puigcerver et al., arXiv 2308.00951) processes; its output is flattened into the Q-value head. This module
gives:

* :class:`SoftMoE`: the layer, tokens ``[B, m, d]`` -> ``[B, m*d]`` (or ``[B, m, d]``);
* :class:`FlattenDense` (flatten -> Dense(H) -> ReLU) and :class:`TokenizedDense` (a Dense shared by all
  tokens -> ReLU -> flatten), and the constructors :func:`flatten_dense`, :func:`scaled_flatten_dense` and
  :func:`single_expert`;
* :class:`Penultimate` (tokeniser + body) and :func:`penultimate`, which builds the experiment's variants
  (:data:`VARIANTS`: V0 ``flatten`` ... V4 ``softmoe_persample``) and checks them against a feature-map
  shape before anything is traced;
* :func:`param_count`.

The SoftMoE computation, for one sample (the layer is ``jax.vmap``-ed over the batch, so tokens of
different samples never mix, as in Dopamine's ``labs/moes`` where the whole network runs per observation):

1. ``X`` ``[m, d]``: the tokens; ``Phi`` ``[d, n, p]``: the router, ``n`` experts with ``p`` slots each,
   ``p = ceil(m / n)`` unless given.
2. ``logits[i, j, k] = X[i] . Phi[:, j, k]``, shape ``[m, n, p]`` (``[m, n*p]`` viewed flat).
3. ``dispatch = softmax(logits, axis=tokens)``: every slot is a convex combination of the tokens.
4. ``combine = softmax(logits, axes=(experts, slots))`` jointly over all ``n*p`` slots: every output token
   is a convex combination of all slot outputs. It is *not* a softmax per expert.
5. ``slots[j, k] = sum_i dispatch[i, j, k] X[i]`` (the raw tokens, also when normalising).
6. Expert ``j`` (``d -> H -> d``, ReLU or GELU) is applied to each of its ``p`` slots. The ``n`` experts'
   weights are stacked (``w_in`` ``[n, d, H]``, ``w_out`` ``[n, H, d]``) and applied with one einsum, so the
   experts are independent but there is no Python loop over them.
7. ``Y[i] = sum_{j,k} combine[i, j, k] expert_j(slots[j, k])``, ``[m, d]``, then flattened to ``[m*d]``.

Initialisation follows Dopamine: the router with Flax's ``lecun_normal`` applied to the ``[d, n, p]`` shape
(whose fan-in is ``n*d``, so the standard deviation is ``1/sqrt(n*d)``), expert kernels Xavier-uniform per
expert (fan-in ``d`` / fan-out ``H`` and vice versa), biases zero. Unlike Dopamine, NaNs in the slot inputs
are not replaced by zeros (the softmax here is stable, so NaNs can only come from non-finite inputs, which
the training loop should see), and the ``router_scale`` parameter exists only when ``normalize_tokens`` is on.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.errors import ConfigError
from rl_softmoe import tokenizers

Array = jax.Array
Initializer = Callable[..., Array]

FROZEN = 'frozen'
"""The variable collection holding the fixed random router of ``SoftMoE(random_router=True)``."""

ACTIVATIONS: Dict[str, Callable[[Array], Array]] = {
  'relu': nn.relu,
  'gelu': functools.partial(jax.nn.gelu, approximate=False),
}

NORM_EPS = 1e-6
"""Added to the L2 norm before dividing (Dopamine's ``l2_normalize``)."""


def _positive_int(value: Any, what: str) -> int:
  if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
    raise ConfigError(f'{what} must be a positive int, got {value!r}.')
  return int(value)


def num_slots(
  num_tokens: int,
  num_experts: int,
  slots_per_expert: Optional[int] = None,
  allow_more_experts_than_tokens: bool = False,
) -> int:
  """Slots per expert ``p``: ``ceil(m / n)`` (capacity factor 1, as in Dopamine) unless given.

  With one expert ``p = m``; with one token (PerSample) ``p = 1``. Pure Python, so a configuration can be
  checked before anything is traced.

  Args:
    num_tokens: Tokens per sample ``m``.
    num_experts: Experts ``n``.
    slots_per_expert: An explicit ``p`` (None: ``ceil(m / n)``).
    allow_more_experts_than_tokens: ``n > m`` is an error unless this is set. With ``n > m`` the ``n*p``
      slots outnumber the tokens and, for ``m = 1``, every expert receives the one token unchanged: the
      paper's PerSample ablation ("SoftMoE on the flattened sample") is exactly that, so its variant sets
      this; anywhere else ``n > m`` is most likely a mis-sized tokeniser.

  Raises:
    ConfigError: non-positive sizes, or ``n > m`` without ``allow_more_experts_than_tokens``.
  """
  m = _positive_int(num_tokens, 'the number of tokens')
  n = _positive_int(num_experts, 'num_experts')
  if n > m and not allow_more_experts_than_tokens:
    raise ConfigError(
      f'SoftMoE has more experts ({n}) than tokens ({m}); use at most {m} experts or a tokeniser that makes '
      'more tokens (set allow_more_experts_than_tokens=True only for the PerSample ablation).'
    )
  if slots_per_expert is None:
    return -(-m // n)
  return _positive_int(slots_per_expert, 'slots_per_expert')


def l2_normalize(x: Array, axis: int, eps: float = NORM_EPS) -> Array:
  """``x / (||x||_2 + eps)`` along ``axis`` (eps added to the norm, not under the square root)."""
  return x / (jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True)) + eps)


def routing_weights(tokens: Array, router: Array) -> Tuple[Array, Array]:
  """Dispatch and combine weights of one sample.

  Args:
    tokens: ``[m, d]`` (already normalised if normalisation is on).
    router: ``[d, n, p]`` (already normalised and scaled if normalisation is on).

  Returns:
    ``(dispatch, combine)``, both ``[m, n, p]``: ``dispatch`` sums to 1 over the tokens (axis 0) for every
    slot, ``combine`` sums to 1 over all ``n*p`` slots (axes 1 and 2 together) for every token.
  """
  logits = jnp.einsum('md,dnp->mnp', tokens, router)
  return jax.nn.softmax(logits, axis=0), jax.nn.softmax(logits, axis=(1, 2))


class SoftMoE(nn.Module):
  """Soft Mixture of Experts on the tokens of one sample, vmapped over the batch (see the module docstring).

  Parameters (collection ``'params'``): ``router`` ``[d, n, p]``; ``router_scale`` ``[]`` (only with
  ``normalize_tokens``); ``w_in`` ``[n, d, H]``, ``b_in`` ``[n, H]``, ``w_out`` ``[n, H, d]``, ``b_out``
  ``[n, d]``. So ``n`` experts hold ``n*(2dH + H + d)`` weights; one expert of width ``n*H`` holds
  ``2dnH + nH + d``: the same up to ``(n - 1)*d`` output biases (and a router of ``d*m`` instead of
  ``d*n*ceil(m/n)``), at ``n`` times the FLOPs.

  **Normalisation** (``normalize_tokens=True``, Dopamine's ``normalization``, off by default there and here):
  the router logits use ``X_hat = X / (||X||_2 + 1e-6)``, each token L2-normalised over its ``d`` features,
  and ``Phi_hat = s * Phi / (||Phi||_2 + 1e-6)``, each router column ``Phi[:, j, k]`` L2-normalised over
  ``d`` and multiplied by one learned scalar ``s`` (``router_scale``, initialised to 1, shared by all
  slots). So the logits are ``s`` times the cosine similarities between tokens and router columns. The slot
  inputs are still mixtures of the raw tokens ``X``.

  **Random router** (``random_router=True``, the paper's "random Phi" ablation): ``Phi`` is drawn from
  ``N(0, 1)`` once, at ``init``, from the ``'params'`` RNG, stored as ``router`` in the non-trainable
  collection :data:`FROZEN` (``'frozen'``) and read through ``stop_gradient``. It is therefore fixed for the
  whole run, differs between seeds, is saved with the variables, and is untouched by any optimiser or
  weight decay that only sees ``'params'``. Keep all of ``model.init(...)`` and apply with
  ``{'params': params, 'frozen': variables['frozen']}``. (Dopamine instead redraws ``Phi`` from the call's
  key on every forward pass; a router that changes each step is a different ablation.)

  Intermediates are sown into ``'intermediates'`` (free unless that collection is mutable): ``dispatch``
  and ``combine`` ``[B, m, n, p]``, ``slots`` ``[B, n, p, d]`` and ``expert_hidden`` ``[B, n, p, H]``
  (post-activation, for dormant-neuron statistics).

  Attributes:
    num_experts: ``n``.
    expert_hidden: Hidden width ``H`` of every expert.
    slots_per_expert: ``p``; None for ``ceil(m / n)``.
    normalize_tokens: L2-normalise tokens and router columns with a learned scale (above).
    random_router: Use a fixed random router instead of a learned one (above).
    activation: Expert nonlinearity, ``'relu'`` (Dopamine) or ``'gelu'`` (exact erf form).
    flatten_output: Return ``[B, m*d]`` (for the head) instead of ``[B, m, d]``.
    allow_more_experts_than_tokens: Permit ``n > m`` (see :func:`num_slots`).
    router_init: Initialiser of the learned router ``[d, n, p]``.
    expert_init: Initialiser of the stacked expert kernels ``[n, fan_in, fan_out]``.
  """

  num_experts: int = 4
  expert_hidden: int = 128
  slots_per_expert: Optional[int] = None
  normalize_tokens: bool = False
  random_router: bool = False
  activation: str = 'relu'
  flatten_output: bool = True
  allow_more_experts_than_tokens: bool = False
  router_init: Initializer = nn.initializers.lecun_normal()
  expert_init: Initializer = nn.initializers.xavier_uniform(in_axis=-2, out_axis=-1, batch_axis=(0,))

  @nn.nowrap
  def num_slots(self, num_tokens: int) -> int:
    """Slots per expert ``p`` for ``num_tokens`` tokens; raises ConfigError for a bad configuration."""
    _positive_int(self.expert_hidden, 'expert_hidden')
    if self.activation not in ACTIVATIONS:
      raise ConfigError(
        f'unknown expert activation {self.activation!r}: choose one of {", ".join(ACTIVATIONS)}.'
      )
    return num_slots(num_tokens, self.num_experts, self.slots_per_expert, self.allow_more_experts_than_tokens)

  @nn.nowrap
  def output_features(self, num_tokens: int, token_dim: int) -> int:
    """Width of the flattened output, ``m*d``, after checking the configuration."""
    self.num_slots(num_tokens)
    return num_tokens * _positive_int(token_dim, 'the token dim')

  def _router(self, d: int, n: int, p: int) -> Array:
    shape = (d, n, p)
    if not self.random_router:
      return self.param('router', self.router_init, shape)
    if not self.is_initializing() and not self.has_variable(FROZEN, 'router'):
      raise ConfigError(
        f"SoftMoE(random_router=True) keeps its router in the '{FROZEN}' collection; apply with all of the "
        f"variables from init, e.g. {{'params': params, '{FROZEN}': variables['{FROZEN}']}}."
      )
    router = self.variable(FROZEN, 'router', lambda: jax.random.normal(self.make_rng('params'), shape)).value
    if router.shape != shape:
      raise ConfigError(
        f'the stored random router has shape {router.shape} but these tokens need {shape}; '
        're-initialise the model for this tokeniser and feature map.'
      )
    return jax.lax.stop_gradient(router)

  @nn.compact
  def __call__(self, tokens: Array) -> Array:
    """Mixes ``tokens`` ``[B, m, d]`` into ``[B, m*d]`` (``[B, m, d]`` if not ``flatten_output``)."""
    if tokens.ndim != 3:
      raise ConfigError(
        f'SoftMoE takes tokens [batch, tokens, dim], got shape {tuple(tokens.shape)}; tokenise the encoder '
        'output first (rl_softmoe.tokenizers).'
      )
    b, m, d = tokens.shape
    n, h = self.num_experts, self.expert_hidden
    p = self.num_slots(m)
    act = ACTIVATIONS[self.activation]

    router = self._router(d, n, p)
    if self.normalize_tokens:
      scale = self.param('router_scale', nn.initializers.ones, ())
      router = scale * l2_normalize(router, axis=0)
    w_in = self.param('w_in', self.expert_init, (n, d, h))
    b_in = self.param('b_in', nn.initializers.zeros, (n, h))
    w_out = self.param('w_out', self.expert_init, (n, h, d))
    b_out = self.param('b_out', nn.initializers.zeros, (n, d))

    def one_sample(x: Array) -> Tuple[Array, ...]:
      x_route = l2_normalize(x, axis=-1) if self.normalize_tokens else x
      dispatch, combine = routing_weights(x_route, router)  # [m, n, p] each
      slots = jnp.einsum('mnp,md->npd', dispatch, x)
      hidden = act(jnp.einsum('npd,ndh->nph', slots, w_in) + b_in[:, None, :])
      slot_out = jnp.einsum('nph,nhd->npd', hidden, w_out) + b_out[:, None, :]
      return jnp.einsum('mnp,npd->md', combine, slot_out), dispatch, combine, slots, hidden

    out, dispatch, combine, slots, hidden = jax.vmap(one_sample)(tokens)
    self.sow('intermediates', 'dispatch', dispatch)
    self.sow('intermediates', 'combine', combine)
    self.sow('intermediates', 'slots', slots)
    self.sow('intermediates', 'expert_hidden', hidden)
    return out.reshape(b, m * d) if self.flatten_output else out


class FlattenDense(nn.Module):
  """The baseline penultimate layer: flatten -> Dense(features) -> ReLU (Xavier-uniform kernel, as Dopamine).

  Attributes:
    features: Width ``H`` (``H*n`` for the scaled baseline, Dopamine's ``scale_hidden_layer``).
    kernel_init: Kernel initialiser.
  """

  features: int = 128
  kernel_init: Initializer = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """``[B, ...]`` (e.g. ``[B, h, w, c]``) -> ``[B, features]``."""
    if x.ndim < 2:
      raise ConfigError(f'FlattenDense takes a batch [batch, ...], got shape {tuple(x.shape)}.')
    features = _positive_int(self.features, 'features')
    x = x.reshape(x.shape[0], -1)
    return nn.relu(nn.Dense(features, kernel_init=self.kernel_init, name='dense')(x))


class TokenizedDense(nn.Module):
  """The tokenised baseline: one Dense(features) + ReLU shared by all tokens, then flatten.

  Tokenisation without routing or experts: ``[B, m, d]`` -> ``[B, m*features]``.

  Attributes:
    features: Output width per token.
    kernel_init: Kernel initialiser.
  """

  features: int = 128
  kernel_init: Initializer = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, tokens: Array) -> Array:
    """``[B, m, d]`` -> ``[B, m*features]``."""
    if tokens.ndim != 3:
      raise ConfigError(f'TokenizedDense takes tokens [batch, tokens, dim], got shape {tuple(tokens.shape)}.')
    features = _positive_int(self.features, 'features')
    y = nn.relu(nn.Dense(features, kernel_init=self.kernel_init, name='dense')(tokens))
    return y.reshape(tokens.shape[0], -1)


def flatten_dense(hidden: int = 128) -> FlattenDense:
  """Flatten -> Dense(hidden) -> ReLU."""
  return FlattenDense(features=_positive_int(hidden, 'hidden'))


def scaled_flatten_dense(hidden: int = 128, scale: int = 4) -> FlattenDense:
  """Flatten -> Dense(hidden*scale) -> ReLU: the "penultimate layer scaled" baseline."""
  return FlattenDense(features=_positive_int(hidden, 'hidden') * _positive_int(scale, 'scale'))


def single_expert(hidden: int = 128, scale: int = 4, **softmoe_options: Any) -> SoftMoE:
  """The scaled single expert: ``SoftMoE`` with one expert of hidden width ``hidden*scale``.

  It keeps the router and the slots (``p = m``); with ``scale = n`` it has the parameters of ``n`` experts
  of width ``hidden`` (up to ``(n - 1)*d`` biases and the router) and ``n`` times their FLOPs.
  """
  width = _positive_int(hidden, 'hidden') * _positive_int(scale, 'scale')
  return SoftMoE(num_experts=1, expert_hidden=width, **softmoe_options)


class Penultimate(nn.Module):
  """Encoder feature map ``[B, h, w, c]`` -> features ``[B, F]`` for the head: an optional tokeniser + a body.

  Attributes:
    body: :class:`FlattenDense` (no tokeniser), :class:`SoftMoE` or :class:`TokenizedDense`.
    tokenizer: A :class:`rl_softmoe.tokenizers.Tokenizer`, or None to hand the feature map to the body.
  """

  body: nn.Module
  tokenizer: Optional[tokenizers.Tokenizer] = None

  @nn.nowrap
  def output_features(self, feature_shape: Sequence[int]) -> int:
    """Output width ``F`` for a per-sample feature map ``(h, w, c)``; raises ConfigError if it cannot work.

    Pure Python: run it on a configuration before building the training loop.
    """
    if self.tokenizer is None:
      if not isinstance(self.body, FlattenDense):
        raise ConfigError(f'{type(self.body).__name__} needs tokens; give Penultimate a tokenizer.')
      tokenizers.token_shape('per_sample', feature_shape)  # Validates (h, w, c).
      return _positive_int(self.body.features, 'features')
    m, d = self.tokenizer.token_shape(feature_shape)
    if isinstance(self.body, SoftMoE):
      return self.body.output_features(m, d)
    if isinstance(self.body, TokenizedDense):
      return m * _positive_int(self.body.features, 'features')
    raise ConfigError(
      f'a tokenised Penultimate needs a SoftMoE or TokenizedDense body, not {type(self.body).__name__}.'
    )

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """``[B, h, w, c]`` -> ``[B, F]``."""
    if self.tokenizer is not None:
      x = self.tokenizer(x)
    return self.body(x)


@dataclasses.dataclass(frozen=True)
class Variant:
  """One penultimate-layer variant of the experiment (``H`` = ``hidden``, ``n`` = ``scale``).

  Attributes:
    id: The experiment's label (V0 ...).
    body: ``'flatten'``, ``'softmoe'`` or ``'tokenized'``.
    tokenizer: Tokeniser name, None for the flatten baselines.
    many_experts: ``n`` experts (else one).
    scaled_hidden: Hidden width ``H*n`` (else ``H``).
    allow_more_experts_than_tokens: Passed to :class:`SoftMoE` (only the PerSample ablation).
    description: What it is for.
  """

  id: str
  body: str
  tokenizer: Optional[str]
  many_experts: bool
  scaled_hidden: bool
  allow_more_experts_than_tokens: bool = False
  description: str = ''


VARIANTS: Dict[str, Variant] = {
  'flatten': Variant(
    'V0', 'flatten', None, False, False, description='flatten -> Dense(H): the unscaled baseline'
  ),
  'flatten_x4': Variant(
    'V1', 'flatten', None, False, True, description='flatten -> Dense(H*n): the penultimate layer scaled'
  ),
  'softmoe': Variant(
    'V2', 'softmoe', 'per_conv', True, False, description='SoftMoE-n, PerConv, experts of H'
  ),
  'single_expert_x4': Variant(
    'V3',
    'softmoe',
    'per_conv',
    False,
    True,
    description='the scaled single expert: SoftMoE-1 of H*n, PerConv',
  ),
  'softmoe_persample': Variant(
    'V4',
    'softmoe',
    'per_sample',
    True,
    False,
    allow_more_experts_than_tokens=True,
    description='SoftMoE-n on the flattened sample (one token): SoftMoE without tokenisation',
  ),
  'softmoe_perfeat': Variant(
    'V5', 'softmoe', 'per_feat', True, False, description='SoftMoE-n, PerFeat (optional)'
  ),
  'tokenized': Variant(
    'V6', 'tokenized', 'per_conv', False, False, description='shared Dense(H) per PerConv token (optional)'
  ),
}
"""The variants by name. ``_x4`` names the paper's default scale ``n = 4``; ``scale`` changes it."""

VARIANT_IDS: Dict[str, str] = {v.id: name for name, v in VARIANTS.items()}

_TOKENIZER_OPTIONS = frozenset({'patch_size', 'pool', 'drop_remainder', 'embed_dim'})


def penultimate(
  name: str,
  *,
  hidden: int = 128,
  scale: int = 4,
  feature_shape: Optional[Sequence[int]] = None,
  tokenizer: Optional[str] = None,
  tokenizer_options: Optional[Mapping[str, Any]] = None,
  normalize_tokens: bool = False,
  random_router: bool = False,
  activation: str = 'relu',
  slots_per_expert: Optional[int] = None,
) -> Penultimate:
  """Builds variant ``name`` (a key of :data:`VARIANTS` or its id, ``'V0'`` ... ``'V6'``).

  ====  ==================  =========================================================
  V0    flatten             flatten -> Dense(H) -> ReLU
  V1    flatten_x4          flatten -> Dense(H*n) -> ReLU
  V2    softmoe             PerConv -> SoftMoE, n experts of H
  V3    single_expert_x4    PerConv -> SoftMoE, 1 expert of H*n
  V4    softmoe_persample   PerSample -> SoftMoE, n experts of H (n > m = 1 allowed)
  V5    softmoe_perfeat     PerFeat -> SoftMoE, n experts of H (optional)
  V6    tokenized           PerConv -> shared Dense(H) + ReLU per token -> flatten (optional)
  ====  ==================  =========================================================

  Args:
    name: Variant name or id.
    hidden: ``H`` (the experiment's 128 on MinAtar; Dopamine's 512 on Atari).
    scale: ``n``: the number of experts of V2/V4/V5 and the width factor of V1/V3.
    feature_shape: The encoder's per-sample feature map ``(h, w, c)``; if given, the variant is checked
      against it here (tokenisable shape, no more experts than tokens), before any tracing.
    tokenizer: Replace the variant's tokeniser (tokenised variants only).
    tokenizer_options: Fields of :class:`rl_softmoe.tokenizers.Tokenizer` (``patch_size``, ``pool``,
      ``drop_remainder``, ``embed_dim``).
    normalize_tokens, random_router, activation, slots_per_expert: :class:`SoftMoE` options; they apply to
      the SoftMoE variants and are ignored by the others, so one config can sweep all variants.

  Returns:
    An unbound :class:`Penultimate`.
  """
  key = VARIANT_IDS.get(name, name)
  if key not in VARIANTS:
    raise ConfigError(
      f'unknown penultimate variant {name!r}: choose one of {", ".join(VARIANTS)} (or V0-V6).'
    )
  spec = VARIANTS[key]
  hidden = _positive_int(hidden, 'hidden')
  scale = _positive_int(scale, 'scale')
  width = hidden * scale if spec.scaled_hidden else hidden
  if spec.tokenizer is None and (tokenizer is not None or tokenizer_options):
    raise ConfigError(f'variant {key!r} flattens the feature map; drop tokenizer/tokenizer_options.')

  tok = None
  if spec.body == 'flatten':
    body: nn.Module = FlattenDense(features=width)
  else:
    options = dict(tokenizer_options or {})
    unknown = sorted(set(options) - _TOKENIZER_OPTIONS)
    if unknown:
      raise ConfigError(f'unknown tokenizer_options {unknown}: use {sorted(_TOKENIZER_OPTIONS)}.')
    kind = tokenizer or spec.tokenizer
    tokenizers.check_name(kind)
    tok = tokenizers.Tokenizer(kind=kind, **options)
    if spec.body == 'tokenized':
      body = TokenizedDense(features=width)
    else:
      body = SoftMoE(
        num_experts=scale if spec.many_experts else 1,
        expert_hidden=width,
        slots_per_expert=slots_per_expert,
        normalize_tokens=normalize_tokens,
        random_router=random_router,
        activation=activation,
        allow_more_experts_than_tokens=spec.allow_more_experts_than_tokens,
      )
  module = Penultimate(body=body, tokenizer=tok)
  if feature_shape is not None:
    module.output_features(feature_shape)
  return module


def param_count(module: nn.Module, input_shape: Sequence[int], collection: str = 'params') -> int:
  """Number of scalars in ``collection`` of ``module`` initialised on ``input_shape``.

  Runs ``init`` abstractly (``jax.eval_shape``): nothing is computed or compiled.
  """
  x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
  shapes = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x), x)
  return sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(shapes.get(collection, {})))
