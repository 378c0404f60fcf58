"""A small reasoning LM trained in-repo: the evaluated model we fully control.

The paper evaluates pretrained LLMs; none but SmolLM2-135M can be loaded here, and SmolLM2 scores near zero on
grade-school maths. So the harness is also run on a character-level Llama-style decoder (``common.nn.DecoderLM``)
trained from scratch on generated problems: training pairs come from a seed disjoint from the test pairs and
the few-shot exemplars, and every training sequence is a zero-shot prompt of one split (``prompts.render_prompt``
with ``shots=0``) followed by its ideal answer (``prompts.render_split_target``). The loss covers only the
answer characters. ``train_mix`` weights the splits, so a user can train on single problems only (then the
compositional format is new at test time) or on all four. ``comp_excluded`` (template combinations, see
``eval_gsm.heldout``) keeps the compositional format of those combinations out of training, their single
problems in.

Evaluation uses the same zero-shot prompts (a model this small does not learn in context), through
``backends.jax_lm.JaxLMBackend`` with the KV cache, like any other backend.
"""

import os
import time
from typing import Collection, Dict, List, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np
from absl import logging

from common import checkpoint, results, sft
from common import nn as nn_lib
from common.errors import ConfigError
from common.tokenizers import CharTokenizer
from eval_gsm import core, pairs as pairs_lib, prompts

TRAIN_FILE = 'lm_train.json'
TOKENIZER_FILE = 'tokenizer.json'


def training_texts(
  pairs: Sequence[core.Pair],
  mix: Dict[str, float],
  seed: int,
  comp_excluded: Collection[Tuple[Optional[str], Optional[str]]] = (),
) -> List[Tuple[str, str]]:
  """(prompt, answer) texts: every pair contributes each split with probability ``mix[split]``, except the
  `comp` split of pairs whose (Q1 template, Q2 template) is in ``comp_excluded``."""
  rng = np.random.default_rng(seed)
  comp_excluded = frozenset(comp_excluded)
  out = []
  for pair in pairs:
    for split in core.SPLITS:
      weight = float(mix.get(split, 0.0))
      # Drawn before the exclusions below, so an excluded text leaves the other draws as they were.
      if weight > 0 and rng.random() < weight:
        if split == 'indep' and pair.indep_q1 is None:
          continue
        if split == 'comp' and pairs_lib.template_combination(pair) in comp_excluded:
          continue
        prompt = prompts.render_prompt(split, pair, None, style='completion', mode='cot', shots=0)
        out.append((prompt, prompts.render_split_target(split, pair, mode='cot')))
  return out


def make_tokenizer(texts: Sequence[Tuple[str, str]]) -> CharTokenizer:
  """A character tokenizer over every character of the training texts plus digits and common symbols."""
  chars = set('0123456789+-*/=().,$%#:?!\'" \nXQ')
  for prompt, answer in texts:
    chars.update(prompt)
    chars.update(answer)
  return CharTokenizer(''.join(sorted(chars)))


def validate(lm: ml_collections.ConfigDict) -> None:
  sft.validate(lm)
  unknown = set(lm.train_mix) - set(core.SPLITS)
  if unknown:
    raise ConfigError(f'lm.train_mix has unknown splits {sorted(unknown)}; use some of {list(core.SPLITS)}')
  if not any(float(v) > 0 for v in lm.train_mix.values()):
    raise ConfigError('lm.train_mix gives every split weight 0; give at least one a positive weight')


def disjoint_pairs(train_pairs: Sequence[core.Pair], test_pairs: Sequence[core.Pair]) -> List[core.Pair]:
  """Training pairs that share no question (Q1, Q2 or independent Q1) with any test pair."""

  def questions(p):
    return {p.q1.question, p.q2.question, p.q2_original.question} | (
      {p.indep_q1.question} if p.indep_q1 else set()
    )

  test = set().union(*(questions(p) for p in test_pairs)) if test_pairs else set()
  return [p for p in train_pairs if not (questions(p) & test)]


def train(
  lm: ml_collections.ConfigDict,
  workdir: str,
  seed: int,
  test_pairs: Sequence[core.Pair] = (),
  comp_excluded: Collection[Tuple[str, str]] = (),
) -> Tuple[dict, CharTokenizer, dict]:
  """Trains (or resumes, or reads back) the in-repo LM in ``workdir``; returns (params, tokenizer, summary).

  Training pairs come from ``lm.data_seed``; any that shares a question with ``test_pairs`` is dropped.
  ``comp_excluded``: template combinations whose compositional format is not trained (`training_texts`).
  A finished LM is read back without building its data again.
  """
  validate(lm)
  os.makedirs(workdir, exist_ok=True)
  if os.path.exists(os.path.join(workdir, TRAIN_FILE)) and os.path.exists(
    os.path.join(workdir, TOKENIZER_FILE)
  ):
    logging.info('in-repo LM in %s is trained; reading it back', workdir)
    _, params, tokenizer = _restore(lm, workdir)
    return params, tokenizer, results.read_json(os.path.join(workdir, TRAIN_FILE))
  start_time = time.time()
  built = pairs_lib.build_pairs(lm.train_pairs, lm.data_seed)
  train_pairs = disjoint_pairs(built, test_pairs)
  texts = training_texts(train_pairs, dict(lm.train_mix), lm.data_seed, comp_excluded)
  tok_path = os.path.join(workdir, TOKENIZER_FILE)
  if os.path.exists(tok_path):
    tokenizer = CharTokenizer.load(tok_path)
  else:
    tokenizer = make_tokenizer(texts)
    tokenizer.save(tok_path)
  data, mask, dropped = sft.encode_texts(tokenizer, texts, lm.seq_len)
  logging.info(
    'in-repo LM data: %d sequences from %d training pairs (%d longer than %d dropped), vocab %d, %.1f s',
    len(data),
    len(train_pairs),
    dropped,
    lm.seq_len,
    tokenizer.vocab_size,
    time.time() - start_time,
  )
  state, summary, _ = sft.fit(
    lm, workdir, data, mask, tokenizer.vocab_size, seed, summary_file=TRAIN_FILE, desc='in-repo LM'
  )
  if summary.pop('read_back', False):
    logging.info('in-repo LM is trained (%d steps); reading it back', lm.steps)
    return state.params, tokenizer, summary
  summary.update(
    {
      'dropped_sequences': int(dropped),
      'train_pairs': len(train_pairs),
      'train_pairs_dropped_for_test_overlap': len(built) - len(train_pairs),
      'vocab_size': int(tokenizer.vocab_size),
    }
  )
  if comp_excluded:
    excluded = frozenset(comp_excluded)
    summary['train_pairs_without_comp'] = sum(
      pairs_lib.template_combination(p) in excluded for p in train_pairs
    )
  sft.write_summary(workdir, TRAIN_FILE, summary)
  return state.params, tokenizer, summary


def load_trained(workdir: str, lm_dir: str = os.path.join('models', 'inrepo', 'lm')):
  """(model, params, tokenizer) of the in-repo LM trained by an eval_gsm run in ``workdir`` (``lm_dir``
  relative to it: `eval_gsm.heldout.LM_DIR` for the held-out models' LM)."""
  import json

  from common.errors import WorkdirError

  lm_dir = os.path.join(workdir, lm_dir)
  config_path = os.path.join(workdir, 'config.json')
  if not (os.path.exists(config_path) and os.path.exists(os.path.join(lm_dir, TRAIN_FILE))):
    raise WorkdirError(f'{workdir} holds no trained in-repo LM in {lm_dir} (run eval_gsm.main there first)')
  with open(config_path) as f:
    lm_config = ml_collections.ConfigDict(json.load(f)['lm'])
  return _restore(lm_config, lm_dir)


def _restore(
  lm_config: ml_collections.ConfigDict, lm_dir: str
) -> Tuple[nn_lib.DecoderLM, dict, CharTokenizer]:
  """(model, params, tokenizer) from the latest checkpoint in ``lm_dir`` (shapes from ``lm_config``)."""
  tokenizer = CharTokenizer.load(os.path.join(lm_dir, TOKENIZER_FILE))
  model = sft.make_model(lm_config, tokenizer.vocab_size)
  target = jax.eval_shape(lambda: sft.init_state(model, sft.make_optimizer(lm_config), lm_config.seq_len, 0))
  with checkpoint.Checkpointer(lm_dir, every=lm_config.checkpoint_every, keep=1) as ckpt:
    state = ckpt.restore(target)
  return model, state.params, tokenizer
