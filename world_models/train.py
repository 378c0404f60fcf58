"""GenRL end to end: data -> VLM -> world model + connector + aligner -> behaviours from prompts -> scores.

Each stage is a sub-run of the workdir with its own checkpoints and metrics (`vlm/`, `wm/`, with
`wm.connector_finetune_steps > 0` also `wm_connector_ft/`, with the method 'wm_clip' also `wm_clip/` (its
head, `wm_clip.py`), `behaviour/<method>_<prompt>/`); rerunning the same command resumes the unfinished stage
and skips finished ones (a behaviour run is finished once its `final.json` holds the reward check, which runs
before its learning; it also holds `target_frames.png` and the rollout strips `rollout.png`/`rollout.gif`,
`strips.py`). Every loop is a jitted `lax.scan` in chunks; randomness is `fold_in(key, step)` of purpose-named
keys, so a resumed run equals an uninterrupted one.
The jitted functions are cached per config (`_functions`), so a second run in one process compiles nothing.
"""

from __future__ import annotations

import functools
import os
import re
import time

import flax
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from common import checkpoint
from common import metrics as metrics_lib
from common import results
from common.errors import ConfigError
from world_models import aligner as aligner_lib
from world_models import behaviour
from world_models import connector as connector_lib
from world_models import env_select
from world_models import reward as reward_lib
from world_models import rssm
from world_models import strips
from world_models import vlm
from world_models import wm_clip

METHODS = ('genrl', 'genrl_data_free', 'genrl_no_aligner', 'vlm_reward', 'wm_clip')


def validate(config) -> None:
  """Every mistake that needs no compile, as a one-line ConfigError."""
  n, w, b = config.vlm.n_frames, config.wm, config.behaviour
  if w.seq_len % n:
    raise ConfigError(
      f'wm.seq_len={w.seq_len} must be a multiple of vlm.n_frames={n} (one embedding per chunk)'
    )
  if config.data.length % n or config.data.length < w.seq_len:
    raise ConfigError(
      f'data.length={config.data.length} must be a multiple of vlm.n_frames={n} and >= wm.seq_len={w.seq_len}'
    )
  if config.data.num_envs < 1:
    raise ConfigError('data.num_envs must be >= 1: the replay would be empty')
  if config.env.image_size < 8 or config.env.image_size & (config.env.image_size - 1):
    raise ConfigError(f'env.image_size={config.env.image_size} must be a power of two >= 8')
  if config.connector.kl_direction not in connector_lib.DIRECTIONS:
    raise ConfigError(
      f"connector.kl_direction='{config.connector.kl_direction}' is not one of {list(connector_lib.DIRECTIONS)}"
    )
  if not 0.0 <= w.kl_balance <= 1.0:
    raise ConfigError(f'wm.kl_balance={w.kl_balance} must lie in [0, 1]')
  for name, every in (('wm.log_every', w.log_every), ('wm.checkpoint_every', w.checkpoint_every)):
    if every <= 0 or w.steps % every:
      raise ConfigError(f'{name}={every} must be positive and divide wm.steps={w.steps}')
  for name, every in (
    ('behaviour.log_every', b.log_every),
    ('behaviour.checkpoint_every', b.checkpoint_every),
  ):
    if every <= 0 or b.steps % every:
      raise ConfigError(f'{name}={every} must be positive and divide behaviour.steps={b.steps}')
  ft = w.connector_finetune_steps
  if not isinstance(ft, int) or ft < 0 or ft % w.log_every:
    raise ConfigError(
      f'wm.connector_finetune_steps={ft} must be an int >= 0 and a multiple of wm.log_every={w.log_every}'
    )
  if w.checkpoint_every % w.log_every or b.checkpoint_every % b.log_every:
    raise ConfigError('checkpoint_every must be a multiple of log_every (checkpoints happen between chunks)')
  if b.horizon < 2:
    raise ConfigError(f'behaviour.horizon={b.horizon} must be >= 2')
  h = config.wm_clip
  for name in ('hidden', 'batch_size', 'steps', 'log_every', 'checkpoint_every', 'layers'):
    value, low = h[name], 0 if name == 'layers' else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ConfigError(f'wm_clip.{name}={value!r} must be an int >= {low}')
  if h.steps % h.checkpoint_every or h.checkpoint_every % h.log_every:
    raise ConfigError(
      f'wm_clip.checkpoint_every={h.checkpoint_every} must divide wm_clip.steps={h.steps} and be a multiple '
      f'of wm_clip.log_every={h.log_every}'
    )
  if not h.lr > 0:
    raise ConfigError(f'wm_clip.lr={h.lr} must be > 0')
  bins = b.critic_bins
  if isinstance(bins, bool) or not isinstance(bins, int) or bins < 0 or bins == 1:
    raise ConfigError(f'behaviour.critic_bins={bins!r} must be 0 (scalar critic) or an int >= 2 (two-hot)')
  s = config.strips
  if not all(isinstance(v, int) for v in (s.frames, s.stride, s.scale, s.frame_ms)):
    raise ConfigError(f'strips.frames/stride/scale/frame_ms must be ints, got {s.to_dict()}')
  if s.frames < 0 or s.stride < 1 or s.scale < 1 or s.frame_ms < 1:
    raise ConfigError(
      f'strips: frames must be >= 0 (0 = off), stride, scale, frame_ms >= 1; got {s.to_dict()}'
    )
  if s.frames and (s.frames - 1) * s.stride >= config.env.episode_length:
    raise ConfigError(
      f'strips.frames={s.frames} x strips.stride={s.stride} do not fit one episode of '
      f'env.episode_length={config.env.episode_length} steps: need (frames - 1) * stride < episode_length'
    )
  unknown = [m for m in b.methods if m not in METHODS]
  if unknown or not b.methods:
    raise ConfigError(f'unknown behaviour.methods {unknown or "(empty)"}: choose from {list(METHODS)}')
  if b.modality not in ('text', 'video'):
    raise ConfigError(f"behaviour.modality='{b.modality}' is not 'text' or 'video'")
  env = env_select.module(config.env.name)
  if not b.prompts:
    raise ConfigError(f'behaviour.prompts is empty: choose from {list(env.TASKS)}')
  for prompt in b.prompts:
    try:
      env.check_prompt(prompt)
    except ConfigError as e:  # Say which environment's prompts were expected.
      raise ConfigError(f"{e} (env.name='{config.env.name}')") from None
  vlm.tokenizer(config).encode(list(b.prompts))
  if b.video_dir:
    if b.modality != 'video':
      raise ConfigError(f"behaviour.video_dir={b.video_dir!r} needs behaviour.modality='video'")
    for prompt in b.prompts:  # Read now, so a bad file fails before anything compiles.
      vlm.read_video(vlm.video_file(b.video_dir, prompt), n, config.env.image_size)


# ----- states ------------------------------------------------------------------------------------------


@flax.struct.dataclass
class WorldModelState:
  step: jax.Array
  rng: jax.Array
  wm_params: dict
  wm_opt: optax.OptState
  conn_params: dict
  conn_opt: optax.OptState
  align_params: dict
  align_opt: optax.OptState


@flax.struct.dataclass
class ConnectorFinetuneState:
  """The connector-only stage after the world model (`wm.connector_finetune_steps`, ours, not the paper's)."""

  step: jax.Array
  rng: jax.Array
  conn_params: dict
  conn_opt: optax.OptState


@flax.struct.dataclass
class WMClipState:
  """The WM-CLIP head's stage after the world model (`wm_clip.py`; the method 'wm_clip')."""

  step: jax.Array
  rng: jax.Array
  params: dict
  opt: optax.OptState


@flax.struct.dataclass
class BehaviourState:
  step: jax.Array
  rng: jax.Array
  actor_params: dict
  actor_opt: optax.OptState
  critic_params: dict
  critic_opt: optax.OptState
  slow_critic: dict
  return_range: jax.Array  # EMA of (P5, P95) of the lambda-returns.


def _optimizer(lr, eps, clip):
  return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr, eps=eps))


class Parts:
  """The modules and optimizers of one config, and its environment module (`env_select.module`)."""

  def __init__(self, config):
    self.config = config
    self.env = env_select.module(config.env.name)
    self.wm = rssm.make_world_model(config, self.env.ACTION_DIM)
    self.conn = connector_lib.make_connector(config)
    self.align = aligner_lib.make_aligner(config)
    b = config.behaviour
    self.actor = behaviour.Actor(b.hidden, b.layers, self.env.ACTION_DIM)
    self.critic = behaviour.Critic(b.hidden, b.layers, b.critic_bins)
    self.wm_tx = _optimizer(config.wm.lr, config.wm.eps, config.wm.clip)
    self.conn_tx = _optimizer(config.connector.lr, config.wm.eps, config.wm.clip)
    self.align_tx = optax.adam(config.aligner.lr)
    self.actor_tx = _optimizer(b.actor_lr, b.eps, b.clip)
    self.critic_tx = _optimizer(b.critic_lr, b.eps, b.clip)
    self.feat_dim = config.wm.deter + config.wm.stoch * config.wm.classes
    h = config.wm_clip
    self.wm_clip_head = wm_clip.EmbeddingHead(h.hidden, h.layers, config.vlm.embed_dim)
    self.wm_clip_tx = optax.adam(h.lr)


def init_world_model_state(parts: Parts, rng) -> WorldModelState:
  c = parts.config
  rng_wm, rng_conn, rng_align, rng_loop = jax.random.split(rng, 4)
  size = c.env.image_size
  actions = jnp.zeros((1, parts.env.ACTION_DIM))
  wm_params = parts.wm.init(rng_wm, jnp.zeros((1, size, size, 3)), actions)['params']
  conn_params = parts.conn.init(rng_conn, jnp.zeros((1, c.vlm.embed_dim)))['params']
  align_params = parts.align.init(rng_align, jnp.zeros((1, c.vlm.embed_dim)))['params']
  return WorldModelState(
    step=jnp.array(0, jnp.int32),
    rng=rng_loop,
    wm_params=wm_params,
    wm_opt=parts.wm_tx.init(wm_params),
    conn_params=conn_params,
    conn_opt=parts.conn_tx.init(conn_params),
    align_params=align_params,
    align_opt=parts.align_tx.init(align_params),
  )


def init_wm_clip_state(parts: Parts, rng) -> WMClipState:
  rng_head, rng_loop = jax.random.split(rng)
  params = parts.wm_clip_head.init(rng_head, jnp.zeros((1, parts.feat_dim)))['params']
  return WMClipState(
    step=jnp.array(0, jnp.int32), rng=rng_loop, params=params, opt=parts.wm_clip_tx.init(params)
  )


def init_behaviour_state(parts: Parts, rng) -> BehaviourState:
  rng_actor, rng_critic, rng_loop = jax.random.split(rng, 3)
  feat = jnp.zeros((1, parts.feat_dim))
  actor_params = parts.actor.init(rng_actor, feat)['params']
  critic_params = parts.critic.init(rng_critic, feat)['params']
  return BehaviourState(
    step=jnp.array(0, jnp.int32),
    rng=rng_loop,
    actor_params=actor_params,
    actor_opt=parts.actor_tx.init(actor_params),
    critic_params=critic_params,
    critic_opt=parts.critic_tx.init(critic_params),
    slow_critic=jax.tree.map(jnp.copy, critic_params),
    return_range=jnp.zeros((2,), jnp.float32),
  )


# ----- data --------------------------------------------------------------------------------------------


def chunk_embeddings(config, vlm_params, frames):
  """Per-step VLM embeddings (N, T, E): the clip of each n_frames chunk is embedded and its embedding held
  over the chunk's steps (GenRL assigns the window ending at step 7, 15, ... to steps 0-7, 8-15, ...)."""
  n = config.vlm.n_frames
  num, length = frames.shape[:2]
  clips = frames.reshape((num * length // n, n) + frames.shape[2:]).astype(jnp.float32) / 255.0
  embeds = jax.lax.map(
    lambda c: vlm.embed_video(config, vlm_params, c), clips.reshape((num, -1) + clips.shape[1:])
  )
  return jnp.repeat(embeds, n, axis=1)


def sample_batch(data, rng, batch_size, seq_len, n_frames):
  """`batch_size` sequences of `seq_len` steps starting at chunk boundaries, time-major, frames in [0, 1]."""
  num, length = data['frames'].shape[:2]
  rng_env, rng_start = jax.random.split(rng)
  env = jax.random.randint(rng_env, (batch_size,), 0, num)
  start = n_frames * jax.random.randint(rng_start, (batch_size,), 0, (length - seq_len) // n_frames + 1)

  def take(x):
    def one(e, s):
      return jax.lax.dynamic_slice_in_dim(x[e], s, seq_len, axis=0)

    return jnp.swapaxes(jax.vmap(one)(env, start), 0, 1)

  batch = {k: take(v) for k, v in data.items()}
  batch['frames'] = batch['frames'].astype(jnp.float32) / 255.0
  return batch


# ----- world model, connector, aligner -----------------------------------------------------------------


def world_model_loss(wm_params, parts: Parts, batch, rng):
  """Reconstruction (sum of squared pixel errors, decoder from stoch) + balanced KL with free bits."""
  w = parts.config.wm
  embeds = parts.wm.apply({'params': wm_params}, batch['frames'], method=rssm.WorldModel.encode)
  prev_actions = jnp.concatenate([jnp.zeros_like(batch['actions'][:1]), batch['actions'][:-1]])
  posts, prior_logits = rssm.observe(parts.wm, wm_params, embeds, prev_actions, rng)
  recon = parts.wm.apply({'params': wm_params}, posts['stoch'], method=rssm.WorldModel.decode)
  rec = jnp.mean(jnp.sum((recon - batch['frames']) ** 2, (-3, -2, -1)))
  kl, raw_kl = rssm.kl_loss(
    posts['logits'],
    prior_logits,
    free=w.kl_free,
    dyn_scale=w.kl_scale * w.kl_balance,
    rep_scale=w.kl_scale * (1 - w.kl_balance),
  )
  return rec + kl, (posts, {'loss': rec + kl, 'rec': rec, 'kl': raw_kl})


def connector_objective(conn_params, parts: Parts, posts, embeds):
  return connector_lib.connector_loss(
    parts.conn,
    conn_params,
    posts['stoch'],
    posts['logits'],
    embeds,
    free=parts.config.connector.kl_free,
    direction=parts.config.connector.kl_direction,
  )


def posteriors(parts: Parts, wm_params, batch, rng):
  """The world model's posterior states of a time-major batch, detached."""
  embeds = parts.wm.apply({'params': wm_params}, batch['frames'], method=rssm.WorldModel.encode)
  prev_actions = jnp.concatenate([jnp.zeros_like(batch['actions'][:1]), batch['actions'][:-1]])
  posts, _ = rssm.observe(parts.wm, wm_params, embeds, prev_actions, rng)
  return jax.tree.map(jax.lax.stop_gradient, posts)


def connector_update(parts: Parts, conn_params, conn_opt, posts, embeds):
  """One optimizer step of the connector toward the detached posteriors `posts` (the world-model stage and
  the connector fine-tune share it); returns (params, optimizer state, metrics)."""
  (conn_kl, init_kl), conn_grad = jax.value_and_grad(connector_objective, has_aux=True)(
    conn_params, parts, posts, embeds
  )
  updates, conn_opt = parts.conn_tx.update(conn_grad, conn_opt, conn_params)
  metrics = {'kl': conn_kl, 'initial_kl': init_kl, 'grad_norm': optax.tree.norm(conn_grad)}
  return optax.apply_updates(conn_params, updates), conn_opt, metrics


def world_model_step(state: WorldModelState, step, *, parts: Parts, data) -> tuple[WorldModelState, dict]:
  """One update of the world model, the connector (own optimizer, on the detached posterior) and the
  aligner (own optimizer, on the batch's video embeddings)."""
  c = parts.config
  rng = jax.random.fold_in(state.rng, step)
  rng_batch, rng_wm, rng_align = jax.random.split(rng, 3)
  batch = sample_batch(data, rng_batch, c.wm.batch_size, c.wm.seq_len, c.vlm.n_frames)
  (_, (posts, wm_metrics)), wm_grad = jax.value_and_grad(world_model_loss, has_aux=True)(
    state.wm_params, parts, batch, rng_wm
  )
  updates, wm_opt = parts.wm_tx.update(wm_grad, state.wm_opt, state.wm_params)
  wm_params = optax.apply_updates(state.wm_params, updates)
  conn_params, conn_opt, conn_metrics = connector_update(
    parts, state.conn_params, state.conn_opt, posts, batch['embeds']
  )
  embeds = batch['embeds'][:: c.vlm.n_frames].reshape(-1, c.vlm.embed_dim)
  align_loss, align_grad = jax.value_and_grad(
    lambda p: aligner_lib.aligner_loss(parts.align, p, embeds, rng_align, c.aligner.noise)
  )(state.align_params)
  updates, align_opt = parts.align_tx.update(align_grad, state.align_opt, state.align_params)
  align_params = optax.apply_updates(state.align_params, updates)
  metrics = {
    'wm': dict(wm_metrics, grad_norm=optax.tree.norm(wm_grad), param_norm=optax.tree.norm(wm_params)),
    'connector': conn_metrics,
    'aligner': {'loss': align_loss, 'grad_norm': optax.tree.norm(align_grad)},
  }
  new = state.replace(
    step=state.step + 1,
    wm_params=wm_params,
    wm_opt=wm_opt,
    conn_params=conn_params,
    conn_opt=conn_opt,
    align_params=align_params,
    align_opt=align_opt,
  )
  return new, metrics


def connector_finetune_step(state: ConnectorFinetuneState, step, *, parts: Parts, wm_params, data):
  """One connector-only update against the frozen world model's detached posteriors, on a replay batch
  drawn as in `world_model_step`. The world model is an input only; the aligner is not touched (it is
  trained on VLM embeddings alone, so it cannot fall behind the world model)."""
  c = parts.config
  rng = jax.random.fold_in(state.rng, step)
  rng_batch, rng_obs = jax.random.split(rng)
  batch = sample_batch(data, rng_batch, c.wm.batch_size, c.wm.seq_len, c.vlm.n_frames)
  posts = posteriors(parts, wm_params, batch, rng_obs)
  conn_params, conn_opt, metrics = connector_update(
    parts, state.conn_params, state.conn_opt, posts, batch['embeds']
  )
  return state.replace(step=state.step + 1, conn_params=conn_params, conn_opt=conn_opt), metrics


def connector_kl(parts: Parts, wm_params, conn_params, batch, rng):
  """The connector's KL to the world model's posterior on a fixed batch (for checks and tests)."""
  return connector_objective(conn_params, parts, posteriors(parts, wm_params, batch, rng), batch['embeds'])[0]


# ----- WM-CLIP head (the paper's model-based baseline; wm_clip.py) --------------------------------------


def wm_clip_inputs(parts: Parts, wm_params, vlm_params, batch, rng):
  """The head's inputs and targets on a time-major replay batch, both detached: the frozen world model's
  posterior features of steps n - 1 .. T - 1 (T - n + 1, B, F) and the frozen VLM's video embedding of the
  `vlm.n_frames` frames ending at each of those steps (T - n + 1, B, E)."""
  n = parts.config.vlm.n_frames
  feat = rssm.feature(posteriors(parts, wm_params, batch, rng))[n - 1 :]
  frame_features = vlm.make_model(parts.config).apply(
    {'params': vlm_params}, batch['frames'], method=lambda m, x: m.frame_encoder(x)
  )
  return feat, jax.lax.stop_gradient(wm_clip.window_embeddings(frame_features, n))


def wm_clip_objective(head_params, parts: Parts, wm_params, vlm_params, batch, rng):
  """The head's loss, 1 - cos, on a replay batch (`wm_clip_inputs`)."""
  feat, targets = wm_clip_inputs(parts, wm_params, vlm_params, batch, rng)
  return wm_clip.head_loss(parts.wm_clip_head, head_params, feat, targets)


def wm_clip_step(state: WMClipState, step, *, parts: Parts, wm_params, vlm_params, data):
  """One update of the head on a replay batch of `wm_clip.batch_size` sequences of `wm.seq_len` steps; the
  world model and the VLM are inputs only."""
  c = parts.config
  rng = jax.random.fold_in(state.rng, step)
  rng_batch, rng_obs = jax.random.split(rng)
  batch = sample_batch(data, rng_batch, c.wm_clip.batch_size, c.wm.seq_len, c.vlm.n_frames)
  loss, grad = jax.value_and_grad(wm_clip_objective)(
    state.params, parts, wm_params, vlm_params, batch, rng_obs
  )
  updates, opt = parts.wm_clip_tx.update(grad, state.opt, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grad)}
  return state.replace(step=state.step + 1, params=params, opt=opt), metrics


# ----- behaviour ---------------------------------------------------------------------------------------


def prompt_target(parts: Parts, wm_params, conn_params, align_params, prompt_embed, use_aligner):
  """Target latents of a prompt embedding (E,): aligner (optional) -> repeated over horizon + 1 steps ->
  connector imagination -> first step dropped. Returns stoch (H, stoch, classes)."""
  h = parts.config.behaviour.horizon
  embed = prompt_embed[None]
  if use_aligner:
    embed = parts.align.apply({'params': align_params}, embed)
  embeds = jnp.repeat(embed[None], h + 1, axis=0)
  stoch = connector_lib.imagine(parts.conn, conn_params, embeds)[1:, 0]
  return stoch


def make_reward_fn(parts: Parts, method, wm_params, vlm_params, target):
  """`reward_fn(states s_1..s_H) -> (H, B)`. GenRL: aligned max-cosine in the decoder's first projection
  against the target latents (H, stoch, classes). VLM-RM baseline: cosine between the frozen VLM's frame
  embedding of the decoded imagined frame and the prompt's text embedding (target (E,)). WM-CLIP: cosine
  between the head's output on the state's feature [deter, stoch] and the prompt's embedding (target
  {'embed': (E,), 'head': the head's parameters}; `wm_clip.py`)."""
  c = parts.config
  if method == 'wm_clip':

    def reward_fn(states):
      return wm_clip.reward(parts.wm_clip_head, target['head'], rssm.feature(states), target['embed'])

    return reward_fn
  if method == 'vlm_reward':

    def reward_fn(states):
      frames = parts.wm.apply({'params': wm_params}, states['stoch'], method=rssm.WorldModel.decode)
      feats = vlm.make_model(c).apply(
        {'params': vlm_params}, jnp.clip(frames, 0, 1), method=lambda m, x: m.frame_encoder(x)
      )
      return reward_lib.cosine(feats, target)

    return reward_fn

  target_proj = parts.wm.apply({'params': wm_params}, target, method=rssm.WorldModel.project)

  def reward_fn(states):
    agent = parts.wm.apply({'params': wm_params}, states['stoch'], method=rssm.WorldModel.project)
    return reward_lib.genrl_reward(agent, target_proj, c.behaviour.align_window, c.behaviour.align)

  return reward_fn


def start_states(parts: Parts, method, wm_state: WorldModelState, actor_params, data, rng):
  c = parts.config
  b = c.behaviour
  if method == 'genrl_data_free':

    def connector_latents(rng, batch):
      u = vlm.normalize(jax.random.normal(rng, (batch, c.vlm.embed_dim)))
      u = parts.align.apply({'params': wm_state.align_params}, u)
      _, logits = parts.conn.apply(
        {'params': wm_state.conn_params}, u, method=connector_lib.Connector.initial
      )
      return rssm.mode_stoch(logits)

    def actor_policy(state, rng_a):
      mean, std = parts.actor.apply({'params': actor_params}, rssm.feature(state))
      return behaviour.sample_action(mean, std, rng_a)

    return behaviour.data_free_starts(
      rng,
      wm=parts.wm,
      wm_params=wm_state.wm_params,
      connector_latents=connector_latents,
      actor_policy=actor_policy,
      batch=b.data_free_batch,
      warmup=b.warmup,
      video_prob=b.video_prob,
    )
  rng_batch, rng_obs = jax.random.split(rng)
  batch = sample_batch(data, rng_batch, b.batch_size, c.wm.seq_len, c.vlm.n_frames)
  posts = posteriors(parts, wm_state.wm_params, batch, rng_obs)
  return jax.tree.map(lambda s: s.reshape((-1,) + s.shape[2:]), posts)


def behaviour_step(state: BehaviourState, step, *, parts: Parts, method, wm_state, vlm_params, data, target):
  c = parts.config
  b = c.behaviour
  rng = jax.random.fold_in(state.rng, step)
  rng_start, rng_imagine = jax.random.split(rng)
  start = start_states(parts, method, wm_state, state.actor_params, data, rng_start)
  reward_fn = make_reward_fn(parts, method, wm_state.wm_params, vlm_params, target)
  scale = jnp.maximum(1.0, state.return_range[1] - state.return_range[0])
  (actor_loss, aux), actor_grad = jax.value_and_grad(behaviour.actor_loss, has_aux=True)(
    state.actor_params,
    wm=parts.wm,
    wm_params=wm_state.wm_params,
    actor=parts.actor,
    critic=parts.critic,
    critic_params=state.critic_params,
    start=start,
    reward_fn=reward_fn,
    scale=scale,
    config=c,
    rng=rng_imagine,
  )
  states = jax.tree.map(jax.lax.stop_gradient, aux['states'])
  slow_values = parts.critic.apply({'params': state.slow_critic}, rssm.feature(states))
  targets = behaviour.lambda_returns(jax.lax.stop_gradient(aux['rewards']), slow_values, b.gamma, b.lam)
  critic_loss, critic_grad = jax.value_and_grad(behaviour.critic_loss)(
    state.critic_params, critic=parts.critic, states=states, targets=targets, config=c
  )
  return_range, _ = behaviour.update_return_scale(
    state.return_range, jax.lax.stop_gradient(aux['returns']), b.return_norm_rate
  )
  updates, actor_opt = parts.actor_tx.update(actor_grad, state.actor_opt, state.actor_params)
  actor_params = optax.apply_updates(state.actor_params, updates)
  updates, critic_opt = parts.critic_tx.update(critic_grad, state.critic_opt, state.critic_params)
  critic_params = optax.apply_updates(state.critic_params, updates)
  copy = (state.step + 1) % b.slow_critic_every == 0
  slow = jax.tree.map(lambda new, old: jnp.where(copy, new, old), critic_params, state.slow_critic)
  metrics = {
    'actor_loss': actor_loss,
    'critic_loss': critic_loss,
    'reward': jnp.mean(aux['rewards']),
    'return': jnp.mean(aux['returns']),
    'return_scale': scale,
    'actor_grad_norm': optax.tree.norm(actor_grad),
    'critic_grad_norm': optax.tree.norm(critic_grad),
  }
  new = state.replace(
    step=state.step + 1,
    actor_params=actor_params,
    actor_opt=actor_opt,
    critic_params=critic_params,
    critic_opt=critic_opt,
    slow_critic=slow,
    return_range=return_range,
  )
  return new, metrics


# ----- evaluation in the real environment ---------------------------------------------------------------


def rollout(parts: Parts, wm_params, actor_params, task, rng, kind, *, keep_first=False):
  """`eval.episodes` real episodes of policy `kind` ('actor', 'random' or 'expert'), frames filtered through
  the world model's posterior; the initial states and random actions depend on `rng` only, so every kind
  starts from the same states. Returns time-major (rewards r_t = task reward after action t, posterior state
  {'deter', 'stoch'} of the frame of state s_t, task reward of s_t); with `keep_first` also episode 0's
  rendered frames (L, S, S, 3) and posterior states (L, ...), for the rollout strips."""
  c, env = parts.config, parts.env
  episodes, length, size = c.eval.episodes, c.env.episode_length, c.env.image_size
  starts = jax.vmap(env.reset)(jax.random.split(jax.random.fold_in(rng, 0), episodes))

  def body(carry, t):
    env_state, wm_state, prev_action = carry
    rng_t = jax.random.fold_in(jax.random.fold_in(rng, 1), t)
    frames = jax.vmap(lambda s: env.render(s, size))(env_state)
    embed = parts.wm.apply({'params': wm_params}, frames, method=rssm.WorldModel.encode)
    wm_state, _ = parts.wm.apply(
      {'params': wm_params}, wm_state, prev_action, embed, rng_t, method=rssm.WorldModel.obs_step
    )
    if kind == 'actor':
      mean, std = parts.actor.apply({'params': actor_params}, rssm.feature(wm_state))
      action = behaviour.mode_action(mean, std)
    elif kind == 'random':
      action = jax.random.uniform(rng_t, (episodes, env.ACTION_DIM), minval=-1, maxval=1)
    else:
      action = jax.vmap(lambda s: env.expert_action(task, s))(env_state)
    reward_now = jax.vmap(lambda s: env.task_reward(task, s))(env_state)
    env_state = jax.vmap(env.step)(env_state, action)
    r = jax.vmap(lambda s: env.task_reward(task, s))(env_state)
    out = (r, {'deter': wm_state['deter'], 'stoch': wm_state['stoch']}, reward_now)
    if keep_first:
      out += (frames[0], jax.tree.map(lambda x: x[0], wm_state))
    return (env_state, wm_state, action), out

  init_wm = parts.wm.apply({'params': wm_params}, episodes, method=rssm.WorldModel.initial)
  carry = (starts, init_wm, jnp.zeros((episodes, env.ACTION_DIM)))
  _, out = jax.lax.scan(body, carry, jnp.arange(length))
  return out


def strip_rows(parts: Parts, wm_params, actor_params, frames, posts, rng):
  """The rollout strips of evaluation episode 0 (`rollout(..., keep_first=True)`'s `frames` and `posts`):
  `strips.frames` frames `strips.stride` env steps apart, from step 0. 'real': the rendered frames;
  'reconstructed': the world model's decoding of its posterior of them (filtered, as the actor saw them);
  'imagined': the world model's prior rollout from the same first posterior state with the actor's mode
  actions, open loop (no frame after the first is seen), decoded. Each (frames, S, S, 3) in [0, 1]."""
  s = parts.config.strips
  idx = jnp.arange(s.frames) * s.stride
  start = jax.tree.map(lambda x: x[:1], posts)

  def policy(state, rng_a):
    del rng_a
    return behaviour.mode_action(*parts.actor.apply({'params': actor_params}, rssm.feature(state)))

  states, _ = rssm.imagine(parts.wm, wm_params, start, policy, (s.frames - 1) * s.stride, rng)

  def decode(stoch):
    return jnp.clip(parts.wm.apply({'params': wm_params}, stoch, method=rssm.WorldModel.decode), 0, 1)

  return {
    'real': frames[idx],
    'reconstructed': decode(posts['stoch'][idx]),
    'imagined': decode(states['stoch'][idx, 0]),
  }


def evaluate(parts: Parts, wm_params, actor_params, task, rng):
  """Mean episode returns of the actor (filtering frames through the world model's posterior), a uniform
  random policy and the scripted expert, from the same initial states; task is a traced index. Also
  returns the rollout strips of the actor's first episode (`strip_rows`; {} when `strips.frames` is 0)."""

  def run(kind):
    rewards = rollout(parts, wm_params, actor_params, task, rng, kind)[0]
    return jnp.mean(jnp.sum(rewards, 0))

  rewards, _, _, frames, posts = rollout(parts, wm_params, actor_params, task, rng, 'actor', keep_first=True)
  policy = jnp.mean(jnp.sum(rewards, 0))
  rand, expert = run('random'), run('expert')
  normalised = (policy - rand) / jnp.maximum(expert - rand, 1e-6)
  scores = {'return': policy, 'random_return': rand, 'expert_return': expert, 'normalised_score': normalised}
  rows = {}
  if parts.config.strips.frames:
    rows = strip_rows(parts, wm_params, actor_params, frames, posts, jax.random.fold_in(rng, 2))
  return scores, rows


def reward_check(parts: Parts, method, wm_params, vlm_params, target, task, rng):
  """Is the reward the actor is trained on valid on real trajectories? The scripted-expert and random rollouts
  of `evaluate` (same `rng`: same starts, same random actions, so the same trajectories), encoded by the world
  model's posterior, scored per step by `make_reward_fn` (GenRL's aligned max-cosine against the prompt's
  target latents; the VLM reward for `vlm_reward`; the head's cosine for `wm_clip`). Returns the mean per-step
  reward on each, the mean per-step task reward of the encoded states, and the Pearson correlation of the two
  over all steps of both."""
  reward_fn = make_reward_fn(parts, method, wm_params, vlm_params, target)
  out, model, true = {}, [], []
  for kind in ('expert', 'random'):
    rewards, states, reward_now = rollout(parts, wm_params, None, task, rng, kind)
    r = reward_fn(states)
    out[f'reward_{kind}'] = jnp.mean(r)
    out[f'task_reward_{kind}'] = jnp.mean(reward_now)
    out[f'{kind}_return'] = jnp.mean(jnp.sum(rewards, 0))
    model.append(r)
    true.append(reward_now)
  out['correlation'] = reward_lib.pearson(jnp.stack(model), jnp.stack(true))
  return out


def prompt_rank(parts: Parts, vlm_params, wm_params, target, prompt_index):
  """G4: the rank (0 = best) of the prompt among all task prompts under the frozen VLM, for the frames
  decoded from the prompt's target latents; also returns those frames."""
  c = parts.config
  frames = jnp.clip(parts.wm.apply({'params': wm_params}, target, method=rssm.WorldModel.decode), 0, 1)
  n = c.vlm.n_frames
  clips = frames[: (frames.shape[0] // n) * n].reshape((-1, n) + frames.shape[1:])
  video = vlm.normalize(jnp.mean(vlm.embed_video(c, vlm_params, clips), 0))
  text = vlm.embed_text(c, vlm_params, jnp.asarray(vlm.tokenizer(c).encode(list(parts.env.TASKS))))
  sims = text @ video
  return jnp.sum(sims > sims[prompt_index]), frames


# ----- jitted functions, cached per config ---------------------------------------------------------------

_CACHE = {}


class Functions:
  def __init__(self, config):
    self.parts = parts = Parts(config)
    c, env = config, parts.env
    self.collect = jax.jit(
      functools.partial(
        env.collect,
        num_envs=c.data.num_envs,
        length=c.data.length,
        size=c.env.image_size,
        scripted_fraction=c.data.scripted_fraction,
      )
    )
    self.vlm_train = vlm.make_train_chunk(c)
    self.vlm_init = jax.jit(functools.partial(vlm.init, c))
    self.embed_data = jax.jit(functools.partial(chunk_embeddings, c))
    self.caption_accuracy = jax.jit(
      lambda params, rng: {
        look: vlm.caption_accuracy(c, params, rng, getattr(env, look)) for look in ('VLM_LOOK', 'AGENT_LOOK')
      }
    )
    self.init_wm = jax.jit(functools.partial(init_world_model_state, parts))
    self.init_behaviour = jax.jit(functools.partial(init_behaviour_state, parts))
    self.init_wm_clip = jax.jit(functools.partial(init_wm_clip_state, parts))
    self.wm_clip_loss = jax.jit(
      lambda head, wm_params, vlm_params, batch, rng: wm_clip_objective(
        head, parts, wm_params, vlm_params, batch, rng
      )
    )
    self.embed_text = jax.jit(functools.partial(vlm.embed_text, c))
    self.embed_video = jax.jit(functools.partial(vlm.embed_video, c))
    self.video_prompt = jax.jit(functools.partial(video_prompt_frames, c))
    self.target = jax.jit(functools.partial(prompt_target, parts), static_argnums=4)
    self.evaluate = jax.jit(functools.partial(evaluate, parts))
    self.reward_check = jax.jit(functools.partial(reward_check, parts), static_argnums=0)
    self.init_conn_ft = jax.jit(
      lambda wm_state, rng: ConnectorFinetuneState(
        step=jnp.array(0, jnp.int32), rng=rng, conn_params=wm_state.conn_params, conn_opt=wm_state.conn_opt
      )
    )
    self.connector_kl = jax.jit(functools.partial(connector_kl, parts))
    self.rank = jax.jit(functools.partial(prompt_rank, parts))
    self.check_arrays = jax.jit(functools.partial(_check_arrays, parts))

    @functools.partial(jax.jit, static_argnums=2)
    def wm_chunk(state, data, length):
      step = functools.partial(world_model_step, parts=parts, data=data)
      state, per_step = jax.lax.scan(lambda s, _: step(s, s.step), state, None, length=length)
      return state, jax.tree.map(jnp.mean, per_step)

    @functools.partial(jax.jit, static_argnums=(2, 3))
    def behaviour_chunk(state, inputs, length, method):
      step = functools.partial(behaviour_step, parts=parts, method=method, **inputs)
      state, per_step = jax.lax.scan(lambda s, _: step(s, s.step), state, None, length=length)
      return state, jax.tree.map(jnp.mean, per_step)

    @functools.partial(jax.jit, static_argnums=3)
    def conn_ft_chunk(state, wm_params, data, length):
      step = functools.partial(connector_finetune_step, parts=parts, wm_params=wm_params, data=data)
      state, per_step = jax.lax.scan(lambda s, _: step(s, s.step), state, None, length=length)
      return state, jax.tree.map(jnp.mean, per_step)

    @functools.partial(jax.jit, static_argnums=4)
    def wm_clip_chunk(state, wm_params, vlm_params, data, length):
      step = functools.partial(
        wm_clip_step, parts=parts, wm_params=wm_params, vlm_params=vlm_params, data=data
      )
      state, per_step = jax.lax.scan(lambda s, _: step(s, s.step), state, None, length=length)
      return state, jax.tree.map(jnp.mean, per_step)

    self.wm_chunk = wm_chunk
    self.wm_clip_chunk = wm_clip_chunk
    self.conn_ft_chunk = conn_ft_chunk
    self.behaviour_chunk = behaviour_chunk


def functions(config) -> Functions:
  key = config.to_json()
  if key not in _CACHE:
    _CACHE[key] = Functions(config)
  return _CACHE[key]


def _commit(tree):
  """Commits arrays to the first device, so initialised and restored states share one jit signature (an
  uncommitted init and a committed Orbax restore would otherwise compile every chunk twice)."""
  return jax.device_put(tree, jax.devices()[0])


def _finite_or_none(value):
  value = float(value)
  return value if np.isfinite(value) else None


def _train_rows_finite(rows) -> bool:
  """Every `train/*` value of a sub-run's metrics rows is finite."""
  return all(np.isfinite(v) for r in rows for k, v in r.items() if k.startswith('train/'))


def _slug(text):
  return re.sub(r'[^a-z0-9]+', '_', text.lower()).strip('_')


def _run_name(config, method, prompt):
  suffix = '_video' if config.behaviour.modality == 'video' else ''
  suffix += 'file' if suffix and config.behaviour.video_dir else ''  # A user's clips: runs of their own.
  # Behaviours against a fine-tuned connector get their own runs, so one workdir can hold both.
  ft = config.wm.connector_finetune_steps
  suffix += f'_cft{ft}' if ft else ''
  return f'{method}_{_slug(prompt)}{suffix}'


# ----- the stages --------------------------------------------------------------------------------------


def train_vlm(fns: Functions, config, workdir, rng):
  steps = config.vlm.steps
  with checkpoint.Checkpointer(os.path.join(workdir, 'vlm'), every=steps, keep=1) as ckpt:
    init = fns.vlm_init(jax.random.fold_in(rng, 0))
    if ckpt.latest_step() == steps:
      return _commit(ckpt.restore(init)), None
    logging.info('VLM: training %d steps in one compiled call', steps)
    start = time.time()
    params, losses = fns.vlm_train(init, jax.random.fold_in(rng, 1))
    losses = np.asarray(losses)
    ckpt.save(steps, params, force=True)
    logging.info('VLM: done in %.0f s, final loss %.4f', time.time() - start, float(losses[-1]))
  return _commit(params), losses


def train_world_model(fns: Functions, config, workdir, data, rng) -> WorldModelState:
  w = config.wm
  sub = os.path.join(workdir, 'wm')
  with checkpoint.Checkpointer(sub, every=w.checkpoint_every, keep=2) as ckpt:
    state, start = ckpt.restore_or_init(fns.init_wm(rng))
    state = _commit(state)
    with metrics_lib.MetricWriter(sub, resume_step=start) as writer:
      for begin, end in metrics_lib.chunks(w.steps, w.log_every, start=start, desc='world model'):
        state, chunk_metrics = fns.wm_chunk(state, data, end - begin)
        writer.write(end, {'train': chunk_metrics})
        ckpt.save(end, state)
  return state


def _run_stage(sub, init_state, chunk, *, steps, log_every, checkpoint_every, name, desc):
  """A stage after the world model, as a resumable sub-run `sub`: `steps` steps of `chunk(state, length) ->
  (state, metrics)` in chunks of `log_every`, metrics under `train/<name>/`, checkpoints every
  `checkpoint_every` and at the last step; a rerun resumes it or, once done, restores it. Returns the state."""
  with checkpoint.Checkpointer(sub, every=checkpoint_every, keep=2) as ckpt:
    state, start = ckpt.restore_or_init(init_state)
    state = _commit(state)
    with metrics_lib.MetricWriter(sub, resume_step=start) as writer:
      for begin, end in metrics_lib.chunks(steps, log_every, start=start, desc=desc):
        state, chunk_metrics = chunk(state, end - begin)
        writer.write(end, {'train': {name: chunk_metrics}})
        ckpt.save(end, state, force=end == steps)
  return state


def train_connector_finetune(fns: Functions, config, workdir, wm_state: WorldModelState, data, rng):
  """`wm.connector_finetune_steps` connector-only steps on the final world model (ours, not the paper's):
  sub-run `wm_connector_ft/` with its own checkpoints and metrics (`train/connector_ft/*`); a rerun resumes
  it or, once done, restores it. Returns `wm_state` with the fine-tuned connector (and its optimizer state);
  the world model and aligner are returned unchanged. Off (0): `wm_state` itself."""
  w = config.wm
  steps = w.connector_finetune_steps
  if not steps:
    return wm_state
  state = _run_stage(
    os.path.join(workdir, 'wm_connector_ft'),
    fns.init_conn_ft(wm_state, rng),
    lambda state, length: fns.conn_ft_chunk(state, wm_state.wm_params, data, length),
    steps=steps,
    log_every=w.log_every,
    checkpoint_every=w.checkpoint_every,
    name='connector_ft',
    desc='connector fine-tune',
  )
  return wm_state.replace(conn_params=state.conn_params, conn_opt=state.conn_opt)


def train_wm_clip(fns: Functions, config, workdir, wm_state: WorldModelState, vlm_params, data, rng):
  """The WM-CLIP head (`wm_clip.py`), trained on the final, frozen world model and the frozen VLM for
  `wm_clip.steps` steps: sub-run `wm_clip/` with its own checkpoints and metrics (`train/wm_clip/{loss,
  grad_norm}`); a rerun resumes it or, once done, restores it. Returns the head's parameters, which every
  prompt's 'wm_clip' behaviour reuses."""
  h = config.wm_clip
  state = _run_stage(
    os.path.join(workdir, 'wm_clip'),
    fns.init_wm_clip(rng),
    lambda state, length: fns.wm_clip_chunk(state, wm_state.wm_params, vlm_params, data, length),
    steps=h.steps,
    log_every=h.log_every,
    checkpoint_every=h.checkpoint_every,
    name='wm_clip',
    desc='WM-CLIP head',
  )
  return state.params


def video_prompt_frames(config, task, rng):
  """A video prompt for task `task`: the scripted expert reaching and holding the task's pose from a random
  start, the last `n_frames` frames drawn in the VLM's appearance (a demonstration by a differently coloured
  arm or stickman, as GenRL's video prompts come from other bodies or real footage). Shape (1, n, S, S, 3)."""
  n, size = config.vlm.n_frames, config.env.image_size
  env = env_select.module(config.env.name)

  def body(state, _):
    nxt = env.step(state, env.expert_action(task, state))
    return nxt, env.render(nxt, size, env.VLM_LOOK)

  _, frames = jax.lax.scan(body, env.reset(rng), None, length=4 * n)
  return frames[None, -n:]


def save_rollout_strips(config, sub, rows, target_frames):
  """`rollout.png` and `rollout.gif` in the behaviour run's folder `sub`, rows top to bottom: real,
  reconstructed, imagined (`strip_rows`) and target (the prompt's decoded target latents at the same stride;
  the reward aligns them by a best offset). Nothing when `strips.frames` is 0."""
  s = config.strips
  if not s.frames:
    return
  ordered = {k: np.asarray(rows[k]) for k in ('real', 'reconstructed', 'imagined')}
  ordered['target'] = target_frames[:: s.stride][: s.frames]
  strips.save_rollout(sub, ordered, scale=s.scale, frame_ms=s.frame_ms)


def train_behaviour(
  fns: Functions, config, workdir, method, prompt, wm_state, vlm_params, data, rng, wm_clip_params=None
):
  """One actor-critic for (method, prompt); returns its evaluation (cached in final.json). 'wm_clip' needs the
  head's parameters `wm_clip_params` (`train_wm_clip`)."""
  b = config.behaviour
  sub = os.path.join(workdir, 'behaviour', _run_name(config, method, prompt))
  final = results.read_json(os.path.join(sub, 'final.json'))
  if final is not None and 'reward_check' in final:
    return final
  task = fns.parts.env.check_prompt(prompt)
  if b.modality == 'video':
    if b.video_dir:  # A user's clip.
      path = vlm.video_file(b.video_dir, prompt)
      frames = jnp.asarray(vlm.read_video(path, config.vlm.n_frames, config.env.image_size))
    else:  # The scripted demonstration.
      frames = fns.video_prompt(jnp.int32(task), jax.random.fold_in(rng, 2000 + task))
    vlm.check_video(frames, config)
    prompt_embed = fns.embed_video(vlm_params, frames)[0]
  else:
    prompt_embed = fns.embed_text(vlm_params, jnp.asarray(vlm.tokenizer(config).encode([prompt])))[0]
  use_aligner = method != 'genrl_no_aligner'
  latents = fns.target(
    wm_state.wm_params, wm_state.conn_params, wm_state.align_params, prompt_embed, use_aligner
  )
  target = {'vlm_reward': prompt_embed, 'wm_clip': {'embed': prompt_embed, 'head': wm_clip_params}}.get(
    method, latents
  )
  # Before learning: the reward on the expert's and random real trajectories of the evaluation below (same
  # key). Cached in reward_check.json; a final.json written before this check existed gets it added.
  check_path = os.path.join(sub, 'reward_check.json')
  check = results.read_json(check_path)
  if check is None:
    check = fns.reward_check(
      method, wm_state.wm_params, vlm_params, target, jnp.int32(task), jax.random.fold_in(rng, 1000)
    )
    check = {k: _finite_or_none(v) for k, v in jax.device_get(check).items()}
    check['reward'] = method if method in ('vlm_reward', 'wm_clip') else 'genrl'
    results.write_json(check_path, check)
  if final is not None:
    final['reward_check'] = check
    results.write_json(os.path.join(sub, 'final.json'), final)
    return final
  # The target is an argument of the same shape for every prompt: one compile per method.
  inputs = {'wm_state': wm_state, 'vlm_params': vlm_params, 'data': data, 'target': target}
  rng_init = jax.random.fold_in(rng, task)
  with checkpoint.Checkpointer(sub, every=b.checkpoint_every, keep=2) as ckpt:
    state, start = ckpt.restore_or_init(fns.init_behaviour(rng_init))
    state = _commit(state)
    with metrics_lib.MetricWriter(sub, resume_step=start) as writer:
      for begin, end in metrics_lib.chunks(b.steps, b.log_every, start=start, desc=f'{method} {prompt}'):
        state, chunk_metrics = fns.behaviour_chunk(state, inputs, end - begin, method)
        writer.write(end, {'train': chunk_metrics})
        ckpt.save(end, state)
  scores, rows = fns.evaluate(
    wm_state.wm_params, state.actor_params, jnp.int32(task), jax.random.fold_in(rng, 1000)
  )
  rank, frames = fns.rank(vlm_params, wm_state.wm_params, latents, jnp.int32(task))
  frames = np.asarray(frames)
  strips.save_png(os.path.join(sub, 'target_frames.png'), {'target': frames}, labels=False)
  save_rollout_strips(config, sub, jax.device_get(rows), frames)
  final = {k: float(v) for k, v in jax.device_get(scores).items()}
  final['target_rank'] = int(rank)
  final['reward_check'] = check
  results.write_json(os.path.join(sub, 'final.json'), final)
  logging.info(
    '%s: normalised score %.3f (return %.2f; expert %.2f, random %.2f)',
    os.path.basename(sub),
    final['normalised_score'],
    final['return'],
    final['expert_return'],
    final['random_return'],
  )
  return final


# ----- crafted checks (section 5.3 of the research note) ---------------------------------------------------


def _check_arrays(parts: Parts, wm_state: WorldModelState, actor_params, data, rng):
  """The array part of `crafted_checks`, one jitted function."""
  c = parts.config
  batch = sample_batch(data, jax.random.fold_in(rng, 1), 2, c.wm.seq_len, c.vlm.n_frames)

  def conn_loss_of_wm(wm_params):
    embeds = parts.wm.apply({'params': wm_params}, batch['frames'], method=rssm.WorldModel.encode)
    posts, _ = rssm.observe(parts.wm, wm_params, embeds, batch['actions'], jax.random.fold_in(rng, 2))
    return connector_objective(wm_state.conn_params, parts, posts, batch['embeds'])[0]

  leak = optax.tree.norm(jax.grad(conn_loss_of_wm)(wm_state.wm_params))
  clean = data['embeds'][:, :: c.vlm.n_frames].reshape(-1, c.vlm.embed_dim)[:256]
  noisy = aligner_lib.add_noise(jax.random.fold_in(rng, 3), clean, c.aligner.noise)
  before = aligner_lib.cosine_distance(noisy, clean)
  after = aligner_lib.cosine_distance(parts.align.apply({'params': wm_state.align_params}, noisy), clean)
  starts = start_states(parts, 'genrl_data_free', wm_state, actor_params, data, jax.random.fold_in(rng, 5))
  return leak, before, after, {'deter': starts['deter'], 'stoch': starts['stoch']}


def crafted_checks(fns: Functions, wm_state: WorldModelState, data, rng) -> dict:
  """Section 5.3 of the research note: crafted reward and alignment values, no connector gradient into the
  world model, the aligner on held-out noisy embeddings, data-free start shapes."""
  c = fns.parts.config
  x = jax.random.normal(jax.random.fold_in(rng, 0), (5, 7))
  cos_error = max(
    float(jnp.max(jnp.abs(reward_lib.max_cosine(x, x) - 1))),
    float(jnp.max(jnp.abs(reward_lib.max_cosine(x, 2 * x) - 0.5))),
  )
  # A score matrix whose best 3-step window starts at offset 2.
  matrix = jnp.full((7, 4), 0.1).at[2, 0].set(1.0).at[3, 1].set(1.0).at[4, 2].set(1.0)
  best = int(jnp.argmax(reward_lib.window_scores(matrix, 3)))
  idx = reward_lib.aligned_indices(best, 7, 4).tolist()
  actor_params = fns.init_behaviour(jax.random.fold_in(rng, 4)).actor_params
  leak, before, after, shapes = fns.check_arrays(wm_state, actor_params, data, rng)
  b = c.behaviour
  shapes_ok = shapes['deter'].shape == (b.data_free_batch, c.wm.deter) and shapes['stoch'].shape == (
    b.data_free_batch,
    c.wm.stoch,
    c.wm.classes,
  )
  return {
    'max_cosine_error': cos_error,
    'alignment_ok': best == 2 and idx == [0, 0, 0, 1, 2, 3, 3],
    'connector_grad_into_wm': float(leak),
    'aligner_distance_before': float(before),
    'aligner_distance_after': float(after),
    'data_free_shapes_ok': bool(shapes_ok),
  }


def reward_check_claims(config, scores) -> list[results.Claim]:
  """The reward-validity diagnostic as claims, for the first GenRL-reward method run (genrl, else data-free,
  else no-aligner): the GenRL reward must be higher on the scripted expert's real trajectories than on random
  ones for every prompt, and correlate positively with the task reward on every prompt (min over prompts).
  Neither passes vacuously: a missing or NaN value (a constant reward) fails."""
  method = next((m for m in ('genrl', 'genrl_data_free', 'genrl_no_aligner') if m in scores), None)
  if method is None:
    return []
  checks = [scores[method][p]['reward_check'] for p in config.behaviour.prompts]
  separated = sum(
    c['reward_expert'] is not None
    and c['reward_random'] is not None
    and c['reward_expert'] > c['reward_random']
    for c in checks
  )
  corr = [c['correlation'] for c in checks]
  low = None if any(v is None for v in corr) else float(min(corr))
  return [
    results.Claim(
      f'reward check ({method}): prompts whose mean GenRL reward on real expert trajectories > on random',
      paper='the reward tells the task apart',
      measured=float(separated),
      passed=separated == len(checks),
      unit='prompts',
      criterion=f'strictly greater on all {len(checks)} prompts',
    ),
    results.Claim(
      f'reward check ({method}): Pearson r of GenRL reward vs task reward per real step (min over prompts)',
      paper='positive',
      measured=low,
      passed=low is not None and low > 0,
      unit='r',
      criterion='> 0 on every prompt (expert and random steps pooled)',
    ),
  ]


def vlm_transfer_claim(config, accuracy) -> results.Claim:
  """V0, a precondition of the gpu plan (ours, 2026-11-28): the VLM, trained on its own look only, must
  recognise the captions in clips drawn in the agent's look, or a text prompt lands where the connector never
  was and G1-G4 measure nothing (the 2026-11-28 gpu run: agent-look accuracy at chance, the reward ranking
  random episodes above the expert's). Chance is 1 / (number of captions)."""
  return results.Claim.at_least(
    "V0 VLM caption accuracy on clips in the agent's look (it never trained on that look)",
    paper='a foundation VLM recognises the body in any colours',
    measured=float(accuracy['AGENT_LOOK']),
    threshold=config.acceptance.min_vlm_transfer,
  )


def acceptance_claims(config, scores) -> list[results.Claim]:
  """G1-G4 of the gpu plan (research note section 5.4), thresholds from config.acceptance."""
  a = config.acceptance
  prompts = list(config.behaviour.prompts)
  claims = []
  mean = {m: float(np.mean([scores[m][p]['normalised_score'] for p in prompts])) for m in scores}
  if 'genrl' in scores:
    good = sum(scores['genrl'][p]['normalised_score'] >= a.min_score for p in prompts)
    claims.append(
      results.Claim.at_least(
        f'G1 prompts with normalised score >= {a.min_score} (with data)',
        paper='GenRL solves in-distribution tasks',
        measured=float(good),
        threshold=float(a.min_prompts),
        unit='prompts',
      )
    )
    top2 = sum(scores['genrl'][p]['target_rank'] < 2 for p in prompts)
    claims.append(
      results.Claim.at_least(
        'G4 prompts whose decoded target the VLM ranks top-2',
        paper='targets are grounded',
        measured=float(top2),
        threshold=float(len(prompts)),
        unit='prompts',
      )
    )
  # G2 against the VLM-reward baseline; G2b (ours, 2026-11-28, reported beside G2) against the paper's own
  # model-based baseline, WM-CLIP, whose reward reads the latent through a learned head instead of decoding
  # frames and running the VLM on them.
  for baseline, name, paper in (
    ('vlm_reward', 'G2 GenRL minus VLM-reward baseline', 'GenRL > VLM-RM-style baselines'),
    ('wm_clip', 'G2b GenRL minus WM-CLIP (latent -> VLM-embedding head)', 'GenRL > WM-CLIP'),
  ):
    if 'genrl' in scores and baseline in scores:
      claims.append(
        results.Claim.at_least(
          f'{name}, mean normalised score',
          paper=paper,
          measured=mean['genrl'] - mean[baseline],
          threshold=a.min_margin,
        )
      )
  if 'genrl' in scores and 'genrl_data_free' in scores:
    # A ratio is meaningless when the data-based mean is not clearly positive: then the claim fails.
    ratio = mean['genrl_data_free'] / mean['genrl'] if mean['genrl'] > 0.05 else None
    claims.append(
      results.Claim(
        'G3 data-free / data-based mean normalised score',
        paper='data-free matches data-based',
        measured=ratio,
        passed=ratio is not None and ratio >= a.min_data_free_ratio,
        unit='ratio',
        criterion=f'>= {a.min_data_free_ratio} (data-based mean > 0.05)',
      )
    )
  return claims


def train_and_evaluate(config, workdir: str):
  start_time = time.time()
  validate(config)
  fns = functions(config)
  rng = jax.random.PRNGKey(config.seed)
  rng_data, rng_vlm, rng_wm, rng_behaviour, rng_check = (jax.random.fold_in(rng, i) for i in range(5))
  rng_conn_ft, rng_wm_clip = jax.random.fold_in(rng, 5), jax.random.fold_in(rng, 6)
  data = fns.collect(rng_data)
  data = _commit({'frames': data['frames'], 'actions': data['actions']})
  vlm_params, vlm_losses = train_vlm(fns, config, workdir, rng_vlm)
  data['embeds'] = _commit(fns.embed_data(vlm_params, data['frames']))
  accuracy = {
    k: float(v) for k, v in fns.caption_accuracy(vlm_params, jax.random.fold_in(rng_vlm, 2)).items()
  }
  # Written now, not only into results.json at the end, so a run cut by its time limit still has V0's input.
  results.write_json(os.path.join(workdir, 'vlm', 'caption_accuracy.json'), accuracy)
  logging.info(
    'VLM caption accuracy: %s (V0 needs AGENT_LOOK >= %s)', accuracy, config.acceptance.min_vlm_transfer
  )
  wm_state = train_world_model(fns, config, workdir, data, rng_wm)
  wm_state = train_connector_finetune(fns, config, workdir, wm_state, data, rng_conn_ft)
  use_wm_clip = 'wm_clip' in config.behaviour.methods
  head = train_wm_clip(fns, config, workdir, wm_state, vlm_params, data, rng_wm_clip) if use_wm_clip else None
  scores = {}
  for method in config.behaviour.methods:
    scores[method] = {}
    for prompt in config.behaviour.prompts:
      scores[method][prompt] = train_behaviour(
        fns, config, workdir, method, prompt, wm_state, vlm_params, data, rng_behaviour, head
      )
  checks = crafted_checks(fns, wm_state, data, rng_check)
  rows = metrics_lib.read_metrics(os.path.join(workdir, 'wm'))
  first, last = rows[0]['train/wm/loss'], rows[-1]['train/wm/loss']
  finite = _train_rows_finite(rows)
  for method in scores:
    for prompt in scores[method]:
      sub = os.path.join(workdir, 'behaviour', _run_name(config, method, prompt))
      brows = metrics_lib.read_metrics(sub)
      finite = finite and _train_rows_finite(brows)
  curves = {
    'world model': ([r['step'] for r in rows], [r['train/wm/loss'] for r in rows]),
    'connector KL': ([r['step'] for r in rows], [r['train/connector/kl'] for r in rows]),
  }
  wm_clip_loss = None
  if use_wm_clip:
    head_rows = metrics_lib.read_metrics(os.path.join(workdir, 'wm_clip'))
    finite = finite and _train_rows_finite(head_rows)
    wm_clip_loss = [head_rows[0]['train/wm_clip/loss'], head_rows[-1]['train/wm_clip/loss']]
    curves['WM-CLIP head, 1 - cos'] = (  # Plotted after the world-model steps.
      [config.wm.steps + r['step'] for r in head_rows],
      [r['train/wm_clip/loss'] for r in head_rows],
    )
  ft_kl = None
  if config.wm.connector_finetune_steps:
    ft_rows = metrics_lib.read_metrics(os.path.join(workdir, 'wm_connector_ft'))
    finite = finite and _train_rows_finite(ft_rows)
    ft_kl = [ft_rows[0]['train/connector_ft/kl'], ft_rows[-1]['train/connector_ft/kl']]
    # Plotted after the world-model steps.
    curves['connector KL, fine-tune'] = (
      [config.wm.steps + r['step'] for r in ft_rows],
      [r['train/connector_ft/kl'] for r in ft_rows],
    )
  results.plot_curves(
    os.path.join(workdir, 'wm_loss.png'),
    curves,
    xlabel='step',
    ylabel='loss',
    logy=True,
  )
  claims = [
    results.Claim('all losses finite', paper='finite', measured=float(finite), passed=bool(finite)),
    results.Claim.at_most(
      'world-model loss falls (last / first logged chunk mean)',
      paper='falls',
      measured=last / first,
      threshold=0.9,
    ),
    results.Claim.at_most(
      'max_cosine(x, x) = 1 and max_cosine(x, 2x) = 0.5 (max abs error)',
      paper=0.0,
      measured=checks['max_cosine_error'],
      threshold=1e-5,
    ),
    results.Claim(
      'alignment index on a crafted score matrix',
      paper='0,0,0,1,2,... from the best offset',
      measured=float(checks['alignment_ok']),
      passed=bool(checks['alignment_ok']),
    ),
    results.Claim.at_most(
      'connector loss gradient into the world model (global norm)',
      paper=0.0,
      measured=checks['connector_grad_into_wm'],
      threshold=0.0,
    ),
    results.Claim.at_most(
      'aligner lowers the cosine distance of noisy embeddings (after / before)',
      paper='< 1',
      measured=checks['aligner_distance_after'] / checks['aligner_distance_before'],
      threshold=0.99,
      unit='ratio',
    ),
    results.Claim(
      'data-free start states have the right shapes',
      paper='shapes',
      measured=float(checks['data_free_shapes_ok']),
      passed=bool(checks['data_free_shapes_ok']),
    ),
  ]
  claims += reward_check_claims(config, scores)
  if config.acceptance.enabled:
    claims += [vlm_transfer_claim(config, accuracy)] + acceptance_claims(config, scores)
  extra = {
    'scores': {
      m: {p: {k: v for k, v in s.items() if k != 'reward_check'} for p, s in ps.items()}
      for m, ps in scores.items()
    },
    'reward_check': {m: {p: s['reward_check'] for p, s in ps.items()} for m, ps in scores.items()},
    'connector_finetune_steps': config.wm.connector_finetune_steps,
    'connector_ft_kl_first_last': ft_kl,
    'wm_clip_loss_first_last': wm_clip_loss,
    'vlm_caption_accuracy': accuracy,
    'vlm_final_loss': None if vlm_losses is None else float(vlm_losses[-1]),
    'wm_loss_first_last': [first, last],
    'checks': checks,
  }
  results.write_results(
    workdir,
    project='world_models',
    experiment=config.experiment,
    claims=claims,
    plots=['wm_loss.png'],
    wall_clock_s=time.time() - start_time,
    extra=extra,
  )
  return wm_state, scores
