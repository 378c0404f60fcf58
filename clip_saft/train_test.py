"""End-to-end tests of the SAFT experiment on a tiny config: smoke claims, resume, determinism, bad input."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from clip_saft import data
from clip_saft import train
from common import clip
from common import config as config_lib
from common.errors import ConfigError

CONFIG = os.path.join(os.path.dirname(__file__), 'configs', 'default.py')
ROOM = os.path.join(os.path.dirname(__file__), 'configs', 'gpu_room.py')


def tiny(**overrides):
  c = config_lib.load_config(CONFIG + ':smoke', lock=False)
  c.data.num_classes = 6  # Images of 6 classes, 16 px, in chunks of 12: data_test's compiled renderer.
  c.data.image_size = 16
  c.data.shots = 2
  c.data.eval_size = 12
  c.data.render_chunk = 12
  c.model.patch_size = 8
  c.model.vision_width = c.model.text_width = c.model.embed_dim = 16
  c.pretrain.steps = 4
  c.pretrain.batch_size = 12
  c.pretrain.lr = 3e-3
  c.pretrain.warmup_steps = 1
  c.pretrain.log_every = 1
  c.pretrain.checkpoint_every = 2
  c.pretrain.eval_every = 2  # Zero-shot accuracy logged at steps 2 and 4.
  c.finetune.steps = 8
  c.finetune.batch_size = 4
  c.finetune.methods = ('zero_shot', 'full_ft', 'saft', 'wise_ft')
  c.saft.density = 0.02
  c.eval_batch = 12
  c.update(overrides)
  return c


def test_smoke_end_to_end_claims_pass(tmp_path):
  train.train_and_evaluate(tiny(), str(tmp_path))
  with open(tmp_path / 'results.json') as f:
    res = json.load(f)
  assert [c['passed'] for c in res['claims']] == [True] * 5, res['claims']
  rows = res['extra']['rows']
  assert set(rows) == {'zero_shot', 'full_ft', 'saft@0.02', 'wise_ft@0', 'wise_ft@0.5', 'wise_ft@1'}
  assert all(0.0 <= r['id'] <= 1.0 for r in rows.values())
  # id_val beside ID and OOD for every method; never one of the OOD splits.
  assert all(r['id_val'] == r['splits']['id_val'] and 0.0 <= r['id_val'] <= 1.0 for r in rows.values())
  assert set(rows['zero_shot']['splits']) == {'id_test', 'id_val', 'sketch'}
  assert rows['zero_shot']['ood'] == rows['zero_shot']['splits']['sketch']
  assert os.path.exists(tmp_path / 'pretrain_loss.png') and os.path.exists(
    tmp_path / 'methods' / 'seed0.json'
  )


def test_pretraining_resumes_exactly_and_is_deterministic(tmp_path):
  config = tiny()
  tok = data.make_tokenizer()
  model = clip.CLIP(train.clip_config(config))
  evaluator = train.Evaluator(config, model, tok)
  straight, _ = train.pretrain(config, str(tmp_path / 'a'), model, tok, evaluator=evaluator)
  first, _ = train.pretrain(config, str(tmp_path / 'b'), model, tok, stop_after=2)  # Pre-empted at step 2.
  resumed, _ = train.pretrain(config, str(tmp_path / 'b'), model, tok, evaluator=evaluator)
  assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(first), jax.tree.leaves(straight)))
  jax.tree.map(np.testing.assert_array_equal, resumed, straight)
  rows = [json.loads(line) for line in open(tmp_path / 'b' / 'metrics.jsonl')]
  assert [r['step'] for r in rows] == [1, 2, 3, 4]
  # Zero-shot accuracy every eval_every steps, in the loss's rows; a resumed run logs the same values.
  evals = {
    r['step']: (r['pretrain/zero_shot_id'], r['pretrain/zero_shot_ood'])
    for r in rows
    if 'pretrain/zero_shot_id' in r
  }
  assert sorted(evals) == [2, 4] and all(0.0 <= a <= 1.0 for pair in evals.values() for a in pair)
  straight_rows = [json.loads(line) for line in open(tmp_path / 'a' / 'metrics.jsonl')]
  strip = lambda r: {k: v for k, v in r.items() if k != 'time'}  # noqa: E731
  assert [strip(r) for r in rows] == [strip(r) for r in straight_rows]
  assert 'pretrain/loss' in rows[0] and 'pretrain/zero_shot_id' not in rows[0]
  assert evaluator.encode._cache_size() == 1 and evaluator.head._cache_size() == 1  # One compilation each.
  assert train.Evaluator(config, model, tok).zero_shot(resumed) == dict(
    zip(('zero_shot_id', 'zero_shot_ood'), evals[4])
  )


def test_methods_are_deterministic_and_resume_from_markers(tmp_path):
  config = tiny()
  tok = data.make_tokenizer()
  model = clip.CLIP(train.clip_config(config))
  params0 = clip.init_params(train.clip_config(config), jax.random.PRNGKey(0))
  runner = train.Runner(config, model, tok, params0)
  a = train.run_seed(runner, 0, str(tmp_path / 'a'))
  b = train.run_seed(runner, 0, str(tmp_path / 'b'))
  untimed = lambda out: {k: {**v, 'mask_seconds': 0} if isinstance(v, dict) else v for k, v in out.items()}  # noqa: E731
  assert untimed(a) == untimed(b)
  again = train.run_seed(runner, 0, str(tmp_path / 'a'))  # Every (seed, method) marker exists: no training.
  assert again == a


@pytest.mark.parametrize(
  'key,value,match',
  [
    ('saft.density', 0.0, 'density'),
    ('saft.density', 1.5, 'density'),
    ('saft.eligibility', 'text', 'eligibility'),
    ('finetune.methods', ('zero_shot', 'lora'), "unknown finetune method 'lora'"),
    ('data.web_shape_noise', 1.0, 'web_shape_noise'),
    ('data.web_photo_fraction', 0.0, 'web_photo_fraction'),
    ('pretrain.eval_every', -2, 'eval_every'),
    ('data.val_size', -1, 'val_size'),
    ('data.eval_splits', ('id_test', 'id_val'), "must not name 'id_val'"),
  ],
)
def test_bad_config_is_a_one_line_error(key, value, match):
  config = tiny()
  section, name = key.split('.')
  config[section][name] = value
  with pytest.raises(ConfigError, match=match) as info:
    train.check_config(config)
  assert '\n' not in str(info.value)


def test_eval_every_must_be_a_multiple_of_log_every():
  config = tiny()
  config.pretrain.log_every = 2
  config.pretrain.eval_every = 3
  with pytest.raises(ConfigError, match='multiple of pretrain.log_every'):
    train.check_config(config)


@pytest.mark.parametrize(
  'variant,steps,noise,photo',
  [
    ('steps1k', 1000, 0.0, None),
    ('noise30', 5000, 0.3, None),
    ('photo5', 5000, 0.0, 0.05),
    ('noise30_photo5', 5000, 0.3, 0.05),
    ('steps2k_noise50_photo10', 2000, 0.5, 0.1),
  ],
)
def test_gpu_room_variants_build_and_validate(variant, steps, noise, photo):
  config = config_lib.load_config(f'{ROOM}:variant={variant}' if variant != 'noise30_photo5' else ROOM)
  train.check_config(config)
  assert (config.pretrain.steps, config.data.web_shape_noise, config.data.web_photo_fraction) == (
    steps,
    noise,
    photo,
  )
  assert config.pretrain.eval_every == 500 and config.pretrain.batch_size == 1024
  spec = train.web_spec(config)
  assert float(spec['shape_noise']) == np.float32(noise)
  assert float(spec['photo_fraction']) == np.float32(-1.0 if photo is None else photo)


def test_gpu_config_keeps_the_knobs_off_and_bad_variants_fail():
  gpu = config_lib.load_config(os.path.join(os.path.dirname(__file__), 'configs', 'gpu.py'))
  train.check_config(gpu)
  assert gpu.data.web_shape_noise == 0.0 and gpu.data.web_photo_fraction is None
  assert gpu.pretrain.eval_every == 1000
  assert config_lib.load_config(CONFIG + ':smoke').pretrain.eval_every == 0
  for variant, match in [
    ('', 'variant is empty'),
    ('noise', "unknown variant part 'noise'"),
    ('steps0k', "unknown variant part 'steps0k'"),
    ('noise30_noise40', 'twice'),
  ]:
    with pytest.raises(ConfigError, match=match):
      config_lib.load_config(f'{ROOM}:variant={variant}')
  with pytest.raises(ConfigError, match='web_shape_noise'):
    train.check_config(config_lib.load_config(f'{ROOM}:variant=noise100'))


@pytest.mark.slow  # Three more compilations (linear head, FLYP, shortcut split): ~1 minute on 2 cores.
def test_every_method_and_the_gpu_claims_run(tmp_path):
  config = tiny(claims='gpu')
  config.finetune.methods = train.METHODS
  config.finetune.shortcut_diagnostic = True
  config.finetune.wise_alphas = (0.0, 0.25, 0.5, 0.75, 1.0)
  config.saft.densities = (0.01, 0.1)
  rows = train.train_and_evaluate(config, str(tmp_path))
  expected = {
    'zero_shot',
    'lp',
    'full_ft',
    'lp_ft',
    'flyp',
    'saft@0.01',
    'saft@0.02',
    'saft@0.1',
    'saft_random',
  }
  assert expected | {'saft_magnitude', 'wise_ft@0.25'} <= set(rows)
  with open(tmp_path / 'results.json') as f:
    res = json.load(f)
  names = [c['name'] for c in res['claims']]
  assert names[0].startswith('P1') and names[1].startswith('P2') and len(names) == 5
  assert set(res['extra']['shortcut'][0]) == {'zero_shot', 'full_ft', 'wise_ft@0.5', 'saft'}


@pytest.mark.slow  # A second model size: every function compiles again (~1 minute on 2 cores).
def test_paper_path_reads_folders_and_a_converted_checkpoint(tmp_path):
  from PIL import Image

  wnids = ['n01', 'n02', 'n03', 'n04', 'n05', 'n06']
  (tmp_path / 'classes.txt').write_text(''.join(f'{w} {s}\n' for w, s in zip(wnids, data.SHAPES)))
  rng = np.random.default_rng(0)
  folders = {'train': wnids, 'val': wnids, 'v2': [str(i) for i in range(6)], 'a': wnids[:3]}
  for name, classes in folders.items():
    for c in classes:
      (tmp_path / name / c).mkdir(parents=True)
      for i in range(3 if name == 'train' else 2):  # Train: 2 shots + 1 held out for id_val.
        pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / name / c / f'{i}.png')
  config = tiny(claims='paper')
  c = clip.CLIPConfig(**{**train.clip_config(config).__dict__})
  np.savez(tmp_path / 'clip.npz', **clip.to_openai_state_dict(clip.init_params(c, jax.random.PRNGKey(5)), c))
  config.init_checkpoint = str(tmp_path / 'clip.npz')
  config.data.source = 'folders'
  config.data.eval_splits = ('imagenet_val', 'imagenet_v2', 'imagenet_a')
  config.folders.class_list = str(tmp_path / 'classes.txt')
  config.folders.imagenet_train_dir = str(tmp_path / 'train')
  config.folders.imagenet_val_dir = str(tmp_path / 'val')
  config.folders.imagenet_v2_dir = str(tmp_path / 'v2')
  config.folders.imagenet_a_dir = str(tmp_path / 'a')
  config.data.val_size = 6  # One train image per class held out as id_val.
  rows = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert set(rows['zero_shot']['splits']) == {'imagenet_val', 'imagenet_v2', 'imagenet_a', 'id_val'}
  val, rest = train.folder_train_val(config)
  assert len(val) == 6 and not set(val) & set(rest) and not set(val) & set(data.few_shot(rest, 2, 0))
  with open(tmp_path / 'run' / 'results.json') as f:
    assert json.load(f)['claims'][0]['name'].startswith('SAFT 0.1 % OOD avg')
  for i in (3, 4, 5):  # ImageNet-V2 must hold every class: take three away.
    shutil.rmtree(tmp_path / 'v2' / str(i))
  with pytest.raises(ConfigError, match='class folders missing'):
    train.train_and_evaluate(config, str(tmp_path / 'run2'))
