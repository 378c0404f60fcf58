"""Tests of ShapeWorld-Shift (determinism, split definitions, captions) and of the ImageNet folder reader."""

import jax
import numpy as np
import pytest
from PIL import Image

from clip_saft import data
from common.errors import ConfigError

N = 240


@pytest.fixture(scope='module')
def factors():
  sample = jax.jit(lambda key, spec, labels: data.sample_factors(key, spec, labels))
  labels = np.arange(N) % 12
  return {
    name: jax.tree.map(np.asarray, sample(data.split_key(0, name), data.spec_arrays(spec), labels))
    for name, spec in data.SPLITS.items()
  }


def test_each_split_draws_only_its_factors(factors):
  for name, spec in data.SPLITS.items():
    f = factors[name]
    assert set(f['style']) <= set(spec.styles), name
    assert set(f['background']) <= set(spec.backgrounds), name
    assert set(f['texture']) <= set(spec.textures), name
    assert f['scale'].min() >= spec.scale[0] and f['scale'].max() <= spec.scale[1], name
    assert f['clutter'].min() >= spec.clutter[0] and f['clutter'].max() <= spec.clutter[1], name
  assert set(factors['web']['style']) == {0, 1, 2, 3} and set(factors['web']['background']) == set(range(5))
  assert set(factors['train']['style']) == {0} and set(factors['sketch']['style']) == {1}
  assert set(factors['rendition']['style']) == {2, 3}
  assert factors['small_clutter']['clutter'].min() >= 2 and factors['small_clutter']['scale'].max() <= 0.22
  assert factors['v2']['scale'].mean() < factors['id_test']['scale'].mean()  # The shifted size prior.
  shortcut = np.mean(factors['shortcut_train']['colour'] == factors['shortcut_train']['shape'] % 10)
  independent = np.mean(factors['shortcut_test']['colour'] == factors['shortcut_test']['shape'] % 10)
  assert 0.85 <= shortcut <= 0.97 and independent < 0.25


def test_splits_are_deterministic_and_independent_of_chunking():
  a = data.make_split(0, 'small_clutter', 20, 6, 16, chunk=12)
  b = data.make_split(0, 'small_clutter', 20, 6, 16, chunk=12)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  c = data.make_split(0, 'small_clutter', 12, 6, 16, chunk=12)
  np.testing.assert_array_equal(a[0][:12], c[0])
  other = data.make_split(1, 'small_clutter', 12, 6, 16, chunk=12)
  assert not np.array_equal(other[0], c[0])
  images, labels, _ = a
  assert images.shape == (20, 16, 16, 3) and float(images.min()) >= 0 and float(images.max()) <= 1
  np.testing.assert_array_equal(labels, np.arange(20) % 6)


def test_sketches_are_pale_outlines():
  images = np.asarray(data.make_split(0, 'sketch', 12, 6, 16, chunk=12)[0])  # Compiled above.
  assert images.mean() > 0.8 and images.min() < 0.3  # Pale paper, dark lines.
  assert np.abs(images[..., 0] - images[..., 2]).max() < 0.05  # No colour.


def test_captions_follow_factors(factors):
  tok = data.make_tokenizer()
  captioner = data.Captioner(tok, 16, dropout=0.5)
  f = jax.tree.map(lambda x: x[:60], factors['web'])
  tokens = np.asarray(jax.jit(captioner.__call__)(f))
  for row, caption in enumerate(tokens):
    words = tok.decode(caption).split()
    eot = list(caption).index(tok.eot)
    assert caption[0] == tok.sot and caption.argmax() == eot and not caption[eot + 1 :].any()
    assert data.SHAPES[f['shape'][row]] in words
    if f['style'][row] == 1:
      assert not set(words) & set(data.COLOUR_NAMES)  # A sketch shows no colour.
    if 'of' in words:
      assert words[1] == data.STYLES[f['style'][row]]
  assert min(len(tok.decode(t).split()) for t in tokens) == 2  # Everything dropped: "a <shape>".
  with pytest.raises(ConfigError, match='context_length'):
    data.Captioner(tok, 8, 0.5)


def make_folder(root, classes, per_class=3, size=(40, 30)):
  for c in classes:
    (root / c).mkdir(parents=True)
    for i in range(per_class):
      Image.new('RGB', size, (10 * i, 100, 200)).save(root / c / f'{i}.JPEG')


def test_folder_reader(tmp_path):
  wnids = ['n01', 'n02', 'n03']
  make_folder(tmp_path / 'train', wnids)
  items = data.read_class_folders(str(tmp_path / 'train'), wnids)
  assert len(items) == 9 and sorted({lab for _, lab in items}) == [0, 1, 2]
  shots = data.few_shot(items, 2, seed=0)
  assert len(shots) == 6 and shots == data.few_shot(items, 2, seed=0)
  make_folder(tmp_path / 'v2', ['0', '2'])
  with pytest.raises(ConfigError, match="1 of 3 class folders missing \\(first: '1'\\)") as info:
    data.read_class_folders(str(tmp_path / 'v2'), wnids, by_index=True)
  assert '\n' not in str(info.value)
  items = data.read_class_folders(str(tmp_path / 'v2'), wnids, by_index=True, subset=True)
  assert sorted({lab for _, lab in items}) == [0, 2]
  with pytest.raises(ConfigError, match="'n02' is not one of"):
    data.read_class_folders(str(tmp_path / 'train'), ['n01', 'n03'])
  with pytest.raises(ConfigError, match='does not exist'):
    data.read_class_folders(str(tmp_path / 'nowhere'), wnids)
  images, labels = next(data.folder_batches(shots, 24, 4))
  assert images.shape == (4, 24, 24, 3) and labels.tolist() == [0, 0, 1, 1]
  (tmp_path / 'classes.txt').write_text('n01 tench\nn02 goldfish\nn03 great white shark\n')
  assert data.read_class_list(str(tmp_path / 'classes.txt')) == (
    wnids,
    ['tench', 'goldfish', 'great white shark'],
  )


WEB_ROWS = 4000


@pytest.fixture(scope='module')
def web():
  """Factors (no images) of 4000 web rows, 12 classes, under each setting of our knobs: one compilation."""
  sample = jax.jit(lambda key, spec: data.split_factors(key, spec, True, 0, WEB_ROWS, 12)[1])
  key = data.split_key(0, 'web', 3)
  knobs = {
    'default': {},
    'zero': dict(shape_noise=0.0),
    'noisy': dict(shape_noise=0.3),
    'photo': dict(photo_fraction=0.05),
  }
  return {
    name: jax.tree.map(np.asarray, sample(key, data.spec_arrays(data.SPLITS['web'], **kw)))
    for name, kw in knobs.items()
  }


@pytest.fixture(scope='module')
def web_captioner():
  return jax.jit(data.Captioner(data.make_tokenizer(), 16, dropout=0.4).__call__)


def same_except(a, b, keys):
  for name in a:
    if name not in keys:
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_web_shape_noise_zero_leaves_captions_bit_identical(web, web_captioner):
  before = {k: v for k, v in web['default'].items() if k != 'caption_shape'}  # Captions from the shape.
  same_except(web['zero'], web['default'], ())
  np.testing.assert_array_equal(web['default']['caption_shape'], web['default']['shape'])
  np.testing.assert_array_equal(web_captioner(web['zero']), web_captioner(before))


def test_web_shape_noise_names_random_shapes_at_the_expected_rate(web, web_captioner):
  noisy = web['noisy']
  same_except(noisy, web['default'], ('caption_shape',))  # Images and labels unchanged.
  wrong = np.mean(noisy['caption_shape'] != noisy['shape'])
  assert abs(wrong - 0.3 * (1 - 1 / 12)) < 0.03, wrong
  assert set(noisy['caption_shape']) == set(range(12))
  tok = data.make_tokenizer()
  tokens = np.asarray(web_captioner(noisy))  # Compiled for these shapes above.
  for row, caption in enumerate(tokens[:100]):
    words = tok.decode(caption).split()
    named, true = noisy['caption_shape'][row], noisy['shape'][row]
    assert data.SHAPES[named] in words and (named == true or data.SHAPES[true] not in words)


def test_web_photo_fraction_is_respected(web):
  photo = web['photo']
  same_except(photo, web['default'], ('style',))
  share = np.bincount(photo['style'], minlength=4) / WEB_ROWS
  assert abs(share[0] - 0.05) < 0.015 and np.all(np.abs(share[1:] - 0.95 / 3) < 0.03), share
  default_share = np.bincount(web['default']['style'], minlength=4) / WEB_ROWS
  assert np.all(np.abs(default_share - 0.25) < 0.03), default_share


@pytest.mark.parametrize(
  'noise,photo,match',
  [
    (1.0, None, 'web_shape_noise'),
    (-0.1, None, 'web_shape_noise'),
    (float('nan'), None, 'web_shape_noise'),
    (True, None, 'web_shape_noise'),
    (0.0, 0.0, 'web_photo_fraction'),
    (0.0, 1.5, 'web_photo_fraction'),
    (0.0, '0.5', 'web_photo_fraction'),
  ],
)
def test_bad_web_knobs_are_one_line_errors(noise, photo, match):
  with pytest.raises(ConfigError, match=match) as info:
    data.spec_arrays(data.SPLITS['web'], noise, photo)
  assert '\n' not in str(info.value)


def test_photo_fraction_needs_a_split_with_photo_and_other_styles():
  with pytest.raises(ConfigError, match='photo_fraction'):
    data.spec_arrays(data.SPLITS['sketch'], photo_fraction=0.5)


def test_id_val_is_disjoint_from_train_and_id_test_and_deterministic_by_seed():
  # 6 classes, 16 px, chunks of 12: the renderer compiled above.
  val, val_labels, val_f = data.make_split(0, 'id_val', 24, 6, 16, chunk=12)
  assert data.SPLITS['id_val'].split_id not in {s.split_id for n, s in data.SPLITS.items() if n != 'id_val'}
  spec, train_spec = data.SPLITS['id_val'], data.SPLITS['train']
  assert (spec.styles, spec.backgrounds, spec.textures, spec.scale) == (
    train_spec.styles, train_spec.backgrounds, train_spec.textures, train_spec.scale,
  )  # fmt: skip  # The training distribution.
  others = [data.make_split(0, 'train', 12, 6, 16, index=seed, chunk=12) for seed in range(3)]
  others.append(data.make_split(0, 'id_test', 24, 6, 16, chunk=12))
  flat = lambda x: np.asarray(x).reshape(len(x), -1)  # noqa: E731
  for images, _, f in others:
    same_image = (flat(val)[:, None, :] == flat(images)[None, :, :]).all(-1)
    same_draws = (np.asarray(val_f['u'])[:, None, :] == np.asarray(f['u'])[None, :, :]).all(-1)
    assert not same_image.any() and not same_draws.any()
  again = data.make_split(0, 'id_val', 24, 6, 16, chunk=12)
  jax.tree.map(np.testing.assert_array_equal, (val, val_labels, val_f), again)
  assert not np.array_equal(data.make_split(1, 'id_val', 24, 6, 16, chunk=12)[0], val)
  np.testing.assert_array_equal(val_labels, np.arange(24) % 6)  # Balanced classes.


def test_folder_hold_out_is_stratified_disjoint_from_every_few_shot_set_and_deterministic():
  items = [(f'/train/c{label}/{i}.jpg', label) for label in range(5) for i in range(6)]
  val, rest = data.hold_out(items, 7, seed=0)
  assert len(val) == 7 and len(rest) == 23 and sorted(val + rest) == sorted(items)
  counts = np.bincount([label for _, label in val], minlength=5)
  assert counts.max() - counts.min() <= 1  # One per class per round.
  assert (val, rest) == data.hold_out(items, 7, seed=0) and val != data.hold_out(items, 7, seed=1)[0]
  for ft_seed in range(4):  # The few-shot sets are drawn from `rest` only.
    assert not set(data.few_shot(rest, 4, ft_seed)) & set(val)
  assert data.hold_out(items, 0, seed=0) == ([], items)
  with pytest.raises(ConfigError, match='val_size'):
    data.hold_out(items, 31, seed=0)
