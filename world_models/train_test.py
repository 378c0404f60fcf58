"""End to end on a tiny smoke config: results.json, finite metrics, the crafted checks; resume equals an
uninterrupted run; bad configs are one-line ConfigErrors. One compile of each function (cached per config)."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from common import metrics
from common import results
from common.errors import ConfigError
from world_models import train
from world_models import vlm
from world_models.configs import default


def tiny_config():
  c = default.get_config('smoke')
  c.data.num_envs = 8
  c.vlm.steps = 4
  c.wm.update(steps=4, log_every=2, checkpoint_every=2)
  c.behaviour.update(steps=2, log_every=1, checkpoint_every=1)
  c.eval.episodes = 2
  return c


def _rows(path):
  return [{k: v for k, v in r.items() if k != 'time'} for r in metrics.read_metrics(path)]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('wm_run'))
  train.train_and_evaluate(tiny_config(), workdir)
  return workdir


def test_end_to_end_writes_results(run):
  data = results.read_results(os.path.join(run, 'results.json'))
  claims = {c.name: c for c in data['claims']}
  assert claims['all losses finite'].passed
  assert claims['connector loss gradient into the world model (global norm)'].measured == 0.0
  assert claims['alignment index on a crafted score matrix'].passed
  assert claims['data-free start states have the right shapes'].passed
  score = data['extra']['scores']['genrl']['arm pointing up']
  assert np.isfinite(score['normalised_score']) and 0 <= score['target_rank'] < 4
  rows = _rows(os.path.join(run, 'wm'))
  assert [r['step'] for r in rows] == [2, 4]
  assert all(np.isfinite(v) for r in rows for v in r.values())
  assert os.path.exists(os.path.join(run, 'wm_loss.png'))


def test_resume_equals_uninterrupted(run):
  wm_rows = _rows(os.path.join(run, 'wm'))
  behaviour_dir = os.path.join(run, 'behaviour', 'genrl_arm_pointing_up')
  with open(os.path.join(behaviour_dir, 'final.json')) as f:
    final = json.load(f)
  # Interrupt: the world model lost its last checkpoint, the behaviour run lost its last one and its result.
  shutil.rmtree(os.path.join(run, 'wm', 'checkpoints', '4'))
  shutil.rmtree(os.path.join(behaviour_dir, 'checkpoints', '2'))
  os.remove(os.path.join(behaviour_dir, 'final.json'))
  train.train_and_evaluate(tiny_config(), run)
  assert _rows(os.path.join(run, 'wm')) == wm_rows
  with open(os.path.join(behaviour_dir, 'final.json')) as f:
    assert json.load(f) == final
  # Restored (committed) and initialised states share one signature: each chunk compiled once.
  fns = train.functions(tiny_config())
  assert fns.wm_chunk._cache_size() == 1 and fns.behaviour_chunk._cache_size() == 1


def test_video_prompt_frames_fit_the_vlm():
  c = tiny_config()
  frames = jax.jit(lambda r: train.video_prompt_frames(c, 0, r))(jax.random.PRNGKey(0))
  vlm.check_video(frames, c)
  assert float(frames.min()) >= 0 and float(frames.max()) <= 1


@pytest.mark.parametrize(
  'key,value,match',
  [
    ('wm.seq_len', 6, 'multiple of vlm.n_frames'),
    ('behaviour.methods', ('genrl', 'dreamer'), 'unknown behaviour.methods'),
    ('behaviour.prompts', ('arm waving',), 'unknown task prompt'),
    ('wm.log_every', 7, 'must be positive and divide'),
    ('data.num_envs', 0, 'replay would be empty'),
    ('behaviour.modality', 'audio', "not 'text' or 'video'"),
  ],
)
def test_bad_config_is_one_line_config_error(key, value, match):
  c = default.get_config('smoke')
  group, name = key.split('.')
  c[group][name] = value
  with pytest.raises(ConfigError, match=match) as info:
    train.validate(c)
  assert '\n' not in str(info.value)
