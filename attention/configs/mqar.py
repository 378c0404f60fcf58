"""Stick-breaking attention (arXiv 2410.17980): multi-query associative recall with rebinding (MQAR of
Arora et al. 2023, arXiv 2312.04927, where keys are written again and a query must return the most recent
binding; the paper's "MQRAR" as recalled in the research note), trained at L=256, evaluated to 8L.

8 keys, 8 values, half the pairs writes; 4 layers, d_model 128, 4 heads, batch 64 x 256, 3000 steps,
softmax+RoPE and stick-breaking, two seeds; trained and scored on the values that answer a query of a key
written earlier (`loss_mask='targets'`), over at least 20,000 such positions per length.

    python -m attention.main --config=attention/configs/mqar.py --workdir=/tmp/sb_mqar

Budget on one H100: estimated, not measured, about 2 minutes. The criteria are ours, not the paper's (its
MQRAR numbers are unverified): stick-breaking's accuracy over the 8L window at least 90 %, and at least
10 points above softmax+RoPE's.
"""

from attention.configs import default, flipflop
from common import config as config_lib


def get_config(arg=None):
  """flip-flop's model, budget and claims, on the recall task (a 90 % accuracy bar instead of 99 %)."""
  arg = config_lib.parse_arg(arg, smoke=False, steps=0, seeds=0)
  c = flipflop.get_config(None)
  c.name = 'mqar'
  c.task = 'mqar'
  c.mqar.update({'num_keys': 8, 'num_values': 8, 'write_prob': 0.5})
  c.acceptance.sb_min_accuracy = 0.9
  if arg.smoke:
    default.shrink_for_smoke(c)
  return default.apply_run_args(c, arg)
