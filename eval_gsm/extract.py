"""Answer extraction: turn a model's completion into the number(s) it answered.

The paper grades GSM8K-style answers with greedy decoding, pass@1; a compositional item counts as solved only
when both the Q1 answer (X) and the final Q2 answer are right (Hosseini et al., arXiv 2410.01748). This module
reads those numbers out of the formats fixed by the prompts module:

  single answer    step lines, then `#### <number>`
  compositional    Q1's step lines, `So X = <number>.`, Q2's step lines, `#### <number>`
  indep            like compositional, with `So the answer to Q1 is <number>.` instead of the X line
  code mode        a fenced ```python block defining `solution()` (and `solve_q1()` for comp/indep)

Two modes, as in lm-evaluation-harness's gsm8k task:

  strict     the number right after the FIRST `####`; else the first 'The answer is' / 'The final answer is'
             (or `\\boxed{...}`) that is followed by a number. Taking the first marker, never the last, makes
             run-on continuations (the model inventing the next few-shot question and answering it, sglang
             PR #29933) harmless, and reading the whole text, never its last 300 characters, keeps answers
             followed by long text (veRL PR #7274).
  flexible   strict if it finds a number, else the last number in the text.

Number rules (`normalize_number`):
  - `,` is a thousands separator only in well-formed groups ('1,234,567'); '1,2,3' is a list, not a number.
  - `$` and a trailing `%` are dropped and the number kept as written ('25%' -> 25): GSM8K writes percentage
    answers as the bare number ('#### 25' for "what percent ..."), so 25 and not 0.25 is the comparable value.
  - The sign is kept ('-5', '$-5', '-$5', the Unicode minus '−5'); decimals are kept ('18.00' -> 18.0).
  - A trailing sentence period is not a decimal point ('18.' -> 18).
  - A number glued to the END of a word is not a number ('Q1', 'abc123', 'H2O'); units glued after a number
    are allowed ('20kg' -> 20). Scientific notation and fractions are not parsed.
"""

import dataclasses
import math
import re
from typing import List, Optional, Union

METHODS = ('hash', 'answer_is', 'last_number', 'code', 'none')
MODES = ('strict', 'flexible')

# One number token as it appears in text: sign and `$` in either order, digits with commas, decimals.
# The look-behind keeps digits that continue a word or another number ('abc123', '1.2.3') out.
_NUMBER = r'(?<![A-Za-z_\d.])[-+\u2212]?(?:\$\s?[-\u2212]?)?(?:\d[\d,]*(?:\.\d+)?|\.\d+)'
_NUMBER_RE = re.compile(_NUMBER)
_GROUPED_RE = re.compile(r'\d{1,3}(?:,\d{3})+(?:\.\d+)?|\.\d+|\d+(?:\.\d+)?')
# What may sit between a marker and its number: spaces, ':', bold/italic markers, '$', LaTeX openers.
_FILLER = r'[\s:*_$]*(?:\\\(|\\\[)?[\s*$]*(?:\\boxed\{|\\text\{)?[\s*$]*'
_HASH_RE = re.compile(r'####' + _FILLER + '(' + _NUMBER.replace('(?<![A-Za-z_\\d.])', '') + ')')
_ANSWER_IS_RE = re.compile(
  r'(?:the\s+(?:final\s+)?answer\s+is|\\boxed\{)' + _FILLER + '(' + _NUMBER + ')', re.IGNORECASE
)
_Q1_RE = re.compile(
  r'(?:\bX\s*(?:=|is)|(?i:answer\s+to\s+(?:the\s+)?Q1\s+is))' + _FILLER + '(' + _NUMBER + ')'
)
_FENCE_RE = re.compile(r'```[ \t]*(?P<tag>[A-Za-z0-9_+-]*)[^\n]*\n(?P<body>.*?)(?:```|\Z)', re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Extracted:
  """An extracted answer: ``value`` is None when nothing was found (then ``method`` is 'none')."""

  value: Optional[float]
  method: str

  @property
  def failed(self) -> bool:
    return self.value is None


NONE = Extracted(None, 'none')


def normalize_number(text: str) -> Optional[float]:
  """The float value of one number token such as '-$1,234.50', '18.00', '25%', '42.' or '**7**'; else None.

  Rejects empty strings, words, malformed thousands groups ('1,2,3', '12,34'), several numbers, nan/inf.
  """
  if text is None:
    return None
  s = text.replace('\u2212', '-').replace('*', '').strip()
  s = s.rstrip('.').rstrip('%').rstrip('.')
  sign, dollar = '', False
  while s[:1] in ('-', '+', '$'):  # One sign and one currency mark, in either order: '-$5', '$-5', '$ 5'.
    if s[0] == '$' and not dollar:
      dollar, s = True, s[1:].lstrip()
    elif s[0] in '-+' and not sign:
      sign, s = s[0], s[1:]
    else:
      return None
  if not _GROUPED_RE.fullmatch(s):
    return None
  value = float(s.replace(',', ''))
  if not math.isfinite(value):
    return None
  return -value if sign == '-' else value


def _token_values(token: str) -> List[float]:
  """Values of a number token found in text; a malformed comma group ('1,2,3') is a list of numbers."""
  token = token.rstrip(',')
  value = normalize_number(token)
  if value is not None:
    return [value]
  parts = [normalize_number(p) for p in token.split(',') if p.strip()]
  return [p for p in parts if p is not None]


def _strict(text: str) -> Extracted:
  hash_at = text.find('####')
  if hash_at >= 0:
    match = _HASH_RE.match(text, hash_at)
    if match:
      value = normalize_number(match.group(1).rstrip(','))
      if value is not None:
        return Extracted(value, 'hash')
  for match in _ANSWER_IS_RE.finditer(text):
    value = normalize_number(match.group(1).rstrip(','))
    if value is not None:
      return Extracted(value, 'answer_is')
  return NONE


def last_number(text: str) -> Optional[float]:
  """The last number in ``text`` (lm-evaluation-harness's 'flexible-extract'), or None."""
  values = [v for m in _NUMBER_RE.finditer(text) for v in _token_values(m.group(0))]
  return values[-1] if values else None


def extract_answer(text: str, mode: str = 'strict') -> Extracted:
  """A completion's final answer: 'strict' reads markers only; 'flexible' falls back to the last number."""
  if mode not in MODES:
    raise ValueError(f'extraction mode {mode!r} is unknown; use one of {MODES}')
  if not text:
    return NONE
  found = _strict(text)
  if found.value is not None or mode == 'strict':
    return found
  value = last_number(text)
  return NONE if value is None else Extracted(value, 'last_number')


def extract_q1(text: str) -> Optional[float]:
  """Q1's answer inside a compositional or indep completion, or None.

  The first 'X = <n>' (or 'X is <n>') or 'the answer to Q1 is <n>'. When the X line is a chain such as
  'X = 3 + 5 = 8', the number after the chain's last '=' on that line is X.
  """
  if not text:
    return None
  for match in _Q1_RE.finditer(text):
    line_end = text.find('\n', match.start())
    line = text[match.start() : len(text) if line_end < 0 else line_end]
    # Cut the line at a sentence end ('. ' or a final '.') so a later sentence's '=' is not read.
    sentence = re.split(r'\.(?=\s|$)', line, maxsplit=1)[0]
    chain = sentence.split('=')
    if len(chain) > 2:
      tail = _NUMBER_RE.match(chain[-1].strip(' *$'))
      if tail:
        value = normalize_number(tail.group(0).rstrip(','))
        if value is not None:
          return value
    value = normalize_number(match.group(1).rstrip(','))
    if value is not None:
      return value
  return None


def _top_level_defs(code: str) -> str:
  """Only the top-level `def` blocks of ``code``: driver lines such as `print(solution())` are dropped."""
  kept, inside = [], False
  for line in code.splitlines():
    stripped = line.strip()
    if line.startswith(('def ', 'async def ', '@')):
      inside = True
    elif stripped and not line[0].isspace() and not stripped.startswith('#'):
      inside = False  # Any other top-level statement ends the function (and is dropped).
    if inside:
      kept.append(line)
  return '\n'.join(kept).strip('\n') + '\n' if kept else ''


def extract_code(text: str, *, defs_only: bool = True) -> Optional[str]:
  """The program in a code-mode completion, or None.

  The first fenced block tagged python/py (an unclosed fence runs to the end: a stop string may have cut it),
  else the first untagged fenced block containing 'def ', else the text itself when it starts with 'def '.
  With ``defs_only`` only top-level function definitions are kept, so a trailing `print(solution())` or
  `if __name__ == '__main__':` block does not make a correct program fail the safety check.
  """
  if not text:
    return None
  code = None
  untagged = None
  for match in _FENCE_RE.finditer(text):
    tag = match.group('tag').lower()
    if tag in ('python', 'py', 'python3'):
      code = match.group('body')
      break
    if not tag and untagged is None and 'def ' in match.group('body'):
      untagged = match.group('body')
  if code is None:
    code = untagged
  if code is None and text.lstrip().startswith('def '):
    code = text.lstrip()
  if code is None:
    return None
  if defs_only:
    code = _top_level_defs(code)
  return code if code.strip() else None


def is_correct(value: Optional[float], answer: Union[int, float, None], rel_tol: float = 1e-6) -> bool:
  """Whether an extracted ``value`` equals the gold ``answer`` (relative tolerance, 1e-9 absolute near 0)."""
  if value is None or answer is None or isinstance(value, bool):
    return False
  try:
    value, answer = float(value), float(answer)
  except (TypeError, ValueError, OverflowError):
    return False
  if not (math.isfinite(value) and math.isfinite(answer)):
    return False
  return math.isclose(value, answer, rel_tol=rel_tol, abs_tol=1e-9)
