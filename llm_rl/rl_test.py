"""The RL loop: every method's iteration, VinePPO's token advantages, the reference surviving updates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import sft
from common.errors import ConfigError
from common.tokenizers import CharTokenizer
from llm_rl import rl as rl_lib
from llm_rl import rollouts, tasks
from llm_rl.configs import default

TOK = CharTokenizer(tasks.ALPHABET)
PROBLEMS = tasks.make_problems(16, seed=3, max_steps=3)


def _config(method):
  c = default.get_config('smoke')
  c.rl.method = method
  return c


@pytest.fixture(scope='module')
def setup():
  c = _config('vineppo')
  layout = rollouts.Layout(c.layout.prompt_len, c.layout.response_len)
  model = sft.make_model(c.model, TOK.vocab_size)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params']
  sampler = rollouts.Sampler(model, TOK, layout, temperature=1.0, top_p=1.0, batch_size=8)
  return model, layout, params, sampler


@pytest.mark.parametrize('method', rl_lib.METHODS)
def test_one_iteration_of_each_method(setup, method):
  model, layout, params, sampler = setup
  rl = _config(method).rl
  programs = rl_lib.Programs(model, layout, rl)
  state = programs.init_state(params)
  ref, policy = jax.tree.leaves(state.ref_params)[0], jax.tree.leaves(state.params)[0]
  assert ref.unsafe_buffer_pointer() != policy.unsafe_buffer_pointer()  # Donation-safe: no shared buffers.
  new, stats = rl_lib.iteration(programs, sampler, state, PROBLEMS, seed=0)
  assert int(new.iteration) == 1 and int(new.grad_steps) == 1  # 8 episodes, minibatch 8, one epoch.
  assert all(np.isfinite(v) for v in stats.values()), stats
  changed = any(
    not np.array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(params))
  )
  assert changed or stats['advantage_abs_mean_raw'] == 0.0
  # The reference is the start, untouched by the update (its buffers are not donated or shared).
  for a, b in zip(jax.tree.leaves(new.ref_params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  if method == 'ppo':
    assert set(new.value_params) == {'trunk', 'head'} and 'value_loss' in stats
  if method == 'vineppo':
    assert stats['mc_states_unique'] <= stats['mc_states_requested']
    assert stats['mc_rollouts'] == rl.num_rollouts * stats['mc_states_unique']


def test_vine_advantages_share_a_step_and_telescope(setup, monkeypatch):
  _, _, params, sampler = setup
  rl = _config('vineppo').rl
  rl.max_value_steps = 25
  texts = ['1+2=3\n3*4=12\n#### 12', '5-1=4\n#### 7']
  problems = [tasks.make_problems(1, 0)[0]] * 2
  prompts = [sampler.prompt_ids(p) for p in problems]
  ids = [TOK.encode(t) + [TOK.eos_id] for t in texts]
  eps = sampler.lay_out(problems, prompts, ids, np.array([False, False]))
  eps.rewards[:] = [1.0, 0.0]
  values_seen = {}

  def fake_mc_returns(params, prompts, prefixes, answers, k, rng):
    out = np.array([[(len(p) % 7) / 7.0] * k for p in prefixes], np.float32)  # A value per prefix length.
    values_seen.update({len(p): v[0] for p, v in zip(prefixes, out)})
    return out, 0

  monkeypatch.setattr(sampler, 'mc_returns', fake_mc_returns)
  adv, stats = rl_lib.vine_advantages(sampler, params, eps, rl, jax.random.PRNGKey(0))
  v = values_seen
  # Trajectory 0 (merge_answer): steps end at 6 and 21 (the answer joins the 2nd step); V(s0) = v[0].
  np.testing.assert_allclose(adv[0, :6], v[6] - v[0], atol=1e-6)
  np.testing.assert_allclose(adv[0, 6:21], 1.0 - v[6], atol=1e-6)  # ... and the eos (token 20).
  assert (adv[0, 21:] == 0).all()
  np.testing.assert_allclose(adv[1, :13], 0.0 - v[0], atol=1e-6)  # One step: R - V(s0).
  assert stats['telescoping_max_residual'] < 1e-6 and stats['mc_states_unique'] == 2  # s0 shared.


def test_group_advantages():
  mask = np.ones((4, 3), bool)
  mask[1, 2] = False
  rloo = rl_lib.group_token_advantages(np.array([1.0, 0.0, 1.0, 1.0]), mask, 2, 'rloo')
  np.testing.assert_allclose(rloo[:, 0], [1.0, -1.0, 0.0, 0.0])
  assert rloo[1, 2] == 0.0
  grpo = rl_lib.group_token_advantages(np.array([1.0, 0.0, 1.0, 1.0]), mask, 2, 'grpo')
  np.testing.assert_allclose(grpo[:, 0], [1.0, -1.0, 0.0, 0.0], atol=1e-5)


@pytest.mark.parametrize(
  'key, value, words',
  [
    ('method', 'dpo', 'rl.method must be one of'),
    ('minibatch_size', 3, 'must divide the 8 episodes'),
    ('epochs', 0, 'rl.epochs must be a positive int'),
  ],
)
def test_bad_rl_configs(key, value, words):
  rl = _config('vineppo').rl
  rl[key] = value
  with pytest.raises(ConfigError, match=words):
    rl_lib.validate(rl)


def test_group_methods_need_groups():
  rl = _config('grpo').rl
  rl.samples_per_prompt = 1
  rl.minibatch_size = 4
  with pytest.raises(ConfigError, match='grpo needs rl.samples_per_prompt >= 2'):
    rl_lib.validate(rl)
