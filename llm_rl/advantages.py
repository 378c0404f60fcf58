r"""Advantage estimators for LLM reasoning RL: VinePPO's Monte-Carlo step values, a critic's GAE, GRPO, RLOO.

A response of T tokens is split into n reasoning steps (lines, for the ArithChain task). It has n + 1 states:
s_0 (the prompt alone), s_i (the prompt plus steps 0..i-1) and the terminal state s_n. The reward is binary
and sits on the last step: r_i = 0 for i < n - 1 and r_{n-1} = R (research note
`../shared/research/llm.md` §1.2 items 2-3). Shapes used throughout:

    B trajectories, S step slots (S >= every n), T response tokens, K MC rollouts per state,
    P prompts × G samples per prompt (GRPO / RLOO).

VinePPO (Kazemnejad et al. 2024, arXiv:2410.01679; the official
`math_episode_generator_with_mc_advantages.py`, summarised in llm.md §1.2 items 4-7):

    V̂(s_i) = (1/K) Σ_k R^(k)(s_i)                  K rollouts sampled from s_i, each graded like an episode
    V(s_n) = 0                                       terminal, never estimated
    A_i    = r_i + V̂(s_{i+1}) − V̂(s_i)              γ = 1
    Σ_{i<n} A_i = R − V̂(s_0)                         (telescoping; tested)

and every token of step i gets A_i (`broadcast_to_tokens`). States the per-trajectory cap left without an
estimate are filled backwards with V(s_i) = r_i + V(s_{i+1}), the trajectory's own return (llm.md §1.2
item 6; `fill_missing_values`). Identical prefixes are sampled once and their returns shared
(`mc_rollout_requests`, llm.md §1.2 item 4).

PPO with a critic (llm.md §1.3): GAE with γ = 1, λ = 1, so every token's return is R and its advantage
R − V_t (`critic_token_advantages`, through `common.ppo.gae`).

GRPO (Shao et al. 2024, arXiv:2402.03300, §4.1.2): Â = (r − mean_group) / (std_group + eps) on every token.
RLOO (Ahmadian et al. 2024, arXiv:2402.14740; Kool et al. 2019): Â_i = r_i − mean_{j≠i} r_j.

Batch whitening (`normalize_advantages`): the official trainer's `whiten_advantages: true` (llm.md §1.3),
a masked mean and population variance over every valid token of the batch, (A − μ) · rsqrt(σ² + eps).

Everything except `mc_rollout_requests` (pure Python, host side) and `mc_value_estimate` (NumPy or JAX) is
jittable with fixed shapes and masks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from common import ppo

__all__ = [
  'MCRequest',
  'MCRequestPlan',
  'broadcast_to_tokens',
  'critic_token_advantages',
  'fill_missing_values',
  'gather_mc_returns',
  'grpo_advantages',
  'mc_rollout_requests',
  'mc_value_estimate',
  'normalize_advantages',
  'rloo_advantages',
  'token_step_index',
  'vine_step_advantages',
  'vine_step_values',
]


def _float(x) -> jax.Array:
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


# --------------------------------------------------------------------------- #
# VinePPO: Monte-Carlo values of intermediate states.
# --------------------------------------------------------------------------- #


def mc_value_estimate(samples):
  r"""V̂ = (1/K) Σ_k samples[..., k]: the Monte-Carlo value of a state from K rollout returns (last axis).

  Unbiased for V = E[R | s]; for a 0/1 reward with success probability V its standard deviation is
  √(V(1 − V)/K) (≤ 0.167 for K = 9; llm.md §4.1 (b)). Works on NumPy arrays (host-side analyses, the
  pure-NumPy tests) and on JAX arrays (inside jit), returning the same kind.
  """
  if isinstance(samples, jax.Array):
    return jnp.mean(_float(samples), axis=-1)
  samples = np.asarray(samples)
  return np.mean(samples.astype(np.promote_types(samples.dtype, np.float32)), axis=-1)


def vine_step_values(mc_returns, step_mask) -> jax.Array:
  r"""V̂(s_i) for every estimated state: the mean of its K rollout returns; 0 where `step_mask` is False.

  Args:
    mc_returns: [B, S, K] returns of the K rollouts sampled from the state at the start of step i.
    step_mask: [B, S] bool, True where state s_i was estimated (i < min(n, cap)). The terminal state
      s_n is never estimated: its value is 0 by definition and `vine_step_advantages` supplies it.

  Returns:
    [B, S] values, 0 at unestimated slots.
  """
  mc_returns, step_mask = jnp.asarray(mc_returns), jnp.asarray(step_mask)
  chex.assert_rank([mc_returns, step_mask], [3, 2])
  chex.assert_equal_shape_prefix([mc_returns, step_mask], 2)
  return jnp.where(step_mask, mc_value_estimate(_float(mc_returns)), 0.0)


def _step_rewards(rewards, num_steps, num_slots: int, dtype) -> jax.Array:
  """[B, S] per-step rewards: the terminal reward on step n − 1, 0 elsewhere (llm.md §1.2 item 2)."""
  idx = jnp.arange(num_slots)[None, :]
  return jnp.where(idx == num_steps[:, None] - 1, rewards[:, None].astype(dtype), 0.0)


def fill_missing_values(values, value_mask, rewards, num_steps) -> jax.Array:
  r"""Fills unestimated states backwards: V(s_i) = r_i + V(s_{i+1}), V(s_n) = 0 (γ = 1).

  The official generator caps MC estimation at `max_step_for_value_estimation` states per trajectory and
  fills the rest this way (llm.md §1.2 item 6). With the reward on the last step only, a filled state at or
  after the cap gets the trajectory's own return R, so its step advantage is 0. Estimated states keep
  their value; slots i ≥ n become 0.

  Args:
    values: [B, S] estimated values (anything at unestimated slots).
    value_mask: [B, S] bool, True where `values` holds an estimate.
    rewards: [B] terminal rewards R.
    num_steps: [B] int, the number of steps n ≤ S.

  Returns:
    [B, S] values with every state i < n defined.
  """
  values, value_mask = _float(values), jnp.asarray(value_mask)
  rewards, num_steps = jnp.asarray(rewards), jnp.asarray(num_steps)
  chex.assert_rank([values, value_mask, rewards, num_steps], [2, 2, 1, 1])
  chex.assert_equal_shape([values, value_mask])
  chex.assert_equal_shape_prefix([values, rewards, num_steps], 1)
  num_slots = values.shape[1]
  step_r = _step_rewards(rewards, num_steps, num_slots, values.dtype)
  live = jnp.arange(num_slots)[None, :] < num_steps[:, None]

  def step(next_value, x):
    value, known, r, alive = x
    value = jnp.where(alive, jnp.where(known, value, r + next_value), 0.0)
    return value, value

  xs = (values.T, value_mask.T, step_r.T, live.T)  # Scan over the step axis, all trajectories at once.
  _, filled = jax.lax.scan(step, jnp.zeros(values.shape[0], values.dtype), xs, reverse=True)
  return filled.T


def vine_step_advantages(values, rewards, num_steps, *, value_mask=None) -> jax.Array:
  r"""Step advantages A_i = r_i + V(s_{i+1}) − V(s_i) with γ = 1, V(s_n) = 0 (llm.md §1.2 item 6).

  A middle step gets V(s_{i+1}) − V(s_i), the last step R − V(s_{n−1}); Σ_{i<n} A_i = R − V(s_0).

  Args:
    values: [B, S] V(s_i) for i < n (e.g. `vine_step_values`); slots i ≥ n are ignored.
    rewards: [B] terminal rewards R.
    num_steps: [B] int, the number of steps n (0 ≤ n ≤ S; n = 0 gives an all-zero row).
    value_mask: optional [B, S] bool; where False (and i < n) the value is filled by
      `fill_missing_values` first (the per-trajectory step cap).

  Returns:
    [B, S] advantages, 0 at slots i ≥ n.
  """
  values, rewards, num_steps = _float(values), jnp.asarray(rewards), jnp.asarray(num_steps)
  chex.assert_rank([values, rewards, num_steps], [2, 1, 1])
  chex.assert_equal_shape_prefix([values, rewards, num_steps], 1)
  if value_mask is not None:
    values = fill_missing_values(values, value_mask, rewards, num_steps)
  num_slots = values.shape[1]
  idx = jnp.arange(num_slots)[None, :]
  n = num_steps[:, None]
  next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
  next_values = jnp.where(idx + 1 < n, next_values, 0.0)  # V(s_n) = 0: terminal.
  step_r = _step_rewards(rewards, num_steps, num_slots, values.dtype)
  return jnp.where(idx < n, step_r + next_values - values, 0.0)


def token_step_index(step_ends, num_steps, num_tokens: int) -> jax.Array:
  r"""[B, T] step index of every response token from the steps' end offsets; −1 after the last step.

  Token t belongs to step i when step_ends[i − 1] ≤ t < step_ends[i] (step_ends[−1] = 0). Offsets are in
  tokens (characters for a character tokenizer), so the EOS token belongs to the last step when the last
  end counts it: the official code gives EOS the last token's advantage (llm.md §1.2 item 7).

  Args:
    step_ends: [B, S] int, exclusive end offset of each step in the response, increasing over the first
      n entries (later entries are ignored).
    num_steps: [B] int, n.
    num_tokens: T.
  """
  step_ends, num_steps = jnp.asarray(step_ends), jnp.asarray(num_steps)
  chex.assert_rank([step_ends, num_steps], [2, 1])
  num_slots = step_ends.shape[1]
  live = jnp.arange(num_slots)[None, :] < num_steps[:, None]
  big = jnp.iinfo(jnp.int32).max
  ends = jnp.where(live, step_ends, big).astype(jnp.int32)  # Dead slots never end before a token.
  t = jnp.arange(num_tokens)[None, :, None]
  index = jnp.sum(ends[:, None, :] <= t, axis=-1)  # Steps finished before token t.
  return jnp.where(index < num_steps[:, None], index, -1).astype(jnp.int32)


def broadcast_to_tokens(step_values, token_step) -> jax.Array:
  r"""Token values from step values: out[b, t] = step_values[b, token_step[b, t]], 0 where token_step < 0.

  Every token of a step shares its step's advantage (llm.md §1.2 item 7). Indices ≥ S also give 0.

  Args:
    step_values: [B, S], e.g. `vine_step_advantages`.
    token_step: [B, T] int step index of each token, −1 for padding.

  Returns:
    [B, T].
  """
  step_values, token_step = jnp.asarray(step_values), jnp.asarray(token_step)
  chex.assert_rank([step_values, token_step], [2, 2])
  chex.assert_equal_shape_prefix([step_values, token_step], 1)
  num_slots = step_values.shape[1]
  valid = (token_step >= 0) & (token_step < num_slots)
  gathered = jnp.take_along_axis(step_values, jnp.clip(token_step, 0, num_slots - 1), axis=1)
  return jnp.where(valid, gathered, jnp.zeros((), step_values.dtype))


# --------------------------------------------------------------------------- #
# VinePPO: which states to roll out from (host side, pure Python).
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class MCRequest:
  """One group of K rollouts: continue prompt[trajectory] + response[trajectory][:prefix_length]."""

  trajectory: int  # The first trajectory (in batch order) whose state needs this prefix.
  step: int  # Its step index i: the state at the start of step i.
  prefix_length: int  # Response tokens (or characters) kept; 0 for the prompt state s_0.


@dataclasses.dataclass(frozen=True)
class MCRequestPlan:
  """Deduplicated MC rollout requests and the map back to [B, S] step slots.

  Attributes:
    requests: the G unique request groups, in first-seen order (trajectory-major, then step).
    index: [B, S] int32, the request group of state s_i of trajectory b, or −1 (no estimate: i ≥ n or
      beyond the cap). Feed it with the [G, K] group returns to `gather_mc_returns`.
    num_steps: [B] int32, the number of steps n of each trajectory.
    num_requested: (trajectory, step) states needing an estimate before deduplication (≥ G).
    num_rollouts: K, rollouts per group.
  """

  requests: list[MCRequest]
  index: np.ndarray
  num_steps: np.ndarray
  num_requested: int
  num_rollouts: int

  @property
  def num_samples(self) -> int:
    """Rollouts to generate after deduplication: K · G."""
    return self.num_rollouts * len(self.requests)


def _key(x) -> str | tuple:
  return x if isinstance(x, str) else tuple(int(v) for v in x)


def mc_rollout_requests(
  prompts: Sequence[str | Sequence[int]],
  responses: Sequence[str | Sequence[int]],
  step_ends: Sequence[Sequence[int]],
  *,
  num_rollouts: int,
  max_steps: int | None = None,
  num_slots: int | None = None,
) -> MCRequestPlan:
  r"""The states to estimate by MC rollouts, with identical prefixes sampled once (llm.md §1.2 item 4).

  Trajectory b with n steps needs V̂(s_i) for i = 0 .. min(n, max_steps) − 1: s_0 is the prompt alone
  (prefix length 0) and s_i the prompt plus the response up to the end of step i − 1 (prefix length
  step_ends[b][i − 1]). The terminal state s_n is never requested (its value is 0). Two states with the same
  prompt and the same response prefix (the G samples of one prompt all share s_0; identical first lines
  share s_1, ...) form one request group whose K returns are shared.

  Args:
    prompts: [B] prompt of each trajectory (text or token ids); equal prompts must compare equal.
    responses: [B] response of each trajectory (text or token ids).
    step_ends: [B] lists of the exclusive end offset of each step in the response (prefix lengths),
      strictly increasing, positive, the last ≤ len(response). n = len(step_ends[b]).
    num_rollouts: K ≥ 1.
    max_steps: cap on estimated states per trajectory (the official GSM8K runs use 25); None = no cap.
    num_slots: S, the width of `index`; default: the largest n (at least 1).

  Returns:
    The `MCRequestPlan`.

  Raises:
    ValueError: inconsistent lengths, bad offsets, K < 1, max_steps < 1, or n > num_slots.
  """
  if not len(prompts) == len(responses) == len(step_ends):
    raise ValueError(
      f'prompts, responses and step_ends differ in length: {len(prompts)}, {len(responses)}, {len(step_ends)}'
    )
  if num_rollouts < 1:
    raise ValueError(f'num_rollouts must be >= 1, got {num_rollouts}')
  if max_steps is not None and max_steps < 1:
    raise ValueError(f'max_steps must be >= 1 or None, got {max_steps}')
  num_steps = np.array([len(e) for e in step_ends], np.int32)
  width = max(1, int(num_steps.max(initial=0))) if num_slots is None else num_slots
  if num_steps.size and num_steps.max() > width:
    raise ValueError(f'a trajectory has {num_steps.max()} steps, more than num_slots={width}')

  index = np.full((len(prompts), width), -1, np.int32)
  groups: dict[tuple, int] = {}
  requests: list[MCRequest] = []
  num_requested = 0
  for b, (prompt, response, ends) in enumerate(zip(prompts, responses, step_ends)):
    ends = [int(e) for e in ends]
    if any(e <= 0 for e in ends) or any(x >= y for x, y in zip(ends, ends[1:])):
      raise ValueError(f'step_ends of trajectory {b} must be positive and strictly increasing, got {ends}')
    if ends and ends[-1] > len(response):
      raise ValueError(f'trajectory {b}: last step ends at {ends[-1]} beyond the response ({len(response)})')
    prompt_key = _key(prompt)
    num_states = len(ends) if max_steps is None else min(len(ends), max_steps)
    for i in range(num_states):
      prefix = 0 if i == 0 else ends[i - 1]
      key = (prompt_key, _key(response[:prefix]))
      if key not in groups:
        groups[key] = len(requests)
        requests.append(MCRequest(trajectory=b, step=i, prefix_length=prefix))
      index[b, i] = groups[key]
      num_requested += 1
  return MCRequestPlan(requests, index, num_steps, num_requested, num_rollouts)


def gather_mc_returns(group_returns, index) -> tuple[jax.Array, jax.Array]:
  r"""Spreads the [G, K] returns of the request groups onto [B, S, K] step slots (jittable).

  Args:
    group_returns: [G, K] rollout returns, row g for `plan.requests[g]`.
    index: [B, S] int, `plan.index` (−1: no estimate).

  Returns:
    (mc_returns [B, S, K], 0 at unestimated slots; step_mask [B, S] bool) for `vine_step_values`.
  """
  group_returns, index = _float(group_returns), jnp.asarray(index)
  chex.assert_rank([group_returns, index], [2, 2])
  step_mask = index >= 0
  gathered = group_returns[jnp.clip(index, 0, group_returns.shape[0] - 1)]
  return jnp.where(step_mask[..., None], gathered, 0.0), step_mask


# --------------------------------------------------------------------------- #
# PPO with a critic.
# --------------------------------------------------------------------------- #


def critic_token_advantages(values, rewards, mask, *, gamma=1.0, lam=1.0) -> tuple[jax.Array, jax.Array]:
  r"""Per-token GAE for a response with a terminal reward, through `common.ppo.gae` (vmapped over B).

  Token t is an action; values[b, t] is the critic's V of the state in which token t is chosen (prompt plus
  tokens before t). The reward R sits on the last valid token and the episode ends there:

      r_t = R · [t = last],  δ_t = r_t + γ V_{t+1} − V_t  (V after the last token = 0),
      Â_t = Σ_{l≥0} (γλ)^l δ_{t+l},  returns_t = Â_t + V_t.

  With the official γ = 1, λ = 1 (llm.md §1.3, `lam1.jsonnet`) this is returns_t = R and Â_t = R − V_t.

  Args:
    values: [B, T] critic predictions (treated as constants).
    rewards: [B] terminal rewards R.
    mask: [B, T] bool, the valid response tokens: one contiguous run per row (right or left padding).
    gamma: γ in [0, 1].
    lam: λ in [0, 1].

  Returns:
    (advantages [B, T], returns [B, T]), 0 at padding.
  """
  values, rewards, mask = _float(values), jnp.asarray(rewards), jnp.asarray(mask).astype(bool)
  chex.assert_rank([values, rewards, mask], [2, 1, 2])
  chex.assert_equal_shape([values, mask])
  chex.assert_equal_shape_prefix([values, rewards], 1)
  num_tokens = values.shape[1]
  last = num_tokens - 1 - jnp.argmax(mask[:, ::-1], axis=1)  # The last valid token of each row.
  is_last = jnp.arange(num_tokens)[None, :] == last[:, None]
  token_rewards = jnp.where(is_last, rewards[:, None].astype(values.dtype), 0.0)
  values = jnp.where(mask, values, 0.0)  # Padding after the end contributes δ = 0.

  def one(r, v, done):
    return ppo.gae(r, v, jnp.zeros((), v.dtype), gamma=gamma, lam=lam, dones=done)

  advantages, returns = jax.vmap(one)(token_rewards, values, is_last)
  return jnp.where(mask, advantages, 0.0), jnp.where(mask, returns, 0.0)


# --------------------------------------------------------------------------- #
# Critic-free group baselines.
# --------------------------------------------------------------------------- #


def grpo_advantages(rewards, *, eps: float = 1e-6, std_normalize: bool = True, ddof: int = 0) -> jax.Array:
  r"""GRPO's group-normalised outcome advantage (Shao et al. 2024, §4.1.2), one value per sample.

      Â_{p,g} = (r_{p,g} − mean_g r_{p,·}) / (std_g r_{p,·} + eps)

  `std` is the POPULATION standard deviation by default (ddof = 0, divide by G); ddof = 1 gives the
  Bessel-corrected one (torch.Tensor.std's default, divide by G − 1). A group whose rewards are all equal
  gets Â = 0 (no NaN). `std_normalize=False` keeps only the mean baseline (Â = r − mean).

  Args:
    rewards: [P, G] rewards of G samples for each of P prompts.
    eps: added to the std.
    std_normalize: divide by the group std.
    ddof: 0 (population std) or 1 (sample std; needs G ≥ 2).

  Returns:
    [P, G] advantages, to be broadcast to every token of each sample.
  """
  rewards = _float(rewards)
  chex.assert_rank(rewards, 2)
  group = rewards.shape[1]
  if ddof not in (0, 1) or group - ddof < 1:
    raise ValueError(f'need ddof in (0, 1) and G > ddof, got ddof={ddof}, G={group}')
  centred = rewards - jnp.mean(rewards, axis=1, keepdims=True)
  if not std_normalize:
    return centred
  std = jnp.sqrt(jnp.sum(jnp.square(centred), axis=1, keepdims=True) / (group - ddof))
  return centred / (std + eps)


def rloo_advantages(rewards) -> jax.Array:
  r"""REINFORCE leave-one-out advantage (Ahmadian et al. 2024): each sample's baseline is the mean
  reward of the other G − 1 samples of its prompt.

      Â_{p,g} = r_{p,g} − (Σ_j r_{p,j} − r_{p,g}) / (G − 1) = G/(G − 1) · (r_{p,g} − mean_g r_{p,·})

  Args:
    rewards: [P, G] with G ≥ 2.

  Returns:
    [P, G] advantages.
  """
  rewards = _float(rewards)
  chex.assert_rank(rewards, 2)
  group = rewards.shape[1]
  if group < 2:
    raise ValueError(f'RLOO needs at least 2 samples per prompt, got G={group}')
  others = (jnp.sum(rewards, axis=1, keepdims=True) - rewards) / (group - 1)
  return rewards - others


# --------------------------------------------------------------------------- #
# Batch whitening.
# --------------------------------------------------------------------------- #


def normalize_advantages(advantages, mask, *, eps: float = 1e-8) -> jax.Array:
  r"""Masked whitening over the whole batch: the official trainer's `whiten_advantages` (llm.md §1.3).

      μ = Σ m·A / Σ m,   σ² = Σ m·(A − μ)² / Σ m   (population variance),
      A' = (A − μ) · rsqrt(σ² + eps)  where m = 1;   A' = A (untouched) where m = 0.

  The statistics are over every valid token of the batch (not per sequence), so a long response weighs more
  than a short one. Unlike `common.ppo.normalize` ((x − μ)/(σ + eps), no mask) the eps goes inside the
  square root, as in the official `masked_whiten`. An empty mask returns the input.

  Args:
    advantages: any shape, e.g. [B, T].
    mask: bool, same shape.
  """
  advantages, mask = _float(advantages), jnp.asarray(mask).astype(bool)
  chex.assert_equal_shape([advantages, mask])
  m = mask.astype(advantages.dtype)
  count = jnp.maximum(jnp.sum(m), 1.0)
  mean = jnp.sum(m * advantages) / count
  var = jnp.sum(m * jnp.square(advantages - mean)) / count
  return jnp.where(mask, (advantages - mean) * jax.lax.rsqrt(var + eps), advantages)
