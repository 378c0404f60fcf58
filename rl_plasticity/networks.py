"""TD3 networks (Flax Linen) that also return their hidden activations, for dormancy scores and pruning.

Layers are named `dense_<i>`; the hidden activations come back in a dict under the same names, so a kernel
at path (..., 'dense_i', 'kernel') maps to the units it feeds by name (`unit_key`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
  """ReLU MLP; `layer_norm_last` puts a LayerNorm before the last hidden ReLU (the NE code's critic)."""

  hidden: Sequence[int]
  out: int
  layer_norm_last: bool = False

  @nn.compact
  def __call__(self, x):
    acts = {}
    for i, width in enumerate(self.hidden):
      x = nn.Dense(width, name=f'dense_{i}')(x)
      if self.layer_norm_last and i == len(self.hidden) - 1:
        x = nn.LayerNorm(name=f'norm_{i}')(x)
      x = nn.relu(x)
      acts[f'dense_{i}'] = x
    return nn.Dense(self.out, name=f'dense_{len(self.hidden)}')(x), acts


class Actor(nn.Module):
  hidden: Sequence[int]
  act_dim: int

  @nn.compact
  def __call__(self, obs):
    out, acts = MLP(self.hidden, self.act_dim, name='pi')(obs)
    return jnp.tanh(out), {'pi': acts}


class Critic(nn.Module):
  """Twin Q networks Q1, Q2 (TD3)."""

  hidden: Sequence[int]
  layer_norm_last: bool = False

  @nn.compact
  def __call__(self, obs, action):
    x = jnp.concatenate([obs, action], axis=-1)
    q1, a1 = MLP(self.hidden, 1, self.layer_norm_last, name='q1')(x)
    q2, a2 = MLP(self.hidden, 1, self.layer_norm_last, name='q2')(x)
    return q1[..., 0], q2[..., 0], {'q1': a1, 'q2': a2}


def kernel_paths(params) -> list[tuple]:
  """Paths (tuples of names under 'params') of every Dense kernel, in a fixed order."""
  from flax import traverse_util

  flat = traverse_util.flatten_dict(params['params'])
  return sorted(k for k in flat if k[-1] == 'kernel')


def unit_key(path: tuple) -> tuple:
  """The activation key of the units a kernel feeds: ('q1', 'dense_0', 'kernel') -> ('q1', 'dense_0')."""
  return path[:-1]


def next_kernel(path: tuple) -> tuple:
  """The kernel reading the units fed by `path`: ('q1', 'dense_0', 'kernel') -> ('q1', 'dense_1', 'kernel')."""
  index = int(path[-2].split('_')[1])
  return path[:-2] + (f'dense_{index + 1}', 'kernel')


class InjectedCritic(nn.Module):
  """Plasticity Injection (Nikishin et al. 2023) on the twin critic: Q = Q_base + g (Q_new - Q_init).

  Before injection (g = 0) only `base` trains. The injection hook sets g = 1 and copies one fresh draw into
  both `new` and `init`, so the function is unchanged at that moment; afterwards `base` and `init` are
  frozen (stop_gradient) and only `new` trains. g is a parameter that never receives a gradient.

  The returned activations (dormancy and FAU) cover the units that make the function: before injection
  `new` is not part of it, so its entry repeats `base`'s activations (every layer twice, the same ratios
  as `base` alone); after injection `base` and `new` (`init` only cancels `new`'s starting function).
  """

  hidden: Sequence[int]
  layer_norm_last: bool = False

  @nn.compact
  def __call__(self, obs, action):
    g = jax.lax.stop_gradient(self.param('injected', nn.initializers.zeros, ()))
    sg = jax.lax.stop_gradient
    b1, b2, ab = Critic(self.hidden, self.layer_norm_last, name='base')(obs, action)
    n1, n2, an = Critic(self.hidden, self.layer_norm_last, name='new')(obs, action)
    i1, i2, _ = Critic(self.hidden, self.layer_norm_last, name='init')(obs, action)
    q1 = g * sg(b1) + (1 - g) * b1 + g * (n1 - sg(i1))
    q2 = g * sg(b2) + (1 - g) * b2 + g * (n2 - sg(i2))
    an = jax.tree.map(lambda n, b: jnp.where(g > 0, n, b), an, ab)
    return q1, q2, {'base': ab, 'new': an}
