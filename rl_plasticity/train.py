"""TD3, NE and the plasticity baselines on one environment, each method's seeds vmapped in one program.

Layout of a run (`workdir`):

    config.json  results.json  returns.png  dormant.png
    <method>/  metrics.jsonl  tensorboard/  checkpoints/  final.json

Each method is a sub-run: `jax.jit(jax.vmap(agent.run_chunk))` over seeds, in chunks of `delta` updates
(delta / replay_ratio env steps). Between chunks the method's hook runs (NE's grow/prune step every chunk,
ReDo and Reset every `every` updates, Plasticity Injection once), and every `log_every` / `eval_every` env
steps a probe batch gives the plasticity metrics and deterministic episodes give the return, per seed. The
measurements at a step are taken before that step's hook, so they score the network as trained, not one
just reset or recycled; a baseline's hook due at the run's last update is skipped (nothing trains after
it). A finished sub-run writes `final.json` and drops its checkpoints; a rerun reads it back. Claims compare
the IQM over seeds of the final 10 % of evaluations (acceptance in the config).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import time
from typing import Any, Dict, List, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from common import checkpoint
from common import metrics as metrics_lib
from common import results
from common import stats
from common.errors import ConfigError
from rl_plasticity import baselines
from rl_plasticity import envs as envs_lib
from rl_plasticity import ne
from rl_plasticity import td3

FINAL_FILE = 'final.json'
FIRST_CHUNKS_LOGGED = 3  # Chunks of a (resumed) sub-run whose wall-clock is logged one by one.
METHODS = ('td3', 'ne', 'ne_code', 'redo', 'reset', 'injection')


# --------------------------------------------------------------------------- #
# Config -> static settings, with every check done before compiling.
# --------------------------------------------------------------------------- #


def ne_settings(config, method: str):
  """The NE knobs of `method` ('ne': config.ne; 'ne_code': config.ne overridden by config.ne_code)."""
  s = dict(config.ne)
  if method == 'ne_code':
    s.update(dict(config.ne_code))
  return s


def total_updates(config) -> int:
  return int(round((config.total_env_steps - config.learning_starts) * config.replay_ratio))


def chunk_env_steps(config) -> int:
  return int(round(config.delta / config.replay_ratio))


def injection_at(config) -> int:
  """Updates before Plasticity Injection: `injection.at` of the run, rounded down to a multiple of delta."""
  return max(1, int(config.injection.at * total_updates(config)) // config.delta) * config.delta


def agent_config(config, method: str) -> td3.Config:
  review, halving, stale, awaken, temp, window = False, False, False, 0.4, 0.9, 0.3
  if method.startswith('ne'):
    s = ne_settings(config, method)
    review, halving, stale = bool(s['review']), bool(s['batch_halving']), bool(s['stale_adam_moments'])
    awaken, temp, window = s['review_awaken'], s['review_temperature'], s['review_window']
  return td3.Config(
    num_envs=config.num_envs,
    buffer_capacity=config.buffer_capacity,
    batch_size=config.batch_size,
    learning_starts=config.learning_starts,
    replay_ratio=config.replay_ratio,
    actor_hidden=tuple(config.actor_hidden),
    critic_hidden=tuple(config.critic_hidden),
    critic_layer_norm=config.critic_layer_norm,
    learning_rate=config.learning_rate,
    gamma=config.gamma,
    tau=config.tau,
    policy_noise=config.policy_noise,
    noise_clip=config.noise_clip,
    policy_delay=config.policy_delay,
    expl_noise=config.expl_noise,
    obs_norm=config.obs_norm,
    review=review,
    review_awaken=awaken,
    review_temperature=temp,
    review_window=window,
    batch_halving=halving,
    stale_moments=stale,
    eval_episodes=config.eval_episodes,
  )


def _positive_multiple(config, name: str, value: int, of: int, of_name: str) -> None:
  if value < 1 or value % of:
    raise ConfigError(f'{name} ({value}) must be a positive multiple of {of_name} ({of})')


def device_memory_bytes() -> int:
  """The first device's memory limit (GPU/TPU), or the host's physical memory on CPU."""
  try:
    stats_ = jax.devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  # Some backends do not report memory.
    stats_ = {}
  if stats_.get('bytes_limit'):
    return int(stats_['bytes_limit'])
  return int(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'))


def replay_bytes(config, obs_dim: int, act_dim: int) -> int:
  """float32 rows of (obs, action, reward, next_obs, discount) for every seed of one method."""
  return int(config.num_seeds) * int(config.buffer_capacity) * (2 * obs_dim + act_dim + 2) * 4


def make_env(config, **overrides) -> envs_lib.Env:
  """The config's environment (`envs.make` with the config's task, episode length, backend, MJX line-search
  cap and reset mode); `overrides` replace any of `envs.make`'s keyword arguments (the stall probe's
  variants)."""
  kwargs = {
    'episode_length': config.episode_length,
    'backend': config.backend,
    'mjx_ls_iterations': config.get('mjx_ls_iterations', 0),
    'sync_resets': config.get('env_sync_resets', True),
  }
  kwargs.update(overrides)
  return envs_lib.make(config.env, **kwargs)


def validate(config, env: Optional[envs_lib.Env] = None) -> envs_lib.Env:
  """Every check that needs no compilation; returns the environment."""
  envs_lib.check_name(config.env)
  bad = [m for m in config.methods if m not in METHODS]
  if bad or not config.methods or len(set(config.methods)) != len(config.methods):
    raise ConfigError(f'methods must be distinct names from {", ".join(METHODS)}, got {list(config.methods)}')
  for method in config.methods:
    if method.startswith('ne'):
      s = ne_settings(config, method)
      for key in ('initial_density', 'final_density'):
        if not 0.0 < s[key] <= 1.0:
          raise ConfigError(f'{method}.{key} must be in (0, 1], got {s[key]}')
      if s['initial_density'] > s['final_density']:
        raise ConfigError(
          f'{method}.initial_density ({s["initial_density"]}) exceeds final_density ({s["final_density"]})'
        )
      if not 0.0 <= s['prune_ratio'] < 1.0:
        raise ConfigError(f'{method}.prune_ratio must be in [0, 1), got {s["prune_ratio"]}')
      if s['prune_by'] not in ('dormant', 'magnitude'):
        raise ConfigError(f"{method}.prune_by must be 'dormant' or 'magnitude', got {s['prune_by']!r}")
  if config.num_seeds < 1 or config.num_envs < 1:
    raise ConfigError(f'num_seeds ({config.num_seeds}) and num_envs ({config.num_envs}) must be >= 1')
  upi = config.num_envs * config.replay_ratio
  if upi < 1 or abs(upi - round(upi)) > 1e-9:
    raise ConfigError(
      f'num_envs x replay_ratio ({upi}) must be a whole number of updates per vector step >= 1'
    )
  updates = total_updates(config)
  if config.delta > updates:
    raise ConfigError(
      f'delta ({config.delta} updates) is larger than the run ({updates} updates after learning_starts); '
      'lower delta or raise total_env_steps'
    )
  if config.delta < 1 or config.delta % round(upi):
    raise ConfigError(
      f'delta ({config.delta}) must be a positive multiple of num_envs x replay_ratio ({upi})'
    )
  chunk = chunk_env_steps(config)
  _positive_multiple(config, 'chunk (delta / replay_ratio env steps)', chunk, config.num_envs, 'num_envs')
  for key in ('total_env_steps', 'log_every', 'eval_every', 'checkpoint_every'):
    _positive_multiple(config, key, config[key], chunk, 'delta / replay_ratio env steps')
  _positive_multiple(config, 'checkpoint_every', config.checkpoint_every, config.log_every, 'log_every')
  if config.learning_starts % chunk or config.learning_starts < config.num_envs:
    raise ConfigError(
      f'learning_starts ({config.learning_starts}) must be a positive multiple of delta / replay_ratio ({chunk})'
    )
  for name in ('redo', 'reset'):
    if name in config.methods:
      _positive_multiple(config, f'{name}.every', config[name].every, config.delta, 'delta')
      if config[name].every >= updates:
        raise ConfigError(
          f'{name}.every ({config[name].every} updates) must be below the run ({updates} updates), '
          'or it never acts'
        )
  if 'injection' in config.methods and not (
    0.0 < config.injection.at < 1.0 and injection_at(config) < updates
  ):
    raise ConfigError(
      f'injection.at ({config.injection.at}) must put the injection inside the run: in (0, 1) and at least '
      f'one delta ({config.delta} updates) before its end ({updates} updates)'
    )
  env = env or make_env(config)
  need = replay_bytes(config, env.obs_dim, env.act_dim)
  have = device_memory_bytes()
  if need > config.memory_fraction * have:
    raise ConfigError(
      f'the replay buffers need {need / 2**30:.2f} GiB ({config.num_seeds} seeds x {config.buffer_capacity} '
      f'rows) but the device has {have / 2**30:.2f} GiB; lower buffer_capacity or num_seeds'
    )
  return env


# --------------------------------------------------------------------------- #
# Programs of one method.
# --------------------------------------------------------------------------- #


class first_call_logged:  # pylint: disable=invalid-name  # Used as a function.
  """`fn` that logs before its first call and, once that call's outputs are ready, how long it took.
  Other attributes (`lower`, `_cache_size`) are the wrapped jitted function's."""

  def __init__(self, fn, name: str):
    self.fn, self.name, self.done = fn, name, False

  def __call__(self, *args):
    if self.done:
      return self.fn(*args)
    logging.info('%s: first call (compiling)...', self.name)
    t0 = time.time()
    out = jax.block_until_ready(self.fn(*args))
    logging.info('%s: first call took %.1f s, compilation included', self.name, time.time() - t0)
    self.done = True
    return out

  def __getattr__(self, attr):
    return getattr(self.fn, attr)


class Programs:
  """The jitted, seed-vmapped programs of one method (each compiles once per run).

  `shared` (a dict owned by the caller, for one environment) lends the agent and its init, chunk, evaluate
  and probe programs to every method with the same agent: TD3, ReDo and Reset then compile them once."""

  def __init__(self, config, env: envs_lib.Env, method: str, shared: Optional[dict] = None):
    cfg = agent_config(config, method)
    sparse = None
    if method.startswith('ne'):
      s = ne_settings(config, method)
      sparse = (s['initial_density'], s['final_density'])
    self.method = method
    self.total_updates = total_updates(config)
    self.hook_at_end = sparse is not None  # NE keeps its last topology step; the baselines' is skipped.
    self.chunk_iters = length = chunk_env_steps(config) // config.num_envs
    key = (cfg, sparse, method == 'injection', length)
    if shared is not None and key in shared:
      agent, init, self.chunk, self.evaluate, self.probe = shared[key]
    else:
      agent = td3.TD3(env, cfg, sparse=sparse, injection=method == 'injection')
      init = first_call_logged(jax.jit(jax.vmap(agent.init)), f'{method}: init')
      # The first call of each program is logged with its time (compilation included): on GPUs, MJX inside
      # a scanned chunk can compile for minutes, and a run that stalls there should say so.
      self.chunk = first_call_logged(
        jax.jit(jax.vmap(lambda s, start: agent.run_chunk(s, start, length), in_axes=(0, None))),
        f'{method}: chunk',
      )
      self.evaluate = first_call_logged(jax.jit(jax.vmap(agent.evaluate)), f'{method}: evaluate')
      self.probe = first_call_logged(jax.jit(jax.vmap(agent.probe)), f'{method}: probe')
      if shared is not None:
        shared[key] = (agent, init, self.chunk, self.evaluate, self.probe)
    self.agent = agent
    self.hook_every = 0  # Updates between hook calls (0: no hook).
    hook = None
    if sparse is not None:
      s = ne_settings(config, method)
      updates = total_updates(config)
      ne_cfg = ne.NEConfig(
        s['initial_density'],
        s['final_density'],
        ne.grow_steps(updates, config.delta, s['grow_end']),
        s['prune_ratio'],
        s['prune_by'],
        s['tau'],
        s['zeta'],
        bool(s['adam_count_reset']),
      )
      hook = ne.make_hook(agent, ne_cfg, updates // config.delta, config.policy_delay)
      self.hook_every = config.delta
    elif method == 'redo':
      hook = baselines.redo_hook(agent, config.redo.tau, bool(config.redo.get('weight_scaling', False)))
      self.hook_every = config.redo.every
    elif method == 'reset':
      hook, self.hook_every = baselines.reset_hook(agent), config.reset.every
    elif method == 'injection':
      hook, self.hook_every = baselines.injection_hook(agent), injection_at(config)
    self.init = lambda keys: self.place(init(keys))
    self.hook = None
    if hook is not None:

      def keyed(state, k):
        return hook(state, k, jax.random.fold_in(jax.random.fold_in(state.key, td3.RNG_HOOK), k))

      self.hook = first_call_logged(jax.jit(jax.vmap(keyed, in_axes=(0, None))), f'{method}: hook')

  @staticmethod
  def place(state):
    """Commits the state to the first device: a fresh state and one restored by Orbax then share one
    jit signature (committed and uncommitted arguments would compile the chunk twice)."""
    return jax.device_put(state, jax.devices()[0])


def seed_keys(config) -> jax.Array:
  """[S] seed keys, the same for every method (paired comparisons)."""
  return jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)


def purpose_keys(state, purpose: int, step: int):
  return jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, purpose), step))(state.key)


def run_steps(config, programs: Programs, state, begin: int, end: int, log=None, measure=None):
  """Advances all seeds from env step `begin` to `end` (chunk by chunk, with hooks); `log(end, row)` gets
  each chunk's row (seed means) and hook stats, `measure(end, state)` the state after each chunk and
  before its hook. Pure apart from the callbacks: the tests call it directly."""
  chunk = chunk_env_steps(config)
  for b in range(begin, end, chunk):
    e = b + chunk
    state, out = programs.chunk(state, jnp.int32(b // config.num_envs))
    row = {'train': out}
    updates = max(0, e - config.learning_starts) * config.replay_ratio
    updates = int(round(updates))
    if measure is not None:
      measure(e, state)
    last = updates >= programs.total_updates and not programs.hook_at_end
    if programs.hook is not None and updates > 0 and updates % programs.hook_every == 0 and not last:
      state, hook_stats = programs.hook(state, jnp.int32(updates // programs.hook_every))
      row['hook'] = hook_stats
    if log is not None:
      log(e, row)
  return state


def seed_row(values: Dict[str, Any], prefix: str) -> Dict[str, float]:
  """Seed means plus per-seed values (`<name>/seed_<i>`) of [S]-shaped arrays."""
  out = {}
  for name, v in values.items():
    v = np.asarray(v, np.float64)
    out[f'{prefix}/{name}'] = float(np.mean(v))
    if prefix in ('eval', 'probe') and not name.startswith('density'):
      for i, x in enumerate(v):
        out[f'{prefix}/{name}/seed_{i}'] = float(x)
  return out


def interval_row(rows: List[dict]) -> Dict[str, float]:
  """One metrics row from the chunk rows of a logging interval: the mean training return of the episodes
  that ended in it, update-weighted means of the losses, and summed hook counts (grown, pruned, recycled)."""
  train = {k: np.stack([np.asarray(r['train'][k], np.float64) for r in rows]) for k in rows[0]['train']}
  out = {'train/episodes': float(train['episodes'].sum())}
  episodes = train['episodes'].sum(0)
  if np.all(episodes > 0):
    out.update(seed_row({'return': train['return_sum'].sum(0) / episodes}, 'train'))
  updates = train['updates'].sum(0)
  out['train/updates'] = float(updates.mean())
  if np.all(updates > 0):
    for k in ('critic_loss', 'q_mean', 'critic_grad_norm', 'fau', 'review'):
      out[f'train/{k}'] = float(np.mean((train[k] * train['updates']).sum(0) / updates))
    per_seed_q = (train['q_mean'] * train['updates']).sum(0) / updates
    out['train/q_abs_max_over_seeds'] = float(np.max(np.abs(per_seed_q)))
  hooks = [r['hook'] for r in rows if 'hook' in r]
  if hooks:
    out.update(seed_row({k: np.sum([h[k] for h in hooks], axis=0) for k in hooks[0]}, 'hook'))
  return out


def run_method(config, workdir: str, env: envs_lib.Env, method: str, shared: Optional[dict] = None) -> dict:
  """Trains and evaluates all seeds of one method, resuming from its checkpoint; returns `final.json`."""
  subdir = os.path.join(workdir, method)
  done = results.read_json(os.path.join(subdir, FINAL_FILE))
  if done is not None and done.get('total_env_steps') == config.total_env_steps:
    logging.info('%s is finished; skipping it', method)
    return done
  programs = Programs(config, env, method, shared)
  start_time = time.time()
  init = functools.partial(programs.init, seed_keys(config))  # Built only when there is no checkpoint.
  with checkpoint.Checkpointer(subdir, every=config.checkpoint_every, keep=1) as ckpt:
    state, start = ckpt.restore_or_init(init)
    state = programs.place(state)
    with metrics_lib.MetricWriter(subdir, resume_step=start) as writer:
      since: List[dict] = []  # Host copies of the chunk rows since the last metrics row.
      measured: Dict[str, float] = {}  # Probe and evaluation of the state before the step's hook.
      chunk = chunk_env_steps(config)
      t_row, t_measure = time.time(), 0.0

      def measure(step, s):
        nonlocal t_measure
        if step % config.log_every and step % config.eval_every:
          return
        t0 = time.time()
        measured.update(
          seed_row(jax.device_get(programs.probe(s, purpose_keys(s, td3.RNG_PROBE, step))), 'probe')
        )
        if step % config.eval_every == 0:
          ret = programs.evaluate(s, purpose_keys(s, td3.RNG_EVAL, step))
          measured.update(seed_row({'return': jax.device_get(ret)}, 'eval'))
        t_measure += time.time() - t0

      t_chunk = time.time()
      for begin, end in metrics_lib.chunks(config.total_env_steps, chunk, start=start, desc=method):
        state = run_steps(
          config, programs, state, begin, end, lambda step, row: since.append(jax.device_get(row)), measure
        )
        if end <= start + FIRST_CHUNKS_LOGGED * chunk:  # A slow loop shows before the first metrics row.
          logging.info('%s: chunk to env step %d took %.1f s', method, end, time.time() - t_chunk)
          t_chunk = time.time()
        if end % config.log_every == 0 or end % config.eval_every == 0:
          row = interval_row(since)
          row['charts/env_steps_per_second'] = (
            len(since) * chunk * config.num_seeds / max(time.time() - t_row - t_measure, 1e-9)
          )
          since.clear()
          row.update(measured)
          measured.clear()
          writer.write(end, row)
          logging.info(
            '%s: env step %d, %.0f env steps/s, eval return %s', method, end,
            row['charts/env_steps_per_second'], row.get('eval/return', '-'),
          )  # fmt: skip
          t_row, t_measure = time.time(), 0.0
          t_chunk = time.time()
        ckpt.save(end, state)
  final = summarise_method(config, subdir, method, state, programs)
  final['wall_seconds'] = round(time.time() - start_time, 2)
  final['resumed_from'] = int(start)
  results.write_json(os.path.join(subdir, FINAL_FILE), final)
  shutil.rmtree(os.path.join(subdir, checkpoint.CHECKPOINT_DIR), ignore_errors=True)
  return final


def masked_zero_violations(state, *, moments: bool = True) -> int:
  """Entries that are nonzero where the mask is zero, in online and target weights and (unless `moments`
  is False: the NE code's stale moments) both Adam moments."""
  bad = 0
  for net in (state.actor, state.critic):
    for tree in (net.params, net.target) + ((net.opt.mu, net.opt.nu) if moments else ()):
      bad += int(sum(np.sum((np.asarray(m) == 0) & (np.asarray(x) != 0)) for x, m in zip(
        jax.tree.leaves(tree), jax.tree.leaves(net.mask))))  # fmt: skip
  return bad


def summarise_method(config, subdir: str, method: str, state, programs: Programs) -> dict:
  """Per-seed final-10 % means of the evaluation return and the probe metrics, plus invariants."""
  rows = metrics_lib.read_metrics(subdir)
  cut = (1.0 - config.acceptance.final_fraction) * config.total_env_steps
  s = config.num_seeds

  def final_mean(prefix, name):
    vals = [
      [r[f'{prefix}/{name}/seed_{i}'] for i in range(s)]
      for r in rows
      if r['step'] >= cut and f'{prefix}/{name}/seed_0' in r
    ]
    if not vals:
      vals = [
        [r[f'{prefix}/{name}/seed_{i}'] for i in range(s)]
        for r in rows[-1:]
        if f'{prefix}/{name}/seed_0' in r
      ]
    return np.mean(np.asarray(vals, np.float64), axis=0).tolist() if vals else [math.nan] * s

  nets = jax.device_get((state.actor, state.critic))
  light = state.replace(actor=nets[0], critic=nets[1])
  agent = programs.agent
  # Densities of the final state, after the run's last topology step (the last probe row comes before it:
  # on a run that is still growing at its end, such as a tiny test config, they differ; 2026-11-29).
  dens = agent.densities(*nets)
  q_max = max((r.get('train/q_abs_max_over_seeds', 0.0) for r in rows), default=0.0)
  finite = all(math.isfinite(v) for r in rows for k, v in r.items() if isinstance(v, float))
  out = {
    'method': method,
    'num_seeds': s,
    'total_env_steps': int(config.total_env_steps),
    'return': final_mean('eval', 'return'),
    'critic_dormant_0.1': final_mean('probe', 'critic_dormant_0.1'),
    'critic_dormant_0.025': final_mean('probe', 'critic_dormant_0.025'),
    'critic_fau': final_mean('probe', 'critic_fau'),
    'actor_dormant_0.1': final_mean('probe', 'actor_dormant_0.1'),
    'critic_density': float(dens['critic_density']),
    'final_densities': {f'probe/{k}': float(v) for k, v in dens.items() if k.startswith('density/')},
    'masked_nonzero': masked_zero_violations(light, moments=not agent.cfg.stale_moments),
    'all_finite': bool(finite),
    'max_abs_q_mean': float(q_max),
    'diverged': bool((not finite) or q_max > config.acceptance.q_bound),
  }
  if agent.critic_layers is not None:
    out['target_densities'] = {
      'critic/' + '/'.join(layer.path[:-1]): layer.final / layer.size for layer in agent.critic_layers
    } | {'actor/' + '/'.join(layer.path[:-1]): layer.final / layer.size for layer in agent.actor_layers}
  return out


# --------------------------------------------------------------------------- #
# Claims (pure NumPy: tested on hand-made numbers).
# --------------------------------------------------------------------------- #


def iqm(values) -> float:
  return float(stats.iqm(np.asarray(values, np.float64)))


def _ratio_claim(name, paper, td3, ours_final, key, threshold, *, at_most, fmt):
  """NE's IQM of ``key`` over TD3's against ``threshold``; not measured without TD3 or a positive TD3 IQM."""
  if td3 is None:
    return results.Claim(name, paper, None, False, 'x TD3', 'not measured: td3 not run')
  base, ours = iqm(td3[key]), iqm(ours_final[key])
  if base <= 0:
    return results.Claim(
      name, paper, None, False, 'x TD3', f'not measured: TD3 IQM {base:{fmt}} <= 0, ratio undefined'
    )
  make = results.Claim.at_most if at_most else results.Claim.at_least
  return make(
    name,
    paper=paper,
    measured=ours / base,
    threshold=threshold,
    unit='x TD3',
    note=f'NE {ours:{fmt}}, TD3 {base:{fmt}}',
  )


def build_claims(config, finals: Dict[str, dict]) -> List[results.Claim]:
  """The issue's acceptance claims from the per-seed final-10 % numbers of each method."""
  acc = config.acceptance
  claims = []
  td3_ = finals.get('td3')
  for variant in [m for m in ('ne', 'ne_code') if m in finals]:
    claims.append(
      _ratio_claim(
        f'{variant}: critic tau=0.1 dormant fraction <= {acc.max_dormant_ratio} x TD3 (IQM)',
        'NE keeps fewer dormant neurons than TD3', td3_, finals[variant], 'critic_dormant_0.1',
        acc.max_dormant_ratio, at_most=True, fmt='.4f',
      )
    )  # fmt: skip
    claims.append(
      _ratio_claim(
        f'{variant}: return IQM / TD3 >= {acc.min_return_ratio}', 'NE matches or beats TD3', td3_,
        finals[variant], 'return', acc.min_return_ratio, at_most=False, fmt='.1f',
      )
    )  # fmt: skip
  if 'redo' in finals:
    name = 'redo: critic tau=0.1 dormant fraction below TD3 (IQM)'
    if td3_ is None:
      claims.append(results.Claim(name, 'ReDo lowers dormancy', None, False, '', 'not measured: td3 not run'))
    else:
      base, ours = iqm(td3_['critic_dormant_0.1']), iqm(finals['redo']['critic_dormant_0.1'])
      claims.append(
        results.Claim(
          name, 'ReDo lowers dormancy', ours, bool(ours < base), 'dormant fraction', f'< TD3 {base:.4f}'
        )
      )
  diverged = [m for m, f in finals.items() if f['diverged']]
  claims.append(
    results.Claim(
      'no seed diverges', 'all finite', len(diverged), not diverged, 'methods with a diverged seed',
      f'every value finite and |mean Q| <= {acc.q_bound}' + (f'; diverged: {", ".join(diverged)}' if diverged else ''),
    )
  )  # fmt: skip
  bad = sum(f['masked_nonzero'] for f in finals.values())
  claims.append(
    results.Claim(
      'check: masked entries exactly zero', 0, bad, bad == 0, 'entries',
      'weights, targets and both Adam moments of the final state',
    )
  )  # fmt: skip
  for variant in [m for m in ('ne', 'ne_code') if m in finals]:
    got, want = finals[variant]['final_densities'], finals[variant].get('target_densities', {})
    worst = max((abs(got.get(f'probe/density/{k}', math.nan) - v) for k, v in want.items()), default=math.nan)
    ok = bool(math.isfinite(worst) and worst < 1e-6)
    claims.append(
      results.Claim(
        f'check: {variant} density ends at its target', 0.0, worst, ok, 'max |density - target| over layers',
        'every masked layer at round(final_density x size) / size',
      )
    )  # fmt: skip
  return claims


def plot(config, workdir: str) -> List[str]:
  plots = []
  for key, name, ylabel in (
    ('eval/return', 'returns.png', 'evaluation return (seed mean)'),
    ('probe/critic_dormant_0.1', 'dormant.png', 'critic tau=0.1 dormant fraction'),
    ('probe/critic_fau', 'fau.png', 'critic active-unit fraction'),
  ):
    curves = {}
    for method in config.methods:
      rows = [r for r in metrics_lib.read_metrics(os.path.join(workdir, method)) if key in r]
      if rows:
        curves[method] = ([r['step'] for r in rows], [r[key] for r in rows])
    if curves:
      results.plot_curves(
        os.path.join(workdir, name), curves, xlabel='env steps', ylabel=ylabel, title=config.env
      )
      plots.append(name)
  return plots


def train_and_evaluate(config, workdir: str):
  """Runs every method (seeds vmapped), then writes the claims, plots and `results.json`."""
  env = validate(config)
  start_time = time.time()
  shared: dict = {}  # Programs shared by methods with one agent (TD3, ReDo, Reset).
  finals = {m: run_method(config, workdir, env, m, shared) for m in config.methods}
  claims = build_claims(config, finals)
  plots = plot(config, workdir)
  summary = {
    m: {k: f[k] for k in ('return', 'critic_dormant_0.1', 'critic_fau', 'wall_seconds', 'critic_density')}
    for m, f in finals.items()
  }
  for m, f in finals.items():
    summary[m]['return_iqm'] = iqm(f['return'])
    summary[m]['critic_dormant_0.1_iqm'] = iqm(f['critic_dormant_0.1'])
  results.write_results(
    workdir,
    project='rl_plasticity',
    experiment=config.experiment,
    claims=claims,
    plots=plots,
    wall_clock_s=time.time() - start_time,
    extra={'env': config.env, 'replay_ratio': config.replay_ratio, 'methods': summary},
  )
  return finals, claims
