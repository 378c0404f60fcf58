"""CLIP in Flax Linen: a ViT image tower and a causal text Transformer, named like OpenAI/open_clip.

The parameter tree mirrors the OpenAI / open_clip state dict one-to-one, so a checkpoint converts by renaming
and transposing (`from_openai_state_dict`, `to_openai_state_dict`):

    visual/{conv1, class_embedding, positional_embedding, ln_pre, transformer/resblocks_i, ln_post, proj}
    text/{token_embedding, positional_embedding, transformer/resblocks_i, ln_final, text_projection}
    logit_scale

Each residual block is pre-LayerNorm: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))` with `mlp = c_proj(act(c_fc))`
and `act` QuickGELU (`x * sigmoid(1.702 x)`, OpenAI's weights) or exact GELU (most LAION weights). The text
tower uses a causal mask and pools at the end-of-text token, found as the position of the largest token id
(OpenAI's EOT, 49407, is the largest id; `WordTokenizer` keeps that property). Features are projected, then
the caller normalises them; logits are `exp(logit_scale) * <img, txt>` with the scale clamped at 100.

Also here: `WordTokenizer`, a small word-level tokenizer for in-repo mini-CLIPs, and the Hugging Face to
OpenAI key renaming (`hf_to_openai_state_dict`), so one converter covers the three checkpoint families.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError

LN_EPS = 1e-5  # torch.nn.LayerNorm's default, which OpenAI and open_clip use.


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
  """Architecture of both towers. `ViT-B/16` is `CLIPConfig.vit_b16()`."""

  image_size: int = 32
  patch_size: int = 8
  vision_width: int = 64
  vision_layers: int = 2
  vision_heads: int = 4
  embed_dim: int = 64
  context_length: int = 12
  vocab_size: int = 64
  text_width: int = 64
  text_layers: int = 2
  text_heads: int = 4
  mlp_ratio: int = 4
  quick_gelu: bool = True
  logit_scale_init: float = math.log(1 / 0.07)
  logit_scale_max: float = 100.0
  dtype: str = 'float32'  # Compute dtype ('bfloat16' on GPU); parameters stay float32.

  @classmethod
  def vit_b16(cls) -> 'CLIPConfig':
    return cls(
      image_size=224,
      patch_size=16,
      vision_width=768,
      vision_layers=12,
      vision_heads=12,
      embed_dim=512,
      context_length=77,
      vocab_size=49408,
      text_width=512,
      text_layers=12,
      text_heads=8,
      quick_gelu=True,
    )

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2


def quick_gelu(x):
  return x * jax.nn.sigmoid(1.702 * x)


class Attention(nn.Module):
  """Multi-head self-attention with `query`/`key`/`value`/`out` projections of shapes (D,H,hd) and (H,hd,D)."""

  heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    width = x.shape[-1]
    head_dim = width // self.heads
    dense = lambda name: nn.DenseGeneral((self.heads, head_dim), dtype=self.dtype, name=name)  # noqa: E731
    q, k, v = dense('query')(x), dense('key')(x), dense('value')(x)
    logits = jnp.einsum('...qhd,...khd->...hqk', q, k) / jnp.sqrt(head_dim).astype(q.dtype)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum('...hqk,...khd->...qhd', weights, v)
    return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype, name='out')(out)


class MLP(nn.Module):
  quick_gelu: bool
  ratio: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    h = nn.Dense(width * self.ratio, dtype=self.dtype, name='c_fc')(x)
    h = quick_gelu(h) if self.quick_gelu else jax.nn.gelu(h, approximate=False)
    return nn.Dense(width, dtype=self.dtype, name='c_proj')(h)


class ResidualAttentionBlock(nn.Module):
  heads: int
  quick_gelu: bool
  mlp_ratio: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    ln = lambda name: nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name=name)  # noqa: E731
    x = x + Attention(self.heads, dtype=self.dtype, name='attn')(ln('ln_1')(x), mask)
    return x + MLP(self.quick_gelu, self.mlp_ratio, dtype=self.dtype, name='mlp')(ln('ln_2')(x))


class Transformer(nn.Module):
  layers: int
  heads: int
  quick_gelu: bool
  mlp_ratio: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    for i in range(self.layers):
      block = ResidualAttentionBlock(
        self.heads, self.quick_gelu, self.mlp_ratio, dtype=self.dtype, name=f'resblocks_{i}'
      )
      x = block(x, mask)
    return x


class VisionTransformer(nn.Module):
  """ViT image tower: patchify (conv1, no bias), class token, positions, ln_pre, blocks, ln_post on the class
  token, then `proj` (a bias-free Dense whose kernel is OpenAI's `visual.proj` as is)."""

  config: CLIPConfig

  @nn.compact
  def __call__(self, images):
    c = self.config
    dtype = jnp.dtype(c.dtype)
    x = nn.Conv(
      c.vision_width,
      (c.patch_size, c.patch_size),
      strides=(c.patch_size, c.patch_size),
      padding='VALID',
      use_bias=False,
      dtype=dtype,
      name='conv1',
    )(images.astype(dtype))
    x = x.reshape(x.shape[0], -1, c.vision_width)
    scale = c.vision_width**-0.5
    cls = self.param('class_embedding', nn.initializers.normal(scale), (c.vision_width,))
    pos = self.param(
      'positional_embedding', nn.initializers.normal(scale), (c.num_patches + 1, c.vision_width)
    )
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (x.shape[0], 1, c.vision_width)), x], axis=1)
    x = x + pos.astype(dtype)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, name='ln_pre')(x)
    x = Transformer(
      c.vision_layers, c.vision_heads, c.quick_gelu, c.mlp_ratio, dtype=dtype, name='transformer'
    )(x)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, name='ln_post')(x[:, 0])
    return nn.Dense(c.embed_dim, use_bias=False, dtype=dtype, name='proj')(x)


class TextTransformer(nn.Module):
  """Causal text tower pooled at the end-of-text token (the position of the largest id in each row)."""

  config: CLIPConfig

  @nn.compact
  def __call__(self, tokens):
    c = self.config
    dtype = jnp.dtype(c.dtype)
    x = nn.Embed(
      c.vocab_size, c.text_width, embedding_init=nn.initializers.normal(0.02), name='token_embedding'
    )
    x = x(tokens).astype(dtype)
    pos = self.param('positional_embedding', nn.initializers.normal(0.01), (c.context_length, c.text_width))
    x = x + pos[: tokens.shape[-1]].astype(dtype)
    causal = nn.make_causal_mask(tokens, dtype=jnp.bool_)  # (B, 1, L, L)
    x = Transformer(c.text_layers, c.text_heads, c.quick_gelu, c.mlp_ratio, dtype=dtype, name='transformer')(
      x, causal
    )
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, name='ln_final')(x)
    eot = jnp.argmax(tokens, axis=-1)
    x = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]
    return nn.Dense(c.embed_dim, use_bias=False, dtype=dtype, name='text_projection')(x)


class CLIP(nn.Module):
  """`apply(params, images, tokens)` -> (image features, text features, logit scale); features unnormalised.

  `method=CLIP.encode_image` / `CLIP.encode_text` run one tower. Images are NHWC floats, already normalised.
  """

  config: CLIPConfig

  def setup(self):
    self.visual = VisionTransformer(self.config)
    self.text = TextTransformer(self.config)
    self.logit_scale = self.param('logit_scale', nn.initializers.constant(self.config.logit_scale_init), ())

  def encode_image(self, images):
    return self.visual(images).astype(jnp.float32)

  def encode_text(self, tokens):
    return self.text(tokens).astype(jnp.float32)

  def scale(self):
    """exp(logit_scale), clamped at `logit_scale_max` (100 for CLIP)."""
    return jnp.minimum(jnp.exp(self.logit_scale), self.config.logit_scale_max)

  def __call__(self, images, tokens):
    return self.encode_image(images), self.encode_text(tokens), self.scale()


def normalize(x, axis=-1):
  return x / jnp.linalg.norm(x, axis=axis, keepdims=True).clip(1e-12)


@functools.lru_cache(maxsize=None)
def _jitted_init(config: CLIPConfig):
  return jax.jit(CLIP(config).init)


def init_params(config: CLIPConfig, rng) -> dict:
  images = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
  tokens = jnp.zeros((1, config.context_length), jnp.int32)
  return _jitted_init(config)(rng, images, tokens)['params']


@functools.lru_cache(maxsize=None)
def param_shapes(config: CLIPConfig) -> dict:
  """The parameter tree as `ShapeDtypeStruct`s, without allocating (for checking checkpoints)."""
  return jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))


def contrastive_loss(image_features, text_features, scale):
  """Symmetric InfoNCE over a batch of matched pairs (CLIP's pretraining objective)."""
  logits = scale * normalize(image_features) @ normalize(text_features).T
  labels = jnp.arange(logits.shape[0])
  log_i = jax.nn.log_softmax(logits, axis=-1)
  log_t = jax.nn.log_softmax(logits.T, axis=-1)
  return -0.5 * (log_i[labels, labels].mean() + log_t[labels, labels].mean())


# ----------------------------------------------------------------------------------------------------------
# Tokenizer for in-repo mini-CLIPs.


class WordTokenizer:
  """Lower-cased words split on non-letters; ids: 0 pad, 1 unk, then the vocabulary, then SOT, then EOT.

  EOT is the largest id, so `TextTransformer` finds it with an argmax, as with OpenAI's BPE tokenizer.
  """

  PAD, UNK = 0, 1

  def __init__(self, words: Sequence[str]):
    words = list(dict.fromkeys(w.lower() for w in words))
    self.words = words
    self.index = {w: i + 2 for i, w in enumerate(words)}
    self.sot = len(words) + 2
    self.eot = len(words) + 3

  @property
  def vocab_size(self) -> int:
    return self.eot + 1

  def word_id(self, word: str) -> int:
    return self.index.get(word.lower(), self.UNK)

  def encode(self, text: str) -> list[int]:
    return [self.sot] + [self.word_id(w) for w in re.findall(r'[a-z]+', text.lower())] + [self.eot]

  def __call__(self, texts: Sequence[str], context_length: int) -> np.ndarray:
    """(len(texts), context_length) int32, padded with 0; too-long texts keep their EOT as the last token."""
    out = np.zeros((len(texts), context_length), np.int32)
    for row, text in enumerate(texts):
      ids = self.encode(text)
      if len(ids) > context_length:
        ids = ids[: context_length - 1] + [self.eot]
      out[row, : len(ids)] = ids
    return out

  def decode(self, ids) -> str:
    inverse = {i: w for w, i in self.index.items()}
    return ' '.join(inverse[int(i)] for i in ids if int(i) in inverse)


VOCAB_FILE = 'bpe_simple_vocab_16e6.txt.gz'


def default_bpe_vocab() -> str | None:
  """Path of CLIP's BPE vocabulary: $CLIP_BPE_VOCAB, else the copy inside an installed `open_clip` package
  (found without importing it, so torch is not loaded); None when neither exists."""
  import importlib.util
  import os

  path = os.environ.get('CLIP_BPE_VOCAB')
  if path:
    return path
  spec = importlib.util.find_spec('open_clip')
  if spec and spec.submodule_search_locations:
    for folder in spec.submodule_search_locations:
      if os.path.isfile(os.path.join(folder, VOCAB_FILE)):
        return os.path.join(folder, VOCAB_FILE)
  return None


class ClipBPETokenizer:
  """OpenAI CLIP's byte-level BPE (vocabulary 49408; SOT 49406, EOT 49407; context 77), read from
  `bpe_simple_vocab_16e6.txt.gz` (MIT licence; ships in the open_clip wheel).

  Text is HTML-unescaped, whitespace-collapsed and lower-cased (OpenAI also runs `ftfy`, which changes only
  mis-decoded text), split into words by CLIP's pattern (contractions, letter runs, single digits, other
  symbol runs), and each word's bytes are merged by rank with '</w>' marking the word end.
  """

  def __init__(self, vocab_path: str | None = None):
    import gzip

    from common import tokenizers

    path = vocab_path or default_bpe_vocab()
    if path is None:
      raise ConfigError('CLIP BPE vocabulary not found; set $CLIP_BPE_VOCAB to bpe_simple_vocab_16e6.txt.gz')
    with gzip.open(path, 'rt', encoding='utf-8') as f:
      lines = f.read().split('\n')
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1] if line.strip()]
    self.byte_char = tokenizers.bytes_to_unicode()
    chars = list(self.byte_char.values())
    vocab = chars + [c + '</w>' for c in chars] + [''.join(m) for m in merges]
    vocab += ['<|startoftext|>', '<|endoftext|>']
    self.encoder = {tok: i for i, tok in enumerate(vocab)}
    self.decoder = {i: tok for tok, i in self.encoder.items()}
    self.ranks = {m: i for i, m in enumerate(merges)}
    self.sot, self.eot = self.encoder['<|startoftext|>'], self.encoder['<|endoftext|>']
    letter, number = tokenizers._unicode_classes()
    self.pattern = re.compile(
      f"<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[{letter}]+|[{number}]|[^\\s{letter}{number}]+",
      re.IGNORECASE,
    )
    self._cache = {}

  @property
  def vocab_size(self) -> int:
    return len(self.encoder)

  def _bpe(self, token: str) -> list[str]:
    """Merges the lowest-ranked adjacent pair, everywhere it occurs, until no known pair is left."""
    if token in self._cache:
      return self._cache[token]
    word = list(token[:-1]) + [token[-1] + '</w>']
    while len(word) > 1:
      rank, pair = min((self.ranks.get(p, math.inf), p) for p in zip(word, word[1:]))
      if rank == math.inf:
        break
      merged, i = [], 0
      while i < len(word):
        if i < len(word) - 1 and (word[i], word[i + 1]) == pair:
          merged.append(word[i] + word[i + 1])
          i += 2
        else:
          merged.append(word[i])
          i += 1
      word = merged
    self._cache[token] = word
    return word

  def encode(self, text: str) -> list[int]:
    import html

    text = html.unescape(html.unescape(text))
    text = ' '.join(text.split()).lower()
    ids = []
    for piece in self.pattern.findall(text):
      piece = ''.join(self.byte_char[b] for b in piece.encode('utf-8'))
      ids.extend(self.encoder[t] for t in self._bpe(piece))
    return ids

  def __call__(self, texts: Sequence[str], context_length: int = 77) -> np.ndarray:
    """(len(texts), context_length) int32: SOT, tokens, EOT, zeros; too-long texts end with EOT."""
    out = np.zeros((len(texts), context_length), np.int32)
    for row, text in enumerate(texts):
      ids = [self.sot] + self.encode(text) + [self.eot]
      if len(ids) > context_length:
        ids = ids[:context_length]
        ids[-1] = self.eot
      out[row, : len(ids)] = ids
    return out

  def decode(self, ids) -> str:
    text = ''.join(self.decoder[int(i)] for i in ids if int(i) not in (0, self.sot, self.eot))
    data = bytearray(self._byte_of[c] for c in text.replace('</w>', ' ') if c in self._byte_of)
    return data.decode('utf-8', errors='replace').replace('  ', ' ').strip()

  @functools.cached_property
  def _byte_of(self) -> dict:
    table = {c: b for b, c in self.byte_char.items()}
    table[' '] = ord(' ')
    return table


# ----------------------------------------------------------------------------------------------------------
# Checkpoint conversion: OpenAI / open_clip state dict (numpy arrays) <-> our Flax parameters.


def _block_from_torch(sd: Mapping[str, np.ndarray], prefix: str, width: int, heads: int) -> dict:
  hd = width // heads
  w_in = sd[prefix + 'attn.in_proj_weight']  # (3W, W): rows q, k, v; y = x @ W.T.
  b_in = sd[prefix + 'attn.in_proj_bias']
  attn = {}
  for j, name in enumerate(('query', 'key', 'value')):
    w = w_in[j * width : (j + 1) * width]  # (W_out, W_in)
    attn[name] = {
      'kernel': w.T.reshape(width, heads, hd),
      'bias': b_in[j * width : (j + 1) * width].reshape(heads, hd),
    }
  attn['out'] = {
    'kernel': sd[prefix + 'attn.out_proj.weight'].T.reshape(heads, hd, width),
    'bias': sd[prefix + 'attn.out_proj.bias'],
  }
  ln = lambda n: {'scale': sd[prefix + n + '.weight'], 'bias': sd[prefix + n + '.bias']}  # noqa: E731
  dense = lambda n: {'kernel': sd[prefix + n + '.weight'].T, 'bias': sd[prefix + n + '.bias']}  # noqa: E731
  return {
    'ln_1': ln('ln_1'),
    'attn': attn,
    'ln_2': ln('ln_2'),
    'mlp': {'c_fc': dense('mlp.c_fc'), 'c_proj': dense('mlp.c_proj')},
  }


def _block_to_torch(p: Mapping[str, Any], prefix: str, width: int) -> dict:
  a = p['attn']
  w_in = np.concatenate(
    [np.asarray(a[n]['kernel']).reshape(width, width).T for n in ('query', 'key', 'value')]
  )
  b_in = np.concatenate([np.asarray(a[n]['bias']).reshape(width) for n in ('query', 'key', 'value')])
  out = {
    prefix + 'attn.in_proj_weight': w_in,
    prefix + 'attn.in_proj_bias': b_in,
    prefix + 'attn.out_proj.weight': np.asarray(a['out']['kernel']).reshape(width, width).T,
    prefix + 'attn.out_proj.bias': np.asarray(a['out']['bias']),
  }
  for n in ('ln_1', 'ln_2'):
    out[prefix + n + '.weight'] = np.asarray(p[n]['scale'])
    out[prefix + n + '.bias'] = np.asarray(p[n]['bias'])
  for n in ('c_fc', 'c_proj'):
    out[prefix + f'mlp.{n}.weight'] = np.asarray(p['mlp'][n]['kernel']).T
    out[prefix + f'mlp.{n}.bias'] = np.asarray(p['mlp'][n]['bias'])
  return out


IGNORED_KEYS = ('input_resolution', 'context_length', 'vocab_size', 'attn_mask')


def _check_shapes(params, expected, path=()):
  if isinstance(expected, Mapping):
    missing = sorted(set(expected) - set(params))
    if missing:
      raise ConfigError(
        f"checkpoint lacks parameter '{'/'.join(path + (missing[0],))}'; is it a CLIP checkpoint?"
      )
    for key in expected:
      _check_shapes(params[key], expected[key], path + (key,))
    return
  shape = tuple(np.shape(params))
  if shape != tuple(expected.shape):
    raise ConfigError(
      f"checkpoint parameter '{'/'.join(path)}' has shape {shape} but the config expects "
      f'{tuple(expected.shape)}; pick the CLIPConfig that matches the checkpoint'
    )


def from_openai_state_dict(state_dict: Mapping[str, Any], config: CLIPConfig) -> dict:
  """OpenAI / open_clip state dict (name -> numpy array) -> Flax params of `CLIP(config)`, float32.

  Linear weights are transposed (torch stores (out, in)); the fused `in_proj` splits into query/key/value
  and reshapes to (D, H, hd); the patch conv goes (O, I, H, W) -> (H, W, I, O); `visual.proj` and
  `text_projection` are used as `x @ P` in both frameworks, so they are not transposed. A shape that does not
  fit the config raises a one-line `ConfigError` naming the parameter.
  """
  sd = {
    k.removeprefix('module.'): np.asarray(v, np.float32)
    for k, v in state_dict.items()
    if k.removeprefix('module.') not in IGNORED_KEYS and not k.endswith('attn_mask')
  }
  c = config
  try:
    visual = {
      'conv1': {'kernel': sd['visual.conv1.weight'].transpose(2, 3, 1, 0)},
      'class_embedding': sd['visual.class_embedding'],
      'positional_embedding': sd['visual.positional_embedding'],
      'ln_pre': {'scale': sd['visual.ln_pre.weight'], 'bias': sd['visual.ln_pre.bias']},
      'transformer': {
        f'resblocks_{i}': _block_from_torch(
          sd, f'visual.transformer.resblocks.{i}.', c.vision_width, c.vision_heads
        )
        for i in range(c.vision_layers)
      },
      'ln_post': {'scale': sd['visual.ln_post.weight'], 'bias': sd['visual.ln_post.bias']},
      'proj': {'kernel': sd['visual.proj']},
    }
    text = {
      'token_embedding': {'embedding': sd['token_embedding.weight']},
      'positional_embedding': sd['positional_embedding'],
      'transformer': {
        f'resblocks_{i}': _block_from_torch(sd, f'transformer.resblocks.{i}.', c.text_width, c.text_heads)
        for i in range(c.text_layers)
      },
      'ln_final': {'scale': sd['ln_final.weight'], 'bias': sd['ln_final.bias']},
      'text_projection': {'kernel': sd['text_projection']},
    }
  except KeyError as e:
    raise ConfigError(
      f'checkpoint lacks parameter {e.args[0]!r}; does the config have too many layers?'
    ) from None
  except ValueError as e:  # A fused in_proj whose width does not split into the config's heads.
    raise ConfigError(f'checkpoint attention weights do not fit the config widths/heads ({e})') from None
  params = {'visual': visual, 'text': text, 'logit_scale': np.asarray(sd['logit_scale']).reshape(())}
  _check_shapes(params, param_shapes(config))
  extra_layers = [k for k in sd if k.startswith(f'visual.transformer.resblocks.{c.vision_layers}.')] + [
    k for k in sd if k.startswith(f'transformer.resblocks.{c.text_layers}.')
  ]
  if extra_layers:
    raise ConfigError(
      f"checkpoint has parameter '{extra_layers[0]}' beyond the config's layers; pick its config"
    )
  return params


def to_openai_state_dict(params: Mapping[str, Any], config: CLIPConfig) -> dict:
  """The inverse of `from_openai_state_dict`: Flax params -> OpenAI names and layouts (numpy)."""
  v, t = params['visual'], params['text']
  sd = {
    'visual.conv1.weight': np.asarray(v['conv1']['kernel']).transpose(3, 2, 0, 1),
    'visual.class_embedding': np.asarray(v['class_embedding']),
    'visual.positional_embedding': np.asarray(v['positional_embedding']),
    'visual.ln_pre.weight': np.asarray(v['ln_pre']['scale']),
    'visual.ln_pre.bias': np.asarray(v['ln_pre']['bias']),
    'visual.ln_post.weight': np.asarray(v['ln_post']['scale']),
    'visual.ln_post.bias': np.asarray(v['ln_post']['bias']),
    'visual.proj': np.asarray(v['proj']['kernel']),
    'token_embedding.weight': np.asarray(t['token_embedding']['embedding']),
    'positional_embedding': np.asarray(t['positional_embedding']),
    'ln_final.weight': np.asarray(t['ln_final']['scale']),
    'ln_final.bias': np.asarray(t['ln_final']['bias']),
    'text_projection': np.asarray(t['text_projection']['kernel']),
    'logit_scale': np.asarray(params['logit_scale']),
  }
  for i in range(config.vision_layers):
    sd.update(
      _block_to_torch(
        v['transformer'][f'resblocks_{i}'], f'visual.transformer.resblocks.{i}.', config.vision_width
      )
    )
  for i in range(config.text_layers):
    sd.update(
      _block_to_torch(t['transformer'][f'resblocks_{i}'], f'transformer.resblocks.{i}.', config.text_width)
    )
  return sd


_HF_BLOCK = {
  'layer_norm1': 'ln_1',
  'layer_norm2': 'ln_2',
  'mlp.fc1': 'mlp.c_fc',
  'mlp.fc2': 'mlp.c_proj',
  'self_attn.out_proj': 'attn.out_proj',
}


def hf_to_openai_state_dict(state_dict: Mapping[str, Any]) -> dict:
  """Hugging Face `CLIPModel` names -> OpenAI names (q/k/v fused into `in_proj`, projections transposed)."""
  sd = {k: np.asarray(v) for k, v in state_dict.items()}
  out = {}
  towers = (('vision_model.encoder.layers.', 'visual.transformer.resblocks.'),
            ('text_model.encoder.layers.', 'transformer.resblocks.'))  # fmt: skip
  layers = {}
  for key, value in sd.items():
    for src, dst in towers:
      if key.startswith(src):
        i, rest = key[len(src) :].split('.', 1)
        layers.setdefault((dst, int(i)), {})[rest] = value
        break
    else:
      out[key] = value
  for (dst, i), p in layers.items():
    prefix = f'{dst}{i}.'
    for kind in ('weight', 'bias'):
      out[prefix + f'attn.in_proj_{kind}'] = np.concatenate([p[f'self_attn.{n}_proj.{kind}'] for n in 'qkv'])
      for src, name in _HF_BLOCK.items():
        out[prefix + f'{name}.{kind}'] = p[f'{src}.{kind}']
  renames = {
    'vision_model.embeddings.patch_embedding.weight': 'visual.conv1.weight',
    'vision_model.embeddings.class_embedding': 'visual.class_embedding',
    'vision_model.embeddings.position_embedding.weight': 'visual.positional_embedding',
    'vision_model.pre_layrnorm.weight': 'visual.ln_pre.weight',
    'vision_model.pre_layrnorm.bias': 'visual.ln_pre.bias',
    'vision_model.post_layernorm.weight': 'visual.ln_post.weight',
    'vision_model.post_layernorm.bias': 'visual.ln_post.bias',
    'text_model.embeddings.token_embedding.weight': 'token_embedding.weight',
    'text_model.embeddings.position_embedding.weight': 'positional_embedding',
    'text_model.final_layer_norm.weight': 'ln_final.weight',
    'text_model.final_layer_norm.bias': 'ln_final.bias',
  }
  result = {}
  for key, value in out.items():
    if key in renames:
      result[renames[key]] = value
    elif key == 'visual_projection.weight':
      result['visual.proj'] = value.T
    elif key == 'text_projection.weight':
      result['text_projection'] = value.T
    elif key.endswith('position_ids'):
      continue
    else:
      result[key] = value
  return result
