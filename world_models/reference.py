"""A plain-JAX reference of the world-model update and of imagination, for the benchmark (`bench.py`).

The same model as `rssm.py` (and the actor of `behaviour.py`) written directly with `jax.numpy` and `lax`:
no Flax modules, no optax, parameters a nested dict with the same names and shapes as the Flax ones (so the
two can be fed the same parameters and `reference_test.py` checks that they compute the same loss, gradients,
Adam update and imagined rollout). It is what a straightforward JAX implementation of this world model looks
like; `bench.py` drives it with a Python loop of one jitted update per step, beside the project's own
scanned chunks, so the two step times compare the same model and the same arithmetic.

    encoder: per level Conv(4x4, stride 2, SAME) -> LayerNorm -> SiLU until 4x4, flattened
    RSSM:    x = SiLU(LN(W [z_{t-1}, a_{t-1}])); h_t = GRU_LN(h_{t-1}, x); prior logits from h_t;
             posterior logits from the frame embedding (GenRL's single-observation posterior) or [h_t, e_t]
    decoder: Dense(stoch -> 4x4xW) -> per level ConvTranspose(4x4, stride 2) -> LN -> SiLU -> ConvTranspose
    loss:    sum of squared pixel errors + balanced KL with free bits (`rssm.kl_loss`)
    update:  clip by global norm, Adam (b1 0.9, b2 0.999, eps outside the square root), as optax's chain
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_DN = ('NHWC', 'HWIO', 'NHWC')
LN_EPS = 1e-6  # Flax's LayerNorm default.


# ----- layers ------------------------------------------------------------------------------------------


def dense(p, x):
  return x @ p['kernel'] + p['bias'] if 'bias' in p else x @ p['kernel']


def layer_norm(p, x):
  mean = jnp.mean(x, -1, keepdims=True)
  var = jnp.maximum(jnp.mean(x * x, -1, keepdims=True) - mean * mean, 0.0)
  return (x - mean) * jax.lax.rsqrt(var + LN_EPS) * p['scale'] + p['bias']


def conv(p, x):
  y = jax.lax.conv_general_dilated(x, p['kernel'], (2, 2), 'SAME', dimension_numbers=_DN)
  return y + p['bias']


def conv_transpose(p, x):
  return jax.lax.conv_transpose(x, p['kernel'], (2, 2), 'SAME', dimension_numbers=_DN) + p['bias']


# ----- the world model -----------------------------------------------------------------------------------


def _levels(config):
  """Encoder levels (halvings down to 4x4), decoder levels and the decoder's widest channel count."""
  size, depth = config.env.image_size, config.wm.depth
  enc = 0
  while size > 4:
    size //= 2
    enc += 1
  dec = max(int(round(math.log2(config.env.image_size / 4))), 1)
  return enc, dec, depth * 2 ** (dec - 1)


def shapes(config, action_dim: int) -> dict:
  """The parameter shapes, named as Flax names the parameters of `rssm.WorldModel`."""
  w = config.wm
  enc, dec, width = _levels(config)
  flat = w.stoch * w.classes
  out = {'encoder': {}, 'decoder': {}}
  channels = 3
  for i in range(enc):
    out['encoder'][f'Conv_{i}'] = {'kernel': (4, 4, channels, w.depth * 2**i), 'bias': (w.depth * 2**i,)}
    out['encoder'][f'LayerNorm_{i}'] = {'scale': (w.depth * 2**i,), 'bias': (w.depth * 2**i,)}
    channels = w.depth * 2**i
  embed = 4 * 4 * channels
  out['decoder']['project'] = {'kernel': (flat, 16 * width), 'bias': (16 * width,)}
  channels = width
  for i in range(dec - 1):
    out['decoder'][f'convs_{i}'] = {
      'kernel': (4, 4, channels, width // 2 ** (i + 1)),
      'bias': (width // 2 ** (i + 1),),
    }
    out['decoder'][f'norms_{i}'] = {'scale': (width // 2 ** (i + 1),), 'bias': (width // 2 ** (i + 1),)}
    channels = width // 2 ** (i + 1)
  out['decoder']['out'] = {'kernel': (4, 4, channels, 3), 'bias': (3,)}
  post_in = embed if w.single_obs_posterior else w.deter + embed
  out['img_in'] = {'kernel': (flat + action_dim, w.hidden), 'bias': (w.hidden,)}
  out['img_in_norm'] = {'scale': (w.hidden,), 'bias': (w.hidden,)}
  out['gru'] = {
    'Dense_0': {'kernel': (w.hidden + w.deter, 3 * w.deter)},
    'LayerNorm_0': {'scale': (3 * w.deter,), 'bias': (3 * w.deter,)},
  }
  for head, size_in in (('prior', w.deter), ('post', post_in)):
    out[f'{head}_hidden'] = {'kernel': (size_in, w.hidden), 'bias': (w.hidden,)}
    out[f'{head}_norm'] = {'scale': (w.hidden,), 'bias': (w.hidden,)}
    out[f'{head}_logits'] = {'kernel': (w.hidden, flat), 'bias': (flat,)}
  return out


def init(config, action_dim: int, rng) -> dict:
  """Parameters of `shapes`: kernels normal / sqrt(fan in), biases 0, LayerNorm scales 1 (one normal draw,
  sliced: one random-bits computation to compile, not one per kernel)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(
    shapes(config, action_dim), is_leaf=lambda x: isinstance(x, tuple)
  )
  noise = jax.random.normal(rng, (sum(math.prod(shape) for _, shape in leaves),))
  params, offset = [], 0
  for path, shape in leaves:
    name, size = path[-1].key, math.prod(shape)
    if name == 'kernel':
      params.append(noise[offset : offset + size].reshape(shape) / math.sqrt(math.prod(shape[:-1])))
    else:
      params.append(jnp.full(shape, 1.0 if name == 'scale' else 0.0, jnp.float32))  # Not weakly typed.
    offset += size
  return jax.tree.unflatten(treedef, params)


def encode(p, frames):
  """(..., S, S, 3) in [0, 1] -> (..., E)."""
  lead = frames.shape[:-3]
  x = frames.reshape((-1,) + frames.shape[-3:]) - 0.5
  i = 0
  while x.shape[1] > 4:
    x = jax.nn.silu(layer_norm(p['encoder'][f'LayerNorm_{i}'], conv(p['encoder'][f'Conv_{i}'], x)))
    i += 1
  return x.reshape(lead + (-1,))


def decode(config, p, stoch):
  """(..., stoch, classes) -> (..., S, S, 3)."""
  _, dec, width = _levels(config)
  lead = stoch.shape[:-2]
  x = dense(p['decoder']['project'], stoch.reshape((-1, stoch.shape[-2] * stoch.shape[-1])))
  x = x.reshape((-1, 4, 4, width))
  for i in range(dec - 1):
    x = jax.nn.silu(layer_norm(p['decoder'][f'norms_{i}'], conv_transpose(p['decoder'][f'convs_{i}'], x)))
  x = conv_transpose(p['decoder']['out'], x) + 0.5
  return x.reshape(lead + x.shape[1:])


def _logits(config, x):
  w = config.wm
  logits = x.reshape(x.shape[:-1] + (w.stoch, w.classes))
  probs = (1 - w.unimix) * jax.nn.softmax(logits, -1) + w.unimix / w.classes
  return jnp.log(probs)


def sample_stoch(rng, logits):
  probs = jax.nn.softmax(logits, -1)
  sample = jax.nn.one_hot(jax.random.categorical(rng, logits, -1), logits.shape[-1])
  return sample + probs - jax.lax.stop_gradient(probs)


def gru(p, h, x):
  parts = layer_norm(p['LayerNorm_0'], dense(p['Dense_0'], jnp.concatenate([x, h], -1)))
  reset, cand, update = jnp.split(parts, 3, -1)
  cand = jnp.tanh(jax.nn.sigmoid(reset) * cand)
  update = jax.nn.sigmoid(update - 1)
  return update * cand + (1 - update) * h


def _head(p, name, x):
  return dense(p[f'{name}_logits'], jax.nn.silu(layer_norm(p[f'{name}_norm'], dense(p[f'{name}_hidden'], x))))


def img_step(config, p, state, action, rng):
  stoch = state['stoch']
  flat = stoch.reshape(stoch.shape[:-2] + (-1,))
  x = jax.nn.silu(layer_norm(p['img_in_norm'], dense(p['img_in'], jnp.concatenate([flat, action], -1))))
  deter = gru(p['gru'], state['deter'], x)
  logits = _logits(config, _head(p, 'prior', deter))
  return {'deter': deter, 'stoch': sample_stoch(rng, logits), 'logits': logits}


def obs_step(config, p, state, action, embed, rng):
  prior = img_step(config, p, state, action, rng)
  x = embed if config.wm.single_obs_posterior else jnp.concatenate([prior['deter'], embed], -1)
  logits = _logits(config, _head(p, 'post', x))
  return {'deter': prior['deter'], 'stoch': sample_stoch(rng, logits), 'logits': logits}, prior['logits']


def observe(config, p, embeds, actions, rng):
  """Time-major posterior rollout (`rssm.observe`): actions[t] precedes step t, actions[0] is ignored."""
  w = config.wm
  batch = embeds.shape[1]
  zeros = jnp.zeros((batch, w.stoch, w.classes))
  init_state = {'deter': jnp.zeros((batch, w.deter)), 'stoch': zeros, 'logits': zeros}
  actions = actions.at[0].set(0.0)

  def body(state, inputs):
    t, embed, action = inputs
    post, prior_logits = obs_step(config, p, state, action, embed, jax.random.fold_in(rng, t))
    return post, (post, prior_logits)

  _, (posts, priors) = jax.lax.scan(body, init_state, (jnp.arange(embeds.shape[0]), embeds, actions))
  return posts, priors


def world_model_loss(p, config, batch, rng):
  """`train.world_model_loss`: reconstruction + balanced KL with free bits, on a time-major batch."""
  w = config.wm
  embeds = encode(p, batch['frames'])
  prev_actions = jnp.concatenate([jnp.zeros_like(batch['actions'][:1]), batch['actions'][:-1]])
  posts, prior_logits = observe(config, p, embeds, prev_actions, rng)
  recon = decode(config, p, posts['stoch'])
  rec = jnp.mean(jnp.sum((recon - batch['frames']) ** 2, (-3, -2, -1)))
  sg = jax.lax.stop_gradient

  def kl(lhs, rhs):
    lhs, rhs = jax.nn.log_softmax(lhs, -1), jax.nn.log_softmax(rhs, -1)
    return jnp.sum(jnp.exp(lhs) * (lhs - rhs), (-2, -1))

  dyn = kl(sg(posts['logits']), prior_logits)
  rep = kl(posts['logits'], sg(prior_logits))
  dyn_scale, rep_scale = w.kl_scale * w.kl_balance, w.kl_scale * (1 - w.kl_balance)
  return rec + jnp.mean(dyn_scale * jnp.maximum(dyn, w.kl_free) + rep_scale * jnp.maximum(rep, w.kl_free))


# ----- optimizer -----------------------------------------------------------------------------------------


def adam_init(params):
  zeros = jax.tree.map(jnp.zeros_like, params)
  return {'count': jnp.zeros((), jnp.int32), 'mu': zeros, 'nu': jax.tree.map(jnp.zeros_like, params)}


def adam_update(params, grads, opt, *, lr, eps, clip, b1=0.9, b2=0.999):
  """Clip by global norm, then Adam with bias correction; returns (params, opt)."""
  norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))
  factor = jnp.where(norm < clip, 1.0, clip / norm)
  grads = jax.tree.map(lambda g: g * factor, grads)
  count = opt['count'] + 1
  mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, opt['mu'], grads)
  nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, opt['nu'], grads)
  c1, c2 = 1 - b1 ** count.astype(jnp.float32), 1 - b2 ** count.astype(jnp.float32)
  params = jax.tree.map(lambda x, m, v: x - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), params, mu, nu)
  return params, {'count': count, 'mu': mu, 'nu': nu}


# ----- imagination ---------------------------------------------------------------------------------------


def actor(p, feat, layers: int, min_std=0.1, max_std=1.0):
  """`behaviour.Actor`: `layers` x (Dense -> LN -> SiLU), then Dense to (mean, std)."""
  x = feat
  for i in range(layers):
    x = jax.nn.silu(layer_norm(p[f'LayerNorm_{i}'], dense(p[f'Dense_{i}'], x)))
  mean, std = jnp.split(dense(p[f'Dense_{layers}'], x), 2, -1)
  return mean, (max_std - min_std) * jax.nn.sigmoid(std + 2.0) + min_std


def feature(state):
  stoch = state['stoch']
  return jnp.concatenate([state['deter'], stoch.reshape(stoch.shape[:-2] + (-1,))], -1)


def imagine(config, p, actor_params, start, horizon, rng):
  """`behaviour.imagine`: the actor's squashed-normal samples on the detached feature drive `horizon` prior
  steps from `start`; returns the states s_0..s_H, time-major."""
  layers = config.behaviour.layers

  def body(state, t):
    rng_a, rng_s = jax.random.split(jax.random.fold_in(rng, t))
    mean, std = actor(actor_params, jax.lax.stop_gradient(feature(state)), layers)
    action = jnp.tanh(mean + std * jax.random.normal(rng_a, mean.shape))
    nxt = img_step(config, p, state, action, rng_s)
    return nxt, nxt

  _, states = jax.lax.scan(body, start, jnp.arange(horizon))
  return jax.tree.map(lambda s0, s: jnp.concatenate([s0[None], s]), start, states)
