"""The training layout, step offsets in tokens, grading of sampled episodes and MC rollouts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import nn as nn_lib
from common.errors import ConfigError
from common.tokenizers import CharTokenizer
from llm_rl import rollouts, tasks

TOK = CharTokenizer(tasks.ALPHABET)
LAYOUT = rollouts.Layout(prompt_len=96, response_len=24)
PROBLEMS = tasks.make_problems(3, seed=5, max_steps=2)


@pytest.fixture(scope='module')
def sampler():
  model = nn_lib.DecoderLM(vocab_size=TOK.vocab_size, num_layers=1, d_model=16, num_heads=2, mlp_dim=32)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params']
  return rollouts.Sampler(model, TOK, LAYOUT, temperature=1.0, top_p=1.0, batch_size=8), params


def test_step_ends_in_tokens_with_eos_on_the_last_step():
  text = '3*4=12\n12+1=13\n#### 13'
  ids = TOK.encode(text) + [TOK.eos_id]
  assert rollouts.step_ends([text], [ids], TOK, merge_answer=False) == [[7, 15, len(ids)]]
  assert rollouts.step_ends([text], [ids], TOK, merge_answer=True) == [[7, len(ids)]]
  # No text: one step covering the eos; no tokens: no step.
  assert rollouts.step_ends(['', ''], [[TOK.eos_id], []], TOK, merge_answer=True) == [[1], []]
  np.testing.assert_array_equal(rollouts.token_starts(ids[-3:], TOK), [0, 1, 2])


def test_lay_out_puts_the_response_at_a_fixed_column_and_grades_it(sampler):
  s, _ = sampler
  prompts = [s.prompt_ids(p) for p in PROBLEMS[:2]]
  good = TOK.encode(tasks.format_target(PROBLEMS[0])) + [TOK.eos_id]
  cut = TOK.encode(tasks.format_target(PROBLEMS[1]))[:5]
  eps = s.lay_out(PROBLEMS[:2], prompts, [good, cut], np.array([False, True]))
  assert eps.tokens.shape == (2, LAYOUT.length) and eps.mask.shape == (2, LAYOUT.response_len)
  assert eps.tokens[0, LAYOUT.prompt_len - 1] == prompts[0][-1]
  assert eps.tokens[0, eps.kv_start[0]] == TOK.bos_id
  assert eps.tokens[0, LAYOUT.prompt_len : LAYOUT.prompt_len + len(good)].tolist() == good
  assert eps.mask[0].sum() == len(good) and eps.mask[1].sum() == 5
  assert eps.rewards.tolist() == [1.0, 0.0] and eps.texts[0] == tasks.format_target(PROBLEMS[0])


def test_a_long_prompt_is_a_config_error(sampler):
  s, _ = sampler
  small = rollouts.Sampler(s.model, TOK, rollouts.Layout(10, 8), temperature=1.0, top_p=1.0, batch_size=4)
  with pytest.raises(ConfigError, match='more than prompt_len = 10'):
    small.prompt_ids(PROBLEMS[0])


def test_episodes_and_mc_rollouts_respect_the_budget(sampler):
  s, params = sampler
  eps = s.episodes(params, PROBLEMS, jax.random.PRNGKey(1))
  assert eps.mask.sum(1).max() <= LAYOUT.response_len
  assert all(len(r) <= LAYOUT.response_len for r in eps.response_ids)
  assert set(eps.rewards.tolist()) <= {0.0, 1.0}
  prefixes = [eps.response_ids[0][:3], []]
  returns, generated = s.mc_returns(
    params, eps.prompt_ids[:2], prefixes, [p.answer for p in PROBLEMS[:2]], 3, jax.random.PRNGKey(2)
  )
  assert returns.shape == (2, 3) and generated <= 3 * (LAYOUT.response_len - 3) + 3 * LAYOUT.response_len
  with pytest.raises(ValueError, match='leaves no budget'):
    s.mc_returns(params, eps.prompt_ids[:1], [[5] * LAYOUT.response_len], [1], 2, jax.random.PRNGKey(2))


def test_sample_indices_depend_only_on_seed_and_iteration():
  a = rollouts.sample_indices(100, 8, 0, 3)
  np.testing.assert_array_equal(a, rollouts.sample_indices(100, 8, 0, 3))
  assert not np.array_equal(a, rollouts.sample_indices(100, 8, 0, 4))
