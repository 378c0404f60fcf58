"""Tests of the Flax CLIP: shapes, causal text tower, tokenizer, converter round trips and a numpy reference
forward written from the OpenAI state dict (torch semantics), so the name mapping is checked without torch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import clip
from common.errors import ConfigError

CONFIG = clip.CLIPConfig(
  image_size=16,
  patch_size=8,
  vision_width=16,
  vision_layers=1,
  vision_heads=2,
  embed_dim=8,
  context_length=6,
  vocab_size=12,
  text_width=16,
  text_layers=1,
  text_heads=2,
)


@pytest.fixture(scope='module')
def params():
  return clip.init_params(CONFIG, jax.random.PRNGKey(0))


def random_state_dict(seed=0):
  """A random OpenAI-layout state dict for CONFIG (what a converted .pt would hold)."""
  expected = clip.to_openai_state_dict(clip.init_params(CONFIG, jax.random.PRNGKey(1)), CONFIG)
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=v.shape).astype(np.float32) * 0.3 for k, v in expected.items()}


def _ln(x, w, b):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5) * w + b


def _block(sd, p, x, heads, mask):
  width = x.shape[-1]
  hd = width // heads
  h = _ln(x, sd[p + 'ln_1.weight'], sd[p + 'ln_1.bias'])
  qkv = h @ sd[p + 'attn.in_proj_weight'].T + sd[p + 'attn.in_proj_bias']
  q, k, v = np.split(qkv, 3, axis=-1)
  split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, hd).transpose(0, 2, 1, 3)  # noqa: E731
  q, k, v = split(q), split(k), split(v)
  logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
  if mask is not None:
    logits = np.where(mask, logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w = w / w.sum(-1, keepdims=True)
  a = (w @ v).transpose(0, 2, 1, 3).reshape(x.shape)
  x = x + a @ sd[p + 'attn.out_proj.weight'].T + sd[p + 'attn.out_proj.bias']
  h = _ln(x, sd[p + 'ln_2.weight'], sd[p + 'ln_2.bias'])
  h = h @ sd[p + 'mlp.c_fc.weight'].T + sd[p + 'mlp.c_fc.bias']
  h = h / (1 + np.exp(-1.702 * h))
  return x + h @ sd[p + 'mlp.c_proj.weight'].T + sd[p + 'mlp.c_proj.bias']


def reference_features(sd, images, tokens):
  """OpenAI CLIP's forward in numpy, from torch-layout weights (NCHW conv, (out, in) linears)."""
  c = CONFIG
  b, ps = images.shape[0], c.patch_size
  g = c.image_size // ps
  patches = images.reshape(b, g, ps, g, ps, 3).transpose(0, 1, 3, 5, 2, 4).reshape(b, g * g, 3 * ps * ps)
  x = patches @ sd['visual.conv1.weight'].reshape(c.vision_width, -1).T
  cls = np.broadcast_to(sd['visual.class_embedding'], (b, 1, c.vision_width))
  x = np.concatenate([cls, x], 1) + sd['visual.positional_embedding']
  x = _ln(x, sd['visual.ln_pre.weight'], sd['visual.ln_pre.bias'])
  for i in range(c.vision_layers):
    x = _block(sd, f'visual.transformer.resblocks.{i}.', x, c.vision_heads, None)
  img = _ln(x[:, 0], sd['visual.ln_post.weight'], sd['visual.ln_post.bias']) @ sd['visual.proj']
  t = sd['token_embedding.weight'][tokens] + sd['positional_embedding']
  n = tokens.shape[1]
  mask = np.tril(np.ones((n, n), bool))[None, None]
  for i in range(c.text_layers):
    t = _block(sd, f'transformer.resblocks.{i}.', t, c.text_heads, mask)
  t = _ln(t, sd['ln_final.weight'], sd['ln_final.bias'])
  txt = t[np.arange(len(tokens)), tokens.argmax(-1)] @ sd['text_projection']
  return img, txt


def test_forward_matches_numpy_reference_of_openai_weights():
  sd = random_state_dict()
  params = clip.from_openai_state_dict(sd, CONFIG)
  rng = np.random.default_rng(3)
  images = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
  tokens = np.array([[10, 3, 4, 11, 0, 0], [10, 5, 11, 0, 0, 0]], np.int32)
  img, txt, scale = clip.CLIP(CONFIG).apply({'params': params}, images, tokens)
  ref_img, ref_txt = reference_features(sd, images.astype(np.float64), tokens)
  np.testing.assert_allclose(img, ref_img, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(txt, ref_txt, atol=1e-4, rtol=1e-4)
  assert float(scale) == pytest.approx(min(np.exp(sd['logit_scale']), 100.0), rel=1e-6)


def test_round_trips_are_exact(params):
  sd = clip.to_openai_state_dict(params, CONFIG)
  back = clip.from_openai_state_dict(sd, CONFIG)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, back)
  sd2 = random_state_dict(seed=5)
  again = clip.to_openai_state_dict(clip.from_openai_state_dict(sd2, CONFIG), CONFIG)
  assert set(again) == set(sd2)
  for k in sd2:
    np.testing.assert_array_equal(again[k], sd2[k], err_msg=k)


def openai_to_hf(sd):
  """The inverse renaming, written independently of `hf_to_openai_state_dict`, to check it."""
  out = {}
  for key, value in sd.items():
    for src, dst in (('visual.transformer.resblocks.', 'vision_model.encoder.layers.'),
                     ('transformer.resblocks.', 'text_model.encoder.layers.')):  # fmt: skip
      if key.startswith(src):
        i, rest = key[len(src) :].split('.', 1)
        p = f'{dst}{i}.'
        if rest.startswith('attn.in_proj_'):
          kind = rest.rsplit('_', 1)[1]
          for n, part in zip('qkv', np.split(value, 3)):
            out[f'{p}self_attn.{n}_proj.{kind}'] = part
        else:
          rest = rest.replace('ln_1', 'layer_norm1').replace('ln_2', 'layer_norm2')
          rest = rest.replace('mlp.c_fc', 'mlp.fc1').replace('mlp.c_proj', 'mlp.fc2')
          out[p + rest.replace('attn.out_proj', 'self_attn.out_proj')] = value
        break
    else:
      name = {
        'visual.conv1.weight': 'vision_model.embeddings.patch_embedding.weight',
        'visual.class_embedding': 'vision_model.embeddings.class_embedding',
        'visual.positional_embedding': 'vision_model.embeddings.position_embedding.weight',
        'visual.ln_pre.weight': 'vision_model.pre_layrnorm.weight',
        'visual.ln_pre.bias': 'vision_model.pre_layrnorm.bias',
        'visual.ln_post.weight': 'vision_model.post_layernorm.weight',
        'visual.ln_post.bias': 'vision_model.post_layernorm.bias',
        'token_embedding.weight': 'text_model.embeddings.token_embedding.weight',
        'positional_embedding': 'text_model.embeddings.position_embedding.weight',
        'ln_final.weight': 'text_model.final_layer_norm.weight',
        'ln_final.bias': 'text_model.final_layer_norm.bias',
        'logit_scale': 'logit_scale',
      }.get(key)
      if key == 'visual.proj':
        out['visual_projection.weight'] = value.T
      elif key == 'text_projection':
        out['text_projection.weight'] = value.T
      else:
        out[name] = value
  return out


def test_hugging_face_names_map_to_openai():
  sd = random_state_dict(seed=2)
  back = clip.hf_to_openai_state_dict(openai_to_hf(sd))
  assert set(back) == set(sd)
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


def test_shape_mismatch_is_one_line_error_naming_the_parameter():
  sd = random_state_dict()
  sd['visual.proj'] = np.zeros((16, 9), np.float32)
  with pytest.raises(ConfigError, match='visual/proj/kernel') as info:
    clip.from_openai_state_dict(sd, CONFIG)
  assert '\n' not in str(info.value)
  sd = random_state_dict()
  with pytest.raises(ConfigError, match='resblocks'):
    clip.from_openai_state_dict(sd, CONFIG.__class__(**{**CONFIG.__dict__, 'text_layers': 2}))


def test_text_tower_is_causal_and_pools_at_eot(params):
  model = clip.CLIP(CONFIG)
  tokens = jnp.array([[10, 3, 4, 11, 0, 0], [10, 3, 4, 11, 7, 7]], jnp.int32)  # Same up to EOT.
  txt = model.apply({'params': params}, tokens, method=clip.CLIP.encode_text)
  np.testing.assert_allclose(txt[0], txt[1], atol=1e-6)  # Tokens after EOT cannot leak backwards.
  other = model.apply({'params': params}, tokens.at[:, 1].set(5), method=clip.CLIP.encode_text)
  assert not np.allclose(other[0], txt[0])


def test_word_tokenizer_ids_and_padding():
  tok = clip.WordTokenizer(['a', 'photo', 'of', 'circle'])
  assert tok.encode('A photo of a circle.') == [6, 2, 3, 4, 2, 5, 7]
  assert tok.eot == tok.vocab_size - 1 and tok.encode('zebra') == [6, 1, 7]
  out = tok(['a circle', 'a photo of a circle a circle'], context_length=5)
  np.testing.assert_array_equal(out, [[6, 2, 5, 7, 0], [6, 2, 3, 4, 7]])
  assert tok.decode(out[0]) == 'a circle'


def test_clip_bpe_merges_on_a_tiny_vocabulary(tmp_path):
  import gzip

  path = tmp_path / 'vocab.txt.gz'
  with gzip.open(path, 'wt', encoding='utf-8') as f:
    f.write('#version: 0.2\nh e\nl l\nhe ll\nhell o</w>\n')
  tok = clip.ClipBPETokenizer(str(path))
  assert tok.vocab_size == 512 + 4 + 2 and (tok.sot, tok.eot) == (516, 517)
  l_end = tok.encoder['l</w>']
  assert tok.encode('Hello') == [515] and tok.encode('hel') == [512, l_end]
  np.testing.assert_array_equal(tok(['hello hello hello'], 4), [[516, 515, 515, 517]])  # Truncated, EOT kept.
  assert tok.decode([516, 515, 512, l_end, 517]) == 'hello hel'


def test_clip_bpe_matches_reference_encodings():
  path = clip.default_bpe_vocab()
  if path is None:
    pytest.skip('CLIP BPE vocabulary not found (install open_clip_torch or set $CLIP_BPE_VOCAB)')
  tok = clip.ClipBPETokenizer(path)
  assert (tok.vocab_size, tok.sot, tok.eot) == (49408, 49406, 49407)
  np.testing.assert_array_equal(
    tok(['a photo of a cat', 'a photo of a dog.'], 8),
    [[49406, 320, 1125, 539, 320, 2368, 49407, 0], [49406, 320, 1125, 539, 320, 1929, 269, 49407]],
  )
  assert tok.encode('Hello   world') == [3306, 1002]


def test_contrastive_loss_hand_value():
  f = jnp.eye(2)
  loss = clip.contrastive_loss(f, f, 1.0)
  assert float(loss) == pytest.approx(-np.log(np.e / (np.e + 1)), rel=1e-6)


def test_open_clip_features_match():
  open_clip = pytest.importorskip('open_clip')
  torch = pytest.importorskip('torch')
  model = open_clip.CLIP(
    embed_dim=8,
    vision_cfg=open_clip.CLIPVisionCfg(layers=1, width=16, head_width=8, patch_size=8, image_size=16),
    text_cfg=open_clip.CLIPTextCfg(context_length=6, vocab_size=12, width=16, heads=2, layers=1),
    quick_gelu=True,
  )
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  params = clip.from_openai_state_dict(sd, CONFIG)
  images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
  tokens = np.array([[10, 3, 4, 11, 0, 0], [10, 5, 11, 0, 0, 0]])
  img, txt, _ = clip.CLIP(CONFIG).apply({'params': params}, images, tokens)
  with torch.no_grad():
    t_img = model.encode_image(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    t_txt = model.encode_text(torch.from_numpy(tokens)).numpy()
  np.testing.assert_allclose(img, t_img, atol=1e-4)
  np.testing.assert_allclose(txt, t_txt, atol=1e-4)
