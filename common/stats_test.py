"""Tests for common/stats.py (hand-computed values and bootstrap properties)."""

import itertools

import numpy as np
import pytest

from common import stats


# ---------------------------------------------------------------------------
# Point metrics on small hand-computed matrices.
# ---------------------------------------------------------------------------


def test_mean_is_task_mean_of_run_means():
  scores = np.array([[1.0, 2.0], [3.0, 6.0]])  # task means 2 and 4
  assert stats.mean(scores) == pytest.approx(3.0)
  assert stats.mean([1.0, 2.0, 6.0]) == pytest.approx(3.0)  # 1-D = one task
  assert isinstance(stats.mean(scores), float)


def test_median_averages_runs_then_takes_median_over_tasks():
  scores = np.array([[0.0, 10.0, 1.0], [2.0, 0.0, 5.0]])
  # Per-task means: 1, 5, 3 -> median 3. (The median of all entries would be
  # 1.5 and the median of per-run medians would be 1.5 as well.)
  assert stats.median(scores) == pytest.approx(3.0)
  # Even number of tasks: task means 1, 2, 4, 100 -> (2 + 4) / 2.
  scores = np.array([[0.0, 2.0, 3.0, 100.0], [2.0, 2.0, 5.0, 100.0]])
  assert stats.median(scores) == pytest.approx(3.0)


def test_iqm_is_mean_of_middle_half_of_all_entries():
  scores = np.arange(1.0, 9.0).reshape(2, 4)
  assert stats.iqm(scores) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
  assert stats.iqm(scores.reshape(4, 2)) == pytest.approx(4.5)
  # Robust to an outlier that drags the mean far away.
  outlier = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 1000.0]])
  assert stats.iqm(outlier) == pytest.approx(4.5)
  assert stats.mean(outlier) == pytest.approx(128.5)


def test_optimality_gap_clips_scores_above_gamma():
  scores = np.array([[0.5, 2.0], [1.0, 0.0]])
  # gamma=1: clipped to 0.5, 1, 1, 0 -> mean 0.625 -> gap 0.375.
  assert stats.optimality_gap(scores) == pytest.approx(0.375)
  # gamma=2: clipped to 0.5, 2, 1, 0 -> mean 0.875 -> gap 1.125.
  assert stats.optimality_gap(scores, gamma=2.0) == pytest.approx(1.125)
  assert stats.optimality_gap(np.full((3, 2), 5.0)) == pytest.approx(0.0)


def _brute_force_poi(x, y):
  x = np.asarray(x, float).reshape(len(x), -1)
  y = np.asarray(y, float).reshape(len(y), -1)
  per_task = []
  for t in range(x.shape[1]):
    total = 0.0
    for xi, yj in itertools.product(x[:, t], y[:, t]):
      total += 1.0 if xi > yj else (0.5 if xi == yj else 0.0)
    per_task.append(total / (x.shape[0] * y.shape[0]))
  return float(np.mean(per_task))


def test_probability_of_improvement_hand_counted_with_ties():
  # Task 0: x=[0, 2, 4], y=[1, 2]. Pairs: 0 -> 0 wins; 2 -> beats 1, ties 2
  # (1.5); 4 -> beats both (2). Total 3.5 / 6.
  # Task 1: x=[5, 5, 5], y=[1, 9]: each x beats exactly one y -> 3 / 6.
  x = np.array([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
  y = np.array([[1.0, 1.0], [2.0, 9.0]])
  expected = (3.5 / 6 + 3.0 / 6) / 2
  assert stats.probability_of_improvement(x, y) == pytest.approx(expected)
  assert stats.probability_of_improvement(y, x) == pytest.approx(1 - expected)


def test_probability_of_improvement_matches_pair_count_on_random_ties():
  rng = np.random.default_rng(3)
  x = rng.integers(0, 4, size=(7, 5)).astype(float)  # many ties
  y = rng.integers(0, 4, size=(4, 5)).astype(float)
  assert stats.probability_of_improvement(x, y) == pytest.approx(_brute_force_poi(x, y), abs=1e-12)


def test_probability_of_improvement_extremes():
  x = np.array([[10.0, 20.0], [11.0, 21.0]])
  y = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
  assert stats.probability_of_improvement(x, y) == pytest.approx(1.0)
  assert stats.probability_of_improvement(y, x) == pytest.approx(0.0)
  assert stats.probability_of_improvement(x, x) == pytest.approx(0.5)


def test_performance_profile_counts_strictly_greater():
  scores = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
  taus = np.array([-1.0, 0.0, 2.5, 5.0])
  np.testing.assert_allclose(stats.performance_profile(scores, taus), [1.0, 5 / 6, 0.5, 0.0])
  grid = np.array([[0.0, 1.0], [4.0, 10.0]])
  out = stats.performance_profile(scores, grid)
  assert out.shape == grid.shape
  np.testing.assert_allclose(out, [[5 / 6, 4 / 6], [1 / 6, 0.0]])
  assert stats.performance_profile(scores, 2.0) == pytest.approx(0.5)


# ---------------------------------------------------------------------------
# Stratified bootstrap.
# ---------------------------------------------------------------------------


def _random_scores(num_runs, num_tasks=3, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(loc=np.arange(num_tasks), scale=1.0, size=(num_runs, num_tasks))


@pytest.mark.parametrize('fn', [stats.mean, stats.median, stats.iqm, stats.optimality_gap])
def test_bootstrap_ci_contains_point_estimate(fn):
  scores = _random_scores(10)
  point, low, high = stats.stratified_bootstrap_ci(scores, fn, reps=500)
  assert point == pytest.approx(fn(scores))
  assert low < point < high


def test_bootstrap_ci_is_percentile_interval_of_replicates():
  scores = _random_scores(10)
  replicates = stats.stratified_bootstrap_replicates(scores, stats.mean, reps=400, seed=5)
  _, low, high = stats.stratified_bootstrap_ci(scores, stats.mean, reps=400, confidence=0.9, seed=5)
  assert low == pytest.approx(np.percentile(replicates, 5.0))
  assert high == pytest.approx(np.percentile(replicates, 95.0))
  # About 10% of the replicates fall outside a 90% interval.
  outside = np.mean((replicates < low) | (replicates > high))
  assert 0.08 <= outside <= 0.12


def test_bootstrap_ci_is_deterministic_for_fixed_seed():
  scores = _random_scores(8)
  a = stats.stratified_bootstrap_ci(scores, stats.iqm, reps=300, seed=7)
  b = stats.stratified_bootstrap_ci(scores, stats.iqm, reps=300, seed=7)
  c = stats.stratified_bootstrap_ci(scores, stats.iqm, reps=300, seed=8)
  assert a == b
  assert a[1:] != c[1:]


def test_bootstrap_ci_shrinks_as_runs_grow():
  _, low_s, high_s = stats.stratified_bootstrap_ci(_random_scores(5), stats.mean, reps=1000)
  _, low_l, high_l = stats.stratified_bootstrap_ci(_random_scores(200), stats.mean, reps=1000)
  # Width scales like 1/sqrt(runs): expected ratio about sqrt(40) ~ 6.3.
  assert (high_l - low_l) < 0.4 * (high_s - low_s)


def test_bootstrap_ci_of_constant_scores_is_the_point():
  scores = np.full((6, 4), 0.7)
  for fn in (stats.mean, stats.median, stats.iqm, stats.optimality_gap):
    point, low, high = stats.stratified_bootstrap_ci(scores, fn, reps=200)
    assert point == pytest.approx(low) and point == pytest.approx(high)


def test_bootstrap_is_stratified_by_task():
  # Task 0 lives in [0, 1], task 1 in [1000, 1001]. Any stratified replicate
  # keeps 5 runs of each task, so its mean lies in [500, 501].
  rng = np.random.default_rng(0)
  scores = np.stack([rng.uniform(0, 1, 5), 1000 + rng.uniform(0, 1, 5)], 1)
  reps = stats.stratified_bootstrap_replicates(scores, stats.mean, reps=2000)
  assert reps.shape == (2000,)
  assert reps.min() >= 500.0 and reps.max() <= 501.0
  _, low, high = stats.stratified_bootstrap_ci(scores, stats.mean, reps=2000)
  assert 500.0 <= low < high <= 501.0
  # A non-stratified bootstrap (resampling the 10 pooled entries) changes how
  # many entries come from each task, so its replicate means spread widely.
  pooled = scores.reshape(-1)
  idx = np.random.default_rng(0).integers(0, pooled.size, size=(2000, 10))
  naive = pooled[idx].mean(axis=1)
  assert np.percentile(naive, 97.5) - np.percentile(naive, 2.5) > 300.0


def test_unbatched_aggregate_gives_same_replicates_as_batched():
  scores = _random_scores(6)
  batched = stats.stratified_bootstrap_replicates(scores, stats.mean, reps=50)
  looped = stats.stratified_bootstrap_replicates(
    scores, lambda s: float(np.mean(s)), reps=50
  )  # plain Python callable
  np.testing.assert_allclose(batched, looped)


def test_bootstrap_of_two_algorithms_probability_of_improvement():
  rng = np.random.default_rng(1)
  x = rng.normal(1.0, 1.0, size=(10, 4))
  y = rng.normal(0.0, 1.0, size=(6, 4))  # different number of runs
  point, low, high = stats.stratified_bootstrap_ci((x, y), stats.probability_of_improvement, reps=500)
  assert point == pytest.approx(stats.probability_of_improvement(x, y))
  assert 0.0 <= low < point < high <= 1.0
  dominating = stats.stratified_bootstrap_ci((x + 100.0, y), stats.probability_of_improvement, reps=100)
  assert dominating == pytest.approx((1.0, 1.0, 1.0))


def test_bootstrap_of_array_valued_aggregate():
  scores = _random_scores(10)
  taus = np.linspace(-2.0, 4.0, 7)
  point, low, high = stats.stratified_bootstrap_ci(
    scores, lambda s: stats.performance_profile(s, taus), reps=200, batched=True
  )
  assert point.shape == low.shape == high.shape == taus.shape
  assert np.all(low <= point) and np.all(point <= high)


# ---------------------------------------------------------------------------
# summarize and error handling.
# ---------------------------------------------------------------------------


def test_summarize_structure_and_values():
  scores = {'a': _random_scores(8, seed=1), 'b': _random_scores(5, seed=2)}
  out = stats.summarize(scores, reps=300, confidence=0.9, seed=3)
  assert set(out) == {'a', 'b'}
  for name, mat in scores.items():
    assert set(out[name]) == {'mean', 'median', 'iqm', 'optimality_gap'}
    for metric in out[name]:
      point, low, high = out[name][metric]
      assert point == pytest.approx(getattr(stats, metric)(mat))
      assert low <= high
    assert out[name]['iqm'] == pytest.approx(
      stats.stratified_bootstrap_ci(mat, stats.iqm, reps=300, confidence=0.9, seed=3)
    )


def test_summarize_errors():
  good = np.ones((3, 2))
  with pytest.raises(ValueError, match='empty'):
    stats.summarize({}, reps=10, confidence=0.9, seed=0)
  with pytest.raises(ValueError, match="'b'.*empty"):
    stats.summarize({'a': good, 'b': np.zeros((0, 2))}, reps=10, confidence=0.9, seed=0)
  with pytest.raises(ValueError, match="'a'.*NaN"):
    stats.summarize({'a': np.array([[1.0, np.nan]])}, reps=10, confidence=0.9, seed=0)
  with pytest.raises(ValueError, match='mismatched task counts'):
    stats.summarize({'a': good, 'b': np.ones((3, 3))}, reps=10, confidence=0.9, seed=0)


def test_metric_and_bootstrap_errors():
  with pytest.raises(ValueError, match='empty'):
    stats.mean([])
  with pytest.raises(ValueError, match='NaN'):
    stats.iqm([[1.0, np.nan]])
  with pytest.raises(ValueError, match='same number of tasks'):
    stats.probability_of_improvement(np.ones((3, 2)), np.ones((3, 3)))
  with pytest.raises(ValueError, match='confidence'):
    stats.stratified_bootstrap_ci(np.ones((3, 2)), stats.mean, confidence=1.5)
  with pytest.raises(ValueError, match='reps'):
    stats.stratified_bootstrap_ci(np.ones((3, 2)), stats.mean, reps=0)
