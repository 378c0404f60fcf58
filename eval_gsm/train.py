"""`train_and_evaluate`: build (or read) the pairs, evaluate every configured model, report the gaps.

The workdir holds ``pairs.jsonl`` (the exact test items), ``models/<name>/`` per model (``items.jsonl``,
``summary.json``; the in-repo LM's checkpoints and metrics under ``models/inrepo/lm/``), ``report.md``,
``report.html``, ``gap.png`` and ``results.json`` (the claims). The held-out models (``eval_gsm.heldout``)
are asked their own pairs, ``models/<name>/pairs.jsonl``, and share one LM in ``models/inrepo_heldout/lm/``.
Everything resumes: a finished model is read back, an interrupted one continues from its ``items.jsonl``.
"""

import contextlib
import os
import time
from typing import List, Tuple

import jax.numpy as jnp
import ml_collections
from absl import logging

from common import results, sft
from common.errors import ConfigError
from eval_gsm import core, evaluate, heldout, pairs as pairs_lib, prompts, readers, report, synthetic

INREPO = ('inrepo',) + heldout.MODELS  # In-repo LMs: asked zero-shot in their training format.
REAL = INREPO + ('smollm2', 'smollm2_http', 'http')
MODELS = synthetic.KINDS + REAL
PAIRS_FILE = 'pairs.jsonl'


def validate(config: ml_collections.ConfigDict) -> None:
  unknown = [m for m in config.models if m not in MODELS]
  if unknown:
    raise ConfigError(f'unknown models {unknown}; choose from {list(MODELS)}')
  if len(set(config.models)) != len(config.models):
    raise ConfigError(f'models lists a model twice: {list(config.models)}')
  for key, allowed in (
    ('style', ('completion', 'chat')),
    ('mode', ('cot', 'code')),
    ('extraction', ('strict', 'flexible')),
    ('on_bad_line', ('skip', 'stop')),
  ):
    if config[key] not in allowed:
      raise ConfigError(f'{key} must be one of {list(allowed)}, got {config[key]!r}')
  for key in ('num_pairs', 'max_tokens', 'batch_size', 'bootstrap_reps'):
    if not isinstance(config[key], int) or config[key] <= 0:
      raise ConfigError(f'{key} must be a positive int, got {config[key]!r}')
  if not isinstance(config.shots, int) or config.shots < 0:
    raise ConfigError(f'shots must be an int >= 0, got {config.shots!r}')
  if 'http' in config.models and not (config.http.base_url and config.http.model):
    raise ConfigError(
      'model http needs --config.http.base_url=http://host:port/v1 and --config.http.model=NAME'
    )
  for path_key in ('gsm8k_path', 'compositional_path', 'smollm2_path'):
    if config[path_key] and not os.path.exists(config[path_key]):
      raise ConfigError(f'{path_key} {config[path_key]!r} does not exist; fix the path or leave it empty')
  heldout.validate(config)


def load_pairs(config, workdir: str) -> List[core.Pair]:
  """The test pairs: read back from the workdir, else from the user's files, else generated."""
  path = os.path.join(workdir, PAIRS_FILE)
  if os.path.exists(path):
    return pairs_lib.read_pairs_jsonl(path)
  if config.compositional_path:
    pairs, errors = readers.read_compositional_jsonl(config.compositional_path, on_error=config.on_bad_line)
    for e in errors:
      logging.warning('%s', e)
    pairs = pairs[: config.num_pairs]
  else:
    q1s = None
    if config.gsm8k_path:
      q1s, errors = readers.read_gsm8k_jsonl(config.gsm8k_path, on_error=config.on_bad_line)
      for e in errors:
        logging.warning('%s', e)
    pairs = pairs_lib.build_pairs(config.num_pairs, config.pair_seed, q1_problems=q1s)
  pairs_lib.write_pairs_jsonl(path, pairs)
  return pairs


def pairs_for(config, workdir: str, name: str, pairs: List[core.Pair]) -> List[core.Pair]:
  """The pairs model ``name`` is asked: the held-out models' own (`heldout.test_pairs`), else ``pairs``."""
  return heldout.test_pairs(config, workdir)[name] if name in heldout.MODELS else pairs


def settings_for(config, name: str) -> evaluate.Settings:
  common_kw = dict(
    mode=config.mode, extraction=config.extraction, temperature=0.0, batch_size=config.batch_size
  )
  if name in INREPO:  # Trained on zero-shot prompts; its answers are counted in characters.
    return evaluate.Settings(style='completion', shots=0, max_tokens=config.lm.max_new_tokens, **common_kw)
  style = ('chat' if config.http.chat else 'completion') if name == 'http' else config.style
  return evaluate.Settings(style=style, shots=config.shots, max_tokens=config.max_tokens, **common_kw)


def _jax_kwargs(config) -> dict:
  return dict(
    max_batch=config.jax.max_batch,
    length_bucket=config.jax.length_bucket,
    dtype=jnp.bfloat16 if config.jax.bf16 else jnp.float32,
  )


@contextlib.contextmanager
def open_backend(config, name: str, model_dir: str, pairs, exemplars, settings):
  """Yields ``(backend, details)`` for model ``name``; servers started here are stopped on exit.

  ``model_dir`` is ``<workdir>/models/<name>``.
  """
  if name in synthetic.KINDS:
    s = config.synthetic
    backend = synthetic.make_backend(name, pairs, exemplars, settings, p1=s.p1, p2=s.p2, q=s.q, seed=s.seed)
    yield backend, {'expected_delta': synthetic.expected_delta(name, s.p1, s.p2, s.q)}
    return
  from eval_gsm.backends import jax_lm  # JAX-backed models only.

  if name == 'inrepo':
    from eval_gsm import lm

    params, tokenizer, summary = lm.train(config.lm, os.path.join(model_dir, 'lm'), config.seed, pairs)
    model = sft.make_model(config.lm, tokenizer.vocab_size)
    yield jax_lm.JaxLMBackend(model, params, tokenizer, name='inrepo', **_jax_kwargs(config)), {'lm': summary}
    return
  if name in heldout.MODELS:  # One LM for both; trained disjoint from both full test sets.
    from eval_gsm import lm

    workdir = os.path.dirname(os.path.dirname(model_dir))
    test = heldout.test_pairs(config, workdir)
    held, _ = heldout.combinations_of(config)
    lm_config = heldout.lm_config(config)
    params, tokenizer, summary = lm.train(
      lm_config,
      os.path.join(workdir, heldout.LM_DIR),
      config.seed,
      [p for name_pairs in test.values() for p in name_pairs],
      comp_excluded=held,
    )
    model = sft.make_model(lm_config, tokenizer.vocab_size)
    h = config.heldout
    details = {
      'lm': summary,
      'heldout': {'by': h.by, 'fraction': h.fraction, 'seed': h.seed, 'held_out_combinations': len(held)},
      'pairs_file': os.path.join('models', name, heldout.PAIRS_FILE),
    }
    yield jax_lm.JaxLMBackend(model, params, tokenizer, name=name, **_jax_kwargs(config)), details
    return
  if name in ('smollm2', 'smollm2_http'):
    t0 = time.time()
    backend = jax_lm.JaxLMBackend.from_gguf(
      config.smollm2_path or None,
      name='smollm2',
      chat=settings.style == 'chat',
      fixed_batch=name == 'smollm2_http',  # Served: every micro-batch padded to one shape.
      **_jax_kwargs(config),
    )
    details = {'load_seconds': round(time.time() - t0, 2)}
    if name == 'smollm2':
      yield backend, details
      return
    from eval_gsm import serve
    from eval_gsm.backends import http

    with serve.make_server(backend, model_name='smollm2', max_batch=config.jax.max_batch) as server:
      server.start()
      client = http.OpenAIBackend(
        server.url,
        'smollm2',
        chat=settings.style == 'chat',
        concurrency=max(config.http.concurrency, config.jax.max_batch),  # Fill the server's batches.
        timeout_s=config.http.timeout_s,
        name='smollm2_http',
      )
      yield client, {**details, 'server': server.url}
    return
  from eval_gsm.backends import http

  cache = os.path.join(model_dir, 'http_cache.jsonl') if config.http.cache else None
  yield (
    http.OpenAIBackend(
      config.http.base_url,
      config.http.model,
      chat=config.http.chat,
      concurrency=config.http.concurrency,
      timeout_s=config.http.timeout_s,
      cache_path=cache,
      name=f'http:{config.http.model}',
    ),
    {'base_url': config.http.base_url},
  )


def evaluate_model(config, workdir: str, name: str, pairs, exemplars) -> dict:
  model_dir = os.path.join(workdir, 'models', name)
  done = results.read_json(os.path.join(model_dir, evaluate.SUMMARY_FILE))
  limit = int(config.model_pairs.get(name, 0) or 0) if name in config.model_pairs else 0
  pairs = pairs_for(config, workdir, name, pairs)
  subset = pairs[:limit] if limit else pairs
  if done is not None and done.get('n_pairs_asked') == len(subset):
    logging.info('%s is evaluated; reading it back', name)
    return done
  settings = settings_for(config, name)
  with open_backend(config, name, model_dir, subset, exemplars, settings) as (backend, details):
    summary = evaluate.evaluate(
      backend,
      subset,
      exemplars,
      settings,
      model_dir,
      bootstrap_reps=config.bootstrap_reps,
      seed=config.seed,
      details={**details, 'n_pairs_asked': len(subset)},
    )
  logging.info(
    '%s: S1 %.3f S2 %.3f S_comp %.3f Delta %.3f [%.3f, %.3f]',
    name,
    summary['S1'],
    summary['S2'],
    summary['S_comp'],
    summary['delta'],
    *summary['delta_ci'],
  )
  return summary


def build_claims(config, summaries: dict) -> List[results.Claim]:
  claims = []
  if 'oracle' in summaries:
    d = summaries['oracle']['delta']
    claims.append(
      results.Claim('G1 oracle model: Delta = 0 exactly', 0.0, d, bool(d == 0.0), 'accuracy', '== 0')
    )
  if 'planted' in summaries:
    s = summaries['planted']
    lo, hi = s['delta_ci']
    want = s['expected_delta']
    claims.append(
      results.Claim(
        f'G2 planted second-hop failure recovered (planted Delta {want:.3f})',
        round(want, 4),
        round(s['delta'], 4),
        bool(lo <= want <= hi),
        'accuracy',
        f'planted value inside the 95 % CI [{lo:.3f}, {hi:.3f}]',
      )
    )
  for name, s in summaries.items():
    graded = s['n_records']
    want = s['n_items_expected']
    claims.append(
      results.Claim(
        f'G3 {name}: every item asked and graded',
        want,
        graded,
        bool(graded == want),
        'items',
        '== items rendered',
      )
    )
  for name in REAL:  # Report-only gap claims, for models asked at least `min_pairs_for_gap` pairs.
    if name in summaries and summaries[name]['n_pairs_asked'] >= config.min_pairs_for_gap:
      s = summaries[name]
      lo, hi = s['delta_ci']
      # A gap is only measurable where S1 * S2 leaves room for one: a model that solves ~nothing alone has
      # Delta ~ 0 - 0, and its CI "below 0" would be noise around a floor, not a finding.
      measurable = s['expected'] >= config.min_expected_for_gap
      claims.append(
        results.Claim(
          f'G4 {name}: compositional gap Delta < 0 (report)',
          'negative for small models (paper Fig. 1)',
          round(s['delta'], 4),
          bool(measurable and hi < 0),
          'accuracy',
          f'95 % CI [{lo:.3f}, {hi:.3f}] below 0 with S1*S2 >= {config.min_expected_for_gap}'
          f' (S1 {s["S1"]:.3f} S2 {s["S2"]:.3f} S_comp {s["S_comp"]:.3f})'
          + ('' if measurable else '; not measurable: S1*S2 below the floor'),
        )
      )
  for name in heldout.MODELS:  # The gap of the held-out models means something only if they learnt singles.
    if name in summaries and summaries[name]['n_pairs_asked'] >= config.min_pairs_for_gap:
      s = summaries[name]
      floor = config.heldout.min_single_accuracy
      claims.append(
        results.Claim(
          f'G5 {name}: single problems learnt (report)',
          f'S1 and S2 >= {floor}',
          round(min(s['S1'], s['S2']), 4),
          bool(min(s['S1'], s['S2']) >= floor),
          'accuracy',
          f'min(S1 {s["S1"]:.3f}, S2 {s["S2"]:.3f}) >= {floor}',
        )
      )
  return claims


def train_and_evaluate(config, workdir: str) -> Tuple[dict, list]:
  validate(config)
  start = time.time()
  os.makedirs(workdir, exist_ok=True)
  pairs = load_pairs(config, workdir)
  exemplars = prompts.make_exemplars(k=max(config.shots, 1), seed=config.exemplar_seed)
  summaries = {name: evaluate_model(config, workdir, name, pairs, exemplars) for name in config.models}
  return finish(config, workdir, summaries, pairs, exemplars, wall_clock_s=time.time() - start)


def finish(
  config, workdir: str, summaries: dict, pairs, exemplars, *, wall_clock_s=None
) -> Tuple[dict, list]:
  """The report, the plot and ``results.json`` (claims) from the models' summaries."""
  for name, summary in summaries.items():
    settings = settings_for(config, name)
    asked = pairs_for(config, workdir, name, pairs)[: summary['n_pairs_asked']]
    summary['n_items_expected'] = len(evaluate.work_items(asked, exemplars, settings))
  paths = report.write_report(
    summaries,
    workdir,
    title='Compositional GSM: the reasoning gap',
    details={
      name: {**s.get('settings', {}), 'pairs': s.get('pairs_file', PAIRS_FILE)}
      for name, s in summaries.items()
    },
  )
  claims = build_claims(config, summaries)
  plots = [os.path.relpath(p, workdir) for p in paths.values() if p.endswith('.png')]
  results.write_results(
    workdir,
    project='eval_gsm',
    experiment=config.experiment,
    claims=claims,
    plots=plots,
    wall_clock_s=wall_clock_s,
    extra={'models': summaries, 'num_pairs': len(pairs)},
  )
  for c in claims:
    logging.info('%s %s: measured %s (%s)', 'PASS' if c.passed else 'FAIL', c.name, c.measured, c.criterion)
  return summaries, claims
