"""Grading and the paper's metrics: S1, S2, S_comp, the reasoning gap Delta = S_comp - S1*S2, paired CIs.

Hosseini et al. (arXiv 2410.01748) measure S1 (accuracy on Q1 alone), S2 (on the modified Q2 alone) and
S_comp (on the compositional item, solved only when BOTH answers are right), and call Delta = S_comp - S1*S2
the reasoning gap: a model whose two hops fail independently has Delta = 0 in expectation. Their
diagnostics read the compositional outputs: Q1 accuracy in context (distraction) and Q2 accuracy given Q1
right in context (second-hop failure); an unrelated Q1 in context (`indep` split) barely hurts.

``grade`` turns one completion into a record, one per (pair id, split)::

  {'pair_id': str, 'split': 'q1'|'q2'|'comp'|'indep', 'correct': bool,
   'q1_correct': Optional[bool], 'q2_correct': Optional[bool],  # comp/indep only: the two answers inside
   'failed_extraction': bool,                                    # no answer could be read (or no code found)
   # extras for per-item logs: 'pred', 'pred_q1', 'method', 'error' (code mode: the program's error)}

``grade_all`` grades many (code mode: runs the programs in parallel). ``summarize`` aggregates records.
Only pairs with all of q1, q2 and comp enter the metrics (the others are counted in ``n_dropped``, and
``missing`` says which split each lacked); the diagnostics, the indep accuracies and the per-split
extraction-failure and program-error rates are computed over those same pairs. Confidence intervals come
from a PAIRED bootstrap over pair ids: each replicate resamples pairs and recomputes S1, S2 and S_comp on
the same resample, so their correlation (an easy pair is easy in every split) is kept and Delta's interval
is not inflated. Percentile intervals, numpy only.
"""

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from common.errors import UsageError
from eval_gsm import core
from eval_gsm import extract
from eval_gsm import safe_exec

REQUIRED = ('q1', 'q2', 'comp')
GRADE_MODES = ('cot', 'code')
_CHUNK_ENTRIES = 1 << 22  # Bootstrap indices materialised at once (32 MiB of int64).

Record = Dict[str, Any]
Interval = Tuple[float, float]


# ----------------------------------------------------------------------------------------------------------
# Grading.
# ----------------------------------------------------------------------------------------------------------


def _gold(split: str, pair: core.Pair) -> Tuple[Optional[float], float]:
  """(Q1 gold inside the output or None, final gold) for a split."""
  if split == 'q1':
    return None, pair.q1.answer
  if split == 'q2':
    return None, pair.q2.answer
  if split == 'comp':
    return pair.q1.answer, pair.q2.answer
  if split == 'indep':
    if pair.indep_q1 is None:
      raise UsageError(f'pair {pair.id} has no indep_q1; build pairs with an independent Q1 to grade indep')
    return pair.indep_q1.answer, pair.q2.answer
  raise ValueError(f'split {split!r} is unknown; use one of {core.SPLITS}')


def _entries(split: str) -> Tuple[str, ...]:
  return ('solution',) if split in ('q1', 'q2') else ('solve_q1', 'solution')


def _record(
  split: str,
  pair: core.Pair,
  pred_q1: Optional[float],
  pred: Optional[float],
  *,
  method: str,
  failed: bool,
  error: Optional[str] = None,
) -> Record:
  gold_q1, gold = _gold(split, pair)
  q2_correct = extract.is_correct(pred, gold)
  record = {'pair_id': pair.id, 'split': split}
  if gold_q1 is None:
    record.update(correct=q2_correct, q1_correct=None, q2_correct=None)
  else:
    q1_correct = extract.is_correct(pred_q1, gold_q1)
    record.update(correct=q1_correct and q2_correct, q1_correct=q1_correct, q2_correct=q2_correct)
  record.update(failed_extraction=failed, pred=pred, pred_q1=pred_q1, method=method, error=error)
  return record


def _record_cot(split: str, output: str, pair: core.Pair, extraction: str) -> Record:
  found = extract.extract_answer(output or '', extraction)
  if split in ('q1', 'q2'):
    return _record(split, pair, None, found.value, method=found.method, failed=found.failed)
  pred_q1 = extract.extract_q1(output or '')
  failed = found.failed or pred_q1 is None
  return _record(split, pair, pred_q1, found.value, method=found.method, failed=failed)


def _run_codes(
  splits: Sequence[str], codes: Sequence[Optional[str]], *, workers: int, timeout_s: float, memory_mb: float
) -> List[Tuple[Dict[str, Any], Optional[str]]]:
  """Per program: (values by entry, one-line error or None). A comp/indep program that fails as a whole is
  run again with ``solve_q1`` alone, since Q1's part is graded on its own."""
  out: List[Tuple[Dict[str, Any], Optional[str]]] = [({}, None)] * len(codes)
  kw = dict(workers=workers, timeout_s=timeout_s, memory_mb=memory_mb)
  for entries in (('solution',), ('solve_q1', 'solution')):
    index = [i for i, s in enumerate(splits) if _entries(s) == entries and codes[i] is not None]
    for i, result in zip(index, safe_exec.run_programs([codes[i] for i in index], entries, **kw)):
      out[i] = (result, None) if isinstance(result, dict) else ({}, result)
  retry = [i for i, s in enumerate(splits) if s in ('comp', 'indep') and out[i][1] is not None]
  for i, result in zip(retry, safe_exec.run_programs([codes[i] for i in retry], ('solve_q1',), **kw)):
    if isinstance(result, dict):
      out[i] = (result, out[i][1])
  return out


def grade_all(
  items: Sequence[Tuple[str, str, core.Pair]],
  *,
  mode: str = 'cot',
  extraction: str = 'strict',
  workers: int = 2,
  timeout_s: float = 2.0,
  memory_mb: float = 256,
) -> List[Record]:
  """``grade`` over ``(split, output, pair)`` items, in order; code mode runs ``workers`` programs at once."""
  if mode not in GRADE_MODES:
    raise ValueError(f'grading mode {mode!r} is unknown; use one of {GRADE_MODES}')
  if extraction not in extract.MODES:
    raise ValueError(f'extraction mode {extraction!r} is unknown; use one of {extract.MODES}')
  for split, _, pair in items:
    _gold(split, pair)  # Validates every split (and indep_q1) before any work.
  if mode == 'cot':
    return [_record_cot(split, output, pair, extraction) for split, output, pair in items]
  splits = [split for split, _, _ in items]
  codes = [extract.extract_code(output or '') for _, output, _ in items]
  runs = _run_codes(splits, codes, workers=workers, timeout_s=timeout_s, memory_mb=memory_mb)
  records = []
  for (split, _, pair), code, (values, error) in zip(items, codes, runs):
    if code is None:
      error = 'no program found in the completion'
    pred_q1 = values.get('solve_q1') if split in ('comp', 'indep') else None
    method = 'code' if code is not None else 'none'
    records.append(
      _record(split, pair, pred_q1, values.get('solution'), method=method, failed=code is None, error=error)
    )
  return records


def grade(
  split: str,
  output: str,
  pair: core.Pair,
  *,
  mode: str = 'cot',
  extraction: str = 'strict',
  timeout_s: float = 2.0,
  memory_mb: float = 256,
) -> Record:
  """Grades one completion for ``split`` of ``pair``.

  cot: the final answer by ``extract.extract_answer(output, extraction)``; for comp/indep also Q1's answer by
  ``extract.extract_q1`` (the X line / 'the answer to Q1 is' line); a missing one counts as an extraction
  failure and the item as wrong. code: the completion's program (``extract.extract_code``) runs in
  ``safe_exec``; ``solution()`` is the final answer and, for comp/indep, ``solve_q1()`` Q1's answer; no
  program found is an extraction failure, a program that fails is wrong with its one-line ``error``.
  Gold answers: q1 -> Q1; q2 -> modified Q2; comp -> Q1 and modified Q2; indep -> the unrelated Q1 and Q2.
  """
  (record,) = grade_all(
    [(split, output, pair)],
    mode=mode,
    extraction=extraction,
    workers=1,
    timeout_s=timeout_s,
    memory_mb=memory_mb,
  )
  return record


# ----------------------------------------------------------------------------------------------------------
# Summaries.
# ----------------------------------------------------------------------------------------------------------


def _group(records: Iterable[Mapping[str, Any]]) -> Dict[str, Dict[str, Mapping[str, Any]]]:
  pairs: Dict[str, Dict[str, Mapping[str, Any]]] = {}
  for record in records:
    split, pair_id = record.get('split'), record.get('pair_id')
    if split not in core.SPLITS:
      raise UsageError(f'record for pair {pair_id!r} has split {split!r}; splits are {core.SPLITS}')
    by_split = pairs.setdefault(str(pair_id), {})
    if split in by_split:
      raise UsageError(f'pair {pair_id!r} has two {split!r} records; grade each (pair, split) once')
    by_split[split] = record
  return pairs


def _flag(record: Mapping[str, Any], key: str) -> bool:
  return bool(record.get(key))  # None (not applicable or not extracted) counts as not right.


def _mean(values: np.ndarray) -> Optional[float]:
  return float(values.mean()) if values.size else None


def bootstrap_means(
  columns: np.ndarray, *, reps: int, seed: int, chunk_entries: int = _CHUNK_ENTRIES
) -> np.ndarray:
  """Paired bootstrap: ``[reps, k]`` column means of ``columns`` ``[n, k]`` over rows resampled together."""
  columns = np.asarray(columns, dtype=np.float64)
  n = columns.shape[0]
  rng = np.random.default_rng(seed)
  out = np.empty((reps, columns.shape[1]))
  step = max(1, chunk_entries // max(n, 1))
  for start in range(0, reps, step):
    size = min(step, reps - start)
    idx = rng.integers(0, n, size=(size, n))
    out[start : start + size] = columns[idx].mean(axis=1)
  return out


def _interval(samples: np.ndarray, confidence: float) -> Interval:
  alpha = (1.0 - confidence) / 2.0
  lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
  return float(lo), float(hi)


def summarize(
  records: Iterable[Mapping[str, Any]], *, bootstrap_reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Dict[str, Any]:
  """The paper's metrics with paired-bootstrap percentile CIs (deterministic for a seed); see the module doc.

  Keys: n, n_dropped, missing ({split: pairs lacking it}), S1, S2, S_comp, expected (S1*S2), delta,
  delta_ci / S1_ci / S2_ci / S_comp_ci ((lo, hi)), relative_gap (delta / expected; None if expected is 0),
  q1_in_comp, q2_in_comp, q2_in_comp_given_q1 (None if Q1 is never right in comp), n_q1_in_comp, n_indep,
  indep / indep_q1 / indep_q2 (None without indep records), extraction_failure and program_error
  ({split: rate}), bootstrap_reps, confidence, seed.
  """
  if not 0.0 < confidence < 1.0 or bootstrap_reps < 1:
    raise ValueError(f'need 0 < confidence < 1 and bootstrap_reps >= 1; got {confidence}, {bootstrap_reps}')
  pairs = _group(records)
  complete = sorted(pid for pid, splits in pairs.items() if all(s in splits for s in REQUIRED))
  missing = {s: sum(s not in splits for splits in pairs.values()) for s in REQUIRED}
  if not complete:
    raise UsageError(
      f'no pair has all of q1, q2 and comp records ({len(pairs)} pairs, missing per split: {missing}); '
      'grade all three splits of each pair'
    )
  rows = [pairs[pid] for pid in complete]
  c1 = np.array([_flag(r['q1'], 'correct') for r in rows], dtype=np.float64)
  c2 = np.array([_flag(r['q2'], 'correct') for r in rows], dtype=np.float64)
  cc = np.array([_flag(r['comp'], 'correct') for r in rows], dtype=np.float64)
  s1, s2, sc = float(c1.mean()), float(c2.mean()), float(cc.mean())
  expected = s1 * s2
  delta = sc - expected

  boot = bootstrap_means(np.stack([c1, c2, cc], axis=1), reps=bootstrap_reps, seed=seed)
  boot_delta = boot[:, 2] - boot[:, 0] * boot[:, 1]

  q1_in = np.array([_flag(r['comp'], 'q1_correct') for r in rows], dtype=bool)
  q2_in = np.array([_flag(r['comp'], 'q2_correct') for r in rows], dtype=bool)
  indep = [r['indep'] for r in rows if 'indep' in r]
  splits = REQUIRED + (('indep',) if indep else ())
  failures = {s: float(np.mean([_flag(r[s], 'failed_extraction') for r in rows if s in r])) for s in splits}
  errors = {s: float(np.mean([r[s].get('error') is not None for r in rows if s in r])) for s in splits}
  return {
    'n': len(complete),
    'n_dropped': len(pairs) - len(complete),
    'missing': missing,
    'S1': s1,
    'S2': s2,
    'S_comp': sc,
    'expected': expected,
    'delta': delta,
    'delta_ci': _interval(boot_delta, confidence),
    'S1_ci': _interval(boot[:, 0], confidence),
    'S2_ci': _interval(boot[:, 1], confidence),
    'S_comp_ci': _interval(boot[:, 2], confidence),
    'relative_gap': delta / expected if expected > 0 else None,
    'q1_in_comp': _mean(q1_in.astype(np.float64)),
    'q2_in_comp': _mean(q2_in.astype(np.float64)),
    'q2_in_comp_given_q1': _mean(q2_in[q1_in].astype(np.float64)),
    'n_q1_in_comp': int(q1_in.sum()),
    'n_indep': len(indep),
    'indep': _mean(np.array([_flag(r, 'correct') for r in indep], dtype=np.float64)),
    'indep_q1': _mean(np.array([_flag(r, 'q1_correct') for r in indep], dtype=np.float64)),
    'indep_q2': _mean(np.array([_flag(r, 'q2_correct') for r in indep], dtype=np.float64)),
    'extraction_failure': failures,
    'program_error': errors,
    'bootstrap_reps': bootstrap_reps,
    'confidence': confidence,
    'seed': seed,
  }
