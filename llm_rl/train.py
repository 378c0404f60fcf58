"""VinePPO vs PPO vs GRPO vs RLOO from one SFT start (see configs/default.py for the experiment).

``train_and_evaluate(config, workdir)``:
  workdir/sft/             the SFT run (checkpoints, metrics.jsonl, sft.json once finished)
  workdir/rl/<method>/     one RL run per method (checkpoints every N iterations, metrics.jsonl, done.json)
  workdir/analysis.json    the value-prediction analysis
  workdir/results.json     the claims, plus plots (accuracy vs iterations / gradient steps / wall-clock,
                           accuracy vs KL, value error by step, time per phase)
Every stage resumes: a finished stage is read back, an interrupted one continues from its last checkpoint.
"""

import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from common import checkpoint, results, sft
from common import metrics as metrics_lib
from common.errors import ConfigError
from common.tokenizers import CharTokenizer
from llm_rl import analysis, rl as rl_lib, rollouts, tasks

PROJECT = 'llm_rl'
SFT_FILE = 'sft.json'
IDENTITY_FILE = 'sft_config.json'
DONE_FILE = 'done.json'
# The value analysis compares estimators only where outcomes are uncertain: below this mean per-state
# Bernoulli std of the truth (e.g. a collapsed policy that always fails) its claims fail as void.
MIN_TRUTH_SPREAD = 0.05


def validate(config: ml_collections.ConfigDict) -> None:
  if not config.methods:
    raise ConfigError(f'methods is empty; give some of {list(rl_lib.METHODS)}')
  for m in config.methods:
    if m not in rl_lib.METHODS:
      raise ConfigError(f'unknown method {m!r} in methods; use some of {list(rl_lib.METHODS)}')
  if config.sft.enabled:
    sft.validate(lm_config(config), prefix='model/sft')
  rl_lib.validate(config.rl.copy_and_resolve_references())
  if config.layout.prompt_len < 2 or config.layout.response_len < 2:
    raise ConfigError(f'layout.prompt_len and layout.response_len must be >= 2, got {dict(config.layout)}')


def lm_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The model and SFT keys as one ``common.sft`` config; seq_len is the training layout's length - 1."""
  lm = ml_collections.ConfigDict({**config.model.to_dict(), **config.sft.to_dict()})
  lm.seq_len = config.layout.prompt_len + config.layout.response_len - 1
  return lm


def make_problems(config):
  t = config.task
  if t.source == 'reasoning_gym':
    test = tasks.reasoning_gym_problems(t.n_test, 2 * config.seed + 1, t.rg_task)
    seen = {p.question for p in test}
    train = [
      p for p in tasks.reasoning_gym_problems(t.n_train, 2 * config.seed, t.rg_task) if p.question not in seen
    ]
    return train, test
  if t.source != 'arith':
    raise ConfigError(f"task.source must be 'arith' or 'reasoning_gym', got {t.source!r}")
  return tasks.split_problems(
    t.n_train,
    t.n_test,
    config.seed,
    min_steps=t.min_steps,
    max_steps=t.max_steps,
    hard_prob=t.hard_prob,
    test_overrides={'max_steps': t.test_max_steps},
  )


@dataclasses.dataclass
class Policy:
  """The model to train: a character LM built here (``model.kind='char'``, params from SFT) or a GGUF file."""

  model: Any
  params: Any  # Pretrained params (gguf), or None (char: SFT makes them).
  tokenizer: Any
  render: Optional[Callable[[tasks.Problem], List[int]]]


CHAT_INSTRUCTION = (
  'Solve the problem step by step, one short computation per line. '
  "On the last line write '#### ' followed by the final answer as an integer."
)


def make_policy(config) -> Policy:
  m = config.model
  if m.kind == 'char':
    tokenizer = CharTokenizer(tasks.ALPHABET)
    return Policy(sft.make_model(lm_config(config), tokenizer.vocab_size), None, tokenizer, None)
  if m.kind != 'gguf':
    raise ConfigError(f"model.kind must be 'char' or 'gguf', got {m.kind!r}")
  from common import gguf_loader

  loaded = gguf_loader.load_gguf_llama(m.gguf_path or None, dtype=jnp.float32)
  # fp32 master weights for Adam; bf16 compute when model.bf16.
  model = loaded.model.clone(dtype=jnp.bfloat16 if m.bf16 else jnp.float32, param_dtype=jnp.float32)
  tok = loaded.tokenizer
  if config.task.prompt == 'chat':

    def render(problem):
      messages = [{'role': 'user', 'content': f'{CHAT_INSTRUCTION}\n\n{problem.question}'}]
      return tok.encode(tok.apply_chat_template(messages, add_generation_prompt=True))

  elif config.task.prompt == 'qa':

    def render(problem):
      return tok.encode(tasks.format_prompt(problem), add_bos=tok.bos_id is not None)

  else:
    raise ConfigError(f"task.prompt must be 'qa' or 'chat', got {config.task.prompt!r}")
  return Policy(model, loaded.params, tok, render)


def run_sft(config, workdir, tokenizer, train_problems, test_problems, sampler):
  """SFT until ``sft.stop_accuracy`` greedy test accuracy (or ``sft.steps``); returns (params, summary)."""
  lm = lm_config(config)
  texts = [(tasks.format_prompt(p), tasks.format_target(p)) for p in train_problems]
  data, mask, dropped = sft.encode_texts(tokenizer, texts, lm.seq_len)
  if dropped:
    raise ConfigError(
      f'{dropped} SFT texts exceed layout.prompt_len + layout.response_len = {lm.seq_len + 1} tokens; raise them'
    )
  settings = {k: v for k, v in lm.to_dict().items() if k != 'dir'}  # Where it lives is not what it is.
  identity = {'model_and_sft': settings, 'task': config.task.to_dict(), 'seed': config.seed}
  identity = json.loads(json.dumps(identity))  # Tuples as lists, as read back.
  saved = results.read_json(os.path.join(workdir, IDENTITY_FILE))
  if saved is not None and saved != identity:
    changed = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
    raise ConfigError(
      f'the SFT run in {workdir} was made with other {"/".join(changed)} settings; use another sft.dir'
    )
  os.makedirs(workdir, exist_ok=True)
  results.write_json(os.path.join(workdir, IDENTITY_FILE), identity)
  probe = test_problems[: config.sft.eval_problems]

  def stop_fn(state, step):
    acc = rl_lib.accuracy(sampler, state.params, probe, config.seed)
    stop = acc >= config.sft.stop_accuracy and step >= config.sft.min_steps_before_stop
    return stop, {'accuracy': acc}

  state, summary, programs = sft.fit(
    lm, workdir, data, mask, tokenizer.vocab_size, config.seed, summary_file=SFT_FILE, stop_fn=stop_fn
  )
  if not summary.pop('read_back', False):
    summary['test_accuracy'] = rl_lib.accuracy(
      sampler, state.params, test_problems[: config.rl.eval_problems], config.seed
    )
    sft.write_summary(workdir, SFT_FILE, summary)
  return state.params, summary


def run_method(config, method, workdir, sampler, start_params, start_accuracy, train_problems, test_problems):
  """One RL run (resumable); returns its summary (accuracy curve, timings, final state and programs).

  ``start_accuracy`` is the greedy accuracy of ``start_params`` on the same test problems, logged as
  iteration 0 (every method starts there; it is measured once, before the methods).
  """
  rl = config.rl.copy_and_resolve_references()
  rl.method = method
  programs = rl_lib.Programs(sampler.model, sampler.layout, rl)
  evalset = test_problems[: rl.eval_problems]
  init = programs.init_state(start_params)
  done = results.read_json(os.path.join(workdir, DONE_FILE))
  with checkpoint.Checkpointer(workdir, every=rl.checkpoint_every, keep=1) as ckpt:
    state, start = ckpt.restore_or_init(init)
    if done is not None:
      return {**done, 'state': state, 'programs': programs}
    elapsed = 0.0
    with metrics_lib.MetricWriter(workdir, resume_step=start) as writer:
      if start == 0:
        writer.write(0, {'eval': {'accuracy': start_accuracy}})
      for it in metrics_lib.chunks(rl.iterations, 1, start=start, desc=f'RL {method}'):
        t0 = time.time()
        state, stats = rl_lib.iteration(programs, sampler, state, train_problems, config.seed)
        elapsed += time.time() - t0
        end = it[1]
        if not all(np.isfinite(v) for v in stats.values()):
          raise FloatingPointError(f'{method}: non-finite statistics at iteration {end}: {stats}')
        logged = {'train': {**stats, 'grad_steps': float(state.grad_steps)}}
        if end % rl.eval_every == 0 or end == rl.iterations:
          logged['eval'] = {'accuracy': rl_lib.accuracy(sampler, state.params, evalset, config.seed)}
        writer.write(end, logged)
        ckpt.save(end, state, force=end == rl.iterations)
  rows = metrics_lib.read_metrics(workdir)
  curve = [(r['step'], r['eval/accuracy']) for r in rows if 'eval/accuracy' in r]
  train_rows = [r for r in rows if 'train/reward' in r]
  summary = {
    'method': method,
    'iterations': int(rl.iterations),
    'grad_steps': int(state.grad_steps),
    'accuracy_curve': curve,
    'final_accuracy': curve[-1][1],
    'best_accuracy': max(a for _, a in curve),
    'grad_steps_curve': [(r['step'], r['train/grad_steps']) for r in train_rows],
    'wall_clock_curve': list(
      zip(
        [r['step'] for r in train_rows],
        np.cumsum(
          [r['train/time_sample'] + r['train/time_values'] + r['train/time_update'] for r in train_rows]
        ).tolist(),
      )
    ),
    'kl_curve': [(r['step'], r['train/kl']) for r in train_rows],
    'time_per_iteration': {
      k: float(np.mean([r[f'train/time_{k}'] for r in train_rows])) for k in ('sample', 'values', 'update')
    },
    'all_losses_finite': bool(all(np.isfinite(r['train/loss']) for r in train_rows)),
    'telescoping_max_residual': max(
      (r.get('train/telescoping_max_residual', 0.0) for r in train_rows), default=None
    ),
    'seconds_this_session': round(elapsed, 1),
  }
  results.write_json(os.path.join(workdir, DONE_FILE), summary)
  return {**summary, 'state': state, 'programs': programs}


def first_reaching(curve, target: float):
  """The first iteration whose accuracy reaches ``target`` (None if never)."""
  for it, acc in curve:
    if acc >= target - 1e-9:
      return it
  return None


def make_claims(sft_summary: Dict, runs: Dict[str, Dict], value: Dict, smoke: bool) -> List[results.Claim]:
  claims = []
  if not sft_summary.get('skipped'):
    loss0, loss1 = sft_summary['initial_train_loss'], sft_summary['final_train_loss']
    fall = 1 - loss1 / loss0 if loss0 else float('nan')
    claims.append(
      results.Claim.at_least(
        'SFT loss falls (fraction of its first value)', paper='-', measured=round(fall, 4), threshold=0.4
      )
    )
  for m, r in runs.items():
    claims.append(
      results.Claim(
        f'{m}: every loss finite',
        '-',
        float(r['all_losses_finite']),
        r['all_losses_finite'],
        'bool',
        'all finite',
      )
    )
  if 'vineppo' in runs and runs['vineppo']['telescoping_max_residual'] is not None:
    claims.append(
      results.Claim.at_most(
        'VinePPO step advantages sum to R - V(s0) (max residual)',
        paper='exact',
        measured=runs['vineppo']['telescoping_max_residual'],
        threshold=1e-5,
      )
    )
  if smoke:
    return claims
  start = sft_summary['test_accuracy']
  for m, r in runs.items():
    claims.append(
      results.Claim.at_least(
        f'{m}: final test accuracy >= SFT + 5 points',
        paper='RhoMath GSM8K: +9.8 (PPO) / +13.1 (VinePPO)',
        measured=round(r['final_accuracy'], 4),
        threshold=round(start + 0.05, 4),
        unit='accuracy',
      )
    )
  if 'vineppo' in runs and 'ppo' in runs:
    v, p = runs['vineppo'], runs['ppo']
    claims.append(
      results.Claim.at_least(
        'VinePPO best accuracy >= PPO best accuracy',
        paper='53.4 vs 50.1 (RhoMath GSM8K)',
        measured=round(v['best_accuracy'], 4),
        threshold=round(p['best_accuracy'], 4),
        unit='accuracy',
      )
    )
    ppo_peak_it = first_reaching(p['accuracy_curve'], p['best_accuracy'])
    vine_it = first_reaching(v['accuracy_curve'], p['best_accuracy'])
    ratio = (vine_it / ppo_peak_it) if (vine_it is not None and ppo_peak_it) else float('inf')
    claims.append(
      results.Claim.at_most(
        "VinePPO iterations to PPO's peak / PPO's",
        paper='up to 9x fewer gradient steps',
        measured=round(ratio, 3),
        threshold=0.5,
      )
    )
  if value:
    # States whose outcome is already certain make every estimator exact: the comparison is void there.
    # An analysis saved without its spread (older runs) cannot show that the comparison means anything.
    spread = value.get('truth_spread')
    void = spread is None or spread < MIN_TRUTH_SPREAD
    if spread is None:
      suffix = ' (invalid: truth spread not recorded)'
    else:
      suffix = f' (invalid: truth spread {spread:.3f} < {MIN_TRUTH_SPREAD})' if void else ''
    value_claims = [
      results.Claim.at_most(
        f'MC(K=9) value MAE vs {value["truth_rollouts"]}-rollout truth{suffix}',
        paper='70-90 % accurate',
        measured=round(value['mae_mc_k9'], 4),
        threshold=0.15,
      )
    ]
    if 'mae_critic' in value:
      value_claims.append(
        results.Claim.at_least(
          f"PPO critic's value MAE minus MC(K=9)'s{suffix}",
          paper='critic much worse',
          measured=round(value['mae_critic'] - value['mae_mc_k9'], 4),
          threshold=1e-9,
        )
      )
    claims += [dataclasses.replace(c, passed=False) if void else c for c in value_claims]
  return claims


def make_plots(workdir, runs, value, ranking) -> List[str]:
  plots = []
  for key, xlabel, name in (
    (None, 'iteration', 'accuracy_vs_iteration.png'),
    ('grad_steps_curve', 'gradient steps', 'accuracy_vs_grad_steps.png'),
    ('wall_clock_curve', 'seconds', 'accuracy_vs_wall_clock.png'),
    ('kl_curve', 'KL(pi || pi_ref) (k3, token mean)', 'accuracy_vs_kl.png'),
  ):
    curves = {}
    for m, r in runs.items():
      its, acc = zip(*r['accuracy_curve'])
      if key is None:
        curves[m] = (list(its), list(acc))
      else:
        xs = dict(r[key])
        xs[0] = 0.0
        pts = [(xs[i], a) for i, a in zip(its, acc) if i in xs]
        curves[m] = ([x for x, _ in pts], [a for _, a in pts])
    plots.append(
      results.plot_curves(os.path.join(workdir, name), curves, xlabel=xlabel, ylabel='test accuracy (greedy)')
    )
  if value:
    curves = {
      k[len('mae_by_step_') :]: (list(range(len(v))), v)
      for k, v in value.items()
      if k.startswith('mae_by_step_')
    }
    plots.append(
      results.plot_curves(
        os.path.join(workdir, 'value_error_by_step.png'),
        curves,
        xlabel='step position',
        ylabel='MAE vs truth',
      )
    )
  phases = {m: r['time_per_iteration'] for m, r in runs.items()}
  plots.append(
    results.plot_bars(
      os.path.join(workdir, 'time_per_phase.png'),
      {f'{m}/{k}': v for m, t in phases.items() for k, v in t.items()},
      ylabel='seconds per iteration',
    )
  )
  if ranking:
    plots.append(
      results.plot_bars(
        os.path.join(workdir, 'ranking_top1.png'),
        {k[5:]: v for k, v in ranking.items() if k.startswith('top1_')},
        ylabel='1-of-5 top-1 accuracy',
      )
    )
  return [os.path.relpath(p, workdir) for p in plots]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict:
  validate(config)
  t_start = time.time()
  train_problems, test_problems = make_problems(config)
  policy = make_policy(config)
  layout = rollouts.Layout(config.layout.prompt_len, config.layout.response_len)

  sampler = rollouts.Sampler(
    policy.model,
    policy.tokenizer,
    layout,
    temperature=config.rl.temperature,
    top_p=config.rl.top_p,
    batch_size=config.rl.sample_batch,
    render=policy.render,
    parse=config.task.answer,
  )
  for p in test_problems[:1] + train_problems[:1]:
    sampler.prompt_ids(p)  # A prompt longer than layout.prompt_len fails here, before compiling.
  if config.sft.enabled:
    start_params, sft_summary = run_sft(
      config,
      config.sft.dir or os.path.join(workdir, 'sft'),
      policy.tokenizer,
      train_problems,
      test_problems,
      sampler,
    )
    logging.info(
      'SFT: test accuracy %.3f after %s steps',
      sft_summary['test_accuracy'],
      sft_summary['stopped_at'] or sft_summary['steps'],
    )
  else:
    if policy.params is None:
      raise ConfigError('sft.enabled=False needs a pretrained model (model.kind=gguf)')
    start_params = policy.params
    sft_summary = {
      'skipped': True,
      'test_accuracy': rl_lib.accuracy(
        sampler, start_params, test_problems[: config.rl.eval_problems], config.seed
      ),
    }
  runs = {}
  for method in config.methods:
    runs[method] = run_method(
      config,
      method,
      os.path.join(workdir, 'rl', method),
      sampler,
      start_params,
      sft_summary['test_accuracy'],
      train_problems,
      test_problems,
    )
  value, ranking = {}, {}
  a = config.analysis
  if a.enabled and 'ppo' in runs:
    path = os.path.join(workdir, 'analysis.json')
    saved = results.read_json(path)
    if saved is None:
      r = runs['ppo']
      kw = dict(
        seed=config.seed,
        truth_rollouts=a.truth_rollouts,
        ks=tuple(a.ks),
        merge_answer=config.rl.merge_answer,
        programs=r['programs'],
        value_params=r['state'].value_params,
      )
      probs = test_problems[: a.problems]
      value = analysis.value_error(sampler, r['state'].params, probs, max_states=a.max_states, **kw)
      ranking = analysis.ranking_accuracy(
        sampler, r['state'].params, probs, num_states=a.ranking_states, **kw
      )
      results.write_json(path, {'value': value, 'ranking': ranking})
    else:
      value, ranking = saved['value'], saved['ranking']
  smoke = config.experiment == 'smoke'
  claims = make_claims(sft_summary, runs, value, smoke)
  plots = make_plots(workdir, runs, value, ranking)
  public = {m: {k: v for k, v in r.items() if k not in ('state', 'programs')} for m, r in runs.items()}
  extra = {
    'sft': sft_summary,
    'runs': public,
    'value_analysis': value,
    'ranking': ranking,
    'num_params': int(sum(x.size for x in jax.tree.leaves(start_params))),
    'devices': str(jax.devices()),
  }
  results.write_results(
    workdir,
    project=PROJECT,
    experiment=config.experiment,
    claims=claims,
    plots=plots,
    wall_clock_s=time.time() - t_start,
    extra=extra,
  )
  for c in claims:
    logging.info('%s %s: %s (%s)', 'PASS' if c.passed else 'FAIL', c.name, c.measured, c.criterion)
  return extra
