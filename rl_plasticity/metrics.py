"""Plasticity metrics: ReDo's tau-dormant score and ratio, the active-unit fraction (FAU), mask density.

tau-dormant (Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep RL", eq. 1): for unit i of a layer
with H units, s_i = E_x|h_i(x)| / ((1/H) sum_k E_x|h_k(x)|); unit i is tau-dormant when s_i <= tau.
FAU (the NE code's plasticity signal): the fraction of (sample, unit) pairs with h > 0; it is elementwise,
not per unit, so it differs from 1 - dormant ratio.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import traverse_util


def dormant_scores(h: jax.Array) -> jax.Array:
  """s_i for activations `h` of shape [batch, units] (0 where the whole layer is silent)."""
  mean_abs = jnp.mean(jnp.abs(h), axis=0)
  layer_mean = jnp.mean(mean_abs)
  return jnp.where(layer_mean > 0, mean_abs / jnp.maximum(layer_mean, 1e-12), 0.0)


def dormant_ratio(acts, tau: float) -> jax.Array:
  """Fraction of all units (over every layer in the activation tree) that are tau-dormant."""
  layers = jax.tree.leaves(acts)
  dormant = sum(jnp.sum(dormant_scores(h) <= tau) for h in layers)
  return dormant / sum(h.shape[-1] for h in layers)


def active_fraction(acts) -> jax.Array:
  """FAU: fraction of (sample, unit) pairs with a positive activation, over all layers."""
  layers = jax.tree.leaves(acts)
  return sum(jnp.sum(h > 0) for h in layers) / sum(h.size for h in layers)


def layer_densities(masks, paths) -> dict:
  """{'q1/dense_0': density} of each masked kernel."""
  flat = traverse_util.flatten_dict(masks['params'])
  return {'/'.join(p[:-1]): jnp.mean(flat[p]) for p in paths}


def global_density(masks, paths) -> jax.Array:
  flat = traverse_util.flatten_dict(masks['params'])
  return sum(jnp.sum(flat[p]) for p in paths) / sum(flat[p].size for p in paths)


def summary(critic_acts, actor_acts) -> dict:
  """The logged plasticity metrics of one batch."""
  return {
    'critic_dormant_0.1': dormant_ratio(critic_acts, 0.1),
    'critic_dormant_0.025': dormant_ratio(critic_acts, 0.025),
    'actor_dormant_0.1': dormant_ratio(actor_acts, 0.1),
    'actor_dormant_0.025': dormant_ratio(actor_acts, 0.025),
    'critic_fau': active_fraction(critic_acts),
    'actor_fau': active_fraction(actor_acts),
  }
