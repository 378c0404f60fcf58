"""Tests for common/schedules.py.

Expected values are computed by hand from the formulas in the docstrings.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common import schedules

# float32 arithmetic: compare with a relative tolerance.
RTOL = 1e-6
ATOL = 1e-9


def _close(actual, expected):
  np.testing.assert_allclose(np.asarray(actual), expected, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- #
# warmup_cosine
# --------------------------------------------------------------------------- #


class TestWarmupCosine:
  # init 0.1, peak 1.0, end 0.2, warmup 10, total 110 (decay 100 steps).
  @pytest.fixture
  def sched(self):
    return schedules.warmup_cosine(
      1.0,
      total_steps=110,
      warmup_steps=10,
      init_value=0.1,
      end_value=0.2,
    )

  @pytest.mark.parametrize(
    'step, expected',
    [
      (0, 0.1),  # init_value
      (5, 0.55),  # mid-warmup: 0.1 + 0.9 * 5 / 10
      (10, 1.0),  # end of warmup: peak
      (35, 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 4))),  # 1/4 decay
      (60, 0.6),  # half decay: (peak + end) / 2
      (110, 0.2),  # end_value at total_steps
      (111, 0.2),  # held after the end
      (10_000, 0.2),
      (-5, 0.1),  # negative steps clamp to step 0
    ],
  )
  def test_hand_values(self, sched, step, expected):
    _close(sched(step), expected)

  def test_jit_matches_eager(self, sched):
    steps = np.arange(-2, 130)
    eager = np.array([float(sched(int(s))) for s in steps])
    jitted = jax.jit(sched)
    traced = np.array([float(jitted(jnp.int32(s))) for s in steps])
    vmapped = np.asarray(jax.jit(jax.vmap(sched))(jnp.asarray(steps)))
    np.testing.assert_allclose(traced, eager, rtol=1e-6)
    np.testing.assert_allclose(vmapped, eager, rtol=1e-6)

  def test_zero_warmup_starts_at_peak(self):
    sched = schedules.warmup_cosine(2.0, total_steps=100)
    _close(sched(0), 2.0)
    _close(sched(50), 1.0)  # (peak + end) / 2 with end 0
    _close(sched(100), 0.0)

  def test_warmup_equals_total(self):
    sched = schedules.warmup_cosine(1.0, total_steps=10, warmup_steps=10, end_value=0.5)
    _close(sched(5), 0.5)  # mid warmup from 0
    _close(sched(9), 0.9)
    _close(sched(10), 0.5)  # no decay phase: end_value at total_steps
    _close(sched(11), 0.5)

  def test_returns_scalar_float(self, sched):
    out = sched(3)
    assert out.shape == ()
    assert jnp.issubdtype(out.dtype, jnp.floating)

  def test_works_as_optax_learning_rate(self, sched):
    opt = optax.sgd(learning_rate=sched)
    params = {'w': jnp.ones(3)}
    state = opt.init(params)
    grads = {'w': jnp.ones(3)}

    @jax.jit
    def step(state):
      updates, state = opt.update(grads, state, params)
      return updates, state

    for _ in range(5):  # steps 0..4
      updates, state = step(state)
    # The fifth update uses the lr at count 4: 0.1 + 0.9 * 4 / 10 = 0.46.
    _close(updates['w'], -0.46 * np.ones(3))


# --------------------------------------------------------------------------- #
# warmup_linear_decay
# --------------------------------------------------------------------------- #


class TestWarmupLinearDecay:
  # init 0, peak 1.0, end 0.1, warmup 4, total 14 (decay 10 steps).
  @pytest.fixture
  def sched(self):
    return schedules.warmup_linear_decay(1.0, total_steps=14, warmup_steps=4, end_value=0.1)

  @pytest.mark.parametrize(
    'step, expected',
    [
      (0, 0.0),
      (1, 0.25),
      (2, 0.5),  # mid-warmup
      (4, 1.0),  # end of warmup
      (9, 0.55),  # mid-decay: 1 + (0.1 - 1) * 5 / 10
      (11, 0.37),  # 1 - 0.9 * 7 / 10
      (14, 0.1),  # end
      (20, 0.1),  # beyond end
    ],
  )
  def test_hand_values(self, sched, step, expected):
    _close(sched(step), expected)

  def test_jit_matches_eager(self, sched):
    steps = np.arange(0, 20)
    eager = np.array([float(sched(int(s))) for s in steps])
    traced = np.asarray(jax.jit(jax.vmap(sched))(jnp.asarray(steps)))
    np.testing.assert_allclose(traced, eager, rtol=1e-6)

  def test_zero_warmup(self):
    sched = schedules.warmup_linear_decay(3.0, total_steps=3)
    np.testing.assert_allclose(
      [float(sched(s)) for s in range(5)],
      [3.0, 2.0, 1.0, 0.0, 0.0],
      rtol=RTOL,
    )


# --------------------------------------------------------------------------- #
# constant_with_warmup
# --------------------------------------------------------------------------- #


class TestConstantWithWarmup:
  @pytest.mark.parametrize(
    'step, expected',
    [(0, 0.2), (2, 0.6), (4, 1.0), (5, 1.0), (1_000_000, 1.0)],
  )
  def test_hand_values(self, step, expected):
    sched = schedules.constant_with_warmup(1.0, 4, init_value=0.2)
    _close(sched(step), expected)

  def test_zero_warmup_is_constant(self):
    sched = schedules.constant_with_warmup(0.3)
    for s in (0, 1, 100):
      _close(sched(s), 0.3)
    _close(jax.jit(sched)(jnp.int32(7)), 0.3)

  def test_jit_matches_eager(self):
    sched = schedules.constant_with_warmup(1.0, 8)
    steps = np.arange(0, 12)
    eager = np.array([float(sched(int(s))) for s in steps])
    traced = np.asarray(jax.jit(jax.vmap(sched))(jnp.asarray(steps)))
    np.testing.assert_allclose(traced, eager, rtol=1e-6)


# --------------------------------------------------------------------------- #
# linear_epsilon
# --------------------------------------------------------------------------- #


def _dopamine_linearly_decaying_epsilon(decay_period, step, warmup_steps, epsilon):
  """Reference copy of Dopamine's formula (start fixed at 1.0)."""
  steps_left = decay_period + warmup_steps - step
  bonus = (1.0 - epsilon) * steps_left / decay_period
  bonus = np.clip(bonus, 0.0, 1.0 - epsilon)
  return epsilon + bonus


class TestLinearEpsilon:
  # start 1.0, end 0.1, decay 100, warmup 50.
  @pytest.fixture
  def sched(self):
    return schedules.linear_epsilon(1.0, 0.1, 100, warmup_steps=50)

  @pytest.mark.parametrize(
    'step, expected',
    [
      (0, 1.0),  # warmup: start
      (25, 1.0),
      (50, 1.0),  # decay begins at warmup_steps
      (75, 0.775),  # 1 - 0.9 * 25 / 100
      (100, 0.55),  # half way
      (150, 0.1),  # end
      (10_000, 0.1),  # constant afterwards
    ],
  )
  def test_hand_values(self, sched, step, expected):
    _close(sched(step), expected)

  def test_matches_dopamine(self, sched):
    steps = np.arange(0, 200, 7)
    ours = np.asarray(jax.jit(jax.vmap(sched))(jnp.asarray(steps)))
    ref = _dopamine_linearly_decaying_epsilon(100, steps, 50, 0.1)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)

  def test_traced_int_step_in_jit(self, sched):
    # Typical use: epsilon computed from an int32 step counter carried in
    # a jitted acting function / scan.
    def body(step, _):
      return step + 1, sched(step)

    _, eps = jax.jit(lambda: jax.lax.scan(body, jnp.int32(0), None, length=160))()
    eager = np.array([float(sched(s)) for s in range(160)])
    np.testing.assert_allclose(np.asarray(eps), eager, rtol=1e-6)
    _close(eps[100], 0.55)

  def test_zero_warmup(self):
    sched = schedules.linear_epsilon(0.5, 0.0, 10)
    _close(sched(0), 0.5)
    _close(sched(5), 0.25)
    _close(sched(10), 0.0)

  def test_zero_decay_is_a_step(self):
    sched = schedules.linear_epsilon(1.0, 0.05, 0, warmup_steps=3)
    np.testing.assert_allclose(
      [float(sched(s)) for s in range(5)],
      [1, 1, 1, 0.05, 0.05],
      rtol=RTOL,
    )

  @pytest.mark.parametrize('start, end', [(1.5, 0.1), (1.0, -0.1)])
  def test_epsilon_out_of_range(self, start, end):
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
      schedules.linear_epsilon(start, end, 10)


# --------------------------------------------------------------------------- #
# Argument validation
# --------------------------------------------------------------------------- #


class TestValidation:
  @pytest.mark.parametrize('factory', [schedules.warmup_cosine, schedules.warmup_linear_decay])
  def test_warmup_longer_than_total(self, factory):
    with pytest.raises(ValueError) as e:
      factory(1.0, total_steps=10, warmup_steps=20)
    msg = str(e.value)
    assert 'warmup_steps (20)' in msg and 'total_steps (10)' in msg

  @pytest.mark.parametrize(
    'kwargs, exc, pattern',
    [
      (dict(total_steps=0), ValueError, 'total_steps must be >= 1'),
      (dict(total_steps=10, warmup_steps=-1), ValueError, 'warmup_steps must be >= 0'),
      (dict(total_steps=10.5), TypeError, 'integer number of steps'),
      (dict(total_steps='10'), TypeError, 'integer number of steps'),
      (dict(total_steps=True), TypeError, 'integer number of steps'),
      (dict(total_steps=10, end_value=float('nan')), ValueError, 'end_value must be finite'),
      (dict(total_steps=10, init_value='0'), TypeError, 'init_value must be a concrete real number'),
    ],
  )
  def test_bad_args(self, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
      schedules.warmup_cosine(1.0, **kwargs)

  def test_integral_float_steps_and_numpy_values_accepted(self):
    sched = schedules.warmup_cosine(np.float32(1.0), total_steps=1e2, warmup_steps=np.int64(10))
    _close(sched(10), 1.0)

  def test_negative_decay_steps(self):
    with pytest.raises(ValueError, match='decay_steps must be >= 0'):
      schedules.linear_epsilon(1.0, 0.1, -1)

  def test_traced_hyperparameter_rejected(self):
    @jax.jit
    def build(peak):
      return schedules.constant_with_warmup(peak)(0)

    with pytest.raises(TypeError, match='peak_value must be a concrete'):
      build(1.0)


# --------------------------------------------------------------------------- #
# make_schedule
# --------------------------------------------------------------------------- #


class TestMakeSchedule:
  @pytest.mark.parametrize(
    'name, kwargs, factory',
    [
      ('warmup_cosine', dict(peak_value=1.0, total_steps=20, warmup_steps=5), schedules.warmup_cosine),
      ('warmup_linear_decay', dict(peak_value=1.0, total_steps=20), schedules.warmup_linear_decay),
      ('constant_with_warmup', dict(peak_value=0.5, warmup_steps=3), schedules.constant_with_warmup),
      ('linear_epsilon', dict(start=1.0, end=0.01, decay_steps=10, warmup_steps=2), schedules.linear_epsilon),
    ],
  )
  def test_dispatch_matches_factory(self, name, kwargs, factory):
    by_name = schedules.make_schedule(name, **kwargs)
    direct = factory(**kwargs)
    steps = jnp.arange(25)
    np.testing.assert_array_equal(
      np.asarray(jax.vmap(by_name)(steps)),
      np.asarray(jax.vmap(direct)(steps)),
    )

  def test_name_normalisation(self):
    sched = schedules.make_schedule('Warmup-Cosine', peak_value=1.0, total_steps=10)
    _close(sched(0), 1.0)

  def test_unknown_name_suggests_nearest(self):
    with pytest.raises(ValueError) as e:
      schedules.make_schedule('warmup_cosin', peak_value=1.0, total_steps=10)
    msg = str(e.value)
    assert "Unknown schedule 'warmup_cosin'" in msg
    assert "Did you mean 'warmup_cosine'?" in msg
    for name in schedules.SCHEDULES:
      assert name in msg

  def test_unknown_name_without_close_match(self):
    with pytest.raises(ValueError, match='Valid names: ') as e:
      schedules.make_schedule('zzz')
    assert 'Did you mean' not in str(e.value)

  def test_bad_kwargs_name_the_schedule(self):
    with pytest.raises(TypeError, match="schedule 'linear_epsilon'"):
      schedules.make_schedule('linear_epsilon', start=1.0, end=0.1)
    with pytest.raises(TypeError, match='warmup'):
      schedules.make_schedule('warmup_cosine', peak_value=1.0, total_steps=10, warmup=3)

  def test_non_string_name(self):
    with pytest.raises(TypeError, match='must be a string'):
      schedules.make_schedule(None)
