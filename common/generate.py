"""Batched sampling from any ``common.nn.DecoderLM`` with its KV cache: greedy or with a temperature.

Why this shape: on CPU and GPU alike, LLM evaluation and RL rollouts are dominated by (a) compilation, if
every prompt length or batch size compiles new functions, and (b) one host round trip per token, if the
loop is driven from Python. :func:`generate` therefore

* sorts prompts by length and cuts them into batches of ``batch_size`` rows (the last batch padded with
  dummy rows), left-pads each batch to a multiple of ``length_bucket`` and sizes the KV cache from those
  buckets, so a whole evaluation compiles a handful of functions (one prefill per prompt bucket, one
  decoding chunk per cache size);
* left-pads, so that every sequence's last prompt token sits at the same cache position and all rows
  decode in lock-step; ``kv_start`` (see :class:`common.nn.TransformerBlock`) hides the padding from
  attention and starts each sequence's RoPE positions at 0, so a padded row gives the logits it would alone;
* decodes ``chunk`` tokens per jitted call (a ``lax.while_loop`` that also exits once every row is done),
  then returns to the host once: new tokens come back, ``stop_fn`` may finish sequences (stop strings), and
  the next chunk starts unless all rows are finished or ``max_new_tokens`` is reached.

The prefill runs the prompt minus its last token and keeps only the cache (the output head's
``[B, T, vocab]`` logits are dead code that XLA removes); each decoding step feeds one token, samples the
next from its logits and writes it to the chunk's output.

Randomness (``temperature > 0``): the token sampled for prompt ``i`` at step ``t`` uses the key
``fold_in(fold_in(rng, i), t)``, where ``i`` is the prompt's index in ``prompts``. So, guaranteed: the same
``rng`` and prompts give the same tokens (bitwise on CPU); the random stream of a prompt does not depend on
batch size, sort order, chunk size or the other prompts; those only change the logits by float rounding
(different padding, different matmul shapes), which can flip a sample only at a near-tie. Greedy decoding
(``temperature == 0``) takes the argmax and needs no ``rng``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from common import nn

StopFn = Callable[[List[List[int]]], Sequence[bool]]


def _round_up(n: int, multiple: int) -> int:
  return int(math.ceil(n / multiple) * multiple)


def _next_pow2(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


def _prefill_impl(model: nn.DecoderLM, cache_len: int, params: Any, tokens: jax.Array, kv_start: jax.Array):
  """An empty cache of ``cache_len`` positions with ``tokens`` ``[B, P]`` (left-padded) written into it."""
  decoder = model.clone(decode=True, parent=None)
  cache = decoder.init_cache(tokens.shape[0], cache_len)
  if tokens.shape[1] == 0:
    return cache
  _, mutated = decoder.apply({'params': params, 'cache': cache}, tokens, kv_start=kv_start, mutable=['cache'])
  return mutated['cache']


_prefill = jax.jit(_prefill_impl, static_argnums=(0, 1))


def nucleus(logits: jax.Array, top_p: jax.Array) -> jax.Array:
  """``logits [B, V]`` with every token outside the top-p nucleus set to -inf (Holtzman et al., 2020).

  The nucleus is the smallest set of most probable tokens whose probability reaches ``top_p``: a token is
  kept when the probability of the tokens ranked above it is below ``top_p``, so the most probable token is
  always kept and ``top_p >= 1`` keeps every token. Ties at the boundary are kept or dropped by rank.
  """
  order = jnp.argsort(-logits, axis=-1)
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  before = jnp.cumsum(probs, axis=-1) - probs  # Probability of the tokens ranked above each.
  keep_sorted = before < top_p
  keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
  return jnp.where(keep, logits, -jnp.inf)


def _chunk_impl(
  model: nn.DecoderLM,
  chunk: int,
  greedy: bool,
  params: Any,
  cache: Any,
  token: jax.Array,
  done: jax.Array,
  kv_start: jax.Array,
  keys: jax.Array,
  step0: jax.Array,
  num_steps: jax.Array,
  temperature: jax.Array,
  top_p: jax.Array,
  eos_id: jax.Array,
  pad_id: jax.Array,
):
  """Up to ``num_steps <= chunk`` decoding steps; returns ``(tokens [B, chunk], cache, last token, done)``.

  Each step feeds ``token`` (the last prompt token, then the previous sample), samples the next token (pad
  for finished rows), and marks rows that sampled ``eos_id`` (-1: none) as done. Unused columns are pad.
  """
  decoder = model.clone(decode=True, parent=None)
  b = token.shape[0]

  def body(carry):
    i, cache, token, done, out = carry
    logits, mutated = decoder.apply(
      {'params': params, 'cache': cache}, token[:, None], kv_start=kv_start, mutable=['cache']
    )
    logits = logits[:, 0].astype(jnp.float32)
    if greedy:
      nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
      step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step0 + i)
      nxt = jax.vmap(jax.random.categorical)(step_keys, nucleus(logits / temperature, top_p)).astype(
        jnp.int32
      )
    nxt = jnp.where(done, pad_id, nxt)
    out = jax.lax.dynamic_update_slice(out, nxt[:, None], (jnp.zeros((), jnp.int32), i))
    done = done | (nxt == eos_id)
    return i + 1, mutated['cache'], nxt, done, out

  def cond(carry):
    i, _, _, done, _ = carry
    return (i < num_steps) & ~jnp.all(done)

  out = jnp.full((b, chunk), pad_id, jnp.int32)
  _, cache, token, done, out = jax.lax.while_loop(
    cond, body, (jnp.zeros((), jnp.int32), cache, token, done, out)
  )
  return out, cache, token, done


_decode_chunk = jax.jit(_chunk_impl, static_argnums=(0, 1, 2), donate_argnums=(4,))


_SIGNATURES: set = set()  # Distinct (function, static arguments, shapes) requested: the fallback count.


def compiled_count() -> int:
  """How many prefill + decoding functions this process has compiled so far (for tests and logs).

  Read from the jitted functions' caches (``_cache_size``, a private JAX method); where a JAX version lacks
  it, the number of distinct static-argument/shape signatures requested, which is the same thing.
  """
  try:
    return int(_prefill._cache_size()) + int(_decode_chunk._cache_size())
  except AttributeError:
    return len(_SIGNATURES)


def generate(
  model: nn.DecoderLM,
  params: Any,
  prompts: Sequence[Sequence[int]],
  *,
  max_new_tokens: int,
  temperature: float = 0.0,
  top_p: float = 1.0,
  rng: Optional[jax.Array] = None,
  eos_id: Optional[int] = None,
  pad_id: int = 0,
  chunk: int = 32,
  stop_fn: Optional[StopFn] = None,
  batch_size: Optional[int] = None,
  length_bucket: int = 64,
  dtype: Any = None,
) -> List[List[int]]:
  """Continues every prompt; returns only the new tokens of each, in the order of ``prompts``.

  Args:
    model: An unbound :class:`common.nn.DecoderLM` (its ``decode`` flag is ignored; a decoding clone is used).
    params: Its Flax params (``variables['params']``).
    prompts: Token-id lists, at least one token each (add a bos yourself if the model expects one).
    max_new_tokens: Most tokens generated per prompt.
    temperature: 0 for greedy (argmax); otherwise sampling from ``softmax(logits / temperature)``.
    top_p: Nucleus sampling (with ``temperature > 0``): sample only among the most probable tokens whose
      probability reaches ``top_p`` (:func:`nucleus`); 1.0 samples from the whole distribution.
    rng: PRNG key, required when ``temperature > 0`` (see the module docstring for what it guarantees).
    eos_id: A sequence that samples it is finished (``eos_id`` is the last token returned for it).
    pad_id: The token fed for finished and padding rows (never returned).
    chunk: Tokens decoded per jitted call between host checks.
    stop_fn: Called after every chunk with the new tokens so far of each unfinished sequence of the batch
      (a list of lists); returns one bool per sequence, True to finish it. A finished sequence keeps the
      tokens of the chunk in which it stopped (callers cut, e.g. at a stop string).
    batch_size: Rows per batch; every batch (the last one too) is padded to it. Default: the number of
      prompts rounded up to a power of two, at most 64.
    length_bucket: Prompt lengths are rounded up to a multiple of this (left padding).
    dtype: Computation dtype override (``model.clone(dtype=dtype)``); params are used as given.

  Returns:
    ``len(prompts)`` lists of new token ids (at most ``max_new_tokens`` each; ending in ``eos_id`` if the
    sequence sampled it).
  """
  if max_new_tokens < 0 or chunk < 1 or length_bucket < 1:
    raise ValueError('generate needs max_new_tokens >= 0, chunk >= 1 and length_bucket >= 1.')
  if temperature < 0:
    raise ValueError(f'temperature must be >= 0 (0 is greedy), got {temperature}.')
  if not 0 < top_p <= 1:
    raise ValueError(f'top_p must be in (0, 1], got {top_p}.')
  greedy = temperature == 0
  if not greedy and rng is None:
    raise ValueError('temperature > 0 samples: pass rng=jax.random.PRNGKey(seed).')
  prompts = [list(map(int, p)) for p in prompts]
  for i, p in enumerate(prompts):
    if not p:
      raise ValueError(f'prompt {i} is empty; give every prompt at least one token (e.g. bos).')
  n = len(prompts)
  if n == 0 or max_new_tokens == 0:
    return [[] for _ in prompts]
  if dtype is not None:
    model = model.clone(dtype=dtype, parent=None)
  model = model.clone(decode=False, parent=None)  # One static key per model, whatever the caller's flag.
  b = batch_size if batch_size is not None else min(_next_pow2(n), 64)
  if b < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  order = sorted(range(n), key=lambda i: -len(prompts[i]))  # Longest first: memory errors come early.
  base_key = rng if rng is not None else jax.random.PRNGKey(0)
  results: List[List[int]] = [[] for _ in range(n)]
  for start in range(0, n, b):
    rows = order[start : start + b]
    new = _generate_batch(
      model,
      params,
      [prompts[i] for i in rows],
      rows,
      batch=b,
      max_new_tokens=max_new_tokens,
      greedy=greedy,
      temperature=temperature,
      top_p=top_p,
      base_key=base_key,
      eos_id=eos_id,
      pad_id=pad_id,
      chunk=chunk,
      stop_fn=stop_fn,
      length_bucket=length_bucket,
    )
    for i, tokens in zip(rows, new):
      results[i] = tokens
  return results


def _generate_batch(
  model: nn.DecoderLM,
  params: Any,
  prompts: List[List[int]],
  indices: List[int],
  *,
  batch: int,
  max_new_tokens: int,
  greedy: bool,
  temperature: float,
  top_p: float,
  base_key: jax.Array,
  eos_id: Optional[int],
  pad_id: int,
  chunk: int,
  stop_fn: Optional[StopFn],
  length_bucket: int,
) -> List[List[int]]:
  """One batch of at most ``batch`` prompts (extra rows are dummies that start finished)."""
  real = len(prompts)
  length = _round_up(max(len(p) for p in prompts), length_bucket)
  cache_len = length + _round_up(max_new_tokens, chunk)
  tokens = np.full((batch, length), pad_id, np.int32)
  kv_start = np.full((batch,), length - 1, np.int32)  # Dummy rows: one pad token.
  for r, p in enumerate(prompts):
    tokens[r, length - len(p) :] = p
    kv_start[r] = length - len(p)
  done = np.arange(batch) >= real
  key_index = np.array(indices + [0] * (batch - real), np.int32)
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base_key, jnp.asarray(key_index))
  kv_start_dev = jnp.asarray(kv_start)
  _SIGNATURES.add(('prefill', model, cache_len, tokens.shape))
  _SIGNATURES.add(('chunk', model, chunk, greedy, batch, cache_len))
  cache = _prefill(model, cache_len, params, jnp.asarray(tokens[:, :-1]), kv_start_dev)
  token = jnp.asarray(tokens[:, -1])
  eos = jnp.int32(-1 if eos_id is None else eos_id)
  new: List[List[int]] = [[] for _ in range(real)]
  step = 0
  while step < max_new_tokens and not done[:real].all():
    n_steps = min(chunk, max_new_tokens - step)
    out, cache, token, _ = _decode_chunk(
      model,
      chunk,
      greedy,
      params,
      cache,
      token,
      jnp.asarray(done),
      kv_start_dev,
      keys,
      jnp.int32(step),
      jnp.int32(n_steps),
      jnp.float32(temperature if not greedy else 1.0),
      jnp.float32(top_p),
      eos,
      jnp.int32(pad_id),
    )
    out = np.asarray(out)
    for r in range(real):
      if done[r]:
        continue
      row = out[r, :n_steps].tolist()
      if eos_id is not None and eos_id in row:
        row = row[: row.index(eos_id) + 1]
        done[r] = True
      new[r].extend(row)
    step += n_steps
    if stop_fn is not None:
      active = [r for r in range(real) if not done[r]]
      if active:
        flags = list(stop_fn([new[r] for r in active]))
        if len(flags) != len(active):
          raise ValueError(
            f'stop_fn returned {len(flags)} flags for {len(active)} sequences; return one each.'
          )
        for r, flag in zip(active, flags):
          done[r] = done[r] or bool(flag)
  return new
