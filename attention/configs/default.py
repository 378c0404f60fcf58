"""Stick-breaking attention (Tan et al., arXiv 2410.17980): length generalisation of a byte-level LM on the
Python standard library's sources, the CPU-sized experiment.

A decoder LM is trained at length L with each attention variant of `config.variants` (softmax+RoPE,
softmax without position encoding, stick-breaking without position encoding) and evaluated on
deterministic validation windows of L, 2L, 4L and 8L bytes: mean loss over the window and over its last L
positions (the positions never seen in training).

    python -m attention.main --config=attention/configs/default.py:smoke --workdir=/tmp/sb_smoke

Expected (smoke: 2 layers, d_model 64, L=64, 200 steps, softmax+RoPE and stick-breaking; about a minute
on 2 CPU cores): the validation loss at L of both variants falls by at least 30 % from initialisation, and
stick-breaking's mean loss over an 8L window is at most 1.10x its loss at L. Softmax+RoPE's loss beyond L
is expected to rise (reported, not a criterion here).

Without `smoke` (all three variants, 4 layers, d_model 128, L=128, 2000 steps): a longer CPU run of the
same experiment, about an hour on 2 CPU cores (0.5-0.7 s per step measured). `steps=N` and `seeds=N`
override the step count and the number of seeds (0, 1, ... N-1) of any config of this project.
"""

import ml_collections

from common import config as config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, steps=0, seeds=0)
  c = ml_collections.ConfigDict()
  c.name = 'stdlib_lm'
  # Data. task: 'text' (a byte corpus), 'flipflop' or 'mqar' (synthetic, generated in JAX).
  c.task = 'text'
  c.corpus = 'stdlib'  # 'stdlib', 'shakespeare' or 'files:<glob>[,<glob>]' (attention.data.load_corpus).
  c.corpus_fallback = ''  # Used (with a warning) when `corpus` is 'shakespeare' and it is not extracted.
  c.flipflop_probs = (0.1, 0.8, 0.1)  # (p_write, p_ignore, p_read), Liu et al. 2023.
  c.mqar = ml_collections.ConfigDict({'num_keys': 8, 'num_values': 8, 'write_prob': 0.5})
  c.loss_mask = 'all'  # 'all': every next token; 'targets': the determined tokens only (synthetic tasks).
  # What is compared: every variant is trained from every seed, one after the other.
  c.variants = ('softmax_rope', 'softmax_nope', 'stick_breaking')
  c.seeds = (0,)
  # The model (attention.model.make_lm; `variant` and `vocab_size` are filled in by train.py).
  c.model = ml_collections.ConfigDict(
    {
      'num_layers': 4,
      'd_model': 128,
      'num_heads': 4,
      'num_kv_heads': 0,
      'head_dim': 0,
      'mlp_dim': 512,
      'mlp_activation': 'swiglu',
      'dtype': 'float32',  # Compute dtype; parameters are always float32.
      'sb_rem_mode': 'head_bias',
      'sb_norm': 'group',
      'sb_implementation': '',  # '' = auto: the Pallas kernel on GPU/TPU, the XLA reference on CPU.
      'softmax_implementation': 'auto',  # cuDNN on GPU for 16-bit compute, else XLA.
      'rope_theta': 10000.0,
      'remat': False,
    }
  )
  # Training.
  c.seq_len = 128  # L, the training length.
  c.batch_size = 32
  c.steps = 2000
  c.lr = 1e-3
  c.warmup_steps = 100
  c.min_lr_ratio = 0.1  # The cosine ends at lr * min_lr_ratio.
  c.weight_decay = 0.1
  c.b1 = 0.9
  c.b2 = 0.95
  c.grad_clip = 1.0
  c.log_every = 100  # Steps per jitted chunk (one lax.scan) and per metrics row.
  c.checkpoint_every = 500  # A multiple of log_every.
  # Evaluation.
  c.eval_multipliers = (1, 2, 4, 8)  # Lengths L, 2L, 4L, 8L.
  c.eval_windows = 64  # text: validation windows per length.
  c.eval_reads = 2000  # flipflop/mqar: at least this many target positions per length.
  c.eval_batch_tokens = 16384  # Tokens per evaluation forward (windows are chunked to bound memory).
  c.eval_seed = 12345  # flipflop/mqar: the fixed seed of the evaluation batches.
  c.plot_smoothing = 0  # Moving-average width of the loss-by-position plot; 0: L // 4.
  # Claims (attention.train.CLAIMS) and their criteria, fixed before the run.
  c.claims = ('loss_drop', 'sb_window_ratio', 'sb_in_length', 'rope_last_ratio', 'sb_last_ratio')
  c.acceptance = ml_collections.ConfigDict(
    {
      'min_loss_drop': 0.3,  # 1 - final/initial validation loss at L, every variant.
      'sb_max_window_ratio': 1.10,  # SB mean loss over the longest window / SB loss at L.
      'sb_max_in_length_ratio': 1.03,  # SB loss at L / softmax+RoPE loss at L.
      'rope_min_last_ratio': 1.3,  # softmax+RoPE last-L loss of the longest window / its loss at L.
      'sb_max_last_ratio': 1.02,  # SB last-L loss of the longest window / its loss at L.
      'sb_min_accuracy': 0.99,  # SB target accuracy over the longest window (flipflop, mqar).
      'rope_min_accuracy_gap': 0.10,  # SB accuracy - softmax+RoPE accuracy over the longest window.
    }
  )
  if arg.smoke:
    shrink_for_smoke(c)
    c.variants = ('softmax_rope', 'stick_breaking')
    c.claims = ('loss_drop', 'sb_window_ratio')
  return apply_run_args(c, arg)


def shrink_for_smoke(c):
  """The CPU-sized form of any config of this project: 2 layers, d_model 64, 2 heads (head_dim 32), L=64,
  batch 16, 200 steps at lr 3e-3, one seed; a plumbing check, not a reproduction."""
  c.model.update(
    {'num_layers': 2, 'd_model': 64, 'num_heads': 2, 'mlp_dim': 256, 'dtype': 'float32', 'remat': False}
  )
  c.seeds = (0,)
  c.seq_len = 64
  c.batch_size = 16
  c.steps = 200
  c.lr = 3e-3
  c.warmup_steps = 20
  c.log_every = 50
  c.checkpoint_every = 100
  c.eval_multipliers = (1, 2, 4, 8)
  c.eval_windows = 32
  c.eval_reads = 1000
  c.eval_batch_tokens = 8192
  return c


def apply_run_args(c, arg):
  """The `steps=N,seeds=N` arguments every config of this project accepts (0: keep the config's)."""
  if arg.steps:
    c.steps = arg.steps
    c.warmup_steps = min(c.warmup_steps, arg.steps // 10)
  if arg.seeds:
    c.seeds = tuple(range(arg.seeds))
  return c
