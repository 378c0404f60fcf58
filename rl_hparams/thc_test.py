"""Tests for rl_hparams/thc.py: midpoint ranks, THC and its maximum, the three axes, the CSV, its errors."""

import csv
import itertools
import random

import numpy as np
import pytest

from common.errors import ConfigError
from rl_hparams import thc

AGENTS = ('DER', 'DrQ_eps')
REGIMES = ('low', 'high')
GAMES = ('G1', 'G2')
SEEDS = (0, 1, 2)
LEARNING_RATES = ('0.001', '0.0001', '0.01')  # Written out of numeric order on purpose.
ACTIVATIONS = ('relu', 'tanh', 'gelu')


def _score(agent: str, game: str, hyperparameter: str, value: str, seed: int) -> float:
  """Synthetic raw scores, with a 0.01 * seed noise far below the gaps between values.

  learning_rate: 10, 20, 30 for 1e-4, 1e-3, 1e-2 everywhere (the same ordering in every setting).
  activation (relu, tanh, gelu = index 0, 1, 2): increasing in G1, decreasing in G2 (reversed across games).
  DER's G1 scores are large (100, 200, 300) and its G2 scores small (3, 2, 1), so pooled over games DER
  prefers gelu; DrQ_eps has the magnitudes swapped (G1 1, 2, 3; G2 300, 200, 100), so it prefers relu: the
  orderings are reversed across agents too, and the same in both regimes.
  """
  if hyperparameter == 'learning_rate':
    base = 10.0 * (1 + ('0.0001', '0.001', '0.01').index(value))
  else:
    i = ACTIVATIONS.index(value)
    big = agent == 'DER'
    base = (100.0 * (i + 1) if big else i + 1.0) if game == 'G1' else (3.0 - i if big else 100.0 * (3 - i))
  return base + 0.01 * seed


def _rows():
  rows = []
  for agent, regime, game, seed in itertools.product(AGENTS, REGIMES, GAMES, SEEDS):
    for hyperparameter, values, default in (
      ('learning_rate', LEARNING_RATES, '0.0001'),
      ('activation', ACTIVATIONS, 'relu'),
    ):
      for value in values:
        score = _score(agent, game, hyperparameter, value, seed)
        rows.append(
          {
            'agent': agent,
            'regime': regime,
            'game': game,
            'hyperparameter': hyperparameter,
            'value': value,
            'seed': seed,
            'score': score,
            'normalized_score': score / 100.0,
            'run_id': 'default' if value == default else f'{hyperparameter}={value}',
          }
        )
  return rows


def _entry(entries, axis, context, hyperparameter):
  (entry,) = [
    e for e in entries if (e['axis'], e['context'], e['hyperparameter']) == (axis, context, hyperparameter)
  ]
  return entry


def _thcs(entries):
  return {(e['context'], e['hyperparameter']): e['thc'] for e in entries}


# ---------------------------------------------------------------------------
# Ranks.
# ---------------------------------------------------------------------------


def test_midpoint_ranks_share_ranks_when_intervals_overlap():
  # A 10 [8, 12] and B 9 [7, 11] overlap: each could be 1st or 2nd -> 1.5; C [0, 2] is certainly last.
  ranks = thc.midpoint_ranks([10.0, 9.0, 1.0], [8.0, 7.0, 0.0], [12.0, 11.0, 2.0])
  np.testing.assert_array_equal(ranks, [1.5, 1.5, 3.0])
  # A chain: A [0, 10] overlaps B [5, 6] and C [7, 8]; C is certainly better than B.
  # A: best 1, worst 3 -> 2; B: best 2 (C above), worst 3 -> 2.5; C: best 1, worst 2 (B below) -> 1.5.
  ranks = thc.midpoint_ranks([5.0, 5.5, 7.5], [0.0, 5.0, 7.0], [10.0, 6.0, 8.0])
  np.testing.assert_array_equal(ranks, [2.0, 2.5, 1.5])


def test_midpoint_ranks_limits_and_plain_ranks():
  # Disjoint intervals give the ordinary ranks.
  point = np.array([1.0, 4.0, 2.0, 3.0])
  np.testing.assert_array_equal(thc.midpoint_ranks(point, point - 0.1, point + 0.1), [4.0, 1.0, 3.0, 2.0])
  # All intervals overlapping: every value gets (k + 1) / 2.
  np.testing.assert_array_equal(thc.midpoint_ranks(point, point - 5, point + 5), [2.5] * 4)
  # Touching intervals (low_j == high_i) are not "certainly better": a tie.
  np.testing.assert_array_equal(thc.midpoint_ranks([1.5, 2.5], [1.0, 2.0], [2.0, 3.0]), [1.5, 1.5])
  # ties='none' ranks the points, equal points averaged; the intervals are ignored.
  ranks = thc.midpoint_ranks([3.0, 1.0, 3.0], [0.0, 0.0, 0.0], [9.0, 9.0, 9.0], ties='none')
  np.testing.assert_array_equal(ranks, [1.5, 3.0, 1.5])
  with pytest.raises(ConfigError, match='unknown ties'):
    thc.midpoint_ranks([1.0], [1.0], [1.0], ties='average')


# ---------------------------------------------------------------------------
# THC and its maximum.
# ---------------------------------------------------------------------------


def test_identical_rankings_give_zero():
  ranks = [[2.0, 1.0, 4.0, 3.0]] * 3
  for normalization in thc.NORMALIZATIONS:
    assert thc.thc_from_ranks(ranks, normalization) == 0.0


def test_reversed_rankings_reach_the_maximum_under_each_normalization():
  point = np.array([4.0, 3.0, 2.0, 1.0])
  first = thc.midpoint_ranks(point, point - 0.1, point + 0.1)
  second = thc.midpoint_ranks(-point, -point - 0.1, -point + 0.1)
  np.testing.assert_array_equal(np.stack([first, second]), [[1, 2, 3, 4], [4, 3, 2, 1]])
  # Delta = 3, 1, 1, 3 -> mean 2 = floor(16 / 2) / 4.
  expected = {'k-1': 2.0 / 3.0, 'k': 0.5, 'none': 2.0}
  for normalization, value in expected.items():
    assert thc.thc_from_ranks([first, second], normalization) == pytest.approx(value)
    assert thc.max_thc(4, 2, normalization) == pytest.approx(value)


def test_thc_is_mean_spread_over_divisor():
  # Spreads over 3 settings: value 0: 3 - 1 = 2, value 1: 2 - 1.5 = 0.5, value 2: 3 - 1 = 2 -> mean 1.5.
  ranks = [[1.0, 2.0, 3.0], [3.0, 1.5, 1.5], [2.0, 2.0, 1.0]]
  assert thc.thc_from_ranks(ranks, 'k-1') == pytest.approx(0.75)
  assert thc.thc_from_ranks(ranks, 'k') == pytest.approx(0.5)
  assert thc.thc_from_ranks(ranks, 'none') == pytest.approx(1.5)


def _brute_force_max_mean_spread(k: int, num_settings: int) -> float:
  """Max over collections of permutations of the mean spread; the first setting is fixed to the identity
  (relabelling values changes nothing) and the others taken as a multiset (their order changes nothing)."""
  perms = np.array(list(itertools.permutations(range(1, k + 1))))
  best = 0
  for combo in itertools.combinations_with_replacement(range(len(perms)), num_settings - 1):
    ranks = np.concatenate([perms[:1], perms[list(combo)]])
    best = max(best, int((ranks.max(axis=0) - ranks.min(axis=0)).sum()))
  return best / k


@pytest.mark.parametrize(
  'k, num_settings', [(k, n) for k in (2, 3, 4) for n in (2, 3, 4, 5)] + [(5, 2), (5, 3)]
)
def test_max_thc_matches_brute_force(k, num_settings):
  expected = _brute_force_max_mean_spread(k, num_settings)
  assert thc.max_thc(k, num_settings, 'none') == pytest.approx(expected)
  assert thc.max_thc(k, num_settings, 'k-1') == pytest.approx(expected / (k - 1))
  assert thc.max_thc(k, num_settings, 'k') == pytest.approx(expected / k)


def _extremal_rankings(k: int, num_settings: int) -> np.ndarray:
  """The module docstring's construction: setting s puts class s (i mod n == s) on top, class s + 1 at the
  bottom (both in increasing i), the rest in between."""
  ranks = np.zeros((num_settings, k))
  for s in range(num_settings):
    top = [i for i in range(k) if i % num_settings == s]
    bottom = [i for i in range(k) if i % num_settings == (s + 1) % num_settings]
    order = top + [i for i in range(k) if i not in top and i not in bottom] + bottom[::-1]
    ranks[s, order] = np.arange(1, k + 1)
  return ranks


def test_max_thc_is_attained_by_the_construction():
  for k, num_settings in itertools.product(range(2, 10), range(2, 12)):
    ranks = _extremal_rankings(k, num_settings)
    assert thc.thc_from_ranks(ranks, 'k-1') == pytest.approx(thc.max_thc(k, num_settings, 'k-1'))


def test_max_thc_closed_forms():
  for k in range(2, 9):
    assert thc.max_thc(k, 2, 'none') == pytest.approx((k * k // 2) / k)  # floor(k^2 / 2) / k
    assert thc.max_thc(k, k, 'k-1') == 1.0  # Every value first somewhere and last elsewhere.


def test_thc_rejects_bad_inputs():
  with pytest.raises(ConfigError, match="unknown normalization 'k\\+1'"):
    thc.thc_from_ranks([[1.0, 2.0], [2.0, 1.0]], 'k+1')
  with pytest.raises(ConfigError, match='unknown normalization'):
    thc.max_thc(3, 2, 'K')
  with pytest.raises(ConfigError, match='>= 2 settings'):
    thc.thc_from_ranks([[1.0, 2.0]])
  with pytest.raises(ConfigError, match='>= 2 values'):
    thc.thc_from_ranks([[1.0], [1.0]])
  with pytest.raises(ConfigError, match='>= 2 settings'):
    thc.max_thc(4, 1)


# ---------------------------------------------------------------------------
# IQM and bootstrap interval.
# ---------------------------------------------------------------------------


def test_performance_ci_on_known_data():
  assert thc.performance_ci(np.full((3, 2), 2.5), seed=0, reps=50) == (2.5, 2.5, 2.5)
  # 8 entries, 2 cut from each end: IQM = mean(3, 4, 5, 6) = 4.5 whatever the outlier.
  scores = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 100.0]])
  point, low, high = thc.performance_ci(scores, seed=3, reps=200)
  assert point == pytest.approx(4.5)
  assert 1.0 <= low <= high <= 100.0
  assert thc.performance_ci(scores, seed=3, reps=200) == (point, low, high)  # Same seed, same interval.


def test_bootstrap_seed_is_a_crc_of_the_cell():
  seed = thc.bootstrap_seed('agents', 'low', 'learning_rate', '0.001', 'DER')
  assert seed == 0x_FFFF_FFFF & seed  # An unsigned 32-bit int, usable by numpy.random.default_rng.
  assert seed == thc.bootstrap_seed('agents', 'low', 'learning_rate', '0.001', 'DER')
  others = {
    thc.bootstrap_seed('agents', 'low', 'learning_rate', '0.001', 'DrQ_eps'),
    thc.bootstrap_seed('agents', 'high', 'learning_rate', '0.001', 'DER'),
    thc.bootstrap_seed('agents', 'low', 'learning_rate', '0.01', 'DER'),
    thc.bootstrap_seed('games', 'low', 'learning_rate', '0.001', 'DER'),
  }
  assert seed not in others and len(others) == 4


# ---------------------------------------------------------------------------
# The three axes on synthetic results.
# ---------------------------------------------------------------------------


def test_value_order():
  assert thc.value_order(['0.001', '0.0001', '1e-2', '0.001']) == ['0.0001', '0.001', '1e-2']
  assert thc.value_order(['relu', 'tanh', 'relu', 'gelu']) == ['relu', 'tanh', 'gelu']
  assert thc.value_order(['8', 'none', '2']) == ['8', 'none', '2']  # Not all numbers: first seen.


def test_compute_thc_on_each_axis():
  rows = _rows()
  agents = thc.compute_thc(rows, 'agents', reps=200)
  assert _thcs(agents) == pytest.approx(
    {
      ('high', 'activation'): 2 / 3,
      ('high', 'learning_rate'): 0.0,
      ('low', 'activation'): 2 / 3,
      ('low', 'learning_rate'): 0.0,
    }
  )
  entry = _entry(agents, 'agents', 'low', 'activation')
  assert entry['settings'] == ['DER', 'DrQ_eps'] and entry['values'] == ['relu', 'tanh', 'gelu']
  assert entry['ranks'] == [[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]
  assert entry['games'] == ['G1', 'G2'] and entry['dropped_values'] == []
  # DER, relu on normalized scores: G1 1.00, 1.0001, 1.0002 and G2 0.03, 0.0301, 0.0302; 6 entries, 1 cut
  # from each end -> mean(0.0301, 0.0302, 1.0, 1.0001).
  assert entry['iqm'][0][0] == pytest.approx((0.0301 + 0.0302 + 1.0 + 1.0001) / 4)
  assert entry['low'][0][0] <= entry['iqm'][0][0] <= entry['high'][0][0]
  assert entry['num_seeds'] == [[3, 3, 3], [3, 3, 3]]

  regimes = thc.compute_thc(rows, 'regimes', reps=200)
  assert _thcs(regimes) == {
    ('DER', 'activation'): 0.0,
    ('DER', 'learning_rate'): 0.0,
    ('DrQ_eps', 'activation'): 0.0,
    ('DrQ_eps', 'learning_rate'): 0.0,
  }
  assert _entry(regimes, 'regimes', 'DER', 'learning_rate')['settings'] == ['high', 'low']

  games = thc.compute_thc(rows, 'games', reps=200)
  contexts = ['DER/high', 'DER/low', 'DrQ_eps/high', 'DrQ_eps/low']
  assert [e['context'] for e in games] == [c for c in contexts for _ in range(2)]
  for e in games:
    assert e['thc'] == pytest.approx(2 / 3 if e['hyperparameter'] == 'activation' else 0.0)
  entry = _entry(games, 'games', 'DrQ_eps/low', 'learning_rate')
  assert entry['settings'] == ['G1', 'G2'] and entry['values'] == ['0.0001', '0.001', '0.01']
  assert entry['ranks'] == [[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]]
  # Raw scores of one game: 3 entries, none cut -> the plain mean 10.01.
  assert entry['iqm'][0][0] == pytest.approx(10.01)

  entries = agents + regimes + games
  summary = thc.summarize_thc(entries)
  assert summary['by_axis'] == pytest.approx({'agents': 1 / 3, 'regimes': 0.0, 'games': 1 / 3})
  assert summary['num_entries'] == {'agents': 4, 'regimes': 4, 'games': 8}
  assert summary['by_hyperparameter']['games'] == pytest.approx({'activation': 2 / 3, 'learning_rate': 0.0})
  assert thc.ranking(entries, 'agents') == [('activation', pytest.approx(2 / 3)), ('learning_rate', 0.0)]


def test_compute_thc_drops_a_value_missing_from_one_setting_and_uses_uneven_seeds():
  rows = [
    r for r in _rows() if (r['agent'], r['regime'], r['game'], r['value']) != ('DrQ_eps', 'low', 'G2', 'gelu')
  ]
  extra = dict(rows[0], agent='DER', regime='high', game='G1', hyperparameter='learning_rate', value='0.01')
  rows.append(dict(extra, seed=3, score=30.03, normalized_score=0.3003))

  agents = thc.compute_thc(rows, 'agents', reps=200)
  low = _entry(agents, 'agents', 'low', 'activation')
  assert low['values'] == ['relu', 'tanh'] and low['dropped_values'] == ['gelu']
  assert low['ranks'] == [[2.0, 1.0], [1.0, 2.0]] and low['thc'] == 1.0  # k = 2: Delta 1, 1 over k - 1.
  assert _entry(agents, 'agents', 'high', 'activation')['dropped_values'] == []
  # DER/high pools G1 and G2 over the seeds present in both: 3, not 4.
  assert _entry(agents, 'agents', 'high', 'learning_rate')['num_seeds'][0] == [3, 3, 3]

  games = thc.compute_thc(rows, 'games', reps=200)
  entry = _entry(games, 'games', 'DrQ_eps/low', 'activation')
  assert entry['dropped_values'] == ['gelu'] and entry['thc'] == 1.0
  assert _entry(games, 'games', 'DER/high', 'learning_rate')['num_seeds'] == [[3, 3, 4], [3, 3, 3]]

  regimes = thc.compute_thc(rows, 'regimes', reps=200)
  entry = _entry(regimes, 'regimes', 'DrQ_eps', 'activation')
  assert entry['dropped_values'] == ['gelu'] and entry['thc'] == 0.0


def test_compute_thc_skips_contexts_with_one_setting_or_value():
  rows = [r for r in _rows() if r['agent'] == 'DER']
  assert thc.compute_thc(rows, 'agents', reps=10) == []  # One agent: no setting to compare with.
  rows = [r for r in _rows() if r['value'] in ('relu', '0.001') or r['agent'] == 'DER']
  assert {e['hyperparameter'] for e in thc.compute_thc(rows, 'agents', reps=10)} == set()


def test_compute_thc_rejects_bad_options():
  with pytest.raises(ConfigError, match="unknown normalization 'k-2'"):
    thc.compute_thc(_rows(), 'agents', normalization='k-2')
  with pytest.raises(ConfigError, match="unknown axis 'seeds'"):
    thc.compute_thc(_rows(), 'seeds')
  with pytest.raises(ConfigError, match='unknown ties'):
    thc.compute_thc(_rows(), 'games', ties='mean')


# ---------------------------------------------------------------------------
# The CSV.
# ---------------------------------------------------------------------------


def test_csv_round_trip_and_bit_identical_thc(tmp_path):
  rows = _rows()
  random.Random(0).shuffle(rows)  # Activations now first seen in another order than ACTIVATIONS.
  order = list(dict.fromkeys(r['value'] for r in rows if r['hyperparameter'] == 'activation'))
  before = {axis: thc.compute_thc(rows, axis) for axis in thc.AXES}
  assert before['games'][0]['values'] == order

  path = str(tmp_path / 'sweep.csv')
  thc.write_csv(path, rows)
  assert not (tmp_path / 'sweep.csv.tmp').exists()
  read = thc.read_csv(path)
  key = lambda r: tuple(r[c] for c in thc.KEY_COLUMNS)  # noqa: E731
  assert sorted(read, key=key) == sorted(rows, key=key)  # Exact floats, int seeds, same keys.
  assert all(list(r) == list(thc.COLUMNS) for r in read)
  assert isinstance(read[0]['seed'], int) and isinstance(read[0]['score'], float)
  assert [r['value'] for r in read[:3]] == [order[0]] * 3  # Sorted by value order, then agent, ...
  again = str(tmp_path / 'again.csv')
  thc.write_csv(again, read)
  assert (tmp_path / 'again.csv').read_bytes() == (
    tmp_path / 'sweep.csv'
  ).read_bytes()  # Writing what was read gives the same file.

  after = {axis: thc.compute_thc(read, axis) for axis in thc.AXES}
  assert after == before  # ==, not approx: iqm, low, high, ranks, thc and value orders are bit-identical.


def test_thc_table_csv(tmp_path):
  entries = thc.compute_thc(_rows(), 'agents', reps=50)
  path = thc.thc_table_csv(str(tmp_path / 'thc_ranks.csv'), entries)
  with open(path, newline='') as f:
    table = list(csv.DictReader(f))
  assert len(table) == 4 * 2 * 3  # entries x settings x values
  assert tuple(table[0]) == thc.TABLE_COLUMNS
  first, entry = table[0], entries[0]
  assert (first['context'], first['hyperparameter'], first['setting'], first['value']) == (
    'high',
    'activation',
    'DER',
    'relu',
  )
  assert float(first['iqm']) == entry['iqm'][0][0] and float(first['high']) == entry['high'][0][0]
  assert float(first['rank']) == 3.0 and float(first['thc']) == entry['thc']


def _write(path, text):
  path.write_text(text)
  return str(path)


HEADER = ','.join(thc.COLUMNS) + '\n'
LINE = 'DER,low,G1,learning_rate,0.001,0,1.5,0.25,default\n'


def test_read_csv_errors(tmp_path):
  cases = [
    (str(tmp_path / 'absent.csv'), 'not found'),
    (_write(tmp_path / 'empty.csv', ''), 'is empty'),
    (_write(tmp_path / 'header.csv', HEADER), 'header but no rows'),
    (_write(tmp_path / 'missing.csv', HEADER.replace(',run_id', '') + LINE), "lacks column 'run_id'"),
    (_write(tmp_path / 'unknown.csv', HEADER[:-1] + ',note\n' + LINE[:-1] + ',x\n'), "unknown column 'note'"),
    (
      _write(tmp_path / 'score.csv', HEADER + LINE + LINE.replace(',0,1.5,', ',1,abc,')),
      "line 3: score 'abc'",
    ),
    (_write(tmp_path / 'nan.csv', HEADER + LINE.replace('0.25', 'nan')), 'line 2: normalized_score is nan'),
    (_write(tmp_path / 'seed.csv', HEADER + LINE.replace(',0,1.5', ',x,1.5')), "line 2: seed 'x'"),
    (_write(tmp_path / 'fields.csv', HEADER + 'DER,low\n'), 'line 2 has 2 fields'),
    (_write(tmp_path / 'dup.csv', HEADER + LINE + LINE.replace('1.5', '2.5')), 'line 3 repeats .*line 2'),
  ]
  for path, message in cases:
    with pytest.raises(thc.ResultsError, match=message) as info:
      thc.read_csv(path)
    assert isinstance(info.value, ConfigError) and '\n' not in str(info.value)


def test_write_csv_errors(tmp_path):
  row = _rows()[0]
  path = str(tmp_path / 'out.csv')
  with pytest.raises(thc.ResultsError, match='has no rows'):
    thc.write_csv(path, [])
  with pytest.raises(thc.ResultsError, match="lacks column 'run_id'"):
    thc.write_csv(path, [{k: v for k, v in row.items() if k != 'run_id'}])
  with pytest.raises(thc.ResultsError, match=r'\[1\] repeats .*\[0\]'):
    thc.write_csv(path, [row, dict(row, score=0.0)])
  with pytest.raises(thc.ResultsError, match='score is inf'):
    thc.write_csv(path, [dict(row, score=float('inf'))])
  assert not (tmp_path / 'out.csv').exists()
