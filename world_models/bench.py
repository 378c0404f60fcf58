"""Throughput of the world model's training step and of imagination, beside a plain-JAX reference loop.

    python -m world_models.bench --config=world_models/configs/gpu.py --steps=50 --out=runs/gpu/wm_bench.json
    python -m world_models.bench --config=world_models/configs/default.py:smoke --out=/tmp/wm_bench.json # CPU

Rows, all at the config's sizes on random parameters and a random replay (speed depends on shapes only):

- `world model + connector + aligner`, project, scanned chunk: the run's own jitted chunk
  (`train.Functions.wm_chunk`, a `lax.scan` of `train.world_model_step`: replay sampling, world-model,
  connector and aligner updates).
- `world model only` three ways, the same work (replay sampling with `train.sample_batch`, the world-model
  loss and gradient, clip + Adam): the project's code (`train.world_model_loss`, the optax chain) as a scanned
  chunk and as a Python loop of one jitted update per step, and the plain-JAX reference (`reference.py`: the
  same model, loss and Adam written with `jax.numpy`/`lax`, checked equal to the project's in
  `reference_test.py`) as a Python loop of one jitted update per step, the straightforward way. Project loop
  vs reference loop isolates the implementation; scanned vs loop isolates the chunking.
- `imagine (forward)`, project and reference: the imagination rollout of behaviour learning
  (`behaviour.imagine`: the actor's samples drive `behaviour.horizon` prior steps) from
  `behaviour.batch_size x wm.seq_len` start states (the data-based start count), one jitted call per rollout.
- `behaviour step`, project, scanned chunk: the run's actor-critic chunk (`train.Functions.behaviour_chunk`,
  method `genrl`: start states from replay posteriors, imagination, GenRL reward, dynamics-backprop actor
  and critic updates); imagined steps = horizon x starts per update.
- DreamerV3 (a reference row, not measured): only what `../shared/research/vision_language.md` section 4.1
  gives, marked unverified, converted to updates per second with the preset's train ratio and batch.

Timing: one warm-up call (compiles; its wall-clock reported), then `--repeats` timed calls of `--steps`
steps (device-synchronised), median. The replay holds `--replay_envs` episodes of `data.length` steps (the
full gpu replay is 6.4 GB; sampling cost does not depend on its size). Speeds are not asserted anywhere.
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from common import results
from world_models import behaviour
from world_models import reference
from world_models import train

# From ../shared/research/vision_language.md section 4.1 (the DreamerV3 code's configs.yaml [code], and the
# sheeprl issue #336 thread's reading of the paper's budget, not checked against the paper: unverified).
DREAMERV3 = {
  'env_steps_per_gpu_day': 1_000_000,  # "about 1M DMC-vision steps per GPU-day" (sheeprl #336), unverified.
  'train_ratio': 256,  # dmc_vision preset: replayed steps per env step [code].
  'batch': (16, 64),  # configs.yaml batch 16 x 64 [code].
}


def fake_replay(config, action_dim: int, num_envs: int, seed: int = 0) -> dict:
  """A replay of the run's layout (uint8 frames, actions, per-step unit embeddings), random (NumPy: nothing
  to compile), committed to the device."""
  rng = np.random.default_rng(seed)
  length, size, n, e = config.data.length, config.env.image_size, config.vlm.n_frames, config.vlm.embed_dim
  frames = rng.integers(0, 256, (num_envs, length, size, size, 3), dtype=np.uint8)
  actions = rng.uniform(-1, 1, (num_envs, length, action_dim)).astype(np.float32)
  embeds = rng.normal(size=(num_envs, length // n, e)).astype(np.float32)
  embeds = np.repeat(embeds / np.linalg.norm(embeds, axis=-1, keepdims=True), n, axis=1)
  return train._commit({'frames': frames, 'actions': actions, 'embeds': embeds})


def _time(call, repeats: int):
  """(warm-up seconds, median seconds) of `call()`, each synchronised; the first call is the warm-up."""
  t0 = time.perf_counter()
  jax.block_until_ready(call())
  warm = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - t0)
  return warm, statistics.median(times)


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _row(measure, implementation, *, steps, seconds, warm, batch, unit, per_step, params, note=''):
  rate = steps / seconds
  return {
    'measure': measure,
    'implementation': implementation,
    'batch': batch,
    'steps': steps,
    'median_seconds': round(seconds, 5),
    'steps_per_s': round(rate, 2),
    'ms_per_step': round(1000 / rate, 3),
    'unit': unit,
    'per_s': round(rate * per_step, 1),
    'warmup_s': round(warm, 2),
    'params': params,
    'note': note,
  }


def _scanned(step):
  """`step(params, opt, data, rng) -> (params, opt, loss)` as one jitted `lax.scan` over a chunk of keys."""

  @jax.jit
  def chunk(params, opt, data, keys):
    def body(carry, key):
      params, opt, loss = step(*carry, data, key)
      return (params, opt), loss

    (params, opt), losses = jax.lax.scan(body, (params, opt), keys)
    return params, opt, jnp.mean(losses)

  return chunk


def _looped(step):
  """The same `step` jitted once and called from a Python loop, one update (one dispatch) per key."""
  jitted = jax.jit(step)

  def loop(params, opt, data, keys):
    for key in keys:
      params, opt, loss = jitted(params, opt, data, key)
    return params, opt, loss

  return loop


def world_model_rows(config, fns, data, steps: int, repeats: int) -> list[dict]:
  """The run's chunk (world model + connector + aligner); the world-model update alone, as the project
  writes it (scanned chunk and Python loop) and as the plain-JAX reference (Python loop)."""
  parts, w = fns.parts, config.wm
  state = train._commit(fns.init_wm(jax.random.PRNGKey(0)))
  wm_params = _count(state.wm_params)
  common = dict(
    steps=steps,
    batch=f'{w.batch_size} x {w.seq_len}',
    unit='replayed frames/s',
    per_step=w.batch_size * w.seq_len,
    params=wm_params,
  )
  holder = {'state': state}

  def run_chunk():
    holder['state'], metrics = fns.wm_chunk(holder['state'], data, steps)
    return metrics

  warm, sec = _time(run_chunk, repeats)
  note = f'connector {_count(state.conn_params):,} + aligner {_count(state.align_params):,} params too'
  rows = [
    _row(
      'world model + connector + aligner',
      'project, scanned chunk (as the run)',
      seconds=sec,
      warm=warm,
      note=note,
      **common,
    )
  ]

  def project_step(params, opt, data, rng):
    rng_batch, rng_wm = jax.random.split(rng)
    b = train.sample_batch(data, rng_batch, w.batch_size, w.seq_len, config.vlm.n_frames)
    (loss, _), grads = jax.value_and_grad(train.world_model_loss, has_aux=True)(params, parts, b, rng_wm)
    updates, opt = parts.wm_tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  def reference_step(params, opt, data, rng):
    rng_batch, rng_wm = jax.random.split(rng)
    b = train.sample_batch(data, rng_batch, w.batch_size, w.seq_len, config.vlm.n_frames)
    loss, grads = jax.value_and_grad(reference.world_model_loss)(params, config, b, rng_wm)
    params, opt = reference.adam_update(params, grads, opt, lr=w.lr, eps=w.eps, clip=w.clip)
    return params, opt, loss

  init_ref = jax.jit(lambda r: reference.init(config, parts.env.ACTION_DIM, r))
  ref_params = train._commit(init_ref(jax.random.PRNGKey(2)))
  keys = jax.random.split(jax.random.PRNGKey(3), steps)
  key_list = list(keys)
  variants = (
    ('project, scanned chunk', _scanned(project_step), (state.wm_params, state.wm_opt), keys, ''),
    (
      'project, Python loop of jitted steps',
      _looped(project_step),
      (state.wm_params, state.wm_opt),
      key_list,
      '',
    ),
    (
      'plain JAX reference, Python loop of jitted steps',
      _looped(reference_step),
      (ref_params, train._commit(reference.adam_init(ref_params))),
      key_list,
      'reference.py: jax.numpy/lax, hand-written Adam',
    ),
  )
  for name, fn, carry, chunk_keys, note in variants:
    holder[name] = carry

    def call(name=name, fn=fn, chunk_keys=chunk_keys):
      params, opt, loss = fn(*holder[name], data, chunk_keys)
      holder[name] = (params, opt)
      return loss

    warm, sec = _time(call, repeats)
    rows.append(_row('world model only', name, seconds=sec, warm=warm, note=note, **common))
  return rows


def _starts(config, n: int, seed: int):
  """`n` imagination start states: normal deter, uniform one-hot stoch (NumPy), committed."""
  w, rng = config.wm, np.random.default_rng(seed)
  stoch = np.eye(w.classes, dtype=np.float32)[rng.integers(0, w.classes, (n, w.stoch))]
  deter = rng.normal(size=(n, w.deter)).astype(np.float32)
  return train._commit({'deter': deter, 'stoch': stoch, 'logits': np.zeros_like(stoch)})


def imagination_rows(config, fns, data, steps: int, repeats: int) -> list[dict]:
  """Imagination forward (project and reference) and the run's behaviour chunk, in imagined steps/s."""
  parts, b, w = fns.parts, config.behaviour, config.wm
  n = b.batch_size * w.seq_len
  h = b.horizon
  wm_state = train._commit(fns.init_wm(jax.random.PRNGKey(4)))
  bstate = train._commit(fns.init_behaviour(jax.random.PRNGKey(5)))
  start = _starts(config, n, 6)
  keys = list(jax.random.split(jax.random.PRNGKey(7), steps))
  wm_params = _count(wm_state.wm_params)
  common = dict(
    steps=steps, batch=f'{n} starts x {h}', unit='imagined steps/s', per_step=n * h, params=wm_params
  )

  @jax.jit
  def project(wm_params, actor_params, start, rng):
    return behaviour.imagine(parts.wm, wm_params, parts.actor, actor_params, start, h, rng)[0]

  @jax.jit
  def plain(wm_params, actor_params, start, rng):
    return reference.imagine(config, wm_params, actor_params, start, h, rng)

  rows = []
  for name, fn in (('project (one jitted rollout per call)', project), ('plain JAX reference', plain)):

    def run(fn=fn):
      for key in keys:
        out = fn(wm_state.wm_params, bstate.actor_params, start, key)
      return out

    warm, sec = _time(run, repeats)
    rows.append(_row('imagine (forward)', name, seconds=sec, warm=warm, **common))

  target = _starts(config, h, 8)['stoch']
  vlm_params = train._commit(fns.vlm_init(jax.random.PRNGKey(9)))  # Unused by the GenRL reward.
  inputs = {'wm_state': wm_state, 'vlm_params': vlm_params, 'data': data, 'target': target}
  holder = {'state': bstate}

  def run_behaviour():
    holder['state'], metrics = fns.behaviour_chunk(holder['state'], inputs, steps, 'genrl')
    return metrics

  warm, sec = _time(run_behaviour, repeats)
  note = f'actor {_count(bstate.actor_params):,} + critic {_count(bstate.critic_params):,} params'
  rows.append(
    _row(
      'behaviour step (imagine + reward + actor/critic updates)',
      'project, scanned chunk (as the run)',
      seconds=sec,
      warm=warm,
      note=note,
      **common,
    )
  )
  return rows


def dreamerv3_row() -> dict:
  """DreamerV3's throughput as far as the research note gives it (not measured here): env steps per second
  from '1M DMC-vision steps per GPU-day', and updates per second through train_ratio and the batch."""
  d = DREAMERV3
  env_per_s = d['env_steps_per_gpu_day'] / 86_400
  frames_per_update = d['batch'][0] * d['batch'][1]
  updates = env_per_s * d['train_ratio'] / frames_per_update
  return {
    'measure': 'DreamerV3, published budget (not measured here)',
    'implementation': 'danijar/dreamerv3 (JAX), GPU not named in the note',
    'batch': f'{d["batch"][0]} x {d["batch"][1]}',
    'steps_per_s': round(updates, 2),
    'ms_per_step': round(1000 / updates, 1),
    'unit': 'replayed frames/s',
    'per_s': round(updates * frames_per_update, 1),
    'env_steps_per_s': round(env_per_s, 1),
    'params': None,
    'note': (
      'unverified: ~1M DMC-vision env steps per GPU-day (research note 4.1, from sheeprl #336, not the '
      f'paper) x train_ratio {d["train_ratio"]} / {frames_per_update} replayed frames per update; a larger '
      'model (defaults: deter 8192, 32 x 64 stoch, CNN depth 64)'
    ),
  }


def markdown(rows) -> str:
  lines = [
    '| measure | implementation | batch | steps/s | ms/step | throughput | world-model params | warm-up s |',
    '|---|---|---|---|---|---|---|---|',
  ]
  for r in rows:
    params = '-' if r.get('params') is None else f'{r["params"]:,}'
    warm = r.get('warmup_s', '-')
    lines.append(
      f'| {r["measure"]} | {r["implementation"]} | {r["batch"]} | {r["steps_per_s"]:,} | '
      f'{r["ms_per_step"]} | {r["per_s"]:,.0f} {r["unit"]} | {params} | {warm} |'
    )
  return '\n'.join(lines)


def run(config, *, steps: int, repeats: int, replay_envs: int, out: str = '') -> dict:
  """Every row at `config`'s sizes; prints the markdown table and writes the JSON to `out` (when given)."""
  train.validate(config)
  fns = train.functions(config)
  envs = min(replay_envs, config.data.num_envs)
  data = fake_replay(config, fns.parts.env.ACTION_DIM, envs)
  rows = world_model_rows(config, fns, data, steps, repeats)
  rows += imagination_rows(config, fns, data, steps, repeats)
  speed = {r['implementation']: r['steps_per_s'] for r in rows if r['measure'] == 'world model only'}
  ref = speed['plain JAX reference, Python loop of jitted steps']
  ratios = {
    'project_scanned_over_reference_loop': round(speed['project, scanned chunk'] / ref, 3),
    'project_loop_over_reference_loop': round(speed['project, Python loop of jitted steps'] / ref, 3),
    'project_scanned_over_project_loop': round(
      speed['project, scanned chunk'] / speed['project, Python loop of jitted steps'], 3
    ),
  }
  rows.append(dreamerv3_row())
  result = {
    'config': config.experiment,
    'env': config.env.name,
    'image_size': config.env.image_size,
    'wm': {
      k: config.wm[k] for k in ('deter', 'hidden', 'stoch', 'classes', 'depth', 'batch_size', 'seq_len')
    },
    'steps_per_call': steps,
    'repeats': repeats,
    'replay_envs': envs,
    'ratios': ratios,
    'rows': rows,
    'run': results.run_info(),
  }
  print(markdown(rows))
  print(json.dumps(ratios))
  if out:
    results.write_json(out, result)
  return result


def main(argv):
  del argv
  run(
    _CONFIG.value, steps=_STEPS.value, repeats=_REPEATS.value, replay_envs=_REPLAY_ENVS.value, out=_OUT.value
  )


if __name__ == '__main__':
  from absl import app, flags
  from ml_collections import config_flags

  _CONFIG = config_flags.DEFINE_config_file('config', 'world_models/configs/default.py:smoke', 'Run config.')
  _STEPS = flags.DEFINE_integer('steps', 20, 'Steps (updates or rollouts) per timed call.')
  _REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls (median).')
  _REPLAY_ENVS = flags.DEFINE_integer(
    'replay_envs', 64, 'Episodes in the random replay (at most data.num_envs).'
  )
  _OUT = flags.DEFINE_string('out', '', 'Write the rows as JSON here.')
  app.run(main)
