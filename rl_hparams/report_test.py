"""Tests for rl_hparams/report.py on a tiny sweep: 2 agents, 1 regime, 2 games, 2 x 2 values, 2 seeds."""

import itertools
import os

import pytest

from rl_hparams import report, thc

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'

# (agent, game, value) -> score of seed 0 (seed 1 adds 0.01). learning_rate: 1e-3 beats 1e-4 everywhere.
# activation: tanh beats relu in G1 and loses in G2 (reversed across games); pooled over games the large G1
# scores decide for DER (tanh) and the large G2 scores for DrQ_eps (relu): reversed across agents too.
SCORES = {
  ('DER', 'G1', 'relu'): 10.0,
  ('DER', 'G1', 'tanh'): 20.0,
  ('DER', 'G2', 'relu'): 2.0,
  ('DER', 'G2', 'tanh'): 1.0,
  ('DrQ_eps', 'G1', 'relu'): 1.0,
  ('DrQ_eps', 'G1', 'tanh'): 2.0,
  ('DrQ_eps', 'G2', 'relu'): 20.0,
  ('DrQ_eps', 'G2', 'tanh'): 10.0,
}


def _rows():
  rows = []
  for agent, game, seed in itertools.product(('DER', 'DrQ_eps'), ('G1', 'G2'), (0, 1)):
    for hyperparameter, value in [
      ('learning_rate', '0.001'),
      ('learning_rate', '0.0001'),
      ('activation', 'relu'),
      ('activation', 'tanh'),
    ]:
      if hyperparameter == 'learning_rate':
        score = 2.0 if value == '0.001' else 1.0
      else:
        score = SCORES[agent, game, value]
      score += 0.01 * seed
      rows.append(
        dict(
          agent=agent,
          regime='low',
          game=game,
          hyperparameter=hyperparameter,
          value=value,
          seed=seed,
          score=score,
          normalized_score=score / 10.0,
          run_id='default' if value in ('0.0001', 'relu') else f'{hyperparameter}={value}',
        )
      )
  return rows


@pytest.fixture(scope='module')
def entries():
  rows = _rows()
  return [e for axis in thc.AXES for e in thc.compute_thc(rows, axis, reps=50)]


def test_write_report_files_and_numbers(tmp_path, entries):
  thcs = {(e['axis'], e['context'], e['hyperparameter']): e['thc'] for e in entries}
  assert thcs == {
    ('agents', 'low', 'activation'): 1.0,
    ('agents', 'low', 'learning_rate'): 0.0,
    ('games', 'DER/low', 'activation'): 1.0,
    ('games', 'DER/low', 'learning_rate'): 0.0,
    ('games', 'DrQ_eps/low', 'activation'): 1.0,
    ('games', 'DrQ_eps/low', 'learning_rate'): 0.0,
  }  # One regime: no 'regimes' entries.
  workdir = str(tmp_path / 'out')
  claims = '| claim | measured |\n|---|---|\n| B2 | pass |'
  written = report.write_report(workdir, entries, _rows(), claims_md=claims, title='THC on a toy sweep')
  assert written == [
    'thc_agents.png',
    'ranks_agents_low.png',
    'thc_games.png',
    'ranks_games_DER_low.png',
    'ranks_games_DrQ_eps_low.png',
    'report.md',
  ]
  assert sorted(os.listdir(workdir)) == sorted(written)  # Nothing else, no temporary file left.
  for name in written[:-1]:
    with open(os.path.join(workdir, name), 'rb') as f:
      assert f.read(8) == PNG_SIGNATURE

  text = (tmp_path / 'out' / 'report.md').read_text()
  assert text.startswith('# THC on a toy sweep\n') and claims in text
  assert '| agents | 2 | 0.500 |' in text and '| games | 4 | 0.500 |' in text  # Mean THC per axis.
  assert '| activation | 1.000 | 1.000 |' in text and '| learning_rate | 0.000 | 0.000 |' in text
  assert '| activation | 1.000 | 1.000 |' in text.split('per context')[2]  # games: DER/low, DrQ_eps/low.
  # games, DER/low, learning_rate, G1: seeds 1.0 and 1.01 -> IQM 1.005 (2 entries, none cut), rank 2 of 2.
  assert '| G1 | 1.005 [1, 1.01] (rank 2) | 2.005 [2, 2.01] (rank 1) |' in text
  for name in written[:-1]:
    assert f'![{name}]({name})' in text
  assert '- 32 rows from 24 training runs' in text  # 2 agents x 2 games x 2 seeds x 3 run ids.
  assert '  - learning_rate: 0.0001, 0.001' in text


def test_write_report_links_the_ranks_table_and_handles_no_entries(tmp_path, entries):
  workdir = str(tmp_path)
  thc.thc_table_csv(os.path.join(workdir, report.RANKS_TABLE_FILE), entries)
  report.write_report(workdir, entries, _rows(), title='t')
  assert f'[{report.RANKS_TABLE_FILE}]({report.RANKS_TABLE_FILE})' in (tmp_path / 'report.md').read_text()

  empty = tmp_path / 'empty'
  assert report.write_report(str(empty), [], _rows(), title='nothing') == ['report.md']
  assert 'No THC entries' in (empty / 'report.md').read_text()


def test_names_and_formats():
  assert report.safe_name('DrQ_eps/low') == 'DrQ_eps_low'
  assert report.safe_name('a b/c:d') == 'a_b_c_d'
  assert report.format_thc(2 / 3) == '0.667'
