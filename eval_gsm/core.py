"""The data types every eval_gsm module shares: problems, compositional pairs, prompts and backends.

A *problem* is one grade-school question with its step-by-step solution and integer answer; a *pair* is the
paper's compositional item (Hosseini et al., arXiv 2410.01748): Q1, and Q2 with one of its numbers replaced by
X, the answer of Q1. Splits evaluated for each pair (``SPLITS``):

  q1        Q1 alone                                  graded on Q1's answer
  q2        the modified Q2 alone (X's value written)  graded on the modified Q2's answer
  comp      the compositional question                 solved only if both Q1's answer (X) and Q2's are right
  indep     Q2 (modified, X's value written) after an unrelated Q1 (diagnostic: does a second
            question in context hurt?)                 graded like comp (both answers)

Diagnostics read from `comp` outputs: Q1 accuracy in context and Q2 accuracy given Q1 right.
"""

import dataclasses
from typing import Dict, List, Optional, Protocol, Sequence, Union

SPLITS = ('q1', 'q2', 'comp', 'indep')

# A prompt is plain text (completion models) or chat messages [{'role': ..., 'content': ...}, ...].
Message = Dict[str, str]
Prompt = Union[str, List[Message]]


@dataclasses.dataclass(frozen=True)
class Problem:
  """One question. ``answer`` is an int for generated data (a float only for external data).

  ``solution`` is GSM8K-style: one short computation per line, no final '#### N' line (prompts add it).
  ``program`` is an optional Python program-of-thought: a ``def solution():`` returning the answer.
  ``source`` says where it came from, e.g. 'template:apples_boxes' or 'gsm8k:test.jsonl:17'.
  ``inputs`` are the template's input values (empty for external data).
  """

  question: str
  solution: str
  answer: Union[int, float]
  source: str
  program: Optional[str] = None
  inputs: Dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Pair:
  """A compositional item: ``q2`` is the modified Q2 with ``variable`` set to ``q1.answer``.

  ``q2_with_x`` is ``q2.question`` with that number's single occurrence replaced by 'X'.
  ``q2_original`` is Q2 before the modification (its own value of ``variable``).
  ``indep_q1`` is an unrelated problem used by the `indep` diagnostic split.
  """

  id: str
  q1: Problem
  q2: Problem
  q2_original: Problem
  q2_with_x: str
  variable: str
  indep_q1: Optional[Problem] = None


class Backend(Protocol):
  """Anything that turns prompts into completions, in order.

  ``stop``: the completion is cut before the first occurrence of any stop string (which is not returned).
  ``temperature`` 0 means greedy. Backends that only take text render chat prompts with their chat template.
  Errors that the user can fix (unreachable endpoint, bad key) raise ``BackendError`` with a one-line message.
  """

  name: str

  def generate(
    self,
    prompts: Sequence[Prompt],
    *,
    max_tokens: int,
    temperature: float = 0.0,
    stop: Sequence[str] = (),
    seed: int = 0,
  ) -> List[str]: ...


class BackendError(RuntimeError):
  """A backend failed in a way the user can fix; the message is one line and never contains secrets."""
