"""GenRL's imagined reward: a norm-penalised cosine between the agent's and the target's latents in the
decoder's first linear projection, with temporal alignment (research note section 2.5).

    max_cosine(u, v) = u . v / max(|u|, |v|)^2          (= cos only when |u| = |v|; max_cosine(x, 2x) = 0.5)

Temporal alignment over windows of W = 8 steps: for each offset tau, score the agent's steps tau..tau+W-1
against the target's first W steps; take the best tau per trajectory; the target index is 0 before tau and
0, 1, 2, ... from tau on (clipped at the target's last step). The agent may enter the behaviour at any time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def max_cosine(u, v):
  dot = jnp.sum(u * v, -1)
  norm = jnp.maximum(jnp.linalg.norm(u, axis=-1), jnp.linalg.norm(v, axis=-1))
  return dot / (norm**2 + 1e-8)


def cosine(u, v):
  return jnp.sum(u * v, -1) / (jnp.linalg.norm(u, axis=-1) * jnp.linalg.norm(v, axis=-1) + 1e-8)


def pearson(x, y):
  """Pearson correlation of two equally shaped arrays over all their entries; NaN when either is constant."""
  x = jnp.ravel(x) - jnp.mean(x)
  y = jnp.ravel(y) - jnp.mean(y)
  denom = jnp.sqrt(jnp.sum(x * x) * jnp.sum(y * y))
  return jnp.where(denom > 0, jnp.sum(x * y) / jnp.where(denom > 0, denom, 1.0), jnp.nan)


def window_scores(score_matrix, window):
  """score_matrix[t, k] = score(agent_t, target_k), (T, K). Returns the mean score of each offset tau in
  0..T-W of the windows agent[tau + k] vs target[k], k < W: shape (T - W + 1,)."""
  steps = score_matrix.shape[0]
  offsets = jnp.arange(steps - window + 1)
  k = jnp.arange(window)
  return jnp.mean(score_matrix[offsets[:, None] + k[None, :], k[None, :]], -1)


def aligned_indices(best_offset, steps, target_len):
  """Target index per agent step: 0 before `best_offset`, then 0, 1, 2, ... (clipped at target_len - 1)."""
  return jnp.clip(jnp.arange(steps) - best_offset, 0, target_len - 1)


def aligned_reward(agent, target, window, score=max_cosine):
  """Rewards (T,) of one trajectory of features `agent` (T, F) against `target` (K, F), K >= window."""
  window = min(window, agent.shape[0], target.shape[0])
  matrix = score(agent[:, None, :], target[None, :, :])
  best = jnp.argmax(window_scores(matrix, window))
  idx = aligned_indices(best, agent.shape[0], target.shape[0])
  return score(agent, target[idx]), best


def genrl_reward(agent, target, window, align=True):
  """Batched: agent (T, B, F) time-major, target (K, F). Returns rewards (T, B)."""
  if not align:
    idx = jnp.clip(jnp.arange(agent.shape[0]), 0, target.shape[0] - 1)
    return max_cosine(agent, target[idx][:, None, :])
  rewards, _ = jax.vmap(lambda a: aligned_reward(a, target, window), in_axes=1, out_axes=(1, 0))(agent)
  return rewards
