"""Tests for common/generate.py on a tiny random DecoderLM (CPU, a few seconds)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import generate as gen
from common import nn

VOCAB = 19
BUFFER = 40  # Length of the right-padded buffer of the naive reference.


@pytest.fixture(autouse=True)
def _full_precision():
  # On GPUs float32 matmuls may default to TF32; exact greedy comparisons need full precision.
  with jax.default_matmul_precision('float32'):
    yield


@pytest.fixture(scope='module')
def lm():
  model = nn.DecoderLM(
    vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, mlp_dim=48, rope_theta=100.0
  )
  # Random numpy weights (compiling JAX's initialisers costs seconds on CPU), larger than usual so that
  # next-token distributions are peaked and greedy choices are far from ties.
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params']
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(
    lambda a: (
      rng.standard_normal(a.shape).astype(np.float32)
      * (3.0 / np.sqrt(a.shape[0]) if len(a.shape) == 2 else 1)
    ),
    shapes,
  )
  forward = jax.jit(lambda p, t: model.apply({'params': p}, t))

  def naive(prompt, n):
    """Greedy by full recomputation (no cache): a right-padded buffer, logits read at the last real token."""
    seq = list(prompt)
    for _ in range(n):
      buf = np.zeros((1, BUFFER), np.int32)
      buf[0, : len(seq)] = seq
      seq.append(int(np.argmax(forward(params, jnp.asarray(buf))[0, len(seq) - 1])))
    return seq[len(prompt) :]

  rng = np.random.default_rng(0)
  prompts = [rng.integers(3, VOCAB, size=n).tolist() for n in (5, 1, 12, 3, 9)]
  return dict(model=model, params=params, naive=naive, prompts=prompts)


def _greedy(lm, prompts=None, **kwargs):
  kwargs.setdefault('max_new_tokens', 10)
  kwargs.setdefault('chunk', 4)
  kwargs.setdefault('length_bucket', 8)
  return gen.generate(lm['model'], lm['params'], lm['prompts'] if prompts is None else prompts, **kwargs)


def test_greedy_equals_full_recompute_for_mixed_lengths(lm):
  out = _greedy(lm)
  assert [len(o) for o in out] == [10] * 5
  for prompt, tokens in zip(lm['prompts'], out):
    assert tokens == lm['naive'](prompt, 10)


def test_left_padding_and_batching_do_not_change_results(lm):
  together = _greedy(lm)
  # Unpadded batches of one (each length compiles its own functions: two prompts only).
  for i in (1, 2):
    assert _greedy(lm, [lm['prompts'][i]], length_bucket=1)[0] == together[i]
  # Other batch sizes, chunk sizes and buckets (max_new_tokens not a multiple of chunk).
  assert _greedy(lm, batch_size=2, chunk=3, length_bucket=16, max_new_tokens=7) == [o[:7] for o in together]


def test_eos_stops_a_sequence(lm):
  full = _greedy(lm)
  eos = full[0][3]  # Make the 4th token of prompt 0 the end-of-sequence token.
  out = _greedy(lm, eos_id=eos)
  for tokens, ref in zip(out, full):
    if eos in ref:
      assert tokens == ref[: ref.index(eos) + 1]  # Ends with eos; nothing (no pad) after it.
    else:
      assert tokens == ref
  assert out[0][-1] == eos and len(out[0]) <= 4


def test_stop_fn_stops_early(lm):
  full = _greedy(lm)
  calls = []

  def stop_fn(seqs):
    calls.append([len(s) for s in seqs])
    return [len(s) >= 3 for s in seqs]

  out = _greedy(lm, stop_fn=stop_fn, chunk=2)
  # After chunk 1 (2 tokens) nobody stops; after chunk 2 (4 tokens) everybody does: the chunk is kept.
  assert out == [ref[:4] for ref in full]
  assert calls == [[2] * 5, [4] * 5]
  # Only unfinished sequences are shown to stop_fn, and a stop on one leaves the others running.
  calls.clear()
  first = lm['prompts'][0]
  out = _greedy(lm, stop_fn=lambda seqs: [s[:2] == full[0][:2] for s in seqs], chunk=2)
  assert out[lm['prompts'].index(first)] == full[0][:2]
  assert sum(len(o) == 10 for o in out) >= 3
  with pytest.raises(ValueError, match='one each'):
    _greedy(lm, stop_fn=lambda seqs: [True])


def test_temperature_sampling_is_reproducible_and_batch_independent(lm):
  kwargs = dict(max_new_tokens=12, temperature=1.0)
  a = _greedy(lm, rng=jax.random.PRNGKey(1), **kwargs)
  b = _greedy(lm, rng=jax.random.PRNGKey(1), **kwargs)
  c = _greedy(lm, rng=jax.random.PRNGKey(2), **kwargs)
  assert a == b and a != c
  # The key of prompt i at step t is fold_in(fold_in(rng, i), t): batch size and chunking do not matter.
  d = _greedy(lm, rng=jax.random.PRNGKey(1), batch_size=1, chunk=5, length_bucket=16, **kwargs)
  assert d == a
  # Temperature flattens the distribution: samples differ from greedy somewhere.
  assert a != _greedy(lm, max_new_tokens=12)
  with pytest.raises(ValueError, match='rng'):
    _greedy(lm, temperature=0.7)


def test_number_of_compiled_functions_stays_small(lm):
  rng = np.random.default_rng(5)
  prompts = [rng.integers(3, VOCAB, size=n).tolist() for n in range(1, 21)]
  model = lm['model'].clone(rope_theta=101.0)  # A model no other test compiled.
  before = gen.compiled_count()
  out = gen.generate(model, lm['params'], prompts, max_new_tokens=6, chunk=4, batch_size=8, length_bucket=8)
  # Batches (longest first) of 8 prompts: lengths 20..13, 12..5, 4..1 -> buckets 24, 16, 8: 3 prefills and
  # 3 decoding chunks (one per cache size), not one per prompt.
  assert gen.compiled_count() - before == 6
  assert len(out) == 20 and all(len(o) == 6 for o in out)
  before = gen.compiled_count()
  gen.generate(model, lm['params'], prompts[::-1], max_new_tokens=6, chunk=4, batch_size=8, length_bucket=8)
  assert gen.compiled_count() == before


def test_argument_errors(lm):
  with pytest.raises(ValueError, match='empty'):
    _greedy(lm, [[1], []])
  with pytest.raises(ValueError, match='temperature'):
    _greedy(lm, temperature=-1.0)
  assert _greedy(lm, [], max_new_tokens=3) == []
  assert _greedy(lm, [[1, 2]], max_new_tokens=0) == [[]]


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
  logits = jnp.log(jnp.array([[0.1, 0.5, 0.15, 0.25], [0.7, 0.1, 0.1, 0.1]]))
  kept = np.isfinite(np.asarray(gen.nucleus(logits, jnp.float32(0.7))))
  # Row 0 by rank: 0.5, 0.25 (0.5 before it < 0.7: kept), 0.15 (0.75 before it: dropped), 0.1 (dropped).
  np.testing.assert_array_equal(kept, [[False, True, False, True], [True, False, False, False]])
  assert np.isfinite(np.asarray(gen.nucleus(logits, jnp.float32(1.0)))).all()
  assert np.isfinite(np.asarray(gen.nucleus(logits, jnp.float32(1e-6)))).sum(-1).tolist() == [1, 1]


def test_top_p_sampling_draws_only_nucleus_tokens(lm):
  key = jax.random.PRNGKey(3)
  tiny = _greedy(lm, temperature=1.0, top_p=1e-6, rng=key)
  assert tiny == _greedy(lm)  # A nucleus of one token is the argmax.
  assert _greedy(lm, temperature=1.0, top_p=1.0, rng=key) == _greedy(lm, temperature=1.0, rng=key)
  with pytest.raises(ValueError, match='top_p'):
    _greedy(lm, temperature=1.0, top_p=0.0, rng=key)
