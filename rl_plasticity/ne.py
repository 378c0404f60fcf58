"""Neuroplastic Expansion (Liu, Obando-Ceron, Courville, Pan, ICLR 2025, arXiv 2410.07994) on TD3.

The network keeps dense weight shapes plus one float mask per Dense kernel (biases and LayerNorm stay dense).
It starts sparse, with Erdos-Renyi per-layer densities, and grows between scanned chunks of `delta` critic
updates:

* grow: among inactive connections, the `n_grow` with the largest |dL/d(W*M)| (the "potential gradient":
  the loss gradient of the effective weight, which is nonzero where the mask is zero); grown weights start
  at 0, so the function is unchanged at the moment of growth;
* prune: `n_prune` active connections, those feeding tau-dormant units first (ReDo score, the paper), then
  by |w| (`prune_by='magnitude'` is what the released code does in effect);
* counts: the active count follows a linear schedule from the ER start to `final_density` (1.0 in the
  paper's wording, 0.75 in the code) over the first `grow_end` of training; each step prunes
  `prune_ratio / (1 - prune_ratio)` times the net growth and grows the net growth plus that. After growth,
  `zeta` > 0 keeps prune-and-regrow at constant density with a cosine-decayed fraction (the code's phase 2).

Masked entries are kept exactly zero in online weights, target weights (re-masked after every Polyak step)
and both Adam moments (`masked_adam`). Ranking against traced counts keeps every shape static: a sort, then
`rank < n`, never `top_k` with a data-dependent k. Experience review and batch halving live in the TD3
update (`td3.py`), driven by the critic's active-unit fraction.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from rl_plasticity import metrics
from rl_plasticity import networks

# --------------------------------------------------------------------------- #
# Mask-aware Adam.
# --------------------------------------------------------------------------- #


class MaskedAdamState(NamedTuple):
  count: Any  # One step counter per parameter leaf (so a topology step can reset one matrix's counter).
  mu: Any
  nu: Any


def masked_adam(
  learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *, stale_moments: bool = False
):
  """Adam whose gradients, both moments and updates are multiplied by `masks` (an extra argument of
  `update`), so masked positions hold exactly zero moments and receive exactly zero updates. Bias
  correction uses a per-leaf step count; all counts advance together unless `reset_counts` zeroes some.

  `stale_moments` (the NE code's behaviour, a switch since 2026-11-28): the moments are not multiplied by
  the mask, so at a masked position they decay (m by b1, v by b2 per step, the gradient there being
  masked to zero) and a connection regrown later starts from what is left of them; updates stay masked."""
  keep = (lambda x, k: x) if stale_moments else (lambda x, k: x * k)

  def init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return MaskedAdamState(jax.tree.map(lambda _: jnp.zeros((), jnp.int32), params), zeros, zeros)

  def update(grads, state, params=None, *, masks):
    del params
    count = jax.tree.map(lambda c: c + 1, state.count)
    mu = jax.tree.map(lambda m, g, k: keep(b1 * m + (1 - b1) * g * k, k), state.mu, grads, masks)
    nu = jax.tree.map(lambda v, g, k: keep(b2 * v + (1 - b2) * jnp.square(g * k), k), state.nu, grads, masks)

    def step(m, v, k, c):
      c = c.astype(jnp.float32)
      return -learning_rate * (m / (1 - b1**c)) / (jnp.sqrt(v / (1 - b2**c)) + eps) * k

    updates = jax.tree.map(step, mu, nu, masks, count)
    return updates, MaskedAdamState(count, mu, nu)

  return optax.GradientTransformationExtraArgs(init, update)


def mask_opt_state(state: MaskedAdamState, masks) -> MaskedAdamState:
  """Zeroes both moments where `masks` is zero (after pruning or recycling); the counts are kept."""
  return state._replace(mu=_mul(state.mu, masks), nu=_mul(state.nu, masks))


def reset_counts(state: MaskedAdamState, paths, flag) -> MaskedAdamState:
  """Sets the step count of the leaves at `paths` (kernel paths under 'params') to 0 where `flag`: the NE
  code's side effect at every growth step (moments kept, so bias correction damps the next updates)."""
  flat = traverse_util.flatten_dict(state.count['params'])
  for p in paths:
    flat[p] = jnp.where(flag, jnp.zeros_like(flat[p]), flat[p])
  return state._replace(count={'params': traverse_util.unflatten_dict(flat)})


def _mul(tree, masks):
  return jax.tree.map(lambda x, m: x * m, tree, masks)


# --------------------------------------------------------------------------- #
# Erdos-Renyi densities and the initial masks.
# --------------------------------------------------------------------------- #


def er_densities(shapes, density: float) -> list[float]:
  """Per-layer densities d_l = min(1, eps (fan_in + fan_out) / (fan_in fan_out)), eps chosen so the kernels
  hold `density` of their weights in total; layers that would exceed 1 are made dense and eps re-solved."""
  sizes = np.array([a * b for a, b in shapes], np.float64)
  raw = np.array([(a + b) / (a * b) for a, b in shapes], np.float64)
  dense = np.zeros(len(shapes), bool)
  while True:
    budget = density * sizes.sum() - sizes[dense].sum()
    eps = budget / max((raw * sizes)[~dense].sum(), 1e-12)
    over = (~dense) & (eps * raw > 1)
    if not over.any():
      return [1.0 if d else float(eps * r) for d, r in zip(dense, raw)]
    dense[np.argmax(np.where(over, raw, -np.inf))] = True


class Layer(NamedTuple):
  """Static facts of one masked kernel: its path, size, initial and final active counts."""

  path: tuple
  size: int
  initial: int
  final: int


def layout(params, initial_density: float, final_density: float) -> list[Layer]:
  flat = traverse_util.flatten_dict(params['params'])
  paths = networks.kernel_paths(params)
  densities = er_densities([flat[p].shape for p in paths], initial_density)
  out = []
  for p, d in zip(paths, densities):
    n = int(flat[p].size)
    a0 = max(1, int(round(d * n)))
    out.append(Layer(p, n, a0, max(a0, int(round(final_density * n)))))
  return out


def select_lowest(score: jax.Array, eligible: jax.Array, n) -> jax.Array:
  """Boolean array: the `n` (traced) eligible entries with the lowest score (ties by position)."""
  flat = jnp.where(eligible, score, jnp.inf).ravel()
  order = jnp.argsort(flat, stable=True)
  rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))
  return ((rank < n) & eligible.ravel()).reshape(score.shape)


def ones_masks(params):
  return jax.tree.map(jnp.ones_like, params)


def initial_masks(params, layers: list[Layer]):
  """Masks keeping the `initial` largest-|w| entries of each kernel (the code prunes the random init by
  magnitude); every other leaf (biases, LayerNorm) is dense."""
  masks = traverse_util.flatten_dict(ones_masks(params)['params'])
  flat = traverse_util.flatten_dict(params['params'])
  for layer in layers:
    w = flat[layer.path]
    keep = select_lowest(-jnp.abs(w), jnp.ones(w.shape, bool), layer.initial)
    masks[layer.path] = keep.astype(w.dtype)
  return {'params': traverse_util.unflatten_dict(masks)}


# --------------------------------------------------------------------------- #
# The schedule and one grow/prune step.
# --------------------------------------------------------------------------- #


def schedule_counts(k, active, layer: Layer, *, grow_steps: int, end_step: int, prune_ratio: float, zeta):
  """(n_prune, n_grow) of topology step `k` (1-based, traced) for a layer with `active` connections.

  Growth phase (k <= grow_steps): target_k = initial + floor((final - initial) min(k / grow_steps, 1));
  net = max(target_k - active, 0); n_prune = floor(net prune_ratio / (1 - prune_ratio)); n_grow = net + n_prune.
  Afterwards: n_prune = n_grow = floor(zeta_t active), zeta_t = zeta/2 (1 + cos(pi t / T)) (RigL's drop rate).
  """
  kf = jnp.asarray(k, jnp.float32)
  # The growth target in integers: floor(span k / G) = q k + floor(r k / G) with span = q G + r. A float
  # k / G is not safe under jit: XLA turns division by a constant into multiplication by its reciprocal,
  # so at k = G the fraction can come out as 0.99999994 and the layer stop one connection short of full
  # (seen on an H200 and on the CPU, 2026-11-29: G = 165, 256 x 256 kernels ended at 65535 of 65536).
  g = max(grow_steps, 1)
  q, r = divmod(layer.final - layer.initial, g)
  kk = jnp.clip(jnp.asarray(k, jnp.int32), 0, g)
  target = layer.initial + q * kk + (r * kk) // g
  net = jnp.maximum(target - active, 0)
  grow_prune = jnp.minimum(jnp.floor(net * (prune_ratio / (1.0 - prune_ratio))).astype(jnp.int32), active)
  span = max(end_step - grow_steps, 1)
  t = jnp.clip(kf - grow_steps, 0.0, span)
  zeta_t = 0.5 * zeta * (1.0 + jnp.cos(jnp.pi * t / span))
  steady = jnp.floor(zeta_t * active.astype(jnp.float32)).astype(jnp.int32)
  growing = k <= grow_steps
  n_prune = jnp.where(growing, grow_prune, steady)
  n_grow = jnp.where(growing, net + grow_prune, steady)
  return n_prune, n_grow


def prune_score(w, unit_scores, tau: float, by: str):
  """Lower is pruned first. 'dormant': connections into tau-dormant units rank below all others, then |w|;
  'magnitude': |w| only. `unit_scores` is None for output layers (no dormancy there)."""
  mag = jnp.abs(w) / jnp.maximum(jnp.max(jnp.abs(w)), 1e-12)
  if by == 'magnitude' or unit_scores is None:
    return mag
  return mag + (unit_scores > tau).astype(w.dtype)[None, :]


def grow_prune(w, mask, grad, score, n_prune, n_grow):
  """New mask of one kernel: drop the `n_prune` lowest-`score` active entries, then activate the `n_grow`
  inactive entries (just-dropped ones included) with the largest |grad|. Returns (mask, grown, pruned)."""
  active = mask > 0
  pruned = select_lowest(score, active, n_prune)
  kept = active & ~pruned
  grown = select_lowest(-jnp.abs(grad), ~kept, n_grow)
  return (kept | grown).astype(mask.dtype), jnp.sum(grown), jnp.sum(pruned)


def update_net(net, grads, acts, k, layers, cfg, *, end_step: int, stale_moments: bool = False):
  """One topology step of a `td3.Net`: new masks, then weights, targets and Adam moments re-masked (the
  moments kept with `stale_moments`, the setting of the agent's `masked_adam`)."""
  masks = traverse_util.flatten_dict(net.mask['params'])
  params = traverse_util.flatten_dict(net.params['params'])
  grads = traverse_util.flatten_dict(grads['params'])
  acts = traverse_util.flatten_dict(acts)
  grown_total, pruned_total = 0, 0
  for layer in layers:
    m = masks[layer.path]
    active = jnp.sum(m).astype(jnp.int32)
    n_prune, n_grow = schedule_counts(
      k,
      active,
      layer,
      grow_steps=cfg.grow_steps,
      end_step=end_step,
      prune_ratio=cfg.prune_ratio,
      zeta=cfg.zeta,
    )
    units = acts.get(networks.unit_key(layer.path))
    scores = None if units is None else metrics.dormant_scores(units)
    score = prune_score(params[layer.path], scores, cfg.tau, cfg.prune_by)
    masks[layer.path], grown, pruned = grow_prune(
      params[layer.path], m, grads[layer.path], score, n_prune, n_grow
    )
    grown_total += grown
    pruned_total += pruned
  new_mask = {'params': traverse_util.unflatten_dict(masks)}
  opt = net.opt if stale_moments else mask_opt_state(net.opt, new_mask)
  if cfg.adam_count_reset:
    opt = reset_counts(opt, [layer.path for layer in layers], k <= cfg.grow_steps)
  net = net.replace(
    mask=new_mask,
    params=_mul(net.params, new_mask),
    target=_mul(net.target, new_mask),
    opt=opt,
  )
  return net, grown_total, pruned_total


def _where(flag, a, b):
  return jax.tree.map(lambda x, y: jnp.where(flag, x, y), a, b)


class NEConfig(NamedTuple):
  initial_density: float
  final_density: float
  grow_steps: int  # Topology steps of the growth phase (critic clock).
  prune_ratio: float
  prune_by: str  # 'dormant' (paper) or 'magnitude' (code)
  tau: float
  zeta: float
  adam_count_reset: bool = False  # Code: zero each sparse matrix's Adam step count at every growth step.


def make_hook(agent, cfg: NEConfig, total_steps: int, actor_every: int):
  """`hook(state, k, key) -> (state, stats)`: topology step `k` (1-based, unbatched) of one seed. The critic
  changes every step; the actor every `actor_every`-th step (its clock counts actor updates, which the
  TD3 policy delay makes rarer), with its own step index k // actor_every. Adam moments at pruned positions
  are zeroed, or kept where the agent's optimizer keeps them (`agent.cfg.stale_moments`, the NE code's)."""
  stale = agent.cfg.stale_moments
  critic_layers = agent.critic_layers
  actor_layers = agent.actor_layers
  actor_cfg = cfg._replace(grow_steps=max(cfg.grow_steps // actor_every, 1))

  def hook(state, k, key):
    sig = agent.batch_signals(state, key)
    critic, cg, cp = update_net(
      state.critic,
      sig['critic_grads'],
      sig['critic_acts'],
      k,
      critic_layers,
      cfg,
      end_step=total_steps,
      stale_moments=stale,
    )
    ka = k // actor_every
    actor, ag, ap = update_net(
      state.actor,
      sig['actor_grads'],
      sig['actor_acts'],
      ka,
      actor_layers,
      actor_cfg,
      end_step=max(total_steps // actor_every, 1),
      stale_moments=stale,
    )
    do_actor = (k % actor_every) == 0
    actor = _where(do_actor, actor, state.actor)
    stats = {
      'critic_grown': cg,
      'critic_pruned': cp,
      'actor_grown': jnp.where(do_actor, ag, 0),
      'actor_pruned': jnp.where(do_actor, ap, 0),
    }
    return state.replace(critic=critic, actor=actor), stats

  return hook


def grow_steps(total_updates: int, delta: int, grow_end: float) -> int:
  return max(1, int(math.floor(grow_end * total_updates / delta)))
