"""Supervised fine-tuning of a small ``DecoderLM`` on (prompt, answer) texts, resumable (eval_gsm, llm_rl).

The loss is next-token cross-entropy on the ANSWER tokens only (the prompt conditions, it is not learned).
Training is a jitted ``lax.scan`` of ``lm.log_every`` steps; the minibatch of step s is drawn from
key (seed, 1) folded with s, so a resumed run sees exactly the batches an uninterrupted one would.

The ``lm`` ConfigDict has the model keys (``num_layers``, ``d_model``, ``num_heads``, ``mlp_dim``,
``rope_theta``, ``bf16``) and the training keys (``steps``, ``batch_size``, ``seq_len``, ``learning_rate``,
``warmup_steps``, ``weight_decay``, ``grad_clip``, ``log_every``, ``checkpoint_every``).
"""

import dataclasses
import functools
import os
import time
from typing import Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from common import checkpoint, results, schedules
from common import metrics as metrics_lib
from common import nn as nn_lib
from common.errors import ConfigError

MODEL_KEYS = ('num_layers', 'd_model', 'num_heads', 'mlp_dim')
TRAIN_KEYS = ('steps', 'batch_size', 'seq_len', 'log_every', 'checkpoint_every')


@struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  rng: jax.Array


def validate(lm: ml_collections.ConfigDict, prefix: str = 'lm') -> None:
  """One-line ConfigErrors for non-positive sizes and a width that the heads do not divide."""
  for name in MODEL_KEYS + TRAIN_KEYS:
    value = lm[name]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ConfigError(f'{prefix}.{name} must be a positive int, got {value!r}')
  if lm.d_model % lm.num_heads:
    raise ConfigError(
      f'{prefix}.d_model ({lm.d_model}) must be a multiple of {prefix}.num_heads ({lm.num_heads})'
    )


def encode_texts(
  tokenizer, texts: Sequence[Tuple[str, str]], seq_len: int
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
    raise ConfigError(f'every training sequence is longer than seq_len + 1 = {width}; raise seq_len')
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


def answer_loss(model: nn_lib.DecoderLM, params, tokens: jax.Array, weights: jax.Array):
  """(mean cross-entropy, token accuracy) over the positions where ``weights[:, 1:]`` is set."""
  logits = model.apply({'params': params}, tokens[:, :-1])
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
  w = weights[:, 1:].astype(jnp.float32)
  loss = jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), 1.0)
  correct = (jnp.argmax(logits, -1) == tokens[:, 1:]).astype(jnp.float32)
  return loss, jnp.sum(correct * w) / jnp.maximum(jnp.sum(w), 1.0)


@dataclasses.dataclass
class Programs:
  model: nn_lib.DecoderLM
  tx: optax.GradientTransformation
  init: object
  train_chunk: object


def make_programs(
  lm: ml_collections.ConfigDict, vocab_size: int, data: jax.Array, mask: jax.Array
) -> Programs:
  """The jitted init and the jitted chunk of train steps (a ``lax.scan``; its length is static)."""
  model = make_model(lm, vocab_size)
  tx = make_optimizer(lm)
  seq_len = data.shape[1] - 1

  def step(state: TrainState, _):
    key = jax.random.fold_in(state.rng, state.step)  # Data is a function of (seed, step).
    idx = jax.random.randint(key, (lm.batch_size,), 0, data.shape[0])
    tokens = data[idx].astype(jnp.int32)
    grad_fn = jax.value_and_grad(functools.partial(answer_loss, model), has_aux=True)
    (loss, acc), grads = grad_fn(state.params, tokens, mask[idx])
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new, {'loss': loss, 'token_accuracy': acc, 'grad_norm': optax.tree.norm(grads)}

  def train_chunk(state, num_steps):
    state, stats = jax.lax.scan(step, state, None, length=num_steps)
    return state, jax.tree.map(jnp.mean, stats)

  init = functools.partial(init_state, model, tx, seq_len)
  return Programs(
    model, tx, jax.jit(init, static_argnums=0), jax.jit(train_chunk, static_argnums=1, donate_argnums=0)
  )


def fit(
  lm: ml_collections.ConfigDict,
  workdir: str,
  data: np.ndarray,
  mask: np.ndarray,
  vocab_size: int,
  seed: int,
  *,
  summary_file: str,
  stop_fn: Optional[Callable[[TrainState, int], Tuple[bool, dict]]] = None,
  desc: str = 'SFT',
) -> Tuple[TrainState, dict, Programs]:
  """Trains (or resumes, or reads back) in ``workdir``; returns (state, summary, programs).

  ``stop_fn(state, step)`` runs after every chunk and returns (stop, metrics): the metrics are logged at
  that step under ``eval/``, and ``stop`` ends training early (the summary records ``stopped_at``). Once
  ``summary_file`` exists in ``workdir`` the run is finished: the latest checkpoint is read back and the
  saved summary returned (``summary['read_back'] = True``), whatever ``lm.steps`` is.
  """
  os.makedirs(workdir, exist_ok=True)
  programs = make_programs(lm, vocab_size, jnp.asarray(data), jnp.asarray(mask))
  init = programs.init(seed)
  summary_path = os.path.join(workdir, summary_file)
  done = results.read_json(summary_path)
  with checkpoint.Checkpointer(workdir, every=lm.checkpoint_every, keep=1) as ckpt:
    state, start = ckpt.restore_or_init(init)
    if done is not None:
      return state, {**done, 'read_back': True}, programs
    t0, stopped_at = time.time(), None
    with metrics_lib.MetricWriter(workdir, resume_step=start) as writer:
      for begin, end in metrics_lib.chunks(lm.steps, lm.log_every, start=start, desc=desc):
        state, stats = programs.train_chunk(state, end - begin)
        logged = {'train': jax.device_get(stats)}
        stop = False
        if stop_fn is not None:
          stop, extra = stop_fn(state, end)
          if extra:
            logged['eval'] = extra
        writer.write(end, logged)
        if stop:
          stopped_at = end
        ckpt.save(end, state, force=stop or end == lm.steps)
        if stop:
          break
    train_seconds = time.time() - t0
  logged = metrics_lib.read_metrics(workdir)
  steps_run = (stopped_at or lm.steps) - start
  summary = {
    'num_params': int(sum(x.size for x in jax.tree.leaves(init.params))),
    'steps': int(lm.steps),
    'stopped_at': stopped_at,
    'batch_size': int(lm.batch_size),
    'seq_len': int(lm.seq_len),
    'train_sequences': int(len(data)),
    'resumed_from': int(start),
    'train_seconds_this_session': round(train_seconds, 2),
    'tokens_per_second': round(lm.batch_size * lm.seq_len * steps_run / max(train_seconds, 1e-9), 1),
    'initial_train_loss': logged[0]['train/loss'] if logged else None,
    'final_train_loss': logged[-1]['train/loss'] if logged else None,
    'final_token_accuracy': logged[-1]['train/token_accuracy'] if logged else None,
  }
  return state, summary, programs


def write_summary(workdir: str, summary_file: str, summary: dict) -> None:
  """Marks the run finished (``fit`` reads it back from now on)."""
  results.write_json(os.path.join(workdir, summary_file), summary)
