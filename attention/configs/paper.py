"""Stick-breaking attention (arXiv 2410.17980) at the paper's scale: a 1.23 B-parameter decoder trained at
2^11 = 2048 tokens and evaluated at 2048, 4096, 8192 and 16384 (2^14), softmax+RoPE against
stick-breaking. Not run here: it documents what the full-scale experiment takes.

Model: 24 layers, d_model 2048, 16 heads (head_dim 128), SwiGLU 5632, tied embeddings, bfloat16 compute
with float32 parameters, rematerialised blocks: N = 1,233,750,016 parameters (softmax; stick-breaking
+147,456). Byte-level (vocabulary 256) where the paper used a subword tokenizer, so losses are per byte.

Data: `corpus='files:<glob>'` must name a large local text corpus (tens of GB; the Python standard
library and Shakespeare are far too small for this model); its held-out files must hold at least
`eval_windows` x 16,385 bytes.

Token budget and compute: batch 256 x 2048 = 524,288 tokens per step, 50,000 steps = 26.2 B tokens
(about 21 tokens per parameter). Training FLOPs ~ 6 N D = 6 x 1.234e9 x 2.62e10 = 1.94e20 per variant,
plus attention (~12 x layers x d_model x L = 1.2e9 per token, +16 %): ~2.25e20 per variant, 4.5e20 for
both. At 40 % of an H100's dense bf16 peak (989 TFLOP/s, so ~400 TFLOP/s) that is ~6.5 days per variant
on one card, under a day on 8 (this code runs on one device; a data-parallel mesh is future work). The
paper's own pre-training (~1 T tokens at 1 B and 3 B parameters, unverified) is ~40x this budget.

    python -m attention.main --config=attention/configs/paper.py --config.corpus='files:/data/web/*.txt' \\
      --workdir=/checkpoints/sb_paper

Expected (the paper's claim, "trained with 2^11 context performs well at 2^14"): stick-breaking's loss at
L within +3 % of softmax+RoPE's (the paper reports it slightly better); softmax+RoPE's loss over the last
2048 positions of a 16,384 window at least 1.3x its loss at L; stick-breaking's at most 1.02x.
"""

from attention.configs import default
from common import config as config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, steps=0, seeds=0)
  c = default.get_config(None)
  c.name = 'paper_lm'
  c.corpus = 'files:~/data/sb_pretrain/*.txt'
  c.variants = ('softmax_rope', 'stick_breaking')
  c.seeds = (0,)
  c.model.update(
    {
      'num_layers': 24,
      'd_model': 2048,
      'num_heads': 16,
      'mlp_dim': 5632,
      'dtype': 'bfloat16',
      'remat': True,
    }
  )
  c.seq_len = 2048
  c.batch_size = 256
  c.steps = 50_000
  c.lr = 3e-4
  c.warmup_steps = 2000
  c.log_every = 100
  c.checkpoint_every = 1000
  c.eval_windows = 256
  c.eval_batch_tokens = 131072
  c.plot_smoothing = 256
  c.claims = ('sb_in_length', 'rope_last_ratio', 'sb_last_ratio', 'sb_window_ratio')
  c.acceptance.sb_max_window_ratio = 1.02
  if arg.smoke:
    default.shrink_for_smoke(c)
    c.corpus = 'stdlib'
    c.plot_smoothing = 0
  return default.apply_run_args(c, arg)
