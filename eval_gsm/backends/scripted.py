"""Scripted backends: deterministic stand-ins for a language model, for tests and synthetic experiments.

Both follow the ``core.Backend`` protocol and post-process every completion the way a real server would:

1. ``apply_stop``: the text is cut before the earliest occurrence of any stop string (not returned);
2. ``cap_words``: then at most ``max_tokens`` *whitespace-separated words* are kept. A scripted backend has
   no tokenizer, so a "token" here is a word; the text keeps its own spacing up to the end of the last kept
   word (trailing whitespace after it is dropped only when words were cut).

- ``FunctionBackend(fn, name)`` calls ``fn(prompt)`` for each prompt (oracles, seeded noise models, ...).
- ``TableBackend(table, name, missing='error'|'empty')`` looks each prompt up in a table keyed by
  ``prompt_key(prompt)``: the text itself for a string prompt, a canonical JSON of the messages for a chat
  prompt.

Each backend counts ``.calls`` (``generate`` calls) and ``.prompts_seen`` (prompts over all calls), so tests
can check that caching or batching layers in front of them really avoided work.
"""

import json
import threading
from typing import Callable, List, Mapping, Optional, Sequence, Union

from eval_gsm.core import BackendError, Prompt


def _stop_list(stop: Union[str, Sequence[str], None]) -> List[str]:
  """A stop argument as a list; a bare string is one stop string (not its characters)."""
  if stop is None:
    return []
  if isinstance(stop, str):
    return [stop]
  return [s for s in stop]


def apply_stop(text: str, stop: Union[str, Sequence[str], None]) -> str:
  """``text`` cut before the earliest occurrence of any stop string; empty stop strings are ignored."""
  cut = len(text)
  for s in _stop_list(stop):
    if not s:
      continue
    i = text.find(s)
    if 0 <= i < cut:
      cut = i
  return text[:cut]


def cap_words(text: str, max_tokens: int) -> str:
  """At most ``max_tokens`` whitespace-separated words of ``text``, keeping the original spacing between them.

  ``text`` is returned unchanged when it has no more words than that; otherwise it ends with the last kept
  word. ``max_tokens`` 0 gives ''.
  """
  if max_tokens < 0:
    raise ValueError(f'max_tokens must be >= 0, got {max_tokens}')
  if max_tokens == 0:
    return ''
  words = 0
  word_end = 0  # End of the last word seen so far.
  in_word = False
  for i, ch in enumerate(text):
    if ch.isspace():
      if in_word:
        word_end = i
      in_word = False
    elif not in_word:
      if words == max_tokens:  # A word beyond the cap starts: cut after the last kept word.
        return text[:word_end]
      in_word = True
      words += 1
  return text


def prompt_key(prompt: Prompt) -> str:
  """The table key of a prompt: the string itself, or a canonical JSON (sorted keys, compact) of messages."""
  if isinstance(prompt, str):
    return prompt
  if isinstance(prompt, (list, tuple)) and all(isinstance(m, Mapping) for m in prompt):
    return json.dumps([dict(m) for m in prompt], sort_keys=True, ensure_ascii=False, separators=(',', ':'))
  raise TypeError(
    f'a prompt is a str or a list of {{"role", "content"}} messages, got {type(prompt).__name__}'
  )


def _short(text: str, limit: int = 80) -> str:
  """A one-line, truncated repr of ``text`` for error messages."""
  r = repr(text)
  return r if len(r) <= limit else r[: limit - 3] + '...'


class _ScriptedBase:
  """Shared bookkeeping: counters (thread-safe) and the stop/max_tokens post-processing."""

  def __init__(self, name: str):
    self.name = name
    self.calls = 0
    self.prompts_seen = 0
    self._lock = threading.Lock()

  def _complete(self, prompt: Prompt) -> str:
    raise NotImplementedError

  def generate(
    self,
    prompts: Sequence[Prompt],
    *,
    max_tokens: int,
    temperature: float = 0.0,
    stop: Sequence[str] = (),
    seed: int = 0,
  ) -> List[str]:
    """Completions for ``prompts`` in order; ``temperature`` and ``seed`` are accepted and ignored."""
    del temperature, seed  # Scripted answers are deterministic by construction.
    if max_tokens < 0:
      raise ValueError(f'max_tokens must be >= 0, got {max_tokens}')
    prompts = list(prompts)
    with self._lock:
      self.calls += 1
      self.prompts_seen += len(prompts)
    out = []
    for prompt in prompts:
      text = self._complete(prompt)
      if not isinstance(text, str):
        raise TypeError(f'{self.name}: a scripted completion must be a str, got {type(text).__name__}')
      out.append(cap_words(apply_stop(text, stop), max_tokens))
    return out

  def __repr__(self) -> str:
    return f'{type(self).__name__}(name={self.name!r}, calls={self.calls}, prompts_seen={self.prompts_seen})'


class FunctionBackend(_ScriptedBase):
  """Completes each prompt with ``fn(prompt)``, then cuts it at ``stop`` and caps it to max_tokens words."""

  def __init__(self, fn: Callable[[Prompt], str], name: str = 'function'):
    super().__init__(name)
    self.fn = fn

  def _complete(self, prompt: Prompt) -> str:
    return self.fn(prompt)


class TableBackend(_ScriptedBase):
  """A backend that answers from ``table[prompt_key(prompt)]``, then stop-cut and capped to max_tokens words.

  ``missing='error'`` raises ``BackendError`` for a prompt not in the table; ``missing='empty'`` answers ''.
  ``.misses`` counts prompts that were not found.
  """

  def __init__(self, table: Mapping[str, str], name: str = 'table', missing: str = 'error'):
    if missing not in ('error', 'empty'):
      raise ValueError(f"missing must be 'error' or 'empty', got {missing!r}")
    super().__init__(name)
    self.table = dict(table)
    self.missing = missing
    self.misses = 0

  def _complete(self, prompt: Prompt) -> str:
    key = prompt_key(prompt)
    text: Optional[str] = self.table.get(key)
    if text is not None:
      return text
    with self._lock:
      self.misses += 1
    if self.missing == 'empty':
      return ''
    raise BackendError(
      f"{self.name}: prompt {_short(key)} is not in the table; add it, or pass missing='empty'"
    )
