"""Training: two learners in a two-player game, as one jitted scan per chunk, vmapped over seeds.

Per update (`make_update`): roll out `num_envs` episodes of the game with both agents' current policies;
compute each agent's GAE advantages from its own time-aware critic; form agent i's advantages as the
Advantage Alignment of its own advantages with the opponent's (`alignment.aligned_advantages`, beta = 0 is
the naive learner); take a policy-gradient or PPO-clipped step for each actor and `critic_steps` steps for
each critic on the λ-returns.

`config.methods` maps a method name to its beta; all methods train in one process on the same seeds, so a
cross-method league can be played at the end (`evaluate.py`).
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple, Optional

import flax
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from absl import logging

from common import checkpoint
from common import distributed
from common import metrics as metrics_lib
from common import ppo
from common.errors import ConfigError
from opponent_shaping import agents as agents_lib
from opponent_shaping import alignment
from opponent_shaping import games

PLAYS = ('independent', 'self_play')
LOSSES = ('pg', 'ppo')
PAST_SELVES_STREAM = 0x5E1F  # Folded into the (seed, update) key for drawing past selves.
SEED_AXIS, BATCH_AXIS = 'seeds', 'batch'  # The axes of a run's device mesh (`make_mesh`).


@flax.struct.dataclass
class TrainState:
  """One seed of one method. `actor`/`critic` carry a leading axis of 2 (one per seat) with independent
  learners, and no such axis in self-play (one parameter set plays both seats)."""

  step: jax.Array
  rng: jax.Array
  actor: Any
  critic: Any
  actor_opt: Any
  critic_opt: Any
  past: Any = None  # `PastSelves` with `config.past_selves.size` > 0, else None (no leaves).


@flax.struct.dataclass
class PastSelves:
  """A ring buffer of the learner's past parameter sets (self-play only): every leaf of `actor` and `critic`
  carries a leading axis of `size`; snapshot k (0-based) sits in slot k % size, so the oldest is overwritten
  once the buffer is full. `count` is the number of snapshots taken so far."""

  actor: Any
  critic: Any
  count: jax.Array


def past_selves_size(config) -> int:
  """The buffer's capacity; 0 (the default, and for configs without the key) turns past selves off."""
  past = config.get('past_selves')
  return 0 if past is None else past.size


def init_past_selves(actor, critic, size: int) -> PastSelves:
  """An empty buffer of `size` slots shaped like one parameter set."""
  zeros = lambda x: jnp.zeros((size,) + x.shape, x.dtype)  # noqa: E731
  return PastSelves(jax.tree.map(zeros, actor), jax.tree.map(zeros, critic), jnp.zeros((), jnp.int32))


def add_past_self(buf: PastSelves, actor, critic, do=True) -> PastSelves:
  """Writes (actor, critic) into slot count % size when `do` (traced), else returns the buffer unchanged.
  Only one slot is touched, so the cost does not grow with the buffer."""
  size = jax.tree.leaves(buf.actor)[0].shape[0]
  slot = buf.count % size

  def put(b, x):
    return b.at[slot].set(jnp.where(do, x, b[slot]))

  return PastSelves(
    jax.tree.map(put, buf.actor, actor),
    jax.tree.map(put, buf.critic, critic),
    buf.count + jnp.asarray(do, jnp.int32),
  )


def sample_past_selves(buf: PastSelves, key, num_envs: int, num_past: int):
  """The opponents of one update: environments [0, num_past) face a past self drawn uniformly (with
  replacement) from the filled slots, the others the current self.

  Returns (actor [num_envs, ...], critic [num_envs, ...], is_past bool[num_envs]); the rows of current-self
  environments hold slot 0 and are not used. An empty buffer gives no past selves."""
  size = jax.tree.leaves(buf.actor)[0].shape[0]
  filled = jnp.minimum(buf.count, size)
  slots = jax.random.randint(key, (num_envs,), 0, jnp.maximum(filled, 1))
  is_past = (jnp.arange(num_envs) < num_past) & (filled > 0)
  slots = jnp.where(is_past, slots, 0)
  take = lambda x: x[slots]  # noqa: E731
  return jax.tree.map(take, buf.actor), jax.tree.map(take, buf.critic), is_past


def num_past_envs(config) -> int:
  """How many of the `num_envs` environments face a past self each update (a fixed count, as the authors'
  `cur_agent_frac`)."""
  return int(round(config.num_envs * config.past_selves.frac)) if past_selves_size(config) else 0


class Trajectory(NamedTuple):
  obs: jax.Array  # [T, 2, B, obs_dim]
  t: jax.Array  # [T, B]
  actions: jax.Array  # [T, 2, B, heads]
  logp: jax.Array  # [T, 2, B]
  rewards: jax.Array  # [T, 2, B]
  info: dict  # each [T, B, ...]


def validate(config: ml_collections.ConfigDict) -> None:
  """Clear errors for bad settings, before anything compiles."""
  if config.play not in PLAYS:
    raise ValueError(f"unknown play '{config.play}' (valid: {', '.join(PLAYS)})")
  if config.loss not in LOSSES:
    raise ValueError(f"unknown loss '{config.loss}' (valid: {', '.join(LOSSES)})")
  for name, beta in config.methods.items():
    if beta < 0:
      raise ValueError(f'method {name}: beta must be >= 0, got {beta}')
  alignment.validate_options(past=config.alignment.past, mask=config.alignment.mask)
  if config.normalize not in ('std', 'meanstd', 'none'):
    raise ValueError(f"unknown normalize '{config.normalize}' (valid: std, meanstd, none)")
  validate_past_selves(config)
  validate_batch_shards(config, len(jax.devices()))


def validate_batch_shards(config, num_devices: int) -> None:
  """`config.batch_shards` must divide the device count and `num_envs`: a one-line ConfigError if not."""
  n = config.batch_shards
  if n < 1 or num_devices % n:
    raise ConfigError(f'batch_shards must be a positive divisor of the {num_devices} devices, got {n}')
  if config.num_envs % n:
    raise ConfigError(f'batch_shards {n} must divide num_envs {config.num_envs}')


def validate_past_selves(config) -> None:
  """`config.past_selves` (size, every, frac): one-line ConfigErrors for values that cannot work."""
  past = config.get('past_selves')
  if past is None:
    return
  if not isinstance(past.size, int) or isinstance(past.size, bool) or past.size < 0:
    raise ConfigError(f'past_selves.size must be an integer >= 0 (0 = off), got {past.size!r}')
  if not isinstance(past.every, int) or isinstance(past.every, bool) or past.every < 1:
    raise ConfigError(
      f'past_selves.every must be an integer >= 1 (updates between snapshots), got {past.every!r}'
    )
  if not 0.0 <= past.frac <= 1.0:
    raise ConfigError(
      f'past_selves.frac must be in [0, 1] (fraction of envs facing a past self), got {past.frac}'
    )
  if past.size > 0 and config.play != 'self_play':
    raise ConfigError(
      f"past_selves.size > 0 needs play 'self_play' (a buffer of the learner's own past), "
      f"got play '{config.play}'"
    )


def make_game(config):
  return games.make_game(config.game, **config.game_kwargs)


def stack_seats(tree, play: str):
  """Parameters for both seats: as they are (independent) or the shared set twice (self-play)."""
  if play == 'independent':
    return tree
  return jax.tree.map(lambda x: jnp.stack([x, x]), tree)


def sample_actions(key, logits):
  """logits [..., heads, choices] -> (actions [..., heads], log-prob summed over heads [...])."""
  actions = jax.random.categorical(key, logits)
  logp = ppo.categorical_logp(logits, actions).sum(-1)
  return actions, logp


def make_rollout(game, agent, num_envs: int, mesh: Optional[Mesh] = None):
  """`rollout(actor2, key, opponent=None, past=None) -> Trajectory`: seat 0 and seat 1 act with
  `actor2[0]`, `actor2[1]`; with `opponent` (a fixed policy `(obs_row, key) -> action`), seat 1 uses it
  instead; with `past = (actor [B, ...], is_past bool[B])`, seat 1 of environment b acts with its own
  parameter set `actor[b]` where `is_past[b]` (a past self), else with `actor2[1]`. With a `mesh` that has
  a 'batch' axis (`make_mesh`), the environments and recurrent states are split over it (`batch_shards`)."""

  def split_batch(tree, axis):
    if mesh is None:
      return tree
    spec = PartitionSpec(*([None] * axis + [BATCH_AXIS]))
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, spec))

  def rollout(actor2, key, opponent=None, past=None):
    k_reset, k_loop = jax.random.split(key)
    env = split_batch(jax.vmap(game.reset)(jax.random.split(k_reset, num_envs)), 0)
    carry = jnp.broadcast_to(agent.initial_carry(), (2, num_envs) + agent.initial_carry().shape)
    carry = split_batch(carry, 1)
    act = jax.vmap(jax.vmap(agent.actor_step, in_axes=(None, 0, 0, 0)), in_axes=(0, 0, 0, None))
    if past is not None:
      carry = (carry, carry[1])

    def step(c, key):
      env, carry = c
      k_act, k_opp, k_env = jax.random.split(key, 3)
      obs = jnp.swapaxes(jax.vmap(game.observe)(env), 0, 1)  # [2, B, obs_dim]
      if past is None:
        carry, logits = act(actor2, carry, obs, env.t)
      else:
        (carry, carry_past), past_actor, is_past = carry, past[0], past[1]
        carry, logits = act(actor2, carry, obs, env.t)
        carry_past, logits_past = jax.vmap(agent.actor_step)(past_actor, carry_past, obs[1], env.t)
        logits = logits.at[1].set(jnp.where(is_past[:, None, None], logits_past, logits[1]))
        carry = (carry, carry_past)
      actions, logp = sample_actions(k_act, logits)
      if opponent is not None:
        fixed = jax.vmap(opponent)(obs[1], jax.random.split(k_opp, num_envs)).astype(actions.dtype)
        actions = actions.at[1].set(fixed)
      env_next, rewards, info = jax.vmap(game.step)(
        env, jnp.swapaxes(actions, 0, 1), jax.random.split(k_env, num_envs)
      )
      return (env_next, carry), Trajectory(obs, env.t, actions, logp, rewards.T, info)

    _, traj = jax.lax.scan(step, (env, carry), jax.random.split(k_loop, game.episode_length))
    return traj

  return rollout


def sequence_logp(agent, actor_params, obs, t, actions):
  """Log-probs of one seat's actions along [T, B] under `actor_params`, re-running the recurrent policy."""

  def step(carry, x):
    o, tt, a = x
    carry, logits = jax.vmap(agent.actor_step, in_axes=(None, 0, 0, 0))(actor_params, carry, o, tt)
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, a[..., None], -1)[..., 0].sum(-1)
    entropy = ppo.entropy_of_logits(logits).sum(-1)
    return carry, (logp, entropy)

  carry = jnp.broadcast_to(agent.initial_carry(), (obs.shape[1],) + agent.initial_carry().shape)
  _, (logp, entropy) = jax.lax.scan(step, carry, (obs, t, actions))
  return logp, entropy


def seat_values(agent, critic_params, obs, t):
  """V for one seat over [T, B]."""
  return jax.vmap(agent.critic_values, in_axes=(None, 1, 1), out_axes=1)(critic_params, obs, t)


def _normalize(adv, how):
  if how == 'none':
    return adv
  if how == 'std':
    return adv / (adv.std() + 1e-8)
  return ppo.normalize(adv)


def make_update(config, game, agent, beta, mesh: Optional[Mesh] = None):
  """One training update for one seed; `beta` (traced) is the Advantage Alignment weight; `mesh`: as in
  `make_rollout` (the environments of the update's rollout split over its 'batch' axis)."""
  rollout = make_rollout(game, agent, config.num_envs, mesh)
  actor_tx, critic_tx = make_optimizers(config)
  gae = jax.vmap(
    functools.partial(ppo.gae, gamma=config.gamma, lam=config.lam), in_axes=(1, 1, None), out_axes=1
  )  # Over the batch axis of [T, B].
  align = jax.vmap(
    functools.partial(
      alignment.aligned_advantages,
      gamma=config.gamma,
      past=config.alignment.past,
      mask=config.alignment.mask,
      past_discount=config.alignment.past_discount,
    ),
    in_axes=(1, 1, None),
    out_axes=1,
  )

  use_past = past_selves_size(config) > 0
  num_past = num_past_envs(config)

  def update(state: TrainState, _):
    key = jax.random.fold_in(state.rng, state.step)
    if use_past:
      # As the authors (`coin_train.py`): snapshot first, so the buffer is never empty when sampled.
      past_buf = add_past_self(
        state.past, state.actor, state.critic, state.step % config.past_selves.every == 0
      )
      opp_actor, opp_critic, is_past = sample_past_selves(
        past_buf, jax.random.fold_in(key, PAST_SELVES_STREAM), config.num_envs, num_past
      )
      traj = rollout(stack_seats(state.actor, config.play), key, past=(opp_actor, is_past))
    else:
      traj = rollout(stack_seats(state.actor, config.play), key)
    critic2 = stack_seats(state.critic, config.play)
    values = jax.vmap(functools.partial(seat_values, agent), in_axes=(0, 1, None))(critic2, traj.obs, traj.t)
    if use_past:
      # A past self's advantages (the learner's A² there) come from its own critic, as in the authors' code.
      v_past = jax.vmap(agent.critic_values, in_axes=(0, 1, 1), out_axes=1)(
        opp_critic, traj.obs[:, 1], traj.t
      )
      values = values.at[1].set(jnp.where(is_past[None, :], v_past, values[1]))
      # Which (seat, env) samples train the learner: a past self's seat does not (its parameters are frozen).
      learn = jnp.stack([jnp.ones_like(values[0]), jnp.broadcast_to(~is_past, values[1].shape)]).astype(
        values.dtype
      )  # [2, T, B]
      scale = learn[0].size / jnp.maximum(learn.sum(axis=(1, 2)), 1.0)  # [2]: mean over learner samples.
    rewards = jnp.swapaxes(traj.rewards, 0, 1)  # [2, T, B]
    adv, returns = jax.vmap(gae, in_axes=(0, 0, None))(rewards, values, jnp.zeros(()))
    adv = jax.vmap(_normalize, in_axes=(0, None))(adv, config.normalize)
    aligned = jnp.stack([align(adv[0], adv[1], beta), align(adv[1], adv[0], beta)])  # [2, T, B]
    logp_old = jnp.swapaxes(traj.logp, 0, 1)
    if use_past:
      aligned = aligned * learn

    def actor_loss(actor_params):
      actor2 = stack_seats(actor_params, config.play)
      logp, entropy = jax.vmap(functools.partial(sequence_logp, agent), in_axes=(0, 1, None, 1))(
        actor2, traj.obs, traj.t, traj.actions
      )
      if config.loss == 'ppo':
        losses = jax.vmap(lambda lp, lo, a: ppo.ppo_clipped_loss(lp, lo, a, clip_eps=config.clip_eps)[0])(
          logp, logp_old, aligned
        )
      else:
        losses = jax.vmap(ppo.policy_gradient_loss)(logp, aligned)
      if use_past:
        entropy = entropy * learn * scale[:, None, None]
        return (losses * scale).sum() - config.entropy * entropy.mean(axis=(1, 2)).sum(), entropy.mean()
      return losses.sum() - config.entropy * entropy.mean(axis=(1, 2)).sum(), entropy.mean()

    def critic_loss(critic_params):
      v = jax.vmap(functools.partial(seat_values, agent), in_axes=(0, 1, None))(
        stack_seats(critic_params, config.play), traj.obs, traj.t
      )
      if use_past:
        return (0.5 * jnp.square(v - returns) * learn).mean(axis=(1, 2)).dot(scale)
      return jax.vmap(ppo.value_loss)(v, returns).sum()

    def actor_epoch(carry, _):
      params, opt = carry
      (loss, entropy), grads = jax.value_and_grad(actor_loss, has_aux=True)(params)
      updates, opt = actor_tx.update(grads, opt, params)
      return (optax.apply_updates(params, updates), opt), (loss, entropy, optax.tree.norm(grads))

    def critic_epoch(carry, _):
      params, opt = carry
      loss, grads = jax.value_and_grad(critic_loss)(params)
      updates, opt = critic_tx.update(grads, opt, params)
      return (optax.apply_updates(params, updates), opt), loss

    epochs = config.ppo_epochs if config.loss == 'ppo' else 1
    (actor, actor_opt), (a_loss, entropy, a_norm) = jax.lax.scan(
      actor_epoch, (state.actor, state.actor_opt), None, length=epochs
    )
    (critic, critic_opt), c_loss = jax.lax.scan(
      critic_epoch, (state.critic, state.critic_opt), None, length=config.critic_steps
    )
    state = state.replace(
      step=state.step + 1, actor=actor, critic=critic, actor_opt=actor_opt, critic_opt=critic_opt
    )
    if use_past:
      state = state.replace(past=past_buf)
    stats = {
      'actor_loss': a_loss[-1],
      'critic_loss': c_loss[-1],
      'entropy': entropy[-1],
      'actor_grad_norm': a_norm[-1],
      'return_per_step': traj.rewards.mean(),
    }
    stats.update(game_stats(config.game, traj))
    if use_past:
      stats['past_self_fraction'] = is_past.mean()
    return state, stats

  return update


def game_stats(game_name: str, traj: Trajectory) -> dict:
  """Per-update summaries with the papers' names: cooperation (IPD), own-coin ratio (Coin Game),
  max-sum ratio (Negotiation)."""
  if game_name == 'ipd':
    return {'cooperation': traj.info['cooperate'].mean()}
  if game_name == 'coin_game':
    own, other = traj.info['own_pickup'].sum(), traj.info['other_pickup'].sum()
    return {
      'own_coin_ratio': own / jnp.maximum(own + other, 1.0),
      'pickups_per_step': (own + other) / traj.info['own_pickup'].size * 2,
    }
  if game_name == 'negotiation':
    return {'max_sum_ratio': traj.rewards.sum() / traj.info['max_sum'].sum()}
  return {}


def clip_by_global_norm_per_seat(max_norm) -> optax.GradientTransformation:
  """`optax.clip_by_global_norm` applied to each slice of the leading (seat) axis on its own (vmapped): slice
  i is scaled by max_norm / ‖g_i‖ where its own global norm ‖g_i‖ (over every leaf) reaches max_norm.

  Independent play stacks the two learners' parameters on that axis and steps them with one optimizer (Adam
  is element-wise, so only the clip could couple them); with a joint norm, a gradient spike of one learner
  would shrink the other's step. The state is `clip_by_global_norm`'s (empty).
  """
  clip = optax.clip_by_global_norm(max_norm)

  def update_fn(updates, state, params=None):
    del params
    return jax.vmap(lambda seat: clip.update(seat, state)[0])(updates), state

  return optax.GradientTransformation(clip.init, update_fn)


def make_optimizers(config):
  """(actor, critic) optimizers: Adam after a gradient clip to `config.grad_clip`, per learner: over each
  seat's own parameters in independent play (`clip_by_global_norm_per_seat`), over the shared set in
  self-play."""
  clip = clip_by_global_norm_per_seat if config.play == 'independent' else optax.clip_by_global_norm

  def tx(lr):
    return optax.chain(clip(config.grad_clip), optax.adam(lr))

  return tx(config.actor_lr), tx(config.critic_lr)


def make_init(config, game, agent):
  """`init(rng) -> TrainState` for one seed."""
  actor_tx, critic_tx = make_optimizers(config)

  def init(rng):
    rng_init, rng_loop = jax.random.split(rng)
    seats = 2 if config.play == 'independent' else 1
    params = jax.vmap(agent.init)(jax.random.split(rng_init, seats))
    if config.play == 'self_play':
      params = jax.tree.map(lambda x: x[0], params)
    return TrainState(
      step=jnp.zeros((), jnp.int32),  # Not weakly typed, as a restored checkpoint: one compile.
      rng=rng_loop,
      actor=params['actor'],
      critic=params['critic'],
      actor_opt=actor_tx.init(params['actor']),
      critic_opt=critic_tx.init(params['critic']),
      past=(
        init_past_selves(params['actor'], params['critic'], past_selves_size(config))
        if past_selves_size(config)
        else None
      ),
    )

  return init


def make_mesh(config) -> Optional[Mesh]:
  """The device mesh of a run, or None on one device: axes (SEED_AXIS, BATCH_AXIS) of shape
  (devices / batch_shards, batch_shards). The seeds split over the first axis; with `batch_shards` > 1 each
  seed's environment batch splits over the second (for more devices than seeds, or batches too large for
  one device); the parameters of a seed are copied on its batch group and their gradients summed over it."""
  devices = jax.devices()
  if len(devices) == 1:
    return None
  grid = np.asarray(devices, dtype=object).reshape(len(devices) // config.batch_shards, config.batch_shards)
  return Mesh(grid, (SEED_AXIS, BATCH_AXIS))


def make_train_chunk(config, game, agent, mesh: Optional[Mesh] = None):
  """`train_chunk(states, betas, length) -> (states, stats)`: `length` updates of every seed, jitted,
  vmapped over the seed axis (states and betas carry it), scanned over updates; stats are averaged over
  the chunk's updates. With a `mesh` whose batch axis has more than one device (`make_mesh`), the vmapped
  seed axis is named after the mesh's seed axis and each update's environments split over the batch axis."""
  split = mesh is not None and mesh.shape[BATCH_AXIS] > 1

  @functools.partial(jax.jit, static_argnums=2, donate_argnums=0)
  def train_chunk(states, betas, length):
    def one_seed(state, beta):
      update = make_update(config, game, agent, beta, mesh if split else None)
      state, stats = jax.lax.scan(update, state, None, length=length)
      return state, jax.tree.map(lambda x: x.mean(0), stats)

    return jax.vmap(one_seed, spmd_axis_name=SEED_AXIS if split else None)(states, betas)

  return train_chunk


def shard_seeds(states, mesh: Optional[Mesh]):
  """Splits the seed axis over the mesh's seed axis, copied over its batch axis (a no-op without a mesh).
  jit then runs each device's seeds where they live; a seed count that does not divide the seed axis stays
  on one device, with a warning."""
  if mesh is None:
    return states
  try:
    return distributed.shard_leading(states, mesh, axis_name=SEED_AXIS)
  except ValueError as e:
    logging.warning('seeds stay on one device: %s', e)
    return states


def init_states(config, game, agent):
  """{method: TrainState stacked over seeds}; every method starts from the same seeds."""
  init = jax.jit(jax.vmap(make_init(config, game, agent)))
  seeds = jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)
  return {name: init(seeds) for name in config.methods}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Trains every method of `config.methods` over `config.num_seeds` seeds with checkpoints and metrics,
  then evaluates (`evaluate.evaluate_and_report`) and writes results.json with the claims."""
  from opponent_shaping import evaluate  # Local: evaluate imports this module.

  validate(config)
  start_time = time.time()
  game = make_game(config)
  agent = agents_lib.make_agent(config.arch, game, hidden=config.hidden)
  mesh = make_mesh(config)
  train_chunk = make_train_chunk(config, game, agent, mesh)
  with checkpoint.Checkpointer(workdir, every=config.checkpoint_every, keep=2) as ckpt:
    states, start = ckpt.restore_or_init(init_states(config, game, agent))
    states = shard_seeds(states, mesh)
    betas = {name: jnp.full((config.num_seeds,), beta, jnp.float32) for name, beta in config.methods.items()}
    with metrics_lib.MetricWriter(workdir, resume_step=start) as writer:
      for begin, end in metrics_lib.chunks(config.updates, config.log_every, start=start):
        row = {}
        for name in config.methods:
          states[name], stats = train_chunk(states[name], betas[name], end - begin)
          row[name] = jax.tree.map(lambda x: x.mean(), stats)
        writer.write(end, {'train': row})
        ckpt.save(end, states, force=end == config.updates)
  train_seconds = time.time() - start_time
  return evaluate.evaluate_and_report(
    config, workdir, game, agent, states, train_seconds=train_seconds, start_time=start_time
  )


def env_steps_per_update(config) -> int:
  return config.num_envs * make_game(config).episode_length


__all__ = ['TrainState', 'make_train_chunk', 'train_and_evaluate', 'init_states', 'validate']
