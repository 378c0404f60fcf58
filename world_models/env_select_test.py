"""The environment selector: names, the one-line error, and the interface both environments share."""

import pytest

from common.errors import ConfigError
from world_models import env_select
from world_models import envs
from world_models import stickman
from world_models import train
from world_models import vlm
from world_models.configs import default
from world_models.configs import gpu

# What train.py and vlm.py call on the chosen module.
INTERFACE = (
  'reset',
  'step',
  'render',
  'AGENT_LOOK',
  'VLM_LOOK',
  'ACTION_DIM',
  'TASKS',
  'check_prompt',
  'task_reward',
  'expert_action',
  'collect',
  'CAPTIONS',
  'caption_index',
  'clip_start',
  'VOCAB',
)


def test_names_pick_modules_and_unknown_is_one_line():
  assert env_select.module('arm') is envs and env_select.module('stickman') is stickman
  with pytest.raises(ConfigError, match="unknown env.name 'stickmen'; did you mean 'stickman'") as info:
    env_select.module('stickmen')
  assert '(valid: arm, stickman)' in str(info.value) and '\n' not in str(info.value)


@pytest.mark.parametrize('name,action_dim', [('arm', 2), ('stickman', 8)])
def test_shared_interface_and_words(name, action_dim):
  env = env_select.module(name)
  missing = [f for f in INTERFACE if not hasattr(env, f)]
  assert not missing, missing
  assert env.ACTION_DIM == action_dim
  # Every prompt is also a caption (the VLM learns its words and ranks decoded targets among the prompts).
  assert set(env.TASKS) <= set(env.CAPTIONS)
  tokens = vlm.Tokenizer(env.VOCAB).encode(list(env.CAPTIONS))
  assert tokens.shape == (len(env.CAPTIONS), vlm.MAX_WORDS) and tokens.max() < len(env.VOCAB)


@pytest.mark.parametrize('module', [default, gpu], ids=['default_config', 'gpu_config'])
def test_stickman_config_switch(module):
  assert module.get_config().env.name == module.get_config('smoke').env.name == 'arm'
  full, smoke = module.get_config('stickman'), module.get_config('smoke,stickman')
  assert full.env.name == smoke.env.name == 'stickman'
  assert full.behaviour.prompts == tuple(stickman.TASKS)
  assert smoke.behaviour.prompts == ('stickman arms up',)
  # Only the environment and the prompts differ from the arm's config.
  for stick, arm in ((full, module.get_config()), (smoke, module.get_config('smoke'))):
    stick, arm = stick.to_dict(), arm.to_dict()
    for c in (stick, arm):
      del c['env']['name'], c['behaviour']['prompts']
    assert stick == arm
  train.validate(full)
  train.validate(smoke)


@pytest.mark.parametrize(
  'arg,env_name,prompts,match',
  [
    ('smoke', 'arm', ('stickman standing',), r"unknown task prompt 'stickman standing'.*\(env.name='arm'\)"),
    (
      'smoke,stickman',
      'stickman',
      ('arm pointing up',),
      r"unknown stickman task prompt 'arm pointing up'.*\(env.name='stickman'\)",
    ),
    ('smoke', 'walker', ('arm pointing up',), "unknown env.name 'walker'"),
  ],
)
def test_prompts_are_checked_against_the_chosen_environment(arg, env_name, prompts, match):
  c = default.get_config(arg)
  c.env.name, c.behaviour.prompts = env_name, prompts
  with pytest.raises(ConfigError, match=match) as info:
    train.validate(c)
  assert '\n' not in str(info.value)


def test_gpu_config_prompts_option():
  # `prompts=` ('+'-joined) replaces the environment's prompts (tools/parallel_methods.sh's split check).
  config = gpu.get_config('smoke,prompts=arm pointing up + arm folded')
  assert config.behaviour.prompts == ('arm pointing up', 'arm folded')
  train.validate(config)
  with pytest.raises(ConfigError, match="unknown task prompt 'arm waving'"):
    train.validate(gpu.get_config('smoke,prompts=arm waving'))
