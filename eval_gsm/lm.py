"""A small reasoning LM trained in-repo: the evaluated model we fully control.

The paper evaluates pretrained LLMs; none but SmolLM2-135M can be loaded here, and SmolLM2 scores near zero on
grade-school maths. So the harness is also run on a character-level Llama-style decoder (``common.nn.DecoderLM``)
trained from scratch on generated problems: training pairs come from a seed disjoint from the test pairs and
the few-shot exemplars, and every training sequence is a zero-shot prompt of one split (``prompts.render_prompt``
with ``shots=0``) followed by its ideal answer (``prompts.render_split_target``). The loss covers only the
answer characters. ``train_mix`` weights the splits, so a user can train on single problems only (then the
compositional format is new at test time) or on all four.

Evaluation uses the same zero-shot prompts (a model this small does not learn in context), through
``backends.jax_lm.JaxLMBackend`` with the KV cache, like any other backend.
"""

import dataclasses
import functools
import os
import time
from typing import Dict, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import struct

from common import checkpoint, results, schedules
from common import metrics as metrics_lib
from common import nn as nn_lib
from common.errors import ConfigError
from common.tokenizers import CharTokenizer
from eval_gsm import core, pairs as pairs_lib, prompts

TRAIN_FILE = 'lm_train.json'
TOKENIZER_FILE = 'tokenizer.json'


@struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  rng: jax.Array


def training_texts(pairs: Sequence[core.Pair], mix: Dict[str, float], seed: int) -> List[Tuple[str, str]]:
  """(prompt, answer) texts: every pair contributes each split with probability ``mix[split]``."""
  rng = np.random.default_rng(seed)
  out = []
  for pair in pairs:
    for split in core.SPLITS:
      weight = float(mix.get(split, 0.0))
      if weight > 0 and rng.random() < weight:
        if split == 'indep' and pair.indep_q1 is None:
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


def encode_texts(
  tokenizer: CharTokenizer, texts: Sequence[Tuple[str, str]], seq_len: int
) -> Tuple[np.ndarray, np.ndarray, int]:
  """Token ids ``[N, seq_len + 1]`` (bos, prompt, answer, eos, pad) and a loss mask on the answer tokens.

  Sequences longer than ``seq_len + 1`` are dropped (the count is returned) rather than cut, so the model
  never learns truncated answers.
  """
  rows, masks, dropped = [], [], 0
  width = seq_len + 1
  for prompt, answer in texts:
    p = [tokenizer.bos_id] + tokenizer.encode(prompt)
    a = tokenizer.encode(answer) + [tokenizer.eos_id]
    if len(p) + len(a) > width:
      dropped += 1
      continue
    ids = np.full(width, tokenizer.pad_id, np.int32)
    ids[: len(p) + len(a)] = p + a
    mask = np.zeros(width, np.bool_)
    mask[len(p) : len(p) + len(a)] = True
    rows.append(ids)
    masks.append(mask)
  if not rows:
    raise ConfigError(f'every training sequence is longer than lm.seq_len + 1 = {width}; raise lm.seq_len')
  dtype = np.uint8 if tokenizer.vocab_size <= 256 else np.int32
  return np.stack(rows).astype(dtype), np.stack(masks), dropped


def make_model(lm: ml_collections.ConfigDict, vocab_size: int, *, decode: bool = False) -> nn_lib.DecoderLM:
  return nn_lib.DecoderLM(
    vocab_size=vocab_size,
    num_layers=lm.num_layers,
    d_model=lm.d_model,
    num_heads=lm.num_heads,
    mlp_dim=lm.mlp_dim,
    rope_theta=lm.rope_theta,
    dtype=jnp.bfloat16 if lm.bf16 else jnp.float32,
    decode=decode,
  )


def make_optimizer(lm: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW (b2 0.95) with a warmup-cosine schedule to a tenth of the peak, global-norm clipping."""
  schedule = schedules.warmup_cosine(
    lm.learning_rate, lm.steps, lm.warmup_steps, end_value=lm.learning_rate / 10
  )
  return optax.chain(
    optax.clip_by_global_norm(lm.grad_clip),
    optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=lm.weight_decay),
  )


def init_state(
  model: nn_lib.DecoderLM, tx: optax.GradientTransformation, seq_len: int, seed: int
) -> TrainState:
  """The state before step 0: parameters from key (seed, 0), the loop's data key from (seed, 1)."""
  key = jax.random.PRNGKey(seed)
  params = model.init(jax.random.fold_in(key, 0), jnp.zeros((1, seq_len), jnp.int32))['params']
  return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jax.random.fold_in(key, 1))


@dataclasses.dataclass
class Programs:
  model: nn_lib.DecoderLM
  tx: optax.GradientTransformation
  init: object
  train_chunk: object


def make_programs(
  lm: ml_collections.ConfigDict, vocab_size: int, data: jax.Array, mask: jax.Array
) -> Programs:
  """The jitted init and the jitted chunk of ``lm.log_every`` train steps (a ``lax.scan``)."""
  model = make_model(lm, vocab_size)
  tx = make_optimizer(lm)
  seq_len = data.shape[1] - 1

  def loss_fn(params, tokens, weights):
    logits = model.apply({'params': params}, tokens[:, :-1])
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
    w = weights[:, 1:].astype(jnp.float32)
    loss = jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), 1.0)
    correct = (jnp.argmax(logits, -1) == tokens[:, 1:]).astype(jnp.float32)
    return loss, jnp.sum(correct * w) / jnp.maximum(jnp.sum(w), 1.0)

  def step(state: TrainState, _):
    key = jax.random.fold_in(state.rng, state.step)  # Data is a function of (seed, step).
    idx = jax.random.randint(key, (lm.batch_size,), 0, data.shape[0])
    tokens = data[idx].astype(jnp.int32)
    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, tokens, mask[idx])
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new, {'loss': loss, 'token_accuracy': acc, 'grad_norm': optax.global_norm(grads)}

  def train_chunk(state, num_steps):
    state, stats = jax.lax.scan(step, state, None, length=num_steps)
    return state, jax.tree.map(jnp.mean, stats)

  init = functools.partial(init_state, model, tx, seq_len)
  return Programs(
    model, tx, jax.jit(init, static_argnums=0), jax.jit(train_chunk, static_argnums=1, donate_argnums=0)
  )


def validate(lm: ml_collections.ConfigDict) -> None:
  for name in (
    'steps',
    'batch_size',
    'seq_len',
    'num_layers',
    'd_model',
    'num_heads',
    'mlp_dim',
    'log_every',
  ):
    value = lm[name]
    if not isinstance(value, int) or value <= 0:
      raise ConfigError(f'lm.{name} must be a positive int, got {value!r}')
  if lm.d_model % lm.num_heads:
    raise ConfigError(f'lm.d_model ({lm.d_model}) must be a multiple of lm.num_heads ({lm.num_heads})')
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
  lm: ml_collections.ConfigDict, workdir: str, seed: int, test_pairs: Sequence[core.Pair] = ()
) -> Tuple[dict, CharTokenizer, dict]:
  """Trains (or resumes, or reads back) the in-repo LM in ``workdir``; returns (params, tokenizer, summary).

  Training pairs come from ``lm.data_seed``; any that shares a question with ``test_pairs`` is dropped.
  """
  validate(lm)
  os.makedirs(workdir, exist_ok=True)
  start_time = time.time()
  built = pairs_lib.build_pairs(lm.train_pairs, lm.data_seed)
  train_pairs = disjoint_pairs(built, test_pairs)
  texts = training_texts(train_pairs, dict(lm.train_mix), lm.data_seed)
  tok_path = os.path.join(workdir, TOKENIZER_FILE)
  if os.path.exists(tok_path):
    tokenizer = CharTokenizer.load(tok_path)
  else:
    tokenizer = make_tokenizer(texts)
    tokenizer.save(tok_path)
  data_np, mask_np, dropped = encode_texts(tokenizer, texts, lm.seq_len)
  logging.info(
    'in-repo LM data: %d sequences from %d training pairs (%d longer than %d dropped), vocab %d, %.1f s',
    len(data_np),
    len(train_pairs),
    dropped,
    lm.seq_len,
    tokenizer.vocab_size,
    time.time() - start_time,
  )
  data, mask = jnp.asarray(data_np), jnp.asarray(mask_np)
  programs = make_programs(lm, tokenizer.vocab_size, data, mask)
  init = programs.init(seed)
  num_params = int(sum(x.size for x in jax.tree.leaves(init.params)))
  done = results.read_json(os.path.join(workdir, TRAIN_FILE))
  with checkpoint.Checkpointer(workdir, every=lm.checkpoint_every, keep=1) as ckpt:
    state, start = ckpt.restore_or_init(init)
    if done is not None and start == lm.steps:
      logging.info('in-repo LM is trained (%d steps); reading it back', lm.steps)
      return state.params, tokenizer, done
    t0 = time.time()
    with metrics_lib.MetricWriter(workdir, resume_step=start) as writer:
      for begin, end in metrics_lib.chunks(lm.steps, lm.log_every, start=start, desc='in-repo LM'):
        state, stats = programs.train_chunk(state, end - begin)
        writer.write(end, {'train': jax.device_get(stats)})
        ckpt.save(end, state, force=end == lm.steps)
    train_seconds = time.time() - t0
  logged = metrics_lib.read_metrics(workdir)
  summary = {
    'num_params': num_params,
    'steps': int(lm.steps),
    'batch_size': int(lm.batch_size),
    'seq_len': int(lm.seq_len),
    'train_sequences': int(len(data_np)),
    'dropped_sequences': int(dropped),
    'train_pairs': len(train_pairs),
    'train_pairs_dropped_for_test_overlap': len(built) - len(train_pairs),
    'vocab_size': int(tokenizer.vocab_size),
    'resumed_from': int(start),
    'train_seconds_this_session': round(train_seconds, 2),
    'tokens_per_second': round(lm.batch_size * lm.seq_len * (lm.steps - start) / max(train_seconds, 1e-9), 1),
    'initial_train_loss': logged[0]['train/loss'] if logged else None,
    'final_train_loss': logged[-1]['train/loss'] if logged else None,
    'final_token_accuracy': logged[-1]['train/token_accuracy'] if logged else None,
  }
  results.write_json(os.path.join(workdir, TRAIN_FILE), summary)
  return state.params, tokenizer, summary


def load_trained(workdir: str) -> Tuple[nn_lib.DecoderLM, dict, CharTokenizer]:
  """(model, params, tokenizer) of the in-repo LM trained by an eval_gsm run in ``workdir``."""
  import json

  from common.errors import WorkdirError

  lm_dir = os.path.join(workdir, 'models', 'inrepo', 'lm')
  config_path = os.path.join(workdir, 'config.json')
  if not (os.path.exists(config_path) and os.path.exists(os.path.join(lm_dir, TRAIN_FILE))):
    raise WorkdirError(
      f'{workdir} holds no trained in-repo LM (run eval_gsm.main with model inrepo there first)'
    )
  with open(config_path) as f:
    lm_config = ml_collections.ConfigDict(json.load(f)['lm'])
  tokenizer = CharTokenizer.load(os.path.join(lm_dir, TOKENIZER_FILE))
  model = make_model(lm_config, tokenizer.vocab_size)
  target = jax.eval_shape(lambda: init_state(model, make_optimizer(lm_config), lm_config.seq_len, 0))
  with checkpoint.Checkpointer(lm_dir, every=lm_config.checkpoint_every, keep=1) as ckpt:
    state = ckpt.restore(target)
  return model, state.params, tokenizer
