"""Tests of the lr selection on id_val: it follows id_val, not the test splits; old runs stay readable."""

import glob
import json
import os

import ml_collections
import pytest

from clip_saft import select
from clip_saft.configs import default
from common import config as config_lib
from common import results
from common.errors import ConfigError

HERE = os.path.dirname(__file__)


def write_run(path, lr, saft_lr, rows, shots=16):
  config = config_lib.to_dict(default.get_config())
  config['finetune'].update(lr=lr, saft_lr=saft_lr)
  config['data']['shots'] = shots
  results.write_json(os.path.join(path, 'config.json'), config)
  results.write_results(str(path), project='clip_saft', experiment='gpu', claims=[], extra={'rows': rows})


def row(id_val, id_test, ood):
  return {'id': id_test, 'ood': ood, 'id_val': id_val, 'splits': {'id_test': id_test, 'id_val': id_val}}


@pytest.fixture
def sweep(tmp_path):
  """Three lrs. Full FT: lr 1e-5 has the best id_val, 1e-4 the best ID and OOD test accuracy. SAFT: saft_lr
  3e-4 has the best id_val, 1e-3 the best test accuracy. Zero-shot is the same everywhere."""
  zs = row(0.70, 0.71, 0.70)
  runs = {
    'a': (
      1e-5,
      1e-3,
      {'zero_shot': zs, 'full_ft': row(0.80, 0.76, 0.66), 'saft@0.001': row(0.74, 0.80, 0.72)},
    ),
    'b': (
      1e-4,
      3e-4,
      {'zero_shot': zs, 'full_ft': row(0.78, 0.82, 0.69), 'saft@0.001': row(0.79, 0.75, 0.70)},
    ),
    'c': (
      3e-5,
      1e-4,
      {'zero_shot': zs, 'full_ft': row(0.75, 0.74, 0.64), 'saft@0.001': row(0.72, 0.72, 0.71)},
    ),
  }
  for name, (lr, saft_lr, rows) in runs.items():
    write_run(tmp_path / name, lr, saft_lr, rows)
  return [str(tmp_path / name) for name in runs]


def test_selection_follows_id_val_not_test_accuracy(sweep):
  runs = [select.load_run(p) for p in sweep]
  chosen = select.select(runs)
  assert chosen['full_ft']['lr'] == 1e-5 and chosen['full_ft']['dirs'] == [sweep[0]]
  assert (chosen['full_ft']['id'], chosen['full_ft']['ood']) == (0.76, 0.66)  # Test numbers of the choice.
  best_test = max(chosen['full_ft']['candidates'], key=lambda c: c['id'])
  assert best_test['lr'] == 1e-4 and best_test['lr'] != chosen['full_ft']['lr']
  assert chosen['saft@0.001']['lr'] == 3e-4 and chosen['saft@0.001']['id_val'] == 0.79
  assert chosen['zero_shot']['lr'] is None and chosen['zero_shot']['candidates'][0]['n_runs'] == 3
  claims = select.claims_at_choice(chosen, ml_collections.ConfigDict(runs[0]['config']))
  c1 = next(c for c in claims if c.name.startswith('C1'))
  assert c1.measured == pytest.approx(0.70 - 0.66)  # SAFT at 3e-4 minus full FT at 1e-5, OOD.
  text = select.report(chosen, runs)
  assert 'full_ft' in text and '1e-05' in text and 'differ' not in text


def test_runs_sharing_an_lr_are_averaged_and_ties_go_to_the_smaller_lr(tmp_path):
  zs = row(0.7, 0.7, 0.7)
  write_run(tmp_path / 'a', 1e-5, 1e-3, {'zero_shot': zs, 'full_ft': row(0.80, 0.7, 0.7)})
  write_run(tmp_path / 'b', 1e-5, 3e-3, {'zero_shot': zs, 'full_ft': row(0.70, 0.7, 0.7)})
  write_run(tmp_path / 'c', 3e-5, 1e-3, {'zero_shot': zs, 'full_ft': row(0.75, 0.9, 0.9)}, shots=64)
  runs = [select.load_run(str(tmp_path / n)) for n in 'abc']
  chosen = select.select(runs)['full_ft']
  assert [(c['lr'], c['n_runs']) for c in chosen['candidates']] == [(1e-5, 2), (3e-5, 1)]
  assert chosen['lr'] == 1e-5 and chosen['id_val'] == pytest.approx(0.75)  # Tie: (0.8 + 0.7) / 2 = 0.75.
  assert 'data.shots' in select.report(select.select(runs), runs)


def test_runs_before_id_val_are_readable_and_not_selected():
  paths = sorted(glob.glob(os.path.join(HERE, 'results', 'gpu_room', 'steps1k_noise30_photo5_*')))
  assert len(paths) == 4
  runs = [select.load_run(p) for p in paths]
  chosen = select.select(runs)
  assert all('skipped' in c for c in chosen.values())
  assert {c['lr'] for c in chosen['full_ft']['candidates']} == {1e-4, 3e-4, 3e-5}
  assert select.claims_at_choice(chosen, ml_collections.ConfigDict(runs[0]['config'])) == []


def test_a_missing_run_is_a_one_line_error(tmp_path):
  with pytest.raises(ConfigError, match='no readable config.json') as info:
    select.load_run(str(tmp_path / 'nowhere'))
  assert '\n' not in str(info.value)
  results.write_json(str(tmp_path / 'x' / 'config.json'), {})
  results.write_json(str(tmp_path / 'x' / 'results.json'), json.loads('{"extra": {}}'))
  with pytest.raises(ConfigError, match='no method rows'):
    select.load_run(str(tmp_path / 'x'))
