"""The MuJoCo visual check of the stickman's JAX rasteriser (`world_models/mujoco_view.py`): MuJoCo's own
OpenGL rendering (EGL, also Mesa's software EGL on a CPU machine) against `stickman.render` on states of
random-action episodes, at the training frame size and larger.

    MUJOCO_GL=egl python world_models/tools/mujoco_check.py --out=world_models/results/cpu/mujoco_check

Writes `mujoco_check.json` (IoU and coverage per state and size, the claims) and `mujoco_check.png` (at the
first size: MuJoCo's frame, the rasteriser's frame in the agent's look, and the mask overlay: yellow both,
red MuJoCo only, green rasteriser only). The rasteriser inflates every capsule by half a pixel so 3-4 cm
limbs stay visible at 64 px; that rim is what separates the masks at small sizes, so the IoU must rise
toward 1 with the frame size, while MuJoCo's body pixels stay covered at every size.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import app, flags  # noqa: E402

from world_models import mujoco_view  # noqa: E402
from world_models import strips  # noqa: E402

_OUT = flags.DEFINE_string('out', '/tmp/mujoco_check', 'Output folder.')
_SIZES = flags.DEFINE_list('sizes', ['64', '256', '1024'], 'Frame sizes; the first is drawn in the strip.')
_EPISODES = flags.DEFINE_integer('episodes', 2, 'Random-action episodes.')
_STEPS = flags.DEFINE_integer('steps', 60, 'Env steps per episode.')
_EVERY = flags.DEFINE_integer('every', 10, 'Keep a state every this many env steps (and the start).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the random actions.')
# Fixed after a first look at the numbers (2026-11-28): at 1024 px the rim is 0.1 % of the view.
MIN_COVERAGE = 0.95
MIN_IOU_LARGEST = 0.9


def main(argv):
  del argv
  start = time.time()
  sizes = [int(s) for s in _SIZES.value]
  if not sizes or min(sizes) < 8 or max(sizes) > 1024:
    raise app.UsageError(f'--sizes must be between 8 and 1024 px; got {sizes}')
  result = mujoco_view.check(sizes, _EPISODES.value, _STEPS.value, _EVERY.value, _SEED.value)
  rows = result.pop('strips')
  by_size = result['sizes']
  claims = [
    {
      'name': "MuJoCo's body pixels the rasteriser covers (min over sizes of the mean over states)",
      'measured': min(v['coverage_mean'] for v in by_size.values()),
      'criterion': f'>= {MIN_COVERAGE}',
    },
    {
      'name': f'mask IoU at the largest size ({max(sizes)} px), mean over states',
      'measured': by_size[max(sizes)]['iou_mean'],
      'criterion': f'>= {MIN_IOU_LARGEST}',
    },
    {
      'name': 'mask IoU rises with the frame size (means in size order)',
      'measured': [by_size[s]['iou_mean'] for s in sorted(sizes)],
      'criterion': 'strictly increasing',
    },
  ]
  claims[0]['passed'] = claims[0]['measured'] >= MIN_COVERAGE
  claims[1]['passed'] = claims[1]['measured'] >= MIN_IOU_LARGEST
  means = claims[2]['measured']
  claims[2]['passed'] = all(a < b for a, b in zip(means, means[1:]))
  result.update(claims=claims, wall_clock_s=time.time() - start, mujoco_gl=os.environ.get('MUJOCO_GL', ''))
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'mujoco_check.json'), 'w') as f:
    json.dump(result, f, indent=1)
  strips.save_png(os.path.join(_OUT.value, 'mujoco_check.png'), rows, scale=2)
  for size in sorted(by_size):
    v = by_size[size]
    print(
      f'{size:5d} px: IoU mean {v["iou_mean"]:.3f} (min {v["iou_min"]:.3f}), '
      f'coverage mean {v["coverage_mean"]:.3f} (min {v["coverage_min"]:.3f})'
    )
  for c in claims:
    print(f'{c["name"]}: {c["measured"]} ({c["criterion"]}) {"PASS" if c["passed"] else "FAIL"}')
  print(f'{result["states"]} states, {result["wall_clock_s"]:.0f} s; {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
