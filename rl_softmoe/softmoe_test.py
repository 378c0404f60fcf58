"""Tests for rl_softmoe/softmoe.py: routing weights, equivariance, slots, parameter counts, batch isolation.

Tiny shapes (a handful of tokens of dim <= 16), no jit: every test applies the modules eagerly, so the file
needs no compile of a whole program. The layer is also checked against an independent NumPy loop.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.errors import ConfigError
from rl_softmoe import softmoe as sm

MINATAR_MAP = (10, 10, 16)  # Conv(16, 3x3, SAME) on a 10x10xC MinAtar frame.


def _normal(*shape, seed=0, scale=1.0):
  """A float32 N(0, scale^2) array from NumPy (a jax.random draw would compile a program per shape)."""
  return jnp.asarray(np.random.default_rng(seed).normal(0.0, scale, shape), jnp.float32)


def _tokens(b, m, d, seed=0):
  return _normal(b, m, d, seed=seed)


def _variables(module, x, seed=1):
  """Variables of ``module`` on ``x``: their structure from ``init`` traced abstractly, values from NumPy.

  Initialisers compile one program per shape (a second or more each on a busy 2-core machine); the tests of
  what the layer computes do not need them, so they use these N(0, 0.5^2) values instead.
  """
  shapes = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x), x)
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), jnp.float32), shapes)


def _intermediates(module, variables, x):
  _, state = module.apply(variables, x, mutable=['intermediates'])
  return {k: v[0] for k, v in state['intermediates'].items()}


def _softmax(z, axis):
  z = z - z.max(axis=axis, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=axis, keepdims=True)


def _reference(x, params, normalize, activation):
  """SoftMoE of one sample, written with loops over experts and slots (float64)."""
  x = np.asarray(x, np.float64)
  router = np.asarray(params['router'], np.float64)
  if normalize:
    x_route = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)
    router = float(params['router_scale']) * router / (np.linalg.norm(router, axis=0, keepdims=True) + 1e-6)
  else:
    x_route = x
  m, d = x.shape
  _, n, p = router.shape
  logits = np.einsum('md,dnp->mnp', x_route, router)
  dispatch = _softmax(logits, axis=0)
  combine = _softmax(logits.reshape(m, n * p), axis=1).reshape(m, n, p)
  y = np.zeros((m, d))
  for j in range(n):
    w_in, b_in = np.asarray(params['w_in'][j], np.float64), np.asarray(params['b_in'][j], np.float64)
    w_out, b_out = np.asarray(params['w_out'][j], np.float64), np.asarray(params['b_out'][j], np.float64)
    for k in range(p):
      slot = (dispatch[:, j, k : k + 1] * x).sum(axis=0)
      pre = slot @ w_in + b_in
      hidden = (
        np.maximum(pre, 0.0) if activation == 'relu' else np.asarray(jax.nn.gelu(pre, approximate=False))
      )
      out = hidden @ w_out + b_out
      y += combine[:, j, k : k + 1] * out[None, :]
  return y


# --- routing weights ----------------------------------------------------------------------------------

B, M, D, N, H = 2, 6, 4, 3, 8  # Shared by most tests so that every op compiles once; p = ceil(6/3) = 2.


def test_dispatch_sums_to_one_over_tokens_and_combine_over_all_slots():
  module = sm.SoftMoE(num_experts=N, expert_hidden=H)
  x = _tokens(B, M, D)
  inter = _intermediates(module, _variables(module, x), x)
  dispatch, combine = inter['dispatch'], inter['combine']
  assert dispatch.shape == combine.shape == (B, M, N, 2)  # [B, m, n, p].
  np.testing.assert_allclose(dispatch.sum(axis=1), np.ones((B, N, 2)), atol=1e-6)  # Per slot, over tokens.
  np.testing.assert_allclose(combine.sum(axis=(2, 3)), np.ones((B, M)), atol=1e-6)  # Per token, all slots.
  per_expert = np.asarray(combine.sum(axis=3))  # [B, m, n]: a per-expert softmax would make these 1.
  assert np.abs(per_expert - 1.0).max() > 0.1
  assert inter['slots'].shape == (B, N, 2, D) and inter['expert_hidden'].shape == (B, N, 2, H)


@pytest.mark.parametrize('normalize, activation', [(False, 'relu'), (True, 'relu'), (False, 'gelu')])
def test_matches_a_numpy_loop(normalize, activation):
  module = sm.SoftMoE(num_experts=N, expert_hidden=H, normalize_tokens=normalize, activation=activation)
  x = _tokens(B, M, D)
  variables = _variables(module, x)
  params = variables['params']
  if normalize:
    params = dict(params, router_scale=jnp.asarray(1.7, jnp.float32))
  y = module.apply({'params': params}, x)
  assert y.shape == (B, M * D)
  for b in range(B):
    np.testing.assert_allclose(
      np.asarray(y[b]).reshape(M, D), _reference(x[b], params, normalize, activation), rtol=2e-5, atol=2e-5
    )


def test_normalisation_makes_routing_depend_on_token_direction_only():
  module = sm.SoftMoE(num_experts=N, expert_hidden=H, normalize_tokens=True)
  x = _tokens(B, M, D)
  variables = _variables(module, x)
  assert variables['params']['router_scale'].shape == ()
  scaled = x * jnp.array([0.5, 3.0, 10.0, 1.0, 0.1, 2.0])[None, :, None]  # Each token rescaled on its own.
  a, b = _intermediates(module, variables, x), _intermediates(module, variables, scaled)
  np.testing.assert_allclose(a['dispatch'], b['dispatch'], atol=1e-5)
  np.testing.assert_allclose(a['combine'], b['combine'], atol=1e-5)
  plain = _variables(sm.SoftMoE(num_experts=N, expert_hidden=H), x)
  assert 'router_scale' not in plain['params']


# --- structure ----------------------------------------------------------------------------------------


@pytest.mark.parametrize('normalize', [False, True])
def test_permutation_equivariance(normalize):
  module = sm.SoftMoE(num_experts=N, expert_hidden=H, normalize_tokens=normalize, flatten_output=False)
  x = _tokens(B, M, D)
  variables = _variables(module, x)
  y = module.apply(variables, x)
  perm = jnp.array([3, 0, 5, 4, 1, 2])
  np.testing.assert_allclose(module.apply(variables, x[:, perm]), y[:, perm], rtol=1e-5, atol=1e-6)


def test_one_token_fills_every_slot_with_the_input():
  module = sm.SoftMoE(num_experts=N, expert_hidden=H, allow_more_experts_than_tokens=True)
  x = _tokens(B, 1, D)
  inter = _intermediates(module, _variables(module, x), x)
  assert inter['slots'].shape == (B, N, 1, D)  # n = 3 experts, p = ceil(1/3) = 1 slot each.
  np.testing.assert_allclose(inter['dispatch'], np.ones((B, 1, N, 1)), atol=1e-6)
  np.testing.assert_allclose(inter['slots'], jnp.broadcast_to(x[:, None, :, :], (B, N, 1, D)), atol=1e-6)


@pytest.mark.parametrize(
  'm, n, p',
  [(100, 4, 25), (121, 4, 31), (121, 1, 121), (121, 8, 16), (32, 8, 4), (10, 3, 4), (49, 4, 13), (7, 7, 1)],
)
def test_slot_count_is_ceil_tokens_over_experts(m, n, p):
  assert sm.num_slots(m, n) == p
  module = sm.SoftMoE(num_experts=n, expert_hidden=4)
  shapes = jax.eval_shape(
    lambda x: module.init(jax.random.PRNGKey(0), x), jax.ShapeDtypeStruct((1, m, 3), jnp.float32)
  )
  assert shapes['params']['router'].shape == (3, n, p)


def test_explicit_slots_and_persample_slots():
  assert sm.num_slots(100, 4, slots_per_expert=5) == 5
  assert sm.num_slots(1, 4, allow_more_experts_than_tokens=True) == 1
  module = sm.SoftMoE(num_experts=2, expert_hidden=4, slots_per_expert=5)
  x = jax.ShapeDtypeStruct((1, 3, 2), jnp.float32)
  shapes, y = jax.eval_shape(lambda x: module.init_with_output(jax.random.PRNGKey(0), x)[::-1], x)
  assert shapes['params']['router'].shape == (2, 2, 5) and y.shape == (1, 6)


def test_single_expert_has_the_parameters_of_n_experts():
  d, h, n, m = 8, 16, 4, 12
  x = jax.ShapeDtypeStruct((1, m, d), jnp.float32)
  many = sm.param_count(sm.SoftMoE(num_experts=n, expert_hidden=h), x.shape)
  one_module = sm.single_expert(h, n)
  assert one_module.num_experts == 1 and one_module.expert_hidden == n * h
  one = sm.param_count(one_module, x.shape)
  router_many, router_one = d * n * math.ceil(m / n), d * m
  assert many == router_many + n * (2 * d * h + h + d)  # 96 + 1120
  assert one == router_one + (2 * d * n * h + n * h + d)  # 96 + 1096
  assert (many - router_many) - (one - router_one) == (n - 1) * d  # Only the extra output biases differ.


def test_penultimate_variants_on_a_minatar_map():
  h, c, n, big = 128, 16, 4, 512
  d_flat = 10 * 10 * c
  expected = {  # name: (parameters, output width), counted by hand.
    'V0': (d_flat * h + h, h),
    'V1': (d_flat * big + big, big),
    'V2': (c * n * 25 + n * (2 * c * h + h + c), 100 * c),  # 100 PerConv tokens, 25 slots per expert.
    'V3': (c * 100 + (2 * c * big + big + c), 100 * c),  # One expert of 512, 100 slots.
    'V4': (d_flat * n * 1 + n * (2 * d_flat * h + h + d_flat), d_flat),  # One token of 1600, 1 slot each.
    'V5': (100 * n * 4 + n * (2 * 100 * h + h + 100), c * 100),  # 16 PerFeat tokens of 100, 4 slots each.
    'V6': (c * h + h, 100 * h),
  }
  assert expected['V0'][0] == 204_928 and expected['V2'][0] == 18_560 and expected['V3'][0] == 18_512
  x = jax.ShapeDtypeStruct((2,) + MINATAR_MAP, jnp.float32)
  for variant_id, (params, width) in expected.items():
    module = sm.penultimate(variant_id, hidden=h, scale=n, feature_shape=MINATAR_MAP)
    assert module.output_features(MINATAR_MAP) == width, variant_id
    assert sm.param_count(module, x.shape) == params, variant_id
  module = sm.penultimate('V2')
  assert jax.eval_shape(lambda x: module.init_with_output(jax.random.PRNGKey(0), x)[0], x).shape == (2, 1600)


def test_variant_names_and_ids_agree():
  assert sm.VARIANT_IDS['V3'] == 'single_expert_x4'
  a, b = sm.penultimate('V3'), sm.penultimate('single_expert_x4')
  assert a.body.num_experts == b.body.num_experts == 1 and a.body.expert_hidden == b.body.expert_hidden == 512
  v2 = sm.penultimate('softmoe', scale=8, tokenizer='per_patch', tokenizer_options={'patch_size': 2})
  assert v2.body.num_experts == 8 and v2.tokenizer.kind == 'per_patch'
  assert v2.output_features(MINATAR_MAP) == 25 * 64


# --- batch isolation and the random router -------------------------------------------------------------


@pytest.mark.parametrize('name', ['softmoe', 'single_expert_x4', 'softmoe_persample'])
def test_no_leakage_between_samples(name):
  module = sm.penultimate(name, hidden=H, scale=N, normalize_tokens=True)
  x = _normal(3, 2, 3, D)  # PerConv: 6 tokens of dim 4 per sample.
  variables = _variables(module, x)
  apply = jax.jit(module.apply)  # One compile for both calls.
  y = apply(variables, x)
  x2 = x.at[1].set(_normal(*x.shape[1:], seed=5, scale=100.0))
  y2 = apply(variables, x2)
  np.testing.assert_array_equal(y2[0], y[0])
  np.testing.assert_array_equal(y2[2], y[2])
  assert not np.allclose(y2[1], y[1])


def test_init_and_the_fixed_random_router():
  # The one test that runs the initialisers (jitted: one compile, reused for the second seed).
  module = sm.SoftMoE(num_experts=N, expert_hidden=H, random_router=True, normalize_tokens=True)
  x = _tokens(B, M, D)
  init = jax.jit(module.init)
  variables = init(jax.random.PRNGKey(1), x)
  params = variables['params']
  assert set(params) == {'router_scale', 'w_in', 'b_in', 'w_out', 'b_out'}  # No trainable router.
  assert float(params['router_scale']) == 1.0
  assert not np.any(params['b_in']) and not np.any(params['b_out'])
  assert params['w_in'].shape == (N, D, H) and params['w_out'].shape == (N, H, D)
  limit = math.sqrt(6.0 / (D + H))  # Xavier-uniform bound of every expert's d x H kernel.
  assert np.abs(params['w_in']).max() <= limit and not np.allclose(params['w_in'][0], params['w_in'][1])
  router = variables[sm.FROZEN]['router']
  assert router.shape == (D, N, 2)
  other = init(jax.random.PRNGKey(2), x)[sm.FROZEN]['router']
  assert not np.allclose(router, other)  # Differs between seeds ...
  y = module.apply(variables, x)
  np.testing.assert_array_equal(module.apply(variables, x), y)  # ... but not between calls.
  with pytest.raises(ConfigError, match="'frozen' collection"):
    module.apply({'params': params}, x)
  with pytest.raises(ConfigError, match='re-initialise'):
    module.apply(variables, _tokens(B, M + 3, D))


# --- errors -------------------------------------------------------------------------------------------


def test_more_experts_than_tokens_fails_before_compiling():
  with pytest.raises(ConfigError, match=r'more experts \(4\) than tokens \(3\)'):
    sm.num_slots(3, 4)
  module = sm.SoftMoE(num_experts=4, expert_hidden=8)
  with pytest.raises(ConfigError, match='more experts'):
    jax.jit(module.init).lower(jax.random.PRNGKey(0), jax.ShapeDtypeStruct((2, 3, 5), jnp.float32))
  with pytest.raises(ConfigError, match='more experts'):
    sm.penultimate('softmoe', scale=8, feature_shape=(2, 2, 16))  # 4 PerConv tokens, 8 experts.
  with pytest.raises(ConfigError, match='more experts'):
    sm.penultimate('softmoe_perfeat', feature_shape=(3, 3, 2))  # 2 PerFeat tokens, 4 experts.
  sm.penultimate('softmoe_persample', feature_shape=MINATAR_MAP)  # The PerSample ablation is allowed.


def test_untokenisable_feature_maps_fail_before_compiling():
  with pytest.raises(ConfigError, match='flatten=False'):
    sm.penultimate('softmoe', feature_shape=(1600,))
  with pytest.raises(ConfigError, match='does not divide'):
    sm.penultimate(
      'softmoe', tokenizer='per_patch', tokenizer_options={'patch_size': 3}, feature_shape=MINATAR_MAP
    )
  with pytest.raises(ConfigError, match='flatten=False'):
    sm.penultimate('flatten', feature_shape=(10, 10))
  with pytest.raises(ConfigError, match=r'\[batch, height, width, channels\]'):
    sm.penultimate('softmoe').init(jax.random.PRNGKey(0), jnp.zeros((2, 1600)))


def test_bad_configurations():
  x = _tokens(1, 4, 3)
  cases = [
    (sm.SoftMoE(num_experts=0), 'num_experts must be a positive int'),
    (sm.SoftMoE(num_experts=2, expert_hidden=0), 'expert_hidden must be a positive int'),
    (sm.SoftMoE(num_experts=2, activation='tanh'), 'unknown expert activation'),
    (sm.SoftMoE(num_experts=2, slots_per_expert=0), 'slots_per_expert must be a positive int'),
  ]
  for module, message in cases:
    with pytest.raises(ConfigError, match=message):
      module.init(jax.random.PRNGKey(0), x)
  with pytest.raises(ConfigError, match=r'\[batch, tokens, dim\]'):
    sm.SoftMoE(num_experts=2).init(jax.random.PRNGKey(0), jnp.zeros((4, 3)))
  with pytest.raises(ConfigError, match='unknown penultimate variant'):
    sm.penultimate('moe')
  with pytest.raises(ConfigError, match="did you mean 'per_feat'"):
    sm.penultimate('softmoe', tokenizer='perfeat')
  with pytest.raises(ConfigError, match='unknown tokenizer_options'):
    sm.penultimate('softmoe', tokenizer_options={'patch': 2})
  with pytest.raises(ConfigError, match='flattens the feature map'):
    sm.penultimate('flatten', tokenizer='per_conv')
  with pytest.raises(ConfigError, match='scale must be a positive int'):
    sm.penultimate('flatten_x4', scale=0)
