"""Aggregate metrics and stratified bootstrap intervals for RL results.

Implements the evaluation protocol proposed in Agarwal et al. (2021),
"Deep Reinforcement Learning at the Edge of the Statistical Precipice":
robust aggregate metrics (mean, median, interquartile mean, optimality gap),
the probability of improvement between two algorithms, run-score performance
profiles, and percentile confidence intervals from a bootstrap that resamples
runs independently within each task (stratified by task).

Conventions:
  * A score matrix has shape ``[num_runs, num_tasks]``; a 1-D array is the
    runs of a single task, i.e. it is treated as ``[num_runs, 1]``.
  * The aggregate functions also accept leading batch dimensions,
    ``[..., num_runs, num_tasks]``, and then return one value per batch entry.
    ``stratified_bootstrap_ci`` uses this to evaluate all bootstrap replicates
    with a single vectorised call.

Everything here runs on the host with numpy/scipy; no JAX is required.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, Union

import numpy as np
import scipy.stats

ArrayLike = Union[np.ndarray, Sequence[float], Sequence[Sequence[float]]]

# Upper bound on the number of resampled score entries materialised at once
# by the bootstrap (about 32 MiB of float64); replicates are processed in
# chunks of at most this many entries.
_MAX_CHUNK_ENTRIES = 1 << 22

METRIC_NAMES = ('mean', 'median', 'iqm', 'optimality_gap')


# --------------------------------------------------------------------------
# Validation helpers.
# --------------------------------------------------------------------------


def _as_scores(scores: ArrayLike, what: str = 'scores') -> np.ndarray:
  """Converts ``scores`` to a float array of shape ``[..., runs, tasks]``.

  Raises:
    ValueError: if the input is 0-D, empty or contains NaN.
  """
  arr = np.asarray(scores, dtype=np.float64)
  if arr.ndim == 0:
    raise ValueError(f'{what} must be a 1-D [num_runs] or 2-D [num_runs, num_tasks] array, got a scalar')
  if arr.ndim == 1:
    arr = arr[:, None]
  if arr.size == 0:
    raise ValueError(f'{what} is empty (shape {arr.shape})')
  if np.isnan(arr).any():
    raise ValueError(f'{what} contains NaN')
  return arr


def _to_output(value: np.ndarray):
  """Returns a Python float for 0-D results and an ndarray otherwise."""
  value = np.asarray(value, dtype=np.float64)
  return float(value) if value.ndim == 0 else value


def _supports_batch(fn: Callable) -> Callable:
  """Marks ``fn`` as accepting leading batch dimensions (see module doc)."""
  fn._supports_batch = True  # pylint: disable=protected-access
  return fn


# --------------------------------------------------------------------------
# Aggregate metrics.
# --------------------------------------------------------------------------


@_supports_batch
def mean(scores: ArrayLike):
  r"""Mean over tasks of the per-task mean score across runs.

  .. math:: \mathrm{mean}(S) = \frac{1}{T}\sum_{t=1}^{T}
            \frac{1}{N}\sum_{i=1}^{N} S_{i,t}

  Args:
    scores: Array of shape ``[num_runs, num_tasks]`` (or ``[num_runs]`` for a
      single task), optionally with leading batch dimensions.

  Returns:
    A float, or an array of the batch shape if batch dimensions are present.
  """
  s = _as_scores(scores)
  return _to_output(s.mean(axis=-2).mean(axis=-1))


@_supports_batch
def median(scores: ArrayLike):
  r"""Median over tasks of the per-task mean score across runs.

  Runs are averaged first, then the median is taken over tasks:

  .. math:: \mathrm{median}(S) = \operatorname{median}_{t}\Big(
            \frac{1}{N}\sum_{i=1}^{N} S_{i,t}\Big)

  Args:
    scores: Array of shape ``[num_runs, num_tasks]`` (or ``[num_runs]`` for a
      single task), optionally with leading batch dimensions.

  Returns:
    A float, or an array of the batch shape if batch dimensions are present.
  """
  s = _as_scores(scores)
  return _to_output(np.median(s.mean(axis=-2), axis=-1))


@_supports_batch
def iqm(scores: ArrayLike):
  r"""Interquartile mean of all run-by-task scores pooled together.

  All ``N*T`` entries are flattened and sorted; with ``k = floor(N*T/4)``
  entries cut from each end, the IQM is the mean of the rest:

  .. math:: \mathrm{IQM}(S) = \frac{1}{NT - 2k}\sum_{j=k+1}^{NT-k} s_{(j)}

  where ``s_(j)`` is the j-th smallest score (``scipy.stats.trim_mean`` with
  proportion 0.25).

  Args:
    scores: Array of shape ``[num_runs, num_tasks]`` (or ``[num_runs]`` for a
      single task), optionally with leading batch dimensions.

  Returns:
    A float, or an array of the batch shape if batch dimensions are present.
  """
  s = _as_scores(scores)
  flat = s.reshape(s.shape[:-2] + (-1,))
  return _to_output(scipy.stats.trim_mean(flat, 0.25, axis=-1))


@_supports_batch
def optimality_gap(scores: ArrayLike, gamma: float = 1.0):
  r"""Amount by which scores fall short of the target ``gamma``.

  Scores above ``gamma`` are clipped, so exceeding the target is not
  rewarded:

  .. math:: \mathrm{OG}_\gamma(S) = \gamma - \frac{1}{NT}
            \sum_{i,t}\min(S_{i,t}, \gamma)

  Lower is better; it is 0 iff every score is at least ``gamma``.

  Args:
    scores: Array of shape ``[num_runs, num_tasks]`` (or ``[num_runs]`` for a
      single task), optionally with leading batch dimensions.
    gamma: Target score (1.0 for human-normalised scores).

  Returns:
    A float, or an array of the batch shape if batch dimensions are present.
  """
  s = _as_scores(scores)
  gamma = float(gamma)
  if np.isnan(gamma):
    raise ValueError('gamma is NaN')
  return _to_output(gamma - np.minimum(s, gamma).mean(axis=(-2, -1)))


@_supports_batch
def probability_of_improvement(x: ArrayLike, y: ArrayLike):
  r"""Average probability that algorithm X beats algorithm Y on a task.

  For each task ``t`` with runs ``x_1..x_n`` and ``y_1..y_m``, the
  Mann-Whitney statistic normalised by the number of pairs is

  .. math:: P_t(X > Y) = \frac{1}{nm}\sum_{i=1}^{n}\sum_{j=1}^{m}
            \Big(\mathbb{1}[x_i > y_j] + \tfrac12\,\mathbb{1}[x_i = y_j]\Big)

  and the result is ``(1/T) * sum_t P_t(X > Y)``. It is computed through
  mid-ranks of the pooled sample (``U = R_x - n(n+1)/2``), which counts ties
  as one half and needs O((n+m) log(n+m)) work per task.

  Args:
    x: Scores of X, shape ``[n, num_tasks]`` (or ``[n]``), optionally with
      leading batch dimensions.
    y: Scores of Y, shape ``[m, num_tasks]`` (or ``[m]``); ``m`` may differ
      from ``n`` but the tasks (and batch dimensions) must match.

  Returns:
    A float in ``[0, 1]``, or an array of the batch shape.

  Raises:
    ValueError: on empty or NaN inputs or mismatched task counts.
  """
  xs = _as_scores(x, 'x')
  ys = _as_scores(y, 'y')
  if xs.shape[-1] != ys.shape[-1]:
    raise ValueError(f'x and y must have the same number of tasks, got {xs.shape[-1]} and {ys.shape[-1]}')
  if xs.shape[:-2] != ys.shape[:-2]:
    raise ValueError(f'x and y must have the same batch shape, got {xs.shape[:-2]} and {ys.shape[:-2]}')
  n, m = xs.shape[-2], ys.shape[-2]
  ranks = scipy.stats.rankdata(np.concatenate([xs, ys], axis=-2), method='average', axis=-2)
  u_stat = ranks[..., :n, :].sum(axis=-2) - n * (n + 1) / 2.0
  return _to_output((u_stat / (n * m)).mean(axis=-1))


@_supports_batch
def performance_profile(scores: ArrayLike, taus: ArrayLike):
  r"""Run-score distribution: fraction of scores strictly above each tau.

  .. math:: F(\tau) = \frac{1}{NT}\sum_{i,t}\mathbb{1}[S_{i,t} > \tau]

  All runs of all tasks are pooled (every task has the same number of runs,
  so this equals the task-average of the per-task fractions).

  Args:
    scores: Array of shape ``[num_runs, num_tasks]`` (or ``[num_runs]``),
      optionally with leading batch dimensions.
    taus: Thresholds, scalar or array of any shape.

  Returns:
    Array of shape ``batch_shape + taus.shape`` with values in ``[0, 1]``.
  """
  s = _as_scores(scores)
  taus = np.asarray(taus, dtype=np.float64)
  flat = s.reshape(s.shape[:-2] + (-1,))
  above = flat[..., None, :] > taus.reshape(-1, 1)
  frac = above.mean(axis=-1)
  return frac.reshape(s.shape[:-2] + taus.shape)


# --------------------------------------------------------------------------
# Stratified bootstrap.
# --------------------------------------------------------------------------


def _as_score_tuple(scores) -> tuple:
  if isinstance(scores, tuple):
    if not scores:
      raise ValueError('scores is an empty tuple; need at least one matrix')
    mats = tuple(_as_scores(s, f'scores[{k}]') for k, s in enumerate(scores))
  else:
    mats = (_as_scores(scores),)
  for k, mat in enumerate(mats):
    if mat.ndim != 2:
      raise ValueError(
        f'scores[{k}] must be 1-D or 2-D [num_runs, num_tasks] for the bootstrap, got shape {mat.shape}'
      )
  return mats


def stratified_bootstrap_replicates(
  scores,
  aggregate_fn: Callable,
  *,
  reps: int = 2000,
  seed: int = 0,
  batched: bool | None = None,
) -> np.ndarray:
  """Aggregate values on ``reps`` stratified bootstrap resamples.

  Each replicate draws, independently for every task, ``num_runs`` run
  indices uniformly with replacement from that task's runs, so each
  replicate keeps every task with its original number of runs (stratified
  by task). When ``scores`` is a tuple of matrices (e.g. two algorithms for
  ``probability_of_improvement``), each matrix is resampled independently
  and ``aggregate_fn`` receives them positionally.

  The resampling indices are drawn for all replicates at once with
  ``numpy.random.default_rng(seed)``; replicates are processed in chunks to
  bound memory. Aggregates that accept leading batch dimensions (all those in
  this module) are evaluated with one call per chunk.

  Args:
    scores: A ``[num_runs, num_tasks]`` array (1-D = one task), or a tuple of
      such arrays (they may differ in ``num_runs``).
    aggregate_fn: Maps the score matrix (or matrices) to a scalar or array.
    reps: Number of bootstrap replicates.
    seed: Seed for ``numpy.random.default_rng``.
    batched: Whether ``aggregate_fn`` accepts a leading replicate dimension
      (``[reps, num_runs, num_tasks]`` inputs, ``[reps, ...]`` output).
      ``None`` detects it for this module's functions and assumes ``False``
      for any other callable.

  Returns:
    Array of shape ``[reps] + output_shape`` of aggregate values.
  """
  mats = _as_score_tuple(scores)
  reps = int(reps)
  if reps < 1:
    raise ValueError(f'reps must be >= 1, got {reps}')
  if batched is None:
    batched = bool(getattr(aggregate_fn, '_supports_batch', False))

  rng = np.random.default_rng(seed)
  entries_per_rep = sum(mat.size for mat in mats)
  chunk = max(1, _MAX_CHUNK_ENTRIES // entries_per_rep)
  outputs = []
  for start in range(0, reps, chunk):
    size = min(chunk, reps - start)
    samples = []
    for mat in mats:
      num_runs, num_tasks = mat.shape
      idx = rng.integers(0, num_runs, size=(size, num_runs, num_tasks))
      # samples[r, i, t] = mat[idx[r, i, t], t]: runs resampled per task.
      samples.append(mat[idx, np.arange(num_tasks)])
    if batched:
      out = np.asarray(aggregate_fn(*samples), dtype=np.float64)
      if out.ndim == 0 or out.shape[0] != size:
        raise ValueError(
          'batched aggregate_fn must return one value per replicate '
          f'(leading dimension {size}), got shape {out.shape}'
        )
    else:
      out = np.stack(
        [np.asarray(aggregate_fn(*(s[r] for s in samples)), dtype=np.float64) for r in range(size)]
      )
    outputs.append(out)
  return np.concatenate(outputs, axis=0)


def stratified_bootstrap_ci(
  scores,
  aggregate_fn: Callable,
  *,
  reps: int = 2000,
  confidence: float = 0.95,
  seed: int = 0,
  batched: bool | None = None,
):
  r"""Point estimate and stratified-bootstrap percentile confidence interval.

  With replicates ``a*_1..a*_B`` from ``stratified_bootstrap_replicates`` and
  ``alpha = 1 - confidence``, the interval is

  .. math:: [\,q_{\alpha/2}(a^*),\; q_{1-\alpha/2}(a^*)\,]

  where ``q_p`` is the empirical p-quantile (linear interpolation, as
  ``numpy.percentile``). ``confidence=1`` gives the min and max replicate.

  Args:
    scores: A ``[num_runs, num_tasks]`` array or a tuple of them (for
      aggregates of several algorithms, e.g. probability of improvement).
    aggregate_fn: Maps the score matrix (or matrices, positionally) to a
      scalar or an array.
    reps: Number of bootstrap replicates.
    confidence: Coverage of the interval, in ``(0, 1]``.
    seed: Seed for ``numpy.random.default_rng``; equal seeds give equal
      intervals.
    batched: See ``stratified_bootstrap_replicates``.

  Returns:
    ``(point, low, high)``: floats for scalar aggregates, arrays otherwise;
    ``point`` is ``aggregate_fn`` on the original scores.
  """
  confidence = float(confidence)
  if not 0.0 < confidence <= 1.0:
    raise ValueError(f'confidence must be in (0, 1], got {confidence}')
  mats = _as_score_tuple(scores)
  point = _to_output(aggregate_fn(*mats))
  replicates = stratified_bootstrap_replicates(mats, aggregate_fn, reps=reps, seed=seed, batched=batched)
  alpha = 1.0 - confidence
  low, high = np.percentile(replicates, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)], axis=0)
  return point, _to_output(low), _to_output(high)


# --------------------------------------------------------------------------
# Summary table.
# --------------------------------------------------------------------------


def summarize(
  scores_by_name: Mapping[str, ArrayLike],
  *,
  reps: int = 2000,
  confidence: float = 0.95,
  seed: int = 0,
  gamma: float = 1.0,
) -> dict:
  """Point estimates and stratified bootstrap CIs of the standard metrics.

  For every algorithm computes ``mean``, ``median``, ``iqm`` and
  ``optimality_gap`` (with target ``gamma``), each as
  ``(point, low, high)``. The four metrics of one algorithm share the same
  bootstrap replicates, and every algorithm uses the same ``seed``, so an
  algorithm's result does not depend on the other entries of the dict.

  Args:
    scores_by_name: Algorithm name -> ``[num_runs, num_tasks]`` scores; all
      must have the same number of tasks (runs may differ).
    reps: Number of bootstrap replicates.
    confidence: Interval coverage in ``(0, 1]``.
    seed: Seed for ``numpy.random.default_rng``.
    gamma: Target for the optimality gap.

  Returns:
    ``{name: {metric: (point, low, high)}}`` with float entries.

  Raises:
    ValueError: if the dict is empty, a score array is empty or contains
      NaN, or task counts differ between algorithms.
  """
  if not scores_by_name:
    raise ValueError('scores_by_name is empty; need at least one algorithm')
  mats = {}
  for name, scores in scores_by_name.items():
    mat = _as_scores(scores, f'scores for {name!r}')
    if mat.ndim != 2:
      raise ValueError(f'scores for {name!r} must be 1-D or 2-D [num_runs, num_tasks], got shape {mat.shape}')
    mats[name] = mat
  task_counts = {name: mat.shape[1] for name, mat in mats.items()}
  if len(set(task_counts.values())) > 1:
    raise ValueError(f'mismatched task counts across algorithms: {task_counts}')

  @_supports_batch
  def all_metrics(s):
    return np.stack(
      [np.asarray(mean(s)), np.asarray(median(s)), np.asarray(iqm(s)), np.asarray(optimality_gap(s, gamma))],
      axis=-1,
    )

  result = {}
  for name, mat in mats.items():
    point, low, high = stratified_bootstrap_ci(mat, all_metrics, reps=reps, confidence=confidence, seed=seed)
    result[name] = {
      metric: (float(point[k]), float(low[k]), float(high[k])) for k, metric in enumerate(METRIC_NAMES)
    }
  return result
