"""An OpenAI-compatible HTTP server around any ``core.Backend``, so the HTTP path runs end to end in-repo.

``make_server(backend)`` gives a ``Server`` (``.url`` such as ``http://127.0.0.1:PORT/v1``, ``.start()``,
``.close()``, context manager) with the endpoints that vLLM and llama.cpp ``llama-server`` clients use:

- ``GET /v1/models``: the one model, named ``model_name`` (default: the backend's name).
- ``POST /v1/completions``: ``prompt`` (a string or a list of strings), ``max_tokens`` (default 16),
  ``temperature`` (default 1.0, as in the OpenAI API), ``stop`` (a string or a list), ``seed`` (default 0).
  The answer is ``{'id', 'object': 'text_completion', 'created', 'model', 'choices': [{'index', 'text',
  'finish_reason'}], 'usage'}``.
- ``POST /v1/chat/completions``: ``messages`` (passed to the backend as a chat prompt, or rendered to text
  by ``chat_template(messages)`` when one is given); the answer is a ``'chat.completion'`` whose
  ``choices[i].message`` is ``{'role': 'assistant', 'content'}``.
- ``GET /health``: ``{'status': 'ok'}``. Every path also works without the ``/v1`` prefix.

Usage counts tokens with the backend's ``count_tokens(text) -> int`` when it has one, else whitespace words.
``finish_reason`` is 'length' when the completion has ``max_tokens`` tokens or more, else 'stop'. Stop
strings are applied again to what the backend returns, so a backend that overruns them is still cut.
Unsupported options fail loudly with 400 (``n > 1``, ``stream``, ``logprobs``, ``echo``, token-id prompts);
unknown fields are ignored and any ``model`` value is accepted.

**Micro-batching.** Handler threads only parse and wait. One worker thread takes the first queued request,
then every request already queued or arriving within ``batch_wait_ms`` of it, up to ``max_batch`` prompts
(a single larger request is taken alone); it groups them by identical ``(max_tokens, temperature, stop,
seed)`` and makes one ``backend.generate`` call per group (a group over ``max_batch`` prompts is split). The
backend (and its ``count_tokens``) is therefore never called concurrently, which a JAX model needs.
``Server.stats`` counts requests, prompts, ``generate`` calls and failed calls.

**Errors** are OpenAI-style ``{'error': {'message', 'type', 'code'}}``: invalid JSON or fields -> 400,
unknown path -> 404, wrong method -> 405, a backend exception -> 500 with its one-line message, shutting
down -> 503.

**Security.** There is no authentication. The server binds 127.0.0.1 by default; binding another address
(``--host 0.0.0.0``) lets anyone who can reach it use the model.

Command line (``--model`` is a backend spec for ``eval_gsm.backends.make_backend``)::

  python -m eval_gsm.serve --model=SPEC --port=8000
"""

import collections
import concurrent.futures
import dataclasses
import http.server
import json
import queue
import socket
import sys
import threading
import time
import uuid
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging

from eval_gsm.backends.scripted import apply_stop
from eval_gsm.core import Backend, BackendError, Message, Prompt

_MAX_BODY_BYTES = 32 * 1024 * 1024
_LOOPBACK = ('127.0.0.1', 'localhost', '::1')

# (max_tokens, temperature, stop, seed): requests with equal params can share one generate call.
_Params = Tuple[int, float, Tuple[str, ...], int]
# Per prompt: (text, prompt tokens, completion tokens).
_Output = Tuple[str, int, int]


class RequestError(Exception):
  """A client error, answered with ``status`` and an OpenAI-style error body."""

  def __init__(self, message: str, status: int = 400, kind: str = 'invalid_request_error'):
    super().__init__(message)
    self.status = status
    self.kind = kind


def _one_line(text: str, limit: int = 500) -> str:
  text = ' '.join(str(text).split())
  return text if len(text) <= limit else text[: limit - 3] + '...'


@dataclasses.dataclass
class _Job:
  """One HTTP request's prompts, waiting for the worker."""

  prompts: List[Prompt]
  params: _Params
  future: concurrent.futures.Future
  outputs: List[Optional[_Output]]


class _Batcher:
  """The single worker thread that turns queued jobs into batched ``backend.generate`` calls."""

  def __init__(self, backend: Backend, max_batch: int, batch_wait_s: float):
    self.backend = backend
    self.max_batch = max_batch
    self.batch_wait_s = batch_wait_s
    self._queue: 'queue.Queue[Optional[_Job]]' = queue.Queue()
    self._carry: Deque[_Job] = collections.deque()  # Taken from the queue but left for the next batch.
    self._closed = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._lock = threading.Lock()
    self.stats = {'requests': 0, 'prompts': 0, 'generate_calls': 0, 'errors': 0}
    counter = getattr(backend, 'count_tokens', None)
    self._count: Callable[[str], int] = counter if callable(counter) else (lambda text: len(text.split()))

  def start(self) -> None:
    if self._thread is None:
      self._thread = threading.Thread(target=self._loop, name='serve-batcher', daemon=True)
      self._thread.start()

  def submit(self, prompts: List[Prompt], params: _Params) -> concurrent.futures.Future:
    job = _Job(prompts, params, concurrent.futures.Future(), [None] * len(prompts))
    if self._closed.is_set():
      job.future.set_exception(RequestError('the server is shutting down', 503, 'server_error'))
      return job.future
    self._queue.put(job)
    with self._lock:  # Counted once queued, so a waiter that sees the count also sees the job.
      self.stats['requests'] += 1
      self.stats['prompts'] += len(prompts)
    return job.future

  def close(self) -> None:
    self._closed.set()
    self._queue.put(None)
    if self._thread is not None and self._thread is not threading.current_thread():
      self._thread.join(timeout=10)
    pending = list(self._carry)
    self._carry.clear()
    while True:
      try:
        job = self._queue.get_nowait()
      except queue.Empty:
        break
      if job is not None:
        pending.append(job)
    for job in pending:
      if not job.future.done():
        job.future.set_exception(RequestError('the server is shutting down', 503, 'server_error'))

  def _next(self, timeout: Optional[float]) -> Optional[_Job]:
    """The next job (carried-over ones first); None on timeout or close; ``timeout`` <= 0: no waiting."""
    if self._carry:
      return self._carry.popleft()
    try:
      if timeout is None:
        job = self._queue.get()
      elif timeout <= 0:
        job = self._queue.get_nowait()
      else:
        job = self._queue.get(timeout=timeout)
    except queue.Empty:
      return None
    if job is None:
      self._closed.set()
    return job

  def _collect(self) -> List[_Job]:
    first = self._next(None)
    if first is None:
      return []
    batch, size = [first], len(first.prompts)
    deadline = time.monotonic() + self.batch_wait_s
    while size < self.max_batch and not self._closed.is_set():
      job = self._next(deadline - time.monotonic())
      if job is None:
        break
      if size + len(job.prompts) > self.max_batch:
        self._carry.appendleft(job)
        break
      batch.append(job)
      size += len(job.prompts)
    return batch

  def _loop(self) -> None:
    while not self._closed.is_set():
      batch = self._collect()
      groups: Dict[_Params, List[_Job]] = {}
      for job in batch:
        groups.setdefault(job.params, []).append(job)
      for params, jobs in groups.items():
        try:
          self._run_group(params, jobs)
        except BaseException as err:  # Never let the worker die: every waiting handler gets an answer.
          for job in jobs:
            if not job.future.done():
              job.future.set_exception(err)

  def _run_group(self, params: _Params, jobs: List[_Job]) -> None:
    max_tokens, temperature, stop, seed = params
    items = [(job, i) for job in jobs for i in range(len(job.prompts))]
    for start in range(0, len(items), self.max_batch):
      chunk = [(job, i) for job, i in items[start : start + self.max_batch] if not job.future.done()]
      if not chunk:
        continue
      prompts = [job.prompts[i] for job, i in chunk]
      with self._lock:
        self.stats['generate_calls'] += 1
      try:
        texts = self.backend.generate(
          prompts, max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed
        )
        if not isinstance(texts, (list, tuple)) or len(texts) != len(prompts):
          got = len(texts) if isinstance(texts, (list, tuple)) else type(texts).__name__
          raise RuntimeError(f'backend returned {got} completions for {len(prompts)} prompts')
        outputs = []
        for prompt, text in zip(prompts, texts):
          text = apply_stop(str(text), stop)
          outputs.append((text, self._prompt_tokens(prompt), self._count(text)))
      except Exception as err:  # A backend failure fails the requests of this call only.
        with self._lock:
          self.stats['errors'] += 1
        logging.warning(
          'backend %s failed on %d prompts: %s', getattr(self.backend, 'name', '?'), len(prompts), err
        )
        for job, _ in chunk:
          if not job.future.done():
            job.future.set_exception(err)
        continue
      for (job, i), output in zip(chunk, outputs):
        job.outputs[i] = output
      for job in {id(job): job for job, _ in chunk}.values():
        if not job.future.done() and all(o is not None for o in job.outputs):
          job.future.set_result(list(job.outputs))

  def _prompt_tokens(self, prompt: Prompt) -> int:
    if isinstance(prompt, str):
      return self._count(prompt)
    return sum(self._count(m.get('content', '')) for m in prompt)


# --- request parsing -------------------------------------------------------------------------------------


def _int_field(body: Dict[str, Any], field: str, default: int, minimum: int) -> int:
  value = body.get(field)
  if value is None:
    return default
  if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
    raise RequestError(f'{field} must be an integer, got {json.dumps(value)[:50]}')
  if value < minimum:
    raise RequestError(f'{field} must be >= {minimum}, got {value}')
  return int(value)


def _params(body: Dict[str, Any], *, chat: bool) -> _Params:
  if body.get('stream'):
    raise RequestError('streaming is not supported; send "stream": false')
  if body.get('n') not in (None, 1):
    raise RequestError('only n=1 is supported; send separate requests with different seeds')
  if body.get('logprobs') not in (None, False, 0) or body.get('top_logprobs'):
    raise RequestError('logprobs are not supported by this server; drop the logprobs field')
  if not chat and body.get('echo'):
    raise RequestError('echo is not supported; send "echo": false')
  max_tokens = _int_field(body, 'max_tokens', 16, 0)
  if chat and body.get('max_tokens') is None:
    max_tokens = _int_field(body, 'max_completion_tokens', 16, 0)
  temperature = body.get('temperature')
  if temperature is None:
    temperature = 1.0
  if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
    raise RequestError(f'temperature must be a number >= 0, got {json.dumps(temperature)[:50]}')
  stop = body.get('stop')
  if stop is None:
    stop = []
  elif isinstance(stop, str):
    stop = [stop]
  elif not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
    raise RequestError('stop must be a string or a list of strings')
  seed = _int_field(body, 'seed', 0, -(2**63))
  return max_tokens, float(temperature), tuple(s for s in stop if s), seed


def _completion_prompts(body: Dict[str, Any]) -> List[str]:
  prompt = body.get('prompt')
  if prompt is None:
    raise RequestError('missing field "prompt": send a string or a list of strings')
  if isinstance(prompt, str):
    return [prompt]
  if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
    return list(prompt)
  if isinstance(prompt, list) and prompt and all(isinstance(p, (int, list)) for p in prompt):
    raise RequestError('token-id prompts are not supported; send text (e.g. tokenized_requests=False)')
  raise RequestError('prompt must be a string or a non-empty list of strings')


def _chat_messages(body: Dict[str, Any]) -> List[Message]:
  messages = body.get('messages')
  if messages is None:
    raise RequestError('missing field "messages": send a list of {"role", "content"} objects')
  if not isinstance(messages, list) or not messages:
    raise RequestError('messages must be a non-empty list of {"role", "content"} objects')
  out = []
  for i, message in enumerate(messages):
    if not isinstance(message, dict) or not isinstance(message.get('role'), str):
      raise RequestError(f'messages[{i}] must be an object with a string "role" and "content"')
    content = message.get('content')
    if content is None:
      content = ''
    if isinstance(content, list):  # Content parts: keep the text ones.
      if not all(isinstance(p, dict) and p.get('type') == 'text' for p in content):
        raise RequestError(f'messages[{i}].content may only have text parts')
      content = ''.join(str(p.get('text', '')) for p in content)
    if not isinstance(content, str):
      raise RequestError(f'messages[{i}].content must be a string')
    out.append({'role': message['role'], 'content': content})
  return out


# --- HTTP ------------------------------------------------------------------------------------------------


class _HTTPServer(http.server.ThreadingHTTPServer):
  daemon_threads = True
  request_queue_size = 256  # The listen backlog: the default 5 drops bursts of concurrent clients' connects.
  batcher: _Batcher
  model_name: str
  chat_template: Optional[Callable[[List[Message]], str]]


class _HTTPServer6(_HTTPServer):
  address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
  protocol_version = 'HTTP/1.1'
  server: _HTTPServer
  server_version = 'eval_gsm-serve'

  def log_message(self, format: str, *args: Any) -> None:
    logging.debug('%s %s', self.address_string(), format % args)

  def _send(self, status: int, payload: Dict[str, Any]) -> None:
    data = json.dumps(payload, ensure_ascii=False).encode('utf-8')
    self.send_response(status)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def _send_error(self, err: RequestError) -> None:
    message = _one_line(str(err))
    self._send(err.status, {'error': {'message': message, 'type': err.kind, 'code': err.status}})

  def _route(self) -> str:
    path = self.path.split('?', 1)[0].rstrip('/')
    return path[len('/v1') :] if path.startswith('/v1/') else path

  def do_GET(self) -> None:
    route = self._route()
    if route == '/models':
      created = int(time.time())
      model = {'id': self.server.model_name, 'object': 'model', 'created': created, 'owned_by': 'eval_gsm'}
      self._send(200, {'object': 'list', 'data': [model]})
    elif route == '/health':
      self._send(200, {'status': 'ok'})
    elif route in ('/completions', '/chat/completions'):
      self._send_error(RequestError(f'use POST for {self.path}', 405, 'invalid_request_error'))
    else:
      self._send_error(self._not_found())

  def _not_found(self) -> RequestError:
    return RequestError(
      f'unknown path {_one_line(self.path, 100)}; this server has GET /v1/models, POST /v1/completions and '
      'POST /v1/chat/completions',
      404,
      'not_found_error',
    )

  def _read_body(self) -> Dict[str, Any]:
    if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
      self.close_connection = True
      raise RequestError('chunked request bodies are not supported; send a Content-Length header')
    try:
      length = int(self.headers.get('Content-Length', ''))
    except ValueError:
      self.close_connection = True
      raise RequestError('missing or invalid Content-Length header') from None
    if length > _MAX_BODY_BYTES:
      self.close_connection = True
      raise RequestError(f'request body of {length} bytes is over the {_MAX_BODY_BYTES} byte limit', 413)
    raw = self.rfile.read(length)
    try:
      body = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as err:
      raise RequestError(f'invalid JSON body: {err}') from None
    if not isinstance(body, dict):
      raise RequestError('the request body must be a JSON object')
    return body

  def do_POST(self) -> None:
    route = self._route()
    try:
      if route not in ('/completions', '/chat/completions'):
        self.close_connection = True  # The body is not read.
        raise self._not_found()
      body = self._read_body()
      chat = route == '/chat/completions'
      params = _params(body, chat=chat)
      if chat:
        messages = _chat_messages(body)
        template = self.server.chat_template
        prompts: List[Prompt] = [template(messages) if template else messages]
      else:
        prompts = list(_completion_prompts(body))
      future = self.server.batcher.submit(prompts, params)
      try:
        outputs = future.result()
      except RequestError:
        raise
      except Exception as err:
        name = getattr(self.server.batcher.backend, 'name', 'backend')
        raise RequestError(f'{name} failed: {type(err).__name__}: {err}', 500, 'server_error') from None
      self._send(200, self._response(outputs, params[0], chat))
    except RequestError as err:
      self._send_error(err)

  def _response(self, outputs: Sequence[_Output], max_tokens: int, chat: bool) -> Dict[str, Any]:
    choices = []
    for index, (text, _, completion_tokens) in enumerate(outputs):
      finish = 'length' if completion_tokens >= max_tokens else 'stop'
      if chat:
        choices.append(
          {'index': index, 'message': {'role': 'assistant', 'content': text}, 'finish_reason': finish}
        )
      else:
        choices.append({'index': index, 'text': text, 'logprobs': None, 'finish_reason': finish})
    prompt_tokens = sum(o[1] for o in outputs)
    completion_tokens = sum(o[2] for o in outputs)
    return {
      'id': ('chatcmpl-' if chat else 'cmpl-') + uuid.uuid4().hex[:24],
      'object': 'chat.completion' if chat else 'text_completion',
      'created': int(time.time()),
      'model': self.server.model_name,
      'choices': choices,
      'usage': {
        'prompt_tokens': prompt_tokens,
        'completion_tokens': completion_tokens,
        'total_tokens': prompt_tokens + completion_tokens,
      },
    }


class Server:
  """A running (or ready) OpenAI-compatible server; ``url`` ends in ``/v1``."""

  def __init__(self, httpd: _HTTPServer, batcher: _Batcher):
    self.httpd = httpd
    self._batcher = batcher
    host, port = httpd.server_address[:2]
    self.host, self.port = host, port
    shown = f'[{host}]' if ':' in host else host
    self.url = f'http://{shown}:{port}/v1'
    self._thread: Optional[threading.Thread] = None
    self._serving = False
    self._closed = False

  @property
  def stats(self) -> Dict[str, int]:
    """Counters: requests and prompts received, backend ``generate`` calls made, failed calls."""
    with self._batcher._lock:
      return dict(self._batcher.stats)

  def start(self) -> 'Server':
    """Serves in a daemon thread; returns self."""
    if self._closed:
      raise RuntimeError('this server was closed; make a new one with make_server')
    if not self._serving:
      self._batcher.start()
      self._serving = True
      self._thread = threading.Thread(
        target=self.httpd.serve_forever, kwargs={'poll_interval': 0.1}, name='serve-http', daemon=True
      )
      self._thread.start()
    return self

  def serve_forever(self) -> None:
    """Serves in the calling thread until ``close()`` (from another thread) or KeyboardInterrupt."""
    if self._serving:
      raise RuntimeError('already serving')
    self._batcher.start()
    self._serving = True
    self.httpd.serve_forever(poll_interval=0.1)

  def close(self) -> None:
    """Stops serving, fails waiting requests with 503 and closes the socket; safe to call twice."""
    if self._closed:
      return
    self._closed = True
    if self._serving:
      self.httpd.shutdown()
    self._batcher.close()
    self.httpd.server_close()
    if self._thread is not None:
      self._thread.join(timeout=10)

  def __enter__(self) -> 'Server':
    return self.start()

  def __exit__(self, *exc: Any) -> None:
    self.close()

  def __repr__(self) -> str:
    return f'Server(url={self.url!r}, model={self.httpd.model_name!r})'


def make_server(
  backend: Backend,
  *,
  host: str = '127.0.0.1',
  port: int = 0,
  model_name: Optional[str] = None,
  max_batch: int = 64,
  batch_wait_ms: float = 5,
  chat_template: Optional[Callable[[List[Message]], str]] = None,
) -> Server:
  """A ``Server`` for ``backend`` bound to ``host:port`` (port 0: a free one); call ``.start()`` to serve."""
  if max_batch < 1:
    raise ValueError(f'max_batch must be >= 1, got {max_batch}')
  if batch_wait_ms < 0:
    raise ValueError(f'batch_wait_ms must be >= 0, got {batch_wait_ms}')
  cls = _HTTPServer6 if ':' in host else _HTTPServer
  try:
    httpd = cls((host, port), _Handler)
  except OSError as err:
    raise OSError(
      f'cannot bind {host}:{port}: {err.strerror or err}; pick another --port or --host'
    ) from None
  httpd.batcher = _Batcher(backend, max_batch, batch_wait_ms / 1000.0)
  httpd.model_name = model_name or getattr(backend, 'name', 'model')
  httpd.chat_template = chat_template
  if host not in _LOOPBACK:
    logging.warning('serving on %s without authentication: anyone who can reach it can use the model', host)
  return Server(httpd, httpd.batcher)


# --- command line -----------------------------------------------------------------------------------------


def define_flags() -> None:
  """Defines the command-line flags (only when run as a program, so importing this module defines none)."""
  flags.DEFINE_string('model', None, 'backend spec for eval_gsm.backends.make_backend', required=True)
  flags.DEFINE_string('model_name', None, 'model name reported by /v1/models (default: the --model spec)')
  flags.DEFINE_string(
    'host', '127.0.0.1', 'address to bind; anything but loopback exposes the model (no auth)'
  )
  flags.DEFINE_integer('port', 8000, 'port to bind (0: a free one)')
  flags.DEFINE_integer('max_batch', 64, 'most prompts per backend.generate call')
  flags.DEFINE_float('batch_wait_ms', 5.0, 'how long to gather requests into one batch')


def _fail(message: str) -> None:
  """Ends the process with one line on stderr and exit code 2 (the house convention for usage errors)."""
  print(f'error: {_one_line(message)}', file=sys.stderr, flush=True)
  sys.exit(2)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    _fail(f'unexpected arguments {" ".join(argv[1:])}; all options are --flags (see --helpshort)')
  from eval_gsm import backends  # Lazy: make_backend is provided by another module.

  make_backend = getattr(backends, 'make_backend', None)
  if make_backend is None:
    _fail('eval_gsm.backends has no make_backend yet; update the checkout')
  FLAGS = flags.FLAGS
  try:
    backend = make_backend(FLAGS.model)
    server = make_server(
      backend,
      host=FLAGS.host,
      port=FLAGS.port,
      model_name=FLAGS.model_name or FLAGS.model,
      max_batch=FLAGS.max_batch,
      batch_wait_ms=FLAGS.batch_wait_ms,
    )
  except (BackendError, ValueError, OSError) as err:
    _fail(str(err))
  logging.info(
    'serving %s at %s (POST /completions, /chat/completions; GET /models); Ctrl-C stops',
    backend.name,
    server.url,
  )
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.close()
    logging.info('stopped; %s', server.stats)


_HELP = ('-h', '-?', '--help', '--helpshort', '--helpfull', '--helpxml')

if __name__ == '__main__':
  define_flags()
  try:
    app.run(main)
  except SystemExit as exit_:  # absl exits 1 after printing help; asking for help is not a failure.
    if exit_.code == 1 and any(a in _HELP for a in sys.argv[1:]):
      sys.exit(0)
    raise
