"""One RL loop for PPO (critic), VinePPO (MC step values), GRPO and RLOO: only the advantages differ.

An iteration (research note llm.md §1.2-1.3):
  1. sample ``prompts_per_iteration`` train problems (a function of (seed, iteration)) and
     ``samples_per_prompt`` responses each at the training temperature / top-p;
  2. grade them (1 for the right number after the first '####', truncation 0);
  3. advantages [B, R]: VinePPO K rollouts from every step start (deduplicated prefixes, at most
     ``max_value_steps`` states per trajectory, A_i = r_i + V(s_{i+1}) − V(s_i), every token of a step
     shares A_i); PPO the critic's GAE with γ = λ = 1; GRPO / RLOO the group-baselined reward on every
     token; then whitened over the batch's tokens (``whiten``);
  4. ``epochs`` passes over the episodes in minibatches: the clipped policy loss + β·KL(π‖π_ref) (k3,
     clamped to [0, 10]); PPO also fits its critic (clipped value loss) on the same minibatches.

The policy, critic and their Adam states, the reference, and the iteration are one ``RLState`` pytree:
``common.checkpoint`` saves it every N iterations and a resumed run continues from the last one. All
randomness is a function of (seed, iteration, phase), so resuming reproduces the uninterrupted run.
"""

import time
from typing import Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from common import nn as nn_lib
from common.errors import ConfigError
from llm_rl import advantages as adv_lib
from llm_rl import losses, rollouts

METHODS = ('vineppo', 'ppo', 'grpo', 'rloo')
_PHASE_SAMPLE, _PHASE_MC, _PHASE_EVAL = 1, 2, 3


class ValueModel(nn.Module):
  """The critic: a copy of the policy's decoder (``return_hidden``) with a scalar head."""

  trunk: nn_lib.DecoderLM  # With return_hidden=True; its params are the subtree 'trunk'.

  @nn.compact
  def __call__(self, tokens, *, kv_start=None):
    h = self.trunk(tokens, kv_start=kv_start)
    return nn.Dense(1, kernel_init=nn.initializers.zeros, name='head')(h)[..., 0]


@struct.dataclass
class RLState:
  iteration: jax.Array
  grad_steps: jax.Array
  params: dict
  opt_state: optax.OptState
  ref_params: dict
  value_params: dict
  value_opt_state: optax.OptState


def validate(rl: ml_collections.ConfigDict) -> None:
  if rl.method not in METHODS:
    raise ConfigError(f'rl.method must be one of {list(METHODS)}, got {rl.method!r}')
  for name in (
    'iterations',
    'prompts_per_iteration',
    'samples_per_prompt',
    'epochs',
    'minibatch_size',
    'num_rollouts',
    'checkpoint_every',
    'eval_every',
  ):
    value = rl[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ConfigError(f'rl.{name} must be a positive int, got {value!r}')
  episodes = rl.prompts_per_iteration * rl.samples_per_prompt
  if episodes % rl.minibatch_size:
    raise ConfigError(
      f'rl.minibatch_size = {rl.minibatch_size} must divide the {episodes} episodes of an iteration '
      '(prompts_per_iteration x samples_per_prompt)'
    )
  if rl.method in ('grpo', 'rloo') and rl.samples_per_prompt < 2:
    raise ConfigError(
      f'{rl.method} needs rl.samples_per_prompt >= 2 (a group baseline), got {rl.samples_per_prompt}'
    )
  if not 0 < rl.temperature:
    raise ConfigError(f'rl.temperature must be > 0 (training samples), got {rl.temperature}')


def make_tx(lr: float, grad_clip: float) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(lr))


class Programs:
  """The jitted forwards and updates of one (model, layout, config)."""

  def __init__(self, model: nn_lib.DecoderLM, layout: rollouts.Layout, rl: ml_collections.ConfigDict):
    self.model, self.layout, self.rl = model, layout, rl
    self.value_model = ValueModel(model.clone(return_hidden=True))
    self.tx = make_tx(rl.learning_rate, rl.grad_clip)
    self.value_tx = make_tx(rl.value_learning_rate, rl.grad_clip)
    self.logprobs = jax.jit(self._logprobs)
    self.values = jax.jit(self._values)
    # No donation: the updates are a small part of an iteration, and undonated buffers cannot alias.
    self.policy_step = jax.jit(self._policy_step)
    self.value_step = jax.jit(self._value_step)

  def init_state(self, sft_params) -> RLState:
    # Own copies: the policy and the critic's trunk must not share buffers with the reference (a donating
    # update would delete the reference's arrays with its own).
    def copy(tree):
      return jax.tree.map(jnp.copy, tree)

    tokens = jnp.zeros((1, self.layout.length - 1), jnp.int32)
    if self.rl.method == 'ppo':
      head = self.value_model.init(jax.random.PRNGKey(0), tokens)['params']['head']
      value_params = {'trunk': copy(sft_params), 'head': head}  # The critic starts from the SFT model.
      value_opt = self.value_tx.init(value_params)
    else:
      value_params, value_opt = {}, {}
    return RLState(
      jnp.zeros((), jnp.int32),
      jnp.zeros((), jnp.int32),
      copy(sft_params),
      self.tx.init(sft_params),
      sft_params,
      value_params,
      value_opt,
    )

  def _logits(self, params, tokens, kv_start):
    return self.layout.forward_slice(self.model.apply({'params': params}, tokens[:, :-1], kv_start=kv_start))

  def _logprobs(self, params, tokens, kv_start):
    logits = self._logits(params, tokens, kv_start)
    return losses.token_logprobs(logits, tokens[:, self.layout.prompt_len :])

  def _values(self, value_params, tokens, kv_start):
    out = self.value_model.apply({'params': value_params}, tokens[:, :-1], kv_start=kv_start)
    return self.layout.forward_slice(out)

  def _policy_step(self, params, opt_state, batch):
    rl = self.rl

    def loss_fn(p):
      logits = self._logits(p, batch['tokens'], batch['kv_start'])
      return losses.total_loss(
        logits,
        batch['tokens'][:, self.layout.prompt_len :],
        batch['logp_old'],
        batch['advantages'],
        batch['mask'],
        logp_ref=batch['logp_ref'] if rl.kl_coef > 0 else None,
        clip_eps=rl.clip_eps,
        kl_coef=rl.kl_coef,
        kl_estimator=rl.kl_estimator,
        ratio_threshold=rl.ratio_threshold,
      )

    (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = self.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, {**stats, 'grad_norm': optax.tree.norm(grads)}

  def _value_step(self, value_params, opt_state, batch):
    def loss_fn(p):
      values = self._values(p, batch['tokens'], batch['kv_start'])
      return losses.value_loss(
        values, batch['returns'], batch['mask'], values_old=batch['values_old'], clip_eps=self.rl.value_clip
      )

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(value_params)
    updates, opt_state = self.value_tx.update(grads, opt_state, value_params)
    stats = {'value_loss': loss, 'value_clip_fraction': stats['clip_fraction']}
    return optax.apply_updates(value_params, updates), opt_state, stats


def group_token_advantages(
  rewards: np.ndarray, mask: np.ndarray, samples_per_prompt: int, method: str
) -> np.ndarray:
  """GRPO or RLOO: the group-baselined reward on every response token (rows are prompt-major groups)."""
  grouped = jnp.asarray(rewards).reshape(-1, samples_per_prompt)
  a = adv_lib.grpo_advantages(grouped) if method == 'grpo' else adv_lib.rloo_advantages(grouped)
  return np.asarray(a).reshape(-1)[:, None] * mask


def vine_advantages(
  sampler: rollouts.Sampler, params, episodes: rollouts.Episodes, rl: ml_collections.ConfigDict, rng
) -> Tuple[np.ndarray, Dict[str, float]]:
  """VinePPO's token advantages [B, R] and diagnostics (rollouts, dedup, the telescoping residual)."""
  ends = rollouts.step_ends(
    episodes.texts, episodes.response_ids, sampler.tokenizer, merge_answer=rl.merge_answer
  )
  num_slots = max(1, max(len(e) for e in ends))
  plan = adv_lib.mc_rollout_requests(
    episodes.prompt_ids,
    episodes.response_ids,
    ends,
    num_rollouts=rl.num_rollouts,
    max_steps=rl.max_value_steps,
    num_slots=num_slots,
  )
  reqs = plan.requests
  returns, generated = sampler.mc_returns(
    params,
    [episodes.prompt_ids[r.trajectory] for r in reqs],
    [episodes.response_ids[r.trajectory][: r.prefix_length] for r in reqs],
    [episodes.problems[r.trajectory].answer for r in reqs],
    rl.num_rollouts,
    rng,
  )
  mc, step_mask = adv_lib.gather_mc_returns(jnp.asarray(returns).reshape(len(reqs), -1), plan.index)
  values = adv_lib.vine_step_values(mc, step_mask)
  num_steps = jnp.asarray(plan.num_steps)
  rewards = jnp.asarray(episodes.rewards)
  step_adv = adv_lib.vine_step_advantages(values, rewards, num_steps, value_mask=step_mask)
  ends_arr = rollouts.pad_ragged(ends, num_slots)
  token_step = adv_lib.token_step_index(jnp.asarray(ends_arr), num_steps, sampler.layout.response_len)
  token_adv = np.asarray(adv_lib.broadcast_to_tokens(step_adv, token_step)) * episodes.mask
  has_steps = np.asarray(num_steps) > 0
  residual = np.abs(np.asarray(step_adv.sum(1)) - (episodes.rewards - np.asarray(values[:, 0])))[has_steps]
  stats = {
    'mc_states_requested': float(plan.num_requested),
    'mc_states_unique': float(len(reqs)),
    'mc_rollouts': float(plan.num_samples),
    'mc_generated_tokens': float(generated),
    'value_s0_mean': float(np.asarray(values[:, 0]).mean()),
    'telescoping_max_residual': float(residual.max(initial=0.0)),
    'steps_per_response': float(np.asarray(num_steps).mean()),
  }
  return token_adv.astype(np.float32), stats


def critic_advantages(programs: Programs, state: RLState, episodes: rollouts.Episodes, batch: dict):
  values = programs.values(state.value_params, batch['tokens'], batch['kv_start'])
  adv, returns = adv_lib.critic_token_advantages(values, jnp.asarray(episodes.rewards), batch['mask'])
  return np.asarray(adv), {'values_old': values, 'returns': returns}


def iteration(
  programs: Programs,
  sampler: rollouts.Sampler,
  state: RLState,
  train_problems,
  seed: int,
) -> Tuple[RLState, Dict[str, float]]:
  """One RL iteration (see the module docstring); returns the new state and its metrics."""
  rl = programs.rl
  it = int(state.iteration)
  times, stats = {}, {}
  t0 = time.time()
  idx = rollouts.sample_indices(len(train_problems), rl.prompts_per_iteration, seed, it)
  problems = [train_problems[i] for i in idx for _ in range(rl.samples_per_prompt)]  # Prompt-major groups.
  episodes = sampler.episodes(state.params, problems, rollouts.phase_key(seed, it, _PHASE_SAMPLE))
  batch = {
    'tokens': jnp.asarray(episodes.tokens),
    'kv_start': jnp.asarray(episodes.kv_start),
    'mask': jnp.asarray(episodes.mask),
  }
  batch['logp_old'] = programs.logprobs(state.params, batch['tokens'], batch['kv_start'])
  batch['logp_ref'] = programs.logprobs(state.ref_params, batch['tokens'], batch['kv_start'])
  jax.block_until_ready(batch['logp_ref'])
  times['sample'] = time.time() - t0

  t0 = time.time()
  if rl.method == 'vineppo':
    adv, extra = vine_advantages(sampler, state.params, episodes, rl, rollouts.phase_key(seed, it, _PHASE_MC))
    stats.update(extra)
  elif rl.method == 'ppo':
    adv, extra = critic_advantages(programs, state, episodes, batch)
    batch.update(extra)
  else:
    adv = group_token_advantages(episodes.rewards, episodes.mask, rl.samples_per_prompt, rl.method)
  adv = jnp.asarray(adv)
  stats['advantage_abs_mean_raw'] = float(losses.masked_mean(jnp.abs(adv), batch['mask']))
  if rl.whiten:
    adv = adv_lib.normalize_advantages(adv, batch['mask'])
  batch['advantages'] = adv
  jax.block_until_ready(adv)
  times['values'] = time.time() - t0

  t0 = time.time()
  params, opt_state = state.params, state.opt_state
  value_params, value_opt = state.value_params, state.value_opt_state
  n = episodes.tokens.shape[0]
  step_stats = []
  for epoch in range(rl.epochs):
    order = np.random.default_rng([seed, it, 100 + epoch]).permutation(n)
    for start in range(0, n, rl.minibatch_size):
      rows = jnp.asarray(order[start : start + rl.minibatch_size])
      mb = jax.tree.map(lambda x: x[rows], batch)
      params, opt_state, s = programs.policy_step(params, opt_state, mb)
      if rl.method == 'ppo':
        value_params, value_opt, vs = programs.value_step(value_params, value_opt, mb)
        s = {**s, **vs}
      step_stats.append(s)
  step_stats = jax.device_get(step_stats)
  times['update'] = time.time() - t0
  num_steps = len(step_stats)
  stats.update({k: float(np.mean([s[k] for s in step_stats])) for k in step_stats[0]})
  stats.update(
    {
      'reward': float(episodes.rewards.mean()),
      'truncated': float(episodes.truncated.mean()),
      'response_tokens': float(episodes.mask.sum(1).mean()),
      **{f'time_{k}': v for k, v in times.items()},
    }
  )
  new = state.replace(
    iteration=state.iteration + 1,
    grad_steps=state.grad_steps + num_steps,
    params=params,
    opt_state=opt_state,
    value_params=value_params,
    value_opt_state=value_opt,
  )
  return new, stats


def accuracy(sampler: rollouts.Sampler, params, problems, seed: int) -> float:
  """Greedy pass@1 on ``problems``."""
  eps = sampler.episodes(params, problems, rollouts.phase_key(seed, _PHASE_EVAL), greedy=True)
  return float(eps.rewards.mean())
