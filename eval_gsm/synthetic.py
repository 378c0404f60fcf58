"""Synthetic models with known reasoning behaviour: the harness's own ground truth.

Each answers from the generator's ideal solutions (``prompts.render_split_target``), and is wrong exactly where
its seeded coin flips say so, by writing a wrong number (the true answer + 1):

  oracle        always right: S1 = S2 = S_comp = 1 and Delta = 0 exactly.
  independent   hop 1 (Q1) right with p1, hop 2 (Q2) right with p2, independently, the same coins for a pair
                in every split: E[S_comp] = p1 * p2, so Delta = 0 in expectation.
  planted       as independent, but inside a composition the second hop also fails with probability q
                (second-hop failure, the paper's diagnosis): Delta = -p1 * p2 * q in expectation.

Outcomes are functions of (seed, pair id), so they do not depend on batch order or resumption.
"""

import hashlib
import re
from typing import Dict, Sequence

from common.errors import ConfigError
from eval_gsm import core, evaluate, prompts
from eval_gsm.backends import scripted

KINDS = ('oracle', 'independent', 'planted')


def _coin(seed: int, pair_id: str, what: str) -> float:
  digest = hashlib.sha256(f'{seed}/{pair_id}/{what}'.encode()).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64


def _wrong_final(text: str) -> str:
  """The same answer text with its final '#### N' (or the code's returned value) made wrong."""
  match = None
  for match in re.finditer(r'####\s*(-?\d+)', text):
    pass
  if match is None:
    return text + '\n#### -1'
  wrong = int(match.group(1)) + 1
  return text[: match.start()] + f'#### {wrong}' + text[match.end() :]


def _wrong_q1(text: str) -> str:
  """The composition's Q1 answer line ('X = N' / 'answer to Q1 is N') made wrong, the rest unchanged."""

  def bump(m):
    return f'{m.group(1)}{int(m.group(2)) + 1}'

  return re.sub(r'(X = |answer to Q1 is )(-?\d+)', bump, text, count=1)


def outcomes(kind: str, pair: core.Pair, *, p1: float, p2: float, q: float, seed: int) -> Dict[str, bool]:
  """Which hops are right: q1 (alone), q2 (alone), comp_q1, comp_q2, indep_q1, indep_q2."""
  if kind == 'oracle':
    return dict.fromkeys(('q1', 'q2', 'comp_q1', 'comp_q2', 'indep_q1', 'indep_q2'), True)
  hop1 = _coin(seed, pair.id, 'hop1') < p1
  hop2 = _coin(seed, pair.id, 'hop2') < p2
  extra_fail = kind == 'planted' and _coin(seed, pair.id, 'second_hop') < q
  indep1 = _coin(seed, pair.id, 'indep1') < p1
  return {
    'q1': hop1,
    'q2': hop2,
    'comp_q1': hop1,
    'comp_q2': hop1 and hop2 and not extra_fail,  # A wrong X makes Q2's answer wrong too.
    'indep_q1': indep1,
    'indep_q2': hop2,
  }


def expected_delta(kind: str, p1: float, p2: float, q: float) -> float:
  return {'oracle': 0.0, 'independent': 0.0, 'planted': -p1 * p2 * q}[kind]


def answer(
  kind: str, split: str, pair: core.Pair, *, mode: str, p1: float, p2: float, q: float, seed: int
) -> str:
  """What the synthetic model answers to ``split`` of ``pair``."""
  ok = outcomes(kind, pair, p1=p1, p2=p2, q=q, seed=seed)
  text = prompts.render_split_target(split, pair, mode=mode)
  if mode == 'code':  # Code answers: make the returned values wrong by shifting the final return.
    return _wrong_code(text, split, ok)
  if split in ('q1', 'q2'):
    return text if ok[split] else _wrong_final(text)
  if not ok[f'{split}_q1']:
    text = _wrong_q1(text)
  if not ok[f'{split}_q2']:
    text = _wrong_final(text)
  return text


def _wrong_code(text: str, split: str, ok: Dict[str, bool]) -> str:
  """Code answers: '+ 1' appended to the return of the function whose hop is wrong."""
  lines = text.split('\n')
  returns = [i for i, line in enumerate(lines) if line.strip().startswith('return ')]
  if not returns:
    return text
  wrong_last = not (ok[split] if split in ('q1', 'q2') else ok[f'{split}_q2'])
  wrong_first = split in ('comp', 'indep') and not ok[f'{split}_q1'] and len(returns) > 1
  if wrong_first:
    lines[returns[0]] += ' + 1'
  if wrong_last and not (wrong_first and split == 'comp'):  # A wrong X already propagates into solution().
    lines[returns[-1]] += ' + 1'
  return '\n'.join(lines)


def make_backend(
  kind: str,
  pairs: Sequence[core.Pair],
  exemplars,
  settings: evaluate.Settings,
  *,
  p1: float = 0.8,
  p2: float = 0.7,
  q: float = 0.3,
  seed: int = 0,
) -> scripted.TableBackend:
  """A table backend answering every prompt the harness will render for ``pairs`` under ``settings``."""
  if kind not in KINDS:
    raise ConfigError(f'unknown synthetic model {kind!r}; use one of {list(KINDS)}')
  for name, p in (('p1', p1), ('p2', p2), ('q', q)):
    if not 0.0 <= p <= 1.0:
      raise ConfigError(f'synthetic.{name} must be in [0, 1], got {p}')
  table = {
    scripted.prompt_key(prompt): answer(kind, split, pair, mode=settings.mode, p1=p1, p2=p2, q=q, seed=seed)
    for pair, split, prompt in evaluate.work_items(pairs, exemplars, settings)
  }
  return scripted.TableBackend(table, name=kind, missing='error')
