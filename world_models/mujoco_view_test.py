"""mujoco_view: mask arithmetic by hand, and MuJoCo's EGL rendering against the rasteriser in a subprocess
(MuJoCo picks its OpenGL backend when first imported, so the test sets MUJOCO_GL=egl in a fresh process; it
skips where MuJoCo alone cannot open an EGL context)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from world_models import mujoco_view

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = """
import json
import numpy as np
from world_models import mujoco_view as mv
out = mv.check(sizes=(64, 256), episodes=1, steps=30, every=10, seed=1)
strips = out.pop('strips')
out['strip_shapes'] = {k: list(v.shape) for k, v in strips.items()}
# A negative control: the same comparison against MuJoCo's mask mirrored left-right (a camera looking along
# -y instead of +y) must score far lower on the bent (last) state.
model = mv.side_model()
state = mv.rollout(model, np.random.default_rng(1), 30, 10)[-1]
render = mv.renderer(model, 256)
mask = mv.mujoco_frame(render, model, state, segmentation=True)
render.close()
raster = mv.raster_mask(state, 256)
out['control'] = {'iou': mv.iou(mask, raster), 'mirrored_iou': mv.iou(mask[:, ::-1], raster)}
print('RESULT ' + json.dumps(out))
"""


def test_iou_and_coverage_by_hand():
  a = np.zeros((4, 4), bool)
  b = np.zeros((4, 4), bool)
  a[:2, :2] = True  # 4 pixels.
  b[:2, :3] = True  # 6 pixels, 4 shared.
  assert mujoco_view.iou(a, b) == pytest.approx(4 / 6)
  assert mujoco_view.coverage(a, b) == 1.0
  assert mujoco_view.coverage(b, a) == pytest.approx(4 / 6)
  empty = np.zeros((4, 4), bool)
  assert mujoco_view.iou(empty, empty) == 1.0 and mujoco_view.coverage(empty, b) == 1.0
  overlay = mujoco_view.overlay(a, b)
  assert (
    overlay.dtype == np.uint8
    and tuple(overlay[0, 0]) == (255, 255, 0)
    and tuple(overlay[0, 2]) == (0, 255, 0)
  )


def test_side_model_adds_only_a_camera():
  model = mujoco_view.side_model()
  assert model.camera(mujoco_view.CAMERA).id == 0
  assert model.vis.global_.offwidth == 1024


def _egl_env():
  env = dict(os.environ, MUJOCO_GL='egl', PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  # Whether MuJoCo can open an EGL context here at all (a GPU, or Mesa's software EGL), apart from our code.
  probe = "import mujoco; r = mujoco.Renderer(mujoco.MjModel.from_xml_string('<mujoco/>'), 8, 8); r.close()"
  proc = subprocess.run(
    [sys.executable, '-c', probe + "; print('GL OK')"], env=env, capture_output=True, text=True, timeout=120
  )
  if 'GL OK' not in proc.stdout:
    last = (proc.stderr.strip().splitlines() or ['no message'])[-1][:200]
    pytest.skip(f'MuJoCo cannot open an EGL context on this machine: {last}')
  return env


def test_mujoco_egl_matches_the_rasteriser():
  env = _egl_env()
  proc = subprocess.run(
    [sys.executable, '-c', _SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
  )
  lines = [line for line in proc.stdout.splitlines() if line.startswith('RESULT ')]
  assert proc.returncode == 0 and lines, proc.stderr[-2000:]
  out = json.loads(lines[0][len('RESULT ') :])
  small, large = out['sizes']['64'], out['sizes']['256']
  assert out['states'] == 4
  assert out['strip_shapes'] == {name: [4, 64, 64, 3] for name in ('MuJoCo (EGL)', 'rasteriser', 'overlay')}
  # Every body pixel MuJoCo draws is drawn by the rasteriser; its half-pixel rim costs less IoU at 256 px.
  assert small['coverage_min'] >= 0.95 and large['coverage_min'] >= 0.95
  assert large['iou_mean'] > small['iou_mean'] and large['iou_mean'] >= 0.75
  assert out['control']['iou'] >= 0.75 and out['control']['mirrored_iou'] < 0.5 * out['control']['iou']
