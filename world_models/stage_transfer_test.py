"""An exported VLM and world model, imported elsewhere from its parts, are restored by the run's own stage
functions without training, equal to the exporting run's (parameters, key, step, metrics); bad imports are
one-line ConfigErrors. Uses train_test's tiny config, so the compiled stage functions are shared."""

import os

import jax
import numpy as np
import pytest

from common import metrics
from common import results
from common.errors import ConfigError
from world_models import stage_transfer
from world_models import train
from world_models.train_test import tiny_config


def _stages(config, workdir):
  """The run's first stages as `train_and_evaluate` runs them: (VLM parameters, VLM losses, world-model state)."""
  fns = train.functions(config)
  rng = jax.random.PRNGKey(config.seed)
  rng_data, rng_vlm, rng_wm = (jax.random.fold_in(rng, i) for i in range(3))
  data = fns.collect(rng_data)
  data = train._commit({'frames': data['frames'], 'actions': data['actions']})
  vlm_params, losses = train.train_vlm(fns, config, workdir, rng_vlm)
  data['embeds'] = train._commit(fns.embed_data(vlm_params, data['frames']))
  results.write_json(os.path.join(workdir, 'vlm', 'caption_accuracy.json'), {'AGENT_LOOK': 0.25})
  return vlm_params, losses, train.train_world_model(fns, config, workdir, data, rng_wm)


def _equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_export_then_import_restores_the_stages_without_training(tmp_path, monkeypatch):
  config = tiny_config()
  src, dst = str(tmp_path / 'src'), str(tmp_path / 'dst')
  with pytest.raises(ConfigError, match='not finished'):
    stage_transfer.export(config, src, str(tmp_path / 'none'))
  vlm_params, losses, wm_state = _stages(config, src)
  assert losses is not None  # Trained here.
  paths = stage_transfer.export(config, src, str(tmp_path / 'out' / 'stages'), part_mib=0.05)
  assert len(paths) > 1 and all(os.path.getsize(p) <= 0.05 * 2**20 for p in paths)
  with pytest.raises(ConfigError, match='missing'):
    stage_transfer.import_(config, dst, paths[1:])
  stage_transfer.import_(config, dst, paths[::-1])  # Any order.

  def no_training(*args, **kwargs):
    raise AssertionError('an imported stage was trained again')

  fns = train.functions(config)
  monkeypatch.setattr(fns, 'wm_chunk', no_training)
  monkeypatch.setattr(fns, 'vlm_train', no_training)
  vlm2, losses2, wm2 = _stages(config, dst)
  assert losses2 is None and _equal(vlm2, vlm_params)
  for field in stage_transfer.WM_FIELDS:
    assert _equal(getattr(wm2, field), getattr(wm_state, field)), field
  assert int(wm2.step) == config.wm.steps
  assert metrics.read_metrics(os.path.join(dst, 'wm')) == metrics.read_metrics(os.path.join(src, 'wm'))

  with pytest.raises(ConfigError, match='exists'):
    stage_transfer.import_(config, dst, paths)
  other = tiny_config()
  other.wm.deter += 8
  with pytest.raises(ConfigError, match=r'wm\.deter'):
    stage_transfer.import_(other, str(tmp_path / 'other'), paths)
  other = tiny_config()
  other.wm.connector_finetune_steps = 2
  with pytest.raises(ConfigError, match='fine-tune'):
    stage_transfer.import_(other, str(tmp_path / 'other'), paths)
  # Periods that change no parameter may differ.
  other = tiny_config()
  other.wm.checkpoint_every = 4
  stage_transfer.import_(other, str(tmp_path / 'periods'), paths)
