"""TD3 (Fujimoto et al. 2018) as one scanned loop per seed: vector environments, an on-device replay ring,
target policy smoothing, delayed actor updates, observation normalisation and a replay ratio.

One loop iteration = one vector step of `num_envs` environments, then `updates_per_iteration`
(= num_envs * replay_ratio) gradient updates. `run_chunk(state, start, length)` scans `length` iterations
starting at the (unbatched) iteration index `start`; callers vmap it over seeds with `start` unbatched, so
the warm-up test and the policy-delay test are real `lax.cond`s (a batched predicate would turn them into
selects that run both branches).

Every network carries float masks shaped like its parameters (ones for dense TD3): the masked Adam
(`ne.masked_adam`) and the re-masking after each Polyak step keep masked entries exactly zero, so NE and
the baselines share this loop. The critic's active-unit fraction (FAU) of each update's batch drives the
NE code's experience review (sample from the oldest `review_window` of the buffer's contents) and batch
halving; both are off for plain TD3.

Randomness: the seed key folded with (purpose, iteration, update), so a resumed run draws what an
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp

from rl_plasticity import envs as envs_lib
from rl_plasticity import metrics
from rl_plasticity import ne
from rl_plasticity import networks

RNG_INIT, RNG_LOOP, RNG_HOOK, RNG_EVAL, RNG_PROBE = range(5)


@dataclasses.dataclass(frozen=True)
class Config:
  """Static agent settings (derived from the run config by train.agent_config)."""

  num_envs: int = 1
  buffer_capacity: int = 10_000
  batch_size: int = 256
  learning_starts: int = 1_000  # Env steps of uniformly random actions, no updates.
  replay_ratio: float = 1.0  # Updates per environment step.
  actor_hidden: tuple = (256, 256)
  critic_hidden: tuple = (256, 256, 256)
  critic_layer_norm: bool = False
  learning_rate: float = 3e-4
  gamma: float = 0.99
  tau: float = 0.005
  policy_noise: float = 0.2
  noise_clip: float = 0.5
  policy_delay: int = 2
  expl_noise: float = 0.1
  obs_norm: bool = True
  review: bool = False  # NE experience review.
  review_awaken: float = 0.4  # FAU threshold.
  review_temperature: float = 0.9
  review_window: float = 0.3  # Oldest fraction of the buffer's contents.
  batch_halving: bool = False  # The NE code's auto_batch: half batch when FAU < 0.9 awaken.
  stale_moments: bool = False  # The NE code's Adam: moments at masked positions decay, not zeroed.
  eval_episodes: int = 10

  @property
  def updates_per_iteration(self) -> int:
    return int(round(self.num_envs * self.replay_ratio))


@flax.struct.dataclass
class Net:
  params: Any
  target: Any
  opt: ne.MaskedAdamState
  mask: Any


@flax.struct.dataclass
class Buffer:
  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  next_obs: jax.Array
  discount: jax.Array
  ptr: jax.Array
  size: jax.Array


@flax.struct.dataclass
class ObsNorm:
  count: jax.Array
  mean: jax.Array
  var: jax.Array


@flax.struct.dataclass
class State:
  actor: Net
  critic: Net
  buffer: Buffer
  norm: ObsNorm
  env_state: Any
  obs: jax.Array
  ep_return: jax.Array
  ep_length: jax.Array
  key: jax.Array
  fau: jax.Array  # Critic FAU of the latest update's batch (1 before any update).


# --------------------------------------------------------------------------- #
# Replay ring and observation statistics.
# --------------------------------------------------------------------------- #


def buffer_init(capacity: int, obs_dim: int, act_dim: int) -> Buffer:
  z = jnp.zeros
  return Buffer(
    z((capacity, obs_dim)), z((capacity, act_dim)), z((capacity,)), z((capacity, obs_dim)), z((capacity,)),
    jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
  )  # fmt: skip


def buffer_add(buf: Buffer, obs, action, reward, next_obs, discount) -> Buffer:
  """Writes a batch of n transitions at the write head (wrapping)."""
  cap = buf.reward.shape[0]
  idx = (buf.ptr + jnp.arange(reward.shape[0])) % cap
  return buf.replace(
    obs=buf.obs.at[idx].set(obs),
    action=buf.action.at[idx].set(action),
    reward=buf.reward.at[idx].set(reward),
    next_obs=buf.next_obs.at[idx].set(next_obs),
    discount=buf.discount.at[idx].set(discount),
    ptr=(buf.ptr + reward.shape[0]) % cap,
    size=jnp.minimum(buf.size + reward.shape[0], cap),
  )


def sample_indices(buf: Buffer, key, n: int, oldest_only, window: float) -> jax.Array:
  """n indices uniform over the contents, or over the oldest `window` fraction of them when
  `oldest_only`: offsets from the oldest row (ptr - size mod capacity), not from index 0."""
  cap = buf.reward.shape[0]
  oldest = (buf.ptr - buf.size) % cap
  span = jnp.where(oldest_only, jnp.maximum(jnp.floor(window * buf.size).astype(jnp.int32), 1), buf.size)
  span = jnp.maximum(span, 1)
  off = jnp.minimum((jax.random.uniform(key, (n,)) * span).astype(jnp.int32), span - 1)
  return (oldest + off) % cap


def norm_update(norm: ObsNorm, x) -> ObsNorm:
  """Merges a batch into running mean and variance (Chan et al.'s parallel update)."""
  n = x.shape[0]
  mean, var = jnp.mean(x, 0), jnp.var(x, 0)
  total = norm.count + n
  delta = mean - norm.mean
  new_mean = norm.mean + delta * n / total
  m2 = norm.var * norm.count + var * n + jnp.square(delta) * norm.count * n / total
  return ObsNorm(total, new_mean, m2 / total)


def normalize(norm: ObsNorm, x, enabled: bool):
  if not enabled:
    return x
  return jnp.clip((x - norm.mean) / jnp.sqrt(norm.var + 1e-8), -10.0, 10.0)


def _polyak(target, params, mask, tau):
  return jax.tree.map(lambda t, p, m: (tau * p + (1 - tau) * t) * m, target, params, mask)


# --------------------------------------------------------------------------- #
# The agent.
# --------------------------------------------------------------------------- #


class TD3:
  """Pure functions of one seed. `sparse=(initial, final density)` starts from NE's Erdos-Renyi masks
  (dense otherwise); `injection` gives the critic Plasticity Injection's three-part form."""

  def __init__(
    self,
    env: envs_lib.Env,
    cfg: Config,
    *,
    sparse: Optional[tuple[float, float]] = None,
    injection: bool = False,
  ):
    self.env, self.cfg = env, cfg
    self.actor_net = networks.Actor(cfg.actor_hidden, env.act_dim)
    critic = networks.InjectedCritic if injection else networks.Critic
    self.critic_net = critic(cfg.critic_hidden, cfg.critic_layer_norm)
    self.tx = ne.masked_adam(cfg.learning_rate, stale_moments=cfg.stale_moments)
    dummy_obs = jnp.zeros((1, env.obs_dim))
    dummy_act = jnp.zeros((1, env.act_dim))
    key = jax.random.PRNGKey(0)
    self._shapes = (
      jax.eval_shape(self.actor_net.init, key, dummy_obs),
      jax.eval_shape(self.critic_net.init, key, dummy_obs, dummy_act),
    )
    actor_shape, critic_shape = self._shapes
    self.sparse = sparse
    if sparse is None:
      self.actor_layers = self.critic_layers = None
    else:
      self.actor_layers = ne.layout(actor_shape, *sparse)
      self.critic_layers = ne.layout(critic_shape, *sparse)
    self.actor_paths = networks.kernel_paths(actor_shape)
    self.critic_paths = networks.kernel_paths(critic_shape)

  # --- parameters -------------------------------------------------------- #

  def init_nets(self, key) -> tuple[Net, Net]:
    ka, kc = jax.random.split(key)
    obs = jnp.zeros((1, self.env.obs_dim))
    act = jnp.zeros((1, self.env.act_dim))
    nets = []
    for k, params, layers in (
      (ka, self.actor_net.init(ka, obs), self.actor_layers),
      (kc, self.critic_net.init(kc, obs, act), self.critic_layers),
    ):
      mask = ne.ones_masks(params) if layers is None else ne.initial_masks(params, layers)
      params = jax.tree.map(lambda p, m: p * m, params, mask)
      nets.append(Net(params, params, self.tx.init(params), mask))
    return nets[0], nets[1]

  def init(self, seed_key) -> State:
    cfg, env = self.cfg, self.env
    actor, critic = self.init_nets(jax.random.fold_in(seed_key, RNG_INIT))
    keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(seed_key, RNG_INIT), 1), cfg.num_envs)
    obs, env_state = jax.vmap(env.reset)(keys)
    return State(
      actor=actor,
      critic=critic,
      buffer=buffer_init(cfg.buffer_capacity, env.obs_dim, env.act_dim),
      norm=ObsNorm(jnp.asarray(1e-4, jnp.float32), jnp.zeros(env.obs_dim), jnp.ones(env.obs_dim)),
      env_state=env_state,
      obs=obs,
      ep_return=jnp.zeros(cfg.num_envs),
      ep_length=jnp.zeros(cfg.num_envs, jnp.int32),
      key=seed_key,
      fau=jnp.ones(()),
    )

  def _opt_step(self, net: Net, grads) -> Net:
    updates, opt = self.tx.update(grads, net.opt, net.params, masks=net.mask)
    params = jax.tree.map(lambda p, u, m: (p + u) * m, net.params, updates, net.mask)
    return net.replace(params=params, opt=opt)

  # --- losses ------------------------------------------------------------ #

  def critic_loss(self, critic_params, state: State, batch, key, weights):
    cfg = self.cfg
    obs = normalize(state.norm, batch['obs'], cfg.obs_norm)
    nxt = normalize(state.norm, batch['next_obs'], cfg.obs_norm)
    noise = jnp.clip(
      cfg.policy_noise * jax.random.normal(key, batch['action'].shape), -cfg.noise_clip, cfg.noise_clip
    )
    next_action = jnp.clip(self.actor_net.apply(state.actor.target, nxt)[0] + noise, -1.0, 1.0)
    tq1, tq2, _ = self.critic_net.apply(state.critic.target, nxt, next_action)
    y = batch['reward'] + cfg.gamma * batch['discount'] * jnp.minimum(tq1, tq2)
    y = jax.lax.stop_gradient(y)
    q1, q2, acts = self.critic_net.apply(critic_params, obs, batch['action'])
    err = jnp.square(q1 - y) + jnp.square(q2 - y)
    loss = jnp.sum(weights * err) / jnp.sum(weights)
    return loss, (q1, acts)

  def actor_loss(self, actor_params, state: State, batch, weights):
    obs = normalize(state.norm, batch['obs'], self.cfg.obs_norm)
    action, acts = self.actor_net.apply(actor_params, obs)
    q1, _, _ = self.critic_net.apply(state.critic.params, obs, action)
    return -jnp.sum(weights * q1) / jnp.sum(weights), acts

  def sample(self, state: State, key, oldest_only=False):
    idx = sample_indices(state.buffer, key, self.cfg.batch_size, oldest_only, self.cfg.review_window)
    b = state.buffer
    return {
      'obs': b.obs[idx],
      'action': b.action[idx],
      'reward': b.reward[idx],
      'next_obs': b.next_obs[idx],
      'discount': b.discount[idx],
      'idx': idx,
    }

  # --- one update -------------------------------------------------------- #

  def review_draw(self, fau, key):
    """Whether this update samples from the oldest window: FAU below `awaken` triggers review, which
    then happens with probability 1 - g, g = 1 / (1 + T exp(awaken - FAU)) (the NE code's gate)."""
    cfg = self.cfg
    g = 1.0 / (1.0 + cfg.review_temperature * jnp.exp(cfg.review_awaken - fau))
    return cfg.review & (fau < cfg.review_awaken) & (jax.random.uniform(key) < 1.0 - g)

  def batch_weights(self, fau):
    b = self.cfg.batch_size
    if not self.cfg.batch_halving:
      return jnp.ones(b)
    half = fau < 0.9 * self.cfg.review_awaken
    return jnp.where(half & (jnp.arange(b) >= b // 2), 0.0, 1.0)

  def update(self, state: State, u, key):
    """One critic update, and (when u % policy_delay == 0; u unbatched) an actor update followed by the
    Polyak steps of both targets, re-masked."""
    cfg = self.cfg
    k_review, k_sample, k_noise = jax.random.split(key, 3)
    review = self.review_draw(state.fau, k_review)
    batch = self.sample(state, k_sample, review)
    weights = self.batch_weights(state.fau)
    (loss, (q1, acts)), grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
      state.critic.params, state, batch, k_noise, weights
    )
    critic = self._opt_step(state.critic, grads)
    state = state.replace(critic=critic, fau=metrics.active_fraction(acts))

    def actor_step(s):
      _, agrads = jax.value_and_grad(self.actor_loss, has_aux=True)(s.actor.params, s, batch, weights)
      actor = self._opt_step(s.actor, agrads)
      actor = actor.replace(target=_polyak(actor.target, actor.params, actor.mask, cfg.tau))
      c = s.critic
      c = c.replace(target=_polyak(c.target, c.params, c.mask, cfg.tau))
      return s.replace(actor=actor, critic=c)

    state = jax.lax.cond(u % cfg.policy_delay == 0, actor_step, lambda s: s, state)
    out = {
      'critic_loss': loss,
      'q_mean': jnp.mean(q1),
      'critic_grad_norm': _norm(grads),
      'fau': state.fau,
      'review': review.astype(jnp.float32),
    }
    return state, out

  # --- the loop ---------------------------------------------------------- #

  def policy(self, state: State, obs):
    return self.actor_net.apply(state.actor.params, normalize(state.norm, obs, self.cfg.obs_norm))[0]

  def iteration(self, state: State, it):
    """One vector env step, then (past learning_starts; `it` unbatched) the iteration's updates."""
    cfg, env = self.cfg, self.env
    key = jax.random.fold_in(jax.random.fold_in(state.key, RNG_LOOP), it)
    k_act, k_rand, k_env, k_upd = jax.random.split(key, 4)
    warm = it * cfg.num_envs < cfg.learning_starts
    explore = self.policy(state, state.obs) + cfg.expl_noise * jax.random.normal(
      k_act, (cfg.num_envs, env.act_dim)
    )
    random = jax.random.uniform(k_rand, (cfg.num_envs, env.act_dim), minval=-1.0, maxval=1.0)
    action = jnp.where(warm, random, jnp.clip(explore, -1.0, 1.0))
    env_keys = jax.random.split(k_env, cfg.num_envs)
    obs, env_state, reward, terminated, truncated, final_obs = jax.vmap(env.step)(
      env_keys, state.env_state, action
    )
    obs, env_state = envs_lib.sync_reset(env, it, env_keys, obs, env_state)
    done = terminated | truncated
    buffer = buffer_add(
      state.buffer, state.obs, action, reward, final_obs, 1.0 - terminated.astype(jnp.float32)
    )
    ep_return = state.ep_return + reward
    ep_length = state.ep_length + 1
    stats = {
      'return_sum': jnp.sum(jnp.where(done, ep_return, 0.0)),
      'episodes': jnp.sum(done).astype(jnp.float32),
    }
    state = state.replace(
      buffer=buffer,
      norm=norm_update(state.norm, final_obs) if cfg.obs_norm else state.norm,
      env_state=env_state,
      obs=obs,
      ep_return=jnp.where(done, 0.0, ep_return),
      ep_length=jnp.where(done, 0, ep_length),
    )
    n_upd = cfg.updates_per_iteration
    first = (it - cfg.learning_starts // cfg.num_envs) * n_upd

    def do_updates(s):
      def one(s, j):
        return self.update(s, first + j, jax.random.fold_in(k_upd, j))

      s, out = jax.lax.scan(one, s, jnp.arange(n_upd))
      return s, jax.tree.map(lambda v: jnp.nanmean(v), out) | {'updated': jnp.ones(())}

    def skip(s):
      zero = jnp.zeros(())
      keys = ('critic_loss', 'q_mean', 'critic_grad_norm', 'fau', 'review', 'updated')
      return s, {k: zero for k in keys}

    state, upd = jax.lax.cond(warm, skip, do_updates, state)
    return state, stats | upd

  def run_chunk(self, state: State, start, length: int):
    """`length` iterations from iteration `start`; returns the state and the chunk's summed/averaged stats."""
    state, per = jax.lax.scan(self.iteration, state, start + jnp.arange(length))
    updated = per['updated']
    n = jnp.maximum(jnp.sum(updated), 1.0)
    out = {
      'return_sum': jnp.sum(per['return_sum']),
      'episodes': jnp.sum(per['episodes']),
      'updates': jnp.sum(updated) * self.cfg.updates_per_iteration,
    }
    for k in ('critic_loss', 'q_mean', 'critic_grad_norm', 'fau', 'review'):
      out[k] = jnp.sum(per[k] * updated) / n
    return state, out

  # --- evaluation, probes ------------------------------------------------ #

  def evaluate(self, state: State, key):
    """Mean return of `eval_episodes` deterministic episodes (one per env, the first episode each)."""
    env, n = self.env, self.cfg.eval_episodes
    obs, env_state = jax.vmap(env.reset)(jax.random.split(key, n))

    def step(carry, t):
      obs, env_state, ret, alive = carry
      action = self.policy(state, obs)
      obs, env_state, r, term, trunc, _ = jax.vmap(env.step)(
        jax.random.split(jax.random.fold_in(key, t), n), env_state, action
      )
      ret = ret + alive * r
      alive = alive * (1.0 - (term | trunc).astype(jnp.float32))
      return (obs, env_state, ret, alive), None

    init = (obs, env_state, jnp.zeros(n), jnp.ones(n))
    (_, _, ret, _), _ = jax.lax.scan(step, init, jnp.arange(env.episode_length))
    return jnp.mean(ret)

  def batch_signals(self, state: State, key):
    """On one uniform batch: dense loss gradients (the potential gradients at masked positions, since masked
    weights are exactly zero the gradient w.r.t. W equals the gradient w.r.t. W*M) and activations."""
    k_s, k_n = jax.random.split(key)
    batch = self.sample(state, k_s)
    weights = jnp.ones(self.cfg.batch_size)
    (_, (_, cacts)), cgrads = jax.value_and_grad(self.critic_loss, has_aux=True)(
      state.critic.params, state, batch, k_n, weights
    )
    (_, aacts), agrads = jax.value_and_grad(self.actor_loss, has_aux=True)(
      state.actor.params, state, batch, weights
    )
    return {'critic_grads': cgrads, 'actor_grads': agrads, 'critic_acts': cacts, 'actor_acts': aacts}

  def probe(self, state: State, key):
    """Plasticity metrics and densities on one uniform batch."""
    sig = self.batch_signals(state, key)
    out = metrics.summary(sig['critic_acts'], sig['actor_acts'])
    out.update(self.densities(state.actor, state.critic))
    return out

  def densities(self, actor: Net, critic: Net) -> dict:
    """Total and per-layer densities of the networks' masks (`critic_density`, `density/critic/q1/dense_0`,
    ...); on masks stacked over seeds, their mean over seeds."""
    out = {
      'critic_density': metrics.global_density(critic.mask, self.critic_paths),
      'actor_density': metrics.global_density(actor.mask, self.actor_paths),
    }
    for name, d in metrics.layer_densities(critic.mask, self.critic_paths).items():
      out[f'density/critic/{name}'] = d
    for name, d in metrics.layer_densities(actor.mask, self.actor_paths).items():
      out[f'density/actor/{name}'] = d
    return out


def _norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


# A between-chunks hook of one seed (NE's topology step, ReDo, Reset, Plasticity Injection):
# hook(state, k, key) -> (state, stats), k the 1-based count of hook periods done (unbatched).
Hook = Callable[[State, jax.Array, jax.Array], tuple[State, dict]]
