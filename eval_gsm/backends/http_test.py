"""Tests for eval_gsm.backends.http against a loopback mock OpenAI-compatible server."""

import http.server
import json
import random
import socket
import threading
from typing import Any, Callable, Dict, List, Tuple

import pytest

from eval_gsm.backends import http as http_backend
from eval_gsm.core import BackendError

SECRET = 'sk-test-SECRET-0123456789'

# A responder maps (path, body, request number) to (status, payload, delay_s); payload is a dict (sent as
# JSON) or a str (sent as is).
Responder = Callable[[str, Dict[str, Any], int], Tuple[int, Any, float]]


def echo_responder(path: str, body: Dict[str, Any], n: int) -> Tuple[int, Any, float]:
  """Answers 'out:<prompt>' (completions, list prompts included) or 'chat:<last message>' (chat)."""
  del n
  if path.endswith('/chat/completions'):
    content = 'chat:' + body['messages'][-1]['content']
    return 200, {'choices': [{'index': 0, 'message': {'role': 'assistant', 'content': content}}]}, 0.0
  prompts = body['prompt'] if isinstance(body['prompt'], list) else [body['prompt']]
  return 200, {'choices': [{'index': i, 'text': f'out:{p}'} for i, p in enumerate(prompts)]}, 0.0


class MockServer:
  """A ThreadingHTTPServer on 127.0.0.1 that records requests and answers with ``self.responder``."""

  def __init__(self):
    self.requests: List[Dict[str, Any]] = []  # {'path', 'headers', 'body'}
    self.responder: Responder = echo_responder
    self.release = threading.Event()  # Set at teardown so that slow handlers stop waiting.
    self._lock = threading.Lock()
    mock = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def log_message(self, *args):
        pass

      def do_POST(self):
        raw = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        body = json.loads(raw)
        with mock._lock:
          mock.requests.append({'path': self.path, 'headers': dict(self.headers), 'body': body})
          n = len(mock.requests) - 1
        status, payload, delay = mock.responder(self.path, body, n)
        if delay:
          mock.release.wait(delay)
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        try:
          self.send_response(status)
          self.send_header('Content-Type', 'application/json')
          self.send_header('Content-Length', str(len(data)))
          self.end_headers()
          self.wfile.write(data)
        except OSError:  # The client gave up (timeout test).
          pass

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler, bind_and_activate=False)
    self.httpd.daemon_threads = True
    self.httpd.request_queue_size = 128  # A burst of concurrent connects must not overflow the backlog.
    self.httpd.server_bind()
    self.httpd.server_activate()
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/v1'
    self._thread = threading.Thread(
      target=self.httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True
    )
    self._thread.start()

  def bodies(self) -> List[Dict[str, Any]]:
    with self._lock:
      return [r['body'] for r in self.requests]

  def close(self):
    self.release.set()
    self.httpd.shutdown()
    self.httpd.server_close()
    self._thread.join(timeout=5)


@pytest.fixture
def server():
  mock = MockServer()
  yield mock
  mock.close()


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
  monkeypatch.delenv('OPENAI_API_KEY', raising=False)


def make(server: MockServer, **kwargs) -> http_backend.OpenAIBackend:
  kwargs.setdefault('backoff_s', 0.001)
  kwargs.setdefault('timeout_s', 10)
  return http_backend.OpenAIBackend(server.url, 'tiny', **kwargs)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_completions_request_body_and_results(server):
  backend = make(server)
  out = backend.generate(['Q: 1+1?', 'Q: 2+2?'], max_tokens=64, stop=['\n\nQ:', '\n\n\n'])
  assert out == ['out:Q: 1+1?', 'out:Q: 2+2?']
  bodies = sorted(server.bodies(), key=lambda b: b['prompt'])
  assert bodies[0] == {
    'model': 'tiny',
    'prompt': 'Q: 1+1?',
    'max_tokens': 64,
    'temperature': 0.0,
    'stop': ['\n\nQ:', '\n\n\n'],
    'seed': 0,
  }
  assert {r['path'] for r in server.requests} == {'/v1/completions'}
  assert all('Authorization' not in r['headers'] for r in server.requests)
  assert all(r['headers']['Content-Type'] == 'application/json' for r in server.requests)
  assert (backend.requests_sent, backend.retries, backend.cache_hits) == (2, 0, 0)


def test_empty_stop_is_omitted_and_extra_body_is_sent(server):
  backend = make(server, extra_body={'top_p': 0.5})
  backend.generate(['p'], max_tokens=3, temperature=0.7, seed=11)
  (body,) = server.bodies()
  assert 'stop' not in body and body['top_p'] == 0.5 and body['temperature'] == 0.7 and body['seed'] == 11
  with pytest.raises(ValueError, match='extra_body may not set'):
    make(server, extra_body={'max_tokens': 5})


def test_chat_request_body(server):
  backend = make(server, chat=True)
  chat = [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'hi'}]
  assert backend.generate(['plain', chat], max_tokens=8, stop=['\n']) == ['chat:plain', 'chat:hi']
  bodies = {json.dumps(b['messages']): b for b in server.bodies()}
  plain = bodies[json.dumps([{'role': 'user', 'content': 'plain'}])]
  assert plain['model'] == 'tiny' and plain['max_tokens'] == 8 and plain['temperature'] == 0
  assert plain['stop'] == ['\n'] and 'prompt' not in plain
  assert bodies[json.dumps(chat)]['messages'] == chat
  assert {r['path'] for r in server.requests} == {'/v1/chat/completions'}


def test_chat_prompt_on_completions_api_is_an_error(server):
  with pytest.raises(BackendError, match='pass chat=True'):
    make(server).generate([[{'role': 'user', 'content': 'x'}]], max_tokens=4)
  assert not server.requests


@pytest.mark.parametrize('value,sent', [(SECRET, True), ('EMPTY', False), ('', False), (None, False)])
def test_authorization_header_iff_key_set(server, monkeypatch, value, sent):
  if value is not None:
    monkeypatch.setenv('OPENAI_API_KEY', value)
  make(server).generate(['p'], max_tokens=4)
  headers = server.requests[0]['headers']
  assert ('Authorization' in headers) == sent
  if sent:
    assert headers['Authorization'] == f'Bearer {SECRET}'


def test_key_env_is_read_at_call_time(server, monkeypatch):
  backend = make(server, api_key_env='MY_SERVER_KEY')
  monkeypatch.setenv('MY_SERVER_KEY', SECRET)
  backend.generate(['p'], max_tokens=4)
  assert server.requests[0]['headers']['Authorization'] == f'Bearer {SECRET}'
  assert SECRET not in repr(backend) and SECRET not in str(vars(backend))


def test_retries_on_429_and_500_then_succeeds(server):
  def flaky(path, body, n):
    if n == 0:
      return 429, {'error': {'message': 'slow down'}}, 0.0
    if n == 1:
      return 500, 'internal oops', 0.0
    return echo_responder(path, body, n)

  server.responder = flaky
  backend = make(server)
  assert backend.generate(['p'], max_tokens=4) == ['out:p']
  assert (backend.requests_sent, backend.retries) == (3, 2)


def test_gives_up_after_max_retries_on_503(server):
  server.responder = lambda path, body, n: (503, {'error': {'message': 'model loading'}}, 0.0)
  backend = make(server, max_retries=2)
  with pytest.raises(BackendError, match=r'HTTP 503 .* after 3 attempts: model loading') as err:
    backend.generate(['p'], max_tokens=4)
  assert '\n' not in str(err.value)
  assert (backend.requests_sent, backend.retries) == (3, 2)


def test_no_retry_on_400_and_message_has_status_and_server_message(server):
  long_message = 'max_tokens is too large: ' + 'x' * 2000
  server.responder = lambda path, body, n: (400, {'error': {'message': long_message, 'type': 'bad'}}, 0.0)
  backend = make(server)
  with pytest.raises(BackendError) as err:
    backend.generate(['p'], max_tokens=4)
  message = str(err.value)
  assert 'HTTP 400' in message and 'max_tokens is too large' in message and server.url in message
  assert '\n' not in message and len(message) < 600  # Truncated.
  assert backend.requests_sent == 1 and backend.retries == 0


def test_404_hints_at_base_url(server):
  server.responder = lambda path, body, n: (404, {'detail': 'Not Found'}, 0.0)
  with pytest.raises(BackendError, match=r'HTTP 404 .*Not Found; check base_url \(it usually ends in /v1\)'):
    make(server).generate(['p'], max_tokens=4)


def test_timeout_then_backend_error(server):
  server.responder = lambda path, body, n: (200, {'choices': [{'index': 0, 'text': 'late'}]}, 5.0)
  backend = make(server, timeout_s=0.2, max_retries=1)
  with pytest.raises(
    BackendError, match=r'no answer from http://127\.0\.0\.1:\d+/v1/completions within timeout_s=0\.2'
  ):
    backend.generate(['p'], max_tokens=4)
  # The server would answer after 5 s; the error (not 'late') shows both attempts gave up at 0.2 s.
  assert backend.requests_sent == 2 and backend.retries == 1


def test_unreachable_endpoint():
  port = free_port()
  backend = http_backend.OpenAIBackend(f'http://127.0.0.1:{port}/v1', 'tiny', max_retries=2, backoff_s=0.001)
  with pytest.raises(BackendError) as err:
    backend.generate(['p'], max_tokens=4)
  message = str(err.value)
  assert message.startswith(f'cannot reach http://127.0.0.1:{port}/v1/completions: ')
  assert message.endswith('; is the server running?') and '\n' not in message
  assert backend.requests_sent == 3 and backend.retries == 2


def test_order_under_concurrency_with_random_delays(server):
  rng = random.Random(0)
  delays = [rng.uniform(0, 0.05) for _ in range(64)]

  def slow_echo(path, body, n):
    status, payload, _ = echo_responder(path, body, n)
    return status, payload, delays[n % len(delays)]

  server.responder = slow_echo
  backend = make(server, concurrency=8)
  prompts = [f'p{i}' for i in range(24)]
  assert backend.generate(prompts, max_tokens=4) == [f'out:{p}' for p in prompts]
  assert backend.requests_sent == 24


def test_duplicate_prompts_are_sent_once(server):
  backend = make(server)
  assert backend.generate(['a', 'b', 'a'], max_tokens=4) == ['out:a', 'out:b', 'out:a']
  assert backend.requests_sent == 2


def test_prompts_per_request_batches_and_matches_by_index(server):
  def reversed_echo(path, body, n):
    status, payload, delay = echo_responder(path, body, n)
    payload['choices'].reverse()  # Index, not position, says which prompt a choice answers.
    return status, payload, delay

  server.responder = reversed_echo
  backend = make(server, prompts_per_request=2)
  prompts = ['a', 'b', 'c', 'd', 'e']
  assert backend.generate(prompts, max_tokens=4) == [f'out:{p}' for p in prompts]
  assert sorted(b['prompt'] for b in server.bodies()) == [['a', 'b'], ['c', 'd'], ['e']]
  assert backend.requests_sent == 3


def test_missing_choice_index_is_an_error(server):
  server.responder = lambda path, body, n: (200, {'choices': [{'index': 0, 'text': 'only one'}]}, 0.0)
  with pytest.raises(BackendError, match='set prompts_per_request=1'):
    make(server, prompts_per_request=2).generate(['a', 'b'], max_tokens=4)


def test_invalid_json_response_is_an_error(server):
  server.responder = lambda path, body, n: (200, '<html>hello</html>', 0.0)
  with pytest.raises(BackendError, match='invalid JSON'):
    make(server).generate(['a'], max_tokens=4)


def test_empty_completions_are_counted_not_errors(server):
  def sometimes_empty(path, body, n):
    text = '' if body['prompt'] == 'e' else None if body['prompt'] == 'n' else 'x'
    return 200, {'choices': [{'index': 0, 'text': text}]}, 0.0

  server.responder = sometimes_empty
  backend = make(server)
  assert backend.generate(['e', 'x', 'n'], max_tokens=4) == ['', 'x', '']
  assert backend.empty_count == 2


def read_lines(path: str) -> List[str]:
  with open(path, encoding='utf-8') as f:
    return f.read().splitlines()


def test_cache_is_reused_by_a_second_instance(server, tmp_path):
  cache = str(tmp_path / 'sub' / 'cache.jsonl')
  first = make(server, cache_path=cache)
  prompts = ['a', 'b', 'c']
  expected = [f'out:{p}' for p in prompts]
  assert first.generate(prompts, max_tokens=4, temperature=0.8, seed=3) == expected
  assert len(read_lines(cache)) == 3 and first.requests_sent == 3

  second = make(server, cache_path=cache)
  assert second.generate(prompts, max_tokens=4, temperature=0.8, seed=3) == expected
  assert second.requests_sent == 0 and second.cache_hits == 3
  # A different seed, max_tokens, stop or chat mode is a different request.
  second.generate(['a'], max_tokens=4, temperature=0.8, seed=4)
  second.generate(['a'], max_tokens=5, temperature=0.8, seed=3)
  second.generate(['a'], max_tokens=4, temperature=0.8, seed=3, stop=['\n'])
  assert second.requests_sent == 3 and len(server.requests) == 6
  # The same request through another host reaching the same model still hits (the key has the path only).
  third = http_backend.OpenAIBackend(server.url.replace('127.0.0.1', 'localhost'), 'tiny', cache_path=cache)
  assert third.generate(['c', 'b'], max_tokens=4, temperature=0.8, seed=3) == ['out:c', 'out:b']
  assert third.requests_sent == 0


def test_corrupt_last_cache_line_is_skipped_and_resumed(server, tmp_path, caplog):
  cache = str(tmp_path / 'cache.jsonl')
  make(server, cache_path=cache).generate(['a', 'b'], max_tokens=4)
  with open(cache, 'a', encoding='utf-8') as f:
    f.write('{"key": "0123abc", "te')  # An interrupted write: no newline, no closing brace.

  resumed = make(server, cache_path=cache)
  assert 'skipped 1 unreadable line(s)' in caplog.text
  assert resumed.generate(['a', 'b', 'c'], max_tokens=4) == ['out:a', 'out:b', 'out:c']
  assert resumed.requests_sent == 1 and resumed.cache_hits == 2
  lines = read_lines(cache)
  assert lines[2].startswith('{"key": "0123abc"') and json.loads(lines[3])['text'] == 'out:c'

  again = make(server, cache_path=cache)
  assert again.generate(['a', 'b', 'c'], max_tokens=4) == ['out:a', 'out:b', 'out:c']
  assert again.requests_sent == 0


def test_partial_failure_keeps_finished_results_in_the_cache(server, tmp_path):
  cache = str(tmp_path / 'cache.jsonl')

  def fail_on_bad(path, body, n):
    if body['prompt'] == 'bad':
      return 400, {'error': {'message': 'bad prompt'}}, 0.0
    return echo_responder(path, body, n)

  server.responder = fail_on_bad
  backend = make(server, cache_path=cache, concurrency=1)
  with pytest.raises(BackendError, match='bad prompt'):
    backend.generate(['a', 'bad', 'c'], max_tokens=4)
  server.responder = echo_responder
  resumed = make(server, cache_path=cache)
  assert resumed.generate(['a', 'bad'], max_tokens=4) == ['out:a', 'out:bad']
  assert resumed.cache_hits == 1 and resumed.requests_sent == 1


def test_key_never_in_cache_exceptions_or_logs(server, tmp_path, monkeypatch, caplog):
  monkeypatch.setenv('OPENAI_API_KEY', SECRET)
  cache = str(tmp_path / 'cache.jsonl')
  backend = make(server, cache_path=cache, max_retries=1)
  backend.generate(['a'], max_tokens=4)

  def echo_key(path, body, n):
    return (429 if n == 1 else 401), {'error': {'message': f'Incorrect API key provided: {SECRET}.'}}, 0.0

  server.responder = echo_key
  with pytest.raises(BackendError) as err:
    backend.generate(['b'], max_tokens=4)
  message = str(err.value)
  assert 'HTTP 401' in message and 'OPENAI_API_KEY' in message and 'Incorrect API key' in message
  assert SECRET not in message and SECRET not in repr(err.value)
  with open(cache, encoding='utf-8') as f:
    assert SECRET not in f.read()
  assert 'retry 1/1' in caplog.text  # The 429 was logged, with the echoed key redacted.
  assert SECRET not in caplog.text and SECRET not in repr(backend)


def test_constructor_validation():
  with pytest.raises(ValueError, match='base_url must look like'):
    http_backend.OpenAIBackend('localhost:8000', 'm')
  with pytest.raises(ValueError, match='prompts_per_request > 1 needs the completions API'):
    http_backend.OpenAIBackend('http://127.0.0.1:1/v1', 'm', chat=True, prompts_per_request=4)
  with pytest.raises(ValueError, match='concurrency'):
    http_backend.OpenAIBackend('http://127.0.0.1:1/v1', 'm', concurrency=0)


def test_credentials_in_base_url_are_refused_without_echoing_them():
  with pytest.raises(ValueError, match='must not contain user:password@') as err:
    http_backend.OpenAIBackend(f'http://user:{SECRET}@127.0.0.1:1/v1', 'm')
  assert SECRET not in str(err.value)
