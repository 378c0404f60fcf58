"""A client for OpenAI-compatible servers (vLLM, llama.cpp ``llama-server``, OpenAI), standard library only.

``OpenAIBackend(base_url, model)`` implements ``core.Backend`` over HTTP with ``urllib.request`` and a thread
pool (``concurrent.futures``); no third-party HTTP package is needed.

- **Endpoints.** Completions (default): ``POST {base_url}/completions`` with ``model``, ``prompt`` (a
  string; a list of strings when ``prompts_per_request > 1``, results matched by ``choices[i].index``),
  ``max_tokens``, ``temperature``, ``stop`` (omitted when empty) and ``seed``. Chat (``chat=True``): ``POST
  {base_url}/chat/completions`` with ``messages``; a string prompt becomes one user message. ``base_url``
  usually ends in ``/v1`` (``http://127.0.0.1:8000/v1``). ``extra_body`` adds fields (``top_p``, ...).
- **API key.** Read from the environment variable ``api_key_env`` at every request; absent, empty or
  ``'EMPTY'`` sends no ``Authorization`` header. The key is never stored on the object, logged, cached or
  put in an exception (server messages that echo it are redacted).
- **Retries.** 429, 5xx, connection errors and timeouts are retried ``max_retries`` times with exponential
  backoff ``backoff_s * 2**attempt`` (capped at 30 s) times a jitter factor in [0.5, 1.5) from a seeded RNG
  (a numeric ``Retry-After`` header lengthens the wait). Other 4xx fail at once. Every failure the user can
  fix is a one-line ``BackendError`` with the status and the server's (truncated) message, or, for an
  endpoint that never answers, ``cannot reach URL: REASON; is the server running?``. ``timeout_s`` bounds
  connecting and each read of the socket, not the whole response.
- **Order and concurrency.** Up to ``concurrency`` requests are in flight; results come back in input order.
  Identical requests within one ``generate`` call are sent once. The first failing request aborts the call
  (requests already in flight finish and are still cached).
- **Empty completions** are returned as '' and counted in ``.empty_count`` (per returned completion,
  cache hits included); they are not errors.
- **Cache.** With ``cache_path``, an append-only JSONL of ``{"key": SHA-256, "text": completion}`` lines.
  The key hashes the canonical request: URL path, model, prompt or messages, max_tokens, temperature, stop,
  seed (and ``extra_body`` when given); never the host or the key. The file is loaded at construction
  (unreadable lines, such as a last line cut by an interrupted write, are skipped with a warning), consulted
  before sending, and appended and flushed after each successful response, so an interrupted evaluation
  resumes without re-requesting finished prompts. Requests with ``temperature > 0`` are cached too: with
  their ``seed`` they are a fixed sample, so asking again with the same seed returns the cached sample; vary
  ``seed`` to draw new ones. Without ``cache_path`` nothing is cached across calls.
- **Counters** (thread-safe): ``.requests_sent`` (every HTTP POST, retries included), ``.retries`` (the
  retried ones among them), ``.cache_hits`` (prompts answered from the cache), ``.empty_count``.
"""

import concurrent.futures
import hashlib
import http.client
import json
import os
import random
import re
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from absl import logging

from eval_gsm.core import BackendError, Message, Prompt

# Fields the backend sets itself; extra_body may not override them.
_OWN_FIELDS = frozenset(
  {'model', 'prompt', 'messages', 'max_tokens', 'temperature', 'stop', 'seed', 'n', 'stream'}
)
_MAX_BACKOFF_S = 30.0
_MESSAGE_CHARS = 300
_LOOPBACK_HOSTS = ('localhost', '127.0.0.1', '::1')

# (max_tokens, temperature, stop, seed), normalised.
_Params = Tuple[int, float, List[str], int]
# A request chunk: (cache keys, payloads) of the prompts it carries.
_Chunk = Tuple[List[str], List[Union[str, List[Message]]]]


def _one_line(text: str, limit: int = _MESSAGE_CHARS) -> str:
  """``text`` with whitespace runs collapsed to single spaces, truncated to ``limit`` characters."""
  text = re.sub(r'\s+', ' ', str(text)).strip()
  return text if len(text) <= limit else text[: limit - 3] + '...'


def _stop_list(stop: Union[str, Sequence[str], None]) -> List[str]:
  if stop is None:
    return []
  if isinstance(stop, str):
    return [stop]
  return [str(s) for s in stop if s]


def _server_message(raw: bytes) -> str:
  """The error message in an error response body: OpenAI/vLLM/llama.cpp JSON shapes, else the raw text."""
  text = raw.decode('utf-8', errors='replace')
  try:
    data = json.loads(text)
  except ValueError:
    return _one_line(text) or '(empty body)'
  if isinstance(data, dict):
    err = data.get('error', data)
    if isinstance(err, dict):
      for field in ('message', 'detail', 'msg'):
        if err.get(field):
          return _one_line(err[field])
    elif isinstance(err, str) and err:
      return _one_line(err)
    if data.get('detail'):
      return _one_line(json.dumps(data['detail']) if not isinstance(data['detail'], str) else data['detail'])
  return _one_line(text)


class _Retryable(Exception):
  """A failure worth retrying: kind is 'status' (429/5xx), 'timeout' or 'connection'."""

  def __init__(self, kind: str, detail: str, status: int = 0, retry_after: Optional[float] = None):
    super().__init__(detail)
    self.kind = kind
    self.detail = detail
    self.status = status
    self.retry_after = retry_after


class _Aborted(Exception):
  """Another request of the same generate call failed; stop this one."""


class OpenAIBackend:
  """``core.Backend`` for an OpenAI-compatible server; see the module docstring for every behaviour."""

  def __init__(
    self,
    base_url: str,
    model: str,
    *,
    chat: bool = False,
    api_key_env: Optional[str] = 'OPENAI_API_KEY',
    concurrency: int = 8,
    prompts_per_request: int = 1,
    max_retries: int = 5,
    backoff_s: float = 0.5,
    timeout_s: float = 120,
    cache_path: Optional[str] = None,
    extra_body: Optional[Mapping[str, Any]] = None,
    name: Optional[str] = None,
  ):
    parsed = urllib.parse.urlparse(base_url)
    if parsed.username is not None or parsed.password is not None:  # Checked first: never echo a password.
      raise ValueError(f'base_url must not contain user:password@; put the API key in ${api_key_env} instead')
    if parsed.scheme not in ('http', 'https') or not parsed.hostname:
      raise ValueError(f'base_url must look like http://HOST:PORT/v1, got {_one_line(base_url, 100)!r}')
    if not model:
      raise ValueError(f'model is empty; pass a name that GET {base_url.rstrip("/")}/models lists')
    if concurrency < 1 or prompts_per_request < 1:
      raise ValueError(
        f'concurrency and prompts_per_request must be >= 1, got {concurrency}, {prompts_per_request}'
      )
    if chat and prompts_per_request > 1:
      raise ValueError(
        'prompts_per_request > 1 needs the completions API; the chat API takes one conversation'
      )
    if max_retries < 0 or backoff_s < 0 or timeout_s <= 0:
      raise ValueError(
        f'need max_retries >= 0, backoff_s >= 0, timeout_s > 0; got {max_retries}, {backoff_s}, {timeout_s}'
      )
    extra = dict(extra_body or {})
    clash = sorted(_OWN_FIELDS & set(extra))
    if clash:
      raise ValueError(
        f'extra_body may not set {clash}: use the generate() arguments and the constructor instead'
      )
    try:
      json.dumps(extra)
    except (TypeError, ValueError) as err:
      raise ValueError(f'extra_body must be JSON-serialisable: {err}') from None

    self.base_url = base_url.rstrip('/')
    self.model = model
    self.chat = chat
    self.api_key_env = api_key_env
    self.concurrency = concurrency
    self.prompts_per_request = prompts_per_request
    self.max_retries = max_retries
    self.backoff_s = backoff_s
    self.timeout_s = timeout_s
    self.cache_path = cache_path
    self.extra_body = extra
    self.name = name or f'openai-{"chat" if chat else "completions"}:{model}'

    self._url = self.base_url + ('/chat/completions' if chat else '/completions')
    self._url_path = urllib.parse.urlparse(self._url).path
    # The URL as shown in messages: no query string.
    port = f':{parsed.port}' if parsed.port else ''
    host = f'[{parsed.hostname}]' if ':' in parsed.hostname else parsed.hostname
    self._shown_url = f'{parsed.scheme}://{host}{port}{self._url_path}'
    # Loopback servers are reached directly even when an http_proxy is set in the environment.
    handlers = [urllib.request.ProxyHandler({})] if parsed.hostname in _LOOPBACK_HOSTS else []
    self._opener = urllib.request.build_opener(*handlers)

    self.requests_sent = 0
    self.retries = 0
    self.cache_hits = 0
    self.empty_count = 0
    self._lock = threading.Lock()
    self._rng = random.Random(0)
    self._cache: Dict[str, str] = {}
    self._needs_newline = False
    if cache_path:
      self._load_cache()

  def __repr__(self) -> str:
    return (
      f'OpenAIBackend(name={self.name!r}, url={self._shown_url!r}, model={self.model!r}, '
      f'cache_path={self.cache_path!r})'
    )

  # --- secrets -------------------------------------------------------------------------------------------

  def _api_key(self) -> Optional[str]:
    key = os.environ.get(self.api_key_env) if self.api_key_env else None
    return key if key and key != 'EMPTY' else None

  def _redact(self, text: str) -> str:
    key = self._api_key()
    if key:
      text = text.replace(key, '***')
    return text

  def _error(self, message: str) -> BackendError:
    return BackendError(self._redact(_one_line(message, 1000)))

  # --- cache ---------------------------------------------------------------------------------------------

  def _load_cache(self) -> None:
    path = self.cache_path
    if not os.path.exists(path):
      return
    bad = []
    with open(path, 'r', encoding='utf-8', errors='replace') as f:
      for lineno, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
          key, text = record['key'], record['text']
          if not isinstance(key, str) or not isinstance(text, str):
            raise TypeError('key and text must be strings')
        except (ValueError, KeyError, TypeError):
          bad.append(lineno)
          continue
        self._cache[key] = text
    with open(path, 'rb') as f:
      f.seek(0, os.SEEK_END)
      if f.tell():
        f.seek(-1, os.SEEK_END)
        self._needs_newline = f.read(1) != b'\n'
    if bad:
      logging.warning(
        '%s: skipped %d unreadable line(s) of the cache %s (line %s%s); an interrupted write leaves one',
        self.name,
        len(bad),
        path,
        ', '.join(map(str, bad[:5])),
        ', ...' if len(bad) > 5 else '',
      )
    logging.info('%s: %d cached completions loaded from %s', self.name, len(self._cache), path)

  def _cache_key(self, payload: Union[str, List[Message]], params: _Params) -> str:
    max_tokens, temperature, stop, seed = params
    request = {
      'path': self._url_path,
      'model': self.model,
      ('messages' if self.chat else 'prompt'): payload,
      'max_tokens': max_tokens,
      'temperature': temperature,
      'stop': stop,
      'seed': seed,
    }
    if self.extra_body:
      request['extra'] = self.extra_body
    canonical = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(',', ':'))
    return hashlib.sha256(canonical.encode('utf-8')).hexdigest()

  def _store(self, key: str, text: str) -> None:
    if not self.cache_path:
      return
    line = json.dumps({'key': key, 'text': text}, ensure_ascii=False) + '\n'
    with self._lock:
      self._cache[key] = text
      directory = os.path.dirname(os.path.abspath(self.cache_path))
      os.makedirs(directory, exist_ok=True)
      with open(self.cache_path, 'a', encoding='utf-8') as f:
        if self._needs_newline:  # Never glue a record onto a partial line from an interrupted write.
          f.write('\n')
          self._needs_newline = False
        f.write(line)
        f.flush()

  # --- requests ------------------------------------------------------------------------------------------

  def _payload(self, prompt: Prompt) -> Union[str, List[Message]]:
    if isinstance(prompt, str):
      return [{'role': 'user', 'content': prompt}] if self.chat else prompt
    if not isinstance(prompt, (list, tuple)) or not all(
      isinstance(m, Mapping) and 'role' in m and 'content' in m for m in prompt
    ):
      raise TypeError(
        f'a prompt is a str or a list of {{"role", "content"}} messages, got {type(prompt).__name__}'
      )
    if not self.chat:
      raise BackendError(
        f'{self.name}: got a chat prompt for the completions API; pass chat=True or render it to text'
      )
    return [dict(m) for m in prompt]

  def _body(self, payloads: List[Union[str, List[Message]]], params: _Params) -> Dict[str, Any]:
    max_tokens, temperature, stop, seed = params
    body: Dict[str, Any] = dict(self.extra_body)
    body['model'] = self.model
    if self.chat:
      body['messages'] = payloads[0]
    else:
      body['prompt'] = payloads if self.prompts_per_request > 1 else payloads[0]
    body['max_tokens'] = max_tokens
    body['temperature'] = temperature
    if stop:
      body['stop'] = stop
    body['seed'] = seed
    return body

  def _post_once(self, data: bytes) -> Any:
    headers = {'Content-Type': 'application/json', 'Accept': 'application/json', 'User-Agent': 'eval_gsm'}
    key = self._api_key()
    if key:
      headers['Authorization'] = f'Bearer {key}'
    request = urllib.request.Request(self._url, data=data, headers=headers, method='POST')
    try:
      with self._opener.open(request, timeout=self.timeout_s) as response:
        raw = response.read()
    except urllib.error.HTTPError as err:
      try:
        message = _server_message(err.read())
      except (OSError, http.client.HTTPException):
        message = _one_line(err.reason or '(no body)')
      finally:
        err.close()
      status = err.code
      if status == 429 or status >= 500:
        retry_after = None
        try:
          retry_after = float(err.headers.get('Retry-After', ''))
        except (TypeError, ValueError):
          pass
        raise _Retryable('status', message, status=status, retry_after=retry_after) from None
      raise self._error(f'HTTP {status} from {self._shown_url}: {message}; {self._hint(status)}') from None
    except urllib.error.URLError as err:
      reason = err.reason
      if isinstance(reason, (TimeoutError, socket.timeout)):
        raise _Retryable('timeout', str(reason)) from None
      if isinstance(reason, ssl.SSLCertVerificationError):
        raise self._error(f'TLS certificate of {self._shown_url} was rejected: {reason}') from None
      raise _Retryable('connection', str(reason)) from None
    except TimeoutError as err:  # socket.timeout is TimeoutError.
      raise _Retryable('timeout', str(err) or 'timed out') from None
    except (http.client.HTTPException, OSError) as err:
      raise _Retryable('connection', f'{type(err).__name__}: {err}') from None
    try:
      return json.loads(raw.decode('utf-8'))
    except ValueError:
      snippet = _one_line(raw.decode('utf-8', errors='replace'), 120)
      raise self._error(
        f'{self._shown_url} answered with invalid JSON ({snippet!r}); is base_url an OpenAI-compatible /v1?'
      ) from None

  def _hint(self, status: int) -> str:
    if status in (401, 403):
      return (
        f'check the API key in ${self.api_key_env}' if self.api_key_env else 'the server wants an API key'
      )
    if status == 404:
      return 'check base_url (it usually ends in /v1) and the model name'
    if status == 413:
      return 'the request is too large; shorten the prompt or lower prompts_per_request'
    return 'fix the request the server rejected'

  def _delay(self, attempt: int, retry_after: Optional[float]) -> float:
    with self._lock:
      jitter = 0.5 + self._rng.random()
    delay = min(_MAX_BACKOFF_S, self.backoff_s * 2**attempt) * jitter
    if retry_after is not None and retry_after > 0:
      delay = max(delay, min(retry_after, _MAX_BACKOFF_S))
    return delay

  def _post(self, body: Dict[str, Any], abort: threading.Event) -> Any:
    data = json.dumps(body, ensure_ascii=False).encode('utf-8')
    attempts = self.max_retries + 1
    for attempt in range(attempts):
      if abort.is_set():
        raise _Aborted()
      with self._lock:
        self.requests_sent += 1
        if attempt:
          self.retries += 1
      try:
        return self._post_once(data)
      except _Retryable as err:
        if attempt + 1 == attempts:
          raise self._final_error(err, attempts) from None
        delay = self._delay(attempt, err.retry_after)
        what = f'HTTP {err.status}' if err.kind == 'status' else err.kind
        logging.warning(
          '%s: %s from %s (%s); retry %d/%d in %.2f s',
          self.name,
          what,
          self._shown_url,
          self._redact(_one_line(err.detail, 120)),
          attempt + 1,
          self.max_retries,
          delay,
        )
        if abort.wait(delay):
          raise _Aborted() from None
    raise AssertionError('unreachable')

  def _final_error(self, err: _Retryable, attempts: int) -> BackendError:
    tries = f'{attempts} attempt{"s" if attempts > 1 else ""}'
    if err.kind == 'status':
      return self._error(
        f'HTTP {err.status} from {self._shown_url} after {tries}: {err.detail}; '
        'the server is overloaded or failing: retry later, or raise max_retries/backoff_s'
      )
    if err.kind == 'timeout':
      return self._error(
        f'no answer from {self._shown_url} within timeout_s={self.timeout_s:g} after {tries}; '
        'raise timeout_s, lower max_tokens or check that the server is not stuck'
      )
    return self._error(f'cannot reach {self._shown_url}: {err.detail}; is the server running?')

  def _parse(self, response: Any, n: int) -> List[str]:
    choices = response.get('choices') if isinstance(response, dict) else None
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
      snippet = _one_line(json.dumps(response), 120)
      raise self._error(
        f'{self._shown_url} answered without a "choices" list ({snippet}); is it an OpenAI-compatible server?'
      )
    by_index: Dict[int, Any] = {}
    for position, choice in enumerate(choices):
      index = choice.get('index', position)
      if self.chat:
        message = choice.get('message') or {}
        by_index[index] = message.get('content') if isinstance(message, dict) else None
      else:
        by_index[index] = choice.get('text')
    if any(i not in by_index for i in range(n)):
      raise self._error(
        f'{self._shown_url} returned choices with indices {sorted(by_index)[:10]} for {n} prompt(s), '
        f'expected 0..{n - 1}; set prompts_per_request=1 if the server does not take a list of prompts'
      )
    texts = []
    for i in range(n):
      text = by_index[i]
      if text is None:
        text = ''
      if not isinstance(text, str):
        raise self._error(f'{self._shown_url} returned a non-text completion ({type(text).__name__})')
      texts.append(text)
    return texts

  def _run_chunk(self, chunk: _Chunk, params: _Params, abort: threading.Event) -> List[str]:
    keys, payloads = chunk
    texts = self._parse(self._post(self._body(payloads, params), abort), len(payloads))
    for key, text in zip(keys, texts):
      self._store(key, text)
    return texts

  def generate(
    self,
    prompts: Sequence[Prompt],
    *,
    max_tokens: int,
    temperature: float = 0.0,
    stop: Sequence[str] = (),
    seed: int = 0,
  ) -> List[str]:
    """Completions for ``prompts`` in order: cached ones from the cache, the rest from the server."""
    if max_tokens < 0:
      raise ValueError(f'max_tokens must be >= 0, got {max_tokens}')
    params: _Params = (int(max_tokens), float(temperature), _stop_list(stop), int(seed))
    payloads = [self._payload(p) for p in prompts]
    keys = [self._cache_key(p, params) for p in payloads]

    known: Dict[str, str] = {}
    todo: Dict[str, Union[str, List[Message]]] = {}  # Insertion-ordered and deduplicated.
    with self._lock:
      for key, payload in zip(keys, payloads):
        if key in self._cache:
          known[key] = self._cache[key]
          self.cache_hits += 1
        elif key not in todo:
          todo[key] = payload
    per_request = 1 if self.chat else self.prompts_per_request
    todo_keys = list(todo)
    chunks: List[_Chunk] = []
    for start in range(0, len(todo_keys), per_request):
      chunk_keys = todo_keys[start : start + per_request]
      chunks.append((chunk_keys, [todo[k] for k in chunk_keys]))

    for chunk, texts in zip(chunks, self._run_all(chunks, params)):
      known.update(zip(chunk[0], texts))
    results = [known[k] for k in keys]
    with self._lock:
      self.empty_count += sum(1 for r in results if not r)
    return results

  def _run_all(self, chunks: List[_Chunk], params: _Params) -> List[List[str]]:
    """Every chunk's texts, in order; at most ``concurrency`` in flight; the first failure aborts the rest."""
    abort = threading.Event()
    if len(chunks) <= 1 or self.concurrency == 1:
      return [self._run_chunk(c, params, abort) for c in chunks]
    pool = concurrent.futures.ThreadPoolExecutor(
      max_workers=min(self.concurrency, len(chunks)), thread_name_prefix='openai-backend'
    )
    failed = True
    try:
      futures = [pool.submit(self._run_chunk, c, params, abort) for c in chunks]
      done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
      for future in futures:  # The first failure in input order, among those that failed.
        if future in done and future.exception() is not None and not isinstance(future.exception(), _Aborted):
          raise future.exception()
      results = [f.result() for f in futures]
      failed = False
      return results
    finally:
      if failed:
        abort.set()
      pool.shutdown(wait=not failed, cancel_futures=failed)
