"""Rollout strips on tiny frames: PNG and GIF sizes and frame counts, exact pixels, padding, bad input."""

import numpy as np
import pytest
from PIL import Image, ImageSequence

from world_models import strips


def _rows(t=3, size=4, seed=0):
  rng = np.random.default_rng(seed)
  return {'real': rng.uniform(size=(t, size, size, 3)), 'imagined': rng.uniform(size=(t, size, size, 3))}


def test_png_layout_and_pixels(tmp_path):
  rows = _rows()
  path = strips.save_png(str(tmp_path / 'a.png'), rows, labels=False)
  with Image.open(path) as image:
    assert image.size == (3 * 4, 2 * 4) and image.mode == 'RGB'
    pixels = np.asarray(image)
  # Row 1 (imagined), frame 2 sits at rows 4..8, columns 8..12; lossless.
  np.testing.assert_array_equal(pixels[4:8, 8:12], strips.to_uint8(rows['imagined'])[2])


def test_png_scale_labels_and_padding(tmp_path):
  rows = dict(_rows(t=3), target=np.zeros((1, 4, 4, 3), np.uint8))  # A shorter row is padded.
  path = strips.save_png(str(tmp_path / 'b.png'), rows, scale=2)
  margin = strips.label_width(rows)
  assert margin > 0
  with Image.open(path) as image:
    assert image.size == (margin + 3 * 4 * 2, 3 * 4 * 2)
    pixels = np.asarray(image)
  np.testing.assert_array_equal(pixels[16:24, margin + 8 :], np.broadcast_to(strips.PAD, (8, 16, 3)))
  np.testing.assert_array_equal(pixels[16:24, margin : margin + 8], 0)  # The target's one frame, black.


def test_gif_frame_count_and_size(tmp_path):
  rows = _rows(t=5)
  rows['real'][:] = 0.5  # Identical frames still give one GIF frame each (the progress bar moves).
  path = strips.save_gif(str(tmp_path / 'c.gif'), rows, scale=2, frame_ms=50, labels=False)
  with Image.open(path) as image:
    assert image.n_frames == 5
    assert image.size == (4 * 2, 2 * 4 * 2 + 2 * 2)
    assert all(f.size == image.size for f in ImageSequence.Iterator(image))


def test_save_rollout_writes_both(tmp_path):
  png, gif = strips.save_rollout(str(tmp_path), _rows(t=2), scale=1)
  assert png.endswith('rollout.png') and gif.endswith('rollout.gif')
  with Image.open(gif) as image:
    assert image.n_frames == 2


def test_uint8_passes_and_floats_are_clipped():
  x = np.full((1, 2, 2, 3), 7, np.uint8)
  assert strips.to_uint8(x) is not None and strips.to_uint8(x).dtype == np.uint8
  y = strips.to_uint8(np.array([-1.0, 0.5, 2.0]).reshape(1, 1, 1, 3))
  assert y.ravel().tolist() == [0, 128, 255]


@pytest.mark.parametrize(
  'frames, match',
  [
    (np.zeros((3, 4, 4)), r"'bad' has shape \(3, 4, 4\); expected \(T >= 1, H, W, 3\)"),
    (np.zeros((3, 4, 4, 4)), r"'bad' has shape \(3, 4, 4, 4\)"),
    (np.zeros((0, 4, 4, 3)), r"'bad' has shape \(0, 4, 4, 3\)"),
    (np.full((1, 4, 4, 3), np.nan), "'bad' has non-finite values"),
    (np.full((1, 4, 4, 3), 'a'), "'bad' has dtype"),
  ],
)
def test_bad_frames_are_one_line_errors(tmp_path, frames, match):
  with pytest.raises(ValueError, match=match) as e:
    strips.save_png(str(tmp_path / 'x.png'), {'real': np.zeros((1, 4, 4, 3)), 'bad': frames})
  assert '\n' not in str(e.value)


def test_bad_rows_and_options(tmp_path):
  with pytest.raises(ValueError, match='at least one row'):
    strips.save_png(str(tmp_path / 'x.png'), {})
  with pytest.raises(ValueError, match='share one frame size'):
    strips.save_gif(str(tmp_path / 'x.gif'), {'a': np.zeros((1, 4, 4, 3)), 'b': np.zeros((1, 8, 8, 3))})
  with pytest.raises(ValueError, match='scale=0 must be an int >= 1'):
    strips.save_png(str(tmp_path / 'x.png'), _rows(), scale=0)
  with pytest.raises(ValueError, match='frame_ms=0'):
    strips.save_gif(str(tmp_path / 'x.gif'), _rows(), frame_ms=0)
