"""GenRL's connector: a second RSSM whose "action" is the scaled VLM embedding (research note section 2.3).

    h_0 = MLP(e_0)                                    learned initial state from the embedding
    h_t = GRU(h_{t-1}, [z_{t-1}, sqrt(E) e_t])        z_{t-1}: the world model's posterior (training)
    p_conn(z_t | h_t)                                  its own prior head

Training (no language anywhere): loss = mean_t KL(p_conn(z_t) || sg(q_wm(z_t))), free bits 0, where q_wm is
the world model's posterior on the same batch, *detached* so no gradient reaches the world model. This is the
paper's connector loss (the connector's distribution first) and the official code's (`connector_kl: forward:
True`, which in its DreamerV2-style `kl_loss` puts the prior on the left; with the posterior detached only that
term has a gradient, its balance 0.8 is a constant factor). `direction='posterior_first'` gives
KL(sg(q_wm) || p_conn) instead, what this module computed before 2026-11-28 (config `connector.kl_direction`).
The embedding of the frames of an `n_frames` chunk is held over the whole chunk.

At inference (`imagine`) the connector runs on its own mode latents and turns an embedding sequence into a
latent sequence of the world model: the behaviour's target.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from world_models import rssm


class Connector(nn.Module):
  deter: int
  hidden: int
  stoch: int
  classes: int
  embed_dim: int
  unimix: float = 0.01

  def setup(self):
    self.init_mlp = [nn.Dense(self.hidden), nn.LayerNorm(), nn.Dense(self.hidden), nn.LayerNorm()]
    self.init_out = nn.Dense(self.deter)
    self.img_in = nn.Dense(self.hidden)
    self.img_in_norm = nn.LayerNorm()
    self.gru = rssm.GRUCell(self.deter)
    self.prior_hidden = nn.Dense(self.hidden)
    self.prior_norm = nn.LayerNorm()
    self.prior_logits = nn.Dense(self.stoch * self.classes)

  def prior(self, deter):
    x = self.prior_logits(nn.silu(self.prior_norm(self.prior_hidden(deter))))
    return rssm.unimix_logits(x.reshape(x.shape[:-1] + (self.stoch, self.classes)), self.unimix)

  def initial(self, embed):
    x = embed * math.sqrt(self.embed_dim)
    for i in range(0, 4, 2):
      x = nn.silu(self.init_mlp[i + 1](self.init_mlp[i](x)))
    deter = jnp.tanh(self.init_out(x))
    return deter, self.prior(deter)

  def step(self, deter, stoch, embed):
    """One GRU step from the previous stoch (one-hots) and the scaled embedding -> (deter, prior logits)."""
    flat = stoch.reshape(stoch.shape[:-2] + (-1,))
    x = jnp.concatenate([flat, embed * math.sqrt(self.embed_dim)], -1)
    deter = self.gru(deter, nn.silu(self.img_in_norm(self.img_in(x))))
    return deter, self.prior(deter)

  def __call__(self, embed):  # For init only.
    deter, logits = self.initial(embed)
    return self.step(deter, rssm.mode_stoch(logits), embed)


def make_connector(config) -> Connector:
  w = config.wm
  return Connector(
    deter=w.deter,
    hidden=w.hidden,
    stoch=w.stoch,
    classes=w.classes,
    embed_dim=config.vlm.embed_dim,
    unimix=w.unimix,
  )


DIRECTIONS = ('connector_first', 'posterior_first')


def connector_loss(conn, params, post_stoch, post_logits, embeds, *, free=0.0, direction='connector_first'):
  """KL(connector prior || sg(wm posterior)) ('connector_first', the paper's and the official code's) or
  KL(sg(wm posterior) || connector prior) ('posterior_first'), time-major inputs (T, B, ...). Step 0 uses the
  initial state (learned from e_0); step t > 0 steps the GRU from the world model's posterior stoch at t - 1.
  Returns (loss, initial-state KL for logging)."""
  if direction not in DIRECTIONS:
    raise ValueError(f'connector KL direction {direction!r} is not one of {DIRECTIONS}')
  sg = jax.lax.stop_gradient
  post_stoch, post_logits = sg(post_stoch), sg(post_logits)
  deter0, logits0 = conn.apply({'params': params}, embeds[0], method=Connector.initial)

  def body(deter, inputs):
    prev_stoch, embed = inputs
    deter, logits = conn.apply({'params': params}, deter, prev_stoch, embed, method=Connector.step)
    return deter, logits

  _, logits = jax.lax.scan(body, deter0, (post_stoch[:-1], embeds[1:]))
  logits = jnp.concatenate([logits0[None], logits])
  if direction == 'connector_first':
    kl = rssm.categorical_kl(logits, post_logits)
  else:
    kl = rssm.categorical_kl(post_logits, logits)
  loss = jnp.mean(jnp.maximum(kl, free))
  return loss, jnp.mean(kl[0])


def imagine(conn, params, embeds):
  """Latent sequence for an embedding sequence (T, B, E), driven by the connector's own mode latents.
  Returns stoch (T, B, stoch, classes) one-hots."""
  deter0, logits0 = conn.apply({'params': params}, embeds[0], method=Connector.initial)
  stoch0 = rssm.mode_stoch(logits0)

  def body(carry, embed):
    deter, stoch = carry
    deter, logits = conn.apply({'params': params}, deter, stoch, embed, method=Connector.step)
    stoch = rssm.mode_stoch(logits)
    return (deter, stoch), stoch

  _, stochs = jax.lax.scan(body, (deter0, stoch0), embeds[1:])
  return jnp.concatenate([stoch0[None], stochs])
