"""The `smoke` experiment end to end, read-back of finished stages, resumption, bad configs."""

import json
import os

import pytest

from common import metrics as metrics_lib
from common import results
from common.errors import ConfigError
from llm_rl import rl as rl_lib
from llm_rl import train
from llm_rl.configs import default


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('llm_rl_smoke'))
  config = default.get_config('smoke,methods=vineppo+ppo')
  extra = train.train_and_evaluate(config, workdir)
  return config, workdir, extra


def test_smoke_claims_and_outputs(smoke_run):
  _, workdir, extra = smoke_run
  saved = results.read_results(workdir)
  assert saved['experiment'] == 'smoke'
  assert all(c.passed for c in saved['claims']), [c for c in saved['claims'] if not c.passed]
  names = {c.name for c in saved['claims']}
  assert {'vineppo: every loss finite', 'ppo: every loss finite'} <= names
  for plot in saved['plots']:
    assert os.path.exists(os.path.join(workdir, plot))
  assert set(extra['runs']) == {'vineppo', 'ppo'}
  assert extra['runs']['vineppo']['grad_steps'] == 2 and len(extra['runs']['ppo']['accuracy_curve']) == 2
  value = extra['value_analysis']
  assert {'mae_mc_k1', 'mae_mc_k2', 'mae_critic'} <= set(value) and value['num_states'] >= 1
  assert 'top1_critic' in extra['ranking']
  t = extra['runs']['vineppo']['time_per_iteration']
  assert set(t) == {'sample', 'values', 'update'} and min(t.values()) > 0


def test_a_finished_run_is_read_back(smoke_run, monkeypatch):
  config, workdir, extra = smoke_run

  def no_training(*args, **kwargs):
    raise AssertionError('a finished stage ran again')

  monkeypatch.setattr(rl_lib, 'iteration', no_training)
  again = train.train_and_evaluate(config, workdir)
  assert json.dumps(again['runs'], sort_keys=True) == json.dumps(extra['runs'], sort_keys=True)
  assert again['value_analysis'] == extra['value_analysis']


def test_an_interrupted_rl_run_resumes_like_an_uninterrupted_one(smoke_run, tmp_path, monkeypatch):
  config, workdir, _ = smoke_run
  config = default.get_config('smoke,methods=grpo')
  config.analysis.enabled = False
  config.sft.dir = os.path.join(workdir, 'sft')  # Both runs start from the smoke run's SFT, read back.
  train.train_and_evaluate(config, str(tmp_path / 'straight'))

  real, calls = rl_lib.iteration, []

  def crash_on_second(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt
    return real(*args, **kwargs)

  monkeypatch.setattr(rl_lib, 'iteration', crash_on_second)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, str(tmp_path / 'broken'))
  monkeypatch.setattr(rl_lib, 'iteration', real)
  train.train_and_evaluate(config, str(tmp_path / 'broken'))

  def rows(name):
    out = metrics_lib.read_metrics(str(tmp_path / name / 'rl' / 'grpo'))
    return [{k: v for k, v in r.items() if 'time' not in k and 'wall' not in k} for r in out]

  assert rows('straight') == rows('broken') and len(rows('broken')) == 3  # Iteration 0 (eval), 1, 2.


def test_a_shared_sft_dir_refuses_other_settings(smoke_run, tmp_path):
  _, workdir, _ = smoke_run
  config = default.get_config('smoke,methods=grpo')
  config.sft.dir = os.path.join(workdir, 'sft')
  config.model.d_model = 64
  with pytest.raises(ConfigError, match='was made with other model_and_sft settings; use another sft.dir'):
    train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize(
  'arg, words',
  [
    ('smoke,methods=vineppo+dpo', "unknown method 'dpo'"),
    ('smoke,methods=', 'methods is empty'),
  ],
)
def test_bad_configs(arg, words, tmp_path):
  with pytest.raises(ConfigError, match=words):
    train.train_and_evaluate(default.get_config(arg), str(tmp_path))


def test_a_layout_too_small_for_the_prompts_fails_before_training(tmp_path):
  config = default.get_config('smoke')
  config.layout.prompt_len = 20
  with pytest.raises(ConfigError, match='more than prompt_len = 20'):
    train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.slow
def test_smollm2_config_runs_one_iteration_of_vineppo_and_ppo(tmp_path):
  """The pretrained path end to end on CPU (minutes: SmolLM2 loads and compiles its 30 layers)."""
  from llm_rl.configs import smollm2

  config = smollm2.get_config()
  config.task.update({'n_train': 8, 'n_test': 4})
  config.layout.update({'prompt_len': 128, 'response_len': 24})
  config.rl.update(
    {
      'iterations': 1,
      'prompts_per_iteration': 2,
      'samples_per_prompt': 2,
      'minibatch_size': 4,
      'num_rollouts': 2,
      'max_value_steps': 2,
      'sample_batch': 4,
      'eval_every': 1,
      'eval_problems': 2,
      'checkpoint_every': 1,
    }
  )
  config.model.bf16 = False
  config.analysis.enabled = False
  extra = train.train_and_evaluate(config, str(tmp_path))
  assert extra['sft'] == {'skipped': True, 'test_accuracy': extra['sft']['test_accuracy']}
  assert extra['num_params'] > 100_000_000
  for method in ('vineppo', 'ppo'):
    assert (
      extra['runs'][method]['all_losses_finite'] and extra['runs'][method]['grad_steps'] == 2
    )  # 2 epochs.


@pytest.mark.parametrize('spread, void', [(0.0, True), (0.3, False), (None, True)])
def test_value_claims_are_void_when_every_outcome_is_certain(spread, void):
  # A collapsed policy (every state surely lost) makes every estimator exact: such a comparison must fail.
  # So must an analysis saved without its spread (None: the key is missing).
  sft_summary = {'skipped': True, 'test_accuracy': 0.5}
  value = {'truth_rollouts': 256, 'mae_mc_k9': 0.0, 'mae_critic': 0.01}
  if spread is not None:
    value['truth_spread'] = spread
  claims = train.make_claims(sft_summary, {}, value, smoke=False)
  value_claims = [c for c in claims if 'MAE' in c.name]
  assert len(value_claims) == 2
  assert all(c.passed == (not void) for c in value_claims)
  assert all(('invalid' in c.name) == void for c in value_claims)
