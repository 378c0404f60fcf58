"""Times one experiment config's training step, variant by variant, to see where a run's time goes.

    python -m attention.tools.step_time --config=attention/configs/flipflop.py
    python -m attention.tools.step_time --config=attention/configs/flipflop.py \
      --settings='base;xla:model.sb_implementation=xla;b128:batch_size=128' --out=step_time.json

For every variant of the config and every setting (``name:key=value,key=value`` overrides of the config,
semicolon-separated; ``base`` is the config as it is) it compiles the project's own ``train_chunk`` (one
``lax.scan`` of ``--steps`` steps; that first, compiling chunk is the warm-up) and reports the median wall
time per step over ``--repeats`` more chunks. It also times the batch generation alone and the loss's
forward+backward alone (no optimizer, one step, outside the scan), so a slow step can be traced to data,
model or loop. The first chunk's time (with compilation) is reported too. Nothing is written to a workdir.
"""

from __future__ import annotations

import collections
import functools
import glob
import gzip
import json
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
from absl import app, flags, logging
from ml_collections import config_flags

from attention import train
from common import config as config_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'An attention config file.', lock_config=False)
flags.DEFINE_string('settings', 'base', 'Semicolon-separated name[:key=value,...] config overrides.')
flags.DEFINE_string('variants', '', "Comma-separated variants (default: the config's).")
flags.DEFINE_integer('steps', 50, 'Steps per timed chunk.')
flags.DEFINE_integer('repeats', 3, 'Timed chunks (median reported).')
flags.DEFINE_string('out', '', 'Write the rows as JSON here.')
flags.DEFINE_string(
  'trace_dir', '', 'If set, profile one more chunk per row and list its costliest device ops.'
)
flags.DEFINE_integer('top', 15, 'Device ops listed per row with --trace_dir.')


def parse_settings(text: str) -> list[tuple[str, dict]]:
  """``'a;b:x=1,model.y=z'`` -> ``[('a', {}), ('b', {'x': '1', 'model.y': 'z'})]``."""
  out = []
  for item in filter(None, (s.strip() for s in text.split(';'))):
    name, _, rest = item.partition(':')
    overrides = {}
    for pair in filter(None, rest.split(',')):
      key, sep, value = pair.partition('=')
      if not sep:
        raise ValueError(f'--settings: {pair!r} in {item!r} is not key=value')
      overrides[key.strip()] = value.strip()
    out.append((name.strip(), overrides))
  if not out:
    raise ValueError('--settings is empty')
  return out


def apply_overrides(config, overrides: dict):
  """A copy of ``config`` with dotted ``key=value`` overrides, each value cast to the type it replaces (as
  ``--config=file.py:arg`` does, ``common.config.convert_text``)."""
  c = config.copy_and_resolve_references()
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = c
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise ValueError(f'--settings: the config has no key {key!r}')
    node[leaf] = config_lib.convert_text(key, value, node[leaf])
  return c


def summarise_trace(trace_dir: str, steps: int, top: int) -> list[dict]:
  """The ``top`` device ops of the newest profile under ``trace_dir`` by total time, in ms per step.

  Reads the ``*.trace.json.gz`` that ``jax.profiler`` writes next to its xplane. Device events are those of
  processes named like ``/device:GPU:0``; without any (CPU), every host thread's events except Python's.
  """
  paths = sorted(glob.glob(os.path.join(trace_dir, 'plugins', 'profile', '*', '*.trace.json.gz')))
  if not paths:
    return []
  events = json.load(gzip.open(paths[-1]))['traceEvents']
  names = {
    e['pid']: e['args']['name'] for e in events if e.get('ph') == 'M' and e.get('name') == 'process_name'
  }
  device = {pid for pid, n in names.items() if '/device:' in n}
  totals, counts = collections.Counter(), collections.Counter()
  for e in events:
    if (
      e.get('ph') != 'X' or (device and e['pid'] not in device) or (not device and e['name'].startswith('$'))
    ):
      continue
    totals[e['name']] += e.get('dur', 0.0)
    counts[e['name']] += 1
  return [
    {
      'op': name[:160],
      'ms_per_step': round(us / 1e3 / steps, 4),
      'calls_per_step': round(counts[name] / steps, 2),
    }
    for name, us in totals.most_common(top)
  ]


def _seconds(fn) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t0


def time_variant(config, variant: str, steps: int, repeats: int, trace_dir: str = '', top: int = 15) -> dict:
  train.validate(config)
  train_data, _, _ = train.load_task_data(config)
  programs = train.make_programs(config, variant)
  state = train.init_state(programs, 0)
  t0 = time.perf_counter()
  state, stats = programs.train_chunk(state, train_data, steps)  # Compiles; its state goes on warm.
  jax.block_until_ready(stats)
  compile_s = time.perf_counter() - t0
  logging.info('%s: first chunk (compile and run) %.1f s', variant, compile_s)
  chunk_s = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    state, stats = programs.train_chunk(state, train_data, steps)
    jax.block_until_ready(stats)
    chunk_s.append(time.perf_counter() - t0)
  logging.info('%s: %d timed chunks, median %.3f s', variant, repeats, statistics.median(chunk_s))

  ops = []
  if trace_dir:
    with tempfile.TemporaryDirectory(dir=trace_dir) as tmp:
      with jax.profiler.trace(tmp):
        state, stats = programs.train_chunk(state, train_data, steps)
        jax.block_until_ready(stats)
      ops = summarise_trace(tmp, steps, top)

  batch_fn = jax.jit(
    functools.partial(train.make_batch, config, batch=config.batch_size, length=config.seq_len)
  )
  key = jax.random.PRNGKey(1)
  batch = batch_fn(train_data, key)
  batch_s = statistics.median(_seconds(lambda: batch_fn(train_data, key)) for _ in range(5))

  @jax.jit
  def grad_fn(params, batch):
    def loss(p):
      logits = programs.model.apply({'params': p}, batch['inputs'])
      ce, _ = train.token_stats(config, logits, batch['targets'])
      return jnp.mean(ce)

    return jax.grad(loss)(params)

  grad_fn(state.params, batch)
  grad_s = statistics.median(_seconds(lambda: grad_fn(state.params, batch)) for _ in range(5))
  step_ms = 1e3 * statistics.median(chunk_s) / steps
  tokens = config.batch_size * config.seq_len
  return {
    'variant': variant,
    'step_ms': round(step_ms, 3),
    'tokens_per_s': round(tokens / step_ms * 1e3),
    'first_chunk_s': round(compile_s, 2),
    'batch_ms': round(1e3 * batch_s, 3),
    'fwd_bwd_ms': round(1e3 * grad_s, 3),
    **({'top_ops': ops} if trace_dir else {}),
  }


def main(argv):
  del argv
  if FLAGS.trace_dir:
    os.makedirs(FLAGS.trace_dir, exist_ok=True)
  if FLAGS.config is None:
    raise app.UsageError('--config is required')
  settings = parse_settings(FLAGS.settings)
  logging.info('jax %s on %s', jax.__version__, jax.devices()[0].device_kind)
  rows = []
  for name, overrides in settings:
    config = apply_overrides(FLAGS.config, overrides)
    variants = FLAGS.variants.split(',') if FLAGS.variants else list(config.variants)
    for variant in variants:
      timed = time_variant(config, variant, FLAGS.steps, FLAGS.repeats, FLAGS.trace_dir, FLAGS.top)
      row = {'setting': name, 'overrides': overrides, **timed}
      rows.append(row)
      print(json.dumps(row), flush=True)
      if FLAGS.out:
        with open(FLAGS.out, 'w') as f:
          json.dump(
            {'device': jax.devices()[0].device_kind, 'jax': jax.__version__, 'rows': rows}, f, indent=1
          )


if __name__ == '__main__':
  app.run(main)
