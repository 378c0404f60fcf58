"""The value-prediction analysis (research note llm.md §1.6, §4.1 item 3b-c): how well do PPO's critic and
VinePPO's K-rollout MC estimate the value of intermediate reasoning states?

Ground truth. ``truth_rollouts`` MC rollouts per state (256 in the paper; the paper samples them at T = 1,
we use the training temperature, as VinePPO's own estimator does, so both estimate the same V).

States. Test problems, one trajectory each sampled from the policy under study; its states s_0..s_{n-1}
(prompt, then prompt + each step prefix). For each state:
  - the critic's V: its output at the position that predicts the first token after the prefix;
  - MC(K) for K in ``ks``: the mean of the first K of max(ks) FRESH rollouts (independent of the truth);
  - the truth.
Reported: mean absolute error per estimator, and per step position (``mae_by_step``).

1-of-5 ranking. From a state, 5 candidate next steps are sampled (the first line of 5 continuations); each
candidate state's truth is estimated as above; an estimator is right when the candidate it ranks first has
the highest true value (ties count as right). Random choice scores about 20 %.
"""

from typing import Dict, List, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from llm_rl import rl as rl_lib
from llm_rl import rollouts


def _states(sampler: rollouts.Sampler, episodes: rollouts.Episodes, merge_answer: bool, max_states: int):
  """(trajectory, step position, prompt ids, prefix ids) of every non-terminal state, at most max_states."""
  ends = rollouts.step_ends(
    episodes.texts, episodes.response_ids, sampler.tokenizer, merge_answer=merge_answer
  )
  out = []
  for b, e in enumerate(ends):
    for i in range(len(e)):
      prefix = 0 if i == 0 else e[i - 1]
      out.append((b, i, episodes.prompt_ids[b], episodes.response_ids[b][:prefix]))
  return out[:max_states]


def critic_state_values(
  programs: Optional[rl_lib.Programs], value_params, sampler: rollouts.Sampler, prompts, prefixes
) -> Optional[np.ndarray]:
  """The critic's V of each state prompt + prefix (None without a critic)."""
  if programs is None or not value_params:
    return None
  lay = sampler.layout
  tokens = np.full((len(prompts), lay.length), sampler.tokenizer.pad_id, np.int32)
  kv_start = np.zeros(len(prompts), np.int32)
  for j, (p, prefix) in enumerate(zip(prompts, prefixes)):
    kv_start[j] = lay.prompt_len - len(p)
    tokens[j, kv_start[j] : lay.prompt_len] = p
    tokens[j, lay.prompt_len : lay.prompt_len + len(prefix)] = prefix
  out = []
  bs = sampler.batch_size
  for s in range(0, len(prompts), bs):
    rows = slice(s, s + bs)
    t, k = tokens[rows], kv_start[rows]
    pad = bs - len(t)
    if pad:  # One compiled shape.
      t = np.concatenate([t, np.repeat(t[-1:], pad, 0)])
      k = np.concatenate([k, np.repeat(k[-1:], pad, 0)])
    v = np.asarray(programs.values(value_params, jnp.asarray(t), jnp.asarray(k)))[: bs - pad]
    out.append(v)
  v = np.concatenate(out)
  # Position m of the response slice predicts response token m: V of the state with m tokens of response.
  return np.array([v[j, len(prefix)] for j, prefix in enumerate(prefixes)], np.float32)


def _estimates(
  sampler, params, prompts, prefixes, answers, *, truth_rollouts, ks, key, programs, value_params
):
  """(truth [N], {estimator: [N]}): the truth from ``truth_rollouts`` rollouts, MC(K) from max(ks) FRESH
  rollouts (the first K of them), and the critic's V when there is one."""
  truth, _ = sampler.mc_returns(
    params, prompts, prefixes, answers, truth_rollouts, rollouts.phase_key(*key, 0)
  )
  fresh, _ = sampler.mc_returns(params, prompts, prefixes, answers, max(ks), rollouts.phase_key(*key, 1))
  estimates = {f'mc_k{k}': fresh[:, :k].mean(1) for k in ks}
  critic = critic_state_values(programs, value_params, sampler, prompts, prefixes)
  if critic is not None:
    estimates['critic'] = critic
  return truth.mean(1), estimates


def value_error(
  sampler: rollouts.Sampler,
  params,
  problems: Sequence,
  *,
  seed: int,
  truth_rollouts: int,
  ks: Sequence[int],
  max_states: int,
  merge_answer: bool,
  programs: Optional[rl_lib.Programs] = None,
  value_params=None,
) -> Dict:
  """MAE of MC(K) (and the critic, when given) against the truth, overall and by step position."""
  episodes = sampler.episodes(params, problems, rollouts.phase_key(seed, 11))
  states = [
    s for s in _states(sampler, episodes, merge_answer, max_states) if len(s[3]) < sampler.layout.response_len
  ]
  prompts = [s[2] for s in states]
  prefixes = [s[3] for s in states]
  answers = [episodes.problems[s[0]].answer for s in states]
  v_true, estimates = _estimates(
    sampler,
    params,
    prompts,
    prefixes,
    answers,
    truth_rollouts=truth_rollouts,
    ks=ks,
    key=(seed, 12),
    programs=programs,
    value_params=value_params,
  )
  position = np.array([s[1] for s in states])
  out = {
    'num_states': len(states),
    'truth_rollouts': truth_rollouts,
    'truth_mean': float(v_true.mean()),
    # The mean per-state Bernoulli std sqrt(V(1 - V)): 0 when every state is surely won or surely lost (a
    # collapsed policy), where any estimator is exact and the comparison says nothing.
    'truth_spread': float(np.sqrt(v_true * (1 - v_true)).mean()) if len(states) else 0.0,
  }
  for name, est in estimates.items():
    err = np.abs(est - v_true)
    out[f'mae_{name}'] = float(err.mean())
    out[f'mae_by_step_{name}'] = [
      float(err[position == i].mean()) for i in range(int(position.max(initial=-1)) + 1)
    ]
  out['states_by_step'] = [int((position == i).sum()) for i in range(int(position.max(initial=-1)) + 1)]
  return out


def _first_line(ids: List[int], sampler: rollouts.Sampler) -> List[int]:
  newline = sampler.tokenizer.encode('\n')
  nl = newline[0] if len(newline) == 1 else None
  if nl is not None and nl in ids:
    return ids[: ids.index(nl) + 1]
  return ids


def ranking_accuracy(
  sampler: rollouts.Sampler,
  params,
  problems: Sequence,
  *,
  seed: int,
  truth_rollouts: int,
  ks: Sequence[int],
  num_states: int,
  merge_answer: bool,
  candidates: int = 5,
  programs: Optional[rl_lib.Programs] = None,
  value_params=None,
) -> Dict:
  """1-of-``candidates`` next-step ranking accuracy of each estimator against the truth."""
  episodes = sampler.episodes(params, problems, rollouts.phase_key(seed, 21))
  states = _states(sampler, episodes, merge_answer, 10**9)
  rng = np.random.default_rng([seed, 22])
  states = [states[i] for i in rng.permutation(len(states))[:num_states]]
  layout = sampler.layout
  # Candidate next steps: the first line of `candidates` continuations of each state.
  reqs = [list(s[2]) + list(s[3]) for s in states for _ in range(candidates)]
  budgets = [layout.response_len - len(s[3]) for s in states for _ in range(candidates)]
  conts, _ = sampler.continue_(params, reqs, budgets, rollouts.phase_key(seed, 23))
  prompts, prefixes, answers = [], [], []
  for j, cont in enumerate(conts):
    s = states[j // candidates]
    prefix = list(s[3]) + _first_line(cont, sampler)
    prefix = prefix[: layout.response_len - 1]
    prompts.append(s[2])
    prefixes.append(prefix)
    answers.append(episodes.problems[s[0]].answer)
  v_true, estimates = _estimates(
    sampler,
    params,
    prompts,
    prefixes,
    answers,
    truth_rollouts=truth_rollouts,
    ks=ks,
    key=(seed, 24),
    programs=programs,
    value_params=value_params,
  )
  v_true = v_true.reshape(-1, candidates)
  out = {'num_states': len(states), 'candidates': candidates}
  for name, est in estimates.items():
    est = est.reshape(-1, candidates)
    picked = v_true[np.arange(len(est)), est.argmax(1)]
    out[f'top1_{name}'] = float(np.mean(picked >= v_true.max(1) - 1e-9))
  # A random pick: the expected share of candidates that tie for the best.
  out['top1_random'] = float(np.mean((v_true >= v_true.max(1, keepdims=True) - 1e-9).mean(1)))
  return out
