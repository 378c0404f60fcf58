"""Tests for eval_gsm.serve: the OpenAI-compatible server, exercised through the HTTP client backend."""

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Optional, Tuple

import pytest

from eval_gsm import serve
from eval_gsm.backends.http import OpenAIBackend
from eval_gsm.backends.scripted import FunctionBackend
from eval_gsm.core import BackendError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def answer(prompt) -> str:
  """'A:<prompt>' for text, 'C:<role>=<content>|...' for chat; then run-on text that stop strings cut."""
  if isinstance(prompt, str):
    return f'A:{prompt} #### 4\n\nQ: run-on'
  return 'C:' + '|'.join(f'{m["role"]}={m["content"]}' for m in prompt) + '\n\nQ: run-on'


def request(url: str, body: Optional[Any] = None, raw: Optional[bytes] = None) -> Tuple[int, Dict[str, Any]]:
  """(status, JSON) of a GET (no body) or POST to ``url``."""
  data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
  req = urllib.request.Request(url, data=data, headers={'Content-Type': 'application/json'})
  try:
    with _OPENER.open(req, timeout=10) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as err:
    with err:
      return err.code, json.loads(err.read())


@pytest.fixture
def backend():
  return FunctionBackend(answer, name='fn')


@pytest.fixture
def server(backend):
  with serve.make_server(backend, model_name='tiny') as s:
    yield s


def test_binds_loopback_by_default(server):
  assert server.httpd.server_address[0] == '127.0.0.1'
  assert server.url == f'http://127.0.0.1:{server.port}/v1' and server.port > 0
  assert 'tiny' in repr(server)


def test_models_and_health(server):
  status, body = request(server.url + '/models')
  assert status == 200 and body['object'] == 'list' and [m['id'] for m in body['data']] == ['tiny']
  assert request(server.url.replace('/v1', '/health')) == (200, {'status': 'ok'})


def test_completions_round_trip_through_http_backend(server, backend):
  client = OpenAIBackend(server.url, 'tiny', backoff_s=0.001, timeout_s=30)
  out = client.generate(['x', 'y y'], max_tokens=10, stop=['\n\nQ:'])
  assert out == ['A:x #### 4', 'A:y y #### 4']
  assert client.generate(['x'], max_tokens=2) == ['A:x ####']  # Capped at 2 words by the scripted backend.
  batched = OpenAIBackend(server.url, 'tiny', prompts_per_request=3, backoff_s=0.001)
  assert batched.generate(['a', 'b', 'c', 'd'], max_tokens=10, stop=['\n\n']) == [
    'A:a #### 4',
    'A:b #### 4',
    'A:c #### 4',
    'A:d #### 4',
  ]
  assert batched.requests_sent == 2


def test_chat_round_trip_through_http_backend(server):
  client = OpenAIBackend(server.url, 'tiny', chat=True, backoff_s=0.001)
  chat = [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'hi'}]
  out = client.generate(['plain', chat], max_tokens=10, stop=['\n\nQ:'])
  assert out == ['C:user=plain', 'C:system=Be brief.|user=hi']


def test_completion_response_shape_and_usage(server):
  status, body = request(
    server.url + '/completions', {'model': 'whatever', 'prompt': 'one two', 'max_tokens': 3}
  )
  assert status == 200
  assert body['object'] == 'text_completion' and body['model'] == 'tiny' and body['id'].startswith('cmpl-')
  assert isinstance(body['created'], int)
  (choice,) = body['choices']
  assert choice['index'] == 0 and choice['text'] == 'A:one two ####' and choice['finish_reason'] == 'length'
  assert body['usage'] == {'prompt_tokens': 2, 'completion_tokens': 3, 'total_tokens': 5}

  status, body = request(server.url + '/completions', {'prompt': ['p', 'q'], 'stop': '\n\nQ:'})
  assert [c['text'] for c in body['choices']] == ['A:p #### 4', 'A:q #### 4']
  assert [c['index'] for c in body['choices']] == [0, 1] and body['choices'][0]['finish_reason'] == 'stop'


def test_chat_response_shape_and_template(backend):
  template = lambda messages: ' / '.join(m['content'] for m in messages)  # noqa: E731
  with serve.make_server(backend, chat_template=template) as server:
    status, body = request(
      server.url + '/chat/completions',
      {'messages': [{'role': 'user', 'content': [{'type': 'text', 'text': 'hi'}]}], 'stop': ['\n\nQ:']},
    )
  assert status == 200 and body['object'] == 'chat.completion' and body['model'] == 'fn'
  (choice,) = body['choices']
  assert choice['message'] == {'role': 'assistant', 'content': 'A:hi #### 4'}  # Rendered to text.
  assert body['id'].startswith('chatcmpl-') and body['usage']['prompt_tokens'] == 1


def test_stop_is_applied_even_if_the_backend_ignores_it():
  class Overrun:
    name = 'overrun'

    def generate(self, prompts, *, max_tokens, temperature=0.0, stop=(), seed=0):
      return ['left STOP right' for _ in prompts]

    def count_tokens(self, text):
      return len(text)  # Characters: shows that usage uses the backend's own counter.

  with serve.make_server(Overrun()) as server:
    status, body = request(server.url + '/completions', {'prompt': 'abc', 'stop': ['STOP'], 'max_tokens': 50})
  assert body['choices'][0]['text'] == 'left '
  assert body['usage'] == {'prompt_tokens': 3, 'completion_tokens': 5, 'total_tokens': 8}


def test_micro_batching_groups_concurrent_requests(backend):
  n = 16
  active, max_active = [0], [0]
  lock = threading.Lock()
  holder = {}

  def gated(prompt):
    with lock:
      active[0] += 1
      max_active[0] = max(max_active[0], active[0])
    try:
      if backend.calls == 1:  # Hold the first batch until every request is queued behind it.
        deadline = time.monotonic() + 20
        while holder['server'].stats['requests'] < n and time.monotonic() < deadline:
          time.sleep(0.002)
      return answer(prompt)
    finally:
      with lock:
        active[0] -= 1

  backend.fn = gated
  with serve.make_server(backend, max_batch=64, batch_wait_ms=5) as server:
    holder['server'] = server
    client = OpenAIBackend(server.url, 'tiny', concurrency=n, backoff_s=0.001, timeout_s=30)
    prompts = [f'q{i}' for i in range(n)]
    out = client.generate(prompts, max_tokens=10, stop=['\n\n'])
    stats = server.stats
  assert out == [f'A:q{i} #### 4' for i in range(n)]
  assert backend.calls <= 2 < n and stats['generate_calls'] == backend.calls
  assert stats['requests'] == n and backend.prompts_seen == n
  assert max_active[0] == 1  # The backend is never called concurrently.


def test_different_params_are_not_mixed(backend):
  with serve.make_server(backend, batch_wait_ms=50) as server:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
      futures = [
        pool.submit(request, server.url + '/completions', {'prompt': f'p{i}', 'max_tokens': 1 + i % 2})
        for i in range(4)
      ]
      results = [f.result() for f in futures]
  assert [body['choices'][0]['text'] for _, body in results] == ['A:p0', 'A:p1 ####', 'A:p2', 'A:p3 ####']


def test_oversized_request_is_split_into_max_batch_calls(backend):
  with serve.make_server(backend, max_batch=2) as server:
    status, body = request(
      server.url + '/completions', {'prompt': ['a', 'b', 'c', 'd', 'e'], 'max_tokens': 1}
    )
  assert status == 200 and [c['text'] for c in body['choices']] == ['A:a', 'A:b', 'A:c', 'A:d', 'A:e']
  assert backend.calls == 3


@pytest.mark.parametrize(
  'path,body,message',
  [
    ('/completions', {'max_tokens': 4}, 'missing field "prompt"'),
    ('/completions', {'prompt': [1, 2, 3]}, 'token-id prompts are not supported'),
    ('/completions', {'prompt': 'x', 'max_tokens': 'ten'}, 'max_tokens must be an integer'),
    ('/completions', {'prompt': 'x', 'max_tokens': -1}, 'max_tokens must be >= 0'),
    ('/completions', {'prompt': 'x', 'temperature': -1}, 'temperature must be a number >= 0'),
    ('/completions', {'prompt': 'x', 'stop': [1]}, 'stop must be a string or a list of strings'),
    ('/completions', {'prompt': 'x', 'n': 2}, 'only n=1 is supported'),
    ('/completions', {'prompt': 'x', 'stream': True}, 'streaming is not supported'),
    ('/completions', {'prompt': 'x', 'logprobs': 5}, 'logprobs are not supported'),
    ('/chat/completions', {'prompt': 'x'}, 'missing field "messages"'),
    ('/chat/completions', {'messages': [{'content': 'x'}]}, 'messages[0] must be an object'),
    ('/completions', [1, 2], 'the request body must be a JSON object'),
  ],
)
def test_bad_requests_are_400(server, backend, path, body, message):
  status, reply = request(server.url + path, body)
  assert status == 400 and message in reply['error']['message']
  assert reply['error']['type'] == 'invalid_request_error'
  assert backend.calls == 0


def test_invalid_json_is_400_and_unknown_paths_are_404(server):
  status, reply = request(server.url + '/completions', raw=b'{"prompt": ')
  assert status == 400 and reply['error']['message'].startswith('invalid JSON body')
  for url, body in [(server.url + '/nope', None), (server.url + '/embeddings', {'input': 'x'})]:
    status, reply = request(url, body)
    assert (
      status == 404
      and reply['error']['type'] == 'not_found_error'
      and 'unknown path' in reply['error']['message']
    )
  status, reply = request(server.url + '/completions')  # GET on a POST endpoint.
  assert status == 405
  # The server still answers normally afterwards.
  assert request(server.url + '/completions', {'prompt': 'x', 'max_tokens': 1})[0] == 200


def test_backend_exception_is_500_with_one_line_message():
  def broken(prompt):
    if prompt == 'boom':
      raise BackendError('model exploded; restart it')
    return 'fine'

  with serve.make_server(FunctionBackend(broken, name='broken')) as server:
    status, reply = request(server.url + '/completions', {'prompt': 'boom'})
    assert status == 500 and reply['error']['type'] == 'server_error'
    assert reply['error']['message'] == 'broken failed: BackendError: model exploded; restart it'
    client = OpenAIBackend(server.url, 'm', max_retries=1, backoff_s=0.001)
    with pytest.raises(BackendError, match=r'HTTP 500 .* after 2 attempts: broken failed: .*model exploded'):
      client.generate(['boom'], max_tokens=4)
    assert client.generate(['ok'], max_tokens=4) == ['fine']  # The worker survived.
    assert server.stats['errors'] == 3  # One direct request, two attempts.


def test_close_is_idempotent_and_refuses_restart(backend):
  server = serve.make_server(backend).start()
  url = server.url
  server.close()
  server.close()
  with pytest.raises(BackendError, match='cannot reach'):
    OpenAIBackend(url, 'm', max_retries=0).generate(['x'], max_tokens=1)
  with pytest.raises(RuntimeError, match='closed'):
    server.start()
  serve.make_server(backend).close()  # Never started: close does not hang.


def test_argument_validation(backend):
  with pytest.raises(ValueError, match='max_batch'):
    serve.make_server(backend, max_batch=0)
  with serve.make_server(backend) as server:
    with pytest.raises(OSError, match='cannot bind'):
      serve.make_server(backend, port=server.port)


def test_main_help_exits_zero():
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    [sys.executable, '-m', 'eval_gsm.serve', '--helpshort'],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert '--batch_wait_ms' in proc.stdout + proc.stderr
