"""Tokenizers for the language models of this repository: characters, and GPT-2 style byte-level BPE.

Two tokenizers with one interface (``encode``, ``decode``, ``vocab_size``, ``pad_id``/``bos_id``/``eos_id``):

* :class:`CharTokenizer` -- one id per character of a fixed alphabet, for the small models trained in the
  repository (ids 0..3 are pad, bos, eos and unk). Saved and loaded as JSON next to a checkpoint.
* :class:`BPETokenizer` -- a byte-level BPE (GPT-2, Radford et al. 2019) built from the vocabulary, merge
  ranks and special tokens stored in a GGUF file's metadata, so that a pretrained model loaded by
  ``common.gguf_loader`` (SmolLM2-135M-Instruct) is fed exactly the ids it was trained on, without the
  HF ``tokenizers``/``transformers`` packages (not dependencies of this repository).

Byte-level BPE in four steps: (1) special tokens (``<|im_start|>`` ...) are cut out of the text as whole
tokens; (2) the rest is pre-tokenized by a regex into "words"; (3) each word's UTF-8 bytes are written in
GPT-2's printable byte-to-unicode alphabet (space is 'Ġ', newline 'Ċ') and merged pairwise, lowest merge
rank first; (4) the merged symbols are looked up in the vocabulary. Decoding maps symbols back to bytes, so
``decode(encode(text)) == text`` for any text without special-token strings.

Pre-tokenizer: GGUF names it in ``tokenizer.ggml.pre`` and llama.cpp maps the name to regexes. SmolLM2's is
``'smollm'``, which llama.cpp treats like StarCoder's: first every numeric character is split off on its own
(``\\p{N}``; HF: ``Digits(individual_digits=True)``), then GPT-2's regex
``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`` splits each piece
(HF: ``ByteLevel(add_prefix_space=False)``). Plain ``'gpt2'`` skips the digit split. Python's ``re`` has no
``\\p{L}``/``\\p{N}``, so the character classes are built once from ``unicodedata`` (0.2 s, on first use)
and ``\\s`` is spelled as Unicode's White_Space list, as Oniguruma/HF use it; this keeps the third-party
``regex`` package out of the dependencies. The results agree with HF ``tokenizers`` on the SmolLM2 vocabulary
(``tokenizers_test.py``, when that package is installed).

Speed: pre-tokenized words repeat a lot (few-shot prompts share most of their text), so the BPE result of
each word is cached; encoding 1,000 prompts of 2,000 characters takes about a second in pure Python.

Chat template: GGUF stores a Jinja template (``tokenizer.chat_template``). SmolLM2's is ChatML, one
``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, with a default system message inserted when the
first message is not a system message, and ``<|im_start|>assistant\\n`` as the generation prompt.
:meth:`BPETokenizer.apply_chat_template` implements that family directly (default system message read from
the template); any other template is rendered with ``jinja2`` when it is installed, else it is an error.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

Message = Mapping[str, str]

# GGUF token types (llama.cpp's llama_token_type / gguf.TokenType).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# ----------------------------------------------------------------------------
# Character tokenizer
# ----------------------------------------------------------------------------


class CharTokenizer:
  """One token per character of ``alphabet``; ids 0..3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``.

  Character ``alphabet[i]`` has id ``4 + i``; characters outside the alphabet encode to ``unk_id`` (so
  ``decode(encode(text)) == text`` only for text over the alphabet). ``decode`` renders the reserved ids as
  ``<pad>``/``<bos>``/``<eos>``/``<unk>``, or drops them with ``skip_special`` (``<unk>`` then becomes
  U+FFFD). ``add_bos`` (True) records the repository's convention for character models: sequences start
  with ``bos_id`` (callers such as the eval_gsm backend read it; ``encode`` adds bos only when asked).
  """

  add_bos = True
  pad_id = 0
  bos_id = 1
  eos_id = 2
  unk_id = 3
  SPECIALS = ('<pad>', '<bos>', '<eos>', '<unk>')

  def __init__(self, alphabet: str):
    if not isinstance(alphabet, str) or not alphabet:
      raise ValueError('CharTokenizer needs a non-empty alphabet string, e.g. CharTokenizer("0123456789+=").')
    repeated = sorted({c for c in alphabet if alphabet.count(c) > 1})
    if repeated:
      raise ValueError(f'CharTokenizer alphabet repeats {repeated!r}; give each character once.')
    self.alphabet = alphabet
    self._ids = {c: i + len(self.SPECIALS) for i, c in enumerate(alphabet)}

  @property
  def vocab_size(self) -> int:
    return len(self.SPECIALS) + len(self.alphabet)

  def encode(self, text: str, add_bos: bool = False) -> List[int]:
    """Ids of the characters of ``text`` (``unk_id`` outside the alphabet), after ``bos_id`` if asked."""
    ids = [self._ids.get(c, self.unk_id) for c in text]
    return [self.bos_id] + ids if add_bos else ids

  def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
    """Text of ``ids``; reserved ids shown as ``<pad>`` etc., or dropped with ``skip_special``."""
    out = []
    n = len(self.SPECIALS)
    for i in ids:
      i = int(i)
      if i >= n:
        if i >= self.vocab_size:
          raise ValueError(f'token id {i} is outside this CharTokenizer vocabulary of {self.vocab_size}.')
        out.append(self.alphabet[i - n])
      elif not skip_special:
        out.append(self.SPECIALS[i])
      elif i == self.unk_id:
        out.append('\ufffd')
    return ''.join(out)

  def to_json(self) -> str:
    return json.dumps({'type': 'char', 'alphabet': self.alphabet}, ensure_ascii=False)

  @classmethod
  def from_json(cls, text: str) -> 'CharTokenizer':
    data = json.loads(text)
    if data.get('type') != 'char' or 'alphabet' not in data:
      raise ValueError('not a CharTokenizer JSON (expected {"type": "char", "alphabet": ...}).')
    return cls(data['alphabet'])

  def save(self, path: str) -> None:
    with open(path, 'w', encoding='utf-8') as f:
      f.write(self.to_json())

  @classmethod
  def load(cls, path: str) -> 'CharTokenizer':
    with open(path, encoding='utf-8') as f:
      return cls.from_json(f.read())

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, CharTokenizer) and other.alphabet == self.alphabet

  def __hash__(self) -> int:
    return hash(('CharTokenizer', self.alphabet))

  def __repr__(self) -> str:
    return f'CharTokenizer(vocab_size={self.vocab_size})'


# ----------------------------------------------------------------------------
# Byte-level BPE: alphabet and pre-tokenizer
# ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def bytes_to_unicode() -> Dict[int, str]:
  """GPT-2's map of the 256 byte values to printable characters (the alphabet of BPE token strings).

  Printable Latin-1 bytes map to themselves; the others (control characters, space, ...) map to
  ``chr(256 + k)`` in byte order, e.g. space (32) -> 'Ġ' (U+0120), newline (10) -> 'Ċ' (U+010A).
  """
  keep = list(range(ord('!'), ord('~') + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
  table = {b: chr(b) for b in keep}
  extra = 0
  for b in range(256):
    if b not in table:
      table[b] = chr(256 + extra)
      extra += 1
  return table


# Unicode White_Space (what Oniguruma and HF tokenizers mean by \s); Python's \s adds U+001C..U+001F.
_WHITESPACE = '\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000'


def _ranges(codepoints: Sequence[int]) -> str:
  """A ``re`` character-class body (no brackets) matching exactly the sorted ``codepoints``."""
  parts = []
  start = prev = codepoints[0]
  for c in list(codepoints[1:]) + [-2]:
    if c != prev + 1:
      parts.append(
        re.escape(chr(start)) if start == prev else f'{re.escape(chr(start))}-{re.escape(chr(prev))}'
      )
      start = c
    prev = c
  return ''.join(parts)


@functools.lru_cache(maxsize=None)
def _unicode_classes() -> Tuple[str, str]:
  """Class bodies for ``\\p{L}`` (letters) and ``\\p{N}`` (numbers), from this Python's ``unicodedata``."""
  letters, numbers = [], []
  category = unicodedata.category
  for c in range(0x110000):
    major = category(chr(c))[0]
    if major == 'L':
      letters.append(c)
    elif major == 'N':
      numbers.append(c)
  return _ranges(letters), _ranges(numbers)


@functools.lru_cache(maxsize=None)
def _gpt2_regex() -> 're.Pattern[str]':
  """GPT-2's pre-tokenizer regex with ``\\p{L}``, ``\\p{N}`` and ``\\s`` spelled out for ``re``."""
  letter, number = _unicode_classes()
  ws = _WHITESPACE
  contractions = "'s|'t|'re|'ve|'m|'ll|'d"
  words = f' ?[{letter}]+| ?[{number}]+| ?[^{ws}{letter}{number}]+'
  spaces = f'[{ws}]+(?![^{ws}])|[{ws}]+'  # \s+(?!\S)|\s+
  return re.compile(f'{contractions}|{words}|{spaces}')


@functools.lru_cache(maxsize=None)
def _number_regex() -> 're.Pattern[str]':
  return re.compile(f'([{_unicode_classes()[1]}])')


# GGUF 'tokenizer.ggml.pre' names whose split is "each \p{N} alone, then GPT-2's regex" (llama.cpp groups
# them), and those that are GPT-2's regex alone. Others (llama-bpe, qwen2, deepseek ...) use other regexes.
_DIGITS_THEN_GPT2 = ('smollm', 'starcoder', 'refact', 'codeshell', 'command-r', 'exaone')
_GPT2_ONLY = ('gpt2', 'mpt', 'olmo', 'jais')
PRE_TOKENIZERS = _DIGITS_THEN_GPT2 + _GPT2_ONLY


def pre_tokenize(text: str, pre: str = 'smollm') -> List[str]:
  """Splits ``text`` (without special tokens) into the words that BPE merges within.

  ``pre`` is a GGUF ``tokenizer.ggml.pre`` name; see the module docstring. Concatenating the words gives
  back ``text``.
  """
  gpt2 = _gpt2_regex()
  if pre in _GPT2_ONLY:
    return gpt2.findall(text)
  if pre not in _DIGITS_THEN_GPT2:
    raise ValueError(f'unsupported pre-tokenizer {pre!r}; supported: {", ".join(PRE_TOKENIZERS)}.')
  words: List[str] = []
  # re.split with a capturing group alternates [text, number, text, number, ..., text].
  for k, piece in enumerate(_number_regex().split(text)):
    if k % 2:
      words.append(piece)
    elif piece:
      words.extend(gpt2.findall(piece))
  return words


# ----------------------------------------------------------------------------
# Byte-level BPE tokenizer
# ----------------------------------------------------------------------------


class BPETokenizer:
  """GPT-2 style byte-level BPE (see the module docstring), usually built by :meth:`from_gguf`.

  Args:
    tokens: Token strings by id, in the byte-to-unicode alphabet (``'Ġthe'``) or, for special tokens, as
      written in text (``'<|im_end|>'``).
    merges: Merge rules ``'a b'`` in rank order (rank 0 is applied first).
    token_types: GGUF token types by id (1 normal, 3 control, 4 user-defined, ...); control and
      user-defined tokens are *special*: matched as whole strings in the text before BPE and skipped by
      ``decode(..., skip_special=True)``. Default: all normal.
    bos_id, eos_id, pad_id, unk_id: Special ids (``None`` when the vocabulary has none).
    pre: Pre-tokenizer name (GGUF ``tokenizer.ggml.pre``), one of :data:`PRE_TOKENIZERS`.
    chat_template: The Jinja chat template (GGUF ``tokenizer.chat_template``) or ``None``.
    add_bos: Whether the model expects a leading bos (GGUF ``tokenizer.ggml.add_bos_token``); recorded
      for callers, ``encode`` adds one only when asked.
    cache_size: Words whose BPE result is memoised (the cache is emptied when full).
  """

  def __init__(
    self,
    tokens: Sequence[str],
    merges: Sequence[str],
    *,
    token_types: Optional[Sequence[int]] = None,
    bos_id: Optional[int] = None,
    eos_id: Optional[int] = None,
    pad_id: Optional[int] = None,
    unk_id: Optional[int] = None,
    pre: str = 'gpt2',
    chat_template: Optional[str] = None,
    add_bos: bool = False,
    cache_size: int = 200_000,
  ):
    if pre not in PRE_TOKENIZERS:
      raise ValueError(f'unsupported pre-tokenizer {pre!r}; supported: {", ".join(PRE_TOKENIZERS)}.')
    self.tokens = list(tokens)
    self.vocab = {t: i for i, t in enumerate(self.tokens)}
    self.token_types = list(token_types) if token_types is not None else [TOKEN_NORMAL] * len(self.tokens)
    if len(self.token_types) != len(self.tokens):
      raise ValueError(
        f'{len(self.token_types)} token types for {len(self.tokens)} tokens; give one per token.'
      )
    self.ranks: Dict[Tuple[str, str], int] = {}
    for rank, merge in enumerate(merges):
      left, sep, right = merge.partition(' ')
      if not sep or not left or not right:
        raise ValueError(f'merge rule {merge!r} (rank {rank}) is not two tokens separated by one space.')
      self.ranks.setdefault((left, right), rank)
    self.bos_id, self.eos_id, self.pad_id, self.unk_id = bos_id, eos_id, pad_id, unk_id
    self.pre = pre
    self.chat_template = chat_template
    self.add_bos = add_bos
    self.special_tokens = {
      t: i for i, t in enumerate(self.tokens) if self.token_types[i] in (TOKEN_CONTROL, TOKEN_USER_DEFINED)
    }
    self._special_ids = frozenset(self.special_tokens.values())
    # Longest first, so that a special token containing another one wins.
    ordered = sorted(self.special_tokens, key=len, reverse=True)
    self._special_re = re.compile('|'.join(re.escape(t) for t in ordered)) if ordered else None
    self._byte_encoder = bytes_to_unicode()
    self._byte_decoder = {c: b for b, c in self._byte_encoder.items()}
    missing = [c for c in self._byte_encoder.values() if c not in self.vocab]
    if missing and unk_id is None:
      raise ValueError(
        f'{len(missing)} of the 256 byte tokens are missing and there is no unk id: not byte-level BPE.'
      )
    self._cache: Dict[str, Tuple[int, ...]] = {}
    self._cache_size = cache_size

  # -- construction ---------------------------------------------------------------------------------------

  @classmethod
  def from_gguf(cls, source: Any) -> 'BPETokenizer':
    """The tokenizer stored in a GGUF file: ``source`` is a path or an open ``gguf.GGUFReader``."""
    import gguf  # Only needed for GGUF files.

    reader = source if isinstance(source, gguf.GGUFReader) else gguf.GGUFReader(source)
    fields = reader.fields

    def get(name: str, default: Any = None) -> Any:
      return gguf_field_value(fields[name]) if name in fields else default

    model = get('tokenizer.ggml.model')
    if model != 'gpt2':
      raise ValueError(f'GGUF tokenizer model is {model!r}; only byte-level BPE ("gpt2") is supported.')
    return cls(
      get('tokenizer.ggml.tokens'),
      get('tokenizer.ggml.merges'),
      token_types=get('tokenizer.ggml.token_type'),
      bos_id=get('tokenizer.ggml.bos_token_id'),
      eos_id=get('tokenizer.ggml.eos_token_id'),
      pad_id=get('tokenizer.ggml.padding_token_id'),
      unk_id=get('tokenizer.ggml.unknown_token_id'),
      pre=get('tokenizer.ggml.pre', 'gpt2'),  # Old files without the field: GPT-2's split.
      chat_template=get('tokenizer.chat_template'),
      add_bos=bool(get('tokenizer.ggml.add_bos_token', False)),
    )

  # -- encoding -------------------------------------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return len(self.tokens)

  def _bpe(self, word: str) -> Tuple[int, ...]:
    """Ids of one pre-tokenized word: its bytes in the GPT-2 alphabet, merged lowest rank first."""
    symbols = [self._byte_encoder[b] for b in word.encode('utf-8')]
    ranks = self.ranks
    while len(symbols) > 1:
      best, best_rank = None, None
      for pair in zip(symbols, symbols[1:]):
        rank = ranks.get(pair)
        if rank is not None and (best_rank is None or rank < best_rank):
          best, best_rank = pair, rank
      if best is None:
        break
      first, second = best
      merged = []
      i = 0
      while i < len(symbols):
        if i < len(symbols) - 1 and symbols[i] == first and symbols[i + 1] == second:
          merged.append(first + second)
          i += 2
        else:
          merged.append(symbols[i])
          i += 1
      symbols = merged
    vocab = self.vocab
    ids = []
    for symbol in symbols:
      i = vocab.get(symbol)
      if i is None:  # A merge whose result is not in the vocabulary: fall back to its bytes (or unk).
        ids.extend(vocab.get(c, self.unk_id) for c in symbol)
      else:
        ids.append(i)
    if None in ids:
      raise ValueError(f'cannot encode {word!r}: byte tokens are missing and there is no unk token.')
    return tuple(ids)

  def _encode_ordinary(self, text: str, out: List[int]) -> None:
    cache = self._cache
    for word in pre_tokenize(text, self.pre):
      ids = cache.get(word)
      if ids is None:
        ids = self._bpe(word)
        if len(cache) >= self._cache_size:
          cache.clear()
        cache[word] = ids
      out.extend(ids)

  def encode(self, text: str, add_bos: bool = False) -> List[int]:
    """Token ids of ``text``; special-token strings in it become their ids; ``add_bos`` prepends ``bos_id``
    (``self.add_bos`` records the GGUF ``add_bos_token`` flag: False for SmolLM2)."""
    out: List[int] = []
    if add_bos:
      if self.bos_id is None:
        raise ValueError('add_bos=True but this tokenizer has no bos token; pass add_bos=False.')
      out.append(self.bos_id)
    if self._special_re is None:
      self._encode_ordinary(text, out)
      return out
    pos = 0
    for match in self._special_re.finditer(text):
      if match.start() > pos:
        self._encode_ordinary(text[pos : match.start()], out)
      out.append(self.special_tokens[match.group()])
      pos = match.end()
    if pos < len(text):
      self._encode_ordinary(text[pos:], out)
    return out

  def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
    """Text of ``ids`` (invalid UTF-8 from a cut multi-byte character becomes U+FFFD); special tokens are
    written as their strings, or dropped with ``skip_special``."""
    buf = bytearray()
    decoder = self._byte_decoder
    for i in ids:
      i = int(i)
      if not 0 <= i < len(self.tokens):
        raise ValueError(f'token id {i} is outside the vocabulary of {len(self.tokens)} tokens.')
      token = self.tokens[i]
      if i in self._special_ids:
        if not skip_special:
          buf += token.encode('utf-8')
        continue
      for c in token:
        b = decoder.get(c)
        if b is None:  # Not in the byte alphabet (a non-byte-level added token): its own text.
          buf += c.encode('utf-8')
        else:
          buf.append(b)
    return buf.decode('utf-8', errors='replace')

  def token_to_id(self, token: str) -> int:
    if token not in self.vocab:
      raise KeyError(f'token {token!r} is not in the vocabulary.')
    return self.vocab[token]

  def id_to_token(self, i: int) -> str:
    return self.tokens[int(i)]

  # -- chat -----------------------------------------------------------------------------------------------

  def default_system_message(self) -> Optional[str]:
    """The system message a ChatML template inserts when the conversation has none (``None``: none)."""
    template = self.chat_template or ''
    match = re.search(r'<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>', template, re.S)
    if match is None or "!= 'system'" not in template:
      return None
    return match.group(1).replace('\\n', '\n')

  def _is_chatml(self) -> bool:
    template = self.chat_template or ''
    body = "'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    return body in template or body.replace('\n', '\\n') in template

  def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
    """Renders ``messages`` (dicts with 'role' and 'content') as the model's chat text.

    ChatML templates (SmolLM2) are implemented here: an optional default system message first (only when
    the first message is not a system message), then ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per
    message, then ``<|im_start|>assistant\\n`` if ``add_generation_prompt``. Other templates need ``jinja2``.
    """
    if not self.chat_template:
      raise ValueError('this tokenizer has no chat template; pass plain-text prompts instead of messages.')
    for m in messages:
      if (
        not isinstance(m, Mapping)
        or not isinstance(m.get('role'), str)
        or not isinstance(m.get('content'), str)
      ):
        raise ValueError(f'chat message {m!r} needs string "role" and "content" keys.')
    if self._is_chatml():
      parts = []
      system = self.default_system_message()
      if system is not None and messages and messages[0]['role'] != 'system':
        parts.append(f'<|im_start|>system\n{system}<|im_end|>\n')
      parts.extend(f'<|im_start|>{m["role"]}\n{m["content"]}<|im_end|>\n' for m in messages)
      if add_generation_prompt:
        parts.append('<|im_start|>assistant\n')
      return ''.join(parts)
    return render_jinja_chat_template(
      self.chat_template, messages, add_generation_prompt, self._special_strings()
    )

  def _special_strings(self) -> Dict[str, str]:
    def text(i: Optional[int]) -> str:
      return self.tokens[i] if i is not None else ''

    return {'bos_token': text(self.bos_id), 'eos_token': text(self.eos_id)}

  def __repr__(self) -> str:
    return f'BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.ranks)}, pre={self.pre!r})'


def render_jinja_chat_template(
  template: str,
  messages: Sequence[Message],
  add_generation_prompt: bool,
  extra: Optional[Dict[str, str]] = None,
) -> str:
  """Renders a HF-style Jinja chat template with ``jinja2`` (sandboxed, ``trim_blocks``/``lstrip_blocks``)."""
  try:
    from jinja2.sandbox import ImmutableSandboxedEnvironment
  except ImportError:
    raise ValueError(
      'this chat template is not ChatML and needs jinja2 to render; pip install jinja2.'
    ) from None
  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
  return env.from_string(template).render(
    messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt, **(extra or {})
  )


def gguf_field_value(field: Any) -> Any:
  """The Python value of a ``gguf.ReaderField``: str, int/float/bool, or a list of them for arrays."""
  import gguf

  kind = field.types[0]

  def scalar(part: Any, typ: Any) -> Any:
    if typ == gguf.GGUFValueType.STRING:
      return bytes(part).decode('utf-8')
    value = part[0].item()
    return bool(value) if typ == gguf.GGUFValueType.BOOL else value

  if kind == gguf.GGUFValueType.ARRAY:
    sub = field.types[1] if len(field.types) > 1 else None
    if sub == gguf.GGUFValueType.STRING:
      return [bytes(field.parts[i]).decode('utf-8') for i in field.data]
    if sub == gguf.GGUFValueType.ARRAY:
      raise ValueError('nested GGUF arrays are not supported.')
    return [scalar(field.parts[i], sub) for i in field.data]
  return scalar(field.parts[field.data[0]], kind)
