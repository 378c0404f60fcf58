"""Value-based agents (DQN, DER, DrQ(eps)) as one jitted, scanned training loop, vmappable over seeds and sweeps.

    agent = dqn.make_train(env, env_params, network, dqn.Config(num_envs=8, max_n_step=3, ...))
    hparams = dqn.HParams(learning_rate=1e-4, n_step=3, ...)
    dqn.check_hparams(agent.config, hparams)                       # one-line ConfigError on a bad value
    state = jax.jit(jax.vmap(agent.init))(seeds, hparams_batch)     # [S] runs
    for _ in chunks:                                                 # log / checkpoint between chunks
      state, metrics = run(state, hparams_batch)                    # run = jit(vmap(partial(agent.run_chunk,
                                                                    #        num_iterations=...)))

or, in one program, `jax.jit(jax.vmap(agent.train))(seeds, hparams_batch)`.

Static vs traced. `Config` holds everything that fixes shapes or the program (number of envs, buffer capacity,
batch size, the largest n-step window, update slots per step, double DQN, atoms, prioritized replay,
augmentation); it is hashable and closed over. `HParams` holds every numeric hyper-parameter as an array
leaf: learning rate, Adam eps, weight decay, gradient clip, discount, n-step horizon (masked inside the static
`Config.max_n_step` window), the epsilon schedule, learning starts, update period, target update period,
Huber-vs-MSE, the C51 support and the prioritized-replay exponents. They are traced, so one compiled program
serves a sweep: `vmap` over a stacked `HParams` (`stack`) gives bitwise the same runs as separate calls on
CPU (tested). Batch size, the network and the number of atoms change shapes and need one program each.

One loop iteration is one vector step: every one of the `E = Config.num_envs` environments steps once, so
env steps (transitions) = iterations * E. All step counts in `HParams` are in env steps, as in Dopamine
(where they are agent steps; one env step is one agent step, i.e. 4 Atari frames):
  * acting: epsilon-greedy with `epsilon(s) = eps_start + (eps_end - eps_start) * clip((s - learning_starts)
    / eps_decay_steps, 0, 1)` (Dopamine's `linearly_decaying_epsilon`: 1 -> eps_end after the warm-up);
  * learning: one gradient update at every env step `s` that is a multiple of `update_period` and exceeds
    `learning_starts` (Dopamine's `add_count > min_replay_history`), done after the env step that contains it
    has been added to the replay. A vector step covers env steps `(before, before + E]`, so it holds
    `ceil(E / update_period)` or fewer updates; `Config.max_updates_per_step` update slots are compiled and
    masked (`check_hparams` refuses an `update_period` that would need more);
  * target network: the target parameters are the online parameters as of the last multiple of
    `target_update_period` env steps (Dopamine syncs after the update of that step). Period 1 with update
    period 1 and E = 1 means "no target network" (DrQ(eps)).

Randomness is a function of (seed, step): acting and env keys are `fold_in(key, iteration)`, update keys
`fold_in(key, env step of the update)`, so a run cut into chunks equals an uninterrupted one bitwise.

Replay: `common.rl.replay`, one transition per env step with its true next observation (gymnax 1.0's
`info['final_observation']`), n-step windows cut at episode ends and at the write head (`common.rl.targets`).
Observations are stored as `Config.obs_storage_dtype` (e.g. 'uint8' for MinAtar's 0/1 planes, a quarter of
the memory) and cast back to the environment's dtype when sampled.

Agents (presets below; the network decides dueling and the atom count must match `Config.num_atoms`):
  * DQN (Mnih et al., 2015): `dqn_preset()`, Dopamine's defaults, double DQN on by default (`double=False`
    for the original).
  * DER (van Hasselt et al., 2019, "data-efficient Rainbow", Dopamine's `DER.gin`): `der_preset()`: n-step
    10, double, dueling, C51 with 51 atoms in [-10, 10], prioritized replay (priority exponent 0.5 and
    importance exponent 0.5, as Dopamine's JAX Rainbow), update every step, target every 2000 steps,
    epsilon 1 -> 0.01 over 2000 steps after 1600 steps of warm-up, Adam 1e-4 / eps 1.5e-4, batch 32.
    Noisy networks (Dopamine's DER uses them *and* epsilon-greedy) are an option, off in the preset:
    `der_preset(noisy=True)` with `QNetwork(..., noisy=True)` (noisy head layers; evaluation without noise).
    Evaluation uses `HParams.eps_eval` (0.001).
  * DrQ(eps) (Agarwal et al., 2021; Kostrikov et al., 2020): `drq_eps_preset()`: DER minus C51 and prioritized
    replay, target update 1 (no target network), epsilon decay 5000, random-shift augmentation (pad 1 for
    10x10 MinAtar frames; the papers pad 84x84 Atari frames by 4).

The network is a Flax module applied to ONE observation (the agent vmaps it over batches; see
`common.rl.networks`). It must be deterministic (no dropout or `rngs`), except for `networks.NoisyDense`
layers with `Config.noisy`: their noise keys are functions of (seed, step) too. Acting in training draws
one noise sample per environment per vector step (`fold_in(key, iteration)`); an update draws three, one
for each of the online, target and (double DQN) bootstrap-selection passes, each shared by the whole
batch, from `fold_in(key, env step of the update)`. With `noisy=False` (the default) no key or value of a
run changes.

Batch-size sweeps: `HParams.batch_size` masks the first `b` of `Config.batch_size` samples. The samples are
exactly those of a run compiled with batch `b` (random draws of one key are prefixes of each other), but the
masked sums reduce over more terms in another order, so a masked run equals the unmasked one to float32
rounding (tested to 1e-6 over a short run), not bitwise; runs within one vmapped sweep still equal the same
runs made alone bitwise.

Not here: vmapping over games (different environments cannot share one `env.step`; pad observations and
actions and `lax.switch` on a game index in the project).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from common.errors import ConfigError
from common.rl import networks
from common.rl import replay
from common.rl import targets

__all__ = [
  'Agent',
  'Config',
  'HParams',
  'TrainState',
  'adam_update',
  'as_arrays',
  'check_hparams',
  'der_preset',
  'dqn_preset',
  'drq_eps_preset',
  'epsilon',
  'make_evaluator',
  'make_train',
  'random_shift',
  'stack',
  'summarize',
  'vmapped_chunks',
]

# Purposes of the keys derived from a run's loop key (fold_in constants), then folded with a step.
_ACT, _ENV, _UPDATE, _EVAL = 0, 1, 2, 3
_NOISE_ACT, _NOISE_UPDATE = 4, 5  # Noisy nets only (`Config.noisy`).


@flax.struct.dataclass
class HParams:
  """Every numeric hyper-parameter of the agents; all leaves are traced (vmap over a stacked `HParams`).

  Step counts are env steps (transitions over all parallel envs). Defaults are Dopamine's DQN as configured
  for the MoE papers (`labs/moes/configs/dqn.gin`), except the loss: Huber here (Mnih et al.), while those
  configs use the squared error (`mse_loss=True`).

  Attributes:
    learning_rate: Adam step size.
    adam_eps: Adam epsilon.
    weight_decay: decoupled weight decay (AdamW: `p -= lr * wd * p`); 0 is plain Adam.
    max_grad_norm: clip the gradient to this global norm; `inf` (default) does not clip.
    gamma: discount.
    n_step: multi-step horizon, `1 <= n_step <= Config.max_n_step` (a mask within the static window).
    eps_start, eps_end, eps_decay_steps: training epsilon: `eps_start` until `learning_starts`, then linear to
      `eps_end` over `eps_decay_steps` (>= 1).
    eps_eval: epsilon of `Agent.evaluate`.
    learning_starts: no update before the replay holds more than this many transitions (also the epsilon
      warm-up).
    update_period: one gradient update every this many env steps.
    target_update_period: sync the target network every this many env steps.
    mse_loss: squared TD error instead of Huber (scalar agents only; C51 uses cross-entropy).
    v_min, v_max: the C51 support (`Config.num_atoms > 1` only).
    priority_exponent: prioritized replay samples with probability proportional to `priority**exponent`.
    importance_exponent: importance weights `P**-exponent`, normalized by the batch maximum.
    batch_size: transitions per update, `1 <= batch_size <= Config.batch_size`, a mask within the static batch
      (the first `batch_size` of `Config.batch_size` samples; key draws are prefixes of each other, so they
      are exactly the samples of a run with that static batch); 0 (default) uses all `Config.batch_size`.
  """

  learning_rate: Any = 6.25e-5
  adam_eps: Any = 1.5e-4
  weight_decay: Any = 0.0
  max_grad_norm: Any = math.inf
  gamma: Any = 0.99
  n_step: Any = 1
  eps_start: Any = 1.0
  eps_end: Any = 0.01
  eps_decay_steps: Any = 250_000
  eps_eval: Any = 0.001
  learning_starts: Any = 20_000
  update_period: Any = 4
  target_update_period: Any = 8_000
  mse_loss: Any = False
  v_min: Any = -10.0
  v_max: Any = 10.0
  priority_exponent: Any = 0.5
  importance_exponent: Any = 0.5
  batch_size: Any = 0


_INT_FIELDS = (
  'n_step',
  'eps_decay_steps',
  'learning_starts',
  'update_period',
  'target_update_period',
  'batch_size',
)
_BOOL_FIELDS = ('mse_loss',)


def _field_dtype(name: str):
  if name in _INT_FIELDS:
    return jnp.int32
  if name in _BOOL_FIELDS:
    return jnp.bool_
  return jnp.float32


def as_arrays(hparams: HParams) -> HParams:
  """`hparams` with every leaf an array of its fixed dtype (int32, bool or float32), so Python numbers and
  arrays give one compiled program (no weak types) and integer fields stay exact."""
  values = {
    f.name: jnp.asarray(getattr(hparams, f.name), _field_dtype(f.name)) for f in dataclasses.fields(hparams)
  }
  return HParams(**values)


def stack(hparams: Sequence[HParams]) -> HParams:
  """Stacks several `HParams` along a new leading axis, for `vmap` over a sweep."""
  if not hparams:
    raise ConfigError('stack needs at least one HParams')
  return jax.tree.map(lambda *xs: jnp.stack(xs), *[as_arrays(h) for h in hparams])


@dataclasses.dataclass(frozen=True)
class Config:
  """Static settings: they fix shapes or the program, so each value compiles its own program.

  Attributes:
    num_envs: parallel environments `E` stepped per iteration.
    total_env_steps: length of `Agent.train`, a multiple of `num_envs`.
    buffer_capacity: replay capacity in transitions, a multiple of `num_envs`.
    batch_size: transitions sampled per gradient update (the largest batch: `HParams.batch_size` may mask it).
    max_n_step: window length `N` gathered from the replay; `HParams.n_step` may be any value in [1, N].
    max_updates_per_step: update slots compiled per vector step; must be `>= ceil(num_envs / update_period)`.
    double: double-DQN bootstrap (online argmax, target evaluation).
    num_atoms: 1 for scalar Q-values, `K > 1` for C51 (the network returns `[A, K]` logits).
    prioritized: prioritized replay (Schaul et al., 2016), else uniform.
    augment_pad: DrQ random-shift augmentation of `[H, W, C]` observations by up to this many pixels (0: off).
    obs_storage_dtype: dtype observations are stored in, None keeps the env's. 'uint8' is exact only for
      integer-valued observations (MinAtar's 0/1 planes, Atari pixels) and quarters float32 memory; the
      replay holds each observation twice (`obs` and `next_obs`), so this is the knob for large sweeps.
    noisy: NoisyNet exploration (Fortunato et al., 2018): the network must have `networks.NoisyDense`
      layers (e.g. `QNetwork(..., noisy=True)`), and they are applied with fresh noise keys when acting in
      training and in every update; evaluation and `Agent.q_values` use the mean weights (no noise).
    eval_first_episode: `Agent.evaluate` counts only each environment's first episode and stops (a
      `lax.while_loop`) as soon as every environment has finished one, or after `num_iterations` vector steps;
      False (default): every episode that ends within a fixed window of `num_iterations` steps (a scan).
  """

  num_envs: int = 1
  total_env_steps: int = 100_000
  buffer_capacity: int = 100_000
  batch_size: int = 32
  max_n_step: int = 1
  max_updates_per_step: int = 1
  double: bool = True
  num_atoms: int = 1
  prioritized: bool = False
  augment_pad: int = 0
  obs_storage_dtype: Optional[str] = None
  noisy: bool = False
  eval_first_episode: bool = False

  def __post_init__(self):
    for name in ('num_envs', 'total_env_steps', 'buffer_capacity', 'batch_size', 'max_n_step'):
      _check_int(name, getattr(self, name), 1)
    _check_int('max_updates_per_step', self.max_updates_per_step, 1)
    _check_int('num_atoms', self.num_atoms, 1)
    _check_int('augment_pad', self.augment_pad, 0)
    if self.total_env_steps % self.num_envs:
      raise ConfigError(
        f'total_env_steps ({self.total_env_steps}) must be a multiple of num_envs ({self.num_envs})'
      )
    if self.buffer_capacity % self.num_envs:
      raise ConfigError(
        f'buffer_capacity ({self.buffer_capacity}) must be a multiple of num_envs ({self.num_envs})'
      )
    if self.obs_storage_dtype is not None:
      try:
        jnp.dtype(self.obs_storage_dtype)
      except TypeError:
        raise ConfigError(
          f'obs_storage_dtype {self.obs_storage_dtype!r} is not a dtype; use e.g. uint8'
        ) from None


def _check_int(name: str, value: Any, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ConfigError(f'{name} must be an integer >= {minimum}, got {value!r}')


def check_hparams(config: Config, hparams: HParams) -> None:
  """Raises ConfigError for an out-of-range hyper-parameter; leaves may be batched (every entry is checked).

  Does nothing when a leaf is traced (inside jit/vmap): call it before compiling, as `Agent.init` does when its
  arguments are concrete.
  """
  try:
    v = {f.name: np.asarray(getattr(hparams, f.name)) for f in dataclasses.fields(hparams)}
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return

  def require(ok, message):
    if not np.all(ok):
      raise ConfigError(message)

  require(v['learning_rate'] >= 0, f'learning_rate must be >= 0, got {v["learning_rate"]}')
  require(v['adam_eps'] > 0, f'adam_eps must be > 0, got {v["adam_eps"]}')
  require(v['weight_decay'] >= 0, f'weight_decay must be >= 0, got {v["weight_decay"]}')
  require(v['max_grad_norm'] > 0, f'max_grad_norm must be > 0 (inf: no clipping), got {v["max_grad_norm"]}')
  require((v['gamma'] >= 0) & (v['gamma'] <= 1), f'gamma must be in [0, 1], got {v["gamma"]}')
  for name in _INT_FIELDS:
    require(v[name] == np.round(v[name]), f'{name} must be an integer, got {v[name]}')
  require(
    (v['n_step'] >= 1) & (v['n_step'] <= config.max_n_step),
    f'n_step must be in [1, Config.max_n_step={config.max_n_step}], got {v["n_step"]}; raise max_n_step',
  )
  for name in ('eps_start', 'eps_end', 'eps_eval'):
    require((v[name] >= 0) & (v[name] <= 1), f'{name} must be in [0, 1], got {v[name]}')
  require(v['eps_decay_steps'] >= 1, f'eps_decay_steps must be >= 1, got {v["eps_decay_steps"]}')
  require(v['learning_starts'] >= 0, f'learning_starts must be >= 0, got {v["learning_starts"]}')
  require(v['update_period'] >= 1, f'update_period must be >= 1, got {v["update_period"]}')
  require(
    v['target_update_period'] >= 1, f'target_update_period must be >= 1, got {v["target_update_period"]}'
  )
  needed = int(np.max(-(-config.num_envs // np.maximum(v['update_period'], 1))))
  require(
    needed <= config.max_updates_per_step,
    f'update_period {v["update_period"]} with num_envs={config.num_envs} needs {needed} updates per vector '
    f'step; raise Config.max_updates_per_step to {needed}',
  )
  if config.num_atoms > 1:
    require(v['v_min'] < v['v_max'], f'v_min must be < v_max, got {v["v_min"]} and {v["v_max"]}')
  require(v['priority_exponent'] >= 0, f'priority_exponent must be >= 0, got {v["priority_exponent"]}')
  require(v['importance_exponent'] >= 0, f'importance_exponent must be >= 0, got {v["importance_exponent"]}')
  require(
    (v['batch_size'] >= 0) & (v['batch_size'] <= config.batch_size),
    f'batch_size must be in [0, Config.batch_size={config.batch_size}] (0: all), got {v["batch_size"]}; '
    'raise Config.batch_size',
  )


def epsilon(hparams: HParams, env_step: Any) -> jax.Array:
  """Training epsilon at `env_step` (see the module docstring); traced-friendly."""
  s = jnp.asarray(env_step, jnp.float32)
  start = jnp.asarray(hparams.eps_start, jnp.float32)
  warmup = jnp.asarray(hparams.learning_starts, jnp.float32)
  decay = jnp.maximum(jnp.asarray(hparams.eps_decay_steps, jnp.float32), 1.0)
  return start + (hparams.eps_end - start) * jnp.clip((s - warmup) / decay, 0.0, 1.0)


def random_shift(key: jax.Array, obs: jax.Array, pad: int) -> jax.Array:
  """DrQ's random shift of one `[H, W, C]` observation: pad `pad` pixels by edge replication, crop back to
  `[H, W]` at a uniformly random offset in `[0, 2 * pad]` per axis."""
  h, w = obs.shape[0], obs.shape[1]
  padded = jnp.pad(obs, ((pad, pad), (pad, pad), (0, 0)), mode='edge')
  dy, dx = jax.random.randint(key, (2,), 0, 2 * pad + 1)
  return jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, obs.shape[2]))


def adam_update(
  params: Any,
  state: optax.ScaleByAdamState,
  grads: Any,
  learning_rate: Any,
  eps: Any,
  weight_decay: Any = 0.0,
  b1: float = 0.9,
  b2: float = 0.999,
) -> Tuple[Any, optax.ScaleByAdamState]:
  """One Adam(W) step (Kingma & Ba, 2015; Loshchilov & Hutter, 2019) with traced hyper-parameters.

  `p -= lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p)`, the update of `optax.adamw` (and of
  `optax.adam` when `weight_decay == 0`), on an `optax.scale_by_adam` state. Written out rather than taken
  from optax so that bias corrections are explicit reciprocals that multiply: XLA's simplifier rewrites a
  division by a broadcast scalar into a multiplication by its reciprocal in some programs and not others
  (e.g. vmapped vs not), which changes the last bit; with multiplications only, a run vmapped over a sweep is
  bitwise the run made alone.
  """
  count = state.count + 1
  t = count.astype(jnp.float32)
  inv_correction1 = 1.0 / (1.0 - jnp.power(jnp.float32(b1), t))
  inv_correction2 = 1.0 / (1.0 - jnp.power(jnp.float32(b2), t))
  mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, grads)
  nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * (g * g), state.nu, grads)

  def step(p, m, v):
    direction = (m * inv_correction1) / (jnp.sqrt(v * inv_correction2) + eps)
    return p - learning_rate * (direction + weight_decay * p)

  params = jax.tree.map(step, params, mu, nu)
  return params, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly (checkpoint this).

  Attributes:
    params, target_params: online and target network parameters.
    opt_state: Adam moments and count (an `optax.scale_by_adam` state, updated by `adam_update`).
    buffer: the replay (`common.rl.replay.Buffer`).
    env_state, obs: the `E` environments and their current observations.
    episode_return, episode_length: `[E]` running sums of the current episodes.
    iteration: int32 vector steps done (env steps = iteration * E).
    synced_step: int32 env step up to which target syncs have been decided.
    updates: int32 gradient updates done.
    rng: the run's loop key; every step's keys are folded from it.
  """

  params: Any
  target_params: Any
  opt_state: Any
  buffer: replay.Buffer
  env_state: Any
  obs: jax.Array
  episode_return: jax.Array
  episode_length: jax.Array
  iteration: jax.Array
  synced_step: jax.Array
  updates: jax.Array
  rng: jax.Array


class Agent(NamedTuple):
  """What `make_train` returns; every function is pure and may be `jit`/`vmap`-ed (sizes are static args).

  Attributes:
    config: the static `Config`.
    num_actions: the environment's number of discrete actions.
    init: `(rng, hparams) -> TrainState`.
    run_chunk: `(state, hparams, num_iterations) -> (state, metrics)`: `num_iterations` (static) vector steps
      in one `lax.scan`; `metrics` are chunk summaries (see `summarize`).
    train: `(rng, hparams) -> (state, metrics)`: `init` then one chunk of `total_env_steps // num_envs`.
    evaluate: `(state, hparams, num_iterations, rng, axis_name=None) -> metrics`: fresh envs,
      `eps_eval`-greedy, for `num_iterations` (static) vector steps; `episodes` finished and their mean
      `episode_return` (NaN if none). Episodes still running at the end are dropped, which favours short ones:
      give a budget of several episodes, or set `Config.eval_first_episode` to count each env's first episode
      only and stop once every env has ended one. Under `jax.vmap(..., axis_name=name)` over runs, pass
      `axis_name=name` with that option: the loop then runs until every run is done, all runs stepping
      together. Without it, vmap freezes the runs already done while their envs are still stepped: harmless
      for pure JAX envs, but a host env (`common.rl.atari`) sees stale ticks and restarts emulators.
    q_values: `(params, hparams, obs[B, ...]) -> [B, A]` expected Q-values.
  """

  config: Config
  num_actions: int
  init: Callable[..., TrainState]
  run_chunk: Callable[..., Tuple[TrainState, Dict[str, jax.Array]]]
  train: Callable[..., Tuple[TrainState, Dict[str, jax.Array]]]
  evaluate: Callable[..., Dict[str, jax.Array]]
  q_values: Callable[..., jax.Array]


def _where_tree(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def summarize(total: Dict[str, jax.Array], env_steps: jax.Array, eps: jax.Array) -> Dict[str, jax.Array]:
  """Chunk summaries from the chunk's per-iteration totals and its last `env_steps` and `epsilon`.

  Returns `env_steps` (at the end), `epsilon` (at the end), `episodes`, `episode_return` and
  `episode_length` (means over the episodes that finished in the chunk; NaN if none), `updates`, `loss`,
  `q_mean`, `grad_norm` (means over the updates; NaN if none), `target_syncs`.
  """
  episodes = total['episodes']
  updates = total['updates']

  def mean(value, count):
    return jnp.where(count > 0, value / jnp.maximum(count, 1), jnp.nan)

  return {
    'env_steps': env_steps,
    'epsilon': eps,
    'episodes': episodes,
    'episode_return': mean(total['return_sum'], episodes),
    'episode_length': mean(total['length_sum'], episodes),
    'updates': updates,
    'loss': mean(total['loss_sum'], updates),
    'q_mean': mean(total['q_sum'], updates),
    'grad_norm': mean(total['grad_norm_sum'], updates),
    'target_syncs': total['target_syncs'],
  }


def make_train(env: Any, env_params: Any, network: nn.Module, config: Config) -> Agent:
  """Builds the agent for a gymnax-style environment and a Q-network.

  Args:
    env: a gymnax environment (1.0 API: `reset(key, params) -> (obs, state)`, `step(key, state, action,
      params) -> (obs, state, reward, terminated, truncated, info)`, auto-resetting, with the true last
      observation in `info['final_observation']`) with a discrete action space. An env without that key
      works, but its truncated episodes bootstrap from the reset observation.
    env_params: its parameters.
    network: a Flax module mapping one observation to `[A]` Q-values, or `[A, num_atoms]` logits.
    config: the static `Config`.

  Returns:
    `Agent`.

  Raises:
    ConfigError: bad static settings, a network output that does not match the action count and
      `num_atoms`, or augmentation on observations that are not `[H, W, C]`.
  """
  if not isinstance(config, Config):
    raise ConfigError(f'config must be a common.rl.dqn.Config, got {type(config).__name__}')
  space = env.action_space(env_params)
  if not hasattr(space, 'n'):
    raise ConfigError(f'value-based agents need a discrete action space, got {type(space).__name__}')
  num_actions = int(space.n)
  e = config.num_envs
  atoms = config.num_atoms
  max_n = config.max_n_step
  batch_size = config.batch_size
  obs_spec = jax.eval_shape(lambda k: env.reset(k, env_params)[0], jax.random.key(0))
  if config.augment_pad and len(obs_spec.shape) != 3:
    raise ConfigError(f'augment_pad needs [H, W, C] observations, got shape {obs_spec.shape}; set it to 0')
  store_dtype = jnp.dtype(config.obs_storage_dtype) if config.obs_storage_dtype else obs_spec.dtype
  expected = (num_actions,) if atoms == 1 else (num_actions, atoms)
  out_spec = jax.eval_shape(
    lambda k, o: network.apply(network.init(k, o), o),
    jax.random.key(0),
    jnp.zeros(obs_spec.shape, obs_spec.dtype),
  )
  if out_spec.shape != expected:
    raise ConfigError(
      f'the network maps one observation to shape {out_spec.shape}, expected {expected} '
      f'({num_actions} actions, num_atoms={atoms}); fix its head or Config.num_atoms'
    )
  params_spec = jax.eval_shape(network.init, jax.random.key(0), jnp.zeros(obs_spec.shape, obs_spec.dtype))
  has_noise = any(
    'sigma_kernel' in jax.tree_util.keystr(path)
    for path, _ in jax.tree_util.tree_flatten_with_path(params_spec)[0]
  )
  if has_noise != config.noisy:
    raise ConfigError(
      f'Config.noisy={config.noisy} but the network {"has" if has_noise else "has no"} NoisyDense layers; '
      'use QNetwork(..., noisy=True) with Config(noisy=True), or neither'
    )

  def support(hp: HParams) -> jax.Array:
    return jnp.linspace(hp.v_min, hp.v_max, atoms)

  def apply(params, obs, noise_key=None):
    """Network output for a batch of observations, one observation per call; with `noise_key` (noisy
    nets), one noise sample shared by the batch."""
    if noise_key is None:
      return jax.vmap(lambda o: network.apply(params, o))(obs)
    return jax.vmap(lambda o: network.apply(params, o, rngs={networks.NOISE: noise_key}))(obs)

  def q_from_output(out, hp):
    if atoms == 1:
      return out
    return jnp.sum(jax.nn.softmax(out, axis=-1) * support(hp), axis=-1)

  def q_values(params, hp, obs):
    return q_from_output(apply(params, obs), as_arrays(hp))

  def act(params, hp, obs, key, eps, noise_key=None):
    if noise_key is None:
      greedy = jnp.argmax(q_values(params, hp, obs), axis=-1).astype(jnp.int32)
    else:  # One noise sample per environment.
      keys = jax.random.split(noise_key, obs.shape[0])
      out = jax.vmap(lambda o, k: network.apply(params, o, rngs={networks.NOISE: k}))(obs, keys)
      greedy = jnp.argmax(q_from_output(out, as_arrays(hp)), axis=-1).astype(jnp.int32)
    key_random, key_explore = jax.random.split(key)
    random_action = jax.random.randint(key_random, (obs.shape[0],), 0, num_actions, dtype=jnp.int32)
    explore = jax.random.uniform(key_explore, (obs.shape[0],)) < eps
    return jnp.where(explore, random_action, greedy)

  def env_step(key, env_state, action):
    keys = jax.random.split(key, e)
    obs, env_state, reward, terminated, truncated, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
      keys, env_state, action, env_params
    )
    next_obs = info['final_observation'] if 'final_observation' in info else obs
    return (
      obs,
      env_state,
      reward.astype(jnp.float32),
      terminated.astype(bool),
      truncated.astype(bool),
      next_obs,
    )

  def env_reset(key):
    return jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, e), env_params)

  def init(rng: jax.Array, hparams: HParams) -> TrainState:
    check_hparams(config, hparams)
    rng_params, rng_env, rng_loop = jax.random.split(rng, 3)
    obs, env_state = env_reset(rng_env)
    params = network.init(rng_params, obs[0])
    example = {
      'obs': jnp.zeros(obs.shape, store_dtype),
      'action': jnp.zeros((e,), jnp.int32),
      'reward': jnp.zeros((e,), jnp.float32),
      'done': jnp.zeros((e,), bool),
      'terminal': jnp.zeros((e,), bool),
      'next_obs': jnp.zeros(obs.shape, store_dtype),
    }
    zero = jnp.zeros((), jnp.int32)
    return TrainState(
      params=params,
      target_params=params,
      opt_state=optax.scale_by_adam().init(params),
      buffer=replay.init(config.buffer_capacity, example, prioritized=config.prioritized),
      env_state=env_state,
      obs=obs,
      episode_return=jnp.zeros((e,), jnp.float32),
      episode_length=jnp.zeros((e,), jnp.int32),
      iteration=zero,
      synced_step=zero,
      updates=zero,
      rng=rng_loop,
    )

  def batch_mask(hp):
    """`(mask [B], size)`: which of the `Config.batch_size` samples count (`HParams.batch_size`, 0: all)."""
    size = jnp.where(hp.batch_size > 0, hp.batch_size, batch_size)
    return jnp.arange(batch_size) < size, size

  def sample_batch(buffer, key, hp):
    """A training batch: start slots, n-step reduction, and the observations to use.

    `weights` are the importance weights times the batch mask (0 for padding samples)."""
    key_sample, key_aug = jax.random.split(key)
    mask, size = batch_mask(hp)
    if config.prioritized:
      rows, envs, probs = replay.sample_prioritized(
        buffer, key_sample, batch_size, hp.priority_exponent, num_strata=size
      )
      weights = jnp.where(mask, jnp.power(jnp.maximum(probs, 1e-10), -hp.importance_exponent), 0.0)
      weights = weights * (1.0 / jnp.max(weights))  # A multiply: see adam_update.
    else:
      rows, envs = replay.sample_indices(buffer, key_sample, batch_size)
      weights = mask.astype(jnp.float32)
    window, in_range = replay.window_rows(buffer, rows, max_n)
    data = buffer.data
    column = envs[:, None]
    nstep = targets.n_step_window(
      data['reward'][window, column],
      data['done'][window, column],
      data['terminal'][window, column],
      hp.gamma,
      hp.n_step,
      in_range,
    )
    last_row = jnp.take_along_axis(window, nstep.last[:, None], axis=1)[:, 0]
    obs = data['obs'][rows, envs].astype(obs_spec.dtype)
    next_obs = data['next_obs'][last_row, envs].astype(obs_spec.dtype)
    if config.augment_pad:
      key_obs, key_next = jax.random.split(key_aug)  # Two splits (not one of 2B): prefixes stay per sample.
      shift = jax.vmap(random_shift, in_axes=(0, 0, None))
      obs = shift(jax.random.split(key_obs, batch_size), obs, config.augment_pad)
      next_obs = shift(jax.random.split(key_next, batch_size), next_obs, config.augment_pad)
    batch = {'obs': obs, 'action': data['action'][rows, envs], 'next_obs': next_obs, 'nstep': nstep}
    return batch, weights, rows, envs

  def loss_fn(params, target_params, hp, batch, weights, noise_keys=(None, None, None)):
    out = apply(params, batch['obs'], noise_keys[0])
    next_target = apply(target_params, batch['next_obs'], noise_keys[1])
    next_online = (
      apply(jax.lax.stop_gradient(params), batch['next_obs'], noise_keys[2]) if config.double else None
    )
    action = batch['action']
    nstep = batch['nstep']
    if atoms == 1:
      q_sa = jnp.take_along_axis(out, action[:, None], axis=1)[:, 0]
      target = targets.double_dqn_target(nstep.reward, nstep.discount, next_target, next_online)
      per_sample = targets.td_loss(q_sa, target, hp.mse_loss)
      priority = jnp.abs(target - q_sa)
    else:
      z = support(hp)
      next_probs = jax.nn.softmax(next_target, axis=-1)
      q_next_target = jnp.sum(next_probs * z, axis=-1)
      q_next_online = (
        None if next_online is None else jnp.sum(jax.nn.softmax(next_online, axis=-1) * z, axis=-1)
      )
      next_action = targets.select_bootstrap_action(q_next_target, q_next_online)
      probs = jnp.take_along_axis(next_probs, next_action[:, None, None], axis=1)[:, 0]
      target_atoms = nstep.reward[:, None] + nstep.discount[:, None] * z
      target_probs = targets.categorical_projection(target_atoms, probs, z)
      logits = jnp.take_along_axis(out, action[:, None, None], axis=1)[:, 0]
      per_sample = targets.categorical_loss(logits, target_probs)
      q_sa = jnp.sum(jax.nn.softmax(logits, axis=-1) * z, axis=-1)
      priority = per_sample
    mask, size = batch_mask(hp)
    inv_size = 1.0 / size.astype(jnp.float32)
    # Padding samples have weight 0 (they are real replay samples, so their loss is finite).
    loss = jnp.sum(weights * per_sample) * inv_size
    q_mean = jnp.sum(mask * inv_size * q_sa)
    return loss, {'q_mean': q_mean, 'priority': jax.lax.stop_gradient(priority)}

  def gradient_step(params, opt_state, grads, hp):
    """Global-norm clipping, Adam (traced eps) and decoupled weight decay, all from traced `hp`."""
    grad_norm = optax.tree.norm(grads)
    scale = jnp.where(grad_norm > hp.max_grad_norm, hp.max_grad_norm / grad_norm, 1.0)
    grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
    params, opt_state = adam_update(params, opt_state, grads, hp.learning_rate, hp.adam_eps, hp.weight_decay)
    return params, opt_state, grad_norm

  def crossed(hp, lo, hi):
    """Whether a multiple of `target_update_period` lies in (lo, hi]."""
    period = hp.target_update_period
    return hi // period > lo // period

  def update_slot(state, hp, before, after, slot):
    """The `slot`-th update of this vector step: done iff it falls inside the step and after learning_starts."""
    env_step = (before // hp.update_period + 1 + slot) * hp.update_period
    valid = (env_step <= after) & (env_step > hp.learning_starts)

    def run(state):
      """The update (and the target syncs around it), as if it were due."""
      # Syncs due at env steps before this update: the online params have not changed since.
      sync_before = crossed(hp, state.synced_step, env_step - 1)
      target_params = _where_tree(sync_before, state.params, state.target_params)
      key = jax.random.fold_in(jax.random.fold_in(state.rng, _UPDATE), env_step)
      batch, weights, rows, envs = sample_batch(state.buffer, key, hp)
      noise_keys = (None, None, None)
      if config.noisy:
        noise_keys = tuple(
          jax.random.split(jax.random.fold_in(jax.random.fold_in(state.rng, _NOISE_UPDATE), env_step), 3)
        )
      (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, target_params, hp, batch, weights, noise_keys
      )
      params, opt_state, grad_norm = gradient_step(state.params, state.opt_state, grads, hp)
      buffer = state.buffer
      if config.prioritized:
        buffer = replay.update_priorities(buffer, rows, envs, aux['priority'] + 1e-10, mask=batch_mask(hp)[0])
      # Dopamine syncs right after the update of a step that is a multiple of the period.
      sync_after = crossed(hp, env_step - 1, env_step)
      target_params = _where_tree(sync_after, params, target_params)
      state = state.replace(
        params=params,
        target_params=target_params,
        opt_state=opt_state,
        buffer=buffer,
        synced_step=env_step,
        updates=state.updates + 1,
      )
      metrics = {
        'loss_sum': loss,
        'q_sum': aux['q_mean'],
        'grad_norm_sum': grad_norm,
        'target_syncs': sync_before.astype(jnp.int32) + sync_after.astype(jnp.int32),
        'updates': jnp.ones((), jnp.int32),
      }
      return state, metrics

    # Computed always and kept where due (a select, not `lax.cond`): under vmap a cond on a batched predicate
    # becomes this select anyway, and a real cond compiles the branch as a separate computation that XLA
    # fuses differently, so single runs would differ from vmapped ones in the last bits. Idle slots cost
    # compute only in unbatched runs whose update_period exceeds num_envs.
    new_state, metrics = run(state)
    state = _where_tree(valid, new_state, state)
    return state, jax.tree.map(lambda m: jnp.where(valid, m, jnp.zeros_like(m)), metrics)

  def iteration(state: TrainState, hp: HParams):
    e_steps = jnp.int32(e)
    before = state.iteration * e_steps
    after = before + e_steps
    eps = epsilon(hp, before)
    key_act = jax.random.fold_in(jax.random.fold_in(state.rng, _ACT), state.iteration)
    key_env = jax.random.fold_in(jax.random.fold_in(state.rng, _ENV), state.iteration)
    noise_key = None
    if config.noisy:
      noise_key = jax.random.fold_in(jax.random.fold_in(state.rng, _NOISE_ACT), state.iteration)
    action = act(state.params, hp, state.obs, key_act, eps, noise_key)
    obs, env_state, reward, terminated, truncated, next_obs = env_step(key_env, state.env_state, action)
    done = terminated | truncated
    transition = {
      'obs': state.obs.astype(store_dtype),
      'action': action,
      'reward': reward,
      'done': done,
      'terminal': terminated,
      'next_obs': next_obs.astype(store_dtype),
    }
    episode_return = state.episode_return + reward
    episode_length = state.episode_length + 1
    state = state.replace(
      buffer=replay.add(state.buffer, transition),
      env_state=env_state,
      obs=obs,
      episode_return=jnp.where(done, 0.0, episode_return),
      episode_length=jnp.where(done, 0, episode_length),
    )
    slot_metrics = []
    for slot in range(config.max_updates_per_step):  # Static and small (usually 1).
      state, m = update_slot(state, hp, before, after, slot)
      slot_metrics.append(m)
    update_metrics = jax.tree.map(lambda *xs: sum(xs[1:], xs[0]), *slot_metrics)
    # A sync due after the last update of this step: the online params are those of that env step.
    sync_end = crossed(hp, state.synced_step, after)
    state = state.replace(
      target_params=_where_tree(sync_end, state.params, state.target_params),
      synced_step=after,
      iteration=state.iteration + 1,
    )
    metrics = {
      'env_steps': after,
      'epsilon': eps,
      'episodes': jnp.sum(done.astype(jnp.int32)),
      'return_sum': jnp.sum(jnp.where(done, episode_return, 0.0)),
      'length_sum': jnp.sum(jnp.where(done, episode_length, 0)),
      **update_metrics,
    }
    metrics['target_syncs'] = metrics['target_syncs'] + sync_end.astype(jnp.int32)
    return state, metrics

  def run_chunk(state: TrainState, hparams: HParams, num_iterations: int):
    hp = as_arrays(hparams)
    # Totals accumulate in the carry, one addition per iteration in order (no [iterations] stacks of metrics).
    zeros = jax.eval_shape(lambda s: iteration(s, hp)[1], state)
    zeros = {k: jnp.zeros(v.shape, v.dtype) for k, v in zeros.items()}

    def body(carry, _):
      s, total = carry
      s, m = iteration(s, hp)
      return (s, {k: total[k] + m[k] for k in total}), (m['env_steps'], m['epsilon'])

    (state, total), (env_steps, eps) = jax.lax.scan(body, (state, zeros), None, length=num_iterations)
    return state, summarize(total, env_steps[-1], eps[-1])

  def train(rng: jax.Array, hparams: HParams):
    state = init(rng, hparams)
    return run_chunk(state, hparams, config.total_env_steps // e)

  def evaluate(
    state: TrainState, hparams: HParams, num_iterations: int, rng: jax.Array, axis_name: Any = None
  ):
    hp = as_arrays(hparams)
    obs, env_state = env_reset(jax.random.fold_in(rng, _ENV))

    def eval_step(step, obs, env_state):
      key_act = jax.random.fold_in(jax.random.fold_in(rng, _ACT), step)
      key_env = jax.random.fold_in(jax.random.fold_in(rng, _EVAL), step)
      action = act(state.params, hp, obs, key_act, hp.eps_eval)
      obs, env_state, reward, terminated, truncated, _ = env_step(key_env, env_state, action)
      return obs, env_state, reward, terminated | truncated

    if config.eval_first_episode:
      return first_episodes(obs, env_state, eval_step, num_iterations, axis_name)

    def body(carry, step):
      obs, env_state, episode_return = carry
      obs, env_state, reward, done = eval_step(step, obs, env_state)
      episode_return = episode_return + reward
      out = {
        'episodes': jnp.sum(done.astype(jnp.int32)),
        'return_sum': jnp.sum(jnp.where(done, episode_return, 0)),
      }
      return (obs, env_state, jnp.where(done, 0.0, episode_return)), out

    init_carry = (obs, env_state, jnp.zeros((e,), jnp.float32))
    _, out = jax.lax.scan(body, init_carry, jnp.arange(num_iterations, dtype=jnp.int32))
    episodes = jnp.sum(out['episodes'])
    mean = jnp.where(episodes > 0, jnp.sum(out['return_sum']) / jnp.maximum(episodes, 1), jnp.nan)
    return {'episodes': episodes, 'episode_return': mean}

  def first_episodes(obs, env_state, eval_step, num_iterations, axis_name):
    """`Config.eval_first_episode`: each env's first episode, until all have ended (see `Agent.evaluate`)."""

    def running(carry):
      step, finished = carry[0], carry[4]
      go = ~jnp.all(finished)
      if axis_name is not None:  # Any run of the vmapped batch still playing: an unbatched predicate.
        go = jax.lax.pmax(go.astype(jnp.int32), axis_name) > 0
      return go & (step < num_iterations)

    def body(carry):
      step, obs, env_state, episode_return, finished, return_sum, episodes = carry
      obs, env_state, reward, done = eval_step(step, obs, env_state)
      episode_return = episode_return + reward
      first = done & ~finished
      return (
        step + 1,
        obs,
        env_state,
        jnp.where(done, 0.0, episode_return),
        finished | done,
        return_sum + jnp.sum(jnp.where(first, episode_return, 0.0)),
        episodes + jnp.sum(first.astype(jnp.int32)),
      )

    zeros = (jnp.zeros((e,), jnp.float32), jnp.zeros((e,), bool), jnp.float32(0), jnp.int32(0))
    carry = jax.lax.while_loop(running, body, (jnp.int32(0), obs, env_state) + zeros)
    return_sum, episodes = carry[5], carry[6]
    mean = jnp.where(episodes > 0, return_sum / jnp.maximum(episodes, 1), jnp.nan)
    return {'episodes': episodes, 'episode_return': mean}

  return Agent(
    config=config,
    num_actions=num_actions,
    init=init,
    run_chunk=run_chunk,
    train=train,
    evaluate=evaluate,
    q_values=q_values,
  )


# --------------------------------------------------------------------------- #
# Presets: (Config, HParams) of the published agents, to be adapted to the env.
# --------------------------------------------------------------------------- #


def dqn_preset(**config_overrides: Any) -> Tuple[Config, HParams]:
  """DQN with Dopamine's `dqn.gin` values (1M replay, batch 32, lr 6.25e-5, update every 4 steps, target every
  8000, epsilon 1 -> 0.01 over 250k steps after 20k). Scale the step counts down for MinAtar budgets."""
  config = dataclasses.replace(
    Config(buffer_capacity=1_000_000, total_env_steps=50_000_000), **config_overrides
  )
  return config, HParams()


def der_preset(**config_overrides: Any) -> Tuple[Config, HParams]:
  """DER (Dopamine `DER.gin`, Atari 100k), without noisy nets unless `noisy=True`: see the module docstring.
  Pair it with `QNetwork(..., num_atoms=51, dueling=True)` (add `noisy=True` to both for noisy nets)."""
  config = dataclasses.replace(
    Config(
      total_env_steps=100_000,
      buffer_capacity=100_000,
      batch_size=32,
      max_n_step=10,
      double=True,
      num_atoms=51,
      prioritized=True,
    ),
    **config_overrides,
  )
  hparams = HParams(
    learning_rate=1e-4,
    adam_eps=1.5e-4,
    gamma=0.99,
    n_step=10,
    eps_start=1.0,
    eps_end=0.01,
    eps_decay_steps=2_000,
    eps_eval=0.001,
    learning_starts=1_600,
    update_period=1,
    target_update_period=2_000,
    v_min=-10.0,
    v_max=10.0,
  )
  return config, hparams


def drq_eps_preset(**config_overrides: Any) -> Tuple[Config, HParams]:
  """DrQ(eps) (Dopamine `DrQ_eps.gin`): DER without C51 and prioritized replay, with no target network
  (period 1), epsilon decay 5000 and random-shift augmentation. Pair it with `QNetwork(..., dueling=True)`."""
  config, hparams = der_preset(num_atoms=1, prioritized=False, augment_pad=1)
  config = dataclasses.replace(config, **config_overrides)
  return config, hparams.replace(eps_decay_steps=5_000, target_update_period=1)


def make_evaluator(env: Any, env_params: Any, network: nn.Module, config: Config, num_envs: int) -> Agent:
  """An agent for `Agent.evaluate` only, on `num_envs` fresh environments (e.g. an evaluation env that plays
  whole games with raw rewards): `config` sized for `num_envs` envs and never trained. Its `evaluate` takes
  the state of an agent made from the same network."""
  sizes = dict(num_envs=num_envs, total_env_steps=num_envs, buffer_capacity=num_envs, max_updates_per_step=1)
  return make_train(env, env_params, network, dataclasses.replace(config, **sizes))


def vmapped_chunks(agent: Agent) -> Callable[..., Tuple[TrainState, Dict[str, jax.Array]]]:
  """`run(state, hparams, num_iterations)`: `agent.run_chunk` jitted and vmapped over a leading run axis
  (seeds, sweep points), the state donated; one compiled program per chunk length."""

  @functools.lru_cache(maxsize=None)
  def compiled(num_iterations: int):
    return jax.jit(
      jax.vmap(functools.partial(agent.run_chunk, num_iterations=num_iterations)), donate_argnums=0
    )

  return lambda state, hparams, num_iterations: compiled(num_iterations)(state, hparams)
