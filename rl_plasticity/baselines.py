"""Plasticity baselines beside NE, each a between-chunks hook of the TD3 loop (`hook(state, k, key)`, k the
1-based count of hook periods done, unbatched):

* ReDo (Sokar et al. 2023): every `every` updates, units whose tau-dormant score s_i <= tau (0.1) on a batch
  get their incoming weights re-drawn from the initialiser and their bias zeroed, their outgoing weights
  zeroed, and Adam's first and second moments zeroed at all those positions (the count is kept). The hook
  also counts the recycled critic units that still score as tau-dormant on the same batch right after
  recycling (`critic_recycled_still_dormant`, a diagnostic; 2026-11-29). `config.redo.weight_scaling`
  (default False, as in ReDo's code) draws the fresh incoming weights at the norm of the layer's other
  units instead of the initialiser's.
* Reset (Nikishin et al. 2022): every `every` updates the actor, critic, their targets and optimiser states
  are drawn afresh; the replay buffer and observation statistics stay. The whole networks, not only the
  last layers: Nikishin et al. reset the last layers of deep (SPR, pixel) agents but every layer of the
  small state-based SAC MLPs, the setting closest to NE's TD3 MLPs (`rl_with_resets`), and NE's code has
  no Reset of its own to follow. A reset due at the run's last update is skipped (`train.run_steps`): no
  update would follow it, and the final evaluation would score a fresh network.
* Plasticity Injection (Nikishin et al. 2023), on the critic (`networks.InjectedCritic`): once, after
  `at` updates, a fresh critic draw becomes both the trainable `new` part and the frozen `init` part and the
  old critic freezes, so Q = Q_base + Q_new - Q_init is unchanged at injection; online and target critics
  are injected alike (so the target stays consistent) and the critic's Adam moments are zeroed (momentum
  would otherwise keep moving the frozen `base`). The target's `base` keeps tracking the frozen online
  `base` by Polyak steps. Nikishin et al. inject the head of the Q-network after its (still training)
  convolutional encoder; TD3's critic is an MLP without an encoder, so the whole twin critic plays the
  head here. The actor is not injected.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import traverse_util

from rl_plasticity import metrics
from rl_plasticity import ne
from rl_plasticity import networks
from rl_plasticity import td3


def recycle_dormant(net: td3.Net, fresh_params, acts, tau: float, weight_scaling: bool = False):
  """ReDo on one network. Returns (net, number of recycled units). `weight_scaling` (ReDo's code option, off
  by default there and here) rescales each recycled unit's fresh incoming weights to the mean incoming-weight
  norm of the layer's other units, as they were before recycling."""
  params = traverse_util.flatten_dict(net.params['params'])
  before = dict(params)
  fresh = traverse_util.flatten_dict(fresh_params['params'])
  keep = {k: jnp.ones_like(v) for k, v in params.items()}  # 0 where a position is recycled.
  acts = traverse_util.flatten_dict(acts)
  recycled = 0
  for path in networks.kernel_paths(net.params):
    unit = networks.unit_key(path)
    if unit not in acts:
      continue  # An output layer: no units to score.
    dormant = metrics.dormant_scores(acts[unit]) <= tau  # [units]
    bias = unit + ('bias',)
    out = networks.next_kernel(path)
    drawn = _scaled_to_kept_units(fresh[path], before[path], dormant) if weight_scaling else fresh[path]
    params[path] = jnp.where(dormant[None, :], drawn, params[path])
    params[bias] = jnp.where(dormant, 0.0, params[bias])
    params[out] = jnp.where(dormant[:, None], 0.0, params[out])
    keep[path] = keep[path] * (1.0 - dormant[None, :])
    keep[bias] = keep[bias] * (1.0 - dormant)
    keep[out] = keep[out] * (1.0 - dormant[:, None])
    recycled += jnp.sum(dormant)
  new_params = {'params': traverse_util.unflatten_dict(params)}
  new_params = jax.tree.map(lambda p, m: p * m, new_params, net.mask)
  keep = {'params': traverse_util.unflatten_dict(keep)}
  return net.replace(params=new_params, opt=ne.mask_opt_state(net.opt, keep)), recycled


def _scaled_to_kept_units(fresh, kernel, dormant):
  """`fresh` [in, units] with each column's norm set to the mean column norm of `kernel` over the units not
  `dormant` (unchanged when every unit is dormant)."""
  kept = 1.0 - dormant.astype(kernel.dtype)
  n_kept = jnp.sum(kept)
  target = jnp.sum(jnp.linalg.norm(kernel, axis=0) * kept) / jnp.maximum(n_kept, 1.0)
  unit = fresh / jnp.maximum(jnp.linalg.norm(fresh, axis=0, keepdims=True), 1e-12)
  return jnp.where(n_kept > 0, unit * target, fresh)


def redo_hook(agent: td3.TD3, tau: float = 0.1, weight_scaling: bool = False):
  def hook(state: td3.State, k, key):
    k_batch, k_init = jax.random.split(jax.random.fold_in(key, k))
    sig = agent.batch_signals(state, k_batch)
    fresh_actor, fresh_critic = agent.init_nets(k_init)
    critic, nc = recycle_dormant(state.critic, fresh_critic.params, sig['critic_acts'], tau, weight_scaling)
    actor, na = recycle_dormant(state.actor, fresh_actor.params, sig['actor_acts'], tau, weight_scaling)
    state = state.replace(critic=critic, actor=actor)
    # A diagnostic: how many of the recycled critic units still score as tau-dormant on the same batch right
    # after recycling (their fresh incoming weights against the trained units' scale).
    after = agent.batch_signals(state, k_batch)['critic_acts']
    still = jax.tree.map(
      lambda b, a: jnp.sum((metrics.dormant_scores(b) <= tau) & (metrics.dormant_scores(a) <= tau)),
      sig['critic_acts'],
      after,
    )
    stats = {
      'critic_recycled': nc,
      'actor_recycled': na,
      'critic_recycled_still_dormant': sum(jax.tree.leaves(still)),
    }
    return state, stats

  return hook


def reset_hook(agent: td3.TD3):
  def hook(state: td3.State, k, key):
    actor, critic = agent.init_nets(jax.random.fold_in(key, k))
    return state.replace(actor=actor, critic=critic), {'resets': jnp.ones(())}

  return hook


def injection_hook(agent: td3.TD3):
  """Injects at the hook's first call (k == 1) and leaves later calls without effect."""

  def inject(tree, fresh):
    p = dict(tree['params'])
    p['new'] = fresh['params']['base']
    p['init'] = fresh['params']['base']
    p['injected'] = jnp.ones_like(p['injected'])
    return {'params': p}

  def hook(state: td3.State, k, key):
    _, fresh = agent.init_nets(key)
    critic = state.critic
    injected = critic.replace(
      params=inject(critic.params, fresh.params),
      target=inject(critic.target, fresh.params),
      opt=critic.opt._replace(
        mu=jax.tree.map(jnp.zeros_like, critic.opt.mu), nu=jax.tree.map(jnp.zeros_like, critic.opt.nu)
      ),
    )
    first = k == 1
    critic = jax.tree.map(lambda a, b: jnp.where(first, a, b), injected, critic)
    return state.replace(critic=critic), {'injected': first.astype(jnp.float32)}

  return hook
