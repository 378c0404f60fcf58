"""The sweep runner: one-at-a-time sweeps of DER and DrQ(eps), each (agent, regime, game, network) one vmapped
program, resumable, its results rows of the tidy CSV.

Plan. For every ``agent:regime`` pair of the config and every game, ``schema.one_at_a_time`` lists the
distinct settings (the defaults once, then each hyper-parameter's other values). Settings whose network is
the same (every ``static`` hyper-parameter at the same value) form one *program*: their ``HParams`` (traced
and masked values) times the seeds are stacked and trained by ``jax.jit(jax.vmap(agent.run_chunk))`` in
chunks of ``log_every`` env steps. A network hyper-parameter's other values are programs of their own.

Layout of a run (``workdir``):

    config.json  sweep.csv  thc.json  thc_ranks.csv  results.json  report.md  *.png
    random/<game>.json                                 the random policy's mean return per game
    <agent>/<regime>/<game>/<program>/  metrics.jsonl  tensorboard/  checkpoints/  runs.json

A program that finished wrote ``runs.json`` (every run's evaluation and checks) and dropped its checkpoints; a
rerun skips it and reads it back, and resumes an unfinished program from its last checkpoint (or from its
start when ``checkpoint_every`` is 0: replay buffers of 100 runs are gigabytes). ``runs.json`` files are never
rewritten, and ``sweep.csv`` is rebuilt from them, so a killed sweep loses at most its current program and
gives the same CSV when it finishes.

Data regimes are separate runs with their own length (Dopamine's schedules: epsilon decay and minimum replay
are in env steps, the same in both); the low regime is never an early checkpoint of the high one.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import os
import shutil
import threading
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

from absl import logging
import jax
import numpy as np

from common import checkpoint
from common import metrics as metrics_lib
from common import results
from common.errors import ConfigError
from common.rl import dqn
from common.rl import games as games_lib
from rl_hparams import networks
from rl_hparams import schema

RUNS_FILE = 'runs.json'
RANDOM_DIR = 'random'
# --------------------------------------------------------------------------- #
# The plan.
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class Program:
  """One compiled program of the sweep: the settings that share a network, for one (agent, regime, game)."""

  agent: str
  regime: str
  game: str
  game_index: int
  steps: int
  settings: Tuple[schema.Setting, ...]
  defaults: Tuple[Tuple[str, Any], ...]  # The agent's defaults the sweep centres on.

  @property
  def static(self) -> Dict[str, Any]:
    return dict(self.settings[0].static_key())

  @property
  def name(self) -> str:
    """'net-default' or the network values that differ from the agent's defaults, e.g. 'width=64'."""
    base = dict(self.defaults)
    diff = [f'{n}={schema.format_value(v)}' for n, v in self.static.items() if base[n] != v]
    return 'net-default' if not diff else 'net-' + ','.join(diff)

  @property
  def path(self) -> str:
    return os.path.join(self.agent, self.regime, self.game, self.name)


def parse_runs(config) -> List[Tuple[str, str]]:
  """``config.runs`` ('DER:low', ...) as (agent, regime) pairs, checked against the agents and regimes."""
  pairs = []
  for item in config.runs:
    if not isinstance(item, str) or item.count(':') != 1:
      raise ConfigError(f'config.runs entries are "agent:regime", got {item!r}')
    agent, regime = item.split(':')
    schema.check_agent(agent)
    if regime not in config.regimes:
      raise ConfigError(
        f'regime {regime!r} of {item!r} is not in config.regimes ({", ".join(config.regimes)})'
      )
    pairs.append((agent, regime))
  if not pairs or len(set(pairs)) != len(pairs):
    raise ConfigError(f'config.runs must be non-empty and distinct, got {list(config.runs)}')
  return pairs


def sweep_grids(config) -> Dict[str, List[Any]]:
  """``config.sweep`` (``{name: values}``, an empty tuple meaning the default grid) checked by the schema."""
  return schema.grids({name: tuple(values) for name, values in config.sweep.items()})


def plan(config) -> Tuple[List[Program], Dict[Tuple[str, str], Dict[Tuple[str, Any], str]]]:
  """Every program of the sweep, in run order, and for each (agent, regime) which run id stands for each
  (hyper-parameter, value) pair."""
  grids = sweep_grids(config)
  programs, represents = [], {}
  for agent, regime in parse_runs(config):
    settings, rep = schema.one_at_a_time(agent, grids, dict(config.default_overrides))
    represents[(agent, regime)] = rep
    groups: Dict[Any, List[schema.Setting]] = {}
    for s in settings:
      groups.setdefault(s.static_key(), []).append(s)
    for gi, game in enumerate(config.games):
      for group in groups.values():
        programs.append(
          Program(agent, regime, game, gi, int(config.regimes[regime]), tuple(group), settings[0].values)
        )
  # Run order: shortest regime first (every axis gets data early under a time budget), then agent, game,
  # network, so a worker's consecutive programs often share compiled functions.
  agents = list(dict.fromkeys(a for a, _ in parse_runs(config)))
  programs.sort(key=lambda p: (p.steps, agents.index(p.agent), p.game_index, p.name))
  return programs, represents


def validate(config) -> None:
  """Every check that needs no compilation."""
  if jax.process_count() > 1:
    raise ConfigError(
      'the sweep runs on one host (all its local GPUs in parallel): launch one process, not a multi-host job'
    )
  games_lib.check_games(config.env, config.games, config.max_reference)
  if not isinstance(config.num_seeds, int) or config.num_seeds < 1:
    raise ConfigError(f'num_seeds must be an integer >= 1, got {config.num_seeds}')
  e = config.num_envs
  for regime, steps in config.regimes.items():
    if not isinstance(steps, int) or steps < config.log_every or steps % config.log_every:
      raise ConfigError(f'regime {regime} steps ({steps}) must be a positive multiple of log_every')
  if config.log_every % e:
    raise ConfigError(f'log_every ({config.log_every}) must be a multiple of num_envs ({e})')
  if config.checkpoint_every and config.checkpoint_every % config.log_every:
    raise ConfigError(f'checkpoint_every ({config.checkpoint_every}) must be 0 or a multiple of log_every')
  if config.env == 'minatar' and config.eval_iterations < games_lib.MIN_EVAL_ITERATIONS:
    raise ConfigError(
      f'eval_iterations must be >= {games_lib.MIN_EVAL_ITERATIONS} so every MinAtar episode ends'
    )
  if not isinstance(eval_first_game(config), bool):
    raise ConfigError(f'eval_first_game must be True or False, got {eval_first_game(config)!r}')
  games_lib.check_host_workers(config.env, eval_host_workers(config), 'eval_host_workers')
  programs, _ = plan(config)
  for p in programs[:: max(1, len(programs) // 8)] + programs[-1:]:
    dqn.check_hparams(agent_config(config, p), stacked_hparams(config, p))


# --------------------------------------------------------------------------- #
# One program.
# --------------------------------------------------------------------------- #


def _field_values(setting: schema.Setting) -> Dict[str, Any]:
  """The ``HParams`` fields a setting sets (traced and masked hyper-parameters)."""
  out = {}
  for name, value in setting.values:
    s = schema.HYPERPARAMETERS[name]
    if s.kind != 'static':
      out[s.field] = value
  return out


def _preset(agent: str):
  return dqn.der_preset() if agent == 'DER' else dqn.drq_eps_preset()


def agent_config(config, program: Program) -> dqn.Config:
  """The static agent settings: the preset's, sized for the largest masked values of the program."""
  base, _ = _preset(program.agent)
  fields = [_field_values(s) for s in program.settings]
  min_period = min(f['update_period'] for f in fields)
  return dataclasses.replace(
    base,
    num_envs=config.num_envs,
    # Only `Agent.train` reads it (the sweep runs chunks), so both regimes share one compiled program.
    total_env_steps=config.log_every,
    buffer_capacity=config.buffer_capacity,
    batch_size=max(f['batch_size'] for f in fields),
    max_n_step=max(f['n_step'] for f in fields),
    max_updates_per_step=-(-config.num_envs // min_period),
    obs_storage_dtype='uint8',
    augment_pad=(config.augment_pad if config.env == 'minatar' else 4) if base.augment_pad else 0,
  )


def stacked_hparams(config, program: Program) -> dqn.HParams:
  """``[settings * seeds]`` stacked ``HParams``: setting-major, seed-minor."""
  _, base = _preset(program.agent)
  hps = [base.replace(**_field_values(s)) for s in program.settings]
  return dqn.stack([hp for hp in hps for _ in range(config.num_seeds)])


def eval_host_workers(config) -> int:
  """``config.eval_host_workers`` (configs/paper.py sets it; absent means 0): worker processes that step the
  Atari evaluation's host emulators in parallel (`common.rl.atari` `host_workers`; the same scores, bit for
  bit; 0 steps them in this process, one after the other)."""
  return config.get('eval_host_workers', 0)


def eval_first_game(config) -> bool:
  """``config.eval_first_game`` (configs/paper.py sets it; absent means False): the evaluation counts each
  eval env's first episode only and stops once every env has ended one, ``eval_iterations`` being the cap."""
  return config.get('eval_first_game', False)


class Compiled:
  """The jitted, vmapped functions of one program."""

  def __init__(self, config, program: Program):
    env, env_params = games_lib.make(config.env, program.game)
    obs_shape = env.observation_space(env_params).shape
    num_actions = int(env.action_space(env_params).n)
    cfg = agent_config(config, program)
    self.network = networks.make_network(
      obs_shape, num_actions, num_atoms=cfg.num_atoms, conv_impl=config.conv_impl, **program.static
    )
    self.agent = dqn.make_train(env, env_params, self.network, cfg)
    # Evaluation on `eval_envs` fresh environments with the trained parameters (same network).
    eval_env, eval_params = games_lib.make(
      config.env, program.game, evaluation=True, host_workers=eval_host_workers(config)
    )
    self.eval_env = eval_env
    eval_cfg = dataclasses.replace(cfg, eval_first_episode=eval_first_game(config))
    self.evaluator = dqn.make_evaluator(eval_env, eval_params, self.network, eval_cfg, config.eval_envs)
    self.init = jax.jit(jax.vmap(self.agent.init))
    n, evaluate = int(config.eval_iterations), self.evaluator.evaluate
    # The runs step together until every run is done (`axis_name`: no stale host emulator state).
    self.evaluate = jax.jit(
      jax.vmap(lambda state, hp, rng: evaluate(state, hp, n, rng, axis_name='runs'), axis_name='runs')
    )
    self._run_chunk = dqn.vmapped_chunks(self.agent)

  def run_chunk(self, state, hp, num_iterations: int):
    return self._run_chunk(state, hp, num_iterations)


def seed_keys(config, program: Program, purpose: int) -> jax.Array:
  """``[settings * seeds]`` keys: seed i of every setting (and agent and regime) of a game shares its key, so
  comparisons between values are paired."""
  key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), program.game_index), purpose)
  keys = jax.random.split(key, config.num_seeds)
  return jax.numpy.concatenate([keys] * len(program.settings))


def random_score(config, workdir: str, program: Program, compiled_fn: Callable[[], Compiled]) -> float:
  """Mean return of the uniformly random policy on the game (epsilon 1), measured once and kept in JSON."""
  path = os.path.join(workdir, RANDOM_DIR, f'{program.game}.json')
  done = results.read_json(path)
  first = eval_first_game(config)
  if (
    done is not None
    and done.get('eval_iterations') == config.eval_iterations
    and done.get('eval_first_game', False) == first
  ):
    return float(done['return'])
  compiled = compiled_fn()
  hp = stacked_hparams(config, program)
  state = compiled.init(seed_keys(config, program, 0), hp)
  out = jax.device_get(
    compiled.evaluate(
      state, hp.replace(eps_eval=jax.numpy.ones_like(hp.eps_eval)), seed_keys(config, program, 2)
    )
  )
  value = float(np.mean(out['episode_return']))
  results.write_json(
    path,
    {
      'game': program.game,
      'return': value,
      'eval_iterations': int(config.eval_iterations),
      'eval_first_game': first,
    },
  )
  return value


def run_program(config, workdir: str, program: Program, compiled_fn: Callable[[], Compiled]) -> dict:
  """Trains and evaluates every run of ``program`` (resuming), writes and returns its ``runs.json``."""
  subdir = os.path.join(workdir, program.path)
  done = results.read_json(os.path.join(subdir, RUNS_FILE))
  if done is not None:
    logging.info('%s is finished; skipping it', program.path)
    return done
  compiled = compiled_fn()
  hp = stacked_hparams(config, program)
  n_runs = len(program.settings) * config.num_seeds
  start_time = time.time()
  # Built only when there is no checkpoint to resume (a resume restores into its shapes: the replay
  # buffers are not held on the device twice).
  init = functools.partial(compiled.init, seed_keys(config, program, 0), hp)
  num_params = sum(math.prod(x.shape[1:]) for x in jax.tree.leaves(jax.eval_shape(init).params))
  e = config.num_envs
  every = config.checkpoint_every or program.steps
  run_ids = [s.run_id for s in program.settings]
  train_seconds = 0.0
  with checkpoint.Checkpointer(subdir, every=every, keep=1) as ckpt:
    state, start = ckpt.restore_or_init(init) if config.checkpoint_every else (init(), 0)
    logging.info(
      '%s: %d runs (%d settings x %d seeds), %d parameters each, %s at env step %d',
      program.path,
      n_runs,
      len(program.settings),
      config.num_seeds,
      num_params,
      'resuming' if start else 'starting',
      start,
    )
    losses_finite = True
    with metrics_lib.MetricWriter(subdir, resume_step=start) as writer:
      for begin, end in metrics_lib.chunks(program.steps, config.log_every, start=start, desc=program.path):
        t0 = time.time()
        state, stats = compiled.run_chunk(state, hp, (end - begin) // e)
        stats = jax.device_get(stats)
        seconds = time.time() - t0
        train_seconds += seconds
        per_run_loss = np.asarray(stats['loss']).reshape(len(run_ids), -1)
        updated = np.asarray(stats['updates']).reshape(len(run_ids), -1) > 0
        losses_finite &= bool(np.all(np.isfinite(per_run_loss[updated])))
        row = {}
        returns = np.asarray(stats['episode_return']).reshape(len(run_ids), -1)
        for i, rid in enumerate(run_ids):
          finished = np.isfinite(returns[i])
          if np.any(finished):
            row[f'{rid.replace("=", "_")}/return'] = float(np.mean(returns[i][finished]))
        row['loss'] = float(np.nanmean(np.where(updated, per_run_loss, np.nan))) if np.any(updated) else 0.0
        writer.write(
          end,
          {'train': row, 'charts': {'runs_x_env_steps_per_second': n_runs * (end - begin) / seconds}},
        )
        if config.checkpoint_every:
          ckpt.save(end, state, force=False)
      t0 = time.time()
      out = jax.device_get(compiled.evaluate(state, hp, seed_keys(config, program, 1)))
      eval_seconds = time.time() - t0
  scores = np.asarray(out['episode_return'], np.float64).reshape(len(run_ids), config.num_seeds)
  updates = np.asarray(state.updates).reshape(len(run_ids), config.num_seeds)
  result = {
    'agent': program.agent,
    'regime': program.regime,
    'game': program.game,
    'program': program.name,
    'static': program.static,
    'env_steps': program.steps,
    'num_seeds': int(config.num_seeds),
    'num_params': num_params,
    'resumed_from': int(start),
    'wall_seconds': round(time.time() - start_time, 2),
    'train_seconds_this_session': round(train_seconds, 2),
    'eval_seconds': round(eval_seconds, 2),
    'losses_finite': losses_finite,
    'runs': {
      rid: {
        'scores': scores[i].tolist(),
        'updates': updates[i].tolist(),
        'eval_episodes': np.asarray(out['episodes']).reshape(len(run_ids), -1)[i].tolist(),
        'values': {n: v for n, v in program.settings[i].values},
      }
      for i, rid in enumerate(run_ids)
    },
  }
  results.write_json(os.path.join(subdir, RUNS_FILE), result)
  shutil.rmtree(os.path.join(subdir, checkpoint.CHECKPOINT_DIR), ignore_errors=True)
  logging.info('%s: done in %.1f s', program.path, time.time() - start_time)
  return result


def sweep_devices(config) -> List[Any]:
  """The local devices the sweep spreads its programs over (``config.devices``: 0 = all, else the first N)."""
  devices = jax.local_devices()
  n = int(config.devices)
  if n < 0:
    raise ConfigError(f'config.devices must be >= 0 (0: every local device), got {n}')
  return devices if n == 0 else devices[:n]


def run_sweep(
  config, workdir: str, time_budget_s: float = math.inf
) -> Tuple[List[dict], Dict[str, float], bool]:
  """Runs every unfinished program, one per local device at a time, and returns the finished programs'
  ``runs.json`` (in plan order), the random score per game, and whether the sweep is complete.

  Programs are independent, so with several devices one worker thread per device takes the next program from
  the plan (each program's arrays live on its worker's device: ``jax.default_device`` is thread-local) and the
  sweep finishes up to that many times sooner; one device runs them in order. Once ``time_budget_s`` has
  passed, no worker starts a new program (each call still finishes at least one), and the sweep is left
  resumable.
  """
  programs, _ = plan(config)
  devices = sweep_devices(config)
  queue = list(programs)
  lock = threading.Lock()
  start = time.time()
  finished: Dict[str, dict] = {}
  randoms: Dict[str, float] = {}
  state = {'trained': 0, 'stopped': False}

  def worker(device) -> None:
    cache: Dict[Any, Compiled] = {}  # Programs differing only in their regime share the compiled functions.
    while True:
      with lock:
        if not queue or state['stopped']:
          return
        program = queue[0]
        done = results.read_json(os.path.join(workdir, program.path, RUNS_FILE))
        if done is None and state['trained'] and time.time() - start > time_budget_s:
          logging.info(
            'time budget of %.0f s spent: not starting %s (rerun to continue)', time_budget_s, program.path
          )
          state['stopped'] = True
          return
        queue.pop(0)
        state['trained'] += done is None
      key = (program.agent, program.game, program.settings[0].static_key())

      def compiled_fn(program=program, key=key):
        if key not in cache:
          cache.clear()  # One program's buffers and executables per device at a time.
          cache[key] = Compiled(config, program)
        return cache[key]

      with jax.default_device(device):
        if program.game not in randoms:  # Two workers may both measure it: same value, atomic file.
          randoms[program.game] = random_score(config, workdir, program, compiled_fn)
        finished[program.path] = run_program(config, workdir, program, compiled_fn)

  if len(devices) == 1:
    worker(devices[0])
  else:
    logging.info('running the sweep on %d devices in parallel', len(devices))
    with concurrent.futures.ThreadPoolExecutor(len(devices)) as pool:
      for future in [pool.submit(worker, d) for d in devices]:
        future.result()  # Re-raises a worker's exception.
  done_in_order = [finished[p.path] for p in programs if p.path in finished]
  return done_in_order, randoms, len(done_in_order) == len(programs)


def csv_rows(
  config,
  finished: Sequence[dict],
  randoms: Dict[str, float],
  represents: Dict[Tuple[str, str], Dict[Tuple[str, Any], str]],
) -> List[dict]:
  """The tidy rows: one per (run, hyper-parameter value it stands for) and seed."""
  rows = []
  for prog in finished:
    agent, regime, game = prog['agent'], prog['regime'], prog['game']
    if config.env == 'minatar':
      low, high = randoms[game], float(config.max_reference[games_lib.short_name(game)])

      def normalize(score, low=low, high=high):
        return (score - low) / (high - low)
    else:
      from common.rl import atari

      normalize = functools.partial(atari.human_normalized_score, game)
    for (name, value), rid in represents[(agent, regime)].items():
      if rid not in prog['runs']:
        continue
      run = prog['runs'][rid]
      if run['values'][name] != value:
        continue  # A run of another program (network) with the same id cannot happen; defensive.
      for seed, score in enumerate(run['scores']):
        if not math.isfinite(score):  # No evaluation episode ended: no score (counted by `unscored_runs`).
          continue
        rows.append(
          {
            'agent': agent,
            'regime': regime,
            'game': game,
            'hyperparameter': name,
            'value': schema.format_value(value),
            'seed': seed,
            'score': float(score),
            'normalized_score': normalize(float(score)),
            'run_id': rid,
          }
        )
  return rows


def unscored_runs(finished: Sequence[dict]) -> List[str]:
  """'program/run_id/seed' of every run whose evaluation finished no episode (its score is NaN and it has no
  row in the CSV): raise `eval_iterations` so every evaluation episode ends."""
  out = []
  for prog in finished:
    base = f'{prog["agent"]}/{prog["regime"]}/{prog["game"]}/{prog["program"]}'
    for rid, run in prog['runs'].items():
      out += [f'{base}/{rid}/{seed}' for seed, s in enumerate(run['scores']) if not math.isfinite(s)]
  return out
