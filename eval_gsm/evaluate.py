"""The evaluation harness: render every split of every pair, ask a backend, grade, summarise.

One model's evaluation writes, under its directory:

  items.jsonl    one row per (pair, split): the prompt's split, the completion, the extracted answers and
                 the grade. Appended batch by batch and flushed, so an interrupted evaluation resumes where
                 it stopped (rows already there are not asked again); a torn last line is dropped.
  summary.json   S1, S2, S_comp, Delta = S_comp - S1 * S2 with its paired bootstrap CI, diagnostics, the
                 exact settings (prompt style, mode, shots, extraction, decoding) and timings.

The protocol follows the paper: k-shot prompts (8 by default), greedy decoding, pass@1, and a compositional
item counts only when both answers are right.
"""

import dataclasses
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging

from common import results
from eval_gsm import core, metrics, prompts

ITEMS_FILE = 'items.jsonl'
SUMMARY_FILE = 'summary.json'


@dataclasses.dataclass(frozen=True)
class Settings:
  """How a model is asked and graded (recorded in every summary)."""

  style: str = 'completion'  # 'completion' or 'chat'.
  mode: str = 'cot'  # 'cot' (step-by-step text) or 'code' (program of thought).
  shots: int = 8
  extraction: str = 'strict'  # 'strict' ('####' / 'The answer is') or 'flexible' (else the last number).
  max_tokens: int = 320
  temperature: float = 0.0
  batch_size: int = 256  # Prompts per backend call (and per resumable chunk of items.jsonl).
  splits: Tuple[str, ...] = core.SPLITS


def _read_items(path: str) -> Dict[Tuple[str, str], dict]:
  done = {}
  if not os.path.exists(path):
    return done
  with open(path) as f:
    lines = f.read().split('\n')
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except ValueError:
      if i >= len(lines) - 2:  # A torn last line from an interrupted write.
        logging.warning('%s: dropping an incomplete last line', path)
        continue
      raise ValueError(f'{path}:{i + 1} is not JSON; move the file away to re-evaluate') from None
    done[(row['pair_id'], row['split'])] = row
  return done


def work_items(
  pairs: Sequence[core.Pair], exemplars, settings: Settings
) -> List[Tuple[core.Pair, str, core.Prompt]]:
  """(pair, split, prompt) for every split of every pair, in a fixed order."""
  out = []
  for pair in pairs:
    for split in settings.splits:
      if split == 'indep' and pair.indep_q1 is None:
        continue
      prompt = prompts.render_prompt(
        split, pair, exemplars, style=settings.style, mode=settings.mode, shots=settings.shots
      )
      out.append((pair, split, prompt))
  return out


def evaluate(
  backend: core.Backend,
  pairs: Sequence[core.Pair],
  exemplars,
  settings: Settings,
  out_dir: str,
  *,
  bootstrap_reps: int = 2000,
  seed: int = 0,
  details: Optional[dict] = None,
) -> dict:
  """Evaluates ``backend`` on ``pairs`` (resuming from ``out_dir/items.jsonl``) and writes the summary."""
  os.makedirs(out_dir, exist_ok=True)
  items_path = os.path.join(out_dir, ITEMS_FILE)
  done = _read_items(items_path)
  if done:  # Rewrite without a torn line before appending.
    with open(items_path, 'w') as f:
      for row in done.values():
        f.write(json.dumps(row) + '\n')
  todo = [w for w in work_items(pairs, exemplars, settings) if (w[0].id, w[1]) not in done]
  logging.info('%s: %d items to ask (%d already in %s)', backend.name, len(todo), len(done), items_path)
  generate_seconds, generated = 0.0, 0
  start = time.time()
  with open(items_path, 'a') as f:
    for begin in range(0, len(todo), settings.batch_size):
      batch = todo[begin : begin + settings.batch_size]
      t0 = time.time()
      outputs = backend.generate(
        [w[2] for w in batch],
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        stop=prompts.STOP if settings.style == 'completion' else (),
        seed=seed,
      )
      generate_seconds += time.time() - t0
      generated += len(batch)
      graded = metrics.grade_all(
        [(split, text, pair) for (pair, split, _), text in zip(batch, outputs)],
        mode=settings.mode,
        extraction=settings.extraction,
      )  # Code mode runs the batch's programs in parallel.
      for (pair, split, _), text, row in zip(batch, outputs, graded):
        row = {**row, 'pair_id': pair.id, 'split': split, 'output': text}
        done[(pair.id, split)] = row
        f.write(json.dumps(row) + '\n')
      f.flush()
      logging.info(
        '%s: %d/%d items, %.1f items/s', backend.name, generated, len(todo), generated / generate_seconds
      )
  records = list(done.values())
  summary = metrics.summarize(records, bootstrap_reps=bootstrap_reps, seed=seed)
  summary.update(
    {
      'model': backend.name,
      'n_records': len(records),
      'settings': dataclasses.asdict(settings),
      'items_asked_this_session': generated,
      'generate_seconds_this_session': round(generate_seconds, 2),
      'items_per_second': round(generated / generate_seconds, 3) if generate_seconds else None,
      'wall_seconds_this_session': round(time.time() - start, 2),
      'empty_outputs': sum(1 for r in records if not r.get('output', '').strip()),
      **(details or {}),
    }
  )
  results.write_json(os.path.join(out_dir, SUMMARY_FILE), summary)
  return summary
