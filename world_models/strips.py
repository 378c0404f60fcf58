"""Image strips and animated GIFs of rollouts, written with Pillow (issue #13: imagined and real rollouts).

A strip is named rows of frames, e.g. {'real': ..., 'reconstructed': ..., 'imagined': ..., 'target': ...},
each (T, H, W, 3) floats in [0, 1] (clipped) or uint8, all of one frame size H x W. The PNG puts the rows
top to bottom and their frames left to right; the GIF has one frame per time index, the rows' frames at that
index stacked top to bottom, with a progress bar below (so consecutive frames always differ and Pillow keeps
every one). A row shorter than the longest is padded with grey. Row names are written in a left margin
unless `labels=False`. Frames are enlarged `scale` times (nearest neighbour). Bad input is a one-line
ValueError naming the row and the shape it expected.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

PAD = (128, 128, 128)  # Grey where a row has no frame.
BAR = (230, 230, 230)  # The GIF's progress bar.


def to_uint8(frames, name: str = 'frames') -> np.ndarray:
  """(T, H, W, 3) uint8, or floats clipped to [0, 1] and rounded to 0..255; anything else raises."""
  x = np.asarray(frames)
  if x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] < 1:
    raise ValueError(f"strip row '{name}' has shape {x.shape}; expected (T >= 1, H, W, 3) RGB frames")
  if x.dtype == np.uint8:
    return x
  if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
    raise ValueError(f"strip row '{name}' has dtype {x.dtype}; expected uint8 or floats in [0, 1]")
  x = x.astype(np.float32)
  if not np.all(np.isfinite(x)):
    raise ValueError(f"strip row '{name}' has non-finite values; expected floats in [0, 1]")
  return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def check_rows(rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The rows as uint8 arrays, in order; raises on no rows or rows of different frame sizes."""
  if not rows:
    raise ValueError('a strip needs at least one row of frames')
  out = {str(name): to_uint8(frames, str(name)) for name, frames in rows.items()}
  sizes = {name: x.shape[1:3] for name, x in out.items()}
  first = next(iter(sizes.values()))
  if any(s != first for s in sizes.values()):
    raise ValueError(f'strip rows must share one frame size; got {sizes}')
  return out


def _font():
  from PIL import ImageFont

  return ImageFont.load_default()


def label_width(names) -> int:
  """Pixels of the left margin that holds the row names (0 for no names)."""
  from PIL import Image, ImageDraw

  names = list(names)
  if not names:
    return 0
  draw = ImageDraw.Draw(Image.new('RGB', (1, 1)))
  return max(draw.textbbox((0, 0), n, font=_font())[2] for n in names) + 6


def _canvas(rows: dict[str, np.ndarray], times, scale: int, labels: bool, extra_height: int = 0):
  """An image with the rows' frames at `times` (one column per time), names on the left."""
  from PIL import Image, ImageDraw

  h, w = next(iter(rows.values())).shape[1:3]
  margin = label_width(rows) if labels else 0
  cell_h, cell_w = h * scale, w * scale
  grid = np.empty((len(rows) * cell_h, len(times) * cell_w, 3), np.uint8)
  grid[:] = PAD
  for r, x in enumerate(rows.values()):
    for c, t in enumerate(times):
      if t < x.shape[0]:
        frame = np.repeat(np.repeat(x[t], scale, 0), scale, 1)
        grid[r * cell_h : (r + 1) * cell_h, c * cell_w : (c + 1) * cell_w] = frame
  image = Image.new('RGB', (margin + grid.shape[1], grid.shape[0] + extra_height), (0, 0, 0))
  image.paste(Image.fromarray(grid), (margin, 0))
  if labels:
    draw = ImageDraw.Draw(image)
    for r, name in enumerate(rows):
      draw.text((3, r * cell_h + 2), name, fill=(255, 255, 255), font=_font())
  return image


def _check_scale(scale):
  if not isinstance(scale, (int, np.integer)) or scale < 1:
    raise ValueError(f'strip scale={scale!r} must be an int >= 1')


def save_png(path: str, rows: Mapping[str, np.ndarray], *, scale: int = 1, labels: bool = True) -> str:
  """Rows top to bottom, frames left to right: (len(rows) * H * scale) x (margin + T * W * scale) pixels,
  T the longest row's length."""
  _check_scale(scale)
  rows = check_rows(rows)
  length = max(x.shape[0] for x in rows.values())
  _canvas(rows, range(length), scale, labels).save(path)
  return path


def save_gif(
  path: str, rows: Mapping[str, np.ndarray], *, scale: int = 1, frame_ms: int = 200, labels: bool = True
) -> str:
  """One GIF frame per time index (T of them, T the longest row's length), looping: the rows' frames at
  that index top to bottom, and a progress bar of `2 * scale` pixels below that fills to (t + 1) / T."""
  from PIL import Image

  _check_scale(scale)
  if not isinstance(frame_ms, (int, np.integer)) or frame_ms < 1:
    raise ValueError(f'strip frame_ms={frame_ms!r} must be an int >= 1')
  rows = check_rows(rows)
  length = max(x.shape[0] for x in rows.values())
  bar = 2 * scale
  images = []
  for t in range(length):
    image = _canvas(rows, [t], scale, labels, extra_height=bar)
    width = round(image.width * (t + 1) / length)
    image.paste(Image.new('RGB', (width, bar), BAR), (0, image.height - bar))
    images.append(image)
  images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
  return path


def save_rollout(directory: str, rows: Mapping[str, np.ndarray], *, scale: int = 1, frame_ms: int = 200):
  """`rollout.png` and `rollout.gif` of `rows` in `directory`; returns their paths."""
  png = save_png(os.path.join(directory, 'rollout.png'), rows, scale=scale)
  gif = save_gif(os.path.join(directory, 'rollout.gif'), rows, scale=scale, frame_ms=frame_ms)
  return png, gif
