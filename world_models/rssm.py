"""A DreamerV3-style world model: CNN encoder, RSSM (GRU deterministic state + categorical stochastic state
with unimix and straight-through samples), a decoder that reads only the stochastic state (GenRL), and the
KL balancing / free-bits loss.

RSSM (Hafner et al. 2023, DreamerV3 section 2; GenRL section 3 and research note section 2.2):
    h_t = GRU(h_{t-1}, [z_{t-1}, a_{t-1}])                  deterministic state
    prior  p(z_t | h_t)       = Cat(softmax(f(h_t)))        `img_step`
    posterior q(z_t | h_t, x_t) = Cat(softmax(g(e_t)))      `obs_step` (g(h_t, e_t) unless single_obs_posterior)
where z_t is `stoch` groups of `classes` one-hots, each categorical mixed with 1 % uniform (unimix).

The model is a Linen module with one method per step; the scans over time (`observe`, `imagine`) are plain
functions around `apply`, so they are ordinary `lax.scan`s that tests compare with Python loops.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def symlog(x):
  return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x):
  return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def unimix_logits(logits, unimix):
  """Log of (1 - unimix) softmax(logits) + unimix / classes: keeps every class probability >= unimix/K."""
  probs = jax.nn.softmax(logits, -1)
  probs = (1 - unimix) * probs + unimix / logits.shape[-1]
  return jnp.log(probs)


def sample_stoch(rng, logits):
  """A one-hot sample with straight-through gradients: sample + probs - stop_gradient(probs)."""
  probs = jax.nn.softmax(logits, -1)
  sample = jax.nn.one_hot(jax.random.categorical(rng, logits, -1), logits.shape[-1])
  return sample + probs - jax.lax.stop_gradient(probs)


def mode_stoch(logits):
  probs = jax.nn.softmax(logits, -1)
  sample = jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1])
  return sample + probs - jax.lax.stop_gradient(probs)


def categorical_kl(lhs_logits, rhs_logits):
  """KL(lhs || rhs) summed over the stochastic groups: (..., stoch, classes) -> (...)."""
  lhs = jax.nn.log_softmax(lhs_logits, -1)
  rhs = jax.nn.log_softmax(rhs_logits, -1)
  return jnp.sum(jnp.exp(lhs) * (lhs - rhs), (-2, -1))


def kl_loss(post_logits, prior_logits, *, free, dyn_scale, rep_scale):
  """KL balancing with free bits (DreamerV3 eq. 5; GenRL's balance 0.85, scale 0.6 = dyn 0.51, rep 0.09):

      dyn = max(free, KL(sg(post) || prior))    trains the prior
      rep = max(free, KL(post || sg(prior)))    trains the posterior (the representation)
      loss = dyn_scale * dyn + rep_scale * rep, per step, then averaged.

  Below `free` nats a term is constant and passes no gradient. Returns (loss, mean raw KL).
  """
  sg = jax.lax.stop_gradient
  dyn = categorical_kl(sg(post_logits), prior_logits)
  rep = categorical_kl(post_logits, sg(prior_logits))
  loss = dyn_scale * jnp.maximum(dyn, free) + rep_scale * jnp.maximum(rep, free)
  return jnp.mean(loss), jnp.mean(dyn)


class GRUCell(nn.Module):
  """DreamerV3's layer-normalised GRU: one Dense on [x, h], reset gate, update bias -1."""

  size: int

  @nn.compact
  def __call__(self, h, x):
    parts = nn.LayerNorm()(nn.Dense(3 * self.size, use_bias=False)(jnp.concatenate([x, h], -1)))
    reset, cand, update = jnp.split(parts, 3, -1)
    reset = jax.nn.sigmoid(reset)
    cand = jnp.tanh(reset * cand)
    update = jax.nn.sigmoid(update - 1)
    return update * cand + (1 - update) * h


class Encoder(nn.Module):
  depth: int

  @nn.compact
  def __call__(self, frames):  # (..., S, S, 3) in [0, 1]
    lead = frames.shape[:-3]
    x = frames.reshape((-1,) + frames.shape[-3:]) - 0.5
    mult = 1
    while x.shape[1] > 4:
      x = nn.Conv(self.depth * mult, (4, 4), strides=(2, 2))(x)
      x = nn.silu(nn.LayerNorm()(x))
      mult *= 2
    return x.reshape(lead + (-1,))


class Decoder(nn.Module):
  """Frames from the stochastic state only. `project` is its first Linear layer, which GenRL's reward
  compares in."""

  depth: int
  image_size: int

  def setup(self):
    self.levels = max(int(round(math.log2(self.image_size / 4))), 1)
    self.width = self.depth * 2 ** (self.levels - 1)
    self.project = nn.Dense(4 * 4 * self.width)
    self.norms = [nn.LayerNorm() for _ in range(self.levels - 1)]
    self.convs = [
      nn.ConvTranspose(self.width // 2 ** (i + 1), (4, 4), strides=(2, 2)) for i in range(self.levels - 1)
    ]
    self.out = nn.ConvTranspose(3, (4, 4), strides=(2, 2))

  def __call__(self, stoch_flat):
    lead = stoch_flat.shape[:-1]
    x = self.project(stoch_flat).reshape((-1, 4, 4, self.width))
    for norm, conv in zip(self.norms, self.convs):
      x = nn.silu(norm(conv(x)))
    x = self.out(x) + 0.5
    return x.reshape(lead + x.shape[1:])


class WorldModel(nn.Module):
  deter: int
  hidden: int
  stoch: int
  classes: int
  depth: int
  image_size: int
  action_dim: int
  unimix: float = 0.01
  single_obs_posterior: bool = True

  def setup(self):
    self.encoder = Encoder(self.depth)
    self.decoder = Decoder(self.depth, self.image_size)
    self.img_in = nn.Dense(self.hidden)
    self.img_in_norm = nn.LayerNorm()
    self.gru = GRUCell(self.deter)
    self.prior_hidden = nn.Dense(self.hidden)
    self.prior_norm = nn.LayerNorm()
    self.prior_logits = nn.Dense(self.stoch * self.classes)
    self.post_hidden = nn.Dense(self.hidden)
    self.post_norm = nn.LayerNorm()
    self.post_logits = nn.Dense(self.stoch * self.classes)

  def initial(self, batch: int):
    zeros = jnp.zeros((batch, self.stoch, self.classes))
    return {'deter': jnp.zeros((batch, self.deter)), 'stoch': zeros, 'logits': zeros}

  def _logits(self, x):
    return unimix_logits(x.reshape(x.shape[:-1] + (self.stoch, self.classes)), self.unimix)

  def prior(self, deter):
    return self._logits(self.prior_logits(nn.silu(self.prior_norm(self.prior_hidden(deter)))))

  def img_step(self, state, action, rng):
    """One prior step: (deter, stoch) and the action -> the next state with a sampled stoch."""
    flat = state['stoch'].reshape(state['stoch'].shape[:-2] + (-1,))
    x = nn.silu(self.img_in_norm(self.img_in(jnp.concatenate([flat, action], -1))))
    deter = self.gru(state['deter'], x)
    logits = self.prior(deter)
    return {'deter': deter, 'stoch': sample_stoch(rng, logits), 'logits': logits}

  def obs_step(self, state, action, embed, rng):
    """One posterior step; returns (posterior state, prior logits)."""
    prior = self.img_step(state, action, rng)
    x = embed if self.single_obs_posterior else jnp.concatenate([prior['deter'], embed], -1)
    logits = self._logits(self.post_logits(nn.silu(self.post_norm(self.post_hidden(x)))))
    post = {'deter': prior['deter'], 'stoch': sample_stoch(rng, logits), 'logits': logits}
    return post, prior['logits']

  def encode(self, frames):
    return self.encoder(frames)

  def decode(self, stoch):
    return self.decoder(stoch.reshape(stoch.shape[:-2] + (-1,)))

  def project(self, stoch):
    """The decoder's first Linear layer applied to the flattened stoch (GenRL's reward space)."""
    return self.decoder.project(stoch.reshape(stoch.shape[:-2] + (-1,)))

  def __call__(self, frames, actions):  # For init only: touches every layer.
    embed = self.encode(frames)
    state = self.initial(frames.shape[0])
    post, _ = self.obs_step(state, actions, embed, jax.random.PRNGKey(0))
    return self.decode(post['stoch'])


def make_world_model(config, action_dim: int = 2) -> WorldModel:
  """The world model of `config`; `action_dim` is the environment's (2 for the arm, 8 for the stickman)."""
  w = config.wm
  return WorldModel(
    deter=w.deter,
    hidden=w.hidden,
    stoch=w.stoch,
    classes=w.classes,
    depth=w.depth,
    image_size=config.env.image_size,
    action_dim=action_dim,
    unimix=w.unimix,
    single_obs_posterior=w.single_obs_posterior,
  )


def feature(state):
  """The actor-critic input: [deter, flattened stoch]."""
  stoch = state['stoch']
  return jnp.concatenate([state['deter'], stoch.reshape(stoch.shape[:-2] + (-1,))], -1)


def observe(wm, params, embeds, actions, rng):
  """Posterior rollout over time (time-major): embeds (T, B, E), actions (T, B, A) where actions[t] was
  taken before step t (actions[0] is ignored: zero). Returns (posterior states, prior logits), time-major."""
  batch = embeds.shape[1]
  actions = actions.at[0].set(0.0)

  def body(state, inputs):
    t, embed, action = inputs
    post, prior_logits = wm.apply(
      {'params': params}, state, action, embed, jax.random.fold_in(rng, t), method=WorldModel.obs_step
    )
    return post, (post, prior_logits)

  init = wm.apply({'params': params}, batch, method=WorldModel.initial)
  _, (posts, priors) = jax.lax.scan(body, init, (jnp.arange(embeds.shape[0]), embeds, actions))
  return posts, priors


def imagine(wm, params, start, policy, horizon, rng):
  """Prior rollout of `horizon` steps from `start` (batched state) with `policy(state, rng) -> action`.
  Returns the states s_0..s_H (time-major, H + 1 long) and the actions a_0..a_{H-1}."""

  def body(state, t):
    rng_t = jax.random.fold_in(rng, t)
    rng_a, rng_s = jax.random.split(rng_t)
    action = policy(state, rng_a)
    nxt = wm.apply({'params': params}, state, action, rng_s, method=WorldModel.img_step)
    return nxt, (nxt, action)

  _, (states, actions) = jax.lax.scan(body, start, jnp.arange(horizon))
  states = jax.tree.map(lambda s0, s: jnp.concatenate([s0[None], s]), start, states)
  return states, actions
