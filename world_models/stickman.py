"""A planar stickman on MuJoCo MJX, drawn by a pure-JAX capsule rasteriser, with pose captions and scores.

The GPU counterpart of `envs.py` (the two-link arm): same interface (`reset`, `step`, `render`, `ACTION_DIM`,
`CAPTIONS`/`caption_index`/`clip_start`/`VOCAB`, `TASKS`/`check_prompt`/`task_reward`, `expert_action`,
`pd_action`, `collect`), chosen in train.py and vlm.py by `config.env.name = 'stickman'` (`env_select.py`).
The state is an `mjx.Data`; physics runs `mjx.step` FRAME_SKIP times per env step, so every function is pure
and jit/vmap-able.

The body lives in the x-z plane (root slide x, slide z, hinge y): torso + head, two legs (thigh, shin with
a fixed foot), two arms (upper arm, forearm). Eight hinge motors (hips, knees, shoulders, elbows) take
actions in [-1, 1]. Only body-floor contacts exist (no self collisions), which keeps MJX cheap.

Frames come from the simulated geoms: each capsule's world segment (geom_xpos +- half-length along its
z axis) is projected to the x-z plane and drawn as a soft signed-distance mask, with a camera that follows
the torso's x so the body stays in view; the floor is a striped band so sideways motion stays visible.
Two appearances exist, the agent's and the VLM's, as in envs.py.

Ground-truth scores per prompt are DMC-style tolerances of pose features (head height, torso uprightness,
foot and hand heights); they are normalised by random and scripted-expert returns downstream.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from world_models import envs

FRAME_SKIP = 6  # 6 x 5 ms = 30 ms per env step.
STAND_Z = 0.95  # Root (pelvis) height of the standing pose: legs 0.45 + 0.45, foot radius 0.04.


def _leg(side: str) -> str:
  return f"""      <body name="thigh_{side}">
        <joint name="hip_{side}" axis="0 -1 0" range="-0.8 2.4"/>
        <geom name="thigh_{side}" fromto="0 0 0 0 0 -0.45" size="0.05"/>
        <body name="shin_{side}" pos="0 0 -0.45">
          <joint name="knee_{side}" axis="0 1 0" range="0 2.6"/>
          <geom name="shin_{side}" fromto="0 0 0 0 0 -0.41" size="0.04"/>
          <geom name="foot_{side}" fromto="-0.06 0 -0.41 0.16 0 -0.41" size="0.04"/>
          <site name="foot_{side}" pos="0.05 0 -0.41"/>
        </body>
      </body>
"""


def _arm(side: str) -> str:
  return f"""      <body name="upper_arm_{side}" pos="0 0 0.47">
        <joint name="shoulder_{side}" axis="0 -1 0" range="-1.0 3.6"/>
        <geom name="upper_arm_{side}" fromto="0 0 0 0 0 -0.28" size="0.035"/>
        <body name="forearm_{side}" pos="0 0 -0.28">
          <joint name="elbow_{side}" axis="0 -1 0" range="0 2.6"/>
          <geom name="forearm_{side}" fromto="0 0 0 0 0 -0.26" size="0.03"/>
          <site name="hand_{side}" pos="0 0 -0.26"/>
        </body>
      </body>
"""


# The four limbs, right before left (the order of joints, actuators and geoms the rest of the module uses).
_LIMBS = _leg('r') + _leg('l') + _arm('r') + _arm('l')

# Written for this project: a stickman of capsules. Joint signs: hips, shoulders and elbows turn the limb
# forward (+x) for positive angles (axis -y); knees bend the shin backward for positive angles (axis +y).
# The root hinge uses axis -y as well, so positive `rooty` pitches the torso backward (toward -x).
MJCF = f"""
<mujoco model="stickman">
  <compiler angle="radian"/>
  <option timestep="0.005" iterations="4" ls_iterations="8">
    <flag eulerdamp="disable"/>
  </option>
  <default>
    <joint damping="2" armature="0.02" limited="true"/>
    <geom type="capsule" contype="2" conaffinity="1" friction="0.9 0.1 0.1" condim="3" solref="0.01 1"/>
    <motor ctrlrange="-1 1" ctrllimited="true"/>
  </default>
  <worldbody>
    <geom name="floor" type="plane" size="0 0 1" contype="1" conaffinity="2"/>
    <body name="torso" pos="0 0 {STAND_Z}">
      <joint name="rootx" type="slide" axis="1 0 0" limited="false" damping="0" armature="0"/>
      <joint name="rootz" type="slide" axis="0 0 1" limited="false" damping="0" armature="0"/>
      <joint name="rooty" type="hinge" axis="0 -1 0" limited="false" damping="0" armature="0"/>
      <geom name="torso" fromto="0 0 0.02 0 0 0.5" size="0.07"/>
      <geom name="head" type="sphere" pos="0 0 0.68" size="0.11"/>
{_LIMBS}    </body>
  </worldbody>
  <actuator>
    <motor name="hip_r" joint="hip_r" gear="120"/>
    <motor name="knee_r" joint="knee_r" gear="100"/>
    <motor name="hip_l" joint="hip_l" gear="120"/>
    <motor name="knee_l" joint="knee_l" gear="100"/>
    <motor name="shoulder_r" joint="shoulder_r" gear="30"/>
    <motor name="elbow_r" joint="elbow_r" gear="20"/>
    <motor name="shoulder_l" joint="shoulder_l" gear="30"/>
    <motor name="elbow_l" joint="elbow_l" gear="20"/>
  </actuator>
</mujoco>
"""

MJ_MODEL = mujoco.MjModel.from_xml_string(MJCF)
MODEL = mjx.put_model(MJ_MODEL)
ACTION_DIM = MJ_MODEL.nu
# The VLM tokenizer's words for the captions and prompts below (padding first; `envs.VOCAB` is the arm's).
VOCAB = (
  '<pad>', 'stickman', 'standing', 'lying', 'down', 'on', 'one', 'leg', 'arms', 'up', 'crouching', 'falling',
  'over', 'the', 'a',
)  # fmt: skip
JOINTS = tuple(MJ_MODEL.joint(i).name for i in range(MJ_MODEL.njnt))
ACTUATED = tuple(MJ_MODEL.joint(int(MJ_MODEL.actuator_trnid[i, 0])).name for i in range(MJ_MODEL.nu))
# qpos/qvel addresses of the actuated joints in actuator order (all hinges: one coordinate each).
_ACT_QPOS = np.asarray([MJ_MODEL.jnt_qposadr[MJ_MODEL.actuator_trnid[i, 0]] for i in range(MJ_MODEL.nu)])
_ACT_QVEL = np.asarray([MJ_MODEL.jnt_dofadr[MJ_MODEL.actuator_trnid[i, 0]] for i in range(MJ_MODEL.nu)])
_ACT_RANGE = np.asarray([MJ_MODEL.jnt_range[MJ_MODEL.actuator_trnid[i, 0]] for i in range(MJ_MODEL.nu)])


def _geom(name):
  return mujoco.mj_name2id(MJ_MODEL, mujoco.mjtObj.mjOBJ_GEOM, name)


def _site(name):
  return mujoco.mj_name2id(MJ_MODEL, mujoco.mjtObj.mjOBJ_SITE, name)


def qpos_index(name):
  """qpos address of joint `name` (e.g. for hand-built poses in tests)."""
  return int(MJ_MODEL.jnt_qposadr[JOINTS.index(name)])


TORSO, HEAD = _geom('torso'), _geom('head')
FOOT_R, FOOT_L, HAND_R, HAND_L = _site('foot_r'), _site('foot_l'), _site('hand_r'), _site('hand_l')


# ----- dynamics --------------------------------------------------------------------------------------


def reset(rng, lying_fraction: float = 0.0) -> mjx.Data:
  """A standing pose with small joint noise (or, with probability `lying_fraction`, lying on the back)."""
  rng_noise, rng_lie = jax.random.split(rng)
  qpos = jnp.asarray(MJ_MODEL.qpos0, jnp.float32)
  noise = 0.05 * jax.random.normal(rng_noise, (MJ_MODEL.nq,))
  noise = noise.at[:3].set(0.0)  # The root starts exactly above the origin.
  qpos = qpos + noise
  lying = jax.random.uniform(rng_lie) < lying_fraction
  # Pelvis 12 cm up, on the back.
  lie = jnp.zeros(MJ_MODEL.nq).at[1].set(0.12 - STAND_Z).at[2].set(np.pi / 2)
  qpos = qpos + jnp.where(lying, lie, 0.0)
  lo, hi = MJ_MODEL.jnt_range[3:, 0], MJ_MODEL.jnt_range[3:, 1]
  qpos = qpos.at[3:].set(jnp.clip(qpos[3:], lo, hi))
  data = mjx.make_data(MODEL).replace(qpos=qpos)
  return mjx.forward(MODEL, data)


def step(state: mjx.Data, action) -> mjx.Data:
  """One env step: hold the clipped action for FRAME_SKIP physics steps."""
  state = state.replace(ctrl=jnp.clip(action, -1.0, 1.0).astype(state.ctrl.dtype))
  return jax.lax.fori_loop(0, FRAME_SKIP, lambda _, d: mjx.step(MODEL, d), state)


def set_pose(qpos) -> mjx.Data:
  """Kinematics of an arbitrary `qpos` at rest (for hand-built poses)."""
  data = mjx.make_data(MODEL).replace(qpos=jnp.asarray(qpos, jnp.float32))
  return mjx.forward(MODEL, data)


# ----- rendering ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Look:
  background: tuple[float, float, float]
  floor: tuple[float, float, float]
  torso: tuple[float, float, float]  # Torso and head.
  right: tuple[float, float, float]  # Right limbs; the left ones are drawn darker, behind.


AGENT_LOOK = Look(
  background=(0.1, 0.1, 0.15), floor=(0.35, 0.3, 0.25), torso=(0.9, 0.3, 0.2), right=(0.2, 0.5, 0.95)
)
VLM_LOOK = Look(
  background=(0.8, 0.8, 0.7), floor=(0.3, 0.55, 0.3), torso=(0.1, 0.6, 0.2), right=(0.6, 0.4, 0.0)
)

VIEW = 2.4  # Metres spanned by the frame.
VIEW_Z = 0.85  # Height of the frame centre.
_DRAWN = [g for g in range(MJ_MODEL.ngeom) if MJ_MODEL.geom_type[g] != mujoco.mjtGeom.mjGEOM_PLANE]
# Painter's order: left limbs, right limbs, then torso and head on top (hanging arms would hide the torso).
_DRAWN.sort(key=lambda g: ({'l': 0, 'r': 1}.get(MJ_MODEL.geom(g).name[-1], 2), g))
_DRAWN = np.asarray(_DRAWN)
_RADIUS = MJ_MODEL.geom_size[_DRAWN, 0]
_CAPSULE = MJ_MODEL.geom_type[_DRAWN] == mujoco.mjtGeom.mjGEOM_CAPSULE
_HALF = np.where(_CAPSULE, MJ_MODEL.geom_size[_DRAWN, 1], 0.0)
_PART = np.asarray(
  [  # 0 torso/head, 1 right limb, 2 left limb.
    2 if MJ_MODEL.geom(int(g)).name.endswith('_l') else 1 if MJ_MODEL.geom(int(g)).name.endswith('_r') else 0
    for g in _DRAWN
  ]
)


def segments(state: mjx.Data):
  """World x-z endpoints (G, 2) x 2 of the drawn geoms (spheres have equal endpoints)."""
  centre = state.geom_xpos[_DRAWN][:, (0, 2)]
  axis = state.geom_xmat[_DRAWN][:, (0, 2), 2]  # The geom's local z axis, in the x-z plane.
  offset = axis * jnp.asarray(_HALF)[:, None]
  return centre - offset, centre + offset


def render(state: mjx.Data, size: int, look: Look = AGENT_LOOK):
  """An RGB frame (size, size, 3) in [0, 1], row 0 on top; the camera follows the torso's x."""
  pixel = VIEW / size
  coords = ((jnp.arange(size, dtype=jnp.float32) + 0.5) / size - 0.5) * VIEW
  cam_x = state.geom_xpos[TORSO, 0]
  x, z = jnp.meshgrid(coords + cam_x, VIEW_Z - coords)
  points = jnp.stack([x, z], -1)
  sharpness = 2.0 / pixel  # About one pixel of soft edge.
  # The floor: a band below z = 0 with 0.5 m stripes, so motion stays visible despite the moving camera.
  ground = jax.nn.sigmoid(-sharpness * z)[..., None]
  stripe = 0.85 + 0.15 * (jnp.floor(x / 0.5) % 2)[..., None]
  image = jnp.asarray(look.background) * (1 - ground) + jnp.asarray(look.floor) * stripe * ground
  colours = jnp.stack([jnp.asarray(look.torso), jnp.asarray(look.right), 0.6 * jnp.asarray(look.right)])
  a, b = segments(state)
  for i in range(len(_DRAWN)):  # Static loop: 12 geoms, painter's order.
    # Inflate by half a pixel so 3-4 cm limbs stay visible at 64 px.
    mask = envs.capsule_mask(points, a[i], b[i], _RADIUS[i] + 0.5 * pixel, sharpness)[..., None]
    image = image * (1 - mask) + colours[_PART[i]] * mask
  return jnp.clip(image, 0.0, 1.0).astype(jnp.float32)


# ----- pose features and captions -----------------------------------------------------------------


def features(state: mjx.Data):
  """Pose features the captions and rewards use (metres, unitless uprightness)."""
  head_z = state.geom_xpos[HEAD, 2]
  pelvis_z = state.xpos[1, 2]  # Body 1 is the torso; its origin is the pelvis.
  upright = state.xmat[1, 2, 2]  # z component of the torso's axis: 1 upright, 0 horizontal.
  foot_r, foot_l = state.site_xpos[FOOT_R, 2], state.site_xpos[FOOT_L, 2]
  hand_r, hand_l = state.site_xpos[HAND_R, 2], state.site_xpos[HAND_L, 2]
  return dict(
    head_z=head_z,
    pelvis_z=pelvis_z,
    upright=upright,
    feet_gap=jnp.abs(foot_r - foot_l),
    hands_over_head=jnp.minimum(hand_r, hand_l) - head_z,
  )


CAPTIONS = (
  'stickman standing',
  'stickman lying down',
  'stickman standing on one leg',
  'stickman arms up',
  'stickman crouching',
  'stickman falling over',
)


def clip_start(rng_pose, rng_vel, lying_fraction: float = 0.3) -> mjx.Data:
  """A random start of the VLM's captioned clips (the counterpart of `envs.clip_start`): actuated joints
  uniform within their ranges, the torso pitched uniformly within +-0.9 rad of upright (or, with probability
  `lying_fraction`, of lying on its back), the body lowered until its lowest point touches the floor, and
  actuated joint velocities N(0, 0.5). Unlike `reset`'s standing start, every caption occurs within a clip."""
  rng_joints, rng_pitch, rng_lie = jax.random.split(rng_pose, 3)
  qpos = jnp.asarray(MJ_MODEL.qpos0, jnp.float32)
  lo, hi = jnp.asarray(_ACT_RANGE[:, 0]), jnp.asarray(_ACT_RANGE[:, 1])
  qpos = qpos.at[_ACT_QPOS].set(jax.random.uniform(rng_joints, (ACTION_DIM,), minval=lo, maxval=hi))
  lying = jax.random.uniform(rng_lie) < lying_fraction
  pitch = jnp.where(lying, np.pi / 2, 0.0) + jax.random.uniform(rng_pitch, (), minval=-0.9, maxval=0.9)
  qpos = qpos.at[2].set(pitch)
  placed = mjx.kinematics(MODEL, mjx.make_data(MODEL).replace(qpos=qpos))  # Positions only: no contacts.
  a, b = segments(placed)
  lowest = jnp.min(jnp.minimum(a[:, 1], b[:, 1]) - jnp.asarray(_RADIUS))
  qpos = qpos.at[1].add(-lowest)  # Slide rootz: the lowest geom point at z = 0.
  joint_vel = 0.5 * jax.random.normal(rng_vel, (ACTION_DIM,))
  qvel = jnp.zeros(MJ_MODEL.nv, jnp.float32).at[_ACT_QVEL].set(joint_vel)
  return mjx.forward(MODEL, mjx.make_data(MODEL).replace(qpos=qpos, qvel=qvel))


def caption_index(state: mjx.Data):
  """Index into CAPTIONS of the pose: lying/falling by torso tilt, then arms up, one leg, stand/crouch."""
  f = features(state)
  tilted = f['upright'] < 0.6
  lying = tilted & (f['pelvis_z'] < 0.4)
  upright_index = jnp.where(
    f['hands_over_head'] > 0.05,
    3,
    jnp.where(f['feet_gap'] > 0.25, 2, jnp.where(f['head_z'] > 1.35, 0, 4)),
  )
  return jnp.where(lying, 1, jnp.where(tilted, 5, upright_index))


# ----- tasks -----------------------------------------------------------------------------------------


def _at_least(value, low, margin):
  return envs.tolerance(jnp.minimum(value - low, 0.0), 0.0, margin)


def _at_most(value, high, margin):
  return envs.tolerance(jnp.maximum(value - high, 0.0), 0.0, margin)


# Prompt -> target angles of ACTUATED (hip_r, knee_r, hip_l, knee_l, shoulder_r, elbow_r, shoulder_l,
# elbow_l): the pose a scripted expert holds. 'lying down' holds a pike (hips flexed, so the torso tips
# backward) until the pelvis is low, then LIE_FLAT (arms overhead); of the falls tried this was fastest.
TASKS = {
  'stickman standing': (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
  'stickman lying down': (2.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0),
  'stickman standing on one leg': (0.0, 0.0, 0.3, 2.0, 0.6, 0.0, 0.6, 0.0),
  'stickman arms up': (0.0, 0.0, 0.0, 0.0, 3.1, 0.0, 3.1, 0.0),
}
LIE_FLAT = (0.0, 0.0, 0.0, 0.0, 3.1, 0.0, 3.1, 0.0)
_TARGETS = np.asarray(list(TASKS.values()), np.float32)


def check_prompt(prompt: str) -> int:
  return envs.prompt_index(prompt, TASKS, 'stickman task prompt')


def task_rewards(state: mjx.Data):
  """Ground-truth rewards in [0, 1] of every task, in TASKS order."""
  f = features(state)
  upright = _at_least(f['upright'], 0.9, 0.7)
  stand = _at_least(f['head_z'], 1.45, 0.8) * upright
  lie = _at_most(f['pelvis_z'], 0.25, 0.5) * envs.tolerance(f['upright'], 0.25, 0.6)
  lie = lie * _at_most(f['head_z'], 0.35, 0.6)
  one_leg = _at_least(f['head_z'], 1.25, 0.7) * upright * _at_least(f['feet_gap'], 0.3, 0.25)
  arms_up = _at_least(f['hands_over_head'], 0.2, 0.2)  # Hand sites 0.2 m over the head's centre.
  return jnp.stack([stand, lie, one_leg, arms_up])


def task_reward(task: int, state: mjx.Data):
  """Ground-truth reward in [0, 1] of task index `task` (may be traced) at `state`."""
  return task_rewards(state)[task]


def pd_action(target_q, state: mjx.Data):
  """Proportional-derivative torques toward actuated joint angles `target_q` (ACTUATED order)."""
  q, qd = state.qpos[_ACT_QPOS], state.qvel[_ACT_QVEL]
  return jnp.clip(3.0 * (target_q - q) - 0.3 * qd, -1.0, 1.0)


def expert_action(task: int, state: mjx.Data):
  """The scripted expert: PD toward the task's pose, with torso-pitch feedback through the hips.

  Feedback (all tasks but lying): the hip targets move by 1.5 * pitch + 0.3 * pitch rate, so the legs
  swing toward the side the torso falls to (rooty > 0 is backward); sign and gains were picked by a small
  sweep (the opposite sign, or none, falls sooner). Lying down pikes, then lies flat once the pelvis is
  below 0.45 m. Not a perfect controller (it falls within ~2 s): it only has to beat random clearly.
  """
  lying = task == check_prompt('stickman lying down')
  low = state.xpos[1, 2] < 0.45
  target = jnp.where(lying & low, jnp.asarray(LIE_FLAT, jnp.float32), jnp.asarray(_TARGETS)[task])
  balance = jnp.where(lying, 0.0, 1.5 * state.qpos[2] + 0.3 * state.qvel[2])
  hips = jnp.asarray([1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
  return pd_action(target + hips * balance, state)


def collect(
  rng, *, num_envs: int, length: int, size: int, scripted_fraction: float, lying_fraction: float = 0.2
):
  """Offline data: `num_envs` episodes of `length` steps, a mix of uniform random actions and a PD
  controller holding random joint targets (`envs.block_target`: a new one every 16 steps, within the joint
  ranges), with
  action noise. A fraction of episodes starts lying down so every caption is represented.

  Returns dict(frames (N, T, S, S, 3) uint8, actions (N, T, 8), q (N, T, nq) qpos, qd (N, T, nv) qvel) --
  the keys of envs.collect; the action at t is taken after frame t.
  """
  lo, hi = jnp.asarray(_ACT_RANGE[:, 0]), jnp.asarray(_ACT_RANGE[:, 1])

  def episode(rng):
    rng_reset, rng_kind, rng_steps, rng_targets = jax.random.split(rng, 4)
    scripted = jax.random.uniform(rng_kind) < scripted_fraction

    def body(state, t):
      rng_act, rng_noise = jax.random.split(jax.random.fold_in(rng_steps, t))
      target = envs.block_target(rng_targets, t, lo, hi)
      random_a = jax.random.uniform(rng_act, (ACTION_DIM,), minval=-1.0, maxval=1.0)
      pd = jnp.clip(pd_action(target, state) + 0.2 * jax.random.normal(rng_noise, (ACTION_DIM,)), -1, 1)
      action = jnp.where(scripted, pd, random_a)
      frame = (render(state, size) * 255).astype(jnp.uint8)
      return step(state, action), (frame, action, state.qpos, state.qvel)

    _, (frames, actions, q, qd) = jax.lax.scan(body, reset(rng_reset, lying_fraction), jnp.arange(length))
    return {'frames': frames, 'actions': actions, 'q': q, 'qd': qd}

  return jax.vmap(episode)(jax.random.split(rng, num_envs))
