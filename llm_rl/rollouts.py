"""Sampling episodes and Monte-Carlo rollouts with the KV-cache sampler, on a fixed training layout.

Layout. Every training row is ``[pad.., bos, prompt, response, pad..]``: the prompt is LEFT-padded to
``prompt_len`` tokens (``kv_start`` hides the padding and RoPE positions count from the bos), so response
token j always sits at column ``prompt_len + j`` and every per-token array of the RL loss is ``[B, R]``
with R = ``response_len``. ``Layout.forward_slice`` takes the logits (or values) of the R positions that
predict the response tokens.

Episodes and MC rollouts share one sampler (``common.generate``): an MC rollout continues prompt + a
response prefix of m tokens with the REMAINING budget R − m, and is graded like an episode (truncation
scores 0). Rollouts never enter the training batch (VinePPO, research note llm.md §1.2 item 8).
"""

import dataclasses
from typing import Callable, List, Optional, Sequence, Tuple

import jax
import numpy as np

from common import generate as generate_lib
from common.errors import ConfigError
from llm_rl import tasks


@dataclasses.dataclass(frozen=True)
class Layout:
  prompt_len: int  # P: bos + prompt tokens, left-padded to this.
  response_len: int  # R: the most response tokens (eos included).

  @property
  def length(self) -> int:
    return self.prompt_len + self.response_len

  def forward_slice(self, out):
    """[B, L - 1, ...] outputs of the inputs ``tokens[:, :-1]`` → the R positions predicting the response."""
    return out[:, self.prompt_len - 1 :]


@dataclasses.dataclass
class Episodes:
  """B sampled responses laid out for training (all arrays NumPy)."""

  tokens: np.ndarray  # [B, L] int32
  kv_start: np.ndarray  # [B] int32: column of the bos.
  mask: np.ndarray  # [B, R] bool: response tokens (eos included).
  rewards: np.ndarray  # [B] float32
  truncated: np.ndarray  # [B] bool
  texts: List[str]  # Decoded responses without eos.
  response_ids: List[List[int]]
  problems: List[tasks.Problem]
  prompt_ids: List[List[int]]


class Sampler:
  """Samples continuations for a policy; grades them against problems."""

  def __init__(
    self,
    model,
    tokenizer,
    layout: Layout,
    *,
    temperature: float,
    top_p: float,
    batch_size: int,
    render: Optional[Callable[[tasks.Problem], List[int]]] = None,
    parse: str = 'marked',
  ):
    """``render``: problem → prompt token ids (default: bos + 'Q: ...\\nA:'); ``parse``: the reward's answer
    extraction ('marked' or 'last_number', ``tasks.reward``)."""
    self.model, self.tokenizer, self.layout = model, tokenizer, layout
    self.temperature, self.top_p, self.batch_size = temperature, top_p, batch_size
    self.render, self.parse = render, parse

  def prompt_ids(self, problem: tasks.Problem) -> List[int]:
    if self.render is not None:
      ids = list(self.render(problem))
    else:
      ids = [self.tokenizer.bos_id] + self.tokenizer.encode(tasks.format_prompt(problem))
    if len(ids) > self.layout.prompt_len:
      raise ConfigError(
        f'a prompt has {len(ids)} tokens, more than prompt_len = {self.layout.prompt_len}; raise prompt_len'
      )
    return ids

  def continue_(
    self,
    params,
    prompts: Sequence[List[int]],
    budgets: Sequence[int],
    rng: jax.Array,
    *,
    greedy: bool = False,
  ) -> Tuple[List[List[int]], np.ndarray]:
    """Continuations of ``prompts`` (each cut to its budget) and whether each was truncated (no eos)."""
    if not prompts:
      return [], np.zeros(0, bool)
    out = generate_lib.generate(
      self.model,
      params,
      prompts,
      max_new_tokens=max(budgets),
      temperature=0.0 if greedy else self.temperature,
      top_p=1.0 if greedy else self.top_p,
      rng=rng,
      eos_id=self.tokenizer.eos_id,
      pad_id=self.tokenizer.pad_id,
      batch_size=min(self.batch_size, len(prompts)),
      length_bucket=self.layout.prompt_len,
    )
    eos = self.tokenizer.eos_id
    cut, truncated = [], np.zeros(len(out), bool)
    for i, (ids, budget) in enumerate(zip(out, budgets)):
      ids = ids[:budget]
      truncated[i] = eos not in ids
      cut.append(ids[: ids.index(eos) + 1] if eos in ids else ids)
    return cut, truncated

  def text(self, ids: Sequence[int]) -> str:
    return self.tokenizer.decode([t for t in ids if t != self.tokenizer.eos_id])

  def episodes(
    self, params, problems: Sequence[tasks.Problem], rng: jax.Array, *, greedy: bool = False
  ) -> Episodes:
    prompts = [self.prompt_ids(p) for p in problems]
    responses, truncated = self.continue_(
      params, prompts, [self.layout.response_len] * len(prompts), rng, greedy=greedy
    )
    return self.lay_out(problems, prompts, responses, truncated)

  def lay_out(self, problems, prompts, responses, truncated) -> Episodes:
    b, lay = len(problems), self.layout
    tokens = np.full((b, lay.length), self.tokenizer.pad_id, np.int32)
    kv_start = np.zeros(b, np.int32)
    mask = np.zeros((b, lay.response_len), bool)
    rewards = np.zeros(b, np.float32)
    texts = []
    for i, (problem, p, r) in enumerate(zip(problems, prompts, responses)):
      kv_start[i] = lay.prompt_len - len(p)
      tokens[i, kv_start[i] : lay.prompt_len] = p
      tokens[i, lay.prompt_len : lay.prompt_len + len(r)] = r
      mask[i, : len(r)] = True
      texts.append(self.text(r))
      rewards[i] = tasks.reward(texts[-1], problem.answer, truncated=bool(truncated[i]), parse=self.parse)
    return Episodes(
      tokens, kv_start, mask, rewards, np.asarray(truncated), texts, list(responses), list(problems), prompts
    )

  def mc_returns(
    self,
    params,
    prompts: Sequence[List[int]],
    prefixes: Sequence[List[int]],
    answers: Sequence[int],
    num_rollouts: int,
    rng: jax.Array,
  ) -> Tuple[np.ndarray, int]:
    """[G, K] returns of K rollouts from each state prompt + prefix, and the tokens generated."""
    requests, budgets = [], []
    for p, prefix in zip(prompts, prefixes):
      budget = self.layout.response_len - len(prefix)
      if budget < 1:
        raise ValueError(f'a prefix of {len(prefix)} tokens leaves no budget of {self.layout.response_len}')
      requests += [list(p) + list(prefix)] * num_rollouts
      budgets += [budget] * num_rollouts
    outs, truncated = self.continue_(params, requests, budgets, rng)
    returns = np.zeros(len(requests), np.float32)
    for j, (ids, trunc) in enumerate(zip(outs, truncated)):
      g = j // num_rollouts
      text = self.text(list(prefixes[g]) + ids)
      returns[j] = tasks.reward(text, answers[g], truncated=bool(trunc), parse=self.parse)
    return returns.reshape(len(prompts), num_rollouts), int(sum(map(len, outs)))


def step_ends(
  texts: Sequence[str], response_ids: Sequence[List[int]], tokenizer, *, merge_answer: bool
) -> List[List[int]]:
  """Each response's step end offsets in TOKENS (a character tokenizer: characters).

  A response with no text (only eos, or nothing) is one step covering all its tokens. The eos token is
  after the last boundary, so it takes the last step's advantage (llm.md §1.2 item 7).
  """
  out = []
  for text, ids in zip(texts, response_ids):
    starts = token_starts(ids, tokenizer)
    bounds = tasks.step_boundaries(text, merge_answer=merge_answer)
    if not bounds:
      out.append([len(ids)] if ids else [])
      continue
    # A step ends at the first token whose first character is at or past the boundary.
    ends = [int(np.searchsorted(starts, b, side='left')) for b in bounds[:-1]]
    ends.append(len(ids))
    clean = []
    for e in ends:  # Tokens spanning two steps can merge boundaries: keep them strictly increasing.
      if e > (clean[-1] if clean else 0):
        clean.append(e)
    out.append(clean)  # Ends with len(ids): no boundary lies past the last token.
  return out


def token_starts(ids: Sequence[int], tokenizer) -> np.ndarray:
  """The character offset of each token in the decoded response (eos and specials add no characters)."""
  lengths = [
    0 if t in (tokenizer.eos_id, tokenizer.bos_id, tokenizer.pad_id) else len(tokenizer.decode([t]))
    for t in ids
  ]
  return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if ids else np.zeros(0, np.int64)


def pad_ragged(rows: Sequence[Sequence[int]], width: int, fill: int = 0) -> np.ndarray:
  out = np.full((len(rows), max(width, 1)), fill, np.int32)
  for i, r in enumerate(rows):
    out[i, : len(r)] = r
  return out


def sample_indices(n_items: int, count: int, seed: int, iteration: int, salt: int = 0) -> np.ndarray:
  """``count`` indices into ``n_items`` with replacement, a function of (seed, iteration, salt)."""
  return np.random.default_rng([seed, iteration, salt]).integers(0, n_items, count)


def phase_key(seed: int, *path: int) -> jax.Array:
  """PRNG key of (seed, *path), e.g. (seed, iteration, phase): sampling is a function of where it happens."""
  key = jax.random.PRNGKey(seed)
  for p in path:
    key = jax.random.fold_in(key, p)
  return key
