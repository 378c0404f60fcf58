"""Behaviour learning in imagination (GenRL section 3.3, DreamerV3 section 3; research note 2.2, 2.6).

The actor is trained by backpropagation through the world model's imagined dynamics (no REINFORCE term, no
entropy bonus: GenRL's `imag_actor_grad: dynamics`, entropy 0). From start states s_0 the actor imagines
s_1..s_H; rewards r_t = reward(s_t) for t = 1..H and the critic's values give lambda-returns

    R_t = r_{t+1} + gamma ((1 - lambda) v(s_{t+1}) + lambda R_{t+1}),    R_H = v(s_H)

The actor maximises sum_t w_t R_t / S with S = max(1, P95 - P5) of the returns (an EMA, DreamerV3's return
normalisation) and w_t = gamma^t; the critic regresses v(s_t) on sg(R_t) computed with a slow critic that
is copied from the critic every `slow_critic_every` updates. The critic is a scalar head trained by squared
error (`critic_bins = 0`, what every run before 2026-11-28 used), or GenRL's and DreamerV3's head: logits
over `critic_bins` bins equally spaced in symlog space on [-20, 20], trained by cross-entropy against the
two-hot encoding of symlog(R_t), read out as symexp of the expected bin (zero-initialised, so v = 0 at first).

Start states: posterior states of replay sequences (data-based), or, data-free, a half/half mix of uniform
prior latents and connector latents of random unit embeddings passed through the aligner, followed by
`warmup` imagination steps with random or actor actions so the GRU state is in distribution.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from world_models import rssm


def hidden_layers(x, hidden: int, layers: int):
  """`layers` blocks Dense(hidden) -> LayerNorm -> SiLU (DreamerV3's MLP block), for the `nn.compact` method
  that calls it: the submodules belong to that module (named Dense_i, LayerNorm_i there)."""
  for _ in range(layers):
    x = nn.silu(nn.LayerNorm()(nn.Dense(hidden)(x)))
  return x


class Actor(nn.Module):
  hidden: int
  layers: int
  action_dim: int = 2
  min_std: float = 0.1
  max_std: float = 1.0

  @nn.compact
  def __call__(self, feat):
    x = hidden_layers(feat, self.hidden, self.layers)
    mean, std = jnp.split(nn.Dense(2 * self.action_dim)(x), 2, -1)
    std = (self.max_std - self.min_std) * jax.nn.sigmoid(std + 2.0) + self.min_std
    return mean, std


TWOHOT_LIMIT = 20.0  # The bins span [-20, 20] in symlog space (DreamerV3), about +-5e8 in value.


def twohot_bins(bins: int):
  """The bin centres, in symlog space."""
  return jnp.linspace(-TWOHOT_LIMIT, TWOHOT_LIMIT, bins)


def twohot(y, bins: int):
  """Two-hot encoding of `y` (symlog space; clipped to the bins) as weights (..., bins) on the two nearest
  centres, linear in the distance, so that sum(weights * centres) = y inside the range."""
  centres = twohot_bins(bins)
  y = jnp.clip(y, centres[0], centres[-1])
  upper = jnp.clip(jnp.searchsorted(centres, y, side='right'), 1, bins - 1)
  lo, hi = centres[upper - 1], centres[upper]
  w_hi = (y - lo) / (hi - lo)
  return (
    jax.nn.one_hot(upper - 1, bins) * (1 - w_hi)[..., None] + jax.nn.one_hot(upper, bins) * w_hi[..., None]
  )


def twohot_value(logits):
  """symexp of the expected bin centre under softmax(logits): the value a two-hot head predicts."""
  centres = twohot_bins(logits.shape[-1])
  return rssm.symexp(jnp.sum(jax.nn.softmax(logits, -1) * centres, -1))


class Critic(nn.Module):
  """v(feat). `bins = 0`: one scalar output (squared-error critic); `bins > 0`: two-hot symlog logits over
  `bins` bins, called with `logits=True` for the loss, and read out as `twohot_value` otherwise."""

  hidden: int
  layers: int
  bins: int = 0

  @nn.compact
  def __call__(self, feat, logits: bool = False):
    x = hidden_layers(feat, self.hidden, self.layers)
    if not self.bins:
      return nn.Dense(1, kernel_init=nn.initializers.zeros)(x)[..., 0]
    out = nn.Dense(self.bins, kernel_init=nn.initializers.zeros)(x)
    return out if logits else twohot_value(out)


def sample_action(mean, std, rng):
  """A squashed-normal sample tanh(mean + std * eps), reparameterised (gradients reach mean and std)."""
  return jnp.tanh(mean + std * jax.random.normal(rng, mean.shape))


def mode_action(mean, std):
  del std
  return jnp.tanh(mean)


def lambda_returns(rewards, values, gamma, lam):
  """rewards (H, B): r_{t+1} for t < H; values (H + 1, B): v(s_0..s_H). Returns R_0..R_{H-1} (H, B)."""

  def body(nxt, inputs):
    reward, value = inputs
    ret = reward + gamma * ((1 - lam) * value + lam * nxt)
    return ret, ret

  _, returns = jax.lax.scan(body, values[-1], (rewards, values[1:]), reverse=True)
  return returns


def update_return_scale(scale_state, returns, rate):
  """EMA of the 5th and 95th percentiles of the returns; the scale is max(1, P95 - P5)."""
  low, high = jnp.percentile(returns, 5), jnp.percentile(returns, 95)
  low = (1 - rate) * scale_state[0] + rate * low
  high = (1 - rate) * scale_state[1] + rate * high
  return jnp.stack([low, high]), jnp.maximum(1.0, high - low)


def imagine(wm, wm_params, actor, actor_params, start, horizon, rng, *, dynamics_grad=True):
  """Imagined rollout with the actor (its input is detached, so the actor's gradient can only come through
  the dynamics). With `dynamics_grad=False` the actions enter the dynamics detached: a check that nothing
  else carries gradient to the actor."""

  def policy(state, rng_a):
    mean, std = actor.apply({'params': actor_params}, jax.lax.stop_gradient(rssm.feature(state)))
    action = sample_action(mean, std, rng_a)
    return action if dynamics_grad else jax.lax.stop_gradient(action)

  return rssm.imagine(wm, wm_params, start, policy, horizon, rng)


def actor_loss(
  actor_params,
  *,
  wm,
  wm_params,
  actor,
  critic,
  critic_params,
  start,
  reward_fn,
  scale,
  config,
  rng,
  dynamics_grad=True,
):
  """Dynamics-backprop actor loss. reward_fn(states s_1..s_H) -> (H, B). Returns (loss, aux)."""
  b = config.behaviour
  wm_params = jax.lax.stop_gradient(wm_params)
  states, _ = imagine(wm, wm_params, actor, actor_params, start, b.horizon, rng, dynamics_grad=dynamics_grad)
  rewards = reward_fn(jax.tree.map(lambda s: s[1:], states))
  values = critic.apply({'params': critic_params}, rssm.feature(states))
  returns = lambda_returns(rewards, values, b.gamma, b.lam)
  weights = b.gamma ** jnp.arange(b.horizon)[:, None]
  loss = -jnp.mean(weights * returns / scale)
  aux = {'states': states, 'returns': returns, 'rewards': rewards}
  return loss, aux


def critic_loss(critic_params, *, critic, states, targets, config):
  """Squared error (scalar critic) or two-hot cross-entropy on symlog targets (`critic.bins > 0`), weighted by
  gamma^t over the imagined steps s_0..s_{H-1}."""
  b = config.behaviour
  feat = jax.lax.stop_gradient(rssm.feature(states))
  targets = jax.lax.stop_gradient(targets)
  weights = b.gamma ** jnp.arange(b.horizon)[:, None]
  if not critic.bins:
    values = critic.apply({'params': critic_params}, feat)[:-1]
    return jnp.mean(weights * (values - targets) ** 2)
  logits = critic.apply({'params': critic_params}, feat, logits=True)[:-1]
  nll = -jnp.sum(twohot(rssm.symlog(targets), critic.bins) * jax.nn.log_softmax(logits, -1), -1)
  return jnp.mean(weights * nll)


def uniform_prior_states(wm, rng, batch):
  """Deterministic state zero, stoch one-hots drawn uniformly per group."""
  idx = jax.random.randint(rng, (batch, wm.stoch), 0, wm.classes)
  stoch = jax.nn.one_hot(idx, wm.classes)
  return {'deter': jnp.zeros((batch, wm.deter)), 'stoch': stoch, 'logits': jnp.zeros_like(stoch)}


def data_free_starts(rng, *, wm, wm_params, connector_latents, actor_policy, batch, warmup, video_prob):
  """Data-free start states: uniform-prior latents, each replaced with probability `video_prob` by a
  connector latent (connector_latents(rng, batch) -> (batch, stoch, classes)), then `warmup` imagination
  steps, half of the samples with uniform random actions and half with the actor."""
  rng_u, rng_v, rng_mix, rng_kind, rng_w = jax.random.split(rng, 5)
  start = uniform_prior_states(wm, rng_u, batch)
  video = connector_latents(rng_v, batch)
  use_video = jax.random.uniform(rng_mix, (batch, 1, 1)) < video_prob
  start = dict(start, stoch=jnp.where(use_video, video, start['stoch']))
  random_half = (jnp.arange(batch) % 2 == 0)[:, None]

  def policy(state, rng_a):
    rng_r, rng_p = jax.random.split(rng_a)
    actor_a = actor_policy(state, rng_p)  # (batch, action_dim): its shape sizes the random actions.
    random_a = jax.random.uniform(rng_r, actor_a.shape, minval=-1, maxval=1)
    return jnp.where(random_half, random_a, actor_a)

  del rng_kind
  states, _ = rssm.imagine(wm, wm_params, start, policy, warmup, rng_w)
  return jax.tree.map(lambda s: jax.lax.stop_gradient(s[-1]), states)
