"""Tests for common.metrics."""

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from common import metrics
from common.errors import NonFiniteError


def test_flatten_groups_nested_names():
  assert metrics.flatten_metrics({'train': {'loss': 1, 'opt': {'lr': 2}}, 'eval/return': 3}) == {
    'train/loss': 1,
    'train/opt/lr': 2,
    'eval/return': 3,
  }


def test_write_jsonl_and_tensorboard(tmp_path):
  workdir = str(tmp_path)
  with metrics.MetricWriter(workdir, enabled=True) as writer:
    writer.write(1, {'train': {'loss': jnp.float32(0.5), 'steps': np.int32(7)}})
    writer.write(2, {'eval/return': 3.25})
  rows = metrics.read_metrics(workdir)
  assert [r['step'] for r in rows] == [1, 2]
  assert rows[0]['train/loss'] == 0.5 and rows[0]['train/steps'] == 7
  assert rows[1]['eval/return'] == 3.25 and 'train/loss' not in rows[1]
  events = os.listdir(os.path.join(workdir, metrics.TENSORBOARD_DIR))
  assert any(name.startswith('events.out.tfevents') for name in events)


def test_name_without_group_is_refused(tmp_path):
  with metrics.MetricWriter(str(tmp_path), enabled=True, tensorboard=False) as writer:
    with pytest.raises(ValueError, match="'train/loss'"):
      writer.write(1, {'loss': 1.0})


def test_non_scalar_is_refused(tmp_path):
  with metrics.MetricWriter(str(tmp_path), enabled=True, tensorboard=False) as writer:
    with pytest.raises(ValueError, match=r'shape \(3,\)'):
      writer.write(1, {'train/loss': jnp.ones(3)})


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_non_finite_stops_with_clear_error_after_recording(tmp_path, bad):
  workdir = str(tmp_path)
  with metrics.MetricWriter(workdir, enabled=True, tensorboard=False) as writer:
    writer.write(1, {'train/loss': 1.0})
    with pytest.raises(NonFiniteError) as e:
      writer.write(2, {'train/loss': jnp.float32(bad), 'train/ok': 1.0})
  assert 'train/loss' in str(e.value) and 'step 2' in str(e.value) and 'checkpoint' in str(e.value)
  with open(os.path.join(workdir, metrics.METRICS_FILE)) as f:
    lines = [json.loads(line) for line in f]  # Strict JSON: no bare NaN tokens.
  assert lines[1]['train/loss'] in ('nan', 'inf', '-inf')
  value = metrics.read_metrics(workdir)[1]['train/loss']
  assert math.isnan(value) if math.isnan(bad) else value == bad


def test_check_finite_can_be_off(tmp_path):
  with metrics.MetricWriter(str(tmp_path), enabled=True, tensorboard=False, check_finite=False) as writer:
    writer.write(1, {'train/loss': float('nan')})


def test_resume_drops_rows_after_the_checkpoint(tmp_path):
  workdir = str(tmp_path)
  with metrics.MetricWriter(workdir, enabled=True, tensorboard=False) as writer:
    for step in (10, 20, 30):
      writer.write(step, {'train/loss': step})
  with metrics.MetricWriter(workdir, resume_step=20, enabled=True, tensorboard=False) as writer:
    writer.write(30, {'train/loss': -1})
  assert [(r['step'], r['train/loss']) for r in metrics.read_metrics(workdir)] == [
    (10, 10),
    (20, 20),
    (30, -1),
  ]


def test_write_stacked(tmp_path):
  workdir = str(tmp_path)
  with metrics.MetricWriter(workdir, enabled=True, tensorboard=False) as writer:
    writer.write_stacked(jnp.arange(3) + 1, {'train': {'loss': jnp.array([3.0, 2.0, 1.0])}})
  assert [(r['step'], r['train/loss']) for r in metrics.read_metrics(workdir)] == [(1, 3), (2, 2), (3, 1)]


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path / 'w'), enabled=False)
  writer.write(1, {'train/loss': float('nan')})
  writer.close()
  assert not os.path.exists(tmp_path / 'w')


@pytest.mark.parametrize(
  'total,chunk,start,expected',
  [
    (10, 4, 0, [(0, 4), (4, 8), (8, 10)]),
    (10, 5, 5, [(5, 10)]),
    (10, 3, 10, []),
    (7, 10, 0, [(0, 7)]),
  ],
)
def test_chunks(total, chunk, start, expected):
  assert list(metrics.chunks(total, chunk, start=start, disable=True)) == expected


def test_chunks_rejects_non_positive():
  with pytest.raises(ValueError):
    list(metrics.chunks(10, 0, disable=True))


def test_chunks_log_progress_in_a_batch_job(caplog):
  # Under pytest stderr is not a terminal: progress must come as log lines (tqdm alone printed nothing).
  with caplog.at_level('INFO'):
    assert list(metrics.chunks(10, 4, start=2, desc='wm', log_interval_s=0.0)) == [(2, 6), (6, 10)]
  lines = [r.getMessage() for r in caplog.records]
  assert lines[0] == 'wm: starting at step 2 of 10'
  assert lines[1].startswith('wm: step 6 of 10 (60 %)')
  assert lines[2].startswith('wm: step 10 of 10 (100 %)')
  assert len(lines) == 3


def test_chunks_log_at_most_once_per_interval_and_at_the_end(caplog):
  with caplog.at_level('INFO'):
    list(metrics.chunks(10, 1, desc='x', log_interval_s=3600.0))
  lines = [r.getMessage() for r in caplog.records]
  assert lines == ['x: starting at step 0 of 10', lines[1]]
  assert lines[1].startswith('x: step 10 of 10 (100 %)')


def test_chunks_disabled_logs_nothing(caplog):
  with caplog.at_level('INFO'):
    list(metrics.chunks(10, 4, disable=True, log_interval_s=0.0))
  assert not caplog.records
