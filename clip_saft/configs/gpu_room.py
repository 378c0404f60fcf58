"""Variants of `gpu.py` that weaken pretraining on the fine-tuning task, to find a setting where fine-tuning
has room (the `gpu` run saturates: zero-shot 100 % ID, 95.7 % OOD, so P2 fails). Ours, not the paper's.

    bash tools/gpu_parallel.sh 560 a=clip_saft/configs/gpu_room.py:variant=steps1k \
        b=clip_saft/configs/gpu_room.py:variant=noise30 c=clip_saft/configs/gpu_room.py:variant=photo5

`variant` joins knobs with '_', each applied on top of `gpu.py`:
- `steps<N>k`: N thousand pretraining steps (gpu.py: 5k);
- `noise<P>`: `data.web_shape_noise` = P % (web captions name a uniformly random class shape);
- `photo<P>`: `data.web_photo_fraction` = P % (share of photo-style web images; uniform styles give 25 %).
e.g. `steps1k`, `noise30`, `photo5`, `noise30_photo5`, `steps2k_noise50_photo5`; without `variant`,
`noise30_photo5` (both knobs at once, the strongest of the four planned variants). Every variant also logs
zero-shot accuracy every 500 pretraining steps (`pretrain/zero_shot_id`, `pretrain/zero_shot_ood` in
metrics.jsonl), so one run shows where along pretraining the benchmark stops saturating. `smoke` shrinks it
to the CPU smoke size (with the variant's knobs) for a quick check.

Expected: not run yet (needs device time). P1 and P2 in results.json say whether a variant leaves room.
"""

import re

from clip_saft.configs import gpu
from common import config as config_lib
from common.errors import ConfigError

KNOBS = {
  'steps': lambda c, n: setattr(c.pretrain, 'steps', 1000 * n),
  'noise': lambda c, n: setattr(c.data, 'web_shape_noise', n / 100),
  'photo': lambda c, n: setattr(c.data, 'web_photo_fraction', n / 100),
}
FORMS = 'steps<N>k, noise<percent>, photo<percent>'
DEFAULT_VARIANT = 'noise30_photo5'


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, variant=DEFAULT_VARIANT, smoke=False, seeds=3)
  c = gpu.get_config(','.join([f'seeds={arg.seeds}'] + (['smoke'] if arg.smoke else [])))
  if not arg.variant:
    raise ConfigError(f'gpu_room.py: variant is empty; join knobs with _ ({FORMS}), e.g. {DEFAULT_VARIANT}')
  seen = set()
  for token in arg.variant.split('_'):
    match = re.fullmatch(r'(steps)([1-9]\d*)k|(noise|photo)(\d+)', token)
    if not match:
      raise ConfigError(f"gpu_room.py: unknown variant part '{token}' in '{arg.variant}'; use {FORMS}")
    name, number = (match[1], match[2]) if match[1] else (match[3], match[4])
    if name in seen:
      raise ConfigError(f"gpu_room.py: '{name}' is given twice in variant '{arg.variant}'")
    seen.add(name)
    KNOBS[name](c, int(number))
  if not arg.smoke:
    c.pretrain.eval_every = 500
  return c
