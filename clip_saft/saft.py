"""SAFT (arXiv 2407.03036): fine-tune only the k = ceil(density * N) parameters with the largest gradient
magnitude at the pretrained weights; every other entry stays exactly at its pretrained value.

Score (paper, §3): `g = |sum_b grad L_b(theta_0)|`, the gradient of the training loss over the whole few-shot
train set, accumulated in float32 as a signed sum before the absolute value (`score='signed_sum'`);
`score='abs_sum'` accumulates per-batch magnitudes `sum_b |grad L_b|` instead (an ablation).
Mask: one global top-k over the eligible entries ('both' towers or 'image' only; `logit_scale` never), with
exactly k entries: ties at the threshold are broken by the lower flat index (the unofficial implementation's
`score >= threshold` selects every tied entry, e.g. thousands of exact zeros).
Training: `masked(tx, mask)` zeroes the gradient of frozen entries before the optimizer (Adam moments and
the clip norm see only trainable entries) and their update after it (so decoupled weight decay cannot move
them); `apply_updates` then writes `where(mask, theta + update, theta)`, bit-identical for frozen entries.
Ablations of the same density: `random_mask` and `magnitude_mask` (largest |theta_0|).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from common.errors import ConfigError

ELIGIBILITY = ('both', 'image')
SCORES = ('signed_sum', 'abs_sum')


def check_density(density: float) -> float:
  if not (isinstance(density, (int, float)) and 0.0 < density <= 1.0):
    raise ConfigError(f'saft density must be in (0, 1], got {density!r}; e.g. 0.001 for 0.1 %')
  return float(density)


def eligible_tree(params: Any, eligibility: str = 'both') -> Any:
  """Booleans per leaf: which parameter tensors may enter the mask (`logit_scale` never does)."""
  if eligibility not in ELIGIBILITY:
    raise ConfigError(f"saft eligibility must be one of {ELIGIBILITY}, got '{eligibility}'")

  def rule(path, _):
    top = path[0].key
    if top == 'logit_scale':
      return False
    return eligibility == 'both' or top == 'visual'

  return jax.tree_util.tree_map_with_path(rule, params)


def num_selected(n_eligible: int, density: float) -> int:
  """k = ceil(density * N) over the eligible entries (at least 1)."""
  return max(1, min(n_eligible, math.ceil(check_density(density) * n_eligible - 1e-9)))


def accumulate_scores(grad_fn: Callable, params: Any, batches: Iterable, score: str = 'signed_sum') -> Any:
  """`|sum_b grad_fn(params, batch)|` (signed_sum) or `sum_b |grad_fn(params, batch)|` (abs_sum), float32.

  `grad_fn` returns the gradient of the *summed* loss over its batch, so the total does not depend on how
  the train set is cut into batches (a mean loss would weight a short last batch up).
  """
  if score not in SCORES:
    raise ConfigError(f"saft score must be one of {SCORES}, got '{score}'")
  total = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
  for batch in batches:
    g = grad_fn(params, batch)
    g = g if score == 'signed_sum' else jax.tree.map(jnp.abs, g)
    total = jax.tree.map(lambda t, x: t + x.astype(jnp.float32), total, g)
  return jax.tree.map(jnp.abs, total)


def top_k_mask(scores: Any, eligible: Any, density: float) -> Any:
  """Boolean tree with exactly k = ceil(density * N_eligible) True entries: the largest eligible scores,
  ties broken by the lower flat index (flat order = `jax.tree.leaves` order, then C order in each leaf).

  Runs on the host in O(N): a partition finds the k-th largest value, every entry above it is taken, and the
  remaining slots go to the first tied entries.
  """
  leaves, treedef = jax.tree.flatten(scores)
  flags = jax.tree.leaves(eligible)
  if len(flags) != len(leaves):
    raise ValueError('scores and eligibility trees differ')
  sizes = [int(np.size(x)) for x in leaves]
  flat = np.concatenate([np.asarray(x, np.float64).ravel() for x in leaves])
  ok = np.concatenate([np.full(n, bool(f)) for n, f in zip(sizes, flags)])
  if not np.all(np.isfinite(flat[ok])):
    raise ValueError('saft scores contain NaN or inf')
  n_eligible = int(ok.sum())
  if n_eligible == 0:
    raise ConfigError('no parameter is eligible for the saft mask; check saft.eligibility')
  k = num_selected(n_eligible, density)
  values = np.where(ok, flat, -np.inf)
  kth = np.partition(values, values.size - k)[values.size - k]  # The k-th largest value.
  above = values > kth
  tied = np.flatnonzero((values == kth) & ok)
  selected = above.copy()
  selected[tied[: k - int(above.sum())]] = True
  assert int(selected.sum()) == k
  out, start = [], 0
  for x, n in zip(leaves, sizes):
    out.append(selected[start : start + n].reshape(np.shape(x)))
    start += n
  return jax.tree.unflatten(treedef, out)


def random_mask(rng, params: Any, eligible: Any, density: float) -> Any:
  """Ablation: k eligible entries chosen uniformly at random (exactly k, as `top_k_mask`)."""
  leaves, treedef = jax.tree.flatten(params)
  sizes = [int(np.size(x)) for x in leaves]
  flat = np.asarray(jax.random.uniform(rng, (sum(sizes),)))  # One draw (one compilation) for the tree.
  noise = np.split(flat, np.cumsum(sizes)[:-1])
  noise = [n.reshape(np.shape(x)) for n, x in zip(noise, leaves)]
  return top_k_mask(jax.tree.unflatten(treedef, noise), eligible, density)


def magnitude_mask(params: Any, eligible: Any, density: float) -> Any:
  """Ablation: the k eligible entries of largest pretrained magnitude |theta_0|."""
  return top_k_mask(jax.tree.map(jnp.abs, params), eligible, density)


def full_mask(params: Any, eligible: Any) -> Any:
  """Every eligible entry trainable (ordinary fine-tuning through the same masked step)."""
  return jax.tree.map(lambda p, e: np.full(np.shape(p), bool(e)), params, eligible)


def mask_summary(mask: Any) -> dict:
  """Selected entries per tensor ('visual/transformer/.../kernel' -> count), nonzero tensors only."""
  out = {}
  for path, m in jax.tree_util.tree_leaves_with_path(mask):
    count = int(np.sum(m))
    if count:
      out['/'.join(str(p.key) for p in path)] = count
  return out


def masked(inner: optax.GradientTransformation, mask: Any) -> optax.GradientTransformation:
  """`inner` restricted to the True entries of `mask` (a tree of booleans shaped like the params): the
  gradient is zeroed on frozen entries before `inner` and the update after it."""

  def zero_frozen(tree):
    return jax.tree.map(lambda x, m: jnp.where(m, x, jnp.zeros_like(x)), tree, mask)

  def init(params):
    return inner.init(params)

  def update(grads, state, params=None):
    updates, state = inner.update(zero_frozen(grads), state, params)
    return zero_frozen(updates), state

  return optax.GradientTransformation(init, update)


def apply_updates(params: Any, updates: Any, mask: Any) -> Any:
  """`where(mask, theta + update, theta)`: frozen entries keep their exact bits (even -0.0)."""
  return jax.tree.map(lambda p, u, m: jnp.where(m, p + u.astype(p.dtype), p), params, updates, mask)


def sparse_delta(params: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
  """Storage of a SAFT model beside theta_0: flat indices (int64) and the fine-tuned values on the mask
  (values, not differences, so `apply_sparse_delta` restores the model bit for bit)."""
  flat = np.concatenate([np.ravel(np.asarray(p, np.float32)) for p in jax.tree.leaves(params)])
  where = np.flatnonzero(np.concatenate([np.ravel(m) for m in jax.tree.leaves(mask)]))
  return where, flat[where]


def apply_sparse_delta(params0: Any, indices: np.ndarray, values: np.ndarray) -> Any:
  leaves, treedef = jax.tree.flatten(params0)
  flat = np.concatenate([np.ravel(np.asarray(x, np.float32)) for x in leaves])
  flat[indices] = values
  out, start = [], 0
  for x in leaves:
    n = int(np.size(x))
    out.append(flat[start : start + n].reshape(np.shape(x)))
    start += n
  return jax.tree.unflatten(treedef, out)
