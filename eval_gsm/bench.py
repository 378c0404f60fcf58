"""Throughput of the evaluation backends: generated tokens per second of the JAX backend (batched, KV cache)
and items per second through the OpenAI-compatible HTTP path against the local server (eval_gsm.serve).

    python -m eval_gsm.bench --models=smollm2,inrepo --out=/tmp/eval_gsm_bench.json

For each model: one warm-up call (compiles), then timed calls with device synchronisation implied by the
host reading every generated token. Tokens/s counts the tokens the model generated (re-tokenised from the
returned texts, which are not cut: no stop strings, greedy, ``--max_tokens`` each, fewer only at eos). The
HTTP row evaluates the same items twice, straight through the backend and through server + client
(``--http_concurrency`` requests in flight), so its ratio is the cost of the HTTP path itself.
``inrepo`` is the in-repo LM's shape (eval_gsm/configs/default.py lm) with random weights: speed depends
only on shape.
"""

import json
import time

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from common import results
from eval_gsm import pairs as pairs_lib, prompts
from eval_gsm.configs import default

FLAGS = flags.FLAGS
flags.DEFINE_list('models', ['smollm2', 'inrepo'], 'Backends to time: smollm2, inrepo.')
flags.DEFINE_integer('prompts', 256, 'Prompts per timed generate call.')
flags.DEFINE_integer('max_tokens', 256, 'Tokens generated per prompt.')
flags.DEFINE_integer('shots', 8, 'Few-shot exemplars in each prompt (inrepo: always 0).')
flags.DEFINE_integer('max_batch', 128, 'Sequences decoded together.')
flags.DEFINE_integer('length_bucket', 256, 'Prompt lengths are rounded up to a multiple of this.')
flags.DEFINE_integer('repeats', 2, 'Timed calls (median reported).')
flags.DEFINE_integer('http_items', 256, 'Items for the HTTP-path comparison (0: skip it).')
flags.DEFINE_integer('http_concurrency', 128, 'Client requests in flight (>= max_batch fills the batches).')
flags.DEFINE_string('out', '', 'Write the rows as JSON here.')


def make_backend(name: str):
  from eval_gsm.backends import jax_lm

  kw = dict(max_batch=FLAGS.max_batch, length_bucket=FLAGS.length_bucket, dtype=jnp.bfloat16)
  if name == 'smollm2':
    return jax_lm.JaxLMBackend.from_gguf(None, name='smollm2', **kw), FLAGS.shots
  if name == 'inrepo':
    from common.tokenizers import CharTokenizer
    from common import sft

    lm_config = default.get_config().lm
    tokenizer = CharTokenizer(''.join(chr(c) for c in range(32, 127)) + '\n')
    model = sft.make_model(lm_config, tokenizer.vocab_size)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params']
    return jax_lm.JaxLMBackend(model, params, tokenizer, name='inrepo', **kw), 0
  raise app.UsageError(f'unknown model {name!r}; use smollm2 or inrepo')


def time_generate(backend, batch, **kw):
  times, out = [], None
  for _ in range(FLAGS.repeats):
    t0 = time.perf_counter()
    out = backend.generate(batch, **kw)
    times.append(time.perf_counter() - t0)
  times.sort()
  return times[len(times) // 2], out


def bench_model(name: str) -> dict:
  t0 = time.perf_counter()
  backend, shots = make_backend(name)
  load_s = time.perf_counter() - t0
  pairs = pairs_lib.build_pairs(max(FLAGS.prompts, FLAGS.http_items), seed=99)
  exemplars = prompts.make_exemplars(k=max(shots, 1), seed=1234)
  batch = [
    prompts.render_prompt('q1', p, exemplars, style='completion', mode='cot', shots=shots)
    for p in pairs[: FLAGS.prompts]
  ]
  prompt_tokens = [backend.count_tokens(p) for p in batch]
  t0 = time.perf_counter()
  backend.generate(batch, max_tokens=FLAGS.max_tokens)  # Warm-up: compiles every shape used below.
  warm_s = time.perf_counter() - t0
  seconds, outs = time_generate(backend, batch, max_tokens=FLAGS.max_tokens)
  generated = sum(backend.count_tokens(o) for o in outs)
  row = {
    'model': name,
    'prompts': len(batch),
    'mean_prompt_tokens': round(sum(prompt_tokens) / len(batch), 1),
    'max_tokens': FLAGS.max_tokens,
    'max_batch': FLAGS.max_batch,
    'load_seconds': round(load_s, 2),
    'first_call_seconds': round(warm_s, 2),
    'seconds': round(seconds, 3),
    'generated_tokens': int(generated),
    'generated_tokens_per_second': round(generated / seconds, 1),
    'prompt_plus_generated_tokens_per_second': round((generated + sum(prompt_tokens)) / seconds, 1),
  }
  if FLAGS.http_items:
    row.update(bench_http(backend, pairs[: FLAGS.http_items], exemplars, shots))
  logging.info('%s', json.dumps(row))
  return row


def bench_http(backend, pairs, exemplars, shots) -> dict:
  """Items/s of the same greedy requests straight through the backend and through server + HTTP client."""
  from eval_gsm import serve
  from eval_gsm.backends import http

  items = [
    prompts.render_prompt(split, p, exemplars, style='completion', mode='cot', shots=shots)
    for p in pairs
    for split in ('q1', 'q2')
  ]
  kw = dict(max_tokens=FLAGS.max_tokens, stop=prompts.STOP)
  backend.fixed_batch = True  # As served: every batch padded to max_batch (one shape per length bucket).
  backend.generate(items, **kw)  # Warm-up of these shapes.
  t0 = time.perf_counter()
  direct = backend.generate(items, **kw)
  direct_s = time.perf_counter() - t0
  with serve.make_server(
    backend, model_name=backend.name, max_batch=FLAGS.max_batch, batch_wait_ms=20
  ) as server:
    server.start()
    client = http.OpenAIBackend(server.url, backend.name, concurrency=FLAGS.http_concurrency)
    t0 = time.perf_counter()
    via_http = client.generate(items, **kw)
    http_s = time.perf_counter() - t0
  same = sum(a == b for a, b in zip(direct, via_http))
  return {
    'http_items': len(items),
    'direct_items_per_second': round(len(items) / direct_s, 2),
    'http_items_per_second': round(len(items) / http_s, 2),
    'http_over_direct': round(direct_s / http_s, 3),
    'http_same_text_fraction': round(same / len(items), 4),
  }


def main(argv):
  del argv
  rows = [bench_model(name) for name in FLAGS.models]
  info = results.run_info()
  print(json.dumps({'rows': rows, 'run': info}, indent=1))
  if FLAGS.out:
    results.write_json(FLAGS.out, {'rows': rows, 'run': info})


if __name__ == '__main__':
  app.run(main)
