"""Tests for eval_gsm.backends.scripted."""

import pytest

from eval_gsm.backends import scripted
from eval_gsm.core import BackendError


def test_apply_stop_cuts_before_earliest_stop():
  text = 'The answer is 5.\n\nQ: next question\n\n\nmore'
  assert scripted.apply_stop(text, ['\n\n\n', '\n\nQ:']) == 'The answer is 5.'
  assert scripted.apply_stop(text, ()) == text
  assert scripted.apply_stop(text, None) == text
  assert scripted.apply_stop(text, ['zzz']) == text
  assert scripted.apply_stop(text, ['']) == text  # An empty stop string would otherwise cut everything.
  assert scripted.apply_stop(text, 'Q:') == 'The answer is 5.\n\n'  # A bare str is one stop string.
  assert scripted.apply_stop('abc', ['a']) == ''


def test_cap_words_keeps_spacing():
  assert scripted.cap_words('a  b\nc d', 3) == 'a  b\nc'
  assert scripted.cap_words('a b ', 2) == 'a b '  # Not cut: unchanged, trailing space included.
  assert scripted.cap_words('  a b c', 1) == '  a'
  assert scripted.cap_words('a b', 0) == ''
  assert scripted.cap_words('', 5) == ''
  with pytest.raises(ValueError, match='max_tokens'):
    scripted.cap_words('a', -1)


def test_prompt_key_is_canonical():
  assert scripted.prompt_key('hello') == 'hello'
  a = [{'role': 'user', 'content': 'hi'}]
  b = [{'content': 'hi', 'role': 'user'}]
  assert scripted.prompt_key(a) == scripted.prompt_key(b) == '[{"content":"hi","role":"user"}]'
  with pytest.raises(TypeError, match='a prompt is a str'):
    scripted.prompt_key(3)


def test_function_backend_applies_stop_then_word_cap_and_counts():
  backend = scripted.FunctionBackend(lambda p: f'{p} one two three\n\nQ: junk', name='echo')
  out = backend.generate(['x', 'y'], max_tokens=3, stop=['\n\nQ:'])
  assert out == ['x one two', 'y one two']
  assert backend.generate(['z'], max_tokens=100, stop=['\n\nQ:']) == ['z one two three']
  assert (backend.calls, backend.prompts_seen) == (2, 3)
  assert backend.name == 'echo' and 'echo' in repr(backend)


def test_function_backend_gets_chat_prompts_and_validates():
  chat = [{'role': 'system', 'content': 's'}, {'role': 'user', 'content': 'u'}]
  backend = scripted.FunctionBackend(lambda p: p[-1]['content'] if isinstance(p, list) else p)
  assert backend.generate([chat, 'plain'], max_tokens=5) == ['u', 'plain']
  assert backend.generate([], max_tokens=5) == []
  with pytest.raises(ValueError, match='max_tokens'):
    backend.generate(['a'], max_tokens=-1)
  with pytest.raises(TypeError, match='must be a str'):
    scripted.FunctionBackend(lambda p: 3).generate(['a'], max_tokens=5)


def test_table_backend_lookup_and_missing():
  chat = [{'role': 'user', 'content': 'q2'}]
  table = {'q1': 'A1 #### 4\n\nQ: x', scripted.prompt_key(chat): 'A2'}
  backend = scripted.TableBackend(table, name='t')
  assert backend.generate(['q1', chat], max_tokens=10, stop=['\n\nQ:']) == ['A1 #### 4', 'A2']
  with pytest.raises(BackendError, match="prompt 'nope' is not in the table; add it") as err:
    backend.generate(['nope'], max_tokens=10)
  assert '\n' not in str(err.value)
  assert backend.misses == 1 and backend.calls == 2 and backend.prompts_seen == 3

  lenient = scripted.TableBackend(table, missing='empty')
  assert lenient.generate(['nope', 'q1'], max_tokens=1) == ['', 'A1']
  assert lenient.misses == 1
  with pytest.raises(ValueError, match='missing must be'):
    scripted.TableBackend(table, missing='skip')


def test_long_missing_prompt_message_is_one_line_and_short():
  backend = scripted.TableBackend({})
  with pytest.raises(BackendError) as err:
    backend.generate(['line\n' * 100], max_tokens=1)
  assert '\n' not in str(err.value) and len(str(err.value)) < 200
