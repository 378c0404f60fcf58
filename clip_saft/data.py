"""Data for SAFT: a procedural image-caption world rendered in JAX, and a reader for ImageNet-style folders.

**ShapeWorld-Shift** (our design, research note §3.2). An image shows one object: a shape (the class label)
with a colour, a fill texture, a position, a scale and a rotation, on a background, in a style:

- photo: textured, shaded fill on the background; the in-distribution style;
- sketch: a thin dark outline on pale paper (colour and texture gone), like ImageNet-Sketch;
- cartoon: flat colour with a thick dark outline on a posterised background;
- rendition: photo rendering with an inverted, posterised palette (cartoon and rendition ~ ImageNet-R).

Optionally small distractor shapes ("clutter") sit behind the object. Captions come from one template,
"a {style} of a {size} {colour} {texture} {shape} on a {background} background", where each bracketed group
is dropped with probability `caption_dropout`, so prompts like "a circle" are in-distribution.

Splits (`SPLITS`): `web` (every factor: pretraining), `train` (16-shot photo, plain or noisy background),
`id_test` (the train distribution, fresh samples), `id_val` (the train distribution again, its own stream:
held-out in-distribution images for choosing learning rates, never a test number), and shifted evaluation
splits mirroring ImageNet's variants: `v2` (train factors, a new seed stream and a smaller size prior),
`sketch`, `rendition` (cartoon or rendition) and `small_clutter` (small objects among distractors on busy
backgrounds, ~ImageNet-A's hard context). The colour-shortcut diagnostic: `shortcut_train` (colour predicts
the class 90 % of the time) and `shortcut_test` (colour independent of class).

Every image is a pure function of (seed, split, index): `jax.random.fold_in` all the way down.

Ours, not the paper's (off by default): `spec_arrays(..., shape_noise, photo_fraction)` weakens the web
stream on the fine-tuning task (captions naming a random shape; fewer photo-style images); config keys
`data.web_shape_noise` and `data.web_photo_fraction`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError

SHAPES = (
  'circle',
  'square',
  'triangle',
  'diamond',
  'cross',
  'ring',
  'star',
  'hexagon',
  'semicircle',
  'bar',
  'arrow',
  'crescent',
)
COLOURS = {
  'red': (0.9, 0.12, 0.1),
  'green': (0.1, 0.7, 0.2),
  'blue': (0.15, 0.3, 0.9),
  'yellow': (0.95, 0.85, 0.1),
  'purple': (0.55, 0.2, 0.75),
  'orange': (1.0, 0.55, 0.05),
  'cyan': (0.1, 0.8, 0.85),
  'pink': (0.95, 0.5, 0.7),
  'white': (0.95, 0.95, 0.95),
  'brown': (0.5, 0.3, 0.1),
}
COLOUR_NAMES = tuple(COLOURS)
TEXTURES = ('solid', 'striped', 'dotted', 'checkered')
BACKGROUNDS = ('plain', 'noisy', 'striped', 'checkered', 'gradient')
STYLES = ('photo', 'sketch', 'cartoon', 'rendition')
MAX_CLUTTER = 4
WORDS = (
  ('a', 'of', 'on', 'background', 'small', 'big') + STYLES + SHAPES + COLOUR_NAMES + TEXTURES + BACKGROUNDS
)
# Zero-shot prompt ensemble (the mini-CLIP's analogue of OpenAI's 80 ImageNet templates); the first one is the
# single training prompt when `finetune.templates='photo'`.
PROMPT_TEMPLATES = (
  'a photo of a {}',
  'a {}',
  'a sketch of a {}',
  'a cartoon of a {}',
  'a rendition of a {}',
  'a small {}',
)
# A short ImageNet ensemble of our own (OpenAI's has 80 templates); the first is the paper's training prompt.
IMAGENET_TEMPLATES = (
  'a photo of a {}.',
  'a bad photo of a {}.',
  'a cropped photo of the {}.',
  'a photo of a small {}.',
  'a photo of a large {}.',
  'a sketch of a {}.',
  'a rendition of a {}.',
  'art of the {}.',
)


@dataclasses.dataclass(frozen=True)
class SplitSpec:
  """Which factor values a split draws from (uniformly), its scale prior, clutter and colour rule."""

  split_id: int
  styles: tuple = (0,)
  backgrounds: tuple = (0, 1)
  textures: tuple = (0, 1, 2, 3)
  scale: tuple = (0.3, 0.42)  # Object radius as a fraction of the image side.
  clutter: tuple = (0, 0)  # Inclusive range of distractor counts.
  shortcut_p: float | None = None  # P(colour = the class's own colour); None: colour independent of class.


ALL = lambda n: tuple(range(n))  # noqa: E731
SPLITS = {
  'web': SplitSpec(0, ALL(4), ALL(5), ALL(4), (0.18, 0.45), (0, 2)),
  'train': SplitSpec(1, scale=(0.3, 0.42)),
  'id_test': SplitSpec(2, scale=(0.3, 0.42)),
  'v2': SplitSpec(3, scale=(0.26, 0.4)),
  'sketch': SplitSpec(4, styles=(1,)),
  'rendition': SplitSpec(5, styles=(2, 3)),
  'small_clutter': SplitSpec(6, backgrounds=(2, 3, 4), scale=(0.16, 0.22), clutter=(2, 4)),
  'shortcut_train': SplitSpec(7, shortcut_p=0.9),
  'shortcut_test': SplitSpec(8, backgrounds=(2, 3, 4)),
  # Held-out ID validation (model selection): the `train` / `id_test` factors, its own key stream (split
  # id 9), so its images are neither few-shot examples of any seed nor test images.
  'id_val': SplitSpec(9, scale=(0.3, 0.42)),
}
OOD_SPLITS = ('v2', 'sketch', 'rendition', 'small_clutter')
VAL_SPLIT = 'id_val'


def check_web_knobs(shape_noise, photo_fraction) -> None:
  """One-line ConfigError unless `shape_noise` is in [0, 1) and `photo_fraction` is in (0, 1] or None."""

  def is_number(x):
    return isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool)

  if not (is_number(shape_noise) and 0.0 <= shape_noise < 1.0):
    raise ConfigError(
      f'data.web_shape_noise must be a float in [0, 1) (0 = true shape in every caption), got {shape_noise!r}'
    )
  if photo_fraction is not None and not (is_number(photo_fraction) and 0.0 < photo_fraction <= 1.0):
    raise ConfigError(
      'data.web_photo_fraction must be a float in (0, 1] or None (styles uniform, as before), '
      f'got {photo_fraction!r}'
    )


def spec_arrays(spec: SplitSpec, shape_noise: float = 0.0, photo_fraction: float | None = None) -> dict:
  """A split's definition as arrays, so one compiled sampler serves every split.

  Two knobs of ours (not the paper's), meant for the web stream, to weaken pretraining on the fine-tuning
  task; their defaults leave every draw as it was:
  - `shape_noise`: with this probability a caption names a shape drawn uniformly from the classes (possibly
    the true one) instead of the true shape (the image is unchanged);
  - `photo_fraction`: the fraction of images in the 'photo' style; the split's other styles share the rest
    equally. None: styles uniform over the allowed ones.
  """
  check_web_knobs(shape_noise, photo_fraction)
  if photo_fraction is not None and not (0 in spec.styles and len(spec.styles) > 1):
    raise ConfigError(
      f'photo_fraction {photo_fraction} needs a split drawing the photo style and another one, got styles '
      f'{spec.styles}; use it on the web split'
    )
  allowed = lambda options, n: jnp.zeros((n,), bool).at[jnp.asarray(options)].set(True)  # noqa: E731
  return {
    'styles': allowed(spec.styles, len(STYLES)),
    'backgrounds': allowed(spec.backgrounds, len(BACKGROUNDS)),
    'textures': allowed(spec.textures, len(TEXTURES)),
    'scale': jnp.asarray(spec.scale, jnp.float32),
    'clutter': jnp.asarray(spec.clutter, jnp.int32),
    'shortcut_p': jnp.float32(-1.0 if spec.shortcut_p is None else spec.shortcut_p),
    'shape_noise': jnp.float32(shape_noise),
    'photo_fraction': jnp.float32(-1.0 if photo_fraction is None else photo_fraction),
  }


# Slots of the per-image uniform vector `u` (one random draw per image keeps compilation short).
U_TONES, U_PHASE, U_NOISE, U_CAPTION, U_CLUTTER = 0, 6, 7, 8, 13
U_SIZE = U_CLUTTER + 4 * MAX_CLUTTER


def _pick(u, allowed):
  """The floor(u * count)-th allowed option (uniform over the allowed ones)."""
  rank = jnp.floor(u * allowed.sum()).astype(jnp.int32)
  return jnp.argmax(jnp.cumsum(allowed) > rank).astype(jnp.int32)


def sample_factors(key, spec: SplitSpec | dict, labels, start=0) -> dict:
  """Factors of `len(labels)` images; `labels` are shape indices. Row i's draws come from
  fold_in(key, start + i)."""
  labels = jnp.asarray(labels, jnp.int32)
  spec = spec_arrays(spec) if isinstance(spec, SplitSpec) else spec

  def one(row, label):
    draws = jax.random.uniform(jax.random.fold_in(key, row), (10 + U_SIZE,))
    f, u = draws[:10], draws[10:]
    colour = jnp.floor(f[0] * len(COLOURS)).astype(jnp.int32)
    colour = jnp.where(f[1] < spec['shortcut_p'], label % len(COLOURS), colour)
    lo, hi = spec['clutter'][0], spec['clutter'][1]
    style = _pick(f[4], spec['styles'])
    # photo_fraction >= 0: photo when f[4] < p, else the other allowed styles uniformly from the rest of f[4].
    p = spec['photo_fraction']
    rest = jnp.minimum((f[4] - p) / jnp.maximum(1.0 - p, 1e-6), 0.99999994)
    other = _pick(rest, spec['styles'].at[0].set(False))
    style = jnp.where(p < 0, style, jnp.where(f[4] < p, 0, other))
    return {
      'shape': label,
      'colour': colour,
      'texture': _pick(f[2], spec['textures']),
      'background': _pick(f[3], spec['backgrounds']),
      'style': style,
      'scale': spec['scale'][0] + f[5] * (spec['scale'][1] - spec['scale'][0]),
      'center': 0.4 + 0.2 * f[6:8],
      'angle': -0.3 + 0.6 * f[8],
      'clutter': lo + jnp.floor(f[9] * (hi - lo + 1)).astype(jnp.int32),
      'u': u,  # Nuisance draws of the renderer and the captioner.
    }

  return jax.vmap(one)(start + jnp.arange(labels.shape[0]), labels)


def _hash_noise(x, y, seed):
  """Per-pixel uniform noise in [0, 1) from an integer hash of (pixel, seed): cheap to compile."""
  n = x.astype(jnp.uint32) * jnp.uint32(73856093) ^ y.astype(jnp.uint32) * jnp.uint32(19349663) ^ seed
  n = (n ^ (n >> 16)) * jnp.uint32(0x45D9F3B)
  n = (n ^ (n >> 16)) * jnp.uint32(0x45D9F3B)
  n = n ^ (n >> 16)
  return (n >> 8).astype(jnp.float32) / float(1 << 24)


def _inside(shape, u, v):
  """Whether local coordinates (u, v) (object radius = 1, v downwards) fall inside shape `shape`."""
  r = jnp.sqrt(u**2 + v**2)
  theta = jnp.arctan2(v, u)
  au, av = jnp.abs(u), jnp.abs(v)
  masks = [
    r <= 1.0,
    jnp.maximum(au, av) <= 0.8,
    (v <= 0.6) & (au <= 0.6 * (v + 1.0)) & (v >= -1.0),
    au + av <= 1.0,
    ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95)),
    (r <= 1.0) & (r >= 0.55),
    r <= 0.55 + 0.4 * jnp.cos(5 * (theta + jnp.pi / 2)),
    jnp.maximum(0.866 * au + 0.5 * av, av) <= 0.85,
    (r <= 1.0) & (v <= 0.2),
    (au <= 0.95) & (av <= 0.3),
    ((v <= 0.0) & (v >= -0.95) & (au <= 0.75 * (v + 0.95))) | ((v > 0.0) & (v <= 0.95) & (au <= 0.25)),
    (r <= 1.0) & ((u - 0.45) ** 2 + v**2 >= 0.8**2),
  ]
  return jnp.stack(masks)[shape]


def _pattern(kind, x, y, period, phase):
  """Texture/background patterns in {0, 1}: solid/plain (0), stripes, dots, checkers."""
  s = jnp.sin(2 * jnp.pi * (x + y * 0.3 + phase) / period) > 0
  d = (jnp.mod(x + phase, period) - period / 2) ** 2 + (jnp.mod(y + phase, period) - period / 2) ** 2
  dots = d < (period / 3.5) ** 2
  checks = (jnp.floor((x + phase) / period) + jnp.floor((y + phase) / period)) % 2 == 1
  return jnp.stack([jnp.zeros_like(s), s, dots, checks]).astype(jnp.float32)[kind]


def render_one(f: dict, size: int) -> jax.Array:
  """One image (size, size, 3) in [0, 1] from the factors of `sample_factors` (one row)."""
  u = f['u']
  ix, iy = jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing='xy')
  seed = (u[U_NOISE] * (1 << 24)).astype(jnp.uint32)
  noise = lambda salt: _hash_noise(ix, iy, seed + jnp.uint32(salt))[..., None]  # noqa: E731
  px = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
  y, x = jnp.meshgrid(px, px, indexing='ij')
  style = f['style']
  palette = jnp.asarray(list(COLOURS.values()), jnp.float32)

  # Background: plain, noisy, striped, checkered or gradient, from two random tones.
  tone_a = 0.25 + 0.4 * u[U_TONES : U_TONES + 3]
  tone_b = jnp.clip(tone_a - 0.25 + 0.5 * u[U_TONES + 3 : U_TONES + 6], 0, 1)
  bg_kind = f['background']
  phase = u[U_PHASE]
  stripes = _pattern(1, x * size, y * size, 6.0, phase * 6)[..., None]
  checks = _pattern(3, x * size, y * size, 5.0, phase * 5)[..., None]
  ramp = (x * jnp.cos(phase * 6.28) + y * jnp.sin(phase * 6.28))[..., None]
  mix = jnp.stack([jnp.zeros_like(stripes), noise(1), stripes, checks, (ramp + 1.0) / 2.0])[bg_kind]
  background = tone_a * (1 - mix) + tone_b * mix

  # Distractors (drawn first, behind the object): small random shapes of random colours.
  def draw_distractor(i, img):
    d = jax.lax.dynamic_slice(u, (U_CLUTTER + 4 * i,), (4,))
    centre = 0.12 + 0.76 * d[:2]
    radius = 0.08 + 0.05 * d[2]
    shape = jnp.floor(d[3] * len(SHAPES)).astype(jnp.int32)
    colour = palette[jnp.floor(jnp.mod(d[3] * 97.0, 1.0) * len(COLOURS)).astype(jnp.int32)]
    inside = _inside(shape, (x - centre[0]) / radius, (y - centre[1]) / radius)
    return jnp.where((inside & (i < f['clutter']))[..., None], colour, img)

  scene = jax.lax.fori_loop(0, MAX_CLUTTER, draw_distractor, background)

  # The object, in local coordinates: rotate by -angle, divide by the radius.
  dx, dy = x - f['center'][0], y - f['center'][1]
  c, s = jnp.cos(f['angle']), jnp.sin(f['angle'])
  u, v = (c * dx + s * dy) / f['scale'], (-s * dx + c * dy) / f['scale']
  inside = _inside(f['shape'], u, v)
  pixel = 1.0 / (size * f['scale'])  # One pixel in local units.
  grown = _inside(f['shape'], u * (1 - 1.5 * pixel), v * (1 - 1.5 * pixel))
  shrunk = _inside(f['shape'], u * (1 + 1.5 * pixel), v * (1 + 1.5 * pixel))
  thin, thick = inside & ~shrunk, grown & ~shrunk
  colour = palette[f['colour']]
  tex = _pattern(f['texture'], u * 3.0, v * 3.0, 1.0, 0.0)[..., None]
  shading = (1.05 - 0.15 * (u + v))[..., None]
  fill = jnp.clip(colour * shading * (1 - 0.45 * tex), 0, 1)

  photo = jnp.where(inside[..., None], fill, scene)
  photo = jnp.clip(photo + 0.06 * (noise(2) - 0.5), 0, 1)
  paper = 0.93 - 0.08 * mix
  sketch = jnp.where(thin[..., None], 0.12, jnp.broadcast_to(paper, (size, size, 3)))
  sketch = sketch + 0.04 * (noise(3) - 0.5)
  poster = lambda img, levels: jnp.round(img * (levels - 1)) / (levels - 1)  # noqa: E731
  cartoon = jnp.where(inside[..., None], colour, poster(scene, 3))
  cartoon = jnp.where(thick[..., None], 0.05, cartoon)
  rendition = poster(1.0 - photo, 3)
  image = jnp.stack([photo, sketch, cartoon, rendition])[style]
  return jnp.clip(image, 0, 1)


def render(factors: dict, size: int) -> jax.Array:
  """(N, size, size, 3) float32 images in [0, 1]."""
  return jax.vmap(lambda f: render_one(f, size))(factors)


class Captioner:
  """Captions as token ids, built in JAX from factors with attribute dropout (vmappable)."""

  # Template slots: (word kind, group). Kinds: a literal word or a factor; groups drop together.
  SLOTS = (
    ('a', 'style'),
    ('STYLE', 'style'),
    ('of', 'style'),
    ('a', None),
    ('SIZE', 'size'),
    ('COLOUR', 'colour'),
    ('TEXTURE', 'texture'),
    ('SHAPE', None),
    ('on', 'background'),
    ('a', 'background'),
    ('BACKGROUND', 'background'),
    ('background', 'background'),
  )
  GROUPS = ('style', 'size', 'colour', 'texture', 'background')

  def __init__(self, tokenizer, context_length: int, dropout: float):
    if context_length < len(self.SLOTS) + 2:
      raise ConfigError(
        f'context_length {context_length} is too short for captions; use >= {len(self.SLOTS) + 2}'
      )
    self.tok = tokenizer
    self.context_length = context_length
    self.dropout = dropout
    ids = lambda words: jnp.asarray([tokenizer.word_id(w) for w in words], jnp.int32)  # noqa: E731
    self.tables = {
      'STYLE': ids(STYLES),
      'SIZE': ids(['small', 'big']),
      'COLOUR': ids(COLOUR_NAMES),
      'TEXTURE': ids(TEXTURES),
      'SHAPE': ids(SHAPES),
      'BACKGROUND': ids(BACKGROUNDS),
    }

  def one(self, f: dict) -> jax.Array:
    keep_group = f['u'][U_CAPTION : U_CAPTION + len(self.GROUPS)] >= self.dropout
    keep_group = dict(zip(self.GROUPS, keep_group))
    # Facts that the image does not show are never captioned: no colour or texture in a sketch; a size
    # word only for clearly small or big objects.
    keep_group['colour'] = keep_group['colour'] & (f['style'] != 1)
    keep_group['texture'] = keep_group['texture'] & (f['style'] != 1)
    small, big = f['scale'] < 0.22, f['scale'] > 0.4
    keep_group['size'] = keep_group['size'] & (small | big)
    values = {
      'STYLE': f['style'],
      'SIZE': jnp.where(small, 0, 1),
      'COLOUR': f['colour'],
      'TEXTURE': f['texture'],
      'SHAPE': f.get('caption_shape', f['shape']),  # A noisy web caption may name another shape.
      'BACKGROUND': f['background'],
    }
    words, keep = [], []
    for kind, group in self.SLOTS:
      words.append(self.tables[kind][values[kind]] if kind in self.tables else self.tok.word_id(kind))
      keep.append(jnp.bool_(True) if group is None else keep_group[group])
    words, keep = jnp.stack(words), jnp.stack(keep)
    order = jnp.argsort(~keep, stable=True)  # Kept words first, in template order.
    words = jnp.where(keep[order], words[order], 0)
    n = keep.sum()
    tokens = jnp.zeros((self.context_length,), jnp.int32).at[0].set(self.tok.sot)
    tokens = tokens.at[1 : 1 + len(self.SLOTS)].set(words)
    return tokens.at[1 + n].set(self.tok.eot)

  def __call__(self, factors: dict) -> jax.Array:
    return jax.vmap(self.one)(factors)


def make_tokenizer():
  from common import clip

  return clip.WordTokenizer(WORDS)


def split_key(seed, split: str, index=0):
  """The key of chunk `index` of `split` under `seed`: every split has its own stream."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), SPLITS[split].split_id), index)


def split_factors(key, spec, uniform_labels, start, n: int, num_classes: int):
  """Labels and factors of rows start..start+n-1 of a split: labels row % C, or uniform when
  `uniform_labels` (the web stream), drawn per row from fold_in(key, row + 2**30). `caption_shape` is the
  shape the caption names: the label, or with probability `spec['shape_noise']` a uniform one of the C
  classes, drawn from fold_in(fold_in(key, row + 2**30), 1) (so no other draw changes)."""
  spec = spec_arrays(spec) if isinstance(spec, SplitSpec) else spec
  rows = start + jnp.arange(n)
  label_key = lambda r: jax.random.fold_in(key, r + (1 << 30))  # noqa: E731
  uniform = jax.vmap(lambda r: jax.random.randint(label_key(r), (), 0, num_classes))
  labels = jnp.where(uniform_labels, uniform(rows), rows % num_classes)
  factors = sample_factors(key, spec, labels, start)
  noise = jax.vmap(lambda r: jax.random.uniform(jax.random.fold_in(label_key(r), 1), (2,)))(rows)
  named = jnp.floor(noise[:, 1] * num_classes).astype(jnp.int32)
  factors['caption_shape'] = jnp.where(noise[:, 0] < spec['shape_noise'], named, labels)
  return labels, factors


@functools.partial(jax.jit, static_argnames=('n', 'num_classes', 'size'))
def _make_chunk(key, spec, uniform_labels, start, n, num_classes, size):
  labels, factors = split_factors(key, spec, uniform_labels, start, n, num_classes)
  return render(factors, size), labels, factors


def make_split(seed, split: str, n: int, num_classes: int, size: int, index=0, chunk: int = 64):
  """(images, labels, factors) of rows 0..n-1 of `split`: balanced labels (row % C) except on the web
  stream, whose labels are uniform. Row r depends only on (seed, split, index, r), not on `chunk`, which only
  sets the compiled batch (one compilation serves every split and every n)."""
  spec = spec_arrays(SPLITS[split])
  key = split_key(seed, split, index)
  parts = [
    _make_chunk(key, spec, split == 'web', start, chunk, num_classes, size) for start in range(0, n, chunk)
  ]
  return jax.tree.map(lambda *xs: jnp.concatenate(xs)[:n], *parts)


# ----------------------------------------------------------------------------------------------------------
# ImageNet-style folders for the real benchmark.

IMAGE_EXTENSIONS = ('.jpeg', '.jpg', '.png', '.bmp', '.webp')
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def read_class_folders(root: str, classes: Sequence[str], *, subset: bool = False, by_index: bool = False):
  """`[(path, label)]` from `root/<class>/<image>`, labels being positions in `classes` (e.g. wnids).

  `by_index`: folders are named '0'...'999' (ImageNet-V2). `subset`: the folder may hold only some classes
  (ImageNet-A and -R cover 200); otherwise every class must be present. A missing or unknown class folder
  raises a one-line `ConfigError` naming it.
  """
  if not os.path.isdir(root):
    raise ConfigError(f'data folder {root} does not exist; set the data paths in the config')
  names = [str(i) for i in range(len(classes))] if by_index else list(classes)
  label_of = {name: i for i, name in enumerate(names)}
  present = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  unknown = [d for d in present if d not in label_of]
  if unknown:
    raise ConfigError(
      f"{root}: folder '{unknown[0]}' is not one of the {len(names)} classes; check the class list"
    )
  missing = [n for n in names if n not in set(present)]
  if missing and not subset:
    raise ConfigError(
      f"{root}: {len(missing)} of {len(names)} class folders missing (first: '{missing[0]}'); "
      'point the config at a complete ImageNet-style folder'
    )
  items = []
  for d in present:
    for name in sorted(os.listdir(os.path.join(root, d))):
      if name.lower().endswith(IMAGE_EXTENSIONS):
        items.append((os.path.join(root, d, name), label_of[d]))
  if not items:
    raise ConfigError(f'{root}: no images found; expected {root}/<class>/<image>.jpg')
  return items


def few_shot(items, shots: int, seed: int):
  """`shots` items per class, chosen by a seeded permutation (the CoOp protocol's role)."""
  rng = np.random.default_rng(seed)
  by_class = {}
  for path, label in items:
    by_class.setdefault(label, []).append((path, label))
  chosen = []
  for label in sorted(by_class):
    group = by_class[label]
    if len(group) < shots:
      raise ConfigError(f'class {label} has {len(group)} images, fewer than shots={shots}; lower shots')
    chosen += [group[i] for i in sorted(rng.permutation(len(group))[:shots])]
  return chosen


def hold_out(items, n: int, seed: int):
  """`(val, rest)`: `n` items held out of a folder split for ID validation, `rest` the others (in order).

  Stratified: each class's images are shuffled by a seeded permutation, then the held-out set takes one image
  per class in a seeded class order, round after round, until it has `n` (so class counts differ by at most
  one). The draw depends on `seed` only (the world seed, not the few-shot seed), so every few-shot seed sees
  the same validation images and draws its shots from `rest`: the two never overlap. `n` = 0: nothing held
  out, `rest` is `items` (the few-shot draw is then as before).
  """
  if n < 0 or n > len(items):
    raise ConfigError(f'data.val_size must be in [0, {len(items)}] (images in the train folder), got {n}')
  if n == 0:
    return [], list(items)
  rng = np.random.default_rng([seed, 9])  # 9: the id_val split id, as in the procedural world.
  by_class = {}
  for index, (_, label) in enumerate(items):
    by_class.setdefault(label, []).append(index)
  order = [by_class[label] for label in rng.permutation(sorted(by_class))]
  order = [[group[i] for i in rng.permutation(len(group))] for group in order]
  held, depth = [], 0
  while len(held) < n:
    held += [group[depth] for group in order if depth < len(group)][: n - len(held)]
    depth += 1
  chosen = set(held)
  return [items[i] for i in sorted(held)], [item for i, item in enumerate(items) if i not in chosen]


def load_image_uint8(path: str, size: int) -> np.ndarray:
  """CLIP's geometry: bicubic resize of the short side to `size`, centre crop; HWC uint8."""
  from PIL import Image

  with Image.open(path) as img:
    img = img.convert('RGB')
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), np.uint8)


def clip_normalize(images_uint8) -> np.ndarray:
  """uint8 images -> CLIP's normalised float32 inputs."""
  x = np.asarray(images_uint8, np.float32) / 255.0
  return (x - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)


def load_image(path: str, size: int) -> np.ndarray:
  """CLIP preprocessing of one file: resize, centre crop, normalise (HWC float32)."""
  return clip_normalize(load_image_uint8(path, size))


def load_images(items, size: int, workers: int = 16) -> tuple[np.ndarray, np.ndarray]:
  """All images of `items` as (N, size, size, 3) uint8 (decoded by a thread pool) and their labels; kept
  as uint8 so a whole evaluation split stays in host memory (ImageNet val at 224 px: 7.5 GB)."""
  from concurrent.futures import ThreadPoolExecutor

  with ThreadPoolExecutor(workers) as pool:
    images = list(pool.map(lambda item: load_image_uint8(item[0], size), items))
  return np.stack(images), np.asarray([label for _, label in items], np.int32)


def folder_batches(items, size: int, batch_size: int):
  """Yields normalised (images, labels) batches of a folder split in order (the last may be short)."""
  for start in range(0, len(items), batch_size):
    images, labels = load_images(items[start : start + batch_size], size)
    yield clip_normalize(images), labels


IMAGENET_VARIANTS = {
  # name: (config key of the folder, folder names are indices, subset of the 1000 classes)
  'imagenet_v2': ('imagenet_v2_dir', True, False),
  'imagenet_sketch': ('imagenet_sketch_dir', False, False),
  'imagenet_a': ('imagenet_a_dir', False, True),
  'imagenet_r': ('imagenet_r_dir', False, True),
}


def read_class_list(path: str) -> tuple[list[str], list[str]]:
  """A class list file: one `wnid<TAB or space>class name` per line, in label order."""
  if not os.path.isfile(path):
    raise ConfigError(f'class list {path} does not exist; write one "wnid name" line per class')
  wnids, names = [], []
  with open(path) as f:
    for line in f:
      if line.strip():
        wnid, _, name = line.strip().partition(' ') if '\t' not in line else line.strip().partition('\t')
        wnids.append(wnid)
        names.append(name.strip() or wnid)
  return wnids, names
