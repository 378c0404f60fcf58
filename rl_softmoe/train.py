"""DQN or DER with each penultimate variant on MinAtar or Atari games, all seeds of a (game, variant)
vmapped in one program.

Layout of a run (`workdir`):

    config.json  results.json  scores.json  iqm.png  curves_<game>.png
    <game>/random.json                    the random policy's mean return (measured once per game)
    <game>/<variant id>/  metrics.jsonl  tensorboard/  checkpoints/  eval.json

Each (game, variant) is a sub-run: its seeds train as one `jax.jit(jax.vmap(agent.run_chunk))` program in
chunks of `log_every` env steps, with a metrics row (`train/<game>/<variant>/return`, `loss`, ...) after each
chunk and a checkpoint every `checkpoint_every` env steps. A finished sub-run writes `eval.json` (the greedy
evaluation and its checks) and drops its checkpoints; a rerun skips it and reads the JSON back, and resumes
an unfinished one from its last checkpoint. Results: per-game normalised scores, IQM with stratified
bootstrap CIs per variant, probabilities of improvement, the claims A1-A4 (criteria in the config) and the
smoke checks (finite losses, replay wrap, target syncs).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import shutil
import time
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
import jax
import numpy as np

from common import checkpoint
from common import config as config_lib
from common import metrics as metrics_lib
from common import results
from common import stats
from common.errors import ConfigError
from common.rl import dqn
from common.rl import games
from common.rl import replay
from rl_softmoe import encoder
from rl_softmoe import softmoe

EVAL_FILE = 'eval.json'
RANDOM_FILE = 'random.json'
CLAIM_VARIANTS = ('V1', 'V2', 'V3', 'V4')


def variant_id(variant: str) -> str:
  """A variant's id ('V2') from its id or name ('softmoe')."""
  spec = softmoe.VARIANTS.get(softmoe.VARIANT_IDS.get(variant, variant))
  if spec is None:
    raise ConfigError(
      f'unknown variant {variant!r}: choose from {", ".join(softmoe.VARIANT_IDS)} or {", ".join(softmoe.VARIANTS)}'
    )
  return spec.id


def _multiple(config, name: str, of: int, of_name: str) -> None:
  value = config[name]
  if not isinstance(value, int) or value < 1 or value % of:
    raise ConfigError(f'{name} ({value}) must be a positive multiple of {of_name} ({of})')


AGENTS = ('dqn', 'der')
"""`config.agent`: 'dqn' starts from `common.rl.dqn.dqn_preset` (scalar double DQN), 'der' from `der_preset`
(C51, dueling, n-step, prioritized replay; its settings are `config.der`)."""


def _preset(config):
  if config.agent == 'dqn':
    return dqn.dqn_preset()
  if config.agent == 'der':
    return dqn.der_preset()
  raise ConfigError(config_lib.unknown_name_message('agent', str(config.agent), AGENTS))


def agent_config(config) -> dqn.Config:
  """The static agent settings: the agent's preset, sized by the config (raises ConfigError on bad sizes)."""
  base, _ = _preset(config)
  fields = dict(
    num_envs=config.num_envs,
    total_env_steps=config.total_env_steps,
    buffer_capacity=config.buffer_capacity,
    batch_size=config.batch_size,
    max_updates_per_step=-(-config.num_envs // max(int(config.update_period), 1)),
    double=config.double,
    obs_storage_dtype=config.obs_storage_dtype,
  )
  if config.agent == 'der':
    d = config.der
    fields.update(max_n_step=d.n_step, num_atoms=d.num_atoms, prioritized=d.prioritized, noisy=d.noisy)
  return dataclasses.replace(base, **fields)


def hparams(config) -> dqn.HParams:
  """The traced hyper-parameters (the agent's preset, overridden by the config)."""
  _, hp = _preset(config)
  hp = hp.replace(
    learning_rate=config.learning_rate,
    adam_eps=config.adam_eps,
    gamma=config.gamma,
    eps_end=config.eps_end,
    eps_decay_steps=config.eps_decay_steps,
    eps_eval=config.eps_eval,
    learning_starts=config.learning_starts,
    update_period=config.update_period,
    target_update_period=config.target_update_period,
  )
  if config.agent == 'der':
    hp = hp.replace(n_step=config.der.n_step, v_min=config.der.v_min, v_max=config.der.v_max)
  return hp


def head(config) -> Dict[str, Any]:
  """The Q head's options of `encoder.make_network`: a scalar head for 'dqn'; atoms, dueling and noisy
  layers (with their initial noise scale `der.noisy_sigma0`) for 'der'."""
  if config.agent == 'der':
    d = config.der
    return {
      'num_atoms': int(d.num_atoms),
      'dueling': bool(d.dueling),
      'noisy': bool(d.noisy),
      'noisy_sigma0': float(d.noisy_sigma0),
    }
  return {}


FRAME_SHAPES = {'minatar': (10, 10, 1), 'atari': (84, 84, 4)}
"""Frame height and width per environment family (the channels do not change the feature map's size)."""


def validate(config) -> None:
  """Every check that needs no compilation: agent, games, variants, sizes, hyper-parameters."""
  _preset(config)
  if config.agent == 'der':
    sigma0 = config.der.noisy_sigma0
    if isinstance(sigma0, bool) or not isinstance(sigma0, (int, float)) or not sigma0 >= 0:
      raise ConfigError(f'der.noisy_sigma0 must be a number >= 0, got {sigma0!r}')
  games.check_games(config.env, config.games, config.max_reference)
  ids = [variant_id(v) for v in config.variants]
  if not ids or len(set(ids)) != len(ids):
    raise ConfigError(f'config.variants must be non-empty and distinct, got {list(config.variants)}')
  layers = encoder.encoder_layers(config.encoder, config.conv_features, config.conv_layers)
  shape = encoder.feature_shape(FRAME_SHAPES[config.env], layers)
  for v in config.variants:
    softmoe.penultimate(v, hidden=config.hidden, scale=config.scale, feature_shape=shape)
  if not isinstance(config.num_seeds, int) or config.num_seeds < 1:
    raise ConfigError(f'num_seeds must be an integer >= 1, got {config.num_seeds}')
  _multiple(config, 'log_every', config.num_envs, 'num_envs')
  _multiple(config, 'total_env_steps', config.log_every, 'log_every')
  _multiple(config, 'checkpoint_every', config.log_every, 'log_every')
  missing = [g for g in config.games if config.key_games and g not in config.key_games]
  if missing:
    raise ConfigError(f'config.key_games must list every game of config.games; missing {missing}')
  if not isinstance(config.checkpoint_final, bool):
    raise ConfigError(f'checkpoint_final must be True or False, got {config.checkpoint_final!r}')
  if not isinstance(config.eval_first_game, bool):
    raise ConfigError(f'eval_first_game must be True or False, got {config.eval_first_game!r}')
  games.check_host_workers(config.env, config.eval_host_workers, 'eval_host_workers')
  if config.env == 'minatar' and config.eval_iterations < games.MIN_EVAL_ITERATIONS:
    raise ConfigError(
      f'eval_iterations must be >= {games.MIN_EVAL_ITERATIONS} so every env ends an episode, got '
      f'{config.eval_iterations}'
    )
  dqn.check_hparams(agent_config(config), hparams(config))


# --------------------------------------------------------------------------- #
# One (game, variant): programs, training, evaluation.
# --------------------------------------------------------------------------- #


class Programs:
  """The jitted, seed-vmapped programs of one (game, variant)."""

  def __init__(self, config, game: str, variant: str):
    env, env_params = games.make(config.env, game)
    obs_shape = env.observation_space(env_params).shape
    num_actions = int(env.action_space(env_params).n)
    self.network = encoder.make_network(
      variant,
      obs_shape,
      num_actions,
      encoder=config.encoder,
      conv_features=config.conv_features,
      conv_layers=config.conv_layers,
      hidden=config.hidden,
      scale=config.scale,
      **head(config),
    )
    self.agent = dqn.make_train(env, env_params, self.network, agent_config(config))
    self.init = jax.jit(jax.vmap(self.agent.init))
    self.eval_iterations = int(config.eval_iterations)
    agent, n = self.agent, self.eval_iterations
    # `eval_first_game`: each eval env's first game only, stopping once all have ended one (at most n steps).
    eval_config = dataclasses.replace(agent_config(config), eval_first_episode=config.eval_first_game)
    self._envs = [env]  # Closed by `close()`.
    if config.env == 'atari':  # Whole games, raw rewards: the score the Atari 100k papers report.
      eval_env, eval_params = games.make(
        config.env, game, evaluation=True, host_workers=config.eval_host_workers
      )
      self._envs.append(eval_env)
      agent = dqn.make_evaluator(eval_env, eval_params, self.network, eval_config, config.eval_envs)
    elif config.eval_first_game:
      agent = dqn.make_evaluator(env, env_params, self.network, eval_config, config.num_envs)
    self.eval_agent = agent
    # The seeds step together until every seed is done (`axis_name`: no stale host emulator state).
    self.evaluate = jax.jit(
      jax.vmap(lambda state, hp, rng: agent.evaluate(state, hp, n, rng, axis_name='seeds'), axis_name='seeds')
    )
    self._run_chunk = dqn.vmapped_chunks(self.agent)

  def run_chunk(self, state, hp, num_iterations: int):
    return self._run_chunk(state, hp, num_iterations)

  def close(self) -> None:
    """Frees the host emulators of the Atari envs and stops their worker processes (`eval_host_workers`):
    compiled programs keep an env alive, so a finished game's would otherwise stay until exit."""
    for env in self._envs:
      if hasattr(env, 'close'):
        env.close()


def key_index(config, game: str) -> int:
  """The index that names `game`'s keys: its position in `config.key_games`, else in `config.games`."""
  return list(config.key_games or config.games).index(game)


def seed_keys(config, game_index: int, purpose: int) -> jax.Array:
  """`[S]` keys, the same for every variant of a game (paired comparisons)."""
  key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), game_index), purpose)
  return jax.random.split(key, config.num_seeds)


def stacked_hparams(config, **overrides) -> dqn.HParams:
  return dqn.stack([hparams(config).replace(**overrides)] * config.num_seeds)


def chunk_row(stats_: Dict[str, np.ndarray]) -> Dict[str, float]:
  """Seed means of a chunk's summaries, leaving out undefined values (no episode or no update yet)."""
  row = {
    'env_steps': float(np.mean(stats_['env_steps'])),
    'epsilon': float(np.mean(stats_['epsilon'])),
    'episodes': float(np.sum(stats_['episodes'])),
    'updates': float(np.mean(stats_['updates'])),
    'target_syncs': float(np.mean(stats_['target_syncs'])),
  }
  finished = stats_['episodes'] > 0
  if np.any(finished):
    row['return'] = float(np.mean(stats_['episode_return'][finished]))
    row['episode_length'] = float(np.mean(stats_['episode_length'][finished]))
  updated = stats_['updates'] > 0
  if np.any(updated):  # A NaN loss here is a real divergence: MetricWriter stops the run on it.
    for key in ('loss', 'q_mean', 'grad_norm'):
      row[key] = float(np.mean(stats_[key][updated]))
  return row


def random_score(config, workdir: str, game: str, game_index: int, programs_fn) -> float:
  """Mean return of the uniformly random policy (epsilon 1) on `game`, measured once and kept in JSON."""
  path = os.path.join(workdir, game, RANDOM_FILE)
  done = results.read_json(path)
  if (
    done is not None
    and done.get('eval_iterations') == config.eval_iterations
    and done.get('eval_first_game', False) == config.eval_first_game
  ):
    return float(done['return'])
  programs = programs_fn()
  state = programs.init(seed_keys(config, game_index, 0), stacked_hparams(config))
  out = jax.device_get(
    programs.evaluate(state, stacked_hparams(config, eps_eval=1.0), seed_keys(config, game_index, 2))
  )
  value = float(np.mean(out['episode_return']))
  results.write_json(
    path, {'game': game, 'return': value, 'per_seed': out['episode_return'].tolist(), **_eval_size(config)}
  )
  return value


def _eval_size(config) -> dict:
  return {
    'eval_iterations': int(config.eval_iterations),
    'eval_first_game': bool(config.eval_first_game),
    'num_envs': int(config.num_envs),
  }


def run_one(config, workdir: str, game: str, game_index: int, variant: str, programs_fn) -> dict:
  """Trains and evaluates all seeds of (game, variant), resuming from its checkpoint; returns `eval.json`.

  A sub-run whose `eval.json` matches the config's steps and seeds is finished: it is read back, not rerun.
  """
  vid = variant_id(variant)
  name = f'{game}/{vid}'
  subdir = os.path.join(workdir, game, vid)
  done = results.read_json(os.path.join(subdir, EVAL_FILE))
  if (
    done is not None
    and done.get('total_env_steps') == config.total_env_steps
    and done.get('num_seeds') == config.num_seeds
  ):
    logging.info('%s is finished; skipping it', name)
    return done
  programs = programs_fn()
  hp = stacked_hparams(config)
  start_time = time.time()
  # Built only when there is no checkpoint to resume (a resume restores into its shapes: the replay
  # buffers are not held on the device twice).
  init = functools.partial(programs.init, seed_keys(config, game_index, 0), hp)
  num_params = sum(math.prod(x.shape[1:]) for x in jax.tree.leaves(jax.eval_shape(init).params))
  e = config.num_envs
  train_seconds = 0.0
  with checkpoint.Checkpointer(subdir, every=config.checkpoint_every, keep=1) as ckpt:
    state, start = ckpt.restore_or_init(init)
    logging.info(
      '%s: %d parameters, %s at env step %d', name, num_params, 'resuming' if start else 'starting', start
    )
    with metrics_lib.MetricWriter(subdir, resume_step=start) as writer:
      for begin, end in metrics_lib.chunks(config.total_env_steps, config.log_every, start=start, desc=name):
        t0 = time.time()
        state, chunk_stats = programs.run_chunk(state, hp, (end - begin) // e)
        chunk_stats = jax.device_get(chunk_stats)
        seconds = time.time() - t0
        train_seconds += seconds
        row = {f'{game}/{vid}': chunk_row(chunk_stats)}
        writer.write(end, {'train': row, 'charts': {f'{game}/{vid}': {'sps': (end - begin) / seconds}}})
        if end < config.total_env_steps or config.checkpoint_final:
          ckpt.save(end, state, force=False)
      logged = metrics_lib.read_metrics(subdir)
      t0 = time.time()
      out = jax.device_get(programs.evaluate(state, hp, seed_keys(config, game_index, 1)))
      eval_seconds = time.time() - t0
      returns = np.asarray(out['episode_return'], np.float64)
      writer.write(config.total_env_steps, {'eval': {f'{game}/{vid}': {'return': float(np.mean(returns))}}})
  prefix = f'train/{game}/{vid}/'
  losses = [r[prefix + 'loss'] for r in logged if prefix + 'loss' in r]
  capacity_rows = replay.num_rows(jax.tree.map(lambda x: x[0], state.buffer))
  result = {
    'game': game,
    'variant': vid,
    'variant_name': softmoe.VARIANT_IDS[vid],
    'num_seeds': int(config.num_seeds),
    'total_env_steps': int(config.total_env_steps),
    'num_params': num_params,
    'resumed_from': int(start),
    'wall_seconds': round(time.time() - start_time, 2),
    'train_seconds_this_session': round(train_seconds, 2),
    'eval_seconds': round(eval_seconds, 2),
    'returns': returns.tolist(),
    'eval_episodes': np.asarray(out['episodes']).tolist(),
    'final_train_return': next(
      (r[prefix + 'return'] for r in reversed(logged) if prefix + 'return' in r), None
    ),
    'final_loss': losses[-1] if losses else None,
    'losses_finite': bool(losses) and all(math.isfinite(x) for x in losses),
    'updates': np.asarray(state.updates).tolist(),
    'target_syncs': int(round(sum(r.get(prefix + 'target_syncs', 0.0) for r in logged))),
    'expected_target_syncs': int(config.total_env_steps // config.target_update_period),
    'buffer_wrapped': bool(
      config.total_env_steps > config.buffer_capacity
      and np.all(np.asarray(state.buffer.count) == capacity_rows)
    ),
    **_eval_size(config),
  }
  results.write_json(os.path.join(subdir, EVAL_FILE), result)
  # The sub-run is final: its checkpoints (replay buffers of every seed) are no longer needed to resume.
  shutil.rmtree(os.path.join(subdir, checkpoint.CHECKPOINT_DIR), ignore_errors=True)
  logging.info('%s: mean eval return %.3f', name, float(np.mean(returns)))
  return result


# --------------------------------------------------------------------------- #
# Aggregation and claims (pure NumPy: tested on hand-made numbers).
# --------------------------------------------------------------------------- #


def normalised_scores(config, game: str, raw, measured_random: float) -> np.ndarray:
  """MinAtar: `normalise` with the random policy measured in the run and `config.max_reference`; Atari: the
  human-normalised score (published random and human scores)."""
  if config.env == 'atari':
    from common.rl import atari

    return atari.human_normalized_score(game, np.asarray(raw, np.float64))
  return normalise(raw, measured_random, float(config.max_reference[games.short_name(game)]))


def normalise(raw: np.ndarray, random: float, reference: float) -> np.ndarray:
  """(R - R_random) / (R_ref - R_random)."""
  if reference <= random:
    raise ConfigError(f'max_reference {reference} must exceed the random score {random}')
  return (np.asarray(raw, np.float64) - random) / (reference - random)


def aggregate(config, scores: Dict[str, np.ndarray]) -> Dict[str, Any]:
  """IQM and its stratified-bootstrap CI per variant (`scores[v]`: `[seeds, games]` normalised)."""
  acc = config.acceptance
  ci = functools.partial(stats.stratified_bootstrap_ci, reps=acc.bootstrap_reps, confidence=acc.confidence)
  out = {}
  for v, s in scores.items():
    point, low, high = ci(s, stats.iqm)
    out[v] = {'iqm': float(point), 'low': float(low), 'high': float(high)}
  return out


def compare(config, scores: Dict[str, np.ndarray], x: str, y: str) -> Dict[str, float]:
  """IQM(x) - IQM(y) with its paired bootstrap CI (the same resampled runs for both), and P(x > y)."""
  acc = config.acceptance
  diff, low, high = stats.stratified_bootstrap_ci(
    (scores[x], scores[y]),
    lambda a, b: stats.iqm(a) - stats.iqm(b),
    reps=acc.bootstrap_reps,
    confidence=acc.confidence,
  )
  return {
    'iqm_difference': float(diff),
    'low': float(low),
    'high': float(high),
    'p_improvement': float(stats.probability_of_improvement(scores[x], scores[y])),
  }


def _missing(name: str, paper: str, criterion: str, needed: Sequence[str]) -> results.Claim:
  return results.Claim(
    name, paper, None, False, 'normalised IQM', f'{criterion} (not measured: needs {", ".join(needed)})'
  )


def build_claims(
  config,
  scores: Dict[str, np.ndarray],
  breakout_ratio: Optional[Dict[str, float]],
) -> List[results.Claim]:
  """Claims A1-A4 from normalised scores `{variant id: [seeds, games]}` and, for A4, each variant's mean
  Breakout return divided by the random policy's (None when Breakout was not run)."""
  acc = config.acceptance
  agg = aggregate(config, scores) if scores else {}
  claims = []
  min_p = acc.min_improvement_probability
  for better in ('V2', 'V3'):
    name = f'A1 IQM({better}) > IQM(V4)'
    criterion = f'IQM difference > 0 and P({better} > V4) > {min_p}'
    if better not in scores or 'V4' not in scores:
      claims.append(_missing(name, 'tokenised SoftMoE beats PerSample', criterion, (better, 'V4')))
      continue
    c = compare(config, scores, better, 'V4')
    claims.append(
      results.Claim(
        name,
        'tokenised SoftMoE beats PerSample',
        c['iqm_difference'],
        bool(c['iqm_difference'] > 0 and c['p_improvement'] > min_p),
        'normalised IQM difference',
        f'{criterion}; CI [{c["low"]:.3f}, {c["high"]:.3f}], P = {c["p_improvement"]:.3f}',
      )
    )
  for better in ('V2', 'V3'):
    name = f'A2 IQM({better}) >= IQM(V1)'
    if better not in scores or 'V1' not in scores:
      claims.append(
        _missing(name, 'tokenisation beats scaling the flatten layer', 'difference >= 0', (better, 'V1'))
      )
      continue
    c = compare(config, scores, better, 'V1')
    claims.append(
      results.Claim.at_least(
        name,
        paper='tokenisation beats scaling the flatten layer',
        measured=c['iqm_difference'],
        threshold=0.0,
        unit='normalised IQM difference',
        note=f'CI [{c["low"]:.3f}, {c["high"]:.3f}], P = {c["p_improvement"]:.3f}',
      )
    )
  tol = acc.equivalence_tolerance
  name = 'A3 |IQM(V3) - IQM(V2)| small'
  criterion = f'<= {tol} or overlapping {acc.confidence:.0%} CIs'
  if 'V2' in scores and 'V3' in scores:
    gap = abs(agg['V3']['iqm'] - agg['V2']['iqm'])
    overlap = agg['V3']['low'] <= agg['V2']['high'] and agg['V2']['low'] <= agg['V3']['high']
    claims.append(
      results.Claim(
        name,
        'a single scaled expert matches SoftMoE-4',
        gap,
        bool(gap <= tol or overlap),
        'normalised IQM',
        f'{criterion}; CIs overlap: {overlap}',
      )
    )
  else:
    claims.append(_missing(name, 'a single scaled expert matches SoftMoE-4', criterion, ('V2', 'V3')))
  name = 'A4 every variant >= 3x random on Breakout'
  if breakout_ratio:
    worst = min(breakout_ratio, key=breakout_ratio.get)
    claims.append(
      results.Claim.at_least(
        name,
        paper='all variants learn',
        measured=float(breakout_ratio[worst]),
        threshold=acc.min_random_ratio,
        unit='x random (worst variant)',
        note=f'worst: {worst}',
      )
    )
  else:
    claims.append(
      results.Claim(name, 'all variants learn', None, False, 'x random', 'not measured: Breakout not run')
    )
  return claims


def breakout_game(config) -> Optional[str]:
  """The run's Breakout (MinAtar's 'Breakout-MinAtar' or Atari's 'Breakout') for A4, or None."""
  return next((g for g in config.games if games.short_name(g) == 'Breakout'), None)


def check_claims(config, evals: Dict[str, Dict[str, dict]]) -> List[results.Claim]:
  """The loop's own checks over every sub-run: finite losses, replay wrap (when the budget exceeds the
  capacity; with a ring at least as large as the run, as in Atari 100k, there is nothing to wrap and the
  check says so), target syncs at every multiple of the period."""
  runs = [r for per_game in evals.values() for r in per_game.values()]
  finite = all(r['losses_finite'] for r in runs)
  syncs_ok = all(r['target_syncs'] == r['expected_target_syncs'] for r in runs)
  example = runs[0]
  wrapped = [r['buffer_wrapped'] for r in runs]
  if config.total_env_steps > config.buffer_capacity:
    wrap_ok = wrap_measured = all(wrapped)
    wrap_criterion = 'every sub-run filled its ring and overwrote it'
  else:
    wrap_measured, wrap_ok = 'not applicable', not any(wrapped)
    wrap_criterion = (
      f'total_env_steps {config.total_env_steps} <= buffer_capacity {config.buffer_capacity}: '
      'no sub-run may wrap'
    )
  return [
    results.Claim('check: losses finite', 'finite', finite, finite, '', 'every logged loss of every sub-run'),
    results.Claim(
      'check: target syncs at every multiple of target_update_period',
      example['expected_target_syncs'],
      example['target_syncs'],
      syncs_ok,
      'syncs per run',
      'equal to total_env_steps // target_update_period in every sub-run',
    ),
    results.Claim(
      'check: replay buffer wrapped',
      'wraps when total_env_steps > buffer_capacity',
      wrap_measured,
      wrap_ok,
      '',
      wrap_criterion,
    ),
  ]


# --------------------------------------------------------------------------- #
# The experiment.
# --------------------------------------------------------------------------- #


def plot_curves(config, workdir: str) -> List[str]:
  plots = []
  for game in config.games:
    curves = {}
    for v in config.variants:
      vid = variant_id(v)
      rows = metrics_lib.read_metrics(os.path.join(workdir, game, vid))
      key = f'train/{game}/{vid}/return'
      pts = [(r['step'], r[key]) for r in rows if key in r]
      if pts:
        curves[vid] = ([p[0] for p in pts], [p[1] for p in pts])
    if curves:
      name = f'curves_{games.short_name(game)}.png'
      results.plot_curves(
        os.path.join(workdir, name),
        curves,
        xlabel='env steps',
        ylabel='training episode return (seed mean)',
        title=game,
      )
      plots.append(name)
  return plots


def train_and_evaluate(config, workdir: str):
  """Trains every (game, variant) (all seeds vmapped), evaluates, aggregates and writes `results.json`."""
  validate(config)
  start_time = time.time()
  evals: Dict[str, Dict[str, dict]] = {}
  randoms: Dict[str, float] = {}
  for game in config.games:
    gi = key_index(config, game)
    cache: Dict[str, Programs] = {}

    def programs_fn(variant, game=game, cache=cache):
      if variant not in cache:
        cache[variant] = Programs(config, game, variant)
      return cache[variant]

    randoms[game] = random_score(config, workdir, game, gi, lambda: programs_fn(config.variants[0]))
    evals[game] = {}
    for variant in config.variants:
      evals[game][variant_id(variant)] = run_one(
        config, workdir, game, gi, variant, functools.partial(programs_fn, variant)
      )
    for programs in cache.values():
      programs.close()
    cache.clear()
  ids = [variant_id(v) for v in config.variants]
  scores = {
    vid: np.stack(
      [normalised_scores(config, g, evals[g][vid]['returns'], randoms[g]) for g in config.games],
      axis=1,
    )
    for vid in ids
  }
  breakout = breakout_game(config)
  ratio = None
  if breakout is not None:
    ratio = {vid: float(np.mean(evals[breakout][vid]['returns'])) / randoms[breakout] for vid in ids}
  claims = build_claims(config, scores, ratio) + check_claims(config, evals)
  agg = aggregate(config, scores)
  plots = []
  if jax.process_index() == 0:
    family = 'Atari' if config.env == 'atari' else 'MinAtar'
    results.plot_bars(
      os.path.join(workdir, 'iqm.png'),
      {v: (a['iqm'], a['low'], a['high']) for v, a in agg.items()},
      ylabel='IQM of normalised score',
      title=f'{len(config.games)} {family} games x {config.num_seeds} seeds',
    )
    plots = ['iqm.png'] + plot_curves(config, workdir)
    table = {
      'random_return': randoms,
      'iqm': agg,
      'raw_mean_return': {
        g: {v: float(np.mean(r['returns'])) for v, r in e.items()} for g, e in evals.items()
      },
      'normalised_per_seed': {v: s.tolist() for v, s in scores.items()},
      'breakout_x_random': ratio,
      # Each variant against the flatten baseline V0 (reported, not a claim): what a run of a subset of
      # the variants, such as the Atari 100k V0/V2 run, can say.
      'versus_V0': {v: compare(config, scores, v, 'V0') for v in ids if v != 'V0' and 'V0' in scores},
    }
    results.write_json(os.path.join(workdir, 'scores.json'), table)
    results.write_results(
      workdir,
      project='rl_softmoe',
      experiment=config.experiment,
      claims=claims,
      plots=plots,
      wall_clock_s=time.time() - start_time,
      extra=table,
    )
  return agg, claims
