"""Tests for common.results."""

import json
import os

import numpy as np
import pytest

from common import results

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def test_claim_validation():
  results.Claim('x', paper=1.0, measured=None, passed=False)
  with pytest.raises(ValueError, match='without a measured value'):
    results.Claim('x', paper=1.0, measured=None, passed=True)
  with pytest.raises(ValueError, match='non-finite'):
    results.Claim('x', paper=1.0, measured=float('nan'), passed=True)
  with pytest.raises(TypeError, match='passed must be a bool'):
    results.Claim('x', paper=1.0, measured=1.0, passed=np.bool_(True))
  with pytest.raises(ValueError):
    results.Claim('', paper=1.0, measured=1.0, passed=True)


def test_write_and_read_round_trip_with_plots(tmp_path):
  workdir = str(tmp_path)
  curve = results.plot_curves(
    os.path.join(workdir, 'curve.png'),
    {'a': ([0, 1, 2], [1.0, 2.0, 3.0]), 'b': (np.arange(3), np.ones(3), np.zeros(3), 2 * np.ones(3))},
    xlabel='step',
    ylabel='return',
    title='t',
    logy=True,
  )
  bars = results.plot_bars(os.path.join(workdir, 'bars.png'), {'x': 1.0, 'y': (2.0, 1.5, 2.5)}, ylabel='iqm')
  for path in (curve, bars):
    with open(path, 'rb') as f:
      assert f.read(8) == PNG_MAGIC
  claims = [
    results.Claim(
      'gain',
      paper=5.15,
      measured=np.float32(4.0),
      passed=False,
      unit='pts',
      criterion='measured >= 0.5 * paper',
    )
  ]
  path = results.write_results(
    workdir,
    project='p',
    experiment='e',
    claims=claims,
    plots=['curve.png', 'bars.png'],
    wall_clock_s=1.5,
    extra={'seeds': np.int64(3)},
  )
  with open(path) as f:
    raw = json.load(f)
  assert raw['claims'][0]['measured'] == 4.0 and raw['extra']['seeds'] == 3
  assert raw['run']['commit'] and raw['run']['backend'] == 'cpu'
  data = results.read_results(workdir)
  assert data['claims'] == [results.Claim('gain', 5.15, 4.0, False, 'pts', 'measured >= 0.5 * paper')]
  assert data['plots'] == ['curve.png', 'bars.png'] and data['wall_clock_s'] == 1.5


def test_missing_plot_and_bad_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.png'):
    results.write_results(str(tmp_path), project='p', experiment='e', claims=[], plots=['nope.png'])
  (tmp_path / results.RESULTS_FILE).write_text('{"claims": []}')
  with pytest.raises(ValueError, match='lacks experiment, project'):
    results.read_results(str(tmp_path))


def test_git_commit_outside_a_repository(tmp_path):
  assert results.git_commit(str(tmp_path)) == 'unknown'


def test_threshold_constructors():
  up = results.Claim.at_least('x', paper=1.0, measured=1.2, threshold=1.1, unit='u', note='n')
  assert up == results.Claim('x', 1.0, 1.2, True, 'u', '>= 1.1 (n)')
  assert not results.Claim.at_least('x', paper=1.0, measured=1.0, threshold=1.1).passed
  assert results.Claim.at_least('x', paper=1.0, measured=1.1, threshold=1.1).passed
  down = results.Claim.at_most('y', paper=None, measured=np.float32(0.5), threshold=0.6)
  assert down.passed is True and down.criterion == '<= 0.6'
  assert not results.Claim.at_most('y', paper=None, measured=0.7, threshold=0.6).passed
  with pytest.raises(ValueError, match='non-finite'):
    results.Claim.at_least('z', paper=None, measured=float('inf'), threshold=0.0)


def test_metric_curves():
  rows = [{'step': 10, 'train/a/loss': 1.0, 'train/b/loss': 2.0}, {'step': 20, 'train/a/loss': 0.5}]
  curves = results.metric_curves(rows, ['a', 'b'], 'loss')
  assert curves['a'] == ([10, 20], [1.0, 0.5])
  assert curves['b'][0] == [10, 20] and curves['b'][1][0] == 2.0 and np.isnan(curves['b'][1][1])


def test_write_json_is_atomic_and_read_json_tolerates_missing_files(tmp_path):
  import numpy as np

  path = str(tmp_path / 'sub' / 'x.json')
  assert results.read_json(path) is None
  results.write_json(path, {'a': np.float32(1.5), 'b': np.arange(2)})
  assert results.read_json(path) == {'a': 1.5, 'b': [0, 1]}
  assert not (tmp_path / 'sub' / 'x.json.tmp').exists()
  (tmp_path / 'bad.json').write_text('{not json')
  assert results.read_json(str(tmp_path / 'bad.json')) is None
