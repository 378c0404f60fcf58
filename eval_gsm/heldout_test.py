"""Held-out compositions: the combination split, the training texts it leaves, the held-out models' pairs."""

import pytest

from common import config as config_lib
from common.errors import ConfigError
from eval_gsm import heldout, lm, pairs as pairs_lib, prompts, templates, train
from eval_gsm.configs import default

NAMES = sorted(templates.TEMPLATES)


def _prompt(split, pair):
  return prompts.render_prompt(split, pair, None, style='completion', mode='cot', shots=0)


def test_q2_template_split_holds_out_every_combination_into_half_the_templates():
  held = heldout.heldout_combinations('q2_template', 0.5, seed=0)
  q2s = {b for _, b in held}
  assert len(q2s) == len(NAMES) // 2
  assert held == {(a, b) for a in NAMES for b in q2s if a != b}  # Any Q1 with a held-out Q2.
  assert held == heldout.heldout_combinations('q2_template', 0.5, seed=0)  # Deterministic.
  assert held != heldout.heldout_combinations('q2_template', 0.5, seed=1)


def test_template_pair_split_holds_out_a_share_of_ordered_combinations():
  combos = heldout.all_combinations(NAMES)
  held = heldout.heldout_combinations('template_pair', 0.25, seed=3)
  assert held < combos and len(held) == round(0.25 * len(combos))
  # Every template is still the Q2 of some trained composition.
  assert {b for _, b in combos - held} == set(NAMES)


@pytest.mark.parametrize(
  'by,fraction,message',
  [('q1', 0.5, 'heldout.by'), ('q2_template', 1.0, 'in \\(0, 1\\)'), ('q2_template', 0.01, 'holds out 0')],
)
def test_bad_splits_are_one_line_errors(by, fraction, message):
  with pytest.raises(ConfigError, match=message):
    heldout.heldout_combinations(by, fraction, seed=0)


def test_training_texts_leave_out_held_out_compositions_but_keep_their_singles():
  held = heldout.heldout_combinations('q2_template', 0.5, seed=0)
  pairs = pairs_lib.build_pairs(60, seed=11)
  mix = {'q1': 1.0, 'q2': 1.0, 'comp': 1.0, 'indep': 1.0}
  texts = {prompt for prompt, _ in lm.training_texts(pairs, mix, seed=0, comp_excluded=held)}
  heldout_pairs = [p for p in pairs if pairs_lib.template_combination(p) in held]
  trained_pairs = [p for p in pairs if pairs_lib.template_combination(p) not in held]
  assert heldout_pairs and trained_pairs
  assert not any(_prompt('comp', p) in texts for p in heldout_pairs)  # No held-out composition trained,
  assert all(_prompt('comp', p) in texts for p in trained_pairs)  # the others all are,
  for p in heldout_pairs:  # and the held-out templates' single problems (and indep, which has no X) stay.
    assert {_prompt('q1', p), _prompt('q2', p), _prompt('indep', p)} <= texts
  # Without exclusions the texts are the in-repo LM's, draw for draw.
  everything = lm.training_texts(pairs, mix, seed=0)
  assert len(everything) == len(texts) + len(heldout_pairs)


def test_each_held_out_model_gets_pairs_of_its_own_combinations(tmp_path):
  config = default.get_config('smoke')
  config.heldout.num_pairs = 12
  held, trained = heldout.combinations_of(config)
  built = heldout.test_pairs(config, str(tmp_path))
  assert {len(v) for v in built.values()} == {12}
  assert all(pairs_lib.template_combination(p) in held for p in built[heldout.HELDOUT])
  assert all(pairs_lib.template_combination(p) in trained for p in built[heldout.SEEN])
  assert heldout.test_pairs(config, str(tmp_path)) == built  # Read back from models/<name>/pairs.jsonl.
  assert (tmp_path / 'models' / heldout.HELDOUT / heldout.PAIRS_FILE).exists()
  assert train.pairs_for(config, str(tmp_path), heldout.HELDOUT, []) == built[heldout.HELDOUT]
  assert train.pairs_for(config, str(tmp_path), 'inrepo', ['shared']) == ['shared']


@pytest.mark.parametrize('arg', [None, 'smoke'])
def test_config_loads_with_the_held_out_models(arg):
  config = default.get_config(arg)
  assert set(heldout.MODELS) <= set(config.models)
  train.validate(config)
  assert config_lib.to_dict(config)['heldout']['by'] == 'q2_template'
  lm_config = heldout.lm_config(config)
  assert lm_config.steps == config.heldout.lm_steps
  assert {**lm_config.to_dict(), 'steps': config.lm.steps} == config.lm.to_dict()  # Only the steps differ.


@pytest.mark.parametrize(
  'key,value,message',
  [
    ('heldout.fraction', 0.0, 'heldout.fraction'),
    ('heldout.by', 'q1_template', 'heldout.by'),
    ('heldout.num_pairs', 0, 'heldout.num_pairs'),
    ('gsm8k_path', __file__, 'need generated pairs'),
  ],
)
def test_bad_held_out_configs_are_one_line_errors(key, value, message):
  config = default.get_config('smoke')
  config.update_from_flattened_dict({key: value})
  with pytest.raises(ConfigError, match=message):
    train.validate(config)
