"""A pure-JAX planar two-link arm rendered on device, with pose captions and ground-truth task scores.

The arm hangs from the image centre. State: joint angles `q` (shoulder angle measured from the +x axis,
elbow angle relative to the upper link) and angular velocities `qd`. Actions in [-1, 1]^2 are joint torques
of a damped double integrator:

    qd' = damping * qd + gain * a,        q' = wrap(q + qd')

Frames are drawn with signed-distance fields of two capsules, so rendering is a few vectorised `jnp` ops
(research note section 3.3). Two appearances exist: the agent's (`AGENT_LOOK`) and a differently coloured
one (`VLM_LOOK`) that the video-language model is trained on, so the VLM meets a real domain gap.

Captions come from pose rules ('arm pointing up', 'arm bent left', 'arm folded'); the world model never
sees them. Each prompt of `TASKS` has a tolerance reward in [0, 1] computed from the state (like DMC's
`rewards.tolerance`) and a scripted proportional-derivative expert used to normalise scores.
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError

UPPER, LOWER, RADIUS = 0.45, 0.4, 0.09  # In image units: the frame spans [-1, 1]^2.
DAMPING, GAIN = 0.8, 0.25
DIRECTIONS = {'right': 0.0, 'up': np.pi / 2, 'left': np.pi, 'down': -np.pi / 2}
# Prompt -> (shoulder target or None, elbow target): the pose a scripted expert holds.
TASKS = {
  'arm pointing up': (np.pi / 2, 0.0),
  'arm pointing left': (np.pi, 0.0),
  'arm pointing down': (-np.pi / 2, 0.0),
  'arm folded': (None, np.pi),
}
STRAIGHT, FOLDED = 0.6, 2.2  # Elbow bins (radians) for the caption rules.
ACTION_DIM = 2  # Shoulder and elbow torques.
# The VLM tokenizer's words for this environment's captions and prompts (padding first).
VOCAB = ('<pad>', 'arm', 'pointing', 'bent', 'folded', 'up', 'down', 'left', 'right', 'the', 'a', 'robot')


@dataclasses.dataclass(frozen=True)
class Look:
  background: tuple[float, float, float]
  upper: tuple[float, float, float]
  lower: tuple[float, float, float]


AGENT_LOOK = Look(background=(0.1, 0.1, 0.15), upper=(0.9, 0.3, 0.2), lower=(0.2, 0.5, 0.95))
VLM_LOOK = Look(background=(0.8, 0.8, 0.7), upper=(0.1, 0.6, 0.2), lower=(0.6, 0.4, 0.0))


@flax.struct.dataclass
class ArmState:
  q: jax.Array  # (2,) shoulder, elbow.
  qd: jax.Array  # (2,)


def wrap(angle):
  return (angle + jnp.pi) % (2 * jnp.pi) - jnp.pi


def reset(rng) -> ArmState:
  q = jax.random.uniform(rng, (2,), minval=-jnp.pi, maxval=jnp.pi)
  return ArmState(q=q.astype(jnp.float32), qd=jnp.zeros((2,), jnp.float32))


def step(state: ArmState, action) -> ArmState:
  qd = DAMPING * state.qd + GAIN * jnp.clip(action, -1.0, 1.0)
  return ArmState(q=wrap(state.q + qd), qd=qd)


def joints(q):
  """Elbow and tip positions (x right, y up) of the pose `q`."""
  elbow = UPPER * jnp.stack([jnp.cos(q[0]), jnp.sin(q[0])])
  tip = elbow + LOWER * jnp.stack([jnp.cos(q[0] + q[1]), jnp.sin(q[0] + q[1])])
  return elbow, tip


def capsule_mask(points, a, b, radius, sharpness):
  """Soft coverage of a capsule of `radius` around segment ab: sigmoid of its signed distance (also the
  stickman's rasteriser)."""
  ab = b - a
  t = jnp.clip(jnp.sum((points - a) * ab, -1) / (jnp.sum(ab * ab) + 1e-8), 0.0, 1.0)
  dist = jnp.linalg.norm(points - (a + t[..., None] * ab), axis=-1) - radius
  return jax.nn.sigmoid(-sharpness * dist)


def render(state: ArmState, size: int, look: Look = AGENT_LOOK):
  """An RGB frame (size, size, 3) in [0, 1]; row 0 is the top of the image."""
  coords = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size * 2 - 1
  x, y = jnp.meshgrid(coords, -coords)
  points = jnp.stack([x, y], -1)
  elbow, tip = joints(state.q)
  sharpness = size / 1.5
  upper = capsule_mask(points, jnp.zeros(2), elbow, RADIUS, sharpness)[..., None]
  lower = capsule_mask(points, elbow, tip, RADIUS, sharpness)[..., None]
  image = jnp.asarray(look.background) * (1 - upper) + jnp.asarray(look.upper) * upper
  return image * (1 - lower) + jnp.asarray(look.lower) * lower


# ----- captions from pose rules -----------------------------------------------------------------------

CAPTIONS = tuple(
  [f'arm pointing {d}' for d in DIRECTIONS] + [f'arm bent {d}' for d in DIRECTIONS] + ['arm folded']
)


def caption_index(state: ArmState):
  """Index into CAPTIONS of the pose `state.q`: the tip direction in quarter bins and the elbow bend."""
  q = state.q
  _, tip = joints(q)
  heading = jnp.arctan2(tip[1], tip[0])
  centres = jnp.asarray(list(DIRECTIONS.values()))
  direction = jnp.argmin(jnp.abs(wrap(heading - centres)))
  bend = jnp.abs(wrap(q[1]))
  return jnp.where(bend > FOLDED, 8, jnp.where(bend < STRAIGHT, direction, 4 + direction))


def clip_start(rng_pose, rng_vel) -> ArmState:
  """A random start of the VLM's captioned clips: a uniform pose and small random joint velocities."""
  return ArmState(
    q=jax.random.uniform(rng_pose, (2,), minval=-jnp.pi, maxval=jnp.pi),
    qd=0.2 * jax.random.normal(rng_vel, (2,)),
  )


# ----- tasks -----------------------------------------------------------------------------------------


def tolerance(distance, bound, margin):
  """1 within `bound`, a Gaussian tail reaching 0.1 at `bound + margin` (DMC-style tolerance)."""
  excess = jnp.maximum(jnp.abs(distance) - bound, 0.0)
  return jnp.exp(-jnp.log(10.0) * (excess / margin) ** 2)


def prompt_index(prompt: str, tasks, kind: str = 'task prompt') -> int:
  """The index of `prompt` in `tasks` (a dict of prompts); a one-line ConfigError naming `kind` if absent."""
  if prompt not in tasks:
    raise ConfigError(f"unknown {kind} '{prompt}': choose one of {list(tasks)}")
  return list(tasks).index(prompt)


def check_prompt(prompt: str) -> int:
  return prompt_index(prompt, TASKS)


def task_reward(task: int, state: ArmState):
  """Ground-truth reward in [0, 1] of task index `task` (traced) at `state`."""
  rewards = []
  for shoulder, elbow in TASKS.values():
    r = tolerance(wrap(state.q[1] - elbow), 0.35, 0.8)
    if shoulder is not None:
      r = r * tolerance(wrap(state.q[0] - shoulder), 0.35, 0.8)
    rewards.append(r)
  return jnp.stack(rewards)[task]


def expert_action(task: int, state: ArmState):
  """A PD controller that drives the arm to the task's pose (scripted expert)."""
  targets = jnp.asarray([[s if s is not None else 0.0, e] for s, e in TASKS.values()], jnp.float32)
  free_shoulder = jnp.asarray([s is None for s, _ in TASKS.values()])[task]
  error = wrap(targets[task] - state.q)
  error = error.at[0].set(jnp.where(free_shoulder, 0.0, error[0]))
  return jnp.clip(2.0 * error - 2.0 * state.qd, -1.0, 1.0)


def pd_action(target_q, state: ArmState):
  return jnp.clip(2.0 * wrap(target_q - state.q) - 2.0 * state.qd, -1.0, 1.0)


TARGET_BLOCK = 16  # `collect`'s PD controller holds each random target pose for this many steps.


def block_target(rng, t, low=(-jnp.pi, -jnp.pi), high=(jnp.pi, jnp.pi)):
  """The PD target pose of step `t` in `collect`: one pose uniform in [low, high) per block of TARGET_BLOCK
  steps (its key depends on the block only, so the pose is held for the whole block). The defaults are the
  arm's two joints; the stickman passes its joint ranges."""
  low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
  return jax.random.uniform(jax.random.fold_in(rng, t // TARGET_BLOCK), low.shape, minval=low, maxval=high)


def collect(rng, *, num_envs: int, length: int, size: int, scripted_fraction: float):
  """Offline data: `num_envs` episodes of `length` steps, a mix of uniform random actions and a PD
  controller holding random target poses (a new target every TARGET_BLOCK = 16 steps, `block_target`),
  with action noise.

  Returns dict(frames (N, T, S, S, 3) uint8, actions (N, T, 2), q (N, T, 2), qd (N, T, 2)); the action at t
  is taken after frame t.
  """

  def episode(rng):
    rng_reset, rng_kind, rng_steps, rng_targets = jax.random.split(rng, 4)
    scripted = jax.random.uniform(rng_kind) < scripted_fraction

    def body(state, t):
      rng_act, rng_noise = jax.random.split(jax.random.fold_in(rng_steps, t))
      target = block_target(rng_targets, t)
      random_a = jax.random.uniform(rng_act, (2,), minval=-1.0, maxval=1.0)
      pd = jnp.clip(pd_action(target, state) + 0.2 * jax.random.normal(rng_noise, (2,)), -1, 1)
      action = jnp.where(scripted, pd, random_a)
      frame = (render(state, size) * 255).astype(jnp.uint8)
      return step(state, action), (frame, action, state.q, state.qd)

    _, (frames, actions, q, qd) = jax.lax.scan(body, reset(rng_reset), jnp.arange(length))
    return {'frames': frames, 'actions': actions, 'q': q, 'qd': qd}

  return jax.vmap(episode)(jax.random.split(rng, num_envs))
