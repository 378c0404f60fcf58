"""The environment of a run, chosen by `config.env.name`: 'arm' (`envs.py`, pure JAX) or 'stickman'
(`stickman.py`, MuJoCo MJX; imported only when chosen, so arm runs never load MuJoCo).

Both modules have one interface, which train.py and vlm.py use through `module(name)`: `reset`, `step`,
`render`, `AGENT_LOOK` / `VLM_LOOK`, `ACTION_DIM`, `TASKS` / `check_prompt` / `task_reward`,
`expert_action`, `collect`, `CAPTIONS` / `caption_index(state)`, `clip_start` (the VLM's clip starts) and
`VOCAB` (the VLM tokenizer's words).
"""

from __future__ import annotations

import importlib

from common import config as config_lib
from common.errors import ConfigError

MODULES = {'arm': 'world_models.envs', 'stickman': 'world_models.stickman'}


def module(name: str):
  """The environment module of `name`; an unknown name is a one-line ConfigError listing the valid ones."""
  if name not in MODULES:
    raise ConfigError(config_lib.unknown_name_message('env.name', str(name), MODULES))
  return importlib.import_module(MODULES[name])
