"""The MuJoCo visual check of the stickman's JAX rasteriser (`world_models/mujoco_view.py`): MuJoCo's own
OpenGL rendering (EGL, also Mesa's software EGL on a CPU machine) against `stickman.render` on states of
random-action episodes, at the training frame size and larger.

    MUJOCO_GL=egl python world_models/tools/mujoco_check.py --out=world_models/results/cpu/mujoco_check

Writes `results.json` (the claims; IoU and coverage per state and size under `extra`) and `mujoco_check.png`
(at the first size: MuJoCo's frame, the rasteriser's frame in the agent's look, and the mask overlay: yellow
both, red MuJoCo only, green rasteriser only). The rasteriser inflates every capsule by half a pixel so 3-4 cm
limbs stay visible at 64 px; that rim is what separates the masks at small sizes, so the IoU must rise toward
1 with the frame size, while MuJoCo's body pixels stay covered at every size.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import app, flags  # noqa: E402

from common import results  # noqa: E402
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
  means = [by_size[s]['iou_mean'] for s in sorted(sizes)]
  rise = min((b - a for a, b in zip(means, means[1:])), default=0.0)
  claims = [
    results.Claim.at_least(
      "MuJoCo's body pixels the rasteriser covers (min over sizes of the mean over states)",
      paper='every body pixel',
      measured=min(v['coverage_mean'] for v in by_size.values()),
      threshold=MIN_COVERAGE,
    ),
    results.Claim.at_least(
      f'mask IoU at the largest size ({max(sizes)} px), mean over states',
      paper='the same body',
      measured=by_size[max(sizes)]['iou_mean'],
      threshold=MIN_IOU_LARGEST,
    ),
    results.Claim(
      'mask IoU rises with the frame size (smallest rise between consecutive sizes)',
      paper='the half-pixel rim shrinks with the pixel',
      measured=rise,
      passed=bool(rise > 0),
      criterion=f'> 0 (IoU means in size order: {", ".join(f"{m:.3f}" for m in means)})',
    ),
  ]
  os.makedirs(_OUT.value, exist_ok=True)
  strips.save_png(os.path.join(_OUT.value, 'mujoco_check.png'), rows, scale=2)
  result['mujoco_gl'] = os.environ.get('MUJOCO_GL', '')
  wall = time.time() - start
  path = results.write_results(
    _OUT.value,
    project='world_models',
    experiment='mujoco_check',
    claims=claims,
    plots=['mujoco_check.png'],
    wall_clock_s=wall,
    extra=result,
  )
  for size in sorted(by_size):
    v = by_size[size]
    print(
      f'{size:5d} px: IoU mean {v["iou_mean"]:.3f} (min {v["iou_min"]:.3f}), '
      f'coverage mean {v["coverage_mean"]:.3f} (min {v["coverage_min"]:.3f})'
    )
  for c in claims:
    print(f'{c.name}: {c.measured} ({c.criterion}) {"PASS" if c.passed else "FAIL"}')
  print(f'{result["states"]} states, {wall:.0f} s; {path}')


if __name__ == '__main__':
  app.run(main)
