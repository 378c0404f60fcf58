"""The stickman drawn by MuJoCo's own OpenGL renderer, to check `stickman.render` (the JAX rasteriser).

The issue asks for real MuJoCo rendering through `MUJOCO_GL=egl` as a visual check of the frames the world
model learns from. `side_model()` is the stickman's MJCF with one orthographic camera added, looking along +y
at the x-z plane with the rasteriser's extent (`stickman.VIEW` metres, centre height `stickman.VIEW_Z`); its x
is moved to the torso's before each frame, as the rasteriser's camera follows the torso. `mujoco_frame` with
`segmentation` gives MuJoCo's body mask (which geom covers each pixel), `raster_mask` the rasteriser's frame
in a single-colour look, and `iou` / `coverage` compare the two; `check` runs the comparison. Physics is
MuJoCo's C step (`mujoco.mj_step`) on the same model, so the check needs no MJX compile; the states go to the
rasteriser through `mjx.put_data`.

MuJoCo picks its OpenGL backend from `MUJOCO_GL` when it is first imported: set `MUJOCO_GL=egl` (GPU or
Mesa's software EGL) or `osmesa` before importing this module. `renderer()` raises a one-line
`RuntimeError` when no backend works.
"""

from __future__ import annotations

import jax
import mujoco
import numpy as np
from mujoco import mjx

from world_models import stickman

CAMERA = 'side'
FLOOR = mujoco.mj_name2id(stickman.MJ_MODEL, mujoco.mjtObj.mjOBJ_GEOM, 'floor')  # side_model keeps geom ids.
# The rasteriser in one colour: background and floor black, every body part white (left limbs at 0.6).
MASK_LOOK = stickman.Look(background=(0.0, 0.0, 0.0), floor=(0.0, 0.0, 0.0), torso=(1, 1, 1), right=(1, 1, 1))


def side_model() -> mujoco.MjModel:
  """The stickman with an orthographic side camera spanning the rasteriser's view."""
  camera = (
    f'<camera name="{CAMERA}" pos="0 -5 {stickman.VIEW_Z}" xyaxes="1 0 0 0 0 1" projection="orthographic"'
    f' fovy="{stickman.VIEW}"/>\n    <light pos="0 -3 3" dir="0 1 -1" directional="true"/>'
  )
  xml = stickman.MJCF.replace('<worldbody>', '<worldbody>\n    ' + camera, 1)
  # An offscreen buffer for frames up to 1024 px (MuJoCo's default is 640 x 480).
  xml = xml.replace(
    '<default>', '<visual><global offwidth="1024" offheight="1024"/></visual>\n  <default>', 1
  )
  model = mujoco.MjModel.from_xml_string(xml)
  # Same bodies, joints and geoms as the environment's model: the camera is the only addition.
  assert (model.nq, model.nv, model.ngeom, model.geom('floor').id) == (
    stickman.MJ_MODEL.nq,
    stickman.MJ_MODEL.nv,
    stickman.MJ_MODEL.ngeom,
    FLOOR,
  )
  return model


def renderer(model: mujoco.MjModel, size: int) -> mujoco.Renderer:
  try:
    return mujoco.Renderer(model, size, size)
  except Exception as e:  # Backend-specific errors (EGL, OSMesa, GLFW) share no base class.
    raise RuntimeError(f'MuJoCo cannot open an OpenGL context (MUJOCO_GL=egl or osmesa?): {e}') from e


def rollout(model: mujoco.MjModel, rng: np.random.Generator, steps: int, every: int) -> list[mujoco.MjData]:
  """States of one episode under uniform random actions (env steps of `stickman.FRAME_SKIP` physics steps),
  from the standing start, every `every` env steps (the start included)."""
  data = mujoco.MjData(model)
  mujoco.mj_forward(model, data)
  states = [_copy(model, data)]
  for t in range(1, steps + 1):
    data.ctrl[:] = rng.uniform(-1.0, 1.0, model.nu)
    for _ in range(stickman.FRAME_SKIP):
      mujoco.mj_step(model, data)
    if t % every == 0:
      states.append(_copy(model, data))
  return states


def _copy(model, data):
  out = mujoco.MjData(model)
  out.qpos[:], out.qvel[:] = data.qpos, data.qvel
  mujoco.mj_forward(model, out)
  return out


def mujoco_frame(render: mujoco.Renderer, model: mujoco.MjModel, data: mujoco.MjData, segmentation: bool):
  """MuJoCo's image from the side camera centred on the torso: RGB uint8 (S, S, 3), or with
  `segmentation` the body mask (S, S) bool (pixels whose object is a geom other than the floor)."""
  cam = model.camera(CAMERA).id
  model.cam_pos[cam, 0] = data.geom_xpos[stickman.TORSO, 0]
  mujoco.mj_kinematics(model, data)  # Camera poses follow model.cam_pos.
  mujoco.mj_camlight(model, data)
  if segmentation:
    render.enable_segmentation_rendering()
  else:
    render.disable_segmentation_rendering()
  render.update_scene(data, camera=CAMERA)
  image = render.render()
  if not segmentation:
    return image.copy()
  ids, types = image[..., 0], image[..., 1]
  return (types == int(mujoco.mjtObj.mjOBJ_GEOM)) & (ids >= 0) & (ids != FLOOR)


_render_jit = jax.jit(stickman.render, static_argnums=(1, 2))


def raster_frame(data: mujoco.MjData, size: int, look: stickman.Look = stickman.AGENT_LOOK) -> np.ndarray:
  """The rasteriser's frame (S, S, 3) float in [0, 1] of a MuJoCo state."""
  return np.asarray(_render_jit(mjx.put_data(stickman.MJ_MODEL, data), size, look))


def raster_mask(data: mujoco.MjData, size: int) -> np.ndarray:
  """The rasteriser's body mask (S, S) bool: coverage above one half (left limbs are drawn at 0.6)."""
  return raster_frame(data, size, MASK_LOOK)[..., 0] > 0.3


def iou(a: np.ndarray, b: np.ndarray) -> float:
  """Intersection over union of two masks (1 for two empty masks)."""
  union = np.logical_or(a, b).sum()
  return float(np.logical_and(a, b).sum() / union) if union else 1.0


def coverage(a: np.ndarray, b: np.ndarray) -> float:
  """The fraction of mask `a`'s pixels that mask `b` also covers (1 for an empty `a`)."""
  return float(np.logical_and(a, b).sum() / a.sum()) if a.sum() else 1.0


def overlay(mujoco_mask: np.ndarray, raster_mask_: np.ndarray) -> np.ndarray:
  """(S, S, 3) uint8: yellow where both masks cover a pixel, red MuJoCo only, green the rasteriser only."""
  a, b = mujoco_mask.astype(np.uint8), raster_mask_.astype(np.uint8)
  return np.stack([a, b, np.zeros_like(a)], -1) * 255


def check(sizes=(64, 256, 1024), episodes: int = 2, steps: int = 60, every: int = 10, seed: int = 0) -> dict:
  """Compares the two renderers on random-action states of `episodes` episodes at each frame size.

  Returns per size the IoU of the body masks and the coverage of MuJoCo's body pixels by the rasteriser's
  (per state and their mean and minimum), and `strips`, the training size's (first size's) rows: MuJoCo's
  RGB frame, the rasteriser's frame in the agent's look and the mask overlay, (T, S, S, 3) uint8 each.
  """
  model = side_model()
  rng = np.random.default_rng(seed)
  states = [d for _ in range(episodes) for d in rollout(model, rng, steps, every)]
  out = {'states': len(states), 'sizes': {}}
  for k, size in enumerate(sizes):
    render = renderer(model, size)
    try:
      ious, covered, rows = [], [], {'MuJoCo (EGL)': [], 'rasteriser': [], 'overlay': []}
      for data in states:
        a, b = mujoco_frame(render, model, data, segmentation=True), raster_mask(data, size)
        ious.append(iou(a, b))
        covered.append(coverage(a, b))
        if k == 0:
          rows['MuJoCo (EGL)'].append(mujoco_frame(render, model, data, segmentation=False))
          rows['rasteriser'].append(np.round(raster_frame(data, size) * 255).astype(np.uint8))
          rows['overlay'].append(overlay(a, b))
    finally:
      render.close()
    out['sizes'][int(size)] = {
      'iou': ious,
      'iou_mean': float(np.mean(ious)),
      'iou_min': float(np.min(ious)),
      'coverage': covered,
      'coverage_mean': float(np.mean(covered)),
      'coverage_min': float(np.min(covered)),
    }
    if k == 0:
      out['strips'] = {name: np.stack(frames) for name, frames in rows.items()}
  return out
