"""Throughput of the RL loop's two costs: sampling (tokens/s with the KV cache vs full recomputation) and
training (policy-update tokens/s), for the model shape of a config (random weights: speed depends on shape).

    python -m llm_rl.bench --config=llm_rl/configs/default.py --out=/tmp/llm_rl_bench.json
    python -m llm_rl.bench --config=llm_rl/configs/default.py:smoke --batch=8 --new_tokens=16   # CPU check

Sampling: ``--batch`` prompts of the config's prompt length, ``--new_tokens`` each (no eos: every token is
generated), greedy. With the cache: ``common.generate`` (prefill + chunked single-token decoding). Without:
every new token runs the whole padded sequence through the model again (one jitted forward of fixed shape
per token), what a sampler without a cache pays. Training: ``rl.Programs.policy_step`` on minibatches of the
config's size and layout (forward + backward + Adam), tokens = minibatch x layout length. One warm-up call
(compiles) before each timed call; the host reads every result, so device time is included.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from common import generate as generate_lib
from common import results, sft
from common.tokenizers import CharTokenizer
from llm_rl import rl as rl_lib
from llm_rl import rollouts, tasks


def _model_and_params(config):
  tokenizer = CharTokenizer(tasks.ALPHABET)
  from llm_rl import train

  lm = train.lm_config(config)
  model = sft.make_model(lm, tokenizer.vocab_size)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params']
  return model, params, tokenizer


def sampling_rows(config, batch: int, new_tokens: int, repeats: int):
  model, params, tokenizer = _model_and_params(config)
  prompt_len = config.layout.prompt_len
  rng = np.random.default_rng(0)
  prompts = [list(rng.integers(4, tokenizer.vocab_size, prompt_len)) for _ in range(batch)]

  def with_cache():
    out = generate_lib.generate(
      model, params, prompts, max_new_tokens=new_tokens, batch_size=batch, length_bucket=prompt_len, chunk=32
    )
    return sum(map(len, out))

  length = prompt_len + new_tokens
  forward = jax.jit(lambda p, t: model.apply({'params': p}, t))

  def without_cache():
    tokens = np.zeros((batch, length), np.int32)
    tokens[:, :prompt_len] = np.asarray(prompts)
    tokens = jnp.asarray(tokens)
    for t in range(prompt_len, length):
      logits = forward(params, tokens)
      tokens = tokens.at[:, t].set(jnp.argmax(logits[:, t - 1], -1))
    return int(np.asarray(tokens[:, prompt_len:]).size)

  rows = []
  for name, fn in (('kv_cache', with_cache), ('recompute', without_cache)):
    fn()  # Warm-up: compiles.
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      n = fn()
      times.append(time.perf_counter() - t0)
    seconds = float(np.median(times))
    rows.append(
      {
        'phase': f'sampling_{name}',
        'tokens': n,
        'seconds': round(seconds, 4),
        'tokens_per_s': round(n / seconds, 1),
      }
    )
  return rows


def training_row(config, repeats: int):
  model, params, _ = _model_and_params(config)
  rl = config.rl.copy_and_resolve_references()
  layout = rollouts.Layout(config.layout.prompt_len, config.layout.response_len)
  programs = rl_lib.Programs(model, layout, rl)
  state = programs.init_state(params)
  b, r = rl.minibatch_size, layout.response_len
  rng = np.random.default_rng(1)
  batch = {
    'tokens': jnp.asarray(rng.integers(4, 40, (b, layout.length)), jnp.int32),
    'kv_start': jnp.zeros((b,), jnp.int32),
    'mask': jnp.ones((b, r), bool),
    'logp_old': jnp.full((b, r), -2.0),
    'logp_ref': jnp.full((b, r), -2.0),
    'advantages': jnp.asarray(rng.normal(size=(b, r)), jnp.float32),
  }
  p, o = state.params, state.opt_state
  p, o, s = programs.policy_step(p, o, batch)
  jax.block_until_ready(s)
  steps = 5
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      p, o, s = programs.policy_step(p, o, batch)
    jax.block_until_ready(s)
    times.append((time.perf_counter() - t0) / steps)
  seconds = float(np.median(times))
  tokens = b * layout.length
  return {
    'phase': 'train_policy_step',
    'tokens': tokens,
    'seconds': round(seconds, 5),
    'tokens_per_s': round(tokens / seconds, 1),
  }


def main(argv):
  del argv
  from common import config as config_lib

  config = config_lib.load_config(FLAGS.config)
  rows = sampling_rows(config, FLAGS.batch, FLAGS.new_tokens, FLAGS.repeats) + [
    training_row(config, FLAGS.repeats)
  ]
  n_params = int(sum(x.size for x in jax.tree.leaves(_model_and_params(config)[1])))
  speedup = rows[0]['tokens_per_s'] / rows[1]['tokens_per_s']
  for row in rows:
    print(
      f'{row["phase"]:>20}: {row["tokens_per_s"]:>12,.0f} tokens/s ({row["tokens"]} tokens in {row["seconds"]} s)'
    )
  print(f'KV cache vs recompute: {speedup:.1f}x; {n_params:,} parameters; {jax.devices()[0].device_kind}')
  if FLAGS.out:
    results.write_json(
      FLAGS.out,
      {
        'rows': rows,
        'kv_cache_speedup': round(speedup, 2),
        'num_params': n_params,
        'batch': FLAGS.batch,
        'new_tokens': FLAGS.new_tokens,
        'config': FLAGS.config,
        'run': results.run_info(),
      },
    )


if __name__ == '__main__':
  from absl import app, flags

  FLAGS = flags.FLAGS
  flags.DEFINE_string(
    'config', 'llm_rl/configs/default.py', 'Config (path[:arg]) whose model shape is timed.'
  )
  flags.DEFINE_integer('batch', 256, 'Sequences sampled together.')
  flags.DEFINE_integer('new_tokens', 64, 'Tokens generated per sequence.')
  flags.DEFINE_integer('repeats', 3, 'Timed calls (median reported).')
  flags.DEFINE_string('out', '', 'Write the rows as JSON here.')
  app.run(main)
