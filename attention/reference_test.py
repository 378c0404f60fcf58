"""The log-space reference against an explicit stick product, finite differences and the edge cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention import ops, reference
from attention.reference import (
  AttentionInputError,
  stick_breaking_attention_reference,
  stick_breaking_bruteforce,
)


def _inputs(b, t, n, kh, d, seed=0, scale=3.0):
  r = np.random.default_rng(seed)
  # logits scaled so that some betas are ~1 and some ~0
  return (
    r.normal(size=(b, t, n, d)) * scale,
    r.normal(size=(b, t, kh, d)) * scale,
    r.normal(size=(b, t, kh, d)),
  )


def _x64():
  # `jax.enable_x64(True)` in current JAX; `jax.experimental.enable_x64()` in older releases
  if hasattr(jax, 'enable_x64'):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64

  return enable_x64()


@pytest.mark.parametrize('attend_current', [False, True])
def test_matches_explicit_stick_product(attend_current):
  q, k, v = _inputs(2, 11, 4, 2, 8)
  seg = np.array([[0] * 5 + [1] * 6, [0] * 11])
  o, rem = stick_breaking_attention_reference(
    jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32), jnp.asarray(v, jnp.float32),
    segment_ids=jnp.asarray(seg), attend_current=attend_current,
  )  # fmt: skip
  ob, rb = stick_breaking_bruteforce(q, k, v, segment_ids=seg, attend_current=attend_current)
  np.testing.assert_allclose(o, ob, atol=2e-6, rtol=2e-6)
  np.testing.assert_allclose(rem, rb, atol=1e-6)


def test_weights_and_remainder_sum_to_one():
  q, k, _ = _inputs(1, 9, 2, 2, 8, seed=1)
  d = 8
  # with v = identity rows (one-hot keys), o reads the attention weights themselves
  v = np.zeros((1, 9, 2, 9))
  v[0, np.arange(9), :, np.arange(9)] = 1.0
  kq = np.concatenate([k, np.zeros((1, 9, 2, 1))], -1)
  qq = np.concatenate([q, np.zeros((1, 9, 2, 1))], -1)
  o, rem = stick_breaking_attention_reference(
    jnp.asarray(qq, jnp.float32), jnp.asarray(kq, jnp.float32), jnp.asarray(v, jnp.float32), scale=d**-0.5
  )
  np.testing.assert_allclose(np.sum(o, -1) + rem, 1.0, atol=1e-6)
  # the stick is causal: query j puts no weight on keys i >= j
  w = np.asarray(o)[0, :, 0]
  assert np.all(np.triu(w) == 0.0)


def test_gradients_match_finite_differences_float64():
  with _x64():
    q, k, v = (jnp.asarray(x, jnp.float64) for x in _inputs(1, 6, 2, 1, 4, seed=2, scale=1.5))
    r = np.random.default_rng(3)
    cto, ctr = jnp.asarray(r.normal(size=q.shape)), jnp.asarray(r.normal(size=q.shape[:3]))

    def loss(q, k, v):
      o, rem = stick_breaking_attention_reference(q, k, v)
      return jnp.sum(o * cto) + jnp.sum(rem * ctr)

    grads = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
    eps = 1e-6
    for arg, g in enumerate(grads):
      for idx in [(0, 1, 0, 0), (0, 3, 0, 2), (0, 5, 0, 3)]:
        if arg == 0:
          idx = idx[:2] + (1,) + idx[3:]
        args = [q, k, v]
        plus = list(args)
        minus = list(args)
        plus[arg] = args[arg].at[idx].add(eps)
        minus[arg] = args[arg].at[idx].add(-eps)
        fd = (loss(*plus) - loss(*minus)) / (2 * eps)
        np.testing.assert_allclose(g[idx], fd, rtol=1e-6, atol=1e-9)


def test_first_position_and_extreme_logits():
  q, k, v = (jnp.asarray(x, jnp.float32) for x in _inputs(1, 16, 2, 2, 8, seed=4))
  o, rem = stick_breaking_attention_reference(q, k, v)
  np.testing.assert_array_equal(o[:, 0], 0.0)
  np.testing.assert_array_equal(rem[:, 0], 1.0)
  # logits of +-60: the stick is used up at once (+60) or not at all (-60); nothing overflows
  for sign in (1.0, -1.0):
    qq = jnp.ones((1, 8, 1, 4)) * np.sqrt(60.0 * 2.0)
    kk = sign * jnp.ones((1, 8, 1, 4)) * np.sqrt(60.0 * 2.0) / 2.0
    o, rem = stick_breaking_attention_reference(qq, kk, jnp.ones((1, 8, 1, 4)), scale=0.5)
    g = jax.grad(lambda q: jnp.sum(stick_breaking_attention_reference(q, kk, kk, scale=0.5)[0]))(qq)
    assert np.all(np.isfinite(o)) and np.all(np.isfinite(rem)) and np.all(np.isfinite(g))
    want_rem = 0.0 if sign > 0 else 1.0
    np.testing.assert_allclose(rem[0, 1:, 0], want_rem, atol=1e-6)


def test_packed_batch_equals_separate_sequences():
  q, k, v = (jnp.asarray(x, jnp.float32) for x in _inputs(1, 12, 2, 1, 8, seed=5))
  seg = jnp.asarray([[0] * 4 + [1] * 8])
  o, rem = stick_breaking_attention_reference(q, k, v, segment_ids=seg)
  for sl in (slice(0, 4), slice(4, 12)):
    os_, rs = stick_breaking_attention_reference(q[:, sl], k[:, sl], v[:, sl])
    np.testing.assert_allclose(o[:, sl], os_, atol=1e-6)
    np.testing.assert_allclose(rem[:, sl], rs, atol=1e-6)


def test_decoding_offsets_equal_full_rows():
  q, k, v = (jnp.asarray(x, jnp.float32) for x in _inputs(2, 10, 2, 2, 8, seed=6))
  o, rem = stick_breaking_attention_reference(q, k, v)
  cache_k = jnp.pad(k, ((0, 0), (0, 6), (0, 0), (0, 0)), constant_values=7.0)  # junk past kv_length
  cache_v = jnp.pad(v, ((0, 0), (0, 6), (0, 0), (0, 0)), constant_values=7.0)
  for j in (0, 4, 9):
    oj, rj = ops.stick_breaking_attention(q[:, j : j + 1], cache_k, cache_v, q_offset=j, kv_length=j + 1)
    np.testing.assert_allclose(oj[:, 0], o[:, j], atol=1e-6)
    np.testing.assert_allclose(rj[:, 0], rem[:, j], atol=1e-6)


def test_bad_inputs_name_the_argument():
  z = jnp.zeros((1, 4, 2, 8))
  cases = [
    ((jnp.zeros((4, 2, 8)), z, z), 'q must be 4-D'),
    ((z, jnp.zeros((1, 4, 2, 4)), jnp.zeros((1, 4, 2, 4))), 'head_dim differs'),
    ((z, z, jnp.zeros((1, 4, 2, 4))), 'k and v shapes differ'),
    ((jnp.zeros((1, 4, 3, 8)), z, z), 'must divide q heads'),
    ((z, z.astype(jnp.bfloat16), z), 'dtypes differ'),
  ]
  for args, msg in cases:
    with pytest.raises(AttentionInputError, match=msg):
      reference.check_inputs(*args)
  with pytest.raises(AttentionInputError, match='implementation'):
    ops.stick_breaking_attention(z, z, z, implementation='cuda')
  with pytest.raises(AttentionInputError, match='decoding uses the xla path'):
    ops.stick_breaking_attention(z, z, z, implementation='triton', q_offset=1)
  with pytest.raises(AttentionInputError, match='segment_ids must be integers'):
    ops.stick_breaking_attention(z, z, z, segment_ids=jnp.zeros((1, 4)))


def test_dispatch_defaults_to_xla_on_cpu_and_runs_kernels_in_interpret_mode():
  assert ops.default_implementation() == (
    'xla' if jax.default_backend() == 'cpu' else ops.default_implementation()
  )
  q, k, v = (jnp.asarray(x, jnp.float32) for x in _inputs(1, 20, 2, 1, 32, seed=7, scale=1.0))
  want = stick_breaking_attention_reference(q, k, v)
  for impl in ('xla', 'triton', 'tpu'):
    got = ops.stick_breaking_attention(q, k, v, implementation=impl, interpret=True)
    np.testing.assert_allclose(got[0], want[0], atol=2e-5)
    np.testing.assert_allclose(got[1], want[1], atol=2e-6)
